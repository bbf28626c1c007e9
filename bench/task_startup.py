"""Benchmark: what each pipeline task pays before its work starts, the imports of its component's body.

A kfp.local task (and a Kubeflow pod) is a fresh `python -m kfp.dsl.executor_main` process that imports kfp,
then runs the component's body, whose first lines import what it calls. This times exactly that in a fresh
interpreter per component: `import kfp.dsl.executor_main` followed by the body's own top-level import statements
(`body_imports`), and lists which heavy libraries they load. `kfp` alone is the floor every task pays. Imports a
body's work makes later, on demand (Feast in feast_apply, torch when evaluate loads the model), are not counted:
`PYTHONPROFILEIMPORTTIME=1 slipway run ...` shows them per task.

    python bench/task_startup.py [--repeats 5] [--components ingest tune ...]

Writes bench/results/task_startup.json and .md: per component the median and spread of the start-up, and the
heavy libraries in `sys.modules` after its imports, with the machine.
"""

from __future__ import annotations

import argparse
import ast
import inspect
import json
import os
import subprocess
import sys
import textwrap
import time

from common import machine, summary, write_results

from slipway.components import catalog

# The libraries that cost seconds to import, or that a task should touch only when its work calls them.
HEAVY = ("feast", "mlflow", "torch", "optuna", "kubernetes", "sklearn", "matplotlib", "duckdb", "pandas",
         "kserve", "tensorflow", "transformers")
FLOOR = "kfp"  # the name of the row that imports kfp alone


def body_imports(component: object) -> list[str]:
    """The import statements at the top level of a component's body, as source lines, in order."""
    source = textwrap.dedent(inspect.getsource(component.python_func))
    function = ast.parse(source).body[0]
    return [ast.unparse(node) for node in function.body if isinstance(node, (ast.Import, ast.ImportFrom))]


def components() -> dict[str, object]:
    return {name: value for name, value in vars(catalog).items() if hasattr(value, "python_func")}


def probe(imports: list[str]) -> tuple[float, list[str]]:
    """Seconds a fresh interpreter takes to start, import kfp and run `imports`; the heavy libraries loaded."""
    code = "\n".join(["import sys", "import kfp.dsl.executor_main", *imports,
                      f"print(sorted(name for name in {HEAVY!r} if name in sys.modules))"])
    started = time.perf_counter()
    answer = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True,
                            env={**os.environ, "_KFP_RUNTIME": "true"})
    return time.perf_counter() - started, json.loads(answer.stdout.strip().replace("'", '"'))


def report(results: dict) -> str:
    lines = ["# Task start-up: kfp and each component body's imports, in a fresh interpreter", "",
             f"Machine: {results['machine']['cpu']}, {results['machine']['cores']} cores; "
             f"load before {results['load_before']}, after {results['load_after']}; "
             f"{results['repeats']} runs each.", "",
             "| component | start-up s (median) | min–max | heavy libraries loaded |", "|---|---:|---:|---|"]
    for name, row in results["components"].items():
        seconds = row["seconds"]
        lines.append(f"| {name} | {seconds['median']:.2f} | {seconds['min']:.2f}–{seconds['max']:.2f} | "
                     f"{', '.join(row['heavy']) or '-'} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--components", nargs="*", help="component names (default: all of the catalog)")
    args = parser.parse_args()
    found = components()
    names = args.components or list(found)
    unknown = sorted(set(names) - set(found))
    if unknown:
        parser.error(f"--components: {unknown} are not in components/catalog.py; it has {sorted(found)}")
    rows = {FLOOR: []} | {name: body_imports(found[name]) for name in names}
    load_before = os.getloadavg()[0]
    measured = {}
    for name, imports in rows.items():
        times, heavy = [], []
        for _ in range(args.repeats):
            seconds, heavy = probe(imports)
            times.append(seconds)
        measured[name] = {"seconds": summary(times), "heavy": heavy, "imports": imports}
    results = {"machine": machine(), "repeats": args.repeats, "load_before": round(load_before, 2),
               "load_after": round(os.getloadavg()[0], 2), "components": measured}
    write_results("task_startup", results, report(results))


if __name__ == "__main__":
    main()
