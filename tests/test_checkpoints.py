"""Checkpoints: atomic, checksummed, tensors and JSON only, and refused when they belong to another model."""

import logging
from pathlib import Path

import pytest
import torch

from slipway.components.checkpoints import (
    KEEP,
    STATE_FILE,
    TENSORS_FILE,
    Checkpoint,
    CheckpointError,
    load_latest_checkpoint,
    save_checkpoint,
)
from slipway.components.models import TabularMLP

SHAPE = {"name": "mlp", "arguments": {"numeric_inputs": 4, "vocabulary_sizes": [5, 7], "hidden_units": [8],
                                      "dropout": 0.0}}


def trained_checkpoint(epoch: int) -> Checkpoint:
    """A model and AdamW after a real optimisation step, so the optimizer state holds tensors."""
    torch.manual_seed(epoch)
    model = TabularMLP(**SHAPE["arguments"])
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.01)
    model(torch.randn(3, 4), torch.tensor([[1, 2], [3, 4], [0, 6]])).sum().backward()
    optimizer.step()
    return Checkpoint(epoch=epoch, model_shape=SHAPE, model_state=model.state_dict(), best_state=model.state_dict(),
                      optimizer_state=optimizer.state_dict(), sampler={"seed": 0, "epoch": epoch, "num_replicas": 2},
                      progress={"best_auc": 0.9, "history": [{"epoch": epoch}]})


def test_the_latest_checkpoint_restores_model_optimizer_sampler_and_progress(tmp_path: Path) -> None:
    for epoch in (1, 2):
        save_checkpoint(tmp_path, trained_checkpoint(epoch))
    saved, loaded = trained_checkpoint(2), load_latest_checkpoint(tmp_path, SHAPE)

    assert loaded.epoch == 2 and loaded.sampler == saved.sampler and loaded.progress == saved.progress
    assert all(torch.equal(loaded.model_state[k], v) for k, v in saved.model_state.items())
    optimizer = torch.optim.AdamW(TabularMLP(**SHAPE["arguments"]).parameters(), lr=0.5)
    optimizer.load_state_dict(loaded.optimizer_state)  # what the trainer does on resume
    restored, original = optimizer.state_dict(), saved.optimizer_state
    assert restored["param_groups"][0]["lr"] == 0.01
    for param_id, state in original["state"].items():
        assert torch.equal(restored["state"][param_id]["exp_avg_sq"], state["exp_avg_sq"])
        assert torch.equal(restored["state"][param_id]["step"], state["step"])


def test_only_the_newest_checkpoints_are_kept_and_no_staging_folder_is_left(tmp_path: Path) -> None:
    for epoch in range(1, 5):
        save_checkpoint(tmp_path, trained_checkpoint(epoch))
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"epoch-{e:04d}" for e in range(5 - KEEP, 5)]
    assert sorted(p.name for p in (tmp_path / "epoch-0004").iterdir()) == [STATE_FILE, TENSORS_FILE]


def test_a_corrupted_checkpoint_is_detected_and_the_previous_one_is_used(tmp_path: Path, caplog) -> None:
    save_checkpoint(tmp_path, trained_checkpoint(1))
    save_checkpoint(tmp_path, trained_checkpoint(2))
    tensors = tmp_path / "epoch-0002" / TENSORS_FILE
    data = bytearray(tensors.read_bytes())
    data[-1] ^= 0xFF  # one flipped bit in a weight
    tensors.write_bytes(bytes(data))

    with caplog.at_level(logging.WARNING):
        loaded = load_latest_checkpoint(tmp_path, SHAPE)
    assert loaded.epoch == 1
    assert f"skipping checkpoint {tmp_path / 'epoch-0002'}: {tensors} is corrupted: sha256" in caplog.text


def test_a_checkpoint_of_another_model_shape_is_an_error(tmp_path: Path) -> None:
    save_checkpoint(tmp_path, trained_checkpoint(1))
    wider = {**SHAPE, "arguments": {**SHAPE["arguments"], "hidden_units": [16]}}
    with pytest.raises(CheckpointError, match=r"epoch-0001 was written by another model: .*'hidden_units': \[8\]"):
        load_latest_checkpoint(tmp_path, wider)


def test_no_checkpoint_means_a_fresh_start(tmp_path: Path) -> None:
    assert load_latest_checkpoint(tmp_path / "never-written", SHAPE) is None
    (tmp_path / "epoch-0003").mkdir()  # a folder without files is not a checkpoint
    assert load_latest_checkpoint(tmp_path, SHAPE) is None


def test_a_folder_with_a_checkpoints_name_but_other_files_is_neither_replaced_nor_pruned(tmp_path: Path) -> None:
    (tmp_path / "epoch-0001").mkdir()
    (tmp_path / "epoch-0001" / "results.csv").write_text("someone's work")
    (tmp_path / "epoch-0002").mkdir()
    (tmp_path / "epoch-0002" / "notes.txt").write_text("keep")
    with pytest.raises(CheckpointError) as refused:
        save_checkpoint(tmp_path, trained_checkpoint(2))
    assert str(refused.value) == (f"{tmp_path / 'epoch-0002'} holds files no checkpoint has (notes.txt); not "
                                  "replacing it: point --checkpoint-dir at a directory of checkpoints only")
    for epoch in (3, 4, 5):  # pruning keeps the newest KEEP checkpoints, and never touches the foreign folder
        save_checkpoint(tmp_path, trained_checkpoint(epoch))
    assert (tmp_path / "epoch-0001" / "results.csv").read_text() == "someone's work"
    assert (tmp_path / "epoch-0002" / "notes.txt").read_text() == "keep"
    assert not (tmp_path / "epoch-0003").exists() and (tmp_path / "epoch-0005").is_dir()
