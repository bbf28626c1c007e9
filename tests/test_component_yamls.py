"""The component YAMLs `slipway compile` writes to dist/components/: users load them with
`kfp.components.load_component_from_file` and wire them into pipelines of their own, so each must load
as the same component the Python import gives, run on this release's image, and let KFP reject wrong
wiring when the user's pipeline is compiled, with KFP's own words.
"""

import dataclasses
import re
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from kfp import compiler, components, dsl
from kfp.dsl.base_component import BaseComponent
from kfp.dsl.types.type_utils import InconsistentTypeException

import slipway.components
from slipway import __version__, runtimes
from slipway.components.search_space import DEFAULT_SEARCH_SPACE
from slipway.components.train_config import DEFAULT_PROCESSES, TrainConfig
from slipway.pipelines.cli import cli
from slipway.pipelines.compile import COMPONENTS_DIR, compile_components

# The components that do not run on the core image (DESIGN.md §3): validation on tfdv, drift on drift.
NON_CORE_RUNTIMES = {"statistics": runtimes.TFDV, "schema": runtimes.TFDV, "validate": runtimes.TFDV,
                     "drift": runtimes.DRIFT}


@pytest.fixture(scope="module")
def component_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """dist/components/ as `slipway compile --output-dir dist` leaves it."""
    output = tmp_path_factory.mktemp("dist")
    result = CliRunner().invoke(cli, ["compile", "--output-dir", str(output)])
    assert result.exit_code == 0, result.output
    return output / COMPONENTS_DIR


@pytest.fixture(scope="module")
def loaded(component_dir: Path) -> dict[str, BaseComponent]:
    """Every YAML in the folder, loaded the way a user loads it, by file name."""
    return {path.stem: components.load_component_from_file(str(path)) for path in component_dir.glob("*.yaml")}


def executor_images(ir: dict) -> list[str]:
    return [executor["container"]["image"] for executor in ir["deploymentSpec"]["executors"].values()]


def test_every_component_loads_from_its_yaml_as_the_component_python_imports(loaded: dict[str, BaseComponent]) -> None:
    assert sorted(loaded) == sorted(slipway.components.COMPONENTS)
    for name, component in loaded.items():
        imported = getattr(slipway.components, name)
        assert component.name == imported.name, name
        assert component.component_spec.inputs == imported.component_spec.inputs, name
        assert component.component_spec.outputs == imported.component_spec.outputs, name


def test_each_yaml_runs_on_its_runtimes_image_of_this_release_and_names_the_release(component_dir: Path) -> None:
    for path in sorted(component_dir.glob("*.yaml")):
        ir = yaml.safe_load(path.read_text())
        runtime = NON_CORE_RUNTIMES.get(path.stem, runtimes.CORE)
        assert executor_images(ir) == [runtimes.image(runtime)], path.name
        assert executor_images(ir)[0].endswith(f"/slipway-{runtime}:{__version__}"), path.name
        assert ir["pipelineInfo"] == {"name": getattr(slipway.components, path.stem).name,
                                      "displayName": f"{path.stem} (slipway {__version__})"}


def test_compiling_again_removes_the_yaml_of_a_component_that_no_longer_exists(tmp_path: Path) -> None:
    retired = tmp_path / COMPONENTS_DIR / "retired_step.yaml"
    retired.parent.mkdir()
    retired.write_text("# a component of an older release\npipelineInfo:\n  name: retired-step\n"
                       "  displayName: retired_step (slipway 0.1.0)\n")
    mine = tmp_path / COMPONENTS_DIR / "my_step.yaml"  # --output-dir pointed at a folder with the user's own YAML
    mine.write_text("pipelineInfo:\n  name: my-step\n")
    written = compile_components(tmp_path)
    assert not retired.exists()
    assert sorted(p.name for p in (tmp_path / COMPONENTS_DIR).iterdir()) == sorted(p.name for p in [*written, mine])


