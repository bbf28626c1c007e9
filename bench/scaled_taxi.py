"""Makes the scale benchmark's data: the taxi sample resampled to N trips over a proportionally longer span.

The 10,000 trips of data.csv cover four years (2013-2016). N trips are drawn from them with replacement
(fixed seed), each moved forward by a whole number of 208-week periods (so the weekday and, within days,
the month stay those of its trip time fields), chosen uniformly among N / 10,000 periods: the rows per
entity per day, and so the work per trip of the windows and the join, stay those of the sample. pandas'
nanosecond timestamps end in 2262, so at most 50 periods are used (200 years); beyond 500,000 trips the
data gets denser instead (10M trips: 20 times the sample's trips per day).

    python bench/scaled_taxi.py --rows 1000000            # -> bench/data/scale/taxi-1000000.csv

The CSV is written in chunks (bounded memory at any size) and atomically; an existing file is reused.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from slipway.atomic import atomic_output
from slipway.sample_data import fetch_sample

DATA = Path(__file__).resolve().parent / "data" / "scale"
PERIOD_S = 208 * 7 * 24 * 3600  # 208 weeks: about four years, weekdays kept
MAX_PERIODS = 50
CHUNK = 500_000


def scaled_sample(rows: int, out_dir: Path = DATA, seed: int = 0) -> Path:
    """The path of the N-trip CSV, made first if it is not there."""
    path = out_dir / f"taxi-{rows}.csv"
    if path.exists():
        return path
    sample = pd.read_csv(fetch_sample()["data.csv"])
    periods = max(1, min(MAX_PERIODS, rows // len(sample)))
    rng = np.random.default_rng(seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as temp:
        for start in range(0, rows, CHUNK):
            size = min(CHUNK, rows - start)
            chunk = sample.iloc[rng.integers(0, len(sample), size)].reset_index(drop=True)
            chunk["trip_start_timestamp"] += rng.integers(0, periods, size) * PERIOD_S
            chunk.to_csv(temp, mode="a", header=start == 0, index=False)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000, 10_000_000])
    args = parser.parse_args()
    for rows in args.rows:
        print(scaled_sample(rows))


if __name__ == "__main__":
    main()
