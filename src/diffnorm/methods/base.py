"""The one result type and the registry shared by every γ method."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from diffnorm.operator import DiffusionOperator

Progress = Callable[[int, int], None]
"""``progress(done, total)``: work units (right-hand sides) finished so far out of ``total``."""


@dataclass
class GammaResult:
    """γ on the grid (NaN on land or where not computed) and how it was obtained.

    ``tolerance`` is the certified bound on the relative error of γ² where the method gives
    one (exact methods: round-off); ``error_estimate`` is a per-cell estimate of |ε| when the
    method has one.
    """

    gamma: np.ndarray
    method: str
    options: dict[str, Any]
    wall_time: float
    tolerance: float | None = None
    error_estimate: np.ndarray | None = None
    info: dict[str, Any] = field(default_factory=dict)
    flags: np.ndarray | None = None  # (ny, nx) uint8 bits of diffnorm.ml.domain.FLAGS (cnn)
    # (ny, nx) bool: cells a hybrid method solved exactly (cnn: small basins, the fold band)
    exact: np.ndarray | None = None

    def variables(self) -> dict[str, tuple[np.ndarray, dict[str, Any]]]:
        """Per-cell results beside γ, to write with it: the method's error estimate and the
        cells outside a network's training data."""
        out: dict[str, tuple[np.ndarray, dict[str, Any]]] = {}
        if self.error_estimate is not None:
            out["gamma_error_estimate"] = (
                self.error_estimate,
                {"long_name": f"{self.method}'s estimate of |gamma^2/gamma_exact^2 - 1|"},
            )
        if self.flags is not None:
            from diffnorm.ml.domain import FLAGS

            out["domain_flags"] = (
                self.flags.astype(np.uint8),
                {
                    "long_name": "cells outside the network's training data (bits)",
                    "flag_masks": np.array(list(FLAGS.values()), dtype=np.uint8),
                    "flag_meanings": " ".join(FLAGS),
                },
            )
        return out

    @property
    def variance(self) -> np.ndarray:
        """``v = γ⁻²``, the diagonal of ``L W⁻¹``."""
        return 1.0 / self.gamma**2

    def attrs(self) -> dict[str, Any]:
        """Flat metadata for NetCDF attributes."""
        out: dict[str, Any] = {"method": self.method, "wall_time_s": round(self.wall_time, 6)}
        if self.tolerance is not None:
            out["certified_tolerance"] = float(self.tolerance)
        for key, value in self.options.items():
            if isinstance(value, bool):
                out[f"option_{key}"] = int(value)
            elif isinstance(value, int | float | str | np.integer | np.floating):
                out[f"option_{key}"] = value  # objects (a loaded model) are named in info
        for key, value in self.info.items():
            if isinstance(value, int | float | str | np.integer | np.floating):
                out[f"info_{key}"] = value
            elif isinstance(value, tuple | list):
                out[f"info_{key}"] = str(list(value))
        return out


MethodFn = Callable[..., "MethodOutput"]


@dataclass
class MethodOutput:
    """What a method computes on ocean cells, before it is put on the grid."""

    variance: np.ndarray
    tolerance: float | None = None
    error_estimate: np.ndarray | None = None
    info: dict[str, Any] = field(default_factory=dict)
    flags: np.ndarray | None = None  # (ny, nx) per-cell bits (cnn: diffnorm.ml.domain)
    exact: np.ndarray | None = None  # ocean-cell indices solved exactly by a hybrid method


@dataclass(frozen=True)
class Method:
    name: str
    fn: MethodFn
    needs_operator: bool
    summary: str
    steps_free: bool = False  # its cost does not grow with M


METHODS: dict[str, Method] = {}


def register(name: str, summary: str, needs_operator: bool = True, steps_free: bool = False):
    """Add a method ``fn(op_or_fields, *, progress, **options) -> MethodOutput`` to the registry."""

    def wrap(fn: MethodFn) -> MethodFn:
        METHODS[name] = Method(name, fn, needs_operator, summary, steps_free)
        return fn

    return wrap


class Timer:
    def __enter__(self) -> Timer:
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.elapsed = time.perf_counter() - self.start


def unit_blocks(op: DiffusionOperator, columns: np.ndarray, block_size: int | None):
    """Blocks of identity columns ``(cols, E)`` with ``E[cols[k], k] = 1``."""
    k = op.block_size(block_size)
    for start in range(0, columns.size, k):
        cols = columns[start : start + k]
        block = np.zeros((op.n, cols.size))
        block[cols, np.arange(cols.size)] = 1.0
        yield cols, block
