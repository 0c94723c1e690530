"""The default network on a GPU, checked against the CPU: one short call on a lent GPU machine.

    python scripts/gpu_check.py [--out DIR]     # DIR/gpu_check.json (default $OUT or runs/)

On one ORCA1-like sample (292×360, its F fold, M = 10): γ from ``estimate(..., "cnn")`` on
the CPU and on the GPU in float32 and bfloat16, and from the exported TorchScript fields graph
(what FTorch loads; the network alone, so compared with ``exact_basins=0, exact_fold_rows=0``
outside basins of at most 64 cells) on the CPU and the GPU. For each: the largest and mean
relative difference |γ/γ_cpu − 1|, the error against exact γ (selinv) and the warm wall time
(median of 5). Without a GPU it runs the CPU half, which the test suite checks already; the
point of the script is the GPU half (no CI machine has one).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from common import benchmark_fields  # noqa: E402

from diffnorm.methods import estimate  # noqa: E402
from diffnorm.metrics import sample_metrics  # noqa: E402
from diffnorm.ml.export import export  # noqa: E402
from diffnorm.ml.modelfile import resolve_model  # noqa: E402


def timed(fn, repeats: int = 5) -> tuple[object, float]:
    """``fn()``'s result and its warm median wall time (s)."""
    result = fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return result, statistics.median(times)


def relative(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    r = np.abs(a[mask] / b[mask] - 1.0)
    return {"max": float(r.max()), "mean": float(r.mean())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.environ.get("OUT", "runs"))
    args = parser.parse_args()
    cuda = torch.cuda.is_available()
    report: dict[str, object] = {
        "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name(0) if cuda else None,
        "cpu_threads": torch.get_num_threads(),
    }
    fields = benchmark_fields("orca1")
    mask = fields.mask
    exact, t_exact = timed(lambda: estimate(fields, "selinv").gamma, repeats=1)
    report["selinv_s"] = t_exact
    model = resolve_model(None, fields)
    report["model"] = model.name

    def cnn(device: str, precision: str = "float32", **raw):
        return lambda: (
            estimate(
                fields, "cnn", model=model.name, device=device, precision=precision, **raw
            ).gamma
        )

    cpu, t = timed(cnn("cpu"))
    report["cnn_cpu"] = {"s": t, "error": sample_metrics(cpu, exact, mask)}
    # the graph is the network alone: no fold rows solved exactly, and basins of at most 64
    # cells left to the host (the cnn method caps or solves them): compared on the others
    raw = cnn("cpu", exact_basins=0, exact_fold_rows=0)()
    labels = fields.basin_labels
    sizes = np.bincount(labels.ravel())
    large = mask & (sizes[labels] > 64)
    if cuda:
        for precision in ("float32", "bfloat16"):
            gpu, t = timed(cnn("cuda", precision))
            report[f"cnn_cuda_{precision}"] = {
                "s": t,
                "vs_cpu": relative(gpu, cpu, mask),
                "error": sample_metrics(gpu, exact, mask),
            }

    with tempfile.TemporaryDirectory() as tmp:
        path, _ = export(
            model,
            Path(tmp) / "gamma.ts",
            "torchscript",
            periodic_x=True,
            north_fold=fields.north_fold,
        )
        inputs = [
            torch.from_numpy(np.array(a, dtype=np.float64))[None]
            for a in (mask, fields.area, fields.alpha_x, fields.alpha_y)
        ]
        for device in ("cpu", "cuda") if cuda else ("cpu",):
            graph = torch.jit.load(str(path), map_location=device)
            moved = [x.to(device) for x in inputs]

            def run(graph=graph, moved=moved, device=device):
                with torch.no_grad():
                    out = graph(*moved)
                if device == "cuda":
                    torch.cuda.synchronize()
                return out[0].double().cpu().numpy()

            gamma, t = timed(run)
            report[f"torchscript_{device}"] = {
                "s": t,
                "vs_network_cpu": relative(gamma, raw, large),
                "error": sample_metrics(gamma, exact, mask),
            }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_check.json").write_text(json.dumps(report, indent=1, default=float) + "\n")
    print(json.dumps(report, indent=1, default=float))


if __name__ == "__main__":
    main()
