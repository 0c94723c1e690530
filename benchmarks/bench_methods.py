"""Every γ method side by side on the ORCA1-like grid, in one run, with speed-ups.

    python benchmarks/bench_methods.py [--columns 512] [--samples 100,1000,10000] [--quick]

Brute force is timed on ``--columns`` ocean columns (half of them next to the coast, half
random) and scaled linearly to all ocean cells (its cost is exactly linear in the columns);
the exact methods (``selinv``, the default, and ``probing``) are checked against brute force
on those columns. Randomization and analytic are measured against ``selinv`` on every ocean
cell. The last line printed is one JSON object with all numbers.
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
from diffnorm.metrics import distance_to_coast, sample_metrics
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

    rng = np.random.default_rng(args.seed + 1)
    coast = op.from_grid(distance_to_coast(fields)) <= 1.0
    half = min(args.columns // 2, int(coast.sum()))
    cols = np.concatenate(
        [
            rng.choice(np.flatnonzero(coast), half, replace=False),
            rng.choice(np.flatnonzero(~coast), args.columns - half, replace=False),
        ]
    )
    cols = np.sort(cols)
    t0 = time.perf_counter()
    v_cols = brute_variance(op, cols)
    t_cols = time.perf_counter() - t0
    t_brute = t_cols * n / cols.size
    print(
        f"brute: {t_cols:.2f} s for {cols.size} columns ({half} coastal) -> {t_brute:.1f} s "
        f"for {n} (scaled)"
    )
    rows = [{"method": "brute (scaled)", "wall_time_s": t_brute, "max_abs_vs_brute": 0.0}]
    exact = {}
    for name in ("selinv", "probing"):
        result = estimate(op, name, tolerance=args.tolerance)
        err = float(np.max(np.abs(v_cols / op.from_grid(result.variance)[cols] - 1)))
        exact[name] = result
        keys = ("nodes", "factorizations", "stride", "colours", "solves", "fallback")
        how = ", ".join(f"{k} {result.info[k]}" for k in keys if k in result.info)
        print(
            f"{name}: {result.wall_time:.2f} s ({how}), certified {result.tolerance:.1e}, "
            f"max |ε| vs brute on the checked columns {err:.2e}"
        )
        rows.append(
            {
                "method": name,
                "wall_time_s": result.wall_time,
                "certified": result.tolerance,
                "max_abs_vs_brute": err,
            }
        )
    reference = exact["selinv"]
    others = [("analytic", {})] + [("randomization", {"samples": s, "seed": 1}) for s in samples]
    for name, options in others:
        result = estimate(op, name, **options)
        label = name if name == "analytic" else f"randomization N={options['samples']}"
        row = {"method": label, "wall_time_s": result.wall_time}
        row.update(sample_metrics(result.gamma, reference.gamma, fields.mask))
        rows.append(row)
        print(f"{label}: {result.wall_time:.2f} s")

    print()
    head = ["method", "wall time (s)", "speed-up vs brute", "× selinv time"]
    head += ["mean abs(ε)", "Q99.99 abs(ε)", "max abs(ε)", "certified"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for row in rows:
        row["speedup_vs_brute"] = t_brute / row["wall_time_s"]
        row["ratio_to_selinv"] = row["wall_time_s"] / reference.wall_time
        errs = [row.get(k) for k in ("mean_abs", "q9999", "max_abs")]
        if "max_abs_vs_brute" in row:
            errs = [None, None, row["max_abs_vs_brute"]]
        cells = " | ".join("–" if e is None else f"{e:.2e}" for e in errs)
        cert = row.get("certified")
        print(
            f"| {row['method']} | {row['wall_time_s']:.3g} | {row['speedup_vs_brute']:.3g} "
            f"| {row['ratio_to_selinv']:.3g} | {cells} | {'–' if cert is None else f'{cert:.1e}'} |"
        )
    for name, result in exact.items():
        print(f"{name} is {t_brute / result.wall_time:.1f}x faster than brute force")
    summary = {
        "grid": grid,
        "shape": list(fields.shape),
        "ocean_cells": n,
        "steps": args.steps,
        "d_cells": [args.d_min, args.d_max],
        "tolerance": args.tolerance,
        "factorization_s": t_factor,
        "brute_columns_timed": int(cols.size),
        "brute_columns_coastal": int(half),
        "selinv_info": {k: v for k, v in exact["selinv"].info.items() if not isinstance(v, tuple)},
        "probing_stride": list(exact["probing"].info.get("stride", ())),
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "rows": rows,
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
