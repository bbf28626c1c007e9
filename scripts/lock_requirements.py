"""Resolves a runtime's `requirements/<runtime>.in` into a fully pinned `requirements/<runtime>.txt`.

One lock per runtime (DESIGN.md §3): the local environment that `make` builds and the runtime's
Dockerfile both install exactly this file. Resolution uses pip's own resolver (`--dry-run --report`),
so the lock is what pip would install here, with nothing installed while locking.

    python scripts/lock_requirements.py core            # requirements/core.in -> core.txt
    python scripts/lock_requirements.py test --constraint requirements/core.txt
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

REQUIREMENTS = Path(__file__).resolve().parent.parent / "requirements"


def resolve(requirements_in: Path, constraints: list[Path]) -> dict[str, str]:
    """Returns {name: version} of everything pip would install for `requirements_in`."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        command = [sys.executable, "-m", "pip", "install", "--quiet", "--dry-run", "--ignore-installed",
                   "--report", str(report), "-r", str(requirements_in)]
        for constraint in constraints:
            command += ["-c", str(constraint)]
        subprocess.run(command, check=True)
        installs = json.loads(report.read_text())["install"]
    return {normalize(item["metadata"]["name"]): item["metadata"]["version"] for item in installs}


def normalize(name: str) -> str:
    """The PEP 503 form of a project name (`kubeflow_katib_api` -> `kubeflow-katib-api`)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def write_lock(runtime: str, pins: dict[str, str], skip: set[str]) -> Path:
    lock = REQUIREMENTS / f"{runtime}.txt"
    lines = [
        f"# The pinned `{runtime}` runtime. Generated from requirements/{runtime}.in by",
        f"# `python scripts/lock_requirements.py {runtime}`: do not edit by hand.",
    ]
    lines += [f"{name}=={version}" for name, version in sorted(pins.items()) if name not in skip]
    tmp = lock.with_suffix(".txt.tmp")
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, lock)
    return lock


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runtime", help="name of requirements/<runtime>.in")
    parser.add_argument("--constraint", type=Path, action="append", default=[],
                        help="a lock this runtime installs on top of; its pins are kept and not repeated")
    args = parser.parse_args()
    already_locked: set[str] = set()
    for constraint in args.constraint:
        already_locked |= {normalize(line.split("==")[0]) for line in constraint.read_text().splitlines()
                           if "==" in line and not line.startswith("#")}
    pins = resolve(REQUIREMENTS / f"{args.runtime}.in", args.constraint)
    print(write_lock(args.runtime, pins, skip=already_locked))


if __name__ == "__main__":
    main()
