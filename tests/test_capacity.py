"""Capacity estimate: arithmetic on hand-made profiles, the profile file, and a real measurement of the taxi model."""

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from slipway.capacity import (
    BatchLatency,
    LatencyProfile,
    estimate,
    load_profile,
    measure_profile,
    save_profile,
)


def profile(*batches: tuple[int, float, float]) -> LatencyProfile:
    """A hand-made profile: (batch size, p50 ms, p99 ms) per batch."""
    return LatencyProfile("cpu (2 threads)", "hand-made", tuple(BatchLatency(*b) for b in batches))


# Batch 1 takes 10 ms; a batch of 8 takes 16 ms (500 rows/s); a batch of 32 takes 40 ms (800 rows/s).
THREE_SIZES = profile((1, 10.0, 12.0), (8, 16.0, 20.0), (32, 40.0, 50.0))


# --- without batching -----------------------------------------------------------------------


def test_replicas_are_qps_times_service_time_over_utilisation() -> None:
    result = estimate(profile((1, 10.0, 20.0)), qps=100, p99_ms=50, utilisation=0.5)
    plain = result.without_batching
    # 100 qps × 0.010 s ÷ 0.5 = 2.0: exactly two replicas, not three from floating-point dust.
    assert (plain.replicas, plain.batch_size, plain.per_replica_qps, plain.predicted_p99_ms) == (2, 1, 100.0, 20.0)
    assert plain.feasible and result.recommended is plain
    assert "replicas = ceil(100 qps × 10.00 ms ÷ 0.50) = ceil(2.00) = 2" in plain.arithmetic
    assert result.batching_options == () and result.with_batching is None


def test_a_fraction_of_a_replica_rounds_up() -> None:
    plain = estimate(profile((1, 4.1, 6.0)), qps=500, p99_ms=50, utilisation=0.6).without_batching
    assert plain.replicas == 4
    assert "replicas = ceil(500 qps × 4.10 ms ÷ 0.60) = ceil(3.42) = 4" in plain.arithmetic


def test_a_target_below_the_p99_of_one_request_cannot_be_met_and_says_so() -> None:
    result = estimate(THREE_SIZES, qps=100, p99_ms=11, utilisation=0.5)
    assert not result.without_batching.feasible
    assert result.with_batching is None and result.recommended is None
    explanation = result.explain()
    assert "batch-1 p99 = 12.00 ms > 11 ms target: misses it" in explanation
    assert "No option meets p99 <= 11 ms on cpu (2 threads): one request alone takes 12.00 ms at p99" in explanation


# --- with batching --------------------------------------------------------------------------


def test_batching_picks_the_feasible_batch_size_with_fewest_replicas() -> None:
    result = estimate(THREE_SIZES, qps=1000, p99_ms=200, utilisation=0.5, max_batch_wait_ms=100)
    by_size = {option.batch_size: option for option in result.batching_options}
    assert result.without_batching.replicas == 20  # 1000 × 0.010 ÷ 0.5
    # batch 8: 1000 ÷ (500 × 0.5) = 4 replicas; 250/s each fill a batch in 7 ÷ 250 = 28 ms; p99 28 + 20 = 48 ms.
    assert (by_size[8].replicas, by_size[8].predicted_p99_ms, by_size[8].feasible) == (4, pytest.approx(48.0), True)
    # batch 32: 1000 ÷ (800 × 0.5) = 2.5, so 3 replicas; 333.3/s each fill it in 93 ms; p99 93 + 50 = 143 ms.
    assert (by_size[32].replicas, by_size[32].predicted_p99_ms) == (3, pytest.approx(143.0))
    assert result.with_batching is by_size[32] and result.recommended is by_size[32]
    explanation = result.explain()
    assert "Recommended: 3 replicas with batching: 17 fewer than the 20 without batching (85% saved)." in explanation
    assert "KServe batcher: maxBatchSize 32, maxLatency 100 ms." in explanation


def test_a_batch_whose_fill_wait_breaks_the_target_is_passed_over() -> None:
    result = estimate(THREE_SIZES, qps=1000, p99_ms=100, utilisation=0.5, max_batch_wait_ms=100)
    assert [o.feasible for o in result.batching_options] == [True, False]
    assert result.with_batching.batch_size == 8 and result.with_batching.replicas == 4


