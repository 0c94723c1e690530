"""Probing vs brute force vs randomization vs analytic on the ORCA1-like grid, in one run.

    python benchmarks/bench_methods.py [--columns 512] [--samples 100,1000,10000] [--quick]

Brute force is timed on a random subset of columns and scaled linearly to all ocean cells
(its cost is exactly linear in the number of columns); probing's error is measured against
brute force on those columns. Randomization and analytic are measured against probing on
every ocean cell. The last line printed is one JSON object with all numbers.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np
from common import benchmark_fields

from diffnorm.methods import estimate
from diffnorm.methods.brute import brute_variance
from diffnorm.metrics import sample_metrics
from diffnorm.operator import make_operator


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", default="orca1", help="built-in grid (orca1, toy, latlon)")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--d-min", type=float, default=1.5)
    parser.add_argument("--d-max", type=float, default=4.0)
    parser.add_argument("--tolerance", type=float, default=1e-6)
    parser.add_argument("--columns", type=int, default=512, help="brute-force columns timed")
    parser.add_argument("--samples", default="100,1000,10000", help="randomization N list")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="4° grid, few samples: a smoke run")
    args = parser.parse_args()

    samples = [100] if args.quick else [int(float(s)) for s in args.samples.split(",") if s]
    if args.quick:
        args.columns = min(args.columns, 128)
    grid = "latlon 4°" if args.quick else args.grid
    fields = benchmark_fields(
        args.grid,
        d_min=args.d_min,
        d_max=args.d_max,
        steps=args.steps,
        seed=args.seed,
        quick=args.quick,
    )

    t0 = time.perf_counter()
    op = make_operator(fields)
    t_factor = time.perf_counter() - t0
    n = op.n
    print(
        f"grid {grid} {fields.shape}, {n} ocean cells, M={args.steps}, "
        f"D in [{args.d_min}, {args.d_max}] cells; factorization {t_factor:.2f} s ({op.solver})"
    )

    probing = estimate(op, "probing", tolerance=args.tolerance)
    info = probing.info
    how = (
        f"stride {info['stride']}, {info['colours']} colours"
        if "stride" in info
        else f"brute-force fallback ({info.get('fallback', 'cheaper than probing here')})"
    )
    print(
        f"probing: {probing.wall_time:.2f} s, {how}, {info.get('solves')} solves, "
        f"certified {probing.tolerance:.1e}"
    )

    cols = np.sort(np.random.default_rng(args.seed + 1).choice(n, args.columns, replace=False))
    t0 = time.perf_counter()
    v_cols = brute_variance(op, cols)
    t_cols = time.perf_counter() - t0
    t_brute = t_cols * n / cols.size
    v_probe = op.from_grid(probing.gamma)[cols] ** -2.0
    probe_err = float(np.max(np.abs(v_cols / v_probe - 1)))
    print(
        f"brute: {t_cols:.2f} s for {cols.size} columns -> {t_brute:.1f} s for {n} (scaled); "
        f"probing max |ε| on those columns {probe_err:.2e}"
    )

    rows = [
        {
            "method": "brute (scaled)",
            "wall_time_s": t_brute,
            "solves": n * (args.steps // 2),
        },
        {
            "method": "probing",
            "wall_time_s": probing.wall_time,
            "solves": probing.info["solves"],
            "max_abs_vs_brute": probe_err,
        },
    ]
    others = [("analytic", {})] + [("randomization", {"samples": s, "seed": 1}) for s in samples]
    for name, options in others:
        result = estimate(op, name, **options)
        label = name if name == "analytic" else f"randomization N={options['samples']}"
        row = {"method": label, "wall_time_s": result.wall_time, "solves": result.info["solves"]}
        row.update(sample_metrics(result.gamma, probing.gamma, fields.mask))
        rows.append(row)
        print(f"{label}: {result.wall_time:.2f} s")

    print()
    head = ["method", "wall time (s)", "× probing time", "solves"]
    head += ["mean abs(ε)", "Q99.99 abs(ε)", "max abs(ε)"]
    print("| " + " | ".join(head) + " |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        ratio = row["wall_time_s"] / probing.wall_time
        row["ratio_to_probing"] = ratio
        errs = [row.get(k) for k in ("mean_abs", "q9999", "max_abs")]
        if row["method"] == "probing":
            errs = [None, None, probe_err]
        cells = " | ".join("–" if e is None else f"{e:.2e}" for e in errs)
        print(
            f"| {row['method']} | {row['wall_time_s']:.2f} | {ratio:.3g} | {row['solves']} "
            f"| {cells} |"
        )
    speedup = t_brute / probing.wall_time
    print(f"\nprobing is {speedup:.1f}x faster than brute force at max |ε| {probe_err:.1e}")
    summary = {
        "grid": grid,
        "shape": list(fields.shape),
        "ocean_cells": n,
        "steps": args.steps,
        "d_cells": [args.d_min, args.d_max],
        "tolerance": args.tolerance,
        "factorization_s": t_factor,
        "probing_stride": list(probing.info.get("stride", ())),
        "probing_colours": probing.info.get("colours"),
        "brute_columns_timed": int(cols.size),
        "probing_speedup_vs_brute": speedup,
        "probing_max_abs_vs_brute": probe_err,
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "rows": rows,
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
