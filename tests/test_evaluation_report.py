"""The HTML report: self-contained for the KFP UI's sandboxed iframe, and safe whatever the data holds."""

import base64
import dataclasses
import re
from pathlib import Path

import pandas as pd
import pytest
from conftest import files_in

from slipway.components.evaluation import Evaluation, evaluate_model
from slipway.components.evaluation_report import write_report
from slipway.problem import load_problem

HOSTILE = "<script>alert('slice')</script>"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def evaluation(taxi_model: Path, taxi_training_sets, tmp_path_factory: pytest.TempPathFactory) -> Evaluation:
    """The taxi evaluation, where 40 trips' company is a script tag and companies are sliced by 20 rows."""
    frame = pd.read_parquet(taxi_training_sets[1])
    frame.loc[frame.index[:40], "company"] = HOSTILE
    eval_path = tmp_path_factory.mktemp("hostile") / "eval.parquet"
    frame.to_parquet(eval_path)
    problem = load_problem("chicago_taxi")
    spec = dataclasses.replace(problem.evaluation, min_slice_rows=20)
    return evaluate_model(taxi_model, eval_path, dataclasses.replace(problem, evaluation=spec))


@pytest.fixture(scope="module")
def page(evaluation: Evaluation, tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("report") / "report.html"
    write_report(evaluation, path, title="Taxi <challenger> & champion")
    return path.read_text(encoding="utf-8")


def test_the_plots_are_inline_pngs_and_nothing_is_fetched_from_elsewhere(page: str) -> None:
    images = dict(re.findall(r'<img alt="([^"]+)" src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page))
    assert set(images) == {"ROC curve", "Reliability diagram"}
    for encoded in images.values():
        assert base64.b64decode(encoded).startswith(PNG_MAGIC)
    assert page.count("<img") == 2
    assert "http://" not in page and "https://" not in page
    assert "<script" not in page.lower() and "<link" not in page.lower()


def test_data_derived_text_is_escaped(page: str, evaluation: Evaluation) -> None:
    company = next(c for c in evaluation.slices if c.column == "company")
    assert HOSTILE in [s.value for s in company.slices], "the hostile value must be reported for this test to mean much"
    assert "<td>&lt;script&gt;alert(&#x27;slice&#x27;)&lt;/script&gt;</td>" in page
    assert "<h1>Taxi &lt;challenger&gt; &amp; champion</h1>" in page


def test_the_headline_confusion_matrix_and_calibration_are_shown(page: str, evaluation: Evaluation) -> None:
    assert f"<tr><td>AUC</td><td>{evaluation.auc:.3f}</td></tr>" in page
    ece = evaluation.expected_calibration_error
    assert f"<tr><td>expected calibration error</td><td>{ece:.3f}</td></tr>" in page
    (negatives, false_positives), (false_negatives, positives) = evaluation.confusion_matrix
    assert (f"<tr><td>tip_over_20pct=0</td><td>{negatives:,}</td><td>{false_positives:,}</td></tr>"
            f"<tr><td>tip_over_20pct=1</td><td>{false_negatives:,}</td><td>{positives:,}</td></tr>") in page
    first = evaluation.reliability[0]
    assert f"<tr><td>0.0 – 0.1</td><td>{first.rows:,}</td>" in page


def test_each_slice_column_has_a_table_and_says_what_it_left_out(page: str, evaluation: Evaluation) -> None:
    for column in evaluation.slices:
        assert f"<h2>By {column.column}</h2>" in page
        for piece in column.slices:
            assert f"<td>{piece.rows:,}</td>" in page
    payment = evaluation.slices[0]
    assert payment.skipped_values > 0
    assert (f"{payment.skipped_values} value(s) with fewer than 20 rows "
            f"({payment.skipped_rows} rows in all) are not shown.") in page


def test_the_weakest_slices_are_listed_and_highlighted(page: str, evaluation: Evaluation) -> None:
    column, worst = evaluation.worst_slices(1)[0]
    weakest = page.split("<h2>Weakest slices</h2>")[1].split("<h2>")[0]
    assert f'<tr class="weak"><td>{column} = {worst.value}</td><td>{worst.rows:,}</td>' in weakest
    own_table = page.split(f"<h2>By {column}</h2>")[1].split("<h2>")[0]
    assert f'<tr class="weak"><td>{worst.value}</td>' in own_table
    strongest = max((s for c in evaluation.slices for s in c.slices if s.auc is not None), key=lambda s: s.auc)
    assert f'<tr class="weak"><td>{strongest.value}</td>' not in page


def test_a_report_without_slices_has_no_slice_sections(evaluation: Evaluation, tmp_path: Path) -> None:
    path = tmp_path / "report.html"
    write_report(dataclasses.replace(evaluation, slices=[]), path, title="no slices")
    page = path.read_text(encoding="utf-8")
    assert "Weakest slices" not in page and "<h2>By " not in page
    assert files_in(tmp_path) == ["report.html"], "the report is written atomically, no temporary file left"

