"""PSI: quantile bins of the reference, ties merged, open-ended outer bins, an epsilon for empty bins, the bands."""

from __future__ import annotations

import math

import numpy as np
import pytest

from slipway.psi import EPSILON, psi, psi_level


def test_a_sample_against_itself_or_its_shuffle_is_zero() -> None:
    scores = np.random.default_rng(0).beta(2, 5, size=1000)
    assert psi(scores, scores) == 0.0
    assert psi(scores, np.random.default_rng(1).permutation(scores)) == 0.0


def test_two_samples_of_one_distribution_stay_within_sampling_noise() -> None:
    rng = np.random.default_rng(0)
    value = psi(rng.normal(size=5000), rng.normal(size=5000))
    # PSI * n_eff ~ chi-squared(9): mean 9 / 2500 = 0.0036; 99th percentile 21.7 / 2500 = 0.009
    assert 0 < value < 0.01
    assert psi_level(value) == "none"


def test_a_known_shift_matches_the_value_worked_out_by_hand() -> None:
    # expected 1..8 in 4 bins: quartile edges 2.75, 4.5, 6.25 -> bins {1,2} {3,4} {5,6} {7,8}, 1/4 each.
    # actual puts 1/2, 1/4, 1/8, 1/8 in them:
    # (1/2 - 1/4) ln 2 + 0 + 2 (1/8 - 1/4) ln(1/2) = (1/4 + 1/4) ln 2 = ln 2 / 2
    value = psi([1, 2, 3, 4, 5, 6, 7, 8], [1, 1, 1, 1, 3, 3, 5, 7], bins=4)
    assert value == pytest.approx(math.log(2) / 2, abs=1e-12)
    assert psi_level(value) == "critical"


def test_values_outside_the_expected_range_land_in_the_outer_bins() -> None:
    # -100 and 0 join the first bin, 9 and 100 the last: two per bin, as expected.
    assert psi([1, 2, 3, 4, 5, 6, 7, 8], [-100, 0, 3, 4, 5, 6, 9, 100], bins=4) == 0.0
    # A whole sample beyond the range piles into the last bin: critical, not lost.
    assert psi_level(psi(range(100), range(1000, 1100))) == "critical"


def test_an_emptied_bin_is_floored_at_epsilon_and_stays_finite() -> None:
    # Everything in the first quartile bin: shares 1, 0, 0, 0 against 1/4 each.
    value = psi([1, 2, 3, 4, 5, 6, 7, 8], [1, 1, 2, 2, 1, 2, 1, 2], bins=4)
    by_hand = (1 - 0.25) * math.log(1 / 0.25) + 3 * (EPSILON - 0.25) * math.log(EPSILON / 0.25)
    assert value == pytest.approx(by_hand, rel=1e-12)
    assert math.isfinite(value)


def test_tied_quantile_edges_are_merged_and_the_tied_mass_is_one_bin() -> None:
    # 70 zeros and 1..30: the deciles up to 0.6 are all 0, then 0.3, 10.2, 20.1, so the bins are
    # {0} 70%, (0, 0.3] empty, 1..10 10%, 11..20 10%, 21..30 10%.
    expected = np.concatenate([np.zeros(70), np.arange(1, 31)])
    assert psi(expected, np.random.default_rng(0).permutation(expected)) == 0.0
    # 85 zeros and the 15 odd numbers: 85%, empty, 5%, 5%, 5%.
    actual = np.concatenate([np.zeros(85), np.arange(1, 31, 2)])
    by_hand = 0.15 * math.log(0.85 / 0.70) + 3 * (-0.05) * math.log(0.5)
    assert psi(expected, actual) == pytest.approx(by_hand, abs=1e-12)
    assert psi_level(by_hand) == "warning"


def test_constant_scores_are_two_bins_at_most_and_above_the_value() -> None:
    assert psi([0.5] * 100, [0.5] * 100) == 0.0
    assert psi([0.5] * 100, [0.4] * 100) == 0.0  # at most 0.5, as expected
    assert psi_level(psi([0.5] * 100, [0.7] * 100)) == "critical"


@pytest.mark.parametrize(
    ("expected", "actual", "message"),
    [
        ([], [1.0], "PSI needs a non-empty expected sample"),
        ([1.0], [], "PSI needs a non-empty actual sample"),
        ([1.0, float("nan")], [1.0], "the expected sample holds 1 NaN or infinite values"),
        ([1.0], [float("inf"), 2.0], "the actual sample holds 1 NaN or infinite values"),
    ],
)
def test_degenerate_samples_are_refused_with_a_clear_error(expected: list[float], actual: list[float],
                                                           message: str) -> None:
    with pytest.raises(ValueError, match=f"^{message}$"):
        psi(expected, actual)


def test_fewer_than_two_bins_is_refused() -> None:
    with pytest.raises(ValueError, match="PSI needs at least 2 bins, got 1"):
        psi([1, 2], [1, 2], bins=1)


@pytest.mark.parametrize(
    ("value", "level"),
    [(0.0, "none"), (0.0999, "none"), (0.1, "warning"), (0.15, "warning"), (0.2, "warning"), (0.2001, "critical"),
     (3.0, "critical")],
)
def test_levels_follow_the_usual_bands(value: float, level: str) -> None:
    assert psi_level(value) == level


@pytest.mark.parametrize("value", [-0.01, float("nan"), float("inf")])
def test_a_value_that_is_no_psi_has_no_level(value: float) -> None:
    with pytest.raises(ValueError, match="PSI is a finite number >= 0"):
        psi_level(value)
