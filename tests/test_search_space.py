"""One search-space definition for Katib and Optuna: what it accepts, and each broken space refused by name."""

from pathlib import Path

import pytest
import yaml

from slipway.components.search_space import (
    SEARCH_SPACES_DIR,
    SearchSpaceError,
    load_search_space,
    parse_search_space,
)
from slipway.components.train_config import TrainConfig


def default_raw() -> dict:
    return yaml.safe_load((SEARCH_SPACES_DIR / "default.yaml").read_text())


def test_the_default_space_searches_the_optimiser_and_the_network_shape() -> None:
    space = load_search_space()
    assert [p.name for p in space.parameters] == ["learning_rate", "weight_decay", "dropout", "batch_size",
                                                 "hidden_units"]
    learning_rate = space.parameters[0]
    assert (learning_rate.type, learning_rate.min, learning_rate.max, learning_rate.log) == ("double", 3e-4, 0.03, True)
    assert (space.objective.metric, space.objective.direction) == ("eval_auc", "maximize")
    assert (space.algorithm.name, space.budget.max_trials, space.budget.parallel_trials) == ("tpe", 20, 2)
    assert space.early_stopping is not None and space.early_stopping.algorithm == "medianstop"


def test_an_assignment_becomes_the_trials_train_config_and_the_rest_keeps_its_defaults() -> None:
    config = load_search_space().train_config({"learning_rate": "0.01", "weight_decay": 1e-5, "dropout": "0.25",
                                               "batch_size": "512", "hidden_units": "128 64 32"})
    assert config == TrainConfig(learning_rate=0.01, weight_decay=1e-5, dropout=0.25, batch_size=512,
                                 hidden_units=(128, 64, 32))


def test_katibs_string_assignments_come_back_as_the_values_the_space_lists() -> None:
    space = load_search_space()
    typed = space.typed({"learning_rate": "0.0123", "weight_decay": "1e-05", "dropout": "0.1", "batch_size": "256",
                         "hidden_units": "128 64"})
    assert typed == {"learning_rate": 0.0123, "weight_decay": 1e-05, "dropout": 0.1, "batch_size": 256,
                     "hidden_units": "128 64"}
    assert isinstance(typed["batch_size"], int)
    with pytest.raises(SearchSpaceError, match=r"batch_size='300' is not one of \[128, 256, 512\]"):
        space.typed({**typed, "batch_size": "300"})
    with pytest.raises(SearchSpaceError, match=r"has no value for \['dropout'\]"):
        space.typed({k: str(v) for k, v in typed.items() if k != "dropout"})


def test_a_smaller_budget_keeps_parallel_and_failed_trials_within_it() -> None:
    budget = load_search_space().with_max_trials(1).budget
    assert (budget.max_trials, budget.parallel_trials, budget.max_failed_trials) == (1, 1, 1)


def test_a_space_file_can_be_given_by_path(tmp_path: Path) -> None:
    raw = default_raw() | {"algorithm": {"name": "random", "settings": {"random_state": 7}}}
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert load_search_space(str(path)).algorithm.settings == {"random_state": 7}


def test_an_unknown_space_name_lists_the_packaged_ones() -> None:
    with pytest.raises(SearchSpaceError, match=r"search space 'wide': no such file .* packaged ones are \['default'\]"):
        load_search_space("wide")


def test_a_grid_visits_every_step_of_a_range() -> None:
    raw = default_raw() | {"algorithm": {"name": "grid"},
                           "parameters": {"dropout": {"type": "double", "min": 0.0, "max": 0.3, "step": 0.1},
                                          "batch_size": {"type": "int", "min": 128, "max": 512, "step": 128}}}
    dropout, batch_size = parse_search_space(raw, "space.yaml").parameters
    assert dropout.grid() == (0.0, 0.1, 0.2, 0.3) and batch_size.grid() == (128, 256, 384, 512)


@pytest.mark.parametrize(("change", "expected"), [
    ({"parameters": {"dropout": {"type": "categorical", "values": []}}},
     "parameters.dropout.values: the feasible space is empty"),
    ({"parameters": {"learning_rate": {"type": "double", "min": 0.1, "max": 0.01}}},
     "parameters.learning_rate: the feasible space is empty: min 0.1 must be less than max 0.01"),
    ({"parameters": {"momentum": {"type": "double", "min": 0.1, "max": 0.9}}},
     "parameters.momentum: 'momentum' is not a training option a trial can set"),
    ({"parameters": {"seed": {"type": "int", "min": 0, "max": 9}}},
     "parameters.seed: 'seed' is not a training option a trial can set"),
    ({"parameters": {"dropout": {"type": "float", "min": 0.0, "max": 0.5}}},
     "parameters.dropout.type: 'float' is not one of ['double', 'int', 'categorical', 'discrete']"),
    ({"parameters": {"dropout": {"type": "double", "min": 0.0, "max": 1.5}}},
     "parameters.dropout: 1.5 is not a valid dropout: dropout must be in [0, 1)"),
    ({"parameters": {"learning_rate": {"type": "double", "min": 0.0, "max": 0.1, "log": True}}},
     "parameters.learning_rate.log: a log scale needs min > 0, got min 0.0"),
    ({"parameters": {"batch_size": {"type": "int", "min": 64.5, "max": 512}}},
     "parameters.batch_size.min: expected a whole number, got 64.5"),
    ({"parameters": {"hidden_units": {"type": "categorical", "values": ["64 32", "0"]}}},
     "parameters.hidden_units.values: '0' is not a valid hidden_units"),
    ({"algorithm": {"name": "genetic"}},
     "algorithm.name: 'genetic' is not one of ['random', 'grid', 'tpe', 'bayesianoptimization', 'hyperband']"),
    ({"algorithm": {"name": "grid"}},
     "parameters.learning_rate.step: grid search needs a step for every range"),
    ({"algorithm": {"name": "tpe", "settings": {"gamma": 1.5}}},
     "algorithm.settings.gamma: expected a number in (0, 1), got 1.5"),
    ({"algorithm": {"name": "random", "settings": {"n_EI_candidates": 24}}},
     "algorithm.settings.n_EI_candidates: random takes no setting 'n_EI_candidates'; it takes ['random_state']"),
    ({"algorithm": {"name": "hyperband", "settings": {"r_l": 9}}},
     "algorithm.settings.resource_name: hyperband needs the name of its resource parameter"),
    ({"objective": {"metric": "accuracy"}},
     "objective.metric: 'accuracy' is not a metric the trainer reports ('eval_auc',)"),
    ({"objective": {"direction": "up"}}, "objective.direction: 'up' is not one of ['maximize', 'minimize']"),
    ({"budget": {"max_trials": 4, "parallel_trials": 8}},
     "budget.parallel_trials: 8 is more than budget.max_trials 4"),
    ({"budget": {"max_trials": 0}}, "budget.max_trials: expected a whole number of at least 1, got 0"),
    ({"early_stopping": {"algorithm": "truncation"}},
     "early_stopping.algorithm: 'truncation' is not one of ['medianstop']"),
    ({"trials": 20}, "(top level): unknown key(s) ['trials']"),
])
def test_a_broken_space_fails_before_anything_runs_naming_the_file_and_field(change: dict, expected: str) -> None:
    with pytest.raises(SearchSpaceError) as caught:
        parse_search_space(default_raw() | change, "space.yaml")
    assert str(caught.value).startswith(f"space.yaml: {expected}")
