"""The drift report as one self-contained HTML page (`html_page`), for the KFP UI's HTML artifact viewer.

Top to bottom: the verdict (overall level, rows, how p-values were corrected, the MMD test), one
table row per feature worst first (critical and warning rows highlighted), then for every measured
feature a bar chart of the reference's and the current data's shares over the PSI bins, in the
same order: the picture says where a distribution moved, the table says how far and how sure.
The `prediction` row, when a model was given, is that model's score (the champion's, in the
`drift` step), plotted and ranked like a feature.
"""

from __future__ import annotations

from html import escape
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from slipway.components.drift_detection import INSUFFICIENT, PREDICTION, DriftReport, FeatureDrift, format_p
from slipway.components.html_page import png, table, write_page

_HEADERS = ("feature", "kind", "PSI", "test", "statistic", "p (corrected)", "level", "missing: reference",
            "missing: current")


def write_drift_report(report: DriftReport, path: Path, title: str) -> None:
    """Writes the report to `path` as a single HTML file, whole or not at all."""
    ranked = report.ranked()
    write_page(path, title, [
        _verdict(report),
        "<h2>Features, worst first</h2>"
        + table(_HEADERS, [_row(f) for f in ranked],
                highlighted={i for i, f in enumerate(ranked) if f.level in ("warning", "critical")}),
        "<h2>Where each distribution moved</h2>",
        '<div class="plots">' + "".join(
            f'<img alt="{escape(f.feature)}: reference and current shares per bin" src="{_plot(f)}">'
            for f in ranked if f.bins) + "</div>",
    ])


def _verdict(report: DriftReport) -> str:
    config = report.config
    mmd = report.mmd
    lines = [
        f"<p><strong>Drift: {escape(report.level)}</strong>. {report.current_rows:,} current rows against "
        f"{report.reference_rows:,} reference rows.</p>",
        f'<p class="note">A feature\'s level is its PSI band (&lt; 0.1 none, 0.1–0.2 warning, &gt; 0.2 critical) when '
        f"its {escape(config.correction)}-corrected KS (numeric) or Chi-squared (categorical) p-value is below "
        f"{config.alpha:g}, else none; the overall level is the worst feature's.</p>",
    ]
    if report.scored_by:
        lines.append(f'<p class="note"><code>{PREDICTION}</code> is the score of {escape(report.scored_by)} on each '
                     "row (its probability of the positive label), compared like a numeric feature and counted in the "
                     "level: a moved score distribution changes the decisions the model makes.</p>")
    if report.insufficient:
        lines.append(f'<p class="note">Not measured ({escape(INSUFFICIENT)}): '
                     f"{escape(', '.join(report.insufficient))}.</p>")
    if mmd is not None:
        text = (f"p = {mmd.p_value:.3g} on {mmd.current_rows:,} rows a side" if mmd.p_value is not None
                else mmd.reason)
        lines.append(f"<p>Multivariate MMD test (not part of the level): {escape(text)}.</p>")
    return "\n".join(lines)


def _row(f: FeatureDrift) -> tuple[str, ...]:
    return (f.feature, f.kind, _number(f.psi), f.test, _number(f.statistic), format_p(f.p_value_corrected),
            f.level if f.level != INSUFFICIENT else f"{INSUFFICIENT}: {f.reason}",
            f"{f.reference_missing:.1%}", f"{f.current_missing:.1%}")


def _plot(f: FeatureDrift) -> str:
    figure = Figure(figsize=(5.2, 3.4))
    axes = figure.subplots()
    x = np.arange(len(f.bins))
    axes.bar(x - 0.2, f.reference_shares, width=0.4, label="reference", color="#9ab")
    axes.bar(x + 0.2, f.current_shares, width=0.4, label="current", color="#d95f02")
    axes.set_xticks(x, [label if len(label) <= 18 else label[:17] + "…" for label in f.bins], rotation=60,
                    ha="right", fontsize=7)
    name = f"{f.feature} (model score)" if f.kind == "score" else f.feature
    axes.set(ylabel="share of values", title=f"{name}: PSI {f.psi:.3f} ({f.level})")
    axes.legend(fontsize=8)
    return png(figure)


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"
