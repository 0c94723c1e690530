"""CNN inference and training throughput against the exact and randomized methods, in one run.

    python benchmarks/bench_cnn.py [--model NAME_OR_FILE] [--grid orca1] [--samples 10000]
    python benchmarks/bench_cnn.py --quick        # 4° grid, N = 100: a smoke run

On one sample of the grid (D between 1.5 and 6 cells, M = 10): wall time of the ``cnn``
method (features, forward pass, γ; basins of at most 64 cells solved apart, as the model cards
measure the network; warm, median of repeats) on CPU and, when there is one, on
the GPU, in float32 and in bfloat16; of ``selinv`` (the default exact method, tolerance 1e-6,
the reference: warm, its ordering cached, as for every sample after the first on a grid) and
``randomization`` with N samples; the cnn with the cells whose error estimate is above τ
solved exactly (``--exact-above``); the exported TorchScript fields graph (what FTorch loads)
on each device; the CNN's error against selinv; the ratios. On a GPU, how far each result is
from the CPU's (``vs_cpu``: max |γ/γ_cpu − 1|; the graph is the network alone, so it is set
beside ``cnn`` with ``exact_basins=0, exact_fold_rows=0``, outside basins of at most 64 cells,
which the method caps or solves). Then training throughput (samples/s, forward + backward +
step, batch of 4) of the same network on CPU and GPU at the grid's size. The last line printed
is one JSON object with all numbers.

    python benchmarks/bench_cnn.py --samples "" --exact-above "" --train-steps 1
        # the GPU check of scripts/gpu_recipe.sh (CHECK=auto; ~60 s on the H200 machine)
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from common import benchmark_fields, exact_above_values

from diffnorm.methods import estimate
from diffnorm.methods.cnn import NETWORK_EXACT_BASINS
from diffnorm.metrics import sample_metrics
from diffnorm.ml.export import export
from diffnorm.ml.modelfile import resolve_model
from diffnorm.ml.networks import PRECISIONS, build_network


def median_time(fn, repeats: int) -> float:
    fn()  # warm-up: allocations, kernel selection, caches
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def max_relative(a: np.ndarray, b: np.ndarray, cells: np.ndarray) -> float:
    return float(np.max(np.abs(a[cells] / b[cells] - 1.0)))


def torchscript_rows(model, fields, devices, exact, repeats: int) -> dict[str, dict]:
    """The exported fields graph on each device, against the network alone on the CPU."""
    alone = estimate(fields, "cnn", model=model, device="cpu", exact_basins=0, exact_fold_rows=0)
    labels = fields.basin_labels
    served = fields.counted & (np.bincount(labels.ravel())[labels] > 64)
    arrays = (fields.mask, fields.area, fields.alpha_x, fields.alpha_y)
    inputs = [torch.from_numpy(np.array(a, dtype=np.float64))[None] for a in arrays]
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        path, _ = export(
            model,
            Path(tmp) / "g.ts",
            "torchscript",
            fields.periodic_x,
            north_fold=fields.north_fold,
        )
        for dev in devices:
            graph = torch.jit.load(str(path), map_location=dev)
            moved = [x.to(dev) for x in inputs]
            result = {}

            def run(graph=graph, moved=moved, dev=dev, result=result) -> None:
                with torch.no_grad():
                    result["gamma"] = graph(*moved)[0].double().cpu().numpy()  # waits for it

            rows[f"torchscript ({dev}, float32)"] = {
                "time_s": median_time(run, repeats),
                "vs_cpu": max_relative(result["gamma"], alone.gamma, served),
                **sample_metrics(result["gamma"], exact.gamma, fields.counted),
            }
    return rows


def train_throughput(net, x: torch.Tensor, device: str, steps: int) -> float:
    """Samples per second of optimizer steps on a batch ``x`` (mixed precision on GPU)."""
    net = net.to(device).train()
    x = x.to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    cuda = device == "cuda"

    def step() -> None:
        with torch.autocast(device, dtype=torch.bfloat16, enabled=cuda):
            loss = net(x).float().pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if cuda:
            torch.cuda.synchronize()

    step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * x.shape[0] / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model file or shipped name (default)")
    parser.add_argument("--grid", default="orca1")
    parser.add_argument("--samples", default="10000", help="randomization N list")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--train-steps", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--exact-above",
        default="auto",
        help="also time the cnn (cpu, float32) with the cells whose error estimate is above "
        "each of these solved exactly (comma-separated; auto: the model's τ; '' for none)",
    )
    args = parser.parse_args()

    samples = [100] if args.quick else [int(float(s)) for s in args.samples.split(",") if s]
    grid = "latlon 4°" if args.quick else args.grid
    fields = benchmark_fields(args.grid, d_max=6.0, seed=args.seed, quick=args.quick)
    model = resolve_model(args.model, fields)
    print(f"grid {grid} {fields.shape}, {fields.n_ocean} ocean cells; model {model.name}")

    exact = estimate(fields, "selinv", tolerance=1e-6)
    warm = median_time(lambda: estimate(fields, "selinv", tolerance=1e-6), 3)
    rows = {"selinv": {"time_s": warm}}
    for n in samples:
        r = estimate(fields, "randomization", samples=n, seed=args.seed)
        rows[f"randomization N={n}"] = {
            "time_s": r.wall_time,
            **sample_metrics(r.gamma, exact.gamma, fields.counted),
        }
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for dev, precision in itertools.product(devices, PRECISIONS):
        result = {}
        # a fresh copy each time: what Fields caches (distances, runs) must not flatter a repeat
        fresh = iter([dataclasses.replace(fields) for _ in range(2 * args.repeats + 2)])
        # the network as its card measures it (NETWORK_EXACT_BASINS): comparable with every
        # earlier run; the default (EXACT_BASINS) adds ~10 ms on ORCA1 for its two seas
        options = {
            "model": model,
            "device": dev,
            "precision": precision,
            "exact_basins": NETWORK_EXACT_BASINS,
        }

        def run(result=result, fresh=fresh, options=options) -> None:
            result["r"] = estimate(next(fresh), "cnn", **options)

        t = median_time(run, args.repeats)
        forward = median_time(
            lambda dev=dev, fresh=fresh, p=precision: model.predict_target(
                next(fresh), dev, precision=p
            ),
            args.repeats,
        )
        rows[f"cnn ({dev}, {precision})"] = {
            "time_s": t,
            "predict_target_s": forward,
            **sample_metrics(result["r"].gamma, exact.gamma, fields.counted),
        }
        if dev == "cpu" and precision == "float32":
            on_cpu = result["r"].gamma
        else:
            rows[f"cnn ({dev}, {precision})"]["vs_cpu"] = max_relative(
                result["r"].gamma, on_cpu, fields.counted
            )
    rows.update(torchscript_rows(model, fields, devices, exact, args.repeats))
    for text, tau in exact_above_values(args.exact_above).items():
        result = {}
        fresh = iter([dataclasses.replace(fields) for _ in range(args.repeats + 1)])

        def hybrid(result=result, fresh=fresh, tau=tau) -> None:
            result["r"] = estimate(
                next(fresh),
                "cnn",
                model=model,
                device="cpu",
                exact_above=tau,
                exact_basins=NETWORK_EXACT_BASINS,
            )

        time_s = median_time(hybrid, args.repeats)
        used = result["r"].info["exact_above"]  # "auto": the model's τ
        label = text + (f" ({used:.4g})" if text == "auto" else "")
        rows[f"cnn (cpu, float32), exact above {label}"] = {
            "time_s": time_s,
            "exact_above": used,
            **sample_metrics(result["r"].gamma, exact.gamma, fields.counted),
        }
    for row in rows.values():
        row["x_selinv_time"] = row["time_s"] / rows["selinv"]["time_s"]
    print("| method | wall time (s) | × selinv | mean abs(ε) | max abs(ε) | vs cpu |")
    print("|---|---|---|---|---|---|")
    for name, row in rows.items():
        errs = f"{row['mean_abs']:.2e} | {row['max_abs']:.2e}" if "mean_abs" in row else "– | –"
        vs = f"{row['vs_cpu']:.1e}" if "vs_cpu" in row else "–"
        print(f"| {name} | {row['time_s']:.4g} | {row['x_selinv_time']:.3g} | {errs} | {vs} |")

    h = model.encoding.halo
    x = torch.randn(4, model.arch["in_channels"], fields.shape[0] + 2 * h, fields.shape[1] + 2 * h)

    throughput = {}
    for dev in devices:
        net = build_network(**model.arch)
        throughput[dev] = train_throughput(net, x, dev, args.train_steps)
        print(f"training throughput on {dev}: {throughput[dev]:.3g} samples/s at {fields.shape}")
    print(
        json.dumps(
            {
                "grid": grid,
                "shape": list(fields.shape),
                "ocean_cells": fields.n_ocean,
                "model": model.name,
                "methods": rows,
                "train_samples_per_s": throughput,
                "cpu": platform.processor() or platform.machine(),
                "threads": torch.get_num_threads(),
                "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
            }
        )
    )


if __name__ == "__main__":
    main()
