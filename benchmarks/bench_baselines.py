"""How far each O(n) baseline is from exact γ: the size of what a network must correct.

    python benchmarks/bench_baselines.py [--cases orca1,natl025,toy_table8] [--samples 1]

A network trained against a baseline errs in proportion to how far that baseline is off
(on ORCA1 the default network's mean |ε| rises from 4.9e-3 where |t| < 0.01 to 5.4e-2 where
|t| is 0.8–1.5, ``t = log(γ²/γ²_base)``). For each grid of ``bench_generalization`` this
prints, per baseline, mean |t| and the cells with |t| ≥ 0.1 and ≥ 0.4, and their ratio to the
images baseline's. Besides ``images`` and ``lattice`` it scores smoothed images values: the
geometric mean of a cell's images γ² and the mean of log γ²_images over the ocean cells of
the k×k square around it (``ocean_mean_k``, weight w; across the wrap and the fold; the
images value on its box-exact cells): ``smoothed_images_gamma_squared`` of
:mod:`diffnorm.ml.features`, whose 3×3, w 0.5 is the ``log_images_smooth`` target's
baseline. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
from bench_generalization import cases

from diffnorm.methods import estimate
from diffnorm.methods.images import images_gamma_squared
from diffnorm.methods.lattice import lattice_gamma_squared
from diffnorm.ml.features import smoothed_images_gamma_squared

SMOOTHED = ((3, 0.5), (3, 1.0), (5, 0.5), (5, 1.0))  # (k, w)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default="orca1,natl025,toy_table8")
    parser.add_argument("--samples", type=int, default=1, help="draws for orca1 and natl025")
    args = parser.parse_args()
    report: dict[str, dict] = {}
    print("| case | baseline | mean abs(t) | cells abs(t) ≥ 0.1 | ≥ 0.4 | ≥ 0.4 vs images |")
    print("|---|---|---|---|---|---|")
    for name, samples in cases(args.cases.split(","), args.samples).items():
        t: dict[str, list[np.ndarray]] = {}
        for fields in samples:
            mask = np.asarray(fields.mask, dtype=bool)
            exact = estimate(fields, "selinv").gamma ** 2
            images = images_gamma_squared(fields)
            bases = {"images": images, "lattice": lattice_gamma_squared(fields)}
            for k, w in SMOOTHED:
                bases[f"ocean_mean_{k}, w {w:g}"] = smoothed_images_gamma_squared(fields, k, w)
            for label, base in bases.items():
                t.setdefault(label, []).append(np.abs(np.log(exact[mask] / base[mask])))
        rows = {}
        for label, parts in t.items():
            a = np.concatenate(parts)
            rows[label] = {
                "mean_abs_t": float(a.mean()),
                "cells_t_0.1": int((a >= 0.1).sum()),
                "cells_t_0.4": int((a >= 0.4).sum()),
                "cells": int(a.size),
            }
        ref = max(rows["images"]["cells_t_0.4"], 1)
        for label, r in rows.items():
            print(
                f"| {name} | {label} | {r['mean_abs_t']:.3f} | {r['cells_t_0.1']} "
                f"| {r['cells_t_0.4']} | {r['cells_t_0.4'] / ref:.2f} |"
            )
        report[name] = rows
    print(json.dumps(report))


if __name__ == "__main__":
    main()