def test_equal_replicas_go_to_the_smaller_batch_and_then_to_no_batching() -> None:
    batching_wins = estimate(THREE_SIZES, qps=100, p99_ms=1000, utilisation=0.5, max_batch_wait_ms=400)
    assert [o.replicas for o in batching_wins.batching_options] == [1, 1]
    assert batching_wins.with_batching.batch_size == 8 and batching_wins.without_batching.replicas == 2

    no_gain = estimate(THREE_SIZES, qps=10, p99_ms=1000, utilisation=0.5, max_batch_wait_ms=1000)
    assert no_gain.without_batching.replicas == no_gain.with_batching.replicas == 1
    assert no_gain.recommended is no_gain.without_batching
    assert "Recommended: 1 replica without batching (batching saves nothing at this load)." in no_gain.explain()


def test_part_full_batches_count_when_the_replica_keeps_up_with_them() -> None:
    cheap_rows = profile((1, 4.0, 6.0), (8, 4.2, 6.0), (128, 4.4, 7.0))
    result = estimate(cheap_rows, qps=500, p99_ms=50, utilisation=0.6, max_batch_wait_ms=10)
    batch_8, batch_128 = result.batching_options
    # One replica gets 500/s: a batch of 8 needs 14 ms to fill, so at the 10 ms deadline it leaves
    # with about 6 rows, which cost at most the batch-8 p50: busy 500/s × 4.2 ms ÷ 6 = 0.35 <= 0.6.
    assert batch_8.replicas == 1 and batch_8.feasible
    assert batch_8.predicted_p99_ms == pytest.approx(10 + 6.0)
    assert any("busy = 500.0/s × 4.20 ms (batch-8 p50) ÷ 6.0 rows = 0.35 <= 0.60: keeps up" in line
               for line in batch_8.arithmetic)
    # maxBatchSize 128 flushes the same 6-row batches, so it is bounded by batch 8 as well; the tie goes to 8.
    assert batch_128.feasible and batch_128.predicted_p99_ms == pytest.approx(16.0)
    assert result.recommended is batch_8 and result.without_batching.replicas == 4


def test_part_full_batches_rule_an_option_out_when_the_replica_falls_behind() -> None:
    result = estimate(THREE_SIZES, qps=1000, p99_ms=100, utilisation=0.5, max_batch_wait_ms=10)
    batch_8 = result.batching_options[0]
    # 4 replicas at 250/s: batches leave after 10 ms with 3.5 rows; 250/s × 16 ms ÷ 3.5 = 1.14 > 0.5.
    assert not batch_8.feasible and batch_8.predicted_p99_ms == pytest.approx(30.0)
    assert any("= 1.14 > 0.50: falls behind, ruled out" in line for line in batch_8.arithmetic)
    assert result.recommended is result.without_batching


def test_explain_says_what_a_replica_is_and_shows_every_option() -> None:
    explanation = estimate(THREE_SIZES, qps=1000, p99_ms=200, utilisation=0.5, max_batch_wait_ms=100).explain()
    assert "A replica is one model-server process on cpu (2 threads); on a GPU profile, replicas = GPUs." in explanation
    assert "maxBatchSize 8:" in explanation and "maxBatchSize 32:" in explanation
    assert "throughput = 32 rows ÷ 40.00 ms (batch-32 p50) = 800.0 qps per replica" in explanation