def test_train_and_tune_default_to_the_train_configs_so_a_user_sets_only_what_they_change(
        loaded: dict[str, BaseComponent]) -> None:
    for name in ("train", "tune"):
        inputs = loaded[name].component_spec.inputs
        for field, value in dataclasses.asdict(TrainConfig()).items():
            assert inputs[field].default == (list(value) if isinstance(value, tuple) else value), (name, field)
    assert loaded["train"].component_spec.inputs["processes"].default == DEFAULT_PROCESSES
    assert loaded["tune"].component_spec.inputs["search_space"].default == DEFAULT_SEARCH_SPACE
    required = {name for name, spec in loaded["train"].component_spec.inputs.items() if not spec.optional}
    assert required == {"train_data", "eval_data", "problem", "pipeline_root", "pipeline_run_id"}

def test_a_pipeline_wired_from_the_loaded_yamls_compiles_with_the_outputs_feeding_the_inputs(
        loaded: dict[str, BaseComponent], tmp_path: Path) -> None:
    @dsl.pipeline(name="my-taxi-pipeline")
    def my_pipeline(source_uri: str, problem: str = "chicago_taxi") -> None:
        data = loaded["ingest"](source_uri=source_uri, problem=problem)
        stats = loaded["statistics"](train_data=data.outputs["train_data"], eval_data=data.outputs["eval_data"],
                                     problem=problem)
        schema = loaded["schema"](statistics=stats.outputs["statistics"], problem=problem, pinned_schema="")
        loaded["validate"](statistics=stats.outputs["statistics"], schema=schema.outputs["schema"], problem=problem)
        model = loaded["train"](
            train_data=data.outputs["train_data"], eval_data=data.outputs["eval_data"], problem=problem,
            architecture="mlp", hidden_units=[16], dropout=0.0, epochs=1, learning_rate=0.01, batch_size=256,
            weight_decay=0.0, patience=1, seed=0, processes=1, launcher="torchrun", num_nodes=1,
            credentials_secret="", tracking_uri="", pipeline_root="", pipeline_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER)
        loaded["evaluate"](model=model.outputs["model"], eval_data=data.outputs["eval_data"], problem=problem,
                           threshold=0.5)

    package = tmp_path / "my_pipeline.yaml"
    compiler.Compiler().compile(my_pipeline, package_path=str(package))
    ir = yaml.safe_load(package.read_text())
    tasks = ir["root"]["dag"]["tasks"]
    assert sorted(tasks) == ["evaluate", "ingest", "schema", "statistics", "train", "validate"]
    assert tasks["validate"]["inputs"]["artifacts"]["schema"] == {
        "taskOutputArtifact": {"outputArtifactKey": "schema", "producerTask": "schema"}}
    assert tasks["evaluate"]["inputs"]["artifacts"]["model"] == {
        "taskOutputArtifact": {"outputArtifactKey": "model", "producerTask": "train"}}
    assert sorted(set(executor_images(ir))) == [runtimes.CORE_IMAGE, runtimes.TFDV_IMAGE]


def test_a_model_wired_into_a_dataset_input_fails_at_compile_time_with_kfps_error(
        loaded: dict[str, BaseComponent]) -> None:
    def wrong_pipeline(problem: str = "chicago_taxi") -> None:
        champion = loaded["champion"](problem=problem, model_name="chicago_taxi", tracking_uri="", pipeline_root="")
        loaded["statistics"](train_data=champion.outputs["model"], eval_data=champion.outputs["reference"],
                             problem=problem)

    message = ("Incompatible argument passed to the input 'train_data' of component 'statistics': Argument type "
               "'system.Model@0.0.1' is incompatible with the input type 'system.Dataset@0.0.1'")
    with pytest.raises(InconsistentTypeException, match=re.escape(message)):
        dsl.pipeline(wrong_pipeline)


@pytest.mark.parametrize(("name", "arguments", "message"), [
    ("ingest", {"source_uri": "data.csv"}, "ingest() missing 1 required argument: problem."),
    ("evaluate", {"problem": "chicago_taxi", "threshold": 0.5},
     "evaluate() missing 2 required arguments: eval_data, model."),
])
def test_a_loaded_component_called_without_a_required_input_fails_at_compile_time_naming_it(
        loaded: dict[str, BaseComponent], name: str, arguments: dict, message: str) -> None:
    def incomplete_pipeline() -> None:
        loaded[name](**arguments)

    with pytest.raises(TypeError, match=re.escape(message)):
        dsl.pipeline(incomplete_pipeline)
