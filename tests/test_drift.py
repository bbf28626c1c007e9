"""Drift on the real taxi data: a resample of the reference is no drift, a deliberate shift is critical, and
data2.csv is measured as it is; every comparison crosses the real boundary into alibi-detect's runtime. A model
trained here on the sample scores both sides for the `prediction` row."""

from __future__ import annotations

import dataclasses
import json
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from slipway import runtimes
from slipway.components import models
from slipway.components.batch_scoring import SCORE, read_manifest, score_file
from slipway.components.drift_detection import (
    INSUFFICIENT,
    PREDICTION,
    DriftConfig,
    DriftInputError,
    DriftReport,
    correct,
    current_table,
    detect_drift,
    drift_table,
    feature_psi,
)
from slipway.components.drift_detectors import read_columns
from slipway.components.feature_store import joined_columns
from slipway.components.model_artifact import LoadedModel, load_model
from slipway.components.preprocessing import Preprocessing
from slipway.components.train_config import TrainConfig
from slipway.components.trainer import train
from slipway.problem import load_problem
from slipway.sample_data import fetch_sample

PROBLEM = load_problem("chicago_taxi")
NUMERIC, CATEGORICAL = PROBLEM.features.numeric, PROBLEM.features.categorical
RAW_PROBLEM = dataclasses.replace(PROBLEM, feature_store=None)  # its model reads the trip's own columns only


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """data.csv's features, typed as the problem declares."""
    return drift_table(str(fetch_sample()["data.csv"]), PROBLEM, tmp_path_factory.mktemp("drift") / "ref.parquet",
                       "reference")


def written(frame: pd.DataFrame, path: Path) -> Path:
    frame.to_parquet(path, index=False)
    return path


def drift(reference: Path, current: Path, **config) -> DriftReport:
    return detect_drift(reference, current, NUMERIC, CATEGORICAL, DriftConfig(mmd_sample_rows=500, **config))


@pytest.fixture(scope="module")
def resample_report(reference: Path, tmp_path_factory: pytest.TempPathFactory) -> DriftReport:
    frame = pd.read_parquet(reference).sample(n=5000, replace=True, random_state=0)
    return drift(reference, written(frame, tmp_path_factory.mktemp("resample") / "current.parquet"))


