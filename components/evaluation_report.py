"""The evaluation as one self-contained HTML page, for the KFP UI's HTML artifact viewer (`html_page`).

What it shows, top to bottom: the headline metrics, the ROC curve and the reliability diagram, the
confusion matrix, the reliability table, the weakest slices, and one table per slice column.
"""

from __future__ import annotations

from html import escape
from pathlib import Path

from matplotlib.figure import Figure

from slipway.components.evaluation import ColumnSlices, Evaluation, SliceMetrics
from slipway.components.html_page import png, table, write_page

WORST_SLICES = 5

_SLICE_HEADERS = ("value", "rows", "positive rate", "AUC", "accuracy", "log loss", "precision", "recall", "ECE")


def write_report(evaluation: Evaluation, path: Path, title: str) -> None:
    """Writes the report to `path` as a single HTML file, whole or not at all."""
    weak = evaluation.worst_slices(WORST_SLICES)
    write_page(path, title, [
        _headline(evaluation),
        '<div class="plots">'
        f'<img alt="ROC curve" src="{_roc_plot(evaluation)}">'
        f'<img alt="Reliability diagram" src="{_reliability_plot(evaluation)}">'
        "</div>",
        _confusion(evaluation),
        _reliabilitytable(evaluation),
        _weakest(weak),
        *(_columntable(column, weak) for column in evaluation.slices),
    ])


def _headline(evaluation: Evaluation) -> str:
    at = f"at threshold {evaluation.threshold:g}"
    rows = [
        ("AUC", _number(evaluation.auc)),
        ("log loss", _number(evaluation.log_loss)),
        (f"accuracy {at}", _number(evaluation.accuracy)),
        (f"precision {at}", _number(evaluation.precision)),
        (f"recall {at}", _number(evaluation.recall)),
        ("expected calibration error", _number(evaluation.expected_calibration_error)),
        ("rows", f"{evaluation.rows:,}"),
        ("positive rate", _percent(evaluation.positive_rate)),
    ]
    return "<h2>Headline metrics (eval split)</h2>" + table(("metric", "value"), rows)


def _confusion(evaluation: Evaluation) -> str:
    categories = evaluation.confusion_categories
    headers = ("actual \\ predicted", *categories)
    rows = [(category, *(f"{n:,}" for n in counts))
            for category, counts in zip(categories, evaluation.confusion_matrix, strict=True)]
    return "<h2>Confusion matrix</h2>" + table(headers, rows)


def _reliabilitytable(evaluation: Evaluation) -> str:
    rows = [(f"{b.lower:.1f} – {b.upper:.1f}", f"{b.rows:,}", _number(b.mean_predicted), _number(b.observed_rate))
            for b in evaluation.reliability]
    return ("<h2>Calibration</h2>"
            + table(("predicted probability", "rows", "mean predicted", "observed rate"), rows))


def _weakest(weak: list[tuple[str, SliceMetrics]]) -> str:
    if not weak:
        return ""
    rows = [(f"{column} = {s.value}", f"{s.rows:,}", _number(s.auc), _number(s.accuracy)) for column, s in weak]
    return ('<h2>Weakest slices</h2><p class="note">Slices with an AUC below the overall AUC, lowest first; '
            "they are highlighted in the tables below.</p>"
            + table(("slice", "rows", "AUC", "accuracy"), rows, highlighted=set(range(len(rows)))))


def _columntable(column: ColumnSlices, weak: list[tuple[str, SliceMetrics]]) -> str:
    rows = [(s.value, f"{s.rows:,}", _percent(s.positive_rate), _number(s.auc), _number(s.accuracy),
             _number(s.log_loss), _number(s.precision), _number(s.recall), _number(s.expected_calibration_error))
            for s in column.slices]
    highlighted = {i for i, s in enumerate(column.slices) if (column.column, s) in weak}
    note = ""
    if column.skipped_values:
        note = (f'<p class="note">{column.skipped_values:,} value(s) with fewer than {column.min_rows:,} rows '
                f"({column.skipped_rows:,} rows in all) are not shown.</p>")
    return f"<h2>By {escape(column.column)}</h2>" + table(_SLICE_HEADERS, rows, highlighted) + note


def _roc_plot(evaluation: Evaluation) -> str:
    figure = Figure(figsize=(4.6, 4.2))
    axes = figure.subplots()
    axes.plot(evaluation.roc_fpr, evaluation.roc_tpr, label=f"model (AUC {evaluation.auc:.3f})")
    axes.plot([0, 1], [0, 1], linestyle="--", color="grey", label="chance")
    axes.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC curve", xlim=(0, 1), ylim=(0, 1))
    axes.legend(loc="lower right")
    return png(figure)


def _reliability_plot(evaluation: Evaluation) -> str:
    """Observed rate against mean predicted probability per bin, with the rows per bin underneath."""
    figure = Figure(figsize=(4.6, 4.2))
    curve, counts = figure.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    filled = [b for b in evaluation.reliability if b.rows]
    curve.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfectly calibrated")
    curve.plot([b.mean_predicted for b in filled], [b.observed_rate for b in filled], marker="o",
               label=f"model (ECE {evaluation.expected_calibration_error:.3f})")
    curve.set(ylabel="observed rate", title="Reliability diagram", ylim=(0, 1))
    curve.legend(loc="upper left")
    bins = evaluation.reliability
    counts.bar([b.lower for b in bins], [b.rows for b in bins], width=bins[0].upper - bins[0].lower, align="edge",
               color="#9ab", edgecolor="white")
    counts.set(xlabel="predicted probability", ylabel="rows", xlim=(0, 1))
    return png(figure)


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _percent(value: float) -> str:
    return f"{value:.1%}"
