"""Entry-point set-up for component bodies, the trainer and the CLI: one log format, no telemetry.

Every entry point calls `configure()` first. Besides logging, that is where library telemetry is
switched off: MLflow 3 phones home from a background thread on first use unless told not to,
and Slipway makes no network calls a user did not ask for. Variables already set are respected.
"""

import logging
import os

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure(level: int = logging.INFO) -> None:
    """Shows Slipway's progress lines; quiets the chattier libraries to WARNING."""
    disable_telemetry()
    logging.basicConfig(level=level, format=FORMAT, force=True)
    for noisy in ("urllib3", "botocore", "google", "matplotlib", "alembic", "httpx", "feast", "apache_beam"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def disable_telemetry() -> None:
    """Opts out of MLflow usage telemetry (and libraries honouring DO_NOT_TRACK), here and in child processes."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("DO_NOT_TRACK", "true")
