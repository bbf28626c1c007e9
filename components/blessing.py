"""The blessing gate: may this model replace the one that serves?

Two checks, as TFX's Evaluator does them against a baseline:
1. absolute: the challenger's eval AUC is at least `min_auc`;
2. no regression: it is at most `max_auc_drop` below the current champion's AUC, with the
   champion scored here, now, on the same eval split (metrics logged when the champion was
   trained came from other data and cannot be compared). The first model has no champion and
   passes this check.

The decision is data: `blessed` or `refused`, with every reason, the numbers behind them and the
policy used, so the pipeline can branch on it (`dsl.If`), the registry can tag the version with it
and the model card can state it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import tempfile
from pathlib import Path
from typing import Any

from slipway.atomic import atomic_outputs
from slipway.components.evaluation import Evaluation, ModelInputError, evaluate_model
from slipway.components.registry import ModelRegistry
from slipway.problem import Problem

log = logging.getLogger(__name__)

BLESSED = "blessed"
REFUSED = "refused"


@dataclasses.dataclass(frozen=True)
class BlessingPolicy:
    """The gate's thresholds; the defaults are the pipeline's defaults."""

    min_auc: float = 0.75
    max_auc_drop: float = 0.01

    def __post_init__(self) -> None:
        if not 0 <= self.min_auc <= 1:
            raise ValueError(f"min_auc must be between 0 and 1, got {self.min_auc}")
        if not 0 <= self.max_auc_drop <= 1:
            raise ValueError(f"max_auc_drop must be between 0 and 1, got {self.max_auc_drop}")


@dataclasses.dataclass(frozen=True)
class Decision:
    """The gate's verdict, why, and on which numbers."""

    blessed: bool
    reasons: tuple[str, ...]
    policy: BlessingPolicy
    challenger_auc: float
    champion_version: str | None = None
    champion_auc: float | None = None

    @property
    def label(self) -> str:
        return BLESSED if self.blessed else REFUSED

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "decision": self.label, "reasons": list(self.reasons)}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Decision:
        fields = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in raw.items() if k in fields}
        return cls(**{**values, "reasons": tuple(raw["reasons"]), "policy": BlessingPolicy(**raw["policy"])})

    def markdown(self) -> str:
        """The decision as the KFP UI and the model card show it."""
        champion = (f"version {self.champion_version}, AUC {self.champion_auc:.4f} on the same eval split"
                    if self.champion_version and self.champion_auc is not None else "none")
        lines = [f"**Decision: {self.label}**", "",
                 f"- challenger AUC: {self.challenger_auc:.4f}",
                 f"- champion: {champion}",
                 f"- policy: AUC ≥ {self.policy.min_auc}, at most {self.policy.max_auc_drop} below the champion",
                 "", "Reasons:", ""]
        lines += [f"- {reason}" for reason in self.reasons]
        return "\n".join(lines) + "\n"


def decide(
    policy: BlessingPolicy, challenger_auc: float, champion_auc: float | None = None,
    champion_version: str | None = None, champion_problem: str | None = None,
) -> Decision:
    """Applies the policy to the numbers; `champion_problem` says why a champion could not be scored."""
    reasons, blessed = [], True
    if challenger_auc >= policy.min_auc:
        reasons.append(f"AUC {challenger_auc:.4f} meets the minimum {policy.min_auc}")
    else:
        blessed = False
        reasons.append(f"AUC {challenger_auc:.4f} is below the minimum {policy.min_auc}")
    if champion_problem is not None:
        blessed = False
        reasons.append(f"champion version {champion_version} could not be scored on this eval split "
                       f"({champion_problem}); promote by hand after review if the change is intended")
    elif champion_auc is None:
        reasons.append("no champion yet: nothing to regress from")
    elif challenger_auc >= champion_auc - policy.max_auc_drop:
        reasons.append(f"AUC {challenger_auc:.4f} vs champion version {champion_version}'s {champion_auc:.4f} "
                       f"(change {challenger_auc - champion_auc:+.4f}) is within the tolerated drop "
                       f"{policy.max_auc_drop}")
    else:
        blessed = False
        reasons.append(f"AUC {challenger_auc:.4f} regresses from champion version {champion_version}'s "
                       f"{champion_auc:.4f} by {champion_auc - challenger_auc:.4f}, more than the tolerated "
                       f"{policy.max_auc_drop}")
    return Decision(blessed=blessed, reasons=tuple(reasons), policy=policy, challenger_auc=challenger_auc,
                    champion_version=champion_version, champion_auc=champion_auc)


def bless(
    challenger: Evaluation,
    eval_path: Path,
    problem: Problem,
    policy: BlessingPolicy,
    registry: ModelRegistry,
    model_name: str,
) -> Decision:
    """Scores the registry's champion of `model_name` on the challenger's eval split and decides."""
    champion = registry.champion(model_name)
    if champion is None:
        decision = decide(policy, challenger.auc)
    else:
        with tempfile.TemporaryDirectory(prefix="slipway-champion-") as tmp:
            model_dir = registry.download(champion, Path(tmp))
            try:
                scored = evaluate_model(model_dir, eval_path, problem, challenger.threshold)
            except ModelInputError as error:
                decision = decide(policy, challenger.auc, None, champion.version, str(error))
            else:
                decision = decide(policy, challenger.auc, scored.auc, champion.version)
    log.info("%s: %s", decision.label, "; ".join(decision.reasons))
    return decision


def save_decision(decision: Decision, path: Path) -> None:
    with atomic_outputs([path]) as (tmp,):
        tmp.write_text(json.dumps(decision.to_dict(), indent=2))


def load_decision(path: Path) -> Decision:
    return Decision.from_dict(json.loads(path.read_text()))
