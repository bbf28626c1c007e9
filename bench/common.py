"""What every benchmark reports the same way: the machine it ran on, and median with spread."""

import json
import os
import platform
import statistics
from pathlib import Path

from slipway.atomic import atomic_output

RESULTS = Path(__file__).resolve().parent / "results"


def summary(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "stdev": statistics.stdev(values) if len(values) > 1 else 0.0, "runs": values}


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()}


def write_results(name: str, results: dict, report: str) -> None:
    """Writes bench/results/<name>.json (the figures) and <name>.md (the report), each atomically; prints the report."""
    RESULTS.mkdir(exist_ok=True)
    with atomic_output(RESULTS / f"{name}.json") as temp:
        temp.write_text(json.dumps(results, indent=2) + "\n")
    with atomic_output(RESULTS / f"{name}.md") as temp:
        temp.write_text(report)
    print(report)
