"""Model serving on KServe: predictor, Feast transformer, drift detector service."""
