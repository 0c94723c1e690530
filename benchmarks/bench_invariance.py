"""How far is the network from the symmetries exact γ has? Padding artefacts show up here first.

    python benchmarks/bench_invariance.py [--model NAME_OR_FILE] [--cases orca1,natl025,toy_table8]
        [--shift 8]

Exact γ commutes with each of a grid's symmetries (flips, turns, and on a periodic grid any
shift of the seam). For each case the network's target ``t = log(γ̂²/γ²_baseline)`` is
predicted on the grid moved by each symmetry and moved back; ``|Δt|`` against the unmoved
prediction is printed per symmetry: max, mean, and the mean in the *edge band* (cells within
``band`` cells of the array's edges, where padding is read) against the interior. A ratio well
above 1 points at padding, not at the network's ordinary lack of equivariance. On a periodic
grid without a fold, the seam is also moved by ``--shift`` columns (a multiple of the U-Net's
``2**levels`` on a width that is one: the prediction must not move at all). This is how the
seam artefact fixed by ``UNet.wrap_context`` would have been caught: ORCA1 with its fold
removed, a shift of 176 columns, gave max |Δt| 0.15 next to the seam before the fix, 0 after.
The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
from bench_generalization import cases

from diffnorm.augment import Transform, symmetries
from diffnorm.fields import Fields
from diffnorm.ml.modelfile import resolve_model

BAND = 51  # cells: what a 3-level U-Net reads on each side (diffnorm.ml.networks.unet_extent)


def edge_band(shape: tuple[int, int], width: int) -> np.ndarray:
    ny, nx = shape
    j, i = np.ogrid[:ny, :nx]
    return (j < width) | (j >= ny - width) | (i < width) | (i >= nx - width)


def transforms(fields: Fields, shift: int) -> list[Transform]:
    out = symmetries(fields.topology)[1:]
    topo = fields.topology
    if shift and topo.periodic_x and not topo.folded:
        out.append(Transform(shift_x=shift % topo.nx))
    return out


def invariance(net, fields: Fields, shift: int, band: int) -> list[dict]:
    base = net.predict_target(fields, "cpu")
    counted = fields.counted
    edge = edge_band(fields.shape, band)
    rows = []
    for t in transforms(fields, shift):
        moved = t.restore_cells(net.predict_target(t.fields(fields), "cpu"))
        d = np.abs(moved - base)
        e, inner = d[counted & edge], d[counted & ~edge]
        j, i = np.unravel_index(int(np.argmax(np.where(counted, d, -1.0))), d.shape)
        rows.append(
            {
                "symmetry": t.name,
                "max": float(d[counted].max()),
                "mean": float(d[counted].mean()),
                "where_max": [int(j), int(i)],
                "edge_mean": float(e.mean()) if e.size else float("nan"),
                "interior_mean": float(inner.mean()) if inner.size else float("nan"),
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="cnn model (default: the shipped choice)")
    parser.add_argument("--cases", default="orca1,natl025,toy_table8")
    parser.add_argument("--shift", type=int, default=8, help="seam shift on periodic grids")
    parser.add_argument("--band", type=int, default=BAND, help="edge band width, cells")
    args = parser.parse_args()

    report: dict[str, list[dict]] = {}
    print("| case | symmetry | max abs(Δt) | at (j, i) | mean | edge band mean | interior mean |")
    print("|---|---|---|---|---|---|---|")
    for name, samples in cases(args.cases.split(","), 1).items():
        fields = samples[0]
        net = resolve_model(args.model, fields)
        report[name] = invariance(net, fields, args.shift, args.band)
        for r in report[name]:
            print(
                f"| {name} | {r['symmetry']} | {r['max']:.3g} | {tuple(r['where_max'])} | "
                f"{r['mean']:.2e} | {r['edge_mean']:.2e} | {r['interior_mean']:.2e} |",
                flush=True,
            )
    print(json.dumps(report))


if __name__ == "__main__":
    main()
