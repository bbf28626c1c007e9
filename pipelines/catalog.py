"""Every pipeline Slipway ships, by the name the CLI and `dist/<name>.yaml` use."""

from kfp.dsl.graph_component import GraphComponent

from slipway.pipelines.batch_scoring import batch_scoring
from slipway.pipelines.continuous_training import continuous_training
from slipway.pipelines.training import training

PIPELINES: dict[str, GraphComponent] = {
    "training": training,
    "continuous_training": continuous_training,
    "batch_scoring": batch_scoring,
}


def get_pipeline(name: str) -> GraphComponent:
    if name not in PIPELINES:
        raise KeyError(f"unknown pipeline {name!r}; valid pipelines: {', '.join(sorted(PIPELINES))}")
    return PIPELINES[name]
