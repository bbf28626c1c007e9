"""The sample is trusted only when its bytes match the digests recorded for tfx 1.21.0."""

import shutil
from pathlib import Path

from slipway.sample_data import SAMPLE_FILES, is_cached
from slipway.storage import sha256_of


def test_the_cached_sample_matches_its_recorded_digest(taxi_csv: Path) -> None:
    assert sha256_of(taxi_csv) == SAMPLE_FILES["data.csv"]
    assert is_cached(taxi_csv.parent)


def test_a_tampered_or_incomplete_cache_is_not_trusted(taxi_csv: Path, tmp_path: Path) -> None:
    for name in SAMPLE_FILES:
        shutil.copy(taxi_csv.parent / name, tmp_path / name)
    assert is_cached(tmp_path)
    with (tmp_path / "data.csv").open("a") as file:
        file.write("10,5.85,10,1,2,1382319000,,,,,0.0,,,Cash,Acme,180.0,,99.0\n")
    assert not is_cached(tmp_path)
    (tmp_path / "data.csv").unlink()
    assert not is_cached(tmp_path)
