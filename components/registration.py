"""The register step: a trained, evaluated, judged model becomes a registry version that can be traced back.

Every version carries, as tags, what it takes to answer "where did this come from and why did it
(not) ship?" without opening anything else: the data (the splits' URIs, their source's sha256, the schema it
was validated against), the code (git commit), the pipeline run, the training parameters, the eval
metrics and the blessing decision with its reasons. Blessed or not, a model is registered (as the
`challenger`): a refused version stays on record, and only the pipeline's blessed branch promotes.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from slipway.components.blessing import Decision
from slipway.components.evaluation import Evaluation
from slipway.components.model_card import CardFacts, render_model_card
from slipway.components.model_files import METADATA_FILE
from slipway.components.registry import ModelRegistry, RegisteredVersion, RegistryError
from slipway.problem import Problem

TAG_VALUE_LIMIT = 5000  # MLflow's limit on a model version tag's value
RUN_TAGS_KEPT = ("slipway.git_commit",)  # lineage the training run recorded that the version repeats
EVAL_TAGS = ("auc", "log_loss", "accuracy", "precision", "recall", "expected_calibration_error", "rows")


@dataclasses.dataclass(frozen=True)
class DataLineage:
    """What the model was trained and judged on, and by which pipeline run; empty fields are left out."""

    train_uri: str = ""
    eval_uri: str = ""
    data_sha256: str | None = None  # of the source both splits were cut from
    schema_uri: str = ""
    pipeline_run_id: str = ""


def registered_model_name(model_name: str, problem: Problem) -> str:
    """The registered model's name: the one given, else the problem's (one registered model per problem)."""
    return model_name.strip() or problem.name


def version_tags(
    model_metadata: dict, run_tags: dict[str, str], evaluation: Evaluation, decision: Decision, data: DataLineage
) -> dict[str, str]:
    lineage = model_metadata.get("lineage", {})
    tags = {
        "slipway.problem": lineage.get("problem"),
        "slipway.mlflow_run_id": lineage.get("mlflow_run_id"),
        "slipway.train_data": data.train_uri or lineage.get("train_data"),
        "slipway.data_sha256": data.data_sha256 or lineage.get("data_sha256"),
        "slipway.eval_data": data.eval_uri,
        "slipway.schema_uri": data.schema_uri,
        "slipway.pipeline_run_id": data.pipeline_run_id or lineage.get("pipeline_run_id"),
        "slipway.architecture": model_metadata.get("architecture", {}).get("name"),
        "slipway.decision": decision.label,
        "slipway.decision_reasons": "; ".join(decision.reasons),
    }
    tags.update({name: run_tags.get(name) for name in RUN_TAGS_KEPT})
    tags.update({f"slipway.param.{key}": json.dumps(value) if isinstance(value, (list, dict)) else value
                 for key, value in lineage.get("train_config", {}).items()})
    tags.update({f"slipway.eval.{name}": round(getattr(evaluation, name), 6) for name in EVAL_TAGS})
    return {key: str(value)[:TAG_VALUE_LIMIT] for key, value in tags.items() if value not in (None, "")}


def register_model(
    registry: ModelRegistry,
    name: str,
    model_dir: Path,
    problem: Problem,
    evaluation: Evaluation,
    decision: Decision,
    data: DataLineage,
) -> tuple[RegisteredVersion, str]:
    """Registers the model's training run as a version of `name`; returns the version and its model card.

    The model must have been tracked: its `model.json` names the MLflow run that logged its files,
    and that logged copy is what the version points to (the registry never depends on a pipeline
    artifact store that may be cleaned up).
    """
    metadata = json.loads((model_dir / METADATA_FILE).read_text())
    run_id = metadata.get("lineage", {}).get("mlflow_run_id")
    if not run_id:
        raise ValueError(f"{model_dir / METADATA_FILE}: lineage.mlflow_run_id is empty; the model was trained "
                         "without MLflow tracking, so there is no logged copy to register")
    tags = version_tags(metadata, registry.run_tags(run_id), evaluation, decision, data)
    cards: list[str] = []

    def card(version: RegisteredVersion) -> str:
        cards.append(render_model_card(CardFacts(problem, version.uri, metadata, evaluation, decision, tags)))
        return cards[-1]

    version = registry.register(name, run_id, tags, card=card)
    return version, cards[-1]


@dataclasses.dataclass(frozen=True)
class ChampionLineage:
    """What drift detection and retraining need of the serving model: where its training data and schema are."""

    model_uri: str    # models:/name/version
    train_data: str   # the training set it was fitted on (the drift reference), a path or URI
    schema_uri: str   # the schema its data was validated against ("" if it was registered without one)
    eval_auc: float | None = None  # its AUC on its eval split when it was registered: live AUC's baseline


def champion_lineage(registry: ModelRegistry, name: str) -> ChampionLineage:
    """The champion of `name` and the data it was trained on, from its version's lineage tags."""
    champion = registry.champion(name)
    if champion is None:
        raise RegistryError(f"no version of {name!r} is the champion yet: run the training pipeline first "
                            f"(`make run`), or promote a version with `slipway promote`")
    train_data = champion.tags.get("slipway.train_data")
    if not train_data:
        raise RegistryError(f"{champion.uri} has no slipway.train_data tag: it was not registered by the "
                            f"training pipeline, so the data it was trained on is unknown")
    auc = champion.tags.get("slipway.eval.auc")
    return ChampionLineage(model_uri=champion.uri, train_data=train_data,
                           schema_uri=champion.tags.get("slipway.schema_uri") or "",
                           eval_auc=float(auc) if auc else None)
