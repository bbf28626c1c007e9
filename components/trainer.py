"""Train: one piece of code for one process, `torchrun` across processes, and a Kubeflow Trainer job.

`train` runs in every process of a job. Under `torchrun` (or a TrainJob / PyTorchJob, which
start workers the same way) the environment names each process's rank and world size; the
function then joins a process group (NCCL on GPUs, gloo on CPUs), wraps the model in
`DistributedDataParallel` and shards every epoch with a `DistributedSampler`. Without that
environment it trains in this process, with the same code path and no process group.

What makes a run reproducible, and resumable with the same result:
- the initial weights come from the seed; every epoch reseeds dropout from (seed, epoch, rank)
  and reshuffles with `DistributedSampler.set_epoch`, so epoch k is the same whether the run
  started at epoch 1 or resumed at epoch k;
- a checkpoint after every epoch (`checkpoints`) holds weights, optimizer state, sampler state
  and early-stopping progress;
- `batch_size` is the global batch: each of N processes takes batch_size / N rows a step and
  DDP averages gradients, so 1 and N processes take the same number of steps of the same size.

The tabular data sets this trains on fit in memory: every process keeps its tensors resident
(on the GPU when there is one) and indexes batches from them, which REFERENCE.md measured 30x
faster than a DataLoader. Early stopping watches eval AUC; the saved model is the best epoch's.
Rank 0 alone logs progress, writes checkpoints, the model and the MLflow run.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
from sklearn.metrics import roc_auc_score
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data.distributed import DistributedSampler

from slipway import logs
from slipway.atomic import atomic_output
from slipway.components import models
from slipway.components.checkpoints import Checkpoint, load_latest_checkpoint, save_checkpoint
from slipway.components.feature_store import joined_columns
from slipway.components.model_artifact import save_model
from slipway.components.preprocessing import Preprocessing, model_features
from slipway.components.tracking import TrackingConfig, TrainingRun, lineage_tags
from slipway.components.train_config import TrainConfig
from slipway.problem import Problem, load_problem
from slipway.storage import download, scheme_of, upload

log = logging.getLogger(__name__)

MIN_IMPROVEMENT = 1e-4  # eval AUC must beat the best by this much to count as progress


class TrainingDataError(ValueError):
    """The training or eval data cannot train this problem's model; the message names file and column."""


@dataclasses.dataclass(frozen=True)
class TrainResult:
    epochs_run: int  # the last epoch trained (early stopping may end before config.epochs)
    best_epoch: int
    eval_auc: float  # at the best epoch
    train_loss: float  # at the best epoch
    train_rows: int
    world_size: int
    device: str
    rows_per_second: float  # training rows/s of all processes together (eval excluded), over this run's epochs
    peak_gpu_memory_mib: float | None  # rank 0's peak allocated GPU memory; None on CPU
    resumed_from_epoch: int  # 0 for a fresh run
    mlflow_run_id: str | None

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)


@dataclasses.dataclass(frozen=True)
class Lineage:
    """Where the model came from, recorded in the model artifact and as MLflow tags."""

    data_sha256: str | None = None
    pipeline_run_id: str | None = None
    train_data: str | None = None
    parent_run_id: str | None = None  # the MLflow run this one is a child of (a tuning trial's study run)


class TrainingStopped(Exception):
    """Raised by an epoch callback to end training at once (a pruned tuning trial): the MLflow run is
    recorded as KILLED and no model is saved."""


# Called on the main process after each epoch's evaluation with (epoch, eval AUC); may raise TrainingStopped.
EpochCallback = Callable[[int, float], None]


@dataclasses.dataclass(frozen=True)
class Runtime:
    """This process's place in the job: rank, world size, device and collective backend."""

    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


