"""How the cost of exact γ grows with the grid: brute, probing, selinv, randomization, cnn.

    python benchmarks/bench_exact_scaling.py [--resolutions 2,1,0.5,0.25] [--check 128]
        [--methods selinv,probing,randomization:1000,brute,cnn] [--budget 900]

Global lat–lon grids with real coastlines (land poleward of ±80°), M = 10, smooth random
``D`` in 1.5–4 cells. Each method runs in its own process (its peak resident memory is its
own) under a wall-time budget; a method that ran past the budget at one resolution is not
tried at finer ones. Brute force runs on ``--check`` random ocean columns, scaled to all
cells (its cost is linear in the columns), and those columns are the reference for every
other method's max |ε|. When selinv runs, every other method is also measured against it on
*all* ocean cells (mean / Q99.99 / max |ε|, ε = (γ̂² − γ²)/γ²) and its time is printed as a
multiple of selinv's: that is where the network's cost (linear in the cells) overtakes the
exact method's (cells^1.4–1.5). ``cnn`` is the shipped model for the grid (``cnn:NAME`` for
another; the operator is not built for it, so its time is the whole prediction; basins of
at most 64 cells solved apart, as the model cards measure the network);
``cnn_exact:τ`` the same with the cells whose error estimate is above τ solved exactly (no τ:
the model's own, ``auto``)
(``--exact-above``). The last
lines fit ``time ∝ cells^p`` per method; the last line printed is one JSON object with all
numbers.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import platform
import resource
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from common import random_fields_on

from diffnorm.grid import built_in_grid


def make_fields(resolution: float, steps: int, d_min: float, d_max: float, seed: int):
    grid = built_in_grid("latlon", resolution=resolution)
    return random_fields_on(grid, d_min=d_min, d_max=d_max, steps=steps, seed=seed)


def run_method(args: dict, queue: mp.Queue) -> None:
    """In a fresh process: time one method, return its variance on the checked columns."""
    from diffnorm.methods import estimate
    from diffnorm.methods.brute import brute_variance
    from diffnorm.methods.cnn import NETWORK_EXACT_BASINS
    from diffnorm.operator import make_operator

    fields = make_fields(args["resolution"], args["steps"], args["d_min"], args["d_max"], 0)
    name, _, arg = args["method"].partition(":")
    cols = np.asarray(args["columns"], dtype=np.int64)  # --check 0: an empty index, not floats
    info: dict = {}
    full = None  # the variance on every ocean cell, kept for the comparison with selinv
    t0 = time.perf_counter()
    if name == "brute":
        op = make_operator(fields)
        variance = brute_variance(op, cols)
        wall = (time.perf_counter() - t0) * op.n / cols.size
        info["timed_columns"] = int(cols.size)
    else:
        options: dict = {"tolerance": args["tolerance"]} if name in ("selinv", "probing") else {}
        if name == "randomization":
            options = {"samples": int(float(arg or 1000)), "seed": 0}
        if name == "cnn" and arg:
            options = {"model": arg}
        if name == "cnn_exact":  # the cnn with the cells it doubts solved exactly
            name, options = "cnn", {"exact_above": "auto" if arg in ("", "auto") else float(arg)}
        if name == "cnn":  # the network as its card measures it: comparable with earlier runs
            options["exact_basins"] = NETWORK_EXACT_BASINS
        # the network needs no operator: its time is the whole prediction
        result = estimate(fields if name == "cnn" else make_operator(fields), name, **options)
        wall = time.perf_counter() - t0
        full = result.variance.ravel()[fields.ocean]
        variance = full[cols]
        info = {k: v for k, v in result.info.items() if isinstance(v, int | float | str)}
        info["certified"] = result.tolerance
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB → GiB
    if full is not None:  # a file, not the queue: 5.7 M cells at 1/12°
        np.save(args["save"], full)
    queue.put({"wall_s": wall, "peak_gib": peak, "variance": variance.tolist(), "info": info})


def all_cell_errors(variance: np.ndarray, exact: np.ndarray) -> dict:
    """mean / Q99.99 / max |ε| on every ocean cell, ε = (γ̂² − γ²)/γ² = v/v̂ − 1."""
    eps = np.abs(exact / variance - 1.0)
    return {
        "mean": float(eps.mean()),
        "q9999": float(np.quantile(eps, 0.9999)),
        "max": float(eps.max()),
    }


def timed(args: dict, budget: float) -> dict:
    """``run_method`` in a fresh process: its result, or ``{"failed": why}`` once it is past
    the budget or has died (an error, or killed for memory), whichever comes first."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=run_method, args=(args, queue))
    proc.start()
    deadline = time.perf_counter() + budget
    out = None
    while out is None and time.perf_counter() < deadline:
        try:
            out = queue.get(timeout=1.0)
        except Exception:  # queue.Empty: still running, or dead with nothing sent
            if not proc.is_alive() and queue.empty():
                break
    proc.join(timeout=5)
    if proc.is_alive():
        proc.kill()
        proc.join()
    if out is None:
        if time.perf_counter() >= deadline:
            return {"failed": f"> {budget:.0f} s"}
        return {"failed": f"died (exit code {proc.exitcode}: an error above, or out of memory)"}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolutions", default="2,1,0.5,0.25", help="degrees, comma-separated")
    parser.add_argument("--methods", default="selinv,probing,randomization:1000,brute")
    parser.add_argument("--check", type=int, default=128, help="brute-force reference columns")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--d-min", type=float, default=1.5)
    parser.add_argument("--d-max", type=float, default=4.0)
    parser.add_argument("--tolerance", type=float, default=1e-6)
    parser.add_argument("--budget", type=float, default=900.0, help="seconds per method run")
    args = parser.parse_args()
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    for first in ("selinv", "brute"):  # the references first: brute, then selinv
        if first in methods:
            methods = [first, *(m for m in methods if m != first)]
    scratch = Path(tempfile.mkdtemp(prefix="bench_scaling_"))
    print(
        f"{platform.processor() or platform.machine()}, M={args.steps}, D {args.d_min}–{args.d_max}"
    )
    rows: list[dict] = []
    stopped: set[str] = set()
    for resolution in (float(r) for r in args.resolutions.split(",")):
        fields = make_fields(resolution, args.steps, args.d_min, args.d_max, 0)
        n = fields.n_ocean
        rng = np.random.default_rng(1)
        columns = np.sort(rng.choice(n, min(args.check, n), replace=False)).tolist()
        print(f"\n{resolution:g}°: {fields.shape[0]}×{fields.shape[1]}, {n} ocean cells")
        reference = selinv_full = None
        for method in methods:
            if method in stopped:
                print(f"  {method:<20} skipped (past the budget at a coarser grid)")
                continue
            job = {
                "resolution": resolution,
                "steps": args.steps,
                "d_min": args.d_min,
                "d_max": args.d_max,
                "tolerance": args.tolerance,
                "method": method,
                "columns": columns,
                "save": str(scratch / f"{method.replace(':', '_')}_{resolution:g}.npy"),
            }
            out = timed(job, args.budget)
            if "failed" in out:
                stopped.add(method)
                print(f"  {method:<20} {out['failed']}")
                rows.append({"resolution": resolution, "cells": n, "method": method})
                continue
            variance = np.asarray(out.pop("variance"))
            if method == "brute":
                reference = variance
            saved = Path(job["save"])
            if method == "selinv" and saved.exists():
                selinv_full, selinv_wall = np.load(saved), out["wall_s"]
            versus = ""
            if method not in ("brute", "selinv") and saved.exists() and selinv_full is not None:
                out["all_cells"] = all_cell_errors(np.load(saved), selinv_full)
                out["x_selinv_time"] = out["wall_s"] / selinv_wall
                a = out["all_cells"]
                versus = (
                    f"\n  {'':<20} all {n} cells vs selinv: mean / Q99.99 / max |ε| "
                    f"{a['mean']:.2e} / {a['q9999']:.2e} / {a['max']:.2e}; "
                    f"time {out['x_selinv_time']:.3g} × selinv's"
                )
            saved.unlink(missing_ok=True)
            error = (
                float(np.max(np.abs(reference / variance - 1))) if reference is not None else None
            )
            row = {"resolution": resolution, "cells": n, "method": method, **out, "max_err": error}
            rows.append(row)
            err = f"{error:.1e}" if error is not None else "–"
            cert = out["info"].get("certified")
            cert_text = f", certified {cert:.1e}" if cert else ""
            print(
                f"  {method:<20} {out['wall_s']:9.2f} s  peak {out['peak_gib']:5.2f} GiB  "
                f"max |ε| {err} on {len(columns)} cells{cert_text}{versus}"
            )
    shutil.rmtree(scratch, ignore_errors=True)
    print("\nfit time ∝ cells^p (all resolutions that finished):")
    fits = {}
    for method in methods:
        pts = [(r["cells"], r["wall_s"]) for r in rows if r["method"] == method and "wall_s" in r]
        if len(pts) >= 2:
            x, y = np.log([p[0] for p in pts]), np.log([p[1] for p in pts])
            fits[method] = float(np.polyfit(x, y, 1)[0])
            print(f"  {method:<20} p = {fits[method]:.2f}")
    print(json.dumps({"rows": rows, "exponents": fits}))


if __name__ == "__main__":
    main()
