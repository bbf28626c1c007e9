"""`slipway upload | submit | runs`: a compiled pipeline goes to Kubeflow Pipelines, runs there, and is followed.

Every test talks through a real `kfp.Client` over HTTP to `kfp_apiserver.FakeKfp`, a stand-in for
the KFP API server on 127.0.0.1 that speaks the v2beta1 REST shapes and keeps its state in memory,
so what these tests read back (versions, runtime parameters, run states) is what the client sent.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import yaml
from click.testing import CliRunner, Result
from kfp_apiserver import FakeKfp

from slipway.pipelines.cli import cli
from slipway.pipelines.compile import compile_pipelines
from slipway.pipelines.kfp_client import (
    AuthenticationFailed,
    EndpointUnreachable,
    KfpError,
    KfpSession,
    PackageError,
    RunTimeout,
    connect,
    typed_arguments,
)
from slipway.pipelines.local import PipelineArgumentError
from slipway.serving.process import free_ports

SOURCE = "source_uri=gs://taxi/trips.csv"  # the one parameter of `training` without a default


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """dist/training.yaml as `slipway compile` writes it."""
    return compile_pipelines(tmp_path_factory.mktemp("dist"), ["training"])[0]


@pytest.fixture
def kfp_server() -> Iterator[FakeKfp]:
    with FakeKfp() as server:
        yield server


@pytest.fixture
def uploaded(kfp_server: FakeKfp, package: Path) -> KfpSession:
    """A session with `training` uploaded once."""
    session = connect(kfp_server.url)
    session.upload(package)
    return session


def slipway(server: FakeKfp | str, *args: str) -> Result:
    host = server if isinstance(server, str) else server.url
    return CliRunner().invoke(cli, [*args, "--host", host])


def run_of(server: FakeKfp, output: str) -> dict:
    """The run the server holds for the `run id:` that `slipway submit` printed."""
    run_id = next(line.split(": ")[1] for line in output.splitlines() if line.strip().startswith("run id:"))
    return server.runs[run_id]


# --- upload ----------------------------------------------------------------------------------


def test_the_first_upload_creates_the_pipeline_and_the_next_adds_a_version_of_it(kfp_server: FakeKfp,
                                                                                  package: Path) -> None:
    session = connect(kfp_server.url)
    first = session.upload(package)
    second = session.upload(package)

    assert (first.new_pipeline, second.new_pipeline) == (True, False)
    assert [p["display_name"] for p in kfp_server.pipelines.values()] == ["training"]  # pipelineInfo.name
    assert second.pipeline_id == first.pipeline_id
    assert {v["pipeline_version_id"] for v in kfp_server.versions_of(first.pipeline_id)} == {
        first.version_id, second.version_id}
    assert first.version_name == "training"  # KFP names the first version after the pipeline
    assert second.version_name.startswith("training-")
    spec, platform = yaml.safe_load_all(package.read_text())  # training asks for Kubernetes settings (kfp-kubernetes)
    assert kfp_server.versions[second.version_id]["pipeline_spec"] == {"pipeline_spec": spec,
                                                                      "platform_spec": platform}


def test_upload_prints_the_pipeline_and_version_ids_and_takes_another_name(kfp_server: FakeKfp,
                                                                           package: Path) -> None:
    result = slipway(kfp_server, "upload", str(package), "--name", "taxi-tips", "--description", "nightly")

    assert result.exit_code == 0, result.output
    (pipeline,) = kfp_server.pipelines.values()
    (version,) = kfp_server.versions.values()
    assert (pipeline["display_name"], pipeline["description"]) == ("taxi-tips", "nightly")
    assert f"pipeline id: {pipeline['pipeline_id']}" in result.output
    assert f"version id:  {version['pipeline_version_id']}" in result.output


def test_two_uploads_in_the_same_second_of_the_same_package_report_the_servers_conflict(
        uploaded: KfpSession, package: Path) -> None:
    import datetime

    now = datetime.datetime(2026, 11, 24, 9, 0, tzinfo=datetime.UTC)
    uploaded.upload(package, now=now)
    with pytest.raises(KfpError, match=r"answered HTTP 409 Conflict: Already exists error: a pipeline version "
                                       r"named 'training-20261124-090000-[0-9a-f]{8}' exists"):
        uploaded.upload(package, now=now)


def test_a_missing_or_uncompiled_package_is_an_error_naming_the_file(kfp_server: FakeKfp, tmp_path: Path) -> None:
    missing = slipway(kfp_server, "upload", str(tmp_path / "training.yaml"))
    (tmp_path / "values.yaml").write_text("epochs: 5\n")
    not_a_pipeline = slipway(kfp_server, "upload", str(tmp_path / "values.yaml"))

    assert missing.exit_code == 1
    assert missing.output == f"Error: cannot read the pipeline package {tmp_path / 'training.yaml'}: " \
                             "No such file or directory\n"
    assert not_a_pipeline.exit_code == 1
    assert f"Error: {tmp_path / 'values.yaml'} is not a compiled KFP pipeline" in not_a_pipeline.output
    assert kfp_server.pipelines == {}
    (tmp_path / "broken.yaml").write_text("a: [1,\n")
    with pytest.raises(PackageError, match=r"broken.yaml is not YAML: .* \(line 2\)$"):
        connect(kfp_server.url).upload(tmp_path / "broken.yaml")


# --- submit ----------------------------------------------------------------------------------


def test_set_values_reach_the_runs_runtime_parameters_typed_by_the_pipeline(kfp_server: FakeKfp,
                                                                            uploaded: KfpSession) -> None:
    result = slipway(kfp_server, "submit", "training", "--set", "epochs=5", "--set", "learning_rate=0.01",
                     "--set", "hidden_units=16,8", "--set", SOURCE, "--run-name", "five epochs")

    assert result.exit_code == 0, result.output
    run = run_of(kfp_server, result.output)
    assert run["runtime_config"]["parameters"] == {"epochs": 5, "learning_rate": 0.01, "hidden_units": [16, 8],
                                                   "source_uri": "gs://taxi/trips.csv"}
    assert run["display_name"] == "five epochs"
    assert f"{kfp_server.url}/#/runs/details/{run['run_id']}" in [line.strip() for line in result.output.splitlines()]


def test_submit_runs_the_latest_version_unless_given_one(kfp_server: FakeKfp, uploaded: KfpSession,
                                                         package: Path) -> None:
    first = next(iter(kfp_server.versions))
    latest = uploaded.upload(package).version_id

    default = uploaded.submit("training", [SOURCE])
    chosen = uploaded.submit("training", [SOURCE], version_id=first)

    assert kfp_server.runs[default.run_id]["pipeline_version_reference"]["pipeline_version_id"] == latest
    assert kfp_server.runs[chosen.run_id]["pipeline_version_reference"]["pipeline_version_id"] == first
    with pytest.raises(KfpError, match="pipeline 'training' on http://127.0.0.1:[0-9]+ has no version 'v9'"):
        uploaded.submit("training", [SOURCE], version_id="v9")


def test_the_experiment_is_created_once_and_reused(kfp_server: FakeKfp, uploaded: KfpSession) -> None:
    runs = [uploaded.submit("training", [SOURCE]) for _ in range(2)]
    nightly = uploaded.submit("training", [SOURCE], experiment="nightly")

    assert sorted(e["display_name"] for e in kfp_server.experiments.values()) == ["nightly", "slipway"]
    assert runs[0].experiment_id == runs[1].experiment_id != nightly.experiment_id
    assert kfp_server.runs[runs[1].run_id]["experiment_id"] == runs[0].experiment_id
    assert kfp_server.requests.count("POST /apis/v2beta1/experiments") == 2


def test_on_a_multi_user_kubeflow_the_experiment_is_made_in_the_users_namespace(kfp_server: FakeKfp,
                                                                              uploaded: KfpSession) -> None:
    connect(kfp_server.url, namespace="team-taxi").submit("training", [SOURCE])

    assert [e["namespace"] for e in kfp_server.experiments.values()] == ["team-taxi"]


def test_without_a_spec_to_read_values_are_json_where_they_parse_else_text() -> None:
    # A server that leaves the version's pipeline_spec out: nothing to check against, so no refusal.
    assert typed_arguments(None, ["epochs=5", "hidden_units=[16, 8]", "source_uri=gs://taxi/trips.csv"]) == {
        "epochs": 5, "hidden_units": [16, 8], "source_uri": "gs://taxi/trips.csv"}


def test_an_unknown_parameter_is_refused_with_the_valid_ones_before_anything_is_submitted(
        kfp_server: FakeKfp, uploaded: KfpSession) -> None:
    result = slipway(kfp_server, "submit", "training", "--set", "epoch=5", "--set", SOURCE)

    assert result.exit_code == 2
    assert "Invalid value for --set: 'epoch' is not a parameter of pipeline 'training'; valid: " in result.output
    assert "epochs (integer, default 20" in result.output
    assert kfp_server.runs == {} and kfp_server.experiments == {}


def test_a_parameter_without_a_default_must_be_set_and_a_value_must_parse(uploaded: KfpSession) -> None:
    with pytest.raises(PipelineArgumentError, match=r"pipeline 'training' has no default for source_uri \(string\)"):
        uploaded.submit("training", ["epochs=5"])
    with pytest.raises(PipelineArgumentError, match="epochs='five': expected integer"):
        uploaded.submit("training", ["epochs=five", SOURCE])


def test_submitting_a_pipeline_never_uploaded_says_so(kfp_server: FakeKfp) -> None:
    result = slipway(kfp_server, "submit", "nightly", "--set", SOURCE)

    assert result.exit_code == 1
    assert result.output == f"Error: no pipeline named 'nightly' on {kfp_server.url}: upload it first " \
                            "(slipway upload)\n"


# --- waiting and following runs --------------------------------------------------------------


def test_wait_prints_each_state_the_server_reports_and_exits_0_when_the_run_succeeds(
        kfp_server: FakeKfp, uploaded: KfpSession) -> None:
    kfp_server.script = ("PENDING", "PENDING", "RUNNING", "RUNNING", "RUNNING", "SUCCEEDED")
    result = slipway(kfp_server, "submit", "training", "--set", SOURCE, "--wait", "--poll-interval", "0.01")

    assert result.exit_code == 0, result.output
    states = [line.split()[-1] for line in result.output.splitlines()[3:]]
    assert states == ["PENDING", "RUNNING", "SUCCEEDED"]
    assert run_of(kfp_server, result.output)["state"] == "SUCCEEDED"


@pytest.mark.parametrize("end", ["FAILED", "CANCELED"])
def test_wait_exits_1_when_the_run_ends_any_other_way(kfp_server: FakeKfp, uploaded: KfpSession, end: str) -> None:
    kfp_server.script = ("PENDING", "RUNNING", end)
    # CANCELED is an end too (kfp.Client's own wait_for_run_completion would wait out its timeout).
    result = slipway(kfp_server, "submit", "training", "--set", SOURCE, "--wait", "--poll-interval", "0.01",
                     "--timeout", "30")

    assert result.exit_code == 1
    assert result.output.splitlines()[-2].endswith(f" {end}")
    run_id = run_of(kfp_server, result.output)["run_id"]
    expected = f"Error: run {run_id} ended {end}"
    if end == "FAILED":
        expected += ": task 'train' failed: exit code 1"  # the server's error for the run
    assert result.output.splitlines()[-1] == expected


def test_wait_gives_up_after_its_timeout_and_says_the_run_goes_on(kfp_server: FakeKfp,
                                                                  uploaded: KfpSession) -> None:
    kfp_server.script = ("PENDING", "RUNNING")
    run = uploaded.submit("training", [SOURCE])
    seen = []

    with pytest.raises(RunTimeout, match=f"run {run.run_id} on .* is still RUNNING after 0.2 s"):
        uploaded.wait(run.run_id, timeout_s=0.2, poll_s=0.01, on_change=lambda status: seen.append(status.state))
    assert seen == ["PENDING", "RUNNING"]


def test_runs_lists_the_newest_first_by_experiment_and_shows_one_run(kfp_server: FakeKfp,
                                                                     uploaded: KfpSession) -> None:
    kfp_server.script = ("RUNNING",)
    older = uploaded.submit("training", [SOURCE], run_name="older")
    newer = uploaded.submit("training", [SOURCE], run_name="newer", experiment="nightly")

    everything = slipway(kfp_server, "runs")
    nightly = slipway(kfp_server, "runs", "--experiment", "nightly")
    one = slipway(kfp_server, "runs", older.run_id)

    assert everything.exit_code == nightly.exit_code == one.exit_code == 0, everything.output
    header, *rows = everything.output.splitlines()
    assert header.split() == ["NAME", "RUN", "ID", "STATE", "CREATED", "(UTC)"]
    assert [row.split()[:3] for row in rows] == [["newer", newer.run_id, "RUNNING"],
                                                ["older", older.run_id, "RUNNING"]]
    assert [row.split()[0] for row in nightly.output.splitlines()[1:]] == ["newer"]
    assert one.output.splitlines()[0] == f"older ({older.run_id}): RUNNING"
    assert slipway(kfp_server, "runs", "--experiment", "weekly").output == \
        f"Error: no experiment named 'weekly' on {kfp_server.url}\n"


def test_the_host_defaults_to_kf_pipelines_endpoint_as_for_kfp_client(kfp_server: FakeKfp) -> None:
    result = CliRunner().invoke(cli, ["runs"], env={"KF_PIPELINES_ENDPOINT": kfp_server.url})
    no_host = CliRunner().invoke(cli, ["runs"], env={"KF_PIPELINES_ENDPOINT": None})

    assert (result.exit_code, result.output) == (0, "No runs\n")
    assert no_host.exit_code == 2
    assert "Missing option '--host'" in no_host.output


# --- when the API cannot be used -------------------------------------------------------------


def test_an_unreachable_host_is_one_line_naming_it(package: Path) -> None:
    (port,) = free_ports(1)  # nothing listens there once the probe is closed
    host = f"http://127.0.0.1:{port}"
    result = slipway(host, "upload", str(package))

    assert result.exit_code == 1
    assert result.output == f"Error: {host} is unreachable ([Errno 111] Connection refused): check the address, " \
                            "and that the KFP API is up there (or port-forwarded to it)\n"
    assert isinstance(result.exception, SystemExit)  # no traceback
    with pytest.raises(EndpointUnreachable):
        connect(host)


def test_a_401_names_the_host_and_how_to_pass_credentials_and_the_token_gets_through(package: Path) -> None:
    with FakeKfp(token="s3cret") as server:
        anonymous = slipway(server, "upload", str(package))
        wrong = slipway(server, "upload", str(package), "--existing-token", "guess")
        right = CliRunner().invoke(cli, ["upload", str(package), "--host", server.url],
                                   env={"SLIPWAY_KFP_TOKEN": "s3cret"})

    assert anonymous.exit_code == wrong.exit_code == 1
    assert anonymous.output.startswith(f"Error: {server.url} refused the request: authentication failed (HTTP 401: "
                                       "Unauthenticated: request has no Authorization header); pass credentials")
    assert "with --existing-token TOKEN (or SLIPWAY_KFP_TOKEN) or --cookies 'authservice_session=...'" in \
        anonymous.output
    assert "authorization failed (HTTP 403: PermissionDenied" in wrong.output
    assert right.exit_code == 0, right.output
    assert len(server.pipelines) == 1


def test_a_login_page_in_front_of_the_api_is_an_authentication_failure_not_an_empty_answer() -> None:
    with FakeKfp(login_page=True) as server, pytest.raises(AuthenticationFailed, match=(
            f"{server.url} answered with a web page \\(text/html; charset=utf-8\\), not the KFP API: most likely a "
            "login page")):
        connect(server.url)


# --- the stand-in is as strict as the server it stands for -------------------------------------


def test_the_stand_in_refuses_unknown_routes_and_unreadable_bodies(kfp_server: FakeKfp) -> None:
    api = f"{kfp_server.url}/apis/v2beta1"

    assert requests.get(f"{api}/pipelines/upload/nothing", timeout=5).status_code == 404
    assert requests.get(f"{kfp_server.url}/apis/v1beta1/pipelines", timeout=5).status_code == 404
    assert requests.post(f"{api}/runs", data="{not json", timeout=5).status_code == 400
    assert requests.post(f"{api}/pipelines/upload?name=x", files={"file": ("p.yaml", b"a: 1")},
                         timeout=5).status_code == 400  # the field is `uploadfile`
    assert requests.get(f"{api}/runs?sort_by=state", timeout=5).status_code == 400
    error = requests.post(f"{api}/experiments", json={"display_name": ""}, timeout=5).json()
    assert (error["code"], error["message"]) == (3, "Invalid input error: experiment display_name is empty")
    assert json.loads(requests.get(f"{api}/healthz", timeout=5).text) == {"multi_user": False,
                                                                          "pipeline_store": "database"}
