"""Every method against an exact reference on one grid: errors (DESIGN §5) and wall times."""

from __future__ import annotations

import csv
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from diffnorm.fields import Fields
from diffnorm.methods import (
    EXACT_METHODS,
    GammaResult,
    Progress,
    check_method,
    estimate,
    exact_options,
)
from diffnorm.metrics import (
    METRIC_LABELS,
    METRIC_NAMES,
    distance_to_coast,
    error_by_distance,
    relative_error,
    sample_metrics,
)
from diffnorm.operator import make_operator

MethodSpec = tuple[str, dict[str, Any]]

DEFAULT_METHODS: tuple[MethodSpec, ...] = (
    ("analytic", {}),
    ("randomization", {"samples": 100}),
    ("randomization", {"samples": 1000}),
    ("randomization", {"samples": 10000}),
)


def parse_method(text: str) -> MethodSpec:
    """``name``, ``randomization:N`` (samples, e.g. ``randomization:1000``) or ``cnn:τ`` (the
    cnn with the cells whose error estimate is above τ solved exactly, e.g. ``cnn:0.0125``;
    ``cnn:auto``: the model's calibrated τ)."""
    name, _, arg = text.partition(":")
    name = name.strip()
    if not arg:
        return name, {}
    if name == "cnn":
        from diffnorm.methods.cnn import exact_above_value

        try:
            return name, {"exact_above": exact_above_value(arg)}
        except ValueError:
            raise ValueError(
                f"τ in {text!r} must be auto or a number >= 0, e.g. cnn:0.0125"
            ) from None
    if name != "randomization":
        raise ValueError(
            f"only randomization (':N' samples) and cnn (':τ' exact above) take an argument, "
            f"got {text!r}"
        )
    try:
        samples = float(arg)
    except ValueError:
        samples = math.nan
    if not (samples >= 1 and samples.is_integer()):  # before the reference's solve
        raise ValueError(
            f"samples in {text!r} must be a whole number >= 1, e.g. randomization:1000"
        )
    return name, {"samples": int(samples)}


def label(spec: MethodSpec) -> str:
    name, options = spec
    if name == "randomization":
        return f"randomization N={options.get('samples', 1000):g}"
    tau = options.get("exact_above")
    if name == "cnn" and tau is not None:
        return f"cnn, exact above {tau if isinstance(tau, str) else format(tau, 'g')}"
    return name


@dataclass
class Row:
    label: str
    result: GammaResult
    metrics: dict[str, float]
    by_distance: dict[int, float] = field(default_factory=dict)


@dataclass
class Comparison:
    fields: Fields
    reference: GammaResult
    rows: list[Row]
    failed: list[tuple[str, str]] = field(default_factory=list)  # (label, why) per method

    def markdown(self) -> str:
        ref_time = self.reference.wall_time
        head = ["method", *(METRIC_LABELS[m] for m in METRIC_NAMES), "wall time (s)", "× ref time"]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        ref_label = f"{self.reference.method} (reference)"
        lines.append(
            f"| {ref_label} | " + " | ".join("–" for _ in METRIC_NAMES) + f" | {ref_time:.3g} | 1 |"
        )
        for row in self.rows:
            cells = [f"{row.metrics[m]:.2e}" for m in METRIC_NAMES]
            ratio = row.result.wall_time / ref_time if ref_time > 0 else float("nan")
            lines.append(
                f"| {row.label} | "
                + " | ".join(cells)
                + f" | {row.result.wall_time:.3g} | {ratio:.3g} |"
            )
        for name, why in self.failed:  # one table row whatever the message (OOM's are long)
            why = " ".join(why.split()).replace("|", "\\|")
            lines.append(f"| {name} | failed: {why} |" + " – |" * (len(head) - 2))
        return "\n".join(lines)

    def write_csv(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["method", *METRIC_NAMES, "wall_time_s", "reference"])
            for row in self.rows:
                writer.writerow(
                    [row.label, *(row.metrics[m] for m in METRIC_NAMES), row.result.wall_time]
                    + [self.reference.method]
                )
        return path

    def write_distance_csv(self, path: str | Path) -> Path:
        path = Path(path)
        distances = sorted({d for row in self.rows for d in row.by_distance})
        with path.open("w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["method", *(f"d{d}" for d in distances)])
            for row in self.rows:
                writer.writerow([row.label, *(row.by_distance.get(d, "") for d in distances)])
        return path


class MethodFailedWarning(UserWarning):
    """A method of :func:`compare` raised; its error is in ``Comparison.failed``."""


def compare(
    fields: Fields,
    methods: Sequence[MethodSpec] = DEFAULT_METHODS,
    reference: str = "selinv",
    tolerance: float = 1e-6,
    seed: int = 0,
    backend: str = "sparse",
    progress_for: Callable[[str], Progress | None] | None = None,
) -> Comparison:
    """Run the exact ``reference`` (``selinv``, ``probing`` or ``brute``) and each method on
    the same operator. A method that fails (a model that does not serve the grid's M, memory)
    is listed in ``failed`` with its error and warned about (:class:`MethodFailedWarning`),
    and the others still run: a long comparison does not lose its finished rows to its last
    method."""
    if reference not in EXACT_METHODS:
        raise ValueError(f"reference must be one of {', '.join(EXACT_METHODS)}, got {reference!r}")
    for name, options in methods:  # a typo must not cost the reference's solve first
        check_method(name, options)
    op = make_operator(fields, backend)
    progress_for = progress_for or (lambda _: None)
    ref_options = exact_options(reference, tolerance)
    ref = estimate(op, reference, progress=progress_for(reference), **ref_options)
    distance = distance_to_coast(fields)
    rows, failed = [], []
    for spec in methods:
        name, options = spec
        if name == "randomization":
            options = {"seed": seed, **options}
        try:
            result = estimate(op, name, progress=progress_for(label(spec)), **options)
        except Exception as exc:  # any method's failure is reported, not fatal
            failed.append((label(spec), f"{type(exc).__name__}: {exc}"))
            warnings.warn(
                f"compare: {failed[-1][0]} failed ({failed[-1][1]}); the other methods ran, "
                "and Comparison.failed lists it",
                MethodFailedWarning,
                stacklevel=2,
            )
            continue
        counted = fields.counted
        eps = np.full(fields.shape, np.nan)
        eps[counted] = relative_error(result.gamma, ref.gamma, counted)
        # a cnn that solved every cell (a grid of small basins, or doubted cells whose halos
        # held most of it) is an exact solve: its row says so, not only its zero errors
        whole = result.info.get("exact_basins_only") or result.info.get("exact_above_whole_grid")
        rows.append(
            Row(
                label(spec) + (" (every cell solved exactly)" if whole else ""),
                result,
                sample_metrics(result.gamma, ref.gamma, counted),
                error_by_distance(eps, distance, counted),
            )
        )
    return Comparison(fields, ref, rows, failed)
