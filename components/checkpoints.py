"""Training checkpoints: written every epoch, atomically, checksummed, never pickled.

A checkpoint is a directory `epoch-NNNN/` holding `checkpoint.safetensors` (every tensor: the
model's weights, the best epoch's weights and the optimizer's state) and `checkpoint.json`
(everything else: the epoch, the sampler's seed and epoch, the optimizer's hyperparameters,
early-stopping progress, the model's shape, and the sha256 of the tensor file). It is written
under a temporary name and renamed into place in one step, so a crash mid-write leaves the
previous checkpoint as the latest. `torch.load` is never used: restoring reads tensors and
JSON only, so a checkpoint cannot run code.

On resume the newest checkpoint whose checksum verifies wins; a corrupted one is reported and
skipped. A checkpoint whose model shape differs from the model being trained is an error: it
belongs to another model, and silently starting over would hide that.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from slipway.storage import sha256_of

log = logging.getLogger(__name__)

TENSORS_FILE = "checkpoint.safetensors"
STATE_FILE = "checkpoint.json"
KEEP = 2  # the newest checkpoints kept; older ones are deleted after a successful write


class CheckpointError(ValueError):
    """A checkpoint exists but cannot be used to resume this training run."""


@dataclasses.dataclass
class Checkpoint:
    """What a training run needs to continue exactly where it stopped."""

    epoch: int  # epochs completed
    model_shape: dict[str, Any]  # architecture name and constructor arguments
    model_state: dict[str, torch.Tensor]
    best_state: dict[str, torch.Tensor]
    optimizer_state: dict[str, Any]  # torch.optim.Optimizer.state_dict()
    sampler: dict[str, int]  # DistributedSampler's seed, epoch and num_replicas
    progress: dict[str, Any]  # early stopping and per-epoch history; plain JSON


def save_checkpoint(directory: Path, checkpoint: Checkpoint) -> Path:
    """Writes `directory/epoch-NNNN/` atomically and prunes all but the newest `KEEP` checkpoints."""
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / f"epoch-{checkpoint.epoch:04d}"
    tensors = {f"model/{k}": v for k, v in checkpoint.model_state.items()}
    tensors |= {f"best/{k}": v for k, v in checkpoint.best_state.items()}
    optimizer_tensors, optimizer_json = _split_optimizer_state(checkpoint.optimizer_state)
    tensors |= optimizer_tensors
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=directory))
    try:
        # Copies: safetensors refuses tensors that share memory (the best weights may be the current ones).
        save_file({k: v.detach().to("cpu", copy=True) for k, v in tensors.items()}, str(staging / TENSORS_FILE))
        state = {
            "epoch": checkpoint.epoch,
            "model_shape": checkpoint.model_shape,
            "optimizer": optimizer_json,
            "sampler": checkpoint.sampler,
            "progress": checkpoint.progress,
            "tensors_sha256": sha256_of(staging / TENSORS_FILE),
        }
        (staging / STATE_FILE).write_text(json.dumps(state, indent=2, sort_keys=True))
        if final.exists():  # a rerun of an epoch whose checkpoint was written: replace it whole
            if not _holds_only_a_checkpoint(final):
                raise CheckpointError(f"{final} holds files no checkpoint has ({', '.join(_foreign_files(final))}); "
                                      "not replacing it: point --checkpoint-dir at a directory of checkpoints only")
            shutil.rmtree(final)
        os.replace(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    for old in _checkpoint_dirs(directory)[:-KEEP]:
        if _holds_only_a_checkpoint(old):  # never a folder that merely has a checkpoint's name
            shutil.rmtree(old, ignore_errors=True)
    return final


def load_latest_checkpoint(directory: Path, model_shape: dict[str, Any]) -> Checkpoint | None:
    """The newest intact checkpoint in `directory`, or None when there is none to resume from."""
    if not directory.is_dir():
        return None
    for candidate in reversed(_checkpoint_dirs(directory)):
        try:
            checkpoint = _read(candidate)
        except CheckpointError as exc:
            log.warning("skipping checkpoint %s: %s", candidate, exc)
            continue
        if checkpoint.model_shape != model_shape:
            raise CheckpointError(
                f"{candidate} was written by another model: its shape is {checkpoint.model_shape}, "
                f"this run trains {model_shape}; point --checkpoint-dir elsewhere or delete it"
            )
        return checkpoint
    return None


def _read(path: Path) -> Checkpoint:
    tensors_file, state_file = path / TENSORS_FILE, path / STATE_FILE
    if not (tensors_file.is_file() and state_file.is_file()):
        raise CheckpointError(f"incomplete: expected {TENSORS_FILE} and {STATE_FILE}")
    try:
        state = json.loads(state_file.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{state_file} is not JSON: {exc}") from None
    actual = sha256_of(tensors_file)
    if actual != state.get("tensors_sha256"):
        raise CheckpointError(f"{tensors_file} is corrupted: sha256 {actual}, recorded {state.get('tensors_sha256')}")
    tensors = load_file(str(tensors_file))
    return Checkpoint(
        epoch=state["epoch"],
        model_shape=state["model_shape"],
        model_state=_with_prefix(tensors, "model/"),
        best_state=_with_prefix(tensors, "best/"),
        optimizer_state=_join_optimizer_state(_with_prefix(tensors, "optimizer/"), state["optimizer"]),
        sampler=state["sampler"],
        progress=state["progress"],
    )


def _split_optimizer_state(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Optimizer state as safetensors-ready tensors + JSON (param_groups and any non-tensor values)."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for param_id, values in state["state"].items():
        for name, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer/{param_id}/{name}"] = value
            else:
                scalars.setdefault(str(param_id), {})[name] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _join_optimizer_state(tensors: dict[str, torch.Tensor], saved: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        param_id, name = key.split("/")
        state.setdefault(int(param_id), {})[name] = value
    for param_id, values in saved["scalars"].items():
        state.setdefault(int(param_id), {}).update(values)
    return {"state": state, "param_groups": saved["param_groups"]}


def _with_prefix(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


def _checkpoint_dirs(directory: Path) -> list[Path]:
    return sorted(p for p in directory.glob("epoch-[0-9][0-9][0-9][0-9]") if p.is_dir())


def _foreign_files(path: Path) -> list[str]:
    """The entries of `path` that a checkpoint does not write."""
    return sorted(entry.name for entry in path.iterdir() if entry.name not in (TENSORS_FILE, STATE_FILE))


def _holds_only_a_checkpoint(path: Path) -> bool:
    """Whether `path` is a directory that holds a checkpoint's files and nothing else: one this module may delete."""
    return path.is_dir() and not _foreign_files(path)
