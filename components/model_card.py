"""The model card: what a registered model is for, what it was trained on, how good it is, and why it shipped.

A Markdown page in the spirit of Mitchell et al.'s "Model Cards for Model Reporting", written from
facts the pipeline already holds (the problem configuration, the model artifact's own JSON, the
evaluation, the blessing decision, the lineage), never typed by hand. The register step shows it
in the KFP UI (a `Markdown` artifact) and logs it as `MODEL_CARD.md` beside the weights in MLflow.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from slipway.components.blessing import Decision
from slipway.components.evaluation import Evaluation, SliceMetrics
from slipway.problem import Problem

SLICE_ROWS_SHOWN = 10  # per slice column, the largest slices; the HTML report has them all
SHOWN_ABOVE = ("slipway.eval.", "slipway.decision")  # version tags the card's own sections state


@dataclasses.dataclass(frozen=True)
class CardFacts:
    """Everything the card states, gathered by the register step."""

    problem: Problem
    model_uri: str  # models:/name/version
    model_metadata: dict[str, Any]  # the artifact's model.json
    evaluation: Evaluation
    decision: Decision
    lineage: dict[str, str]  # tag name -> value, as on the registered version


def render_model_card(facts: CardFacts) -> str:
    sections = [
        f"# Model card: {facts.model_uri}",
        _intended_use(facts.problem),
        _model(facts.model_metadata),
        _data(facts),
        _metrics(facts.evaluation),
        _slices(facts.evaluation),
        "## Blessing\n\n" + facts.decision.markdown(),
        _lineage(facts.lineage),
        _caveats(facts),
    ]
    return "\n\n".join(section.rstrip() for section in sections) + "\n"


def _intended_use(problem: Problem) -> str:
    lines = ["## Intended use", "", f"**Task** ({problem.name}): {problem.description}"]
    if problem.intended_use:
        lines += ["", problem.intended_use]
    return "\n".join(lines)


def _model(metadata: dict[str, Any]) -> str:
    architecture = metadata.get("architecture", {})
    lineage = metadata.get("lineage", {})
    config = lineage.get("train_config", {})
    rows = [("architecture", architecture.get("name", "?")),
            ("arguments", _inline(architecture.get("arguments", {}))),
            ("training", _inline(config)),
            ("best epoch", lineage.get("best_epoch", "?")),
            ("DDP processes", lineage.get("world_size", "?")),
            ("format", "safetensors weights + model.json (preprocessing, features); no pickle")]
    return "## Model\n\n" + _table(("", ""), rows)


def _data(facts: CardFacts) -> str:
    preprocessing = facts.model_metadata.get("preprocessing", {})
    evaluation = facts.evaluation
    rows = [("label", f"`{facts.problem.label.name}` = `{facts.problem.label.expression}`"),
            ("numeric features", ", ".join(preprocessing.get("numeric", []))),
            ("categorical features", ", ".join(preprocessing.get("categorical", []))),
            ("train data", facts.lineage.get("slipway.train_data", "?")),
            ("eval data", f"{facts.lineage.get('slipway.eval_data', '?')}: {evaluation.rows} rows, "
                          f"{evaluation.positive_rate:.1%} positive; the latest "
                          f"{facts.problem.eval_fraction:.0%} of rows by `{facts.problem.timestamp.column}`")]
    return "## Data\n\n" + _table(("", ""), rows)


def _metrics(evaluation: Evaluation) -> str:
    rows = [("AUC", _number(evaluation.auc)),
            ("log loss", _number(evaluation.log_loss)),
            (f"accuracy at threshold {evaluation.threshold}", _number(evaluation.accuracy)),
            (f"precision at threshold {evaluation.threshold}", _number(evaluation.precision)),
            (f"recall at threshold {evaluation.threshold}", _number(evaluation.recall)),
            ("expected calibration error", _number(evaluation.expected_calibration_error))]
    return "## Metrics (eval split)\n\n" + _table(("metric", "value"), rows)


def _slices(evaluation: Evaluation) -> str:
    parts = ["## Metrics per slice"]
    for column in evaluation.slices:
        shown = column.slices[:SLICE_ROWS_SHOWN]
        parts.append(f"### `{column.column}`\n\n" + _table(
            ("value", "rows", "positive rate", "AUC", "accuracy", "ECE"), [_slice_row(s) for s in shown]))
        hidden = len(column.slices) - len(shown)
        notes = []
        if hidden:
            notes.append(f"{hidden} smaller slice(s) are in the HTML evaluation report")
        if column.skipped_values:
            notes.append(f"{column.skipped_values} value(s) with fewer than {column.min_rows} rows "
                         f"({column.skipped_rows} rows in all) are not reported on their own")
        if notes:
            parts[-1] += "\n\n" + "; ".join(notes) + "."
    if len(parts) == 1:
        parts.append("No slices are configured (`evaluation.slices` in the problem file).")
    return "\n\n".join(parts)


def _slice_row(metrics: SliceMetrics) -> tuple[str, ...]:
    return (_escape(metrics.value), str(metrics.rows), f"{metrics.positive_rate:.1%}",
            _number(metrics.auc) if metrics.auc is not None else "n/a (one class)",
            _number(metrics.accuracy), _number(metrics.expected_calibration_error))


def _lineage(tags: dict[str, str]) -> str:
    """The version's tags, less the metrics and decision the sections above already show."""
    shown = sorted((k, v) for k, v in tags.items() if not k.startswith(SHOWN_ABOVE))
    return "## Lineage\n\n" + _table(("tag", "value"), [(f"`{k}`", _escape(v)) for k, v in shown])


def _caveats(facts: CardFacts) -> str:
    lines = ["## Caveats", "",
             "- Metrics come from one time-ordered eval split: they estimate the near future, not every future; "
             "watch drift once the model serves.",
             f"- Slices with fewer than {facts.problem.evaluation.min_slice_rows} eval rows are too small to judge "
             "on their own."]
    if not facts.decision.blessed:
        lines.append("- **This version was refused by the blessing gate: it is registered for the record and must "
                     "not be deployed.**")
    return "\n".join(lines)


def _table(header: tuple[str, ...], rows: list[tuple[Any, ...]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _inline(values: dict[str, Any]) -> str:
    return ", ".join(f"{key}={value}" for key, value in values.items()) or "-"


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _escape(text: str) -> str:
    """Data-derived text must not break the table or inject Markdown/HTML."""
    return str(text).replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;").replace("\n", " ")
