"""Does a network hold on grids it has never seen? The cases of the CNN-generalization issue.

    python benchmarks/bench_generalization.py [--model NAME_OR_FILE] [--samples 2]
        [--randomization 10000] [--cases orca1,natl025,toy_table8,rectangles,gyre]
        [--baselines lattice,images,walk] [--strata] [--symmetries 8] [--steps 10] [--warm]

Cases (exact γ by certified selinv on each):

- ``orca1``: the ORCA1-like grid, D 1.5–6 cells, new parameter draws (seeds 1000+);
- ``natl025``: a closed 1/4° North-Atlantic basin (10–60° N, 80° W–0°), D 1.5–6 cells;
- ``toy_table8``: the study's toy 1° grid with κ = 3·10⁹ m² everywhere;
- ``rectangles``: closed rectangular basins of 120 to 1 600 cells, D = 3 cells;
- ``basins``: closed rectangles of 114 to 1 594 cells with an island, D 1.5–6 cells (new draws
  per sample, seeds 3000+): where the method's default solves the grid without the network
  (``--exact-basins 2048``), and the network alone (the default here, 64) is weakest;
- ``gyre``: the NEMO GYRE basin read from ``../shared/data/nemo`` (mesh_mask), D = 3 cells.

``--steps M`` puts every case at that M (the same length scales in cells; Table 8 keeps its κ);
the default model is then the shipped choice for M. For each: mean, Q99.99 and max of |ε| for
the network and (``--randomization N``, 0 to skip) randomization, and whether the network is at
or below it on all three. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from common import exact_above_values, random_fields_on

from diffnorm.augment import symmetries
from diffnorm.fields import Fields
from diffnorm.grid import (
    box_grid,
    built_in_grid,
    fields_from_cell_length_scales,
    fields_from_metrics,
    latlon_grid,
    toy_grid,
)
from diffnorm.methods import estimate
from diffnorm.methods.cnn import NETWORK_EXACT_BASINS
from diffnorm.metrics import (
    distance_to_coast,
    error_strata,
    merge_strata,
    relative_error,
    strata_table,
)
from diffnorm.ml.modelfile import resolve_model
from diffnorm.nemo import mesh_mask_grid
from diffnorm.subgrid import EXACT_BASINS

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "nemo"


FLAG = 0.055  # |ε|: about randomization 10⁴'s maximum on these grids


def _random(metrics, seed: int, steps: int) -> Fields:
    return random_fields_on(metrics, d_min=1.5, d_max=6.0, steps=steps, seed=seed)


def north_atlantic() -> object:
    """1/4° lat–lon cut to 10–60° N, 80° W–0°, closed on all sides."""
    g = latlon_grid(0.25, lat_min=10.0, lat_max=60.0, polar_cap=None)
    cols = slice(int((180 - 80) / 0.25), int(180 / 0.25))
    names = ("mask", "e1t", "e2t", "e1u", "e2u", "e1v", "e2v", "lat", "lon")
    cut = {k: np.ascontiguousarray(getattr(g, k)[:, cols]) for k in names}
    return replace(g, periodic_x=False, name="natl025", **cut)


def cases(names: list[str], samples: int, steps: int = 10) -> dict[str, list[Fields]]:
    out: dict[str, list[Fields]] = {}
    for name in names:
        if name == "orca1":
            grid = built_in_grid("orca1")
            out[name] = [_random(grid, 1000 + k, steps) for k in range(samples)]
        elif name == "natl025":
            grid = north_atlantic()
            out[name] = [_random(grid, 2000 + k, steps) for k in range(samples)]
        elif name == "toy_table8":
            out[name] = [fields_from_metrics(toy_grid(), 3e9, 3e9, steps=steps)]
        elif name == "rectangles":
            out[name] = []
            for ny, nx in ((10, 12), (16, 25), (30, 40), (40, 40)):
                mask = np.zeros((ny + 2, nx + 2), dtype=bool)
                mask[1:-1, 1:-1] = True
                out[name].append(
                    fields_from_cell_length_scales(
                        box_grid(*mask.shape, mask=mask), 3.0, 3.0, steps
                    )
                )
        elif name == "basins":
            out[name] = []
            for k, (ny, nx) in enumerate(((10, 12), (16, 25), (30, 40), (40, 40))):
                mask = np.zeros((ny + 2, nx + 2), dtype=bool)
                mask[1:-1, 1:-1] = True
                mask[ny // 2 : ny // 2 + 2, nx // 3 : nx // 3 + 3] = False  # an island
                grid = box_grid(*mask.shape, mask=mask)
                out[name] += [_random(grid, 3000 + 10 * k + s, steps) for s in range(samples)]
        elif name == "gyre":
            grid = mesh_mask_grid(SHARED / "gyre_nemo3.6_mesh_mask.nc")
            out[name] = [fields_from_cell_length_scales(grid, 3.0, 3.0, steps)]
        else:
            raise SystemExit(f"unknown case {name!r}")
    return out


STRATA = ((1, 1), (2, 2), (3, 7), (8, 10**9))  # distance to the coast, cells


WARM_KAPPA = 1.3  # --warm: the call before the timed one has κ × this on the same grid


def timed(times: dict, key: str, warm: bool, fields: Fields, method: str, **options):
    """``estimate`` on a fresh copy of ``fields`` (nothing computed before reused), its wall
    time added to ``times[key]``; when ``warm``, after a call on the same grid with another κ
    (``WARM_KAPPA`` times this one): what a previous κ leaves cached (the model, the whole
    grid's ordering), not what this κ's own solves need (their halos, their regions'
    orderings)."""
    if warm:
        other = {k: WARM_KAPPA * getattr(fields, k) for k in ("alpha_x", "alpha_y")}
        estimate(fields.replace(**other), method, **options)
    t0 = time.perf_counter()
    result = estimate(fields.replace(), method, **options)
    times[key] += time.perf_counter() - t0
    return result


def metrics(eps: list[np.ndarray], distance: list[np.ndarray]) -> dict[str, float]:
    a = np.abs(np.concatenate(eps))
    d = np.concatenate(distance)
    out = {
        "mean_abs": float(a.mean()),
        "q9999": float(np.quantile(a, 0.9999)),
        "max_abs": float(a.max()),
        "cells": int(a.size),
    }
    for lo, hi in STRATA:
        sel = (d >= lo) & (d <= hi)
        out[f"mean_abs_d{lo}"] = float(a[sel].mean()) if sel.any() else float("nan")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="cnn model (default: the shipped choice)")
    parser.add_argument("--samples", type=int, default=2, help="draws for orca1 and natl025")
    parser.add_argument("--randomization", type=int, default=10000, help="N (0: skip)")
    parser.add_argument("--cases", default="orca1,natl025,toy_table8,rectangles,gyre")
    parser.add_argument("--strata", action="store_true", help="also print the cnn's strata")
    parser.add_argument("--steps", type=int, default=10, help="M of every case")
    parser.add_argument(
        "--baselines",
        default="",
        help="also score these O(n) estimates (comma-separated: lattice, images, walk, analytic)",
    )
    parser.add_argument(
        "--symmetries",
        type=int,
        default=1,
        help="average the cnn over up to this many of each grid's symmetries",
    )
    parser.add_argument(
        "--exact-above",
        default="",
        help="also score the cnn with the cells whose error estimate is above each of these "
        "|ε| solved exactly (comma-separated, e.g. 0.01,0.015; auto: the model's τ)",
    )
    parser.add_argument(
        "--warm",
        action="store_true",
        help="time selinv, the cnn and its hybrids after a call with another κ on the same "
        "grid (κ × 1.3), as for every κ after the first on a grid",
    )
    parser.add_argument(
        "--exact-basins",
        type=int,
        default=NETWORK_EXACT_BASINS,
        help="basins the cnn rows solve exactly: 64 measures the network as its model card "
        f"does; the method's default is {EXACT_BASINS} (closed rectangles and GYRE are then "
        "exact, and so are ORCA1's, the North Atlantic's and Table 8's enclosed seas)",
    )
    parser.add_argument(
        "--gate", default=None, help="A,B: fade the correction out from A·D to B·D off the coast"
    )
    args = parser.parse_args()
    options = {} if args.model is None else {"model": args.model}
    options["exact_basins"] = args.exact_basins
    report = {}
    strata = " | ".join(
        f"d={lo}" if lo == hi else f"d {lo}–{hi}" if hi < 10**9 else f"d ≥ {lo}"
        for lo, hi in STRATA
    )
    head = "| case | cells | method | mean abs(ε) | Q99.99 abs(ε) | max abs(ε)"
    print(f"{head} | {strata} | s/sample |")
    print("|" + "---|" * (7 + len(STRATA)))
    for name, samples in cases(args.cases.split(","), args.samples, args.steps).items():
        rows: dict[str, dict] = {}
        baselines = [b for b in args.baselines.split(",") if b]
        taus = exact_above_values(args.exact_above)
        hybrids = {f"cnn_exact_above_{text}": tau for text, tau in taus.items()}
        eps: dict[str, list] = {
            "cnn": [],
            **{h: [] for h in hybrids},
            "randomization": [],
            **{b: [] for b in baselines},
        }
        dist: list[np.ndarray] = []
        times = dict.fromkeys(eps, 0.0)
        times["selinv"] = 0.0
        used: dict[str, float] = {}  # each hybrid's τ ("auto": the model's)
        model_name = ""
        parts = []
        covered: list[np.ndarray] = []  # |ε| ≤ the model's own per-cell error estimate
        flagged: list[tuple[np.ndarray, np.ndarray]] = []  # (|ε|, estimate)

        for fields in samples:
            exact = timed(times, "selinv", args.warm, fields, "selinv")
            m = fields.counted
            dist.append(np.rint(distance_to_coast(fields)[m]))
            if args.gate:
                net = resolve_model(args.model, fields)
                gate = tuple(float(x) for x in args.gate.split(","))
                options["model"] = replace(net, encoding=replace(net.encoding, gate=gate))
            sym = min(args.symmetries, len(symmetries(fields.topology)))
            cnn = timed(times, "cnn", args.warm, fields, "cnn", symmetries=sym, **options)
            model_name = cnn.info.get("model", "") + (f", {sym} symmetries" if sym > 1 else "")
            eps["cnn"].append(relative_error(cnn.gamma, exact.gamma, m))
            if cnn.error_estimate is not None:
                # the estimate is the network's: the cells the method solved are not its, and
                # cells without an estimate (NaN: a grid the kernel wraps around) are left out
                own = np.isfinite(cnn.error_estimate[m])
                if cnn.exact is not None:
                    own &= ~cnn.exact[m]
                err, est = np.abs(eps["cnn"][-1])[own], cnn.error_estimate[m][own]
                covered.append(err <= est)
                flagged.append((err, est))
            for key, tau in hybrids.items():
                h = timed(
                    times, key, args.warm, fields, "cnn", symmetries=sym, exact_above=tau, **options
                )
                used[key] = h.info["exact_above"]
                eps[key].append(relative_error(h.gamma, exact.gamma, m))
            grid = np.full(fields.shape, np.nan)
            grid[m] = eps["cnn"][-1]
            parts.append(error_strata(grid, fields))
            for b in baselines:
                est = estimate(fields, b)
                times[b] += est.wall_time
                eps[b].append(relative_error(est.gamma, exact.gamma, m))
            if args.randomization:
                r = estimate(fields, "randomization", samples=args.randomization, seed=0)
                times["randomization"] += r.wall_time
                eps["randomization"].append(relative_error(r.gamma, exact.gamma, m))
        for method, values in eps.items():
            if not values:
                continue
            rows[method] = {**metrics(values, dist), "s_per_sample": times[method] / len(samples)}
            if method in used:
                rows[method]["exact_above"] = used[method]
            text = method.removeprefix("cnn_exact_above_")
            label = (
                f"cnn ({model_name})"
                if method == "cnn"
                else f"cnn, exact above {text}"
                + (f" ({used[method]:.4g})" if text == "auto" else "")
                if method in hybrids
                else f"randomization N={args.randomization}"
                if method == "randomization"
                else method
            )
            m = rows[method]
            print(
                f"| {name} | {m['cells']} | {label} | {m['mean_abs']:.2e} | {m['q9999']:.2e} "
                f"| {m['max_abs']:.2e} | "
                + " | ".join(f"{m[f'mean_abs_d{lo}']:.1e}" for lo, _ in STRATA)
                + f" | {m['s_per_sample']:.3g} |"
            )
        if "randomization" in rows:
            keys = ("mean_abs", "q9999", "max_abs")
            for method in ("cnn", *hybrids):
                rows[f"{method}_beats_randomization"] = all(
                    rows[method][k] <= rows["randomization"][k] for k in keys
                )
        selinv = times["selinv"] / len(samples)
        rows["selinv_s_per_sample"] = selinv
        print(
            f"\n{name}: selinv (exact) {selinv:.3g} s/sample; time / selinv's: "
            + ", ".join(f"{k} {rows[k]['s_per_sample'] / selinv:.2f}" for k in ("cnn", *hybrids))
            + "\n"
        )
        rows["cnn_strata"] = merge_strata(parts)
        if covered and np.concatenate(covered).size:  # none when every cell was solved
            rows["cnn_error_estimate_coverage"] = float(np.concatenate(covered).mean())
            err = np.concatenate([f[0] for f in flagged])
            est = np.concatenate([f[1] for f in flagged])
            bad = err > FLAG
            rows["cnn_error_estimate_flags"] = {
                "bad_cells": int(bad.sum()),
                "bad_flagged": float(np.mean(est[bad] > FLAG)) if bad.any() else None,
                "all_flagged": float(np.mean(est > FLAG)),
            }
            share = rows["cnn_error_estimate_flags"]["bad_flagged"]
            print(
                f"\n{name}: the cnn's |ε| is within its error estimate on "
                f"{100 * rows['cnn_error_estimate_coverage']:.1f} % of the cells its network "
                "serves and estimates; of the "
                f"{int(bad.sum())} cells with |ε| > {FLAG:g}, "
                + ("none" if share is None else f"{100 * share:.0f} %")
                + f" have an estimate above it ({100 * np.mean(est > FLAG):.1f} % of all "
                "cells do)\n"
            )
        if args.strata:
            print(f"\n{name}, cnn by stratum:\n\n{strata_table(rows['cnn_strata'])}\n")
        report[name] = rows
    print(json.dumps({"model": args.model, "cases": report}))


if __name__ == "__main__":
    main()
