"""Each pipeline task imports only what its work needs.

A task is a fresh interpreter (`python -m kfp.dsl.executor_main`) that runs one component body, whose first lines
import what it calls. Feast (5-8 s), MLflow (2 s), torch (2 s), Optuna and the Kubernetes client cost a task their
import time whether it uses them or not; at the sample's size that was most of every task's time. Each test here
runs in a fresh interpreter, as a task does, and asserts which of those libraries are loaded.
"""

from __future__ import annotations

import ast
import inspect
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from slipway.components import catalog

HEAVY = ("feast", "mlflow", "torch", "optuna", "kubernetes", "sklearn")

# Calling a component's body outside a task: kfp's compile-time `dsl` loads the Kubernetes client by itself.
COMPONENTS = "from kfp import dsl\nfrom slipway.components.catalog import training_set, tune"

# The heavy libraries each component's body must not import: those its work never calls.
NOT_IMPORTED = {
    "ingest": HEAVY,
    "feature_tables": HEAVY,
    "feast_apply": ("mlflow", "torch", "optuna", "kubernetes", "sklearn"),  # it calls Feast, on demand
    "materialize": ("mlflow", "torch", "optuna", "kubernetes", "sklearn"),
    "training_set": HEAVY,
    "tune": HEAVY,  # the off tuner's imports; the others import theirs in their own branch
    "evaluate": ("feast", "mlflow", "optuna", "kubernetes"),
    "register": ("feast", "torch", "optuna", "kubernetes", "sklearn"),
    "promote": ("feast", "torch", "optuna", "kubernetes", "sklearn"),
    "champion": ("feast", "torch", "optuna", "kubernetes", "sklearn"),
    "retrain_trigger": HEAVY,
}


def body_imports(component: object) -> list[str]:
    """The import statements at the top level of a component's body, as source lines."""
    function = ast.parse(textwrap.dedent(inspect.getsource(component.python_func))).body[0]
    return [ast.unparse(node) for node in function.body if isinstance(node, (ast.Import, ast.ImportFrom))]


def heavy_loaded(code: str, setup: str = "") -> set[str]:
    """Runs `setup`, then `code`, in a fresh interpreter; the HEAVY libraries `code` loaded."""
    loaded = f"[name for name in {HEAVY!r} if name in sys.modules]"
    probe = "\n".join(["import json, sys", setup, f"before = {loaded}", code,
                       f"print(json.dumps(sorted(set({loaded}) - set(before))))"])
    answer = subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, text=True)
    return set(json.loads(answer.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize("name", sorted(NOT_IMPORTED))
def test_a_component_body_imports_none_of_the_heavy_libraries_its_work_does_not_call(name: str) -> None:
    imports = "\n".join(body_imports(getattr(catalog, name)))
    assert not heavy_loaded(imports) & set(NOT_IMPORTED[name]), imports


def test_the_training_set_step_joins_from_the_tables_without_importing_feast(
        taxi_splits: tuple[Path, Path], tmp_path: Path) -> None:
    """The step's whole work, the component body itself: the join reads the feature tables as feast_apply
    registers them, so the step needs neither Feast nor its registry."""
    splits, tables, features = [str(path) for path in taxi_splits], str(tmp_path / "tables"), tmp_path / "features.pq"
    code = textwrap.dedent(f"""
        from pathlib import Path
        from slipway.components.feature_aggregates import write_feature_tables
        from slipway.problem import load_problem

        write_feature_tables([Path(path) for path in {splits!r}], load_problem("chicago_taxi"), Path({tables!r}))
        training_set.python_func(trips=dsl.Dataset(uri={splits[0]!r}), tables=dsl.Artifact(uri={tables!r}),
                                 problem="chicago_taxi", features=dsl.Dataset(uri={str(features)!r}))
    """)
    assert "feast" not in heavy_loaded(code, setup=COMPONENTS)
    assert features.is_file()


def test_tune_with_the_tuner_off_hands_the_hyperparameters_on_and_imports_nothing_heavy(tmp_path: Path) -> None:
    code = textwrap.dedent(f"""
        chosen = tune.python_func(
            train_data=dsl.Dataset(uri="never-read.parquet"), problem="chicago_taxi", pipeline_root={str(tmp_path)!r},
            pipeline_run_id="run", trials=dsl.Markdown(uri={str(tmp_path / "trials.md")!r}),
            best_params=dsl.Metrics(uri={str(tmp_path / "best")!r}), tuner="off", hidden_units=[16], learning_rate=0.01)
        assert list(chosen[1]) == [16] and chosen[4] == 0.01, chosen
    """)
    assert not heavy_loaded(code, setup=COMPONENTS)
    assert "Tuning is off" in (tmp_path / "trials.md").read_text()


def test_feast_apply_and_materialize_load_feast_but_not_the_torch_it_would_import(
        taxi_splits: tuple[Path, Path], tmp_path: Path) -> None:
    """Feast 0.67 imports torch (2 s) for methods Slipway never calls; feature_store defers it to a call."""
    splits = [str(path) for path in taxi_splits]
    code = textwrap.dedent(f"""
        from datetime import datetime
        from pathlib import Path
        from slipway.components import feature_store
        from slipway.components.feature_aggregates import write_feature_tables
        from slipway.problem import load_problem

        problem = load_problem("chicago_taxi")
        tables = write_feature_tables([Path(path) for path in {splits!r}], problem, Path({str(tmp_path)!r}) / "tables")
        store = feature_store.open_store(feature_store.StoreConfig(repo_dir=Path({str(tmp_path)!r}) / "repo"), problem)
        feature_store.apply(store, problem, tables)
        feature_store.materialize(store, datetime(2015, 8, 1))
        found = feature_store.online_features(store, problem, {{"pickup_community_area": [8], "company": ["x"]}})
        assert found["pickup_community_area_stats__found"] == [True], found
    """)
    assert heavy_loaded(code) == {"feast"}
