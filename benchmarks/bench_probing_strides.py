"""How far probing's stride can shrink: true error and certificate against the colour count.

    python benchmarks/bench_probing_strides.py [--strides 24x22,26x24,...] [--quick]

For each stride one uncertified probing pass (``probe_with_stride``) is timed and its error is
measured on every ocean cell against a reference pass at a much larger stride, itself checked
against brute force on random columns. It shows what the certificate costs (the stride
``probing`` picks vs the smallest whose true error is within the tolerance) and the best
speed-up over brute force that one probe per colour can reach. Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from common import benchmark_fields

from diffnorm.methods import estimate
from diffnorm.methods.brute import brute_variance
from diffnorm.methods.probing import probe_with_stride
from diffnorm.operator import make_operator

DEFAULT_STRIDES = "24x22,26x24,28x26,28x28,30x28,31x29,34x31"


def _pair(text: str) -> tuple[int, int]:
    sy, sx = text.lower().split("x")
    return int(sy), int(sx)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", default="orca1")
    parser.add_argument("--strides", default=DEFAULT_STRIDES, help="SYxSX list, comma-separated")
    parser.add_argument("--reference", default="48x44", help="stride of the reference pass")
    parser.add_argument("--tolerance", type=float, default=1e-6)
    parser.add_argument("--columns", type=int, default=512, help="brute-force columns timed")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="4° grid, small strides: a smoke run")
    args = parser.parse_args()
    if args.quick:
        args.strides, args.reference, args.columns = "12x12,16x16", "30x30", 64

    fields = benchmark_fields(args.grid, seed=args.seed, quick=args.quick)
    op = make_operator(fields)
    n = op.n
    cols = np.sort(np.random.default_rng(args.seed + 1).choice(n, args.columns, replace=False))
    t0 = time.perf_counter()
    v_brute = brute_variance(op, cols)
    per_column = (time.perf_counter() - t0) / cols.size
    t_brute = per_column * n
    reference = probe_with_stride(op, _pair(args.reference))
    ref_err = float(np.max(np.abs(reference.variance[cols] / v_brute - 1)))
    chosen = estimate(op, "probing", tolerance=args.tolerance).info
    print(
        f"{n} ocean cells; brute force {t_brute:.0f} s (scaled from {cols.size} columns); "
        f"reference stride {args.reference}: max |ε| vs brute {ref_err:.1e}; probing picks "
        f"stride {tuple(chosen.get('stride', ()))} ({chosen.get('colours')} colours)"
    )
    print(
        "| stride | colours | time (s) | × faster than brute | true max abs(ε) | "
        "Q99.99 abs(ε) | certificate max | certified |"
    )
    print("|---|---|---|---|---|---|---|---|")
    rows = []
    for text in args.strides.split(","):
        stride = _pair(text)
        t0 = time.perf_counter()
        run = probe_with_stride(op, stride)
        wall = time.perf_counter() - t0
        err = np.abs(run.variance / reference.variance - 1)
        row = {
            "stride": list(stride),
            "colours": run.colours,
            "wall_time_s": wall,
            "speedup_vs_brute": t_brute / wall,
            "max_abs": float(err.max()),
            "q9999": float(np.quantile(err, 0.9999)),
            "certificate_max": float(run.error_estimate.max()),
        }
        row["certified"] = row["certificate_max"] <= args.tolerance
        rows.append(row)
        print(
            f"| {stride[0]}×{stride[1]} | {run.colours} | {wall:.2f} | "
            f"{row['speedup_vs_brute']:.0f} | {row['max_abs']:.1e} | {row['q9999']:.1e} | "
            f"{row['certificate_max']:.1e} | {'yes' if row['certified'] else 'no'} |"
        )
    within = [r for r in rows if r["max_abs"] <= args.tolerance]
    best = min(within, key=lambda r: r["colours"]) if within else None
    if best:
        print(
            f"\nsmallest scanned stride with true max |ε| ≤ {args.tolerance:.0e}: "
            f"{best['stride']} ({best['colours']} colours, {best['speedup_vs_brute']:.0f}× "
            f"brute force; n/colours = {n / best['colours']:.0f})"
        )
    print(
        json.dumps(
            {
                "ocean_cells": n,
                "tolerance": args.tolerance,
                "brute_scaled_s": t_brute,
                "reference_stride": list(_pair(args.reference)),
                "reference_max_abs_vs_brute": ref_err,
                "probing_stride": list(chosen.get("stride", ())),
                "probing_colours": chosen.get("colours"),
                "best_uncertified": best,
                "rows": rows,
            }
        )
    )


if __name__ == "__main__":
    main()