@contextmanager
def distributed_runtime() -> Iterator[Runtime]:
    """Joins the job's process group when torchrun (or a Trainer job) started us; leaves it at the end."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
        # Share the cores between the processes instead of oversubscribing them.
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))
    if world_size > 1:
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    try:
        yield Runtime(rank=rank, world_size=world_size, device=device)
    finally:
        if world_size > 1 and dist.is_initialized():
            dist.destroy_process_group()


def read_training_data(path: Path, problem: Problem, role: str) -> pd.DataFrame:
    """Reads a split and checks what training needs: the label, binary; required features present."""
    try:
        frame = pd.read_parquet(path)
    except (OSError, ValueError) as exc:
        raise TrainingDataError(f"{role} data {path}: cannot read as Parquet: {exc}") from None
    if frame.empty:
        raise TrainingDataError(f"{role} data {path}: no rows")
    label = problem.label.name
    if label not in frame.columns:
        raise TrainingDataError(f"{role} data {path}: no label column {label!r} (columns: {sorted(frame.columns)})")
    values = set(frame[label].dropna().unique().tolist())
    if frame[label].isna().any() or not values <= {0, 1}:
        shown = sorted(map(str, values))[:5] + (["<missing>"] if frame[label].isna().any() else [])
        raise TrainingDataError(f"{role} data {path}: label {label!r} must be binary (0/1 or bool), found {shown}")
    numeric, categorical = model_features(problem)
    missing_columns = [c for c in numeric + categorical if c not in frame.columns]
    if missing_columns:
        hint = ""
        if set(missing_columns) & set(joined_columns(problem)):
            hint = (f"; problem {problem.name!r} has a feature_store section, so the model also reads its Feast "
                    "features: train on the training_set step's Dataset (the split joined point in time)")
        raise TrainingDataError(f"{role} data {path}: missing feature column(s) {missing_columns}{hint}")
    for column in problem.features.required:
        missing = int(frame[column].isna().sum())
        if missing:
            raise TrainingDataError(
                f"{role} data {path}: required feature {column!r} is missing (NaN) in {missing} of {len(frame)} rows"
            )
    return frame


def train(
    train_path: Path,
    eval_path: Path,
    problem: Problem,
    config: TrainConfig,
    model_dir: Path,
    checkpoint_dir: Path,
    tracking: TrackingConfig | None = None,
    lineage: Lineage = Lineage(),
    on_epoch: EpochCallback | None = None,
) -> TrainResult:
    """Trains in this process, or as one rank of a torchrun job; rank 0 writes the model to `model_dir`.

    `on_epoch` (one process only: a tuner training in-process) sees every epoch's eval AUC and may stop the run.
    """
    with distributed_runtime() as runtime:
        if on_epoch is not None and runtime.distributed:
            raise ValueError("on_epoch needs a single process: the other ranks could not follow a stop")
        return _train(runtime, train_path, eval_path, problem, config, model_dir, checkpoint_dir, tracking, lineage,
                      on_epoch)


def _train(
    runtime: Runtime,
    train_path: Path,
    eval_path: Path,
    problem: Problem,
    config: TrainConfig,
    model_dir: Path,
    checkpoint_dir: Path,
    tracking: TrackingConfig | None,
    lineage: Lineage,
    on_epoch: EpochCallback | None = None,
) -> TrainResult:
    train_frame = read_training_data(train_path, problem, "train")
    eval_frame = read_training_data(eval_path, problem, "eval")
    preprocessing = Preprocessing.fit(train_frame, problem)
    device = runtime.device
    x_num, x_cat = (t.to(device) for t in preprocessing.transform(train_frame))
    y = torch.tensor(train_frame[problem.label.name].to_numpy(dtype="float32"), device=device)
    eval_num, eval_cat = (t.to(device) for t in preprocessing.transform(eval_frame))
    eval_y = eval_frame[problem.label.name].to_numpy(dtype="int64")

    torch.manual_seed(config.seed)  # the same initial weights in every process
    module = models.build(config.architecture, config.model_arguments(preprocessing)).to(device)
    # The module's own record of its arguments, defaults resolved (the MLP's embedding widths), so a
    # saved model or checkpoint never depends on those defaults staying the same.
    arguments = module.arguments
    model_shape = {"name": config.architecture, "arguments": arguments}
    optimizer = torch.optim.AdamW(module.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    progress: dict[str, Any] = {"best_auc": -1.0, "best_epoch": 0, "stale_epochs": 0, "stopped": False,
                                "history": [], "mlflow_run_id": None}
    best_state = _cpu_state(module)
    start_epoch = 1
    checkpoint = load_latest_checkpoint(checkpoint_dir, model_shape)
    if checkpoint is not None:
        module.load_state_dict(checkpoint.model_state)
        optimizer.load_state_dict(checkpoint.optimizer_state)
        best_state, progress, start_epoch = checkpoint.best_state, checkpoint.progress, checkpoint.epoch + 1
        if runtime.is_main:
            log.info("resuming from %s/epoch-%04d (best eval AUC %.4f at epoch %d)", checkpoint_dir,
                     checkpoint.epoch, progress["best_auc"], progress["best_epoch"])
    ddp = DistributedDataParallel(module) if runtime.distributed else module
    sampler = DistributedSampler(range(len(y)), num_replicas=runtime.world_size, rank=runtime.rank,
                                 shuffle=True, seed=config.seed)
    local_batch = max(1, config.batch_size // runtime.world_size)
    loss_fn = nn.BCEWithLogitsLoss(reduction="sum")

    run = _tracking_run(runtime, tracking, problem, config, progress, train_frame, lineage)
    if runtime.is_main:
        log.info("training %s on %d rows (%d process(es) on %s, %d rows per process per step), eval on %d rows",
                 config.architecture, len(y), runtime.world_size, device, local_batch, len(eval_y))
    trained_rows, train_seconds = 0, 0.0
    try:
        for epoch in range(start_epoch, config.epochs + 1):
            if progress["stopped"]:
                break
            torch.manual_seed(config.seed * 1_000_003 + epoch * 101 + runtime.rank)  # dropout, per epoch
            sampler.set_epoch(epoch)
            order = torch.tensor(list(sampler), device=device)  # this rank's shard of the epoch, shuffled
            ddp.train()
            loss_sum, seen = torch.zeros((), device=device), torch.zeros((), device=device)
            epoch_started = time.perf_counter()
            for batch in order.split(local_batch):
                optimizer.zero_grad(set_to_none=True)
                with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                    logits = ddp(x_num[batch], x_cat[batch])
                loss = loss_fn(logits.float(), y[batch])
                (loss / len(batch)).backward()
                optimizer.step()
                loss_sum += loss.detach()
                seen += len(batch)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            epoch_seconds = time.perf_counter() - epoch_started
            if runtime.distributed:
                totals = torch.stack([loss_sum, seen])
                dist.all_reduce(totals)
                loss_sum, seen = totals[0], totals[1]
            train_loss = float(loss_sum / seen)
            trained_rows += int(seen)
            train_seconds += epoch_seconds
            rows_per_second = float(seen) / epoch_seconds
            eval_auc = _auc(module, eval_num, eval_cat, eval_y)
            improved = eval_auc > progress["best_auc"] + MIN_IMPROVEMENT
            if improved:
                best_state = _cpu_state(module)
                progress.update(best_auc=eval_auc, best_epoch=epoch, best_train_loss=train_loss, stale_epochs=0)
            else:
                progress["stale_epochs"] += 1
            progress["stopped"] = progress["stale_epochs"] >= config.patience
            progress["history"].append({"epoch": epoch, "train_loss": train_loss, "eval_auc": eval_auc})
            if runtime.is_main:
                save_checkpoint(checkpoint_dir, Checkpoint(
                    epoch=epoch, model_shape=model_shape, model_state=module.state_dict(), best_state=best_state,
                    optimizer_state=optimizer.state_dict(),
                    sampler={"seed": config.seed, "epoch": epoch, "num_replicas": runtime.world_size},
                    progress=progress,
                ))
                log.info("epoch %d/%d  loss %.4f  eval_auc %.4f  %s rows/s%s", epoch, config.epochs, train_loss,
                         eval_auc, f"{rows_per_second:,.0f}", "  (best)" if improved else "")
                if run is not None:
                    run.log_epoch(epoch, {"train_loss": train_loss, "eval_auc": eval_auc,
                                          "rows_per_second": rows_per_second})
                if on_epoch is not None:
                    on_epoch(epoch, eval_auc)
            if runtime.distributed:
                dist.barrier()  # nobody starts the next epoch before its checkpoint is on disk
            if progress["stopped"] and runtime.is_main:
                log.info("early stopping: eval AUC has not improved for %d epochs; best was epoch %d (%.4f)",
                         config.patience, progress["best_epoch"], progress["best_auc"])
        last_epoch = progress["history"][-1]["epoch"] if progress["history"] else 0
        result = TrainResult(
            epochs_run=last_epoch,
            best_epoch=progress["best_epoch"],
            eval_auc=progress["best_auc"],
            train_loss=progress.get("best_train_loss", float("nan")),
            train_rows=len(y),
            world_size=runtime.world_size,
            device=str(device),
            rows_per_second=trained_rows / train_seconds if trained_rows else 0.0,
            peak_gpu_memory_mib=torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None,
            resumed_from_epoch=start_epoch - 1,
            mlflow_run_id=progress["mlflow_run_id"],
        )
        if runtime.is_main:
            best = models.build(config.architecture, arguments)
            best.load_state_dict(best_state)
            save_model(model_dir, best, config.architecture, arguments, preprocessing, lineage={
                **{k: v for k, v in dataclasses.asdict(lineage).items() if v is not None},
                "problem": problem.name,
                "train_config": dataclasses.asdict(config),
                "best_epoch": result.best_epoch,
                # The no-information baseline: what a model server answers when it must degrade.
                "train_positive_rate": float(train_frame[problem.label.name].mean()),
                "world_size": runtime.world_size,
                "mlflow_run_id": result.mlflow_run_id,
            })
            log.info("saved the epoch-%d model (eval AUC %.4f) to %s", result.best_epoch, result.eval_auc, model_dir)
            if run is not None:
                run.log_summary({"best_eval_auc": result.eval_auc, "best_epoch": result.best_epoch,
                                 "epochs_run": result.epochs_run})
                run.log_model_dir(model_dir)
                run.end()
        return result
    except TrainingStopped:
        if run is not None:
            run.end("KILLED")
        raise
    except BaseException:
        if run is not None:
            run.end("FAILED")
        raise


def _tracking_run(
    runtime: Runtime,
    tracking: TrackingConfig | None,
    problem: Problem,
    config: TrainConfig,
    progress: dict[str, Any],
    train_frame: pd.DataFrame,
    lineage: Lineage,
) -> TrainingRun | None:
    """Rank 0's MLflow run: a fresh one, or the run a resumed checkpoint was logging to."""
    if tracking is None or not runtime.is_main:
        return None
    if progress["mlflow_run_id"]:
        return TrainingRun.resume(tracking, progress["mlflow_run_id"])
    params = {**dataclasses.asdict(config), "problem": problem.name, "world_size": runtime.world_size,
              "device": str(runtime.device), "train_rows": len(train_frame)}
    tags = lineage_tags(lineage.data_sha256, lineage.pipeline_run_id)
    if lineage.parent_run_id:
        tags["mlflow.parentRunId"] = lineage.parent_run_id  # MLflow's UI nests the run under its parent
    run = TrainingRun.start(tracking, run_name=f"{problem.name}-{config.architecture}", params=params, tags=tags)
    progress["mlflow_run_id"] = run.run_id
    return run


