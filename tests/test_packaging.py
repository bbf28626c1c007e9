"""The packaging facts that must agree across files: locks, the namespace mapping, the image."""

import configparser
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from kfp.dsl import base_component

import slipway.components
from slipway import __version__, runtimes

ROOT = Path(__file__).resolve().parent.parent


def pins(path: Path) -> dict[str, str]:
    """{name: version} of the `name==version` lines of a requirements file."""
    found = {}
    for line in path.read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.\-\[\]]+)==(\S+)", line)
        if match:
            name = re.sub(r"\[.*\]", "", match.group(1))
            found[re.sub(r"[-_.]+", "-", name).lower()] = match.group(2)  # PEP 503
    return found


def package_dirs() -> dict[str, str]:
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    lines = [line.strip() for line in config["options"]["package_dir"].strip().splitlines()]
    return dict(tuple(part.strip() for part in line.split("=")) for line in lines)


@pytest.mark.parametrize("runtime", ["core", "tfdv", "drift"])
def test_every_pin_of_a_runtimes_in_file_is_what_its_lock_installs(runtime: str) -> None:
    locked = pins(ROOT / "requirements" / f"{runtime}.txt")
    for name, version in pins(ROOT / "requirements" / f"{runtime}.in").items():
        assert locked.get(name) == version, f"requirements/{runtime}.txt is stale for {name}: run `make lock`"


def test_the_tfdv_lock_holds_tfdv_and_a_kfp_that_runs_its_tasks_and_no_torch() -> None:
    tfdv = pins(ROOT / "requirements" / "tfdv.txt")
    assert tfdv["tensorflow-data-validation"] == "1.16.1" and tfdv["protobuf"].startswith("4.")
    assert tfdv["kfp"] and "torch" not in tfdv


def test_the_core_lock_pins_the_cpu_torch_build_and_the_test_lock_repeats_none_of_it() -> None:
    core = pins(ROOT / "requirements" / "core.txt")
    assert core["torch"] == "2.13.0+cpu"
    assert not set(pins(ROOT / "requirements" / "test.txt")) & set(core)


def test_every_folder_maps_into_the_slipway_namespace_and_is_a_package() -> None:
    mapping = package_dirs()
    assert set(mapping) == {"slipway", "slipway.components", "slipway.pipelines", "slipway.serving"}
    for folder in mapping.values():
        assert (ROOT / folder / "__init__.py").is_file(), folder


# The lock each runtime's image installs: serving and train-gpu share core's (train-gpu with a CUDA torch).
IMAGE_LOCKS = {"core": "core", "tfdv": "tfdv", "drift": "drift", "serving": "core", "train-gpu": "core"}


@pytest.mark.parametrize("runtime", runtimes.RUNTIMES)
def test_a_runtimes_image_installs_its_lock_and_every_mapped_folder(runtime: str) -> None:
    dockerfile = (ROOT / "images" / f"{runtime}.Dockerfile").read_text()
    lock = IMAGE_LOCKS[runtime]
    assert re.search(rf"^COPY requirements/{lock}\.txt ", dockerfile, re.M)
    assert re.search(rf"pip install [^\n]*-r \S*requirements/{lock}(-without-torch)?\.txt", dockerfile)
    # Code in the image names more images (a TrainJob's, an InferenceService's) from the same build.
    assert "SLIPWAY_IMAGE_REGISTRY=${IMAGE_REGISTRY} SLIPWAY_IMAGE_TAG=${IMAGE_TAG}" in dockerfile
    for folder in package_dirs().values():
        # Built from a folder outside the working directory, where a source `slipway/` would shadow the package.
        assert re.search(rf"^COPY {folder} /tmp/slipway-src/{folder}$", dockerfile, re.M), f"the image misses {folder}/"


