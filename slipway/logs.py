"""Log set-up for component bodies and the CLI: one format, INFO, to stderr."""

import logging

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure(level: int = logging.INFO) -> None:
    """Shows Slipway's progress lines; quiets the chattier libraries to WARNING."""
    logging.basicConfig(level=level, format=FORMAT, force=True)
    for noisy in ("urllib3", "botocore", "google", "matplotlib", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
