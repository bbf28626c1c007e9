"""Benchmark: drift on the real sample, and on 1M rows, against alibi-detect's TabularDrift alone.

1. The real data (`real`), as the drift issue asks: data.csv against data2.csv, against a deliberate
   shift of itself (fares x1.5, companies drawn evenly), and against a resample of itself; the level
   and the three features with the largest PSI of each.
2. 1M rows x the taxi problem's 14 features (`1m`; 7 numeric, 7 categorical): a reference resampled
   from data.csv and a current batch resampled from its shifted copy.
   `components.drift_detection.detect_drift` (PSI in core, KS/Chi-squared per feature from alibi-detect
   in the drift runtime, MMD off) is timed as a whole and by part: PSI (computed in core while the
   runtime starts), the runtime's import of alibi-detect's tabular tests, the wait for the two Parquet
   files that the runtime reads while it imports, the tests. What PSI + KS/Chi-squared cost is the
   whole call less the same call on 1,000 rows a side: the start-up every call pays, whatever the data.
   Each run also counts the CPU seconds of both processes, and the load average when it started: the
   machine may be shared, and CPU time is what a busy machine does not inflate much.
3. The baseline, in the same runs, alternating with the whole call: alibi-detect's `TabularDrift`
   alone over all 14 columns (complete rows, categorical codes), fit and predict, in the drift
   environment (bench/drift_tabular_baseline.py).
4. Where the drift runtime's start-up goes (`imports`): `python -X importtime` of what the tests import
   now, and of `import alibi_detect.cd` (what the drift step imported before, and what MMD still pays),
   summed per top-level package.
5. MMD (`mmd`), separately, on samples of 1,000 and 5,000 rows a side (100 permutations).

    python bench/drift.py [--rows 1000000] [--repeats 3] [--parts real 1m imports mmd]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import resource
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from common import RESULTS, machine, summary, write_results

from slipway import logs, runtimes
from slipway.components.drift_detection import DriftConfig, DriftReport, detect_drift, drift_table
from slipway.problem import load_problem
from slipway.sample_data import fetch_sample

BASELINE = Path(__file__).resolve().parent / "drift_tabular_baseline.py"
PARTS = ("real", "1m", "imports", "mmd")
# What the drift step's tests import now, and what it imported before (and MMD still does).
IMPORTS = {"tests": "from slipway.components.drift_detectors import TABULAR, alibi_module; alibi_module(TABULAR)",
           "alibi_detect.cd": "import alibi_detect.cd"}


def shifted(frame: pd.DataFrame, seed: int) -> pd.DataFrame:
    """Fares 1.5 times higher, and every trip's company drawn evenly from the companies seen."""
    out = frame.copy()
    out["fare"] = out["fare"] * 1.5
    companies = out["company"].dropna().unique()
    out["company"] = pd.array(np.random.default_rng(seed).choice(companies, size=len(out)), dtype="string")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows of the reference and of the current batch")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS), help="what to measure (all)")
    args = parser.parse_args()
    logs.configure()
    problem = load_problem()
    numeric, categorical = problem.features.numeric, problem.features.categorical
    # Measuring some parts keeps the other parts' figures from the previous run.
    previous = RESULTS / "drift.json"
    results: dict = json.loads(previous.read_text()) if set(args.parts) != set(PARTS) and previous.is_file() else {}
    results |= {"machine": machine(), "rows": args.rows, "features": {"numeric": len(numeric),
                                                                     "categorical": len(categorical)}}
    with tempfile.TemporaryDirectory(prefix="slipway-bench-drift-") as tmp:
        workdir = Path(tmp)
        sample = fetch_sample()
        reference = drift_table(str(sample["data.csv"]), problem, workdir / "data.parquet", "reference")
        base = pd.read_parquet(reference)
        if "real" in args.parts:
            currents = {
                "data2.csv": drift_table(str(sample["data2.csv"]), problem, workdir / "data2.parquet", "current"),
                "shifted (fare x1.5, even companies)": _write(shifted(base, 1), workdir / "shifted.parquet"),
                "resample of data.csv": _write(base.sample(n=len(base), replace=True, random_state=2),
                                               workdir / "resample.parquet"),
            }
            results["real"] = {}
            for name, current in currents.items():
                report = detect_drift(reference, current, numeric, categorical, DriftConfig(mmd_sample_rows=1000))
                results["real"][name] = _summary_of(report)
        if "imports" in args.parts:
            results["imports"] = {name: import_profile(statement) for name, statement in IMPORTS.items()}
        if "1m" not in args.parts and "mmd" not in args.parts:
            write_results("drift", results, markdown(results))
            return
        big_ref = _write(base.sample(n=args.rows, replace=True, random_state=10), workdir / "ref-1m.parquet")
        big_cur = _write(shifted(base, 11).sample(n=args.rows, replace=True, random_state=11),
                         workdir / "cur-1m.parquet")
        if "1m" in args.parts:
            results |= big_data(base, big_ref, big_cur, numeric, categorical, workdir, args.repeats)
        if "mmd" in args.parts:
            results["mmd"] = {}
            for rows in (1000, 5000):
                times, imports = [], []
                for _ in range(args.repeats):
                    report = detect_drift(big_ref, big_cur, numeric, categorical, DriftConfig(mmd_sample_rows=rows))
                    times.append(report.seconds["tests_mmd"])
                    imports.append(report.seconds["tests_mmd_import"])
                results["mmd"][str(rows)] = {**summary(times), "p_value": report.mmd.p_value,
                                             "import": summary(imports)}
    write_results("drift", results, markdown(results))


