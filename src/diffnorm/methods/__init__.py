"""Every way to compute γ behind one call: :func:`estimate`."""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np

from diffnorm.fields import Fields
from diffnorm.methods import (  # noqa: F401  (register)
    analytic,
    brute,
    cnn,
    images,
    lattice,
    probing,
    randomization,
    selinv,
)
from diffnorm.methods.base import METHODS, GammaResult, Progress, Timer
from diffnorm.methods.probing import ProbingCertificateError
from diffnorm.methods.selinv import SelinvCertificateError
from diffnorm.operator import DiffusionOperator, make_operator

__all__ = [
    "DEFAULT_METHOD",
    "EXACT_METHODS",
    "METHODS",
    "GammaError",
    "GammaResult",
    "ProbingCertificateError",
    "SelinvCertificateError",
    "check_method",
    "estimate",
    "exact_options",
    "method_options",
]


class GammaError(ValueError):
    """A method produced no usable γ (non-finite or non-positive variance)."""


DEFAULT_METHOD = "selinv"
"""The fastest certified exact method (it falls back to probing when it cannot certify)."""
EXACT_METHODS = ("selinv", "probing", "brute")


def method_options(method: str) -> dict[str, Any]:
    """Options a method accepts, with their defaults."""
    fn = _method(method).fn
    return {
        name: p.default
        for name, p in inspect.signature(fn).parameters.items()
        if p.kind is p.KEYWORD_ONLY and name != "progress"
    }


def exact_options(method: str, tolerance: float) -> dict[str, Any]:
    """The options that ask an exact ``method`` for ``tolerance`` (brute force takes none)."""
    if method not in EXACT_METHODS:
        raise ValueError(f"{method!r} is not an exact method; choose one of {EXACT_METHODS}")
    return {"tolerance": tolerance} if "tolerance" in method_options(method) else {}


def _method(method: str):
    try:
        return METHODS[method]
    except KeyError:
        raise ValueError(
            f"unknown method {method!r}; choose one of {', '.join(sorted(METHODS))}"
        ) from None


def check_method(method: str, options: dict[str, Any]):
    """The registered ``method``, once its ``options`` are known to be its own (a caller that
    runs several methods checks them all before the first, costly one)."""
    spec = _method(method)
    allowed = method_options(method)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise TypeError(
            f"method {method!r} got unknown option(s) {', '.join(unknown)}; "
            f"it accepts {', '.join(allowed) or 'none'}"
        )
    return spec


def estimate(
    fields: Fields | DiffusionOperator,
    method: str = DEFAULT_METHOD,
    *,
    backend: str = "sparse",
    operator: DiffusionOperator | None = None,
    progress: Progress | None = None,
    **options: Any,
) -> GammaResult:
    """γ = diag(L W⁻¹)^{-1/2} on ocean cells by ``method`` (NaN on land).

    ``fields`` may be an operator already built (its factorization is then reused);
    ``options`` are the method's own (see :func:`method_options`). The wall time includes
    building the operator when it is built here.
    """
    spec = check_method(method, options)
    if isinstance(fields, DiffusionOperator):
        operator, fields = fields, fields.fields
    with Timer() as timer:
        if spec.needs_operator:
            op = operator if operator is not None else make_operator(fields, backend)
            out = spec.fn(op, progress=progress, **options)
        else:
            op = None
            out = spec.fn(fields, progress=progress, **options)
        if progress is not None and not out.info.get("solves"):
            progress(1, 1)  # methods without solves report nothing while running
        variance = np.asarray(out.variance, dtype=np.float64)
        bad = ~(np.isfinite(variance) & (variance > 0))
        if bad.any() and options.get("columns") is None:
            first = np.unravel_index(fields.ocean[np.flatnonzero(bad)[0]], fields.shape)
            raise GammaError(
                f"{method} gave no finite γ at {int(bad.sum())} of {bad.size} ocean cells "
                f"(first at j={first[0]}, i={first[1]}); nothing was written. Check the fields' "
                "units, or use the default exact method (selinv)"
            )
        gamma_ocean = np.where(variance > 0, variance, np.nan) ** -0.5
        gamma = fields.to_grid(gamma_ocean)
        error = None
        if out.error_estimate is not None:
            error = fields.to_grid(out.error_estimate)
        exact = None
        if out.exact is not None:
            exact = np.zeros(fields.shape, dtype=bool)
            exact.ravel()[fields.ocean[out.exact]] = True
            exact = fields.topology.same_on_copies(exact)  # a T-fold copy is its cell
    info = dict(out.info)
    if op is not None:
        info.setdefault("backend", op.backend)
        if hasattr(op, "solver"):
            info.setdefault("solver", op.solver)
    used = {**method_options(method), **options}
    used.pop("block_size", None)
    used.pop("columns", None)
    return GammaResult(
        gamma=gamma,
        method=method,
        options=used,
        wall_time=timer.elapsed,
        tolerance=out.tolerance,
        error_estimate=error,
        info=info,
        flags=out.flags,
        exact=exact,
    )