# --- inputs ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"qps": 0}, "--qps must be > 0, got 0"),
        ({"qps": math.nan}, "--qps must be > 0, got nan"),
        ({"p99_ms": -5}, "--p99-ms must be > 0, got -5"),
        ({"utilisation": 0}, r"--utilisation must be in \(0, 1\], got 0"),
        ({"utilisation": 1.5}, r"--utilisation must be in \(0, 1\], got 1.5"),
        ({"max_batch_wait_ms": -1}, "--max-batch-wait-ms must be >= 0, got -1"),
    ],
)
def test_bad_inputs_name_the_flag(arguments: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        estimate(THREE_SIZES, **{"qps": 100, "p99_ms": 50, **arguments})


@pytest.mark.parametrize(
    ("batches", "message"),
    [
        (((8, 1.0, 2.0),), r"batch sizes must include 1 .*got \[8\]"),
        (((1, 1.0, 2.0), (1, 1.0, 2.0)), r"batch sizes must be distinct integers >= 1, got \[1, 1\]"),
        (((1, 0.0, 2.0),), "batch 1: p50_ms must be > 0, got 0.0"),
        (((1, 2.0, 1.0),), "batch 1: p99_ms must be >= p50_ms, got 1.0"),
    ],
)
def test_a_profile_that_cannot_be_estimated_from_is_refused(batches: tuple, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        profile(*batches)


# --- the profile file -----------------------------------------------------------------------


def test_a_profile_round_trips_through_its_json_file(tmp_path: Path) -> None:
    path = tmp_path / "profiles" / "taxi.json"
    save_profile(THREE_SIZES, path)
    assert load_profile(path) == THREE_SIZES
    assert [p.name for p in path.parent.iterdir()] == ["taxi.json"]
    written = json.loads(path.read_text())
    assert written["format_version"] == 1 and written["device"] == "cpu (2 threads)"
    assert written["batches"][0] == {"batch_size": 1, "p50_ms": 10.0, "p99_ms": 12.0}


def test_a_hand_written_profile_may_list_batches_in_any_order(tmp_path: Path) -> None:
    path = tmp_path / "gpu.json"
    batches = [{"batch_size": 64, "p50_ms": 3, "p99_ms": 4}, {"batch_size": 1, "p50_ms": 1, "p99_ms": 2}]
    path.write_text(json.dumps({"format_version": 1, "device": "1× L4 GPU", "source": "bench", "batches": batches}))
    assert [b.batch_size for b in load_profile(path).batches] == [1, 64]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"format_version": 2, "device": "cpu", "batches": []}', "format_version 2, this Slipway reads 1"),
        ('{"format_version": 1, "device": "cpu", "batches": []}', "missing field 'source'"),
        ("[1, 2]", "expected a JSON object, got list"),
        ("{not json", "not a latency profile"),
    ],
)
def test_a_bad_profile_file_is_named_in_the_error(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "profile.json"
    path.write_text(content)
    with pytest.raises(ValueError) as error:
        load_profile(path)
    assert str(error.value).startswith(f"{path}: not a latency profile") and message in str(error.value)


# --- measuring the real model ---------------------------------------------------------------


def test_measure_profile_times_the_real_taxi_model(taxi_model: Path, taxi_training_sets: tuple[Path, Path]) -> None:
    measured = measure_profile(taxi_model, pd.read_parquet(taxi_training_sets[1]), repeats=30)
    assert [b.batch_size for b in measured.batches] == [1, 8, 32, 128]
    assert all(0 < b.p50_ms <= b.p99_ms for b in measured.batches)
    batch_1, batch_128 = measured.batches[0], measured.batches[-1]
    assert batch_128.p50_ms / 128 < batch_1.p50_ms, "a row in a batch of 128 must cost less than a row alone"
    assert measured.device.startswith("cpu (") and str(taxi_model) in measured.source
    assert "replicas = ceil(500 qps × " in estimate(measured, qps=500, p99_ms=50).explain()


def test_measure_profile_cycles_rows_when_the_frame_is_smaller_than_a_batch(
    taxi_model: Path, taxi_training_sets: tuple[Path, Path]
) -> None:
    rows = pd.read_parquet(taxi_training_sets[1]).head(3)
    measured = measure_profile(taxi_model, rows, batch_sizes=(8, 1), repeats=3)
    assert [b.batch_size for b in measured.batches] == [1, 8]


def test_measure_profile_checks_its_arguments_before_loading_the_model(tmp_path: Path) -> None:
    rows = pd.DataFrame({"x": [1.0]})
    with pytest.raises(ValueError, match="batch sizes must include 1"):
        measure_profile(tmp_path / "no-model", rows, batch_sizes=(8, 32))
    with pytest.raises(ValueError, match="needs at least one row"):
        measure_profile(tmp_path / "no-model", rows.iloc[:0])
    with pytest.raises(ValueError, match="repeats must be >= 1, got 0"):
        measure_profile(tmp_path / "no-model", rows, repeats=0)
