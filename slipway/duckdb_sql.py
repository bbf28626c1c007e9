"""SQL text for the DuckDB queries Slipway builds: names from a problem file and file paths, quoted.

Column names come from a user's problem file and paths from storage, so neither is ever pasted into a
query as it is: an identifier is double-quoted and a string literal single-quoted, each quote doubled.
"""

from __future__ import annotations

import os
from pathlib import Path


def identifier(name: str) -> str:
    """A column or table name, quoted."""
    return '"' + name.replace('"', '""') + '"'


def string_literal(text: str | Path) -> str:
    """A string (a path), as an SQL literal."""
    return "'" + os.fspath(text).replace("'", "''") + "'"