def _cpu_state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}


@torch.inference_mode()
def _auc(module: nn.Module, numeric: torch.Tensor, categorical: torch.Tensor, labels: np.ndarray) -> float:
    module.eval()
    scores = module(numeric, categorical).float().cpu().numpy()
    return float(roc_auc_score(labels, scores))


# --- the entry point torchrun and the Trainer jobs start: python -m slipway.components.trainer ----------------


def _parser() -> argparse.ArgumentParser:
    defaults = TrainConfig()
    parser = argparse.ArgumentParser(
        prog="python -m slipway.components.trainer",
        description="Train the problem's model on a train/eval split. Run it directly for one process, or under "
                    "`torchrun --nproc-per-node=N` (or a Kubeflow TrainJob / PyTorchJob) for DDP. Data and model "
                    "locations may be local paths or gs://, s3:// URIs.",
    )
    parser.add_argument("--train", required=True, help="train split, Parquet (path or URI)")
    parser.add_argument("--eval", required=True, help="eval split, Parquet (path or URI)")
    parser.add_argument("--model-dir", required=True, help="where rank 0 writes the model artifact (path or URI)")
    parser.add_argument("--checkpoint-dir", required=True, help="local or shared directory for per-epoch checkpoints")
    parser.add_argument("--problem", default="chicago_taxi", help="packaged problem name, or a YAML path/URI")
    parser.add_argument("--result-file", help="rank 0 writes the TrainResult here as JSON (path or URI)")
    parser.add_argument("--tracking-uri", default="", help="MLflow tracking URI; empty: no tracking")
    parser.add_argument("--experiment", default="slipway", help="MLflow experiment name")
    parser.add_argument("--data-sha256", help="the train data's sha256, recorded as lineage")
    parser.add_argument("--pipeline-run-id", help="the KFP run that launched this training, recorded as lineage")
    for field in dataclasses.fields(TrainConfig):
        flag = "--" + field.name.replace("_", "-")
        value = getattr(defaults, field.name)
        help = f"{field.metadata['help']} (default {list(value) if isinstance(value, tuple) else value})"
        if isinstance(value, tuple):
            parser.add_argument(flag, type=int, nargs="+", default=list(value), help=help)
        else:
            parser.add_argument(flag, type=type(value), default=value, help=help)
    return parser


