"""The register step: version tags that trace a model back, and the model card that travels with it."""

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from slipway.components.blessing import BlessingPolicy, decide
from slipway.components.evaluation import ColumnSlices, Evaluation, SliceMetrics, evaluate_model
from slipway.components.model_artifact import METADATA_FILE
from slipway.components.model_card import CardFacts, render_model_card
from slipway.components.registration import DataLineage, register_model, registered_model_name, version_tags
from slipway.components.registry import CHALLENGER, MODEL_CARD_FILE, ModelRegistry
from slipway.components.tracking import TrackingConfig, TrainingRun, lineage_tags
from slipway.problem import load_problem

DATA = DataLineage(train_uri="s3://bucket/run/train_data", eval_uri="s3://bucket/run/eval_data",
                   data_sha256="cd" * 32, schema_uri="s3://bucket/run/schema.pbtxt", pipeline_run_id="run-42")


@pytest.fixture(scope="module")
def evaluation(taxi_model: Path, taxi_training_sets: tuple[Path, Path]) -> Evaluation:
    return evaluate_model(taxi_model, taxi_training_sets[1], load_problem("chicago_taxi"))


@pytest.fixture
def tracked_model(tmp_path: Path, taxi_model: Path) -> tuple[ModelRegistry, Path]:
    """The taxi model as the trainer leaves it: logged in an MLflow run that its model.json names."""
    config = TrackingConfig.embedded(tmp_path / "mlflow")
    (tmp_path / "mlflow").mkdir()
    model_dir = tmp_path / "model"
    shutil.copytree(taxi_model, model_dir)
    with TrainingRun.start(config, "train", {}, lineage_tags("ab" * 32, "run-42")) as run:
        metadata = json.loads((model_dir / METADATA_FILE).read_text())
        metadata["lineage"]["mlflow_run_id"] = run.run_id
        (model_dir / METADATA_FILE).write_text(json.dumps(metadata))
        run.log_model_dir(model_dir)
    return ModelRegistry.connect(config.tracking_uri), model_dir


def test_version_tags_trace_data_code_run_params_metrics_and_decision(
    taxi_model: Path, evaluation: Evaluation
) -> None:
    metadata = json.loads((taxi_model / METADATA_FILE).read_text())
    decision = decide(BlessingPolicy(), evaluation.auc)
    tags = version_tags(metadata, {"slipway.git_commit": "0123abc", "mlflow.user": "x"}, evaluation, decision, DATA)

    assert tags["slipway.data_sha256"] == "cd" * 32
    assert tags["slipway.schema_uri"] == "s3://bucket/run/schema.pbtxt"
    assert tags["slipway.pipeline_run_id"] == "run-42"
    assert tags["slipway.git_commit"] == "0123abc"
    assert "mlflow.user" not in tags, "only the run's lineage tags are repeated"
    assert tags["slipway.param.hidden_units"] == "[64, 32]"  # JSON, not a Python repr
    assert tags["slipway.param.epochs"] == "3"
    assert float(tags["slipway.eval.auc"]) == pytest.approx(evaluation.auc, abs=1e-6)
    assert tags["slipway.decision"] == "blessed"
    assert all(isinstance(v, str) and v for v in tags.values())


def test_empty_lineage_is_left_out_and_long_values_are_cut_to_mlflows_limit(
    taxi_model: Path, evaluation: Evaluation
) -> None:
    metadata = json.loads((taxi_model / METADATA_FILE).read_text())
    decision = dataclasses.replace(decide(BlessingPolicy(), evaluation.auc), reasons=("x" * 6000,))
    tags = version_tags(metadata, {}, evaluation, decision, DataLineage())
    assert "slipway.schema_uri" not in tags and "slipway.git_commit" not in tags
    assert len(tags["slipway.decision_reasons"]) == 5000


def test_register_model_creates_the_challenger_with_tags_and_the_card_beside_the_weights(
    tracked_model: tuple[ModelRegistry, Path], evaluation: Evaluation, tmp_path: Path
) -> None:
    registry, model_dir = tracked_model
    problem = load_problem("chicago_taxi")
    decision = decide(BlessingPolicy(min_auc=0.99), evaluation.auc)
    version, card = register_model(registry, "taxi", model_dir, problem, evaluation, decision, DATA)

    stored = MlflowClient(registry.tracking_uri).get_model_version_by_alias("taxi", CHALLENGER)
    assert str(stored.version) == version.version == "1"
    assert stored.tags["slipway.decision"] == "refused" and stored.tags["slipway.git_commit"]
    assert (registry.download(version, tmp_path / "dl") / MODEL_CARD_FILE).read_text() == card
    assert card.startswith("# Model card: models:/taxi/1\n")
    assert "**This version was refused by the blessing gate" in card
    assert registry.champion("taxi") is None


def test_a_model_trained_without_tracking_cannot_be_registered_and_says_why(
    tracked_model: tuple[ModelRegistry, Path], taxi_model: Path, evaluation: Evaluation
) -> None:
    registry, _ = tracked_model
    with pytest.raises(ValueError, match=r"model.json: lineage.mlflow_run_id is empty"):
        register_model(registry, "taxi", taxi_model, load_problem("chicago_taxi"), evaluation,
                       decide(BlessingPolicy(), evaluation.auc), DATA)


def test_the_card_states_use_data_metrics_slices_decision_and_lineage(taxi_model: Path, evaluation: Evaluation) -> None:
    problem = load_problem("chicago_taxi")
    metadata = json.loads((taxi_model / METADATA_FILE).read_text())
    decision = decide(BlessingPolicy(), evaluation.auc, champion_auc=evaluation.auc, champion_version="3")
    tags = version_tags(metadata, {"slipway.git_commit": "0123abc"}, evaluation, decision, DATA)
    card = render_model_card(CardFacts(problem, "models:/taxi/4", metadata, evaluation, decision, tags))

    headings = [line for line in card.splitlines() if line.startswith("## ")]
    assert headings == ["## Intended use", "## Model", "## Data", "## Metrics (eval split)", "## Metrics per slice",
                        "## Blessing", "## Lineage", "## Caveats"]
    assert problem.intended_use in card
    assert f"| AUC | {evaluation.auc:.4f} |" in card
    assert "### `payment_type`" in card and "| Cash |" in card
    assert "champion: version 3" in card
    assert "| `slipway.git_commit` | 0123abc |" in card
    assert "slipway.eval.auc" not in card, "metrics appear once, in their own section"
    assert "must not be deployed" not in card


def test_the_card_escapes_slice_values_that_would_break_its_tables(taxi_model: Path, evaluation: Evaluation) -> None:
    hostile = SliceMetrics(value="A|B <script>", rows=40, positive_rate=0.5, auc=0.7, accuracy=0.6, log_loss=0.6,
                           precision=0.5, recall=0.5, expected_calibration_error=0.1)
    evaluation = dataclasses.replace(evaluation, slices=[ColumnSlices("company", 30, [hostile], 0, 0)])
    metadata = json.loads((taxi_model / METADATA_FILE).read_text())
    card = render_model_card(CardFacts(load_problem("chicago_taxi"), "models:/taxi/1", metadata, evaluation,
                                       decide(BlessingPolicy(), evaluation.auc), {}))
    assert "| A\\|B &lt;script&gt; | 40 |" in card and "<script>" not in card


def test_the_registered_model_is_named_after_the_problem_unless_named() -> None:
    problem = load_problem("chicago_taxi")
    assert registered_model_name("", problem) == "chicago_taxi"
    assert registered_model_name(" fraud ", problem) == "fraud"