@pytest.fixture(scope="module")
def shifted(reference: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Fares 1.5 times higher, and trips spread evenly over the companies instead of favouring a few."""
    frame = pd.read_parquet(reference).sample(n=5000, random_state=1).reset_index(drop=True)
    frame["fare"] = frame["fare"] * 1.5
    companies = frame["company"].dropna().unique()
    frame["company"] = pd.array(np.random.default_rng(1).choice(companies, size=len(frame)), dtype="string")
    return written(frame, tmp_path_factory.mktemp("shifted") / "current.parquet")


@pytest.fixture(scope="module")
def shifted_report(reference: Path, shifted: Path) -> DriftReport:
    return drift(reference, shifted)


@pytest.fixture(scope="module")
def data2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """data2.csv's features: the sample's second file, which picks up elsewhere in the city."""
    return drift_table(str(fetch_sample()["data2.csv"]), PROBLEM, tmp_path_factory.mktemp("data2") / "cur.parquet",
                       "current")


def by_feature(report: DriftReport) -> dict:
    return {f.feature: f for f in report.features}


def test_a_resample_of_the_reference_is_no_drift(resample_report: DriftReport) -> None:
    assert resample_report.level == "none"
    features = by_feature(resample_report)
    assert all(f.level == "none" for f in features.values())
    assert max(f.psi for f in features.values()) < 0.05
    assert resample_report.mmd is not None and resample_report.mmd.p_value > 0.05


def test_higher_fares_and_a_new_company_mix_are_critical_and_named(shifted_report: DriftReport) -> None:
    assert shifted_report.level == "critical"
    features = by_feature(shifted_report)
    assert features["fare"].level == "critical" and features["fare"].psi > 0.2
    assert features["company"].level == "critical" and features["company"].test == "chi2"
    assert features["fare"].p_value_corrected < 1e-10
    # Everything else is a sample of the reference: nothing else is flagged.
    assert {f.feature for f in shifted_report.features if f.level != "none"} == {"fare", "company"}
    assert shifted_report.ranked()[0].feature in {"fare", "company"}
    assert shifted_report.metrics()["drift_level"] == 2.0


def test_data2_against_data_is_critical_in_where_trips_start(reference: Path, data2: Path) -> None:
    """data2.csv, the sample's second file, picks up elsewhere in the city: measured as it is."""
    report = drift(reference, data2)
    features = by_feature(report)
    assert report.level == "critical"
    assert {name for name, f in features.items() if f.level == "critical"} == {
        "pickup_longitude", "pickup_latitude", "pickup_community_area"}
    assert features["company"].level == "none" and features["trip_start_hour"].level == "none"


def test_a_small_window_is_insufficient_data_not_a_verdict(reference: Path, tmp_path: Path) -> None:
    frame = pd.read_parquet(reference).head(40)
    report = drift(reference, written(frame, tmp_path / "window.parquet"), min_rows=100)
    assert report.level == "none" and set(report.insufficient) == set(NUMERIC + CATEGORICAL)
    fare = by_feature(report)["fare"]
    assert fare.level == INSUFFICIENT and "fewer than min_rows 100" in fare.reason
    assert "insufficient data: 40 values in the current data" in report.table()


def test_an_all_missing_feature_is_reported_as_such_and_the_rest_measured(reference: Path, tmp_path: Path) -> None:
    frame = pd.read_parquet(reference)
    frame["trip_seconds"] = np.nan
    report = drift(reference, written(frame, tmp_path / "current.parquet"))
    seconds = by_feature(report)["trip_seconds"]
    assert seconds.level == INSUFFICIENT and seconds.current_missing == 1.0
    assert seconds.reason == "every value of 'trip_seconds' is missing in the current data"
    assert by_feature(report)["fare"].psi == 0 and report.level == "none"


def test_different_columns_are_named_before_anything_is_measured(reference: Path, tmp_path: Path) -> None:
    frame = pd.read_parquet(reference).rename(columns={"fare": "fare_usd"})
    with pytest.raises(DriftInputError, match=r"current.parquet: the current data has no column\(s\) \['fare'\]"):
        drift(reference, written(frame, tmp_path / "current.parquet"))


def test_an_empty_window_is_refused_naming_the_file(reference: Path, tmp_path: Path) -> None:
    frame = pd.read_parquet(reference).head(0)
    with pytest.raises(DriftInputError, match="the current data has no rows"):
        drift(reference, written(frame, tmp_path / "current.parquet"))


def test_a_text_column_where_the_problem_says_numbers_is_named(tmp_path: Path) -> None:
    source = pd.read_csv(fetch_sample()["data.csv"], dtype=str)
    source.loc[3, "trip_miles"] = "unknown"
    source.to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(DriftInputError, match=r"the current data: .*bad.csv.*trip_miles.*'unknown'"):
        drift_table(str(tmp_path / "bad.csv"), PROBLEM, tmp_path / "bad.parquet", "current")
    assert not (tmp_path / "bad.parquet").exists()


def test_bonferroni_and_fdr_corrections_match_their_definitions() -> None:
    p = {"a": 0.01, "b": 0.04, "c": 0.03, "d": 0.5}
    assert correct(p, "bonferroni") == pytest.approx({"a": 0.04, "b": 0.16, "c": 0.12, "d": 1.0})
    # Benjamini-Hochberg: sorted p * m / rank, made monotone from the largest rank down.
    assert correct(p, "fdr") == pytest.approx({"a": 0.04, "b": 0.0533333, "c": 0.0533333, "d": 0.5})


def test_an_impossible_config_is_refused() -> None:
    with pytest.raises(ValueError, match="correction: expected one of"):
        DriftConfig(correction="holm")


# --- the tests' imports: alibi-detect's own tests, only the modules they need ---------------------------------------

# What the drift step computed before it imported only alibi-detect's tabular tests: each feature's TabularDrift on
# its non-missing values, categories as float codes, with `from alibi_detect.cd import TabularDrift` (the whole
# package: torch and transformers with it). Run in the drift runtime; prints {feature: [statistic, p_value]}.
TABULAR_DRIFT_IMPORTED_IN_FULL = """
import json, sys
import numpy as np, pandas as pd
from alibi_detect.cd import TabularDrift
reference, current = pd.read_parquet(sys.argv[1]), pd.read_parquet(sys.argv[2])
categorical, results = sys.argv[4].split(","), {}
for name in sys.argv[3].split(",") + categorical:
    ref, cur = reference[name].dropna(), current[name].dropna()
    if name in categorical:
        categories = pd.Index(ref.unique()).union(pd.Index(cur.unique()))
        x_ref, x_cur = (pd.Categorical(side, categories=categories).codes.astype(np.float64).reshape(-1, 1)
                        for side in (ref, cur))
        detector = TabularDrift(x_ref, p_val=0.05, categories_per_feature={0: list(range(len(categories)))})
    else:
        x_ref, x_cur = (side.to_numpy(dtype=np.float64).reshape(-1, 1) for side in (ref, cur))
        detector = TabularDrift(x_ref, p_val=0.05, categories_per_feature={})
    data = detector.predict(x_cur, drift_type="feature", return_p_val=True, return_distance=True)["data"]
    results[name] = [float(data["distance"][0]), float(data["p_val"][0])]
print(json.dumps(results))
"""

# Runs the drift step's tests twice in one drift-runtime process, without MMD and then with it; prints which heavy
# modules the first call left imported, the MMD result, and whether the packages' own names still resolve.
TESTS_THEN_MMD = """
import json, sys
from slipway.components.drift_detectors import drift_tests
arguments = dict(reference_path=sys.argv[1], current_path=sys.argv[2], numeric=sys.argv[3].split(","),
                 categorical=sys.argv[4].split(","), min_rows=100)
univariate = drift_tests(**arguments, mmd_sample_rows=0)
imported = sorted(m for m in ("torch", "transformers", "tensorflow", "alibi_detect.cd.mmd") if m in sys.modules)
with_mmd = drift_tests(**arguments, mmd_sample_rows=300)
import alibi_detect.cd.tabular
from alibi_detect.cd import MMDDrift, TabularDrift
print(json.dumps({"imported_without_mmd": imported, "mmd": with_mmd["mmd"], "torch": "torch" in sys.modules,
                  "same_tests": univariate["features"] == with_mmd["features"], "mmd_class": MMDDrift.__name__,
                  "same_class": TabularDrift is alibi_detect.cd.tabular.TabularDrift}))
"""


def in_drift_runtime(script: str, reference: Path, current: Path) -> dict:
    result = subprocess.run([str(runtimes.local_python(runtimes.DRIFT)), "-c", script, str(reference), str(current),
                             ",".join(NUMERIC), ",".join(CATEGORICAL)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.splitlines()[-1])


@pytest.mark.parametrize("current", ["data2", "shifted"])
def test_the_tests_give_what_tabular_drift_imported_with_all_of_alibi_detect_gives(
        current: str, reference: Path, request: pytest.FixtureRequest) -> None:
    """The statistic and p-value of every feature, bit for bit, and so the same levels: importing only the tabular
    tests, categories as small integer codes and NaN dropped by numpy change what is loaded, not what is computed."""
    path = request.getfixturevalue(current)
    expected = in_drift_runtime(TABULAR_DRIFT_IMPORTED_IN_FULL, reference, path)
    report = drift(reference, path)
    assert {f.feature: [f.statistic, f.p_value] for f in report.features} == expected
    assert report.level == "critical" and len(expected) == len(NUMERIC) + len(CATEGORICAL)


def test_the_tests_import_no_torch_and_mmd_imports_it_when_asked_in_the_same_process(reference: Path,
                                                                                     shifted: Path) -> None:
    outcome = in_drift_runtime(TESTS_THEN_MMD, reference, shifted)
    assert outcome["imported_without_mmd"] == []
    assert outcome["torch"] and outcome["mmd"]["reference_rows"] == 300 and outcome["mmd"]["p_value"] < 0.05
    assert outcome["same_tests"] and outcome["same_class"] and outcome["mmd_class"] == "MMDDrift"


def test_psi_is_the_same_whether_text_is_read_dictionary_encoded_or_as_strings(reference: Path, data2: Path,
                                                                              tmp_path: Path) -> None:
    """detect_drift reads text columns dictionary-encoded (pandas categoricals, no string object per row); the online
    monitor hands feature_psi strings. Same bins, in the same order, same shares; a category the file's dictionary
    declares but no row holds is no bin."""
    frame = pd.read_parquet(reference)
    companies = list(frame["company"].dropna().unique())
    declared = written(frame.astype({"company": pd.CategoricalDtype(["Never Seen Cab", *companies])}),
                       tmp_path / "declared.parquet")
    columns = [*NUMERIC, *CATEGORICAL]
    for ref, cur in ((reference, data2), (declared, data2), (data2, declared)):
        encoded = read_columns(str(ref), columns), read_columns(str(cur), columns)
        assert isinstance(encoded[0]["company"].dtype, pd.CategoricalDtype)
        strings = [pd.read_parquet(path).astype({"company": "string", "payment_type": "string"}) for path in (ref, cur)]
        from_codes = feature_psi(*encoded, NUMERIC, CATEGORICAL, DriftConfig())
        from_strings = feature_psi(*strings, NUMERIC, CATEGORICAL, DriftConfig())
        for name in columns:
            assert from_codes[name]["psi"] == from_strings[name]["psi"], name
            assert from_codes[name]["bins"] == from_strings[name]["bins"], name
            assert list(from_codes[name]["e"]) == list(from_strings[name]["e"]), name
    from_declared = feature_psi(read_columns(str(declared), columns), read_columns(str(data2), columns), NUMERIC,
                                CATEGORICAL, DriftConfig())
    assert "Never Seen Cab" not in from_declared["company"]["bins"]


def test_the_html_report_escapes_what_the_data_says_and_draws_each_measured_feature(tmp_path: Path) -> None:
    from slipway.components.drift_detection import FeatureDrift
    from slipway.components.drift_report import write_drift_report

    company = FeatureDrift(feature="company", kind="categorical", level="critical", psi=1.2, test="chi2",
                           statistic=900.0, p_value=1e-30, p_value_corrected=1e-29, reference_rows=100,
                           current_rows=100, reference_missing=0.0, current_missing=0.1,
                           bins=("<script>alert(1)</script>", "(not in the reference)"),
                           reference_shares=(1.0, 1e-4), current_shares=(0.5, 0.5))
    empty = FeatureDrift(feature="trip_seconds", kind="numeric", level=INSUFFICIENT, psi=None, test="ks",
                         statistic=None, p_value=None, p_value_corrected=None, reference_rows=100, current_rows=0,
                         reference_missing=0.0, current_missing=1.0, reason="every value is missing")
    report = DriftReport(features=(empty, company), config=DriftConfig(), reference_rows=100, current_rows=100)
    write_drift_report(report, tmp_path / "drift.html", "Drift of <batch>")
    page = (tmp_path / "drift.html").read_text()
    assert "<script>" not in page and "&lt;batch&gt;" in page
    assert page.count("data:image/png;base64,") == 1  # the measured feature only
    assert page.index("<td>company</td>") < page.index("<td>trip_seconds</td>")  # worst first
    assert '<tr class="weak"><td>company</td>' in page
    assert "Not measured (insufficient data): trip_seconds" in page


# --- the model's scores: the `prediction` row ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def raw_model_dir(taxi_splits: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The MLP trained on the sample's train split (raw columns, no Feast features: a few seconds)."""
    out = tmp_path_factory.mktemp("raw-model")
    train(*taxi_splits, RAW_PROBLEM, TrainConfig(epochs=3), out / "model", out / "checkpoints")
    return out / "model"


@pytest.fixture(scope="module")
def raw_model(raw_model_dir: Path) -> LoadedModel:
    return load_model(raw_model_dir)


@pytest.fixture(scope="module")
def feast_model(taxi_splits: tuple[Path, Path]) -> LoadedModel:
    """A model of the default problem's shape, which also reads the Feast features ("{view}__{feature}"); its weights
    are untrained: the tests using it check which columns it needs, not what it scores."""
    frame = pd.read_parquet(taxi_splits[0]).assign(**dict.fromkeys(joined_columns(PROBLEM), 1.0))
    preprocessing = Preprocessing.fit(frame, PROBLEM)
    arguments = TrainConfig(architecture="logistic_regression").model_arguments(preprocessing)
    return LoadedModel(models.build("logistic_regression", arguments).eval(), preprocessing, {})


@pytest.fixture(scope="module")
def scored_resample_report(reference: Path, raw_model: LoadedModel,
                           tmp_path_factory: pytest.TempPathFactory) -> DriftReport:
    frame = pd.read_parquet(reference).sample(n=5000, replace=True, random_state=0)
    return detect_drift(reference, written(frame, tmp_path_factory.mktemp("scored") / "current.parquet"), NUMERIC,
                        CATEGORICAL, DriftConfig(mmd_sample_rows=500), model=raw_model, model_name="the taxi MLP")


def test_the_scores_of_a_resample_are_one_more_row_measured_and_corrected_with_the_features(
        scored_resample_report: DriftReport) -> None:
    report = scored_resample_report
    prediction = by_feature(report)[PREDICTION]
    assert prediction.kind == "score" and prediction.test == "ks" and prediction.level == "none"
    assert prediction.psi < 0.05 and prediction.reference_rows == report.reference_rows
    assert prediction.current_rows == 5000 and len(prediction.bins) == 10  # the reference scores' deciles
    # Corrected with the features: Bonferroni multiplies by every tested row, the scores included.
    tested = len(NUMERIC) + len(CATEGORICAL) + 1
    assert prediction.p_value_corrected == pytest.approx(min(1.0, prediction.p_value * tested))
    assert report.metrics()["psi_prediction"] == round(prediction.psi, 6)
    assert report.metrics()["p_prediction"] == prediction.p_value_corrected
    assert report.level == "none" and report.scored_by == "the taxi MLP"
    assert "(prediction: the scores of the taxi MLP on each row)" in report.table()


def test_rows_that_pair_the_same_values_differently_move_only_the_scores_and_that_is_critical(
        reference: Path, raw_model: LoadedModel, tmp_path: Path) -> None:
    """Every column keeps its values, only their pairing changes: the card payments (which the model reads as
    tipping) go to the trips whose other columns say the least tipping. Each feature is the same distribution;
    the model decides differently on almost every trip, and that is what the level must say."""
    frame = pd.read_parquet(reference)
    rest = raw_model.predict_proba(frame.assign(payment_type=pd.array(["Cash"] * len(frame), dtype="string")))
    payments = frame["payment_type"].sort_values(key=lambda s: s != "Credit Card", kind="stable").to_numpy()
    current = frame.copy()
    current.loc[np.argsort(rest, kind="stable"), "payment_type"] = payments
    report = detect_drift(reference, written(current, tmp_path / "current.parquet"), NUMERIC, CATEGORICAL,
                          DriftConfig(mmd_sample_rows=0), model=raw_model)
    features = by_feature(report)
    assert all(f.psi == 0 and f.level == "none" for name, f in features.items() if name != PREDICTION)
    assert features[PREDICTION].level == "critical" and features[PREDICTION].psi > 0.2
    assert report.level == "critical" and report.metrics()["drift_level"] == 2.0
    assert report.ranked()[0].feature == PREDICTION


def test_a_batch_without_the_feast_features_the_model_reads_is_not_scored_and_says_which(
        reference: Path, feast_model: LoadedModel, tmp_path: Path) -> None:
    joined = joined_columns(PROBLEM)
    # The reference is a training set (joined point in time); the batch is raw trips, as a new batch arrives.
    training_set = written(pd.read_parquet(reference).assign(**dict.fromkeys(joined, 2.0)), tmp_path / "ref.parquet")
    batch = drift_table(str(fetch_sample()["data.csv"]), PROBLEM, tmp_path / "batch.parquet", "current",
                        extra=feast_model.preprocessing.numeric)
    report = detect_drift(training_set, batch, NUMERIC, CATEGORICAL, DriftConfig(mmd_sample_rows=0),
                          model=feast_model, model_name="the champion")
    prediction = by_feature(report)[PREDICTION]
    assert prediction.level == INSUFFICIENT and report.insufficient == [PREDICTION]
    assert prediction.reason == f"the champion reads column(s) {joined} that the current data lacks"
    assert report.level == "none" and "psi_prediction" not in report.metrics()
    assert by_feature(report)["fare"].psi == 0  # the features are measured all the same


def test_a_batch_that_carries_the_models_feast_features_keeps_them_typed(feast_model: LoadedModel,
                                                                         tmp_path: Path) -> None:
    joined = joined_columns(PROBLEM)
    source = pd.read_csv(fetch_sample()["data.csv"]).head(50).assign(**{joined[0]: "3", joined[1]: 4})
    source.to_csv(tmp_path / "joined.csv", index=False)
    kept = pd.read_parquet(drift_table(str(tmp_path / "joined.csv"), PROBLEM, tmp_path / "batch.parquet", "current",
                                       extra=feast_model.preprocessing.numeric))
    assert list(kept.columns) == list(PROBLEM.features.all) + joined[:2]
    assert kept[joined[0]].dtype == "float64" and kept[joined[0]].iloc[0] == 3.0


def test_a_value_the_model_cannot_read_is_named_with_its_file(reference: Path, feast_model: LoadedModel,
                                                             tmp_path: Path) -> None:
    joined = joined_columns(PROBLEM)
    frame = pd.read_parquet(reference).assign(**dict.fromkeys(joined, 2.0))
    training_set = written(frame, tmp_path / "ref.parquet")
    batch = written(frame.assign(**{joined[0]: "many"}), tmp_path / "batch.parquet")
    with pytest.raises(DriftInputError, match=rf"batch.parquet: the champion cannot score the current data: "
                                              rf"feature '{joined[0]}': expected numbers"):
        detect_drift(training_set, batch, NUMERIC, CATEGORICAL, model=feast_model, model_name="the champion")


def test_the_html_report_says_whose_scores_prediction_is_and_draws_them(scored_resample_report: DriftReport,
                                                                       tmp_path: Path) -> None:
    from slipway.components.drift_report import write_drift_report

    write_drift_report(scored_resample_report, tmp_path / "drift.html", "Drift")
    page = (tmp_path / "drift.html").read_text()
    assert "<code>prediction</code> is the score of the taxi MLP on each row" in page
    assert page.count("data:image/png;base64,") == len(NUMERIC) + len(CATEGORICAL) + 1
    assert 'alt="prediction: reference and current shares per bin"' in page


def test_a_batch_prediction_log_is_judged_by_the_scores_it_logged(reference: Path, raw_model_dir: Path,
                                                                    raw_model: LoadedModel, tmp_path: Path) -> None:
    """A `slipway score` / `batch_predict` output feeds the drift checks as served traffic feeds the online monitor:
    its features against the reference, and the scores it logged (not the rows scored again) against the model's
    scores on the reference. A log whose scores were changed after the fact, features untouched, is critical in
    `prediction` alone."""
    batch = written(pd.read_parquet(reference).sample(n=5000, replace=True, random_state=1), tmp_path / "batch.parquet")
    scores = tmp_path / "scores"
    score_file(batch, raw_model_dir, scores, model_version="1", run_id="nightly")
    extra = raw_model.preprocessing.numeric
    table, logged = current_table(str(scores), RAW_PROBLEM, tmp_path / "current.parquet", extra)
    assert logged == SCORE
    honest = detect_drift(reference, table, NUMERIC, CATEGORICAL, DriftConfig(mmd_sample_rows=0), model=raw_model,
                          current_scores=logged)
    assert honest.level == "none" and by_feature(honest)[PREDICTION].current_rows == 5000

    [part] = read_manifest(scores)["parts"]
    logged_rows = pd.read_parquet(scores / part)
    written(logged_rows.assign(**{SCORE: 1.0 - logged_rows[SCORE]}), scores / part)
    table, _ = current_table(str(scores), RAW_PROBLEM, tmp_path / "tampered.parquet", extra)
    tampered = by_feature(detect_drift(reference, table, NUMERIC, CATEGORICAL, DriftConfig(mmd_sample_rows=0),
                                       model=raw_model, current_scores=logged))
    assert tampered[PREDICTION].level == "critical"
    assert all(f.level == "none" for name, f in tampered.items() if name != PREDICTION)
