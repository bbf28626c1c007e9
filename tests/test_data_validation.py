"""Data validation with TFDV on the real taxi sample, called the way the components call it: from core,
through the `tfdv` runtime's environment (slipway.runtime_call), so every test also crosses the boundary."""

import base64
import re
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from slipway import runtime_call, runtimes
from slipway.components.validation_report import DataAnomaliesError, ValidationResult, gate
from slipway.pipelines.cli import cli

LIBRARY = "slipway.components.data_validation"


def tfdv(function: str, **arguments):
    return runtime_call.call(runtimes.TFDV, f"{LIBRARY}:{function}", **arguments)


@pytest.fixture(scope="module")
def sample(taxi_csv: Path) -> pd.DataFrame:
    return pd.read_csv(taxi_csv, dtype=str)


@pytest.fixture(scope="module")
def splits(taxi_splits: tuple[Path, Path]) -> dict[str, str]:
    """The pipeline's inputs: data.csv ingested into its typed train and eval Parquet splits."""
    return {"train": str(taxi_splits[0]), "eval": str(taxi_splits[1])}


@pytest.fixture(scope="module")
def pipeline_statistics(splits, tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("statistics")
    result = tfdv("generate_statistics", splits=splits, output_dir=str(folder / "statistics"),
                  html_path=str(folder / "report.html"), problem="chicago_taxi")
    schema = folder / "schema.pbtxt"
    tfdv("infer_schema", statistics_dir=str(folder / "statistics"), split="train", schema_path=str(schema),
         problem="chicago_taxi")
    return {"result": result, "dir": folder / "statistics", "html": folder / "report.html", "schema": schema}


@pytest.fixture(scope="module")
def csv_schema(taxi_csv: Path, tmp_path_factory) -> dict:
    """A schema inferred from data.csv itself (raw: no label column), with data.csv's statistics."""
    folder = tmp_path_factory.mktemp("csv-schema")
    tfdv("generate_statistics", splits={"train": str(taxi_csv)}, output_dir=str(folder / "statistics"),
         html_path=str(folder / "report.html"), problem="chicago_taxi")
    tfdv("infer_schema", statistics_dir=str(folder / "statistics"), split="train",
         schema_path=str(folder / "schema.pbtxt"), problem="chicago_taxi")
    return {"dir": folder / "statistics", "schema": folder / "schema.pbtxt"}


def validate_csv(frame: pd.DataFrame, folder: Path, schema: Path, training_statistics: Path | None = None):
    data = folder / "data.csv"
    frame.to_csv(data, index=False)
    return ValidationResult.from_json(tfdv(
        "validate_data", data=str(data), schema_path=str(schema), anomalies_path=str(folder / "anomalies.pbtxt"),
        problem="chicago_taxi", training_statistics=str(training_statistics or "")))


def feature_block(schema_text: str, name: str) -> str:
    """The `feature { name: "<name>" ... }` block of a schema.pbtxt, by brace matching."""
    start = schema_text.index(f'feature {{\n  name: "{name}"')
    depth = 0
    for end in range(start, len(schema_text)):
        depth += {"{": 1, "}": -1}.get(schema_text[end], 0)
        if depth == 0 and schema_text[end] == "}":
            return schema_text[start:end + 1]
    raise AssertionError(f"unterminated feature block for {name}")


def test_statistics_of_both_splits_are_written_in_tfx_layout(pipeline_statistics):
    assert pipeline_statistics["result"]["splits"] == {"train": {"rows": 7998, "features": 19},
                                                       "eval": {"rows": 2002, "features": 19}}
    for split in ("train", "eval"):
        assert (pipeline_statistics["dir"] / f"Split-{split}" / "FeatureStats.pb").stat().st_size > 1000


def test_statistics_page_is_facets_with_both_splits_and_loads_nothing_from_the_network(pipeline_statistics):
    page = pipeline_statistics["html"].read_text()
    assert "<facets-overview" in page and "customElements.define" in page
    # Nothing is fetched when the page opens: no external script, stylesheet or HTML import.
    assert not re.search(r"<(script|link|img|iframe)\b[^>]*\b(src|href)=\"(https?:)?//", page)
    proto = base64.b64decode(re.search(r'protoInput = "([A-Za-z0-9+/=]+)"', page).group(1))
    assert b"train" in proto and b"eval" in proto and b"payment_type" in proto


def test_schema_is_curated_from_the_problem(pipeline_statistics):
    text = pipeline_statistics["schema"].read_text()
    assert "min_fraction: 1.0" in feature_block(text, "fare")  # features.required
    assert "min_fraction" not in feature_block(text, "trip_seconds")  # missing values allowed
    hour = feature_block(text, "trip_start_hour")
    assert "min: 0" in hour and "max: 23" in hour and "is_categorical: true" in hour
    payment = feature_block(text, "payment_type")
    assert all(f'value: "{value}"' in payment for value in ("Cash", "Credit Card", "Mobile", "Prcard"))
    assert "min_domain_mass: 0.9" in feature_block(text, "company")
    label = feature_block(text, "tip_over_20pct")
    assert "min: 0" in label and "max: 1" in label and 'not_in_environment: "SERVING"' in label
    assert "jensen_shannon_divergence" in feature_block(text, "fare")
    assert "infinity_norm" in feature_block(text, "company")


def test_eval_split_passes_the_schema_and_drift_gate_of_its_train_split(pipeline_statistics, tmp_path):
    """The default thresholds let the sample's own train-to-eval drift through: `make run` trains."""
    answer = tfdv("validate_statistics", statistics_dir=str(pipeline_statistics["dir"]), split="eval",
                  schema_path=str(pipeline_statistics["schema"]), anomalies_path=str(tmp_path / "a.pbtxt"),
                  problem="chicago_taxi", baseline_dir=str(pipeline_statistics["dir"]), baseline_split="train")
    result = ValidationResult.from_json(answer)
    assert (result.anomalies, result.environment, result.comparison) == ([], "TRAINING", "drift")
    assert (tmp_path / "a.pbtxt").is_file()


def test_data_csv_passes_its_own_inferred_schema(sample, csv_schema, tmp_path):
    result = validate_csv(sample, tmp_path, csv_schema["schema"])
    assert result.anomalies == [] and result.rows == 10000


def test_raw_source_is_judged_in_serving_environment_against_the_pipeline_schema(sample, pipeline_statistics,
                                                                                  tmp_path):
    """data.csv has no label column: against the pipeline's schema it is serving data, and it is clean."""
    result = validate_csv(sample, tmp_path, pipeline_statistics["schema"], pipeline_statistics["dir"])
    assert (result.environment, result.comparison, result.anomalies) == ("SERVING", "skew", [])



def test_an_optional_column_never_missing_in_training_may_be_missing_later(sample, csv_schema, tmp_path):
    """trip_miles has a value in every row of data.csv, but the problem does not require it: a row without one is
    what the model handles (imputed, with its missing indicator), not an anomaly."""
    assert sample["trip_miles"].notna().all()
    result = validate_csv(sample.assign(trip_miles=sample.trip_miles.where(sample.index != 7)), tmp_path,
                          csv_schema["schema"])
    assert result.anomalies == [], result.text()

@pytest.mark.parametrize(("mutation", "feature", "kind"), [
    ("renamed column", "fare", "Column dropped"),
    ("text in a numeric column", "trip_miles", "Unexpected data type"),
    ("unknown payment type", "payment_type", "Unexpected string values"),
    ("hour out of range", "trip_start_hour", "Out-of-range values"),
])
def test_broken_copy_of_data_csv_gets_the_anomaly_naming_its_feature(sample, csv_schema, tmp_path, mutation, feature,
                                                                     kind):
    broken = {
        "renamed column": lambda d: d.rename(columns={"fare": "fare_usd"}),
        "text in a numeric column": lambda d: d.assign(trip_miles=d.trip_miles.where(d.index != 5, "unknown")),
        "unknown payment type": lambda d: d.assign(payment_type=d.payment_type.where(d.index % 20 != 0, "Bitcoin")),
        "hour out of range": lambda d: d.assign(trip_start_hour=d.trip_start_hour.where(d.index % 50 != 0, "30")),
    }[mutation](sample)
    result = validate_csv(broken, tmp_path, csv_schema["schema"])
    assert (feature, kind) in {(a["feature"], a["kind"]) for a in result.anomalies}, result.text()
    with pytest.raises(DataAnomaliesError, match=feature):
        gate(result, fail_on_anomalies=True)
    gate(result, fail_on_anomalies=False)  # warn-only mode lets it through


def test_text_in_numeric_column_names_the_value(sample, csv_schema, tmp_path):
    broken = sample.assign(trip_miles=sample.trip_miles.where(sample.index != 5, "unknown"))
    result = validate_csv(broken, tmp_path, csv_schema["schema"])
    assert any('"unknown"' in a["description"] for a in result.anomalies if a["feature"] == "trip_miles")


def test_skew_of_a_shifted_copy_is_detected_above_threshold(sample, csv_schema, tmp_path):
    """Fares tripled and half the trips paid by card: both distances exceed the 0.2 threshold; the rest stays quiet."""
    shifted = sample.copy()
    shifted["fare"] = (shifted.fare.astype(float) * 3).astype(str)
    shifted.loc[shifted.index % 2 == 0, "payment_type"] = "Credit Card"
    result = validate_csv(shifted, tmp_path, csv_schema["schema"], training_statistics=csv_schema["dir"])
    distances = {a["feature"]: float(re.search(r"is ([0-9.]+)", a["description"]).group(1))
                 for a in result.anomalies}
    assert set(distances) == {"fare", "payment_type"}, result.text()
    assert distances["fare"] > 0.2 and distances["payment_type"] > 0.2
    assert result.comparison == "skew"


def test_pinned_schema_is_used_as_given(pipeline_statistics, csv_schema, tmp_path):
    out = tmp_path / "schema.pbtxt"
    answer = tfdv("infer_schema", statistics_dir=str(pipeline_statistics["dir"]), split="train",
                  schema_path=str(out), problem="chicago_taxi", pinned_schema=str(csv_schema["schema"]))
    assert answer["pinned"] and out.read_text() == csv_schema["schema"].read_text()


def test_schema_that_does_not_parse_is_an_error_naming_the_file_and_nothing_is_written(pipeline_statistics,
                                                                                       tmp_path):
    bad = tmp_path / "reviewed.pbtxt"
    bad.write_text('feature { name: "fare" type: FLOATY }\n')
    out = tmp_path / "schema.pbtxt"
    expected = r"DataValidationError: .*reviewed\.pbtxt: not a TFDV schema"
    with pytest.raises(runtime_call.RuntimeCallError, match=expected):
        tfdv("infer_schema", statistics_dir=str(pipeline_statistics["dir"]), split="train", schema_path=str(out),
             problem="chicago_taxi", pinned_schema=str(bad))
    assert list(tmp_path.iterdir()) == [bad]


@pytest.mark.parametrize(("content", "message"), [("", "the file is empty"),
                                                  ("fare,tips\n", "has a header but no data rows")])
def test_empty_split_is_an_error_naming_the_file_and_no_statistics_are_left(splits, tmp_path, content, message):
    empty = tmp_path / "eval.csv"
    empty.write_text(content)
    output = tmp_path / "statistics"
    with pytest.raises(runtime_call.RuntimeCallError, match=rf"eval\.csv: {message}"):
        tfdv("generate_statistics", splits={"train": splits["train"], "eval": str(empty)}, output_dir=str(output),
             html_path=str(tmp_path / "report.html"), problem="chicago_taxi")
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["eval.csv"]


# `slipway validate`: the same checks outside a pipeline, with exit codes a script can branch on.

def invoke_validate(*args: str):
    return CliRunner().invoke(cli, ["validate", *args])


def test_cli_validate_passes_clean_data_with_exit_code_0(taxi_csv, csv_schema):
    result = invoke_validate("--data", str(taxi_csv), "--schema", str(csv_schema["schema"]),
                             "--training-stats", str(csv_schema["dir"]))
    assert result.exit_code == 0, result.output
    assert f"{taxi_csv}: no anomalies in 10,000 rows" in result.output and "skew from the training" in result.output


def test_cli_validate_prints_each_anomaly_and_exits_1(sample, csv_schema, tmp_path):
    data = tmp_path / "trips.csv"
    sample.rename(columns={"fare": "fare_usd"}).to_csv(data, index=False)
    anomalies = tmp_path / "anomalies.pbtxt"
    result = invoke_validate("--data", str(data), "--schema", str(csv_schema["schema"]),
                             "--anomalies", str(anomalies))
    assert result.exit_code == 1, result.output
    assert "2 anomalies in fare, fare_usd" in result.output
    assert "  fare: Column dropped (error): Column is completely missing" in result.output
    assert 'anomaly_info' in anomalies.read_text()


def test_cli_validate_names_a_schema_that_does_not_parse_and_exits_3(taxi_csv, tmp_path):
    schema = tmp_path / "reviewed.pbtxt"
    schema.write_text("this is not a schema")
    result = invoke_validate("--data", str(taxi_csv), "--schema", str(schema))
    assert result.exit_code == 3, result.output  # 2 is bad usage
    assert f"{schema}: not a TFDV schema (schema.pbtxt)" in result.output


def test_cli_validate_names_a_missing_data_file_and_exits_3(csv_schema, tmp_path):
    result = invoke_validate("--data", str(tmp_path / "nope.csv"), "--schema", str(csv_schema["schema"]))
    assert result.exit_code == 3, result.output
    assert "--data: " in result.output and "nope.csv" in result.output
