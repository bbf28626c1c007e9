"""Training: one process or DDP under torchrun, reproducible, resumable, refusing data it cannot train on.

The distributed tests start real `torchrun` jobs (gloo, 2 processes) on the real taxi sample.
"""

import dataclasses
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file
from sklearn.metrics import roc_auc_score

from slipway.components.checkpoints import STATE_FILE
from slipway.components.launcher import TrainingLaunchError, run_local_training, trainer_command
from slipway.components.model_artifact import METADATA_FILE, WEIGHTS_FILE, load_model
from slipway.components.models import ARCHITECTURES, NumericEmbedding, build, embedding_width
from slipway.components.train_config import ARCHITECTURE_NAMES, MLP_NUMERIC_EMBEDDING_DIM, TrainConfig
from slipway.components.trainer import TrainingDataError, TrainResult, train, trainer_arguments
from slipway.problem import load_problem

PROBLEM = load_problem("chicago_taxi")
# Short enough for the suite, long enough that early stopping is not what ends it.
CONFIG = TrainConfig(epochs=4, seed=11)


def trainer_args(splits: tuple[Path, Path], out: Path, config: TrainConfig = CONFIG) -> list[str]:
    return trainer_arguments(str(splits[0]), str(splits[1]), str(out / "model"), str(out / "checkpoints"),
                             PROBLEM.name, config)


def weights(model_dir: Path) -> dict:
    return load_file(str(model_dir / WEIGHTS_FILE))


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)


@pytest.fixture(scope="module")
def two_process_run(taxi_training_sets, tmp_path_factory) -> tuple[TrainResult, Path]:
    """An uninterrupted 2-process DDP run, the reference the other distributed tests compare with."""
    out = tmp_path_factory.mktemp("ddp")
    return run_local_training(trainer_args(taxi_training_sets, out), processes=2), out


def test_one_process_trains_an_mlp_that_beats_the_baseline_and_saves_a_safe_artifact(
    taxi_training_sets, tmp_path
) -> None:
    result = train(*taxi_training_sets, PROBLEM, CONFIG, tmp_path / "model", tmp_path / "checkpoints")

    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == [METADATA_FILE, WEIGHTS_FILE]
    metadata = json.loads((tmp_path / "model" / METADATA_FILE).read_text())
    assert metadata["architecture"]["name"] == "mlp"
    arguments = metadata["architecture"]["arguments"]  # defaults resolved, so loading never re-derives them
    assert arguments["embedding_dims"] == [embedding_width(size) for size in arguments["vocabulary_sizes"]]
    assert arguments["numeric_embedding_dim"] == MLP_NUMERIC_EMBEDDING_DIM
    assert metadata["lineage"]["train_config"]["seed"] == CONFIG.seed
    evaluation = pd.read_parquet(taxi_training_sets[1])
    scores = load_model(tmp_path / "model").predict_proba(evaluation)
    assert roc_auc_score(evaluation[PROBLEM.label.name], scores) == pytest.approx(result.eval_auc, abs=1e-5)
    assert result.eval_auc > 0.90  # the logistic baseline reaches 0.92 in 20 epochs
    assert (result.world_size, result.epochs_run, result.resumed_from_epoch) == (1, CONFIG.epochs, 0)


def test_an_mlp_saved_before_numeric_embeddings_loads_as_the_plain_mlp_it_was() -> None:
    # Its model.json has no numeric_embedding_dim: the numerics go straight into the first layer.
    saved = {"numeric_inputs": 6, "vocabulary_sizes": [4, 9], "hidden_units": [8], "dropout": 0.0,
             "embedding_dims": [2, 3]}
    module = build("mlp", saved)
    assert module.numeric_embedding is None
    assert module.mlp[0].in_features == 6 + 2 + 3
    assert module.arguments == saved  # and it is saved again exactly as it was


def test_a_numeric_embedding_embeds_each_value_on_its_own_and_passes_the_missing_indicators_through() -> None:
    torch.manual_seed(0)
    embedding = NumericEmbedding(numeric_inputs=6, width=4)  # 3 values, then their 3 missing indicators
    numeric = torch.tensor([[0.5, -1.0, 2.0, 0.0, 1.0, 0.0]])
    changed = numeric.clone()
    changed[0, 1] = 30.0  # the second value only
    before, after = embedding(numeric), embedding(changed)
    assert before.shape == (1, 3 * 4 + 3)
    differs = (before != after)[0]
    assert differs[4:8].any()
    assert not differs[:4].any() and not differs[8:].any()  # the first and third values' features, the indicators
    assert torch.equal(before[0, 12:], numeric[0, 3:])


def test_training_is_reproducible_for_a_seed_and_differs_across_seeds(taxi_training_sets, tmp_path) -> None:
    def trained(seed: int, name: str) -> dict:
        config = dataclasses.replace(CONFIG, epochs=1, seed=seed)
        train(*taxi_training_sets, PROBLEM, config, tmp_path / name / "model", tmp_path / name / "checkpoints")
        return weights(tmp_path / name / "model")

    first, again, other = trained(7, "a"), trained(7, "b"), trained(8, "c")
    assert same_weights(first, again)
    assert not same_weights(first, other)