def trainer_arguments(
    train_data: str,
    eval_data: str,
    model_dir: str,
    checkpoint_dir: str,
    problem: str,
    config: TrainConfig,
    tracking: TrackingConfig | None = None,
    lineage: Lineage = Lineage(),
) -> list[str]:
    """The argv that `main` parses back into exactly these values: what launchers and job specs pass."""
    args = ["--train", train_data, "--eval", eval_data, "--model-dir", model_dir, "--checkpoint-dir", checkpoint_dir,
            "--problem", problem]
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        flag = "--" + field.name.replace("_", "-")
        args += [flag, *map(str, value)] if isinstance(value, tuple) else [flag, str(value)]
    if tracking is not None:
        args += ["--tracking-uri", tracking.tracking_uri, "--experiment", tracking.experiment]
    if lineage.data_sha256:
        args += ["--data-sha256", lineage.data_sha256]
    if lineage.pipeline_run_id:
        args += ["--pipeline-run-id", lineage.pipeline_run_id]
    return args


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    is_main = os.environ.get("RANK", "0") == "0"
    logs.configure(logging.INFO if is_main else logging.WARNING)  # progress from rank 0 only
    config = TrainConfig(**{f.name: (tuple(getattr(args, f.name)) if f.name == "hidden_units"
                                     else getattr(args, f.name)) for f in dataclasses.fields(TrainConfig)})
    problem = load_problem(args.problem)
    tracking = TrackingConfig(args.tracking_uri, args.experiment) if args.tracking_uri else None
    lineage = Lineage(data_sha256=args.data_sha256, pipeline_run_id=args.pipeline_run_id, train_data=args.train)
    with tempfile.TemporaryDirectory(prefix=f"slipway-train-{socket.gethostname()}-") as scratch:
        train_path = _local_input(args.train, Path(scratch) / "train.parquet")
        eval_path = _local_input(args.eval, Path(scratch) / "eval.parquet")
        remote_model = scheme_of(args.model_dir) != "file"
        model_dir = Path(scratch) / "model" if remote_model else Path(args.model_dir)
        result = train(train_path, eval_path, problem, config, model_dir, Path(args.checkpoint_dir), tracking, lineage)
        if is_main:
            if remote_model:
                for file in sorted(model_dir.iterdir()):
                    upload(file, f"{args.model_dir.rstrip('/')}/{file.name}")
            if args.result_file and scheme_of(args.result_file) != "file":  # a cluster job reports through storage
                (Path(scratch) / "result.json").write_text(result.to_json())
                upload(Path(scratch) / "result.json", args.result_file)
            elif args.result_file:
                with atomic_output(Path(args.result_file)) as tmp:
                    tmp.write_text(result.to_json())
    return 0


def _local_input(location: str, scratch: Path) -> Path:
    if scheme_of(location) == "file":
        return Path(location)
    download(location, scratch)
    return scratch


if __name__ == "__main__":
    sys.exit(main())
