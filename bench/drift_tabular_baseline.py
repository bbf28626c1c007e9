"""The drift bench's baseline, run in the drift environment: alibi-detect's TabularDrift alone on two Parquet files.

One detector over every feature at once, as alibi-detect's documentation uses it: complete rows only
(TabularDrift has no notion of a missing value), categorical columns as integer codes prepared before
the clock starts. Prints {"fit": s, "predict": s, "total": s, "cpu": s, "rows_used": n} as JSON: wall seconds,
and the CPU seconds of fit and predict together.

    .venv/drift/bin/python bench/drift_tabular_baseline.py REF.parquet CUR.parquet NUMERIC,... CATEGORICAL,...
"""

import json
import sys
import time

import numpy as np
import pandas as pd
from alibi_detect.cd import TabularDrift


def main() -> None:
    reference_path, current_path, numeric, categorical = sys.argv[1:5]
    numeric, categorical = numeric.split(","), categorical.split(",")
    columns = numeric + categorical
    reference = pd.read_parquet(reference_path, columns=columns).dropna()
    current = pd.read_parquet(current_path, columns=columns).dropna()
    for name in categorical:
        categories = pd.Index(pd.concat([reference[name], current[name]]).unique())
        reference[name] = categories.get_indexer(reference[name].to_numpy())
        current[name] = categories.get_indexer(current[name].to_numpy())
    x_ref = reference.to_numpy(dtype=np.float64)
    x_cur = current.to_numpy(dtype=np.float64)
    categories_per_feature = {len(numeric) + i: None for i in range(len(categorical))}
    cpu, started = time.process_time(), time.perf_counter()
    detector = TabularDrift(x_ref, p_val=0.05, categories_per_feature=categories_per_feature)
    fitted = time.perf_counter()
    detector.predict(x_cur, drift_type="feature", return_p_val=True)
    done = time.perf_counter()
    print(json.dumps({"fit": fitted - started, "predict": done - fitted, "total": done - started,
                      "cpu": time.process_time() - cpu, "rows_used": min(len(x_ref), len(x_cur))}))


if __name__ == "__main__":
    main()
