"""``diffnorm evaluate``: a trained network against randomization and analytic on the same
samples of a split: per-sample metrics, mean ± std, error by distance to the coast, maps."""

from __future__ import annotations

import csv
import json
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from diffnorm.cells import cell_geometry
from diffnorm.data.dataset import pooled_split
from diffnorm.fields import Fields
from diffnorm.methods import estimate
from diffnorm.methods.cnn import NETWORK_EXACT_BASINS
from diffnorm.metrics import (
    METRIC_LABELS,
    METRIC_NAMES,
    aggregate,
    distance_to_coast,
    error_by_distance,
    error_metrics,
    error_strata,
    merge_strata,
    relative_error,
)
from diffnorm.ml.calibration import ErrorModel, HeldOut, network_correction
from diffnorm.ml.modelfile import GammaNetwork, resolve_model
from diffnorm.operator import make_operator

WORST_PER_SAMPLE = 10
WORST_COLUMNS = ("sample", "j", "i", "eps", "gamma", "distance", "open_faces")


def worst_cells(
    eps: np.ndarray, gamma: np.ndarray, dist: np.ndarray, fields: Fields, k: int
) -> list[dict]:
    """The ``k`` ocean cells of largest ``|ε|`` (grids ``(ny, nx)``, NaN on land): where they
    are, their exact γ, distance to the coast and number of open faces (0–4: a dead end has 1,
    a one-cell channel 2), so that a model's tail can be traced to the geometry behind it."""
    mask = fields.counted
    faces = cell_geometry(fields)["open_faces"]
    order = np.argsort(-np.nan_to_num(np.abs(eps), nan=-1.0), axis=None)[:k]
    rows = []
    for j, i in zip(*np.unravel_index(order, eps.shape), strict=True):
        if not mask[j, i]:
            break
        rows.append(
            {
                "j": int(j),
                "i": int(i),
                "eps": float(eps[j, i]),
                "gamma": float(gamma[j, i]),
                "distance": float(dist[j, i]),
                "open_faces": int(faces[j, i]),
            }
        )
    return rows


def evaluate(
    checkpoint: str | Path | GammaNetwork,
    root: str | Path,
    split: str = "test",
    samples: Sequence[int] = (100, 1000, 10000),
    seed: int = 0,
    out_dir: str | Path | None = None,
    progress=None,
    device: str = "cpu",
) -> dict:
    """Per-sample DESIGN §5 metrics of the network (a model file or checkpoint, in eval mode)
    and of ``analytic`` and ``randomization`` with each N in ``samples`` on the same samples,
    with wall times; tables and plots in ``out_dir``. ``root``: a dataset folder, or several
    joined by commas (pooled)."""
    model = resolve_model(checkpoint)
    data = pooled_split(str(root), split)
    if not data:
        raise ValueError(f"{root} has no {split!r} samples")
    methods = ["cnn", "analytic"] + [f"randomization N={n}" for n in samples]
    per_sample: dict[str, list[dict]] = {m: [] for m in methods}
    times: dict[str, list[float]] = {m: [] for m in methods}
    by_dist: dict[str, list[dict]] = {m: [] for m in methods}
    cnn_abs = []
    cnn_eps: list[HeldOut] = []
    worst: list[dict] = []
    strata: dict[str, list[dict]] = {m: [] for m in methods}
    for k, s in enumerate(data):
        f, m = s.fields, s.fields.counted
        dist = distance_to_coast(f)
        # the network measured on every basin it would serve beside dense ones (a window is
        # often one basin of fewer cells than the method's default exact_basins)
        c = estimate(f, "cnn", model=model, device=device, exact_basins=NETWORK_EXACT_BASINS)
        results = {"cnn": (c.gamma, c.wall_time)}
        a = estimate(f, "analytic")
        results["analytic"] = (a.gamma, a.wall_time)
        op = make_operator(f)
        for n in samples:
            r = estimate(op, "randomization", samples=n, seed=seed + k)
            results[f"randomization N={n}"] = (r.gamma, r.wall_time)
        for name, (gamma_hat, wall) in results.items():
            eps = relative_error(gamma_hat, s.gamma, m)
            grid = np.full(f.shape, np.nan)
            grid[m] = eps
            per_sample[name].append({"sample": s.name, **error_metrics(eps)})
            times[name].append(wall)
            by_dist[name].append(error_by_distance(grid, dist, m))
            if name == "cnn" or name.startswith("randomization"):
                strata[name].append(error_strata(grid, f))
            if name == "cnn":
                cnn_abs.append(np.abs(grid))
                # the error model describes the network: cells solved exactly stay out of it
                held = np.where(c.exact, np.nan, grid) if c.exact is not None else grid
                t = network_correction(f, gamma_hat, model.target)
                cnn_eps.append((held, f) if t is None else (held, f, t))
                cells = worst_cells(grid, s.gamma, dist, f, WORST_PER_SAMPLE)
                worst += [{"sample": s.name, **c} for c in cells]
        if progress:
            progress(k + 1, len(data))
    summary = {
        name: {**aggregate(per_sample[name]), "wall_time_s": float(np.mean(times[name]))}
        for name in methods
    }
    distances = sorted({d for rows in by_dist.values() for r in rows for d in r})
    mean_by_dist = {
        name: {d: float(np.mean([r[d] for r in by_dist[name] if d in r])) for d in distances}
        for name in methods
    }
    report = {
        "split": split,
        "samples": len(data),
        "summary": summary,
        "by_distance": mean_by_dist,
        "strata": {name: merge_strata(parts) for name, parts in strata.items() if parts},
        "per_sample": per_sample,
        "worst_cells": sorted(worst, key=lambda c: -abs(c["eps"])),
        # store with `diffnorm export --error-model` (calibrate on a split that is not the
        # one the model's card reports)
        "error_model": ErrorModel.fit(cnn_eps).to_dict(),
    }
    if out_dir is not None:
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # land cells: all NaN
            mean_abs = np.nanmean(cnn_abs, axis=0)
        write_report(report, Path(out_dir), data[0].fields, mean_abs)
    return report


