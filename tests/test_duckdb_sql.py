"""Names and paths reach DuckDB quoted: a quote in a column name or a folder name is data, not SQL."""

from pathlib import Path

import duckdb
import pandas as pd

from slipway.duckdb_sql import identifier, string_literal


def test_a_column_and_a_path_holding_quotes_are_read_as_they_are(tmp_path: Path) -> None:
    folder = tmp_path / "o'brien's \"data\""
    folder.mkdir()
    column, path = 'fare "usd"', folder / "trips.parquet"
    pd.DataFrame({column: [1.5, 2.5]}).to_parquet(path)
    with duckdb.connect() as connection:
        [(total,)] = connection.sql(f"SELECT sum({identifier(column)}) FROM read_parquet({string_literal(path)})"
                                    ).fetchall()
    assert total == 4.0