def test_the_tfdv_image_declares_its_runtime_so_validation_runs_in_process_there() -> None:
    dockerfile = (ROOT / "images" / "tfdv.Dockerfile").read_text()
    assert re.search(rf"\b{runtimes.RUNTIME_ENV}=tfdv\b", dockerfile)
    assert "python -m slipway.components.facets" in dockerfile


def test_the_drift_lock_is_alibi_detects_last_apache_release_with_the_pins_it_needs() -> None:
    drift = pins(ROOT / "requirements" / "drift.txt")
    assert drift["alibi-detect"] == "0.11.4"  # 0.11.5 and later: Business Source License 1.1
    assert drift["numpy"].startswith("1.") and drift["scipy"] < "1.12" and drift["torch"] == "2.13.0+cpu"
    assert re.search(rf"\b{runtimes.RUNTIME_ENV}=drift\b", (ROOT / "images" / "drift.Dockerfile").read_text())


def test_compiled_pipelines_reference_the_images_of_this_version() -> None:
    assert runtimes.CORE_IMAGE.endswith(f"/slipway-core:{__version__}")
    assert runtimes.TFDV_IMAGE.endswith(f"/slipway-tfdv:{__version__}")
    assert runtimes.DRIFT_IMAGE.endswith(f"/slipway-drift:{__version__}")


# Library modules that run in another runtime than core (DESIGN.md §3), and what they share with core.
RUNTIME_MODULES = {"tfdv": {"data_validation", "facets", "validation_report", "ingestion"},
                   "drift": {"drift_detectors", "drift_detection", "drift_report", "html_page", "ingestion"}}


@pytest.mark.parametrize("runtime", ["core", "tfdv", "drift"])
def test_every_library_module_imports_inside_a_running_task_of_its_runtime(runtime: str) -> None:
    # In a task KFP sets _KFP_RUNTIME=true and kfp.dsl has no `component` decorator: a library
    # module that declared a component (instead of leaving that to catalog.py) would fail here.
    stems = [p.stem for p in (ROOT / "components").glob("*.py") if p.stem not in ("__init__", "catalog")]
    stems = [s for s in stems if (s in RUNTIME_MODULES[runtime] if runtime != "core" else s != "data_validation")]
    script = "; ".join(f"import slipway.components.{stem}" for stem in stems)
    python = sys.executable if runtime == "core" else str(runtimes.local_python(runtime))
    result = subprocess.run([python, "-c", script], env={**os.environ, "_KFP_RUNTIME": "true"},
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]


def test_every_component_is_importable_from_slipway_components() -> None:
    for name in slipway.components.COMPONENTS:
        assert isinstance(getattr(slipway.components, name), base_component.BaseComponent), name


def test_the_changelogs_newest_release_is_the_package_version_with_unreleased_changes_above_it() -> None:
    headings = re.findall(r"^## \[([^\]]+)\](?: - (\d{4}-\d{2}-\d{2}))?$", (ROOT / "CHANGELOG.md").read_text(), re.M)
    assert headings[0] == ("Unreleased", "")
    version, date = headings[1]
    assert version == __version__, "bump slipway.__version__ with the release's CHANGELOG heading"
    assert date, f"the {version} heading has no release date"


def test_slipway_version_reads_the_tfdv_and_drift_key_libraries_in_their_own_runtimes(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from slipway.pipelines.cli import cli

    output = CliRunner().invoke(cli, ["version"]).output
    tfdv, drift = pins(ROOT / "requirements" / "tfdv.txt"), pins(ROOT / "requirements" / "drift.txt")
    assert f"\ntensorflow-data-validation {tfdv['tensorflow-data-validation']} (in tfdv)\n" in output
    assert f"\nalibi-detect {drift['alibi-detect']} (in drift)\n" in output
    monkeypatch.setenv("SLIPWAY_DRIFT_PYTHON", "/nonexistent/python")
    output = CliRunner().invoke(cli, ["version"]).output
    assert ("\nalibi-detect (unknown: the `drift` runtime's environment is missing (/nonexistent/python): "
            "build it with `make drift-env`)\n") in output