def big_data(base: pd.DataFrame, big_ref: Path, big_cur: Path, numeric: tuple[str, ...],
             categorical: tuple[str, ...], workdir: Path, repeats: int) -> dict:
    """The whole call on 1M rows a side by part, its start-up (the same call on 1,000 rows), and TabularDrift alone,
    alternating with the whole call so that both meet the same load."""
    # The fixed cost of a call, whatever the data: the drift runtime starting and importing its tests, timed as a
    # whole call on 1,000 rows a side. What 1M rows cost is the difference.
    small_ref = _write(base.sample(n=1000, random_state=12), workdir / "ref-1k.parquet")
    small_cur = _write(shifted(base, 13).sample(n=1000, random_state=13), workdir / "cur-1k.parquet")
    startups = []
    for _ in range(repeats):
        started = time.perf_counter()
        detect_drift(small_ref, small_cur, numeric, categorical, DriftConfig(mmd_sample_rows=0))
        startups.append(time.perf_counter() - started)
    startup = statistics.median(startups)
    runs, baseline = [], []
    for _ in range(repeats):
        load, cpu, started = os.getloadavg()[0], _cpu_seconds(), time.perf_counter()
        report = detect_drift(big_ref, big_cur, numeric, categorical, DriftConfig(mmd_sample_rows=0))
        wall, cpu = time.perf_counter() - started, _cpu_seconds() - cpu
        s = report.seconds
        runs.append({"psi": s["psi"], "tests_read": s["tests_read"], "tests_univariate": s["tests_univariate"],
                     "import": s["tests_import"], "after_startup": wall - startup, "boundary": s["tests"],
                     "wall": wall, "cpu": cpu, "load": load, "level": report.level})
        load = os.getloadavg()[0]
        baseline.append({**json.loads(subprocess.run(
            [str(runtimes.local_python(runtimes.DRIFT)), str(BASELINE), str(big_ref), str(big_cur), ",".join(numeric),
             ",".join(categorical)], check=True, capture_output=True, text=True).stdout), "load": load})
    ours = {key: summary([r[key] for r in runs]) for key in runs[0] if key != "level"}
    ours["level"] = runs[0]["level"]
    ours["ratio"] = summary([r["wall"] / b["total"] for r, b in zip(runs, baseline, strict=True)])
    tabular = {key: summary([b[key] for b in baseline]) for key in baseline[0] if isinstance(baseline[0][key], float)}
    tabular["rows_used"] = baseline[0]["rows_used"]
    return {"startup": summary(startups), "slipway": ours, "tabular_drift": tabular}


