"""The sample data set: real Chicago taxi trips, taken out of the `tfx` wheel on PyPI.

The TFX wheel ships the taxi CSVs as test data (DESIGN.md §5); PyPI is the only place this
machine may fetch from, so `fetch_sample` downloads that wheel (no dependencies), extracts the
two CSVs, checks their sha256 and caches them under `data/chicago_taxi/`. A cached file with
the right digest is never fetched again.
"""

import hashlib
import logging
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from slipway.atomic import atomic_output
from slipway.storage import sha256_of

log = logging.getLogger(__name__)

TFX_WHEEL = "tfx==1.21.0"
MEMBER_DIR = "tfx/components/testdata/external/csv"
# File name -> sha256 of the CSV as shipped in tfx 1.21.0.
SAMPLE_FILES = {
    "data.csv": "f547ba630a9ab57915977f3e79b8352fadad72eb562cdf0796983b759b1851fb",   # 10,000 trips
    "data2.csv": "1b6e7c7d8495f0f1d1d2611f40e3fb161009262e19aab43e541019e376f5278f",  # 5,000 trips
}
DEFAULT_DATA_DIR = Path("data/chicago_taxi")


class SampleDataError(RuntimeError):
    """The sample could not be fetched or does not match its recorded digest."""


def is_cached(data_dir: Path = DEFAULT_DATA_DIR) -> bool:
    return all((data_dir / name).is_file() and sha256_of(data_dir / name) == digest
               for name, digest in SAMPLE_FILES.items())


def fetch_sample(data_dir: Path = DEFAULT_DATA_DIR) -> dict[str, Path]:
    """Ensures the sample CSVs are in `data_dir`, verified; returns {file name: path}."""
    paths = {name: data_dir / name for name in SAMPLE_FILES}
    if is_cached(data_dir):
        log.info("sample data already in %s", data_dir)
        return paths
    with tempfile.TemporaryDirectory(prefix="slipway-sample-") as tmp:
        log.info("downloading %s from PyPI (no dependencies) for its taxi CSVs", TFX_WHEEL)
        result = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
             "--dest", tmp, TFX_WHEEL],
            capture_output=True, text=True,
        )
        wheels = list(Path(tmp).glob("tfx-*.whl"))
        if result.returncode != 0 or not wheels:
            raise SampleDataError(f"pip download {TFX_WHEEL} failed: {result.stderr.strip()[-2000:]}")
        with zipfile.ZipFile(wheels[0]) as wheel:
            for name, expected in SAMPLE_FILES.items():
                member = f"{MEMBER_DIR}/{name}"
                content = wheel.read(member)
                actual = hashlib.sha256(content).hexdigest()
                if actual != expected:
                    raise SampleDataError(f"{member} in {wheels[0].name} has sha256 {actual}, expected {expected}")
                with atomic_output(paths[name]) as temp:
                    temp.write_bytes(content)
                log.info("wrote %s (sha256 verified)", paths[name])
    return paths