def markdown_table(report: dict) -> str:
    head = ["method", *(METRIC_LABELS[m] for m in METRIC_NAMES), "time per sample (s)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, row in report["summary"].items():
        cells = [f"{row[m][0]:.2e} ± {row[m][1]:.1e}" for m in METRIC_NAMES]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {row['wall_time_s']:.3g} |")
    return "\n".join(lines)


def strata_markdown(report: dict) -> str:
    """The network's error by stratum (coast distance, open faces, passages, D, anisotropy),
    beside the largest randomization's."""
    strata = report.get("strata", {})
    if "cnn" not in strata:
        return ""
    others = [n for n in strata if n != "cnn"]
    ref = others[-1] if others else None
    head = "| stratum | cells | cnn mean abs(ε) | cnn max abs(ε) |"
    head += f" {ref} mean | {ref} max |" if ref else ""
    lines = [head, "|" + "---|" * (4 + 2 * bool(ref))]
    for name, rows in strata["cnn"].items():
        for label, r in rows.items():
            line = f"| {name} {label} | {r['cells']} | {r['mean_abs']:.2e} | {r['max_abs']:.2e} |"
            if ref:
                o = strata[ref].get(name, {}).get(label)
                line += f" {o['mean_abs']:.2e} | {o['max_abs']:.2e} |" if o else " – | – |"
            lines.append(line)
    return "\n".join(lines)


def write_report(report: dict, out: Path, fields, cnn_mean_abs: np.ndarray) -> None:
    from diffnorm.plots import _pyplot, plot_error_maps

    out.mkdir(parents=True, exist_ok=True)
    text = markdown_table(report) + "\n\n## By stratum\n\n" + strata_markdown(report) + "\n"
    (out / "evaluation.md").write_text(text)
    summary = {"split": report["split"], "samples": report["samples"], **report["summary"]}
    summary["strata"] = report.get("strata", {})
    summary["error_model"] = report["error_model"]
    (out / "evaluation.json").write_text(json.dumps(summary, indent=2) + "\n")
    with (out / "evaluation_per_sample.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["method", "sample", *METRIC_NAMES])
        for name, rows in report["per_sample"].items():
            for r in rows:
                w.writerow([name, r["sample"], *(r[m] for m in METRIC_NAMES)])
    with (out / "worst_cells.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(WORST_COLUMNS)
        for c in report["worst_cells"]:
            w.writerow([c[k] for k in WORST_COLUMNS])
    dists = sorted({d for v in report["by_distance"].values() for d in v})
    with (out / "error_by_distance.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["method", *(f"d{d}" for d in dists)])
        for name, row in report["by_distance"].items():
            w.writerow([name, *(row.get(d, "") for d in dists)])
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4), constrained_layout=True)
    for name, row in report["by_distance"].items():
        ax.semilogy(list(row), list(row.values()), marker="o", label=name)
    ax.set(xlabel="distance to the coast (cells; last bin: farther)", ylabel="mean abs(ε)")
    ax.legend(fontsize=8)
    fig.savefig(out / "error_by_distance.png", dpi=110)
    plt.close(fig)
    plot_error_maps(fields, {"cnn: mean over samples": cnn_mean_abs}, out / "cnn_error_map.png")


EVALUATION_HINT = "`diffnorm evaluate -m MODEL -d DATA --out DIR` writes DIR/evaluation.json"


def read_evaluation(path: str | Path, what: str = "evaluation") -> dict:
    """An ``evaluation.json`` of :func:`evaluate` as a dict, or a ValueError naming ``what``
    (the option that gave it) and how to make one."""
    try:
        report = json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{what}: {path} is not JSON ({exc}); {EVALUATION_HINT}") from None
    if not isinstance(report, dict):
        raise ValueError(f"{what}: {path} is not an evaluation.json; {EVALUATION_HINT}")
    return report


def card_metrics(path: str | Path, what: str = "metrics") -> dict[str, float]:
    """The network's mean metrics from an ``evaluation.json`` (for a model file's card)."""
    summary = read_evaluation(path, what)
    if not isinstance(summary.get("cnn"), dict) or "samples" not in summary:
        raise ValueError(
            f"{what}: {path} is not an evaluation.json of `diffnorm evaluate` (no 'cnn' "
            f"metrics in it); {EVALUATION_HINT}"
        )
    cnn = summary["cnn"]
    out = {k: float(v[0]) for k, v in cnn.items() if isinstance(v, list)}
    strata = summary.get("strata", {}).get("cnn")
    return {"samples": summary["samples"], **out, **({"strata": strata} if strata else {})}