def _cpu_seconds() -> float:
    """CPU seconds (user + system) of this process and of the children it has waited for (the drift runtime)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def import_profile(statement: str) -> dict:
    """`python -X importtime -c statement` in the drift environment: its wall time, and the import time of each
    top-level package (the sum of its modules' own times), the 12 largest."""
    started = time.perf_counter()
    stderr = subprocess.run([str(runtimes.local_python(runtimes.DRIFT)), "-X", "importtime", "-c", statement],
                            check=True, capture_output=True, text=True).stderr
    wall = time.perf_counter() - started
    packages: collections.Counter[str] = collections.Counter()
    for own_us, name in re.findall(r"^import time:\s+(\d+) \|\s+\d+ \|\s*(\S+)$", stderr, re.M):
        packages[name.split(".")[0]] += int(own_us) / 1e6
    return {"wall": wall, "imports": sum(packages.values()), "packages": dict(packages.most_common(12))}


def _write(frame: pd.DataFrame, path: Path) -> Path:
    frame.reset_index(drop=True).to_parquet(path, index=False)
    return path


def _summary_of(report: DriftReport) -> dict:
    top = [f for f in report.ranked() if f.psi is not None][:3]
    return {"level": report.level, "rows": report.current_rows,
            "levels": {f.feature: f.level for f in report.features},
            "top": [{"feature": f.feature, "psi": f.psi, "p_corrected": f.p_value_corrected, "level": f.level}
                    for f in top],
            "mmd_p_value": report.mmd.p_value if report.mmd else None}


def markdown(results: dict) -> str:
    m, rows = results["machine"], results["rows"]

    def span(stat: dict) -> str:
        return f"**{stat['median']:.2f} s** ({stat['min']:.2f}–{stat['max']:.2f})"

    lines = [
        "# Drift: the real sample, and 1M rows against alibi-detect's TabularDrift", "",
        f"Machine: {m['cpu']}, {m['cores']} cores, Python {m['python']}. Levels: PSI band when the corrected "
        "(Bonferroni) KS/Chi-squared test is significant at 0.05, else none; overall = worst feature.", "",
    ]
    if "real" in results:
        lines += ["## The real data (data.csv as the reference, 10,000 trips)", "",
                  "| current | rows | level | largest PSI (corrected p, level) | MMD p (1,000 rows) |",
                  "|---|---|---|---|---|"]
        for name, r in results["real"].items():
            top = "; ".join(f"{t['feature']} {t['psi']:.3f} ({t['p_corrected']:.2g}, {t['level']})" for t in r["top"])
            lines.append(f"| {name} | {r['rows']:,} | **{r['level']}** | {top} | {r['mmd_p_value']:.3g} |")
        lines.append("")
    if "slipway" in results:
        ours, base = results["slipway"], results["tabular_drift"]
        lines += [
            f"## {rows:,} rows a side, 14 features (median and range of {len(ours['wall']['runs'])} runs)", "",
            f"- **The whole `detect_drift` call: {span(ours['wall'])}, against {span(base['total'])} for "
            f"alibi-detect's `TabularDrift` alone** in the same runs (the call / TabularDrift: "
            f"{ours['ratio']['median']:.2f}, {ours['ratio']['min']:.2f}–{ours['ratio']['max']:.2f}). CPU seconds, "
            f"which a shared machine inflates less: the call {span(ours['cpu'])} (both processes), TabularDrift "
            f"{span(base['cpu'])}. Load average (1 min) when the runs started: "
            f"{', '.join(f'{x:.1f}' for x in ours['load']['runs'])}. Level: "
            f"{ours['level']}.",
            f"- `TabularDrift` alone: one detector over all 14 columns ({base['rows_used']:,} complete rows a side, "
            f"categorical codes prepared beforehand, its import and the reads not timed): fit {span(base['fit'])}, "
            f"predict {span(base['predict'])}. The call tests each feature on all its values (up to {rows:,} a side).",
            f"- Its parts: PSI of every feature in core {span(ours['psi'])}, computed while the drift runtime starts; "
            f"in the runtime, importing alibi-detect's tabular tests {span(ours['import'])}, then waiting for the two "
            f"Parquet files it reads meanwhile {span(ours['tests_read'])}, and the KS/Chi-squared tests of every "
            f"feature, two at a time {span(ours['tests_univariate'])}.",
            f"- PSI + KS/Chi-squared, what {rows:,} rows a side cost beyond a call's start-up: "
            f"{span(ours['after_startup'])}: the whole call less the whole call on 1,000 rows "
            f"({span(results['startup'])}, mostly the drift runtime starting and importing pandas, scipy and "
            f"alibi-detect's tabular tests).", "",
        ]
    if "imports" in results:
        lines += ["## The drift runtime's imports (`python -X importtime`, seconds per top-level package)", "",
                  "| statement | process wall | imports | largest packages |", "|---|---|---|---|"]
        for name, profile in results["imports"].items():
            largest = ", ".join(f"{package} {seconds:.2f}" for package, seconds in
                                list(profile["packages"].items())[:7])
            lines.append(f"| `{IMPORTS[name]}` | {profile['wall']:.2f} s | {profile['imports']:.2f} s | {largest} |")
        lines.append("")
    if "mmd" in results:
        lines += ["## MMD (multivariate, 100 permutations, PyTorch on CPU)", ""]
        for sample, stat in results["mmd"].items():
            lines.append(f"- {int(sample):,} rows a side: {span(stat)}, p = {stat['p_value']:.3g}" + (
                f"; before it, importing MMD's module (torch) {span(stat['import'])}" if "import" in stat else ""))
    return "\n".join(lines).rstrip("\n") + "\n"


if __name__ == "__main__":
    main()
