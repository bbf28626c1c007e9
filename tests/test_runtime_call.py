"""The one boundary between runtimes: a function called in the `tfdv` environment from core, as the
validation components call TFDV locally. Every test starts that environment's real interpreter."""

import sys
from pathlib import Path

import pytest

from slipway import runtime_call, runtimes


def test_the_function_runs_in_the_other_runtimes_interpreter_and_its_result_comes_back() -> None:
    # `runtimes.current()` answers from SLIPWAY_RUNTIME, which the boundary sets for the child.
    assert runtime_call.call(runtimes.TFDV, "slipway.runtimes:current") == "tfdv"
    assert runtimes.current() == "core"
    site_packages = runtime_call.call(runtimes.TFDV, "sysconfig:get_path", name="purelib")
    assert Path(site_packages).is_relative_to(runtimes.local_python("tfdv").parent.parent)
    assert not Path(sys.executable).is_relative_to(runtimes.local_python("tfdv").parent.parent)


def test_inside_the_runtimes_own_image_nothing_is_crossed(monkeypatch) -> None:
    monkeypatch.setenv(runtimes.RUNTIME_ENV, "tfdv")
    monkeypatch.setenv("SLIPWAY_TFDV_PYTHON", "/nonexistent/python")  # would fail if a child were started
    assert runtime_call.call(runtimes.TFDV, "slipway.runtimes:local_python", runtime="tfdv") == Path(
        "/nonexistent/python")


def test_the_childs_exception_becomes_an_error_naming_the_function_and_the_cause(capfd) -> None:
    with pytest.raises(runtime_call.RuntimeCallError) as caught:
        runtime_call.call(runtimes.TFDV, "slipway.problem:load_problem", ref="no_such_problem")
    message = str(caught.value)
    assert message.startswith("slipway.problem:load_problem failed in the `tfdv` runtime: ProblemError: problem "
                              "'no_such_problem'")
    # The child's traceback was streamed to this process's stderr as it happened.
    assert "Traceback" in capfd.readouterr().err


def test_a_child_that_dies_without_an_exception_is_reported_with_its_exit_code() -> None:
    with pytest.raises(runtime_call.RuntimeCallError, match=r"os:abort in the `tfdv` runtime exited with code -6 "
                                                            r"and no result"):
        runtime_call.call(runtimes.TFDV, "os:abort")


def test_a_result_that_is_not_json_is_an_error_not_a_crash() -> None:
    with pytest.raises(runtime_call.RuntimeCallError, match="TypeError: Object of type PosixPath is not JSON"):
        runtime_call.call(runtimes.TFDV, "slipway.runtimes:local_python", runtime="tfdv")


def test_a_missing_environment_says_how_to_build_it(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SLIPWAY_TFDV_PYTHON", str(tmp_path / "python"))
    with pytest.raises(runtime_call.RuntimeCallError, match=r"the `tfdv` runtime's environment is missing .* "
                                                            r"build it with `make tfdv-env`"):
        runtime_call.call(runtimes.TFDV, "slipway.runtimes:current")
