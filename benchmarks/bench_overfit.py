"""Can a network fit the tails of a few training windows when it sees them many times?

    OMP_NUM_THREADS=2 python benchmarks/bench_overfit.py --data data/probe200 --windows 8 \
        --steps 1200 [--start windows-general-m10 | --start scratch]

Trains on the first ``--windows`` training windows of a dataset folder only, with the
training loss of the start model (ε² + ε⁴/τ², its τ), AdamW and a cosine schedule, and
prints mean |ε|, the mean of the per-window max |ε| and the max |ε| over those windows every
tenth of the run (batch-norm statistics in eval mode). A network whose per-window max stays
where it is cannot represent the tails; one that drives it down can, and what it lacked on
the full data was passes over them. Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import inspect
import json
import time

import numpy as np
import torch

from diffnorm.data.dataset import load_split
from diffnorm.ml.lit import GammaModel
from diffnorm.ml.modelfile import resolve_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="data/probe200", help="dataset folder")
    parser.add_argument("--model", default="windows-general-m10", help="encoding and loss")
    parser.add_argument("--start", default="model", help="'model' (its weights) or 'scratch'")
    parser.add_argument("--windows", type=int, default=8)
    parser.add_argument("--steps", type=int, default=1200)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    base = resolve_model(args.model)
    # the start model's own training options (architecture, encoding, τ), weights if asked
    hp = base.created.get("hyperparameters", {})
    options = inspect.signature(GammaModel).parameters
    model = GammaModel(
        **{k: v for k, v in hp.items() if k in options and k != "init_from"},
        init_from=args.model if args.start == "model" else None,
    )
    if model.arch != base.arch:
        raise SystemExit(f"{args.model}: rebuilt {model.arch} != stored {base.arch}")
    model.stats = base.stats
    enc = base.encoding
    items = [enc.encode(s, base.stats) for s in load_split(args.data, "train")[: args.windows]]
    batch_all = {k: torch.stack([it[k] for it in items]) for k in items[0]}
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, args.steps)
    gen = torch.Generator().manual_seed(args.seed)

    def measure() -> dict:
        model.eval()
        with torch.no_grad():
            eps = model.relative_error(model(batch_all["x"]), batch_all).abs()
        model.train()
        m = batch_all["mask"]
        per = [float(eps[k][m[k]].max()) for k in range(len(items))]
        return {
            "mean": float(eps[m].mean()),
            "per_window_max": float(np.mean(per)),
            "max": max(per),
        }

    rows = [{"step": 0, "seconds": 0.0, **measure()}]
    t0 = time.perf_counter()
    print(f"{'step':>6} {'s':>6} {'mean':>9} {'win max':>9} {'max':>9}")
    for step in range(1, args.steps + 1):
        idx = torch.randperm(len(items), generator=gen)[: args.batch]
        batch = {k: v[idx] for k, v in batch_all.items()}
        loss = model._loss(model(batch["x"]), batch)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        opt.step()
        sched.step()
        if step % max(1, args.steps // 10) == 0 or step == args.steps:
            rows.append({"step": step, "seconds": time.perf_counter() - t0, **measure()})
    for r in rows:
        print(
            f"{r['step']:6d} {r['seconds']:6.0f} {r['mean']:9.2e} "
            f"{r['per_window_max']:9.3f} {r['max']:9.3f}"
        )
    print(json.dumps({"args": vars(args), "rows": rows}))


if __name__ == "__main__":
    main()
