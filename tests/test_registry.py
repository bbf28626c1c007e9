"""The MLflow registry against a real `mlflow server`: versions, lineage tags, aliases, promote and rollback."""

from pathlib import Path

import pytest
from conftest import free_port
from mlflow.tracking import MlflowClient

from slipway.components.model_artifact import load_model
from slipway.components.registry import (
    CHALLENGER,
    CHAMPION,
    HISTORY_TAG,
    MODEL_CARD_FILE,
    ModelRegistry,
    RegistryError,
)
from slipway.components.tracking import TrackingConfig, TrainingRun

LINEAGE = {"slipway.data_sha256": "ab" * 32, "slipway.pipeline_run_id": "training-20261123-101500"}


def trained_run(tracking_uri: str, model_dir: Path) -> str:
    """What the trainer leaves behind: a finished run with the model folder logged under `model/`."""
    with TrainingRun.start(TrackingConfig(tracking_uri, "registry-test"), "train", {"epochs": 3}, {}) as run:
        run.log_model_dir(model_dir)
    return run.run_id


@pytest.fixture
def registry(mlflow_server: str) -> ModelRegistry:
    return ModelRegistry.connect(mlflow_server)


@pytest.fixture
def model_name(request: pytest.FixtureRequest) -> str:
    """One registered model per test: the server is shared by the whole session."""
    return f"taxi-{request.node.name}"[:200]


def test_a_registered_version_carries_its_lineage_the_challenger_alias_and_a_loadable_model(
    registry: ModelRegistry, mlflow_server: str, model_name: str, taxi_model: Path, tmp_path: Path
) -> None:
    run_id = trained_run(mlflow_server, taxi_model)
    version = registry.register(model_name, run_id, LINEAGE, card=lambda v: f"# Model card: {v.uri}\n")

    assert version.version == "1" and version.uri == f"models:/{model_name}/1"
    # Read back through a fresh client, not through what register returned.
    stored = MlflowClient(mlflow_server).get_model_version_by_alias(model_name, CHALLENGER)
    assert stored.version == "1" and stored.run_id == run_id
    assert stored.tags == LINEAGE
    assert registry.champion(model_name) is None, "registration alone must never make a champion"

    folder = registry.download(version, tmp_path / "download")
    assert (folder / MODEL_CARD_FILE).read_text() == f"# Model card: models:/{model_name}/1\n"
    original, downloaded = load_model(taxi_model), load_model(folder)
    assert downloaded.preprocessing == original.preprocessing
    for name, tensor in original.module.state_dict().items():
        assert downloaded.module.state_dict()[name].equal(tensor), name


def test_promote_moves_the_champion_and_rollback_returns_to_the_one_before(
    registry: ModelRegistry, mlflow_server: str, model_name: str, taxi_model: Path
) -> None:
    run_id = trained_run(mlflow_server, taxi_model)
    for _ in range(3):
        registry.register(model_name, run_id, LINEAGE)
    assert registry.alias(model_name, CHALLENGER).version == "3"

    assert registry.promote(model_name, "1").previous is None
    assert registry.promote(model_name, "3").previous == "1"
    # Version 2 never served: rolling back from 3 must go to 1, not to "the number below".
    move = registry.rollback(model_name)
    assert (move.previous, move.current) == ("3", "1")

    client = MlflowClient(mlflow_server)
    assert client.get_model_version_by_alias(model_name, CHAMPION).version == "1"
    assert client.get_model_version(model_name, "3").tags["slipway.rolled_back"] == "true"
    assert client.get_registered_model(model_name).tags[HISTORY_TAG] == "[]"
    with pytest.raises(RegistryError, match="first champion on record"):
        registry.rollback(model_name)
    assert registry.champion(model_name).version == "1"


def test_promoting_the_champion_again_records_nothing_to_roll_back_to(
    registry: ModelRegistry, mlflow_server: str, model_name: str, taxi_model: Path
) -> None:
    run_id = trained_run(mlflow_server, taxi_model)
    registry.register(model_name, run_id, LINEAGE)
    registry.promote(model_name, "1")
    registry.promote(model_name, "1")
    with pytest.raises(RegistryError, match="no previous champion"):
        registry.rollback(model_name)


def test_promoting_a_version_that_does_not_exist_names_the_versions_that_do_and_moves_nothing(
    registry: ModelRegistry, mlflow_server: str, model_name: str, taxi_model: Path
) -> None:
    run_id = trained_run(mlflow_server, taxi_model)
    registry.register(model_name, run_id, LINEAGE)
    registry.register(model_name, run_id, LINEAGE)
    registry.promote(model_name, "2")
    with pytest.raises(RegistryError, match=r"has no version '7'; versions: \['1', '2'\]"):
        registry.promote(model_name, "7")
    assert registry.champion(model_name).version == "2"
    with pytest.raises(RegistryError, match="no registered model 'never-registered'"):
        registry.promote("never-registered", "1")


def test_a_registration_that_fails_midway_leaves_no_version_and_no_empty_model_behind(
    registry: ModelRegistry, mlflow_server: str, model_name: str, taxi_model: Path
) -> None:
    def broken_card(version: object) -> str:
        raise RuntimeError("the card could not be rendered")

    run_id = trained_run(mlflow_server, taxi_model)
    with pytest.raises(RuntimeError, match="could not be rendered"):
        registry.register(model_name, run_id, LINEAGE, card=broken_card)
    assert MlflowClient(mlflow_server).search_registered_models(f"name = '{model_name}'") == []

    registry.register(model_name, run_id, LINEAGE)
    with pytest.raises(RuntimeError):
        registry.register(model_name, run_id, LINEAGE, card=broken_card)
    assert [v.version for v in registry.versions(model_name)] == ["1"]
    assert registry.alias(model_name, CHALLENGER).version == "1"


def test_registering_from_a_run_that_does_not_exist_is_a_clear_error(registry: ModelRegistry, model_name: str) -> None:
    with pytest.raises(RegistryError, match="no MLflow run '0123456789abcdef'"):
        registry.register(model_name, "0123456789abcdef", LINEAGE)


def test_an_unreachable_registry_fails_at_once_saying_nothing_was_registered() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(RegistryError, match=rf"MLflow registry at {url} is unreachable .*nothing was registered"):
        ModelRegistry.connect(url)


def test_the_embedded_sqlite_registry_works_the_same(tmp_path: Path, taxi_model: Path) -> None:
    config = TrackingConfig.embedded(tmp_path / "mlflow")
    (tmp_path / "mlflow").mkdir()
    registry = ModelRegistry.connect(config.tracking_uri)
    with TrainingRun.start(config, "train", {}, {}) as run:
        run.log_model_dir(taxi_model)
    registry.register("taxi", run.run_id, LINEAGE)
    registry.promote("taxi", "1")
    folder = registry.download(registry.champion("taxi"), tmp_path / "download")
    assert load_model(folder).preprocessing == load_model(taxi_model).preprocessing
