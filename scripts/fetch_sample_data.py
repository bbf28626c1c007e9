"""Fetches the Chicago taxi sample (from the tfx wheel on PyPI) into data/chicago_taxi/, verified.

    python scripts/fetch_sample_data.py [--data-dir data/chicago_taxi]
"""

import argparse
from pathlib import Path

from slipway import logs
from slipway.sample_data import DEFAULT_DATA_DIR, fetch_sample


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="where to cache the CSVs")
    args = parser.parse_args()
    logs.configure()
    for path in fetch_sample(args.data_dir).values():
        print(path)


if __name__ == "__main__":
    main()