def test_one_and_two_processes_reach_the_same_auc(taxi_training_sets, tmp_path, two_process_run) -> None:
    ddp, _ = two_process_run
    single = run_local_training(trainer_args(taxi_training_sets, tmp_path), processes=1)
    assert (single.world_size, ddp.world_size) == (1, 2)
    # The command line carried every hyperparameter through to the trainer.
    recorded = json.loads((tmp_path / "model" / METADATA_FILE).read_text())["lineage"]["train_config"]
    assert recorded == json.loads(json.dumps(dataclasses.asdict(CONFIG)))
    # Same global batch, same seed; only the shuffling differs, so the results agree closely.
    assert ddp.eval_auc == pytest.approx(single.eval_auc, abs=0.01)


def test_a_worker_killed_mid_epoch_resumes_from_its_checkpoint_to_the_same_model(
    taxi_training_sets, tmp_path, two_process_run
) -> None:
    reference, reference_dir = two_process_run
    command = trainer_command(trainer_args(taxi_training_sets, tmp_path), processes=2)
    job = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        second = tmp_path / "checkpoints" / "epoch-0002" / STATE_FILE
        deadline = time.monotonic() + 120
        while not second.exists():
            assert job.poll() is None and time.monotonic() < deadline, "the job ended before its second checkpoint"
            time.sleep(0.005)
        os.kill(worker_pids(job.pid)[-1], signal.SIGKILL)  # one worker dies in epoch 3
        assert job.wait(timeout=60) != 0
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
    assert not (tmp_path / "model").exists()

    resumed = run_local_training(trainer_args(taxi_training_sets, tmp_path), processes=2)

    assert resumed.resumed_from_epoch >= 2
    assert (resumed.eval_auc, resumed.best_epoch) == (reference.eval_auc, reference.best_epoch)
    assert same_weights(weights(tmp_path / "model"), weights(reference_dir / "model"))


def worker_pids(torchrun_pid: int) -> list[int]:
    """The processes torchrun started (its children), oldest first."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == torchrun_pid:
            children.append(int(stat.parent.name))
    assert children, "torchrun has no worker processes"
    return sorted(children)


def test_a_failing_worker_reports_its_own_error_through_torchrun(taxi_training_sets, tmp_path) -> None:
    no_label = tmp_path / "no_label.parquet"
    pd.read_parquet(taxi_training_sets[0]).drop(columns=[PROBLEM.label.name]).to_parquet(no_label)
    args = trainer_args((no_label, taxi_training_sets[1]), tmp_path)
    with pytest.raises(TrainingLaunchError, match=r"exit code 1, 2 process\(es\)\): .*TrainingDataError: "
                                                  rf"train data {no_label}: no label column 'tip_over_20pct'"):
        run_local_training(args, processes=2)


@pytest.mark.parametrize(("change", "message"), [
    (lambda f: f.drop(columns=["tip_over_20pct"]), "no label column 'tip_over_20pct'"),
    (lambda f: f.assign(tip_over_20pct=np.arange(len(f)) % 3), r"label 'tip_over_20pct' must be binary .*'2'"),
    (lambda f: f.assign(fare=f["fare"].where(f.index % 100 != 0)),
     r"required feature 'fare' is missing \(NaN\) in 80 of 7998 rows"),
    (lambda f: f.drop(columns=["company"]), r"missing feature column\(s\) \['company'\]"),
    (lambda f: f.head(0), "no rows"),
], ids=["no-label", "label-not-binary", "nan-in-required-feature", "missing-feature", "empty"])
def test_training_data_that_cannot_train_is_refused_naming_file_and_column(
    taxi_training_sets, tmp_path, change, message
) -> None:
    bad = tmp_path / "train.parquet"
    change(pd.read_parquet(taxi_training_sets[0]).reset_index(drop=True)).to_parquet(bad)
    with pytest.raises(TrainingDataError, match=f"train data {bad}: {message}"):
        train(bad, taxi_training_sets[1], PROBLEM, CONFIG, tmp_path / "model", tmp_path / "checkpoints")
    assert not (tmp_path / "model").exists() and not (tmp_path / "checkpoints").exists()


def test_a_raw_split_without_the_feast_features_is_refused_pointing_at_the_training_set(
    taxi_splits, taxi_training_sets, tmp_path
) -> None:
    with pytest.raises(TrainingDataError, match=r"missing feature column\(s\) \['pickup_community_area_stats__trips_1h'"
                       r".*train on the training_set step's Dataset"):
        train(taxi_splits[0], taxi_training_sets[1], PROBLEM, CONFIG, tmp_path / "model", tmp_path / "checkpoints")


def test_a_file_that_is_not_parquet_is_refused_by_name(taxi_csv, taxi_training_sets, tmp_path) -> None:
    with pytest.raises(TrainingDataError, match=f"train data {taxi_csv}: cannot read as Parquet"):
        train(taxi_csv, taxi_training_sets[1], PROBLEM, CONFIG, tmp_path / "model", tmp_path / "checkpoints")


@pytest.mark.parametrize(("field", "value", "message"), [
    ("epochs", 0, "epochs must be at least 1, got 0"),
    ("batch_size", 0, "batch_size must be at least 1, got 0"),
    ("learning_rate", 0.0, "learning_rate must be positive, got 0.0"),
    ("dropout", 1.0, r"dropout must be in \[0, 1\), got 1.0"),
    ("architecture", "transformer", "architecture 'transformer' is not one of"),
    ("hidden_units", (64, 0), r"hidden_units must all be at least 1, got \[64, 0\]"),
])
def test_train_config_refuses_values_that_cannot_train(field: str, value, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TrainConfig(**{field: value})


def test_the_config_offers_exactly_the_architectures_the_registry_builds() -> None:
    assert sorted(ARCHITECTURE_NAMES) == sorted(ARCHITECTURES)
