"""Outputs appear whole and together, or not at all."""

from pathlib import Path

import pytest

from slipway.atomic import atomic_output, atomic_outputs


def test_all_outputs_appear_together_when_the_block_completes(tmp_path: Path) -> None:
    train, evaluation = tmp_path / "out" / "train.parquet", tmp_path / "out" / "eval.parquet"
    with atomic_outputs([train, evaluation]) as (train_tmp, eval_tmp):
        train_tmp.write_text("train")
        eval_tmp.write_text("eval")
        assert not train.exists(), "a final path must not exist before the block completes"
    assert (train.read_text(), evaluation.read_text()) == ("train", "eval")
    assert sorted(p.name for p in train.parent.iterdir()) == ["eval.parquet", "train.parquet"]


def test_a_failure_leaves_no_output_no_temporary_file_and_the_old_file_intact(tmp_path: Path) -> None:
    (tmp_path / "train.parquet").write_text("yesterday's")
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_outputs([tmp_path / "train.parquet", tmp_path / "eval.parquet"]) as (train_tmp, _):
            train_tmp.write_text("half")
            raise RuntimeError("disk full")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train.parquet"]
    assert (tmp_path / "train.parquet").read_text() == "yesterday's"


def test_the_temporary_file_keeps_the_extension_so_writers_pick_the_right_format(tmp_path: Path) -> None:
    with atomic_output(tmp_path / "training.yaml") as temp:
        assert temp.suffix == ".yaml" and temp.parent == tmp_path and temp.name.startswith(".")
        temp.write_text("x")


def test_a_directory_where_an_output_file_goes_is_never_replaced(tmp_path: Path) -> None:
    """Only the block's own temporary files are ever removed: a user's folder at an output path survives whole."""
    folder = tmp_path / "best_params.json"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep")
    with pytest.raises(IsADirectoryError), atomic_output(folder) as temp:
        temp.write_text("{}")
    assert (folder / "notes.txt").read_text() == "keep"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best_params.json"], "no temporary file left either"
