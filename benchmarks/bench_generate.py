"""Dataset generation throughput on the ORCA1-like grid: 1 vs 2 local Dask workers.

    python benchmarks/bench_generate.py [--samples 4] [--config configs/data/orca1.yaml]

Each run writes its own temporary folder. Prints per-sample wall times (from the files'
provenance), throughput per configuration and their ratio; the last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from diffnorm.data import generate, load_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--config", default=str(Path(__file__).parents[1] / "configs/data/orca1.yaml")
    )
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--workers", default="1,2")
    args = parser.parse_args()
    config = replace(load_config(args.config), splits={"train": args.samples})
    rows = []
    for workers in (int(w) for w in args.workers.split(",")):
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            manifest = generate(config, Path(tmp) / "ds", workers=workers)
            wall = time.perf_counter() - t0
        per_sample = [r["wall_time_s"] for r in manifest["samples"]]
        row = {
            "workers": workers,
            "samples": len(per_sample),
            "wall_s": wall,
            "sample_s_mean": float(np.mean(per_sample)),
            "sample_s_max": float(np.max(per_sample)),
            "throughput_samples_per_min": 60 * len(per_sample) / wall,
            "effective_s_per_sample": wall / len(per_sample),
        }
        rows.append(row)
        print(
            f"{workers} worker(s): {wall:.1f} s for {row['samples']} samples, "
            f"{row['sample_s_mean']:.1f} s per sample (max {row['sample_s_max']:.1f}), "
            f"{row['effective_s_per_sample']:.1f} s per sample in throughput"
        )
    if len(rows) > 1:
        print(
            f"speed-up {rows[0]['wall_s'] / rows[-1]['wall_s']:.2f}x with "
            f"{rows[-1]['workers']} workers"
        )
    print(json.dumps({"config": args.config, "grid": config.grid.name, "rows": rows}))


if __name__ == "__main__":
    main()
