"""Every way to compute γ behind one call: :func:`estimate`."""

from __future__ import annotations

import inspect
import math
import numbers
import warnings
from typing import Any

import numpy as np

from diffnorm.fields import Fields, same_fields
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
    "LargeStepsWarning",
    "ProbingCertificateError",
    "SelinvCertificateError",
    "check_method",
    "estimate",
    "exact_options",
    "method_options",
]


LARGE_STEPS = 1000  # M above which estimate warns: implicit diffusion in use takes 4-20


class LargeStepsWarning(UserWarning):
    """M far above the M of diffusion operators in use: the run may take hours."""


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


# the least value of the whole-number options (a count, a seed, a size), by name
LEAST = {
    "seed": 0,
    "exact_basins": 0,
    "exact_fold_rows": 0,
    "samples": 1,
    "stride": 1,
    "nodes": 1,
    "threads": 1,
    "block_size": 1,
    "symmetries": 1,
    "tile": 1,
}


def _whole(value: Any) -> bool:
    return (
        isinstance(value, numbers.Real)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and float(value).is_integer()
    )


# NetCDF attributes (where the options are recorded) hold 64-bit integers
WHOLE_MAX = 2**63 - 1

# what each checked annotation accepts, as said in a message
KINDS = {
    "int": "a whole number",
    "float": "a number",
    "bool": "True or False",
    "str": "a string",
    "tuple[int, int]": "a pair of whole numbers",
}


def _plain(value: Any) -> Any:
    """A NumPy scalar or 0-d array as its Python value, a pair's items likewise."""
    if isinstance(value, np.generic) or (isinstance(value, np.ndarray) and value.ndim == 0):
        return value.item()
    if isinstance(value, tuple | list):
        return type(value)(_plain(v) for v in value)
    return value


def _option_value(method: str, name: str, value: Any, annotation: Any) -> Any:
    """``value`` as option ``name`` of ``method`` takes it, from the annotation (``int``,
    ``float``, ``bool``, ``str``, ``tuple[int, int]``, ``| None``; others pass unchecked):
    NumPy values as Python ones (the methods and the attributes recording them see ``int``,
    ``float``, ``bool``), a whole float as the int. A wrong type is a TypeError; a whole
    number outside ``[LEAST[name], 2**63 − 1]`` a ValueError, as the methods' own checks."""
    kinds = {k.strip() for k in str(annotation).split("|")}
    value = _plain(value)
    if not kinds <= {*KINDS, "None"} or (value is None and "None" in kinds):
        return value
    if "bool" in kinds and isinstance(value, bool):
        return value
    pair = isinstance(value, tuple | list) and len(value) == 2
    if ("int" in kinds and _whole(value)) or (
        "tuple[int, int]" in kinds and pair and all(map(_whole, value))
    ):
        least = LEAST.get(name, -WHOLE_MAX)
        given = value if pair else [value]
        what = "a pair of whole numbers" if pair else "a whole number"
        if min(given) < least:
            raise ValueError(
                f"method {method!r}: option {name} must be {what} >= {least}, got {value!r}"
            )
        if max(given) > WHOLE_MAX:
            raise ValueError(
                f"method {method!r}: option {name} must be {what} <= 2**63 - 1, got {value!r}"
            )
        return tuple(int(v) for v in value) if pair else int(value)
    if "float" in kinds and isinstance(value, numbers.Real) and not isinstance(value, bool):
        return value
    if "str" in kinds and isinstance(value, str):
        return value
    expected = " or ".join(KINDS[k] for k in sorted(kinds) if k != "None")
    raise TypeError(f"method {method!r}: option {name} must be {expected}, got {value!r}")


def checked_options(method: str, options: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """The registered ``method`` and its ``options`` as it takes them (:func:`_option_value`),
    once they are known to be its own and of their types."""
    spec = _method(method)
    allowed = method_options(method)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise TypeError(
            f"method {method!r} got unknown option(s) {', '.join(unknown)}; "
            f"it accepts {', '.join(allowed) or 'none'}"
        )
    params = inspect.signature(spec.fn).parameters
    return spec, {k: _option_value(method, k, v, params[k].annotation) for k, v in options.items()}


def check_method(method: str, options: dict[str, Any]):
    """The registered ``method``, once its ``options`` are known to be its own and of their
    types (a caller that runs several methods checks them all before the first, costly one)."""
    return checked_options(method, options)[0]


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
    spec, options = checked_options(method, options)
    if isinstance(fields, DiffusionOperator):
        operator, fields = fields, fields.fields
    if backend != "sparse" and not spec.needs_operator:
        raise ValueError(
            f"backend: method {method!r} does not solve with the operator; backend goes with "
            f"{', '.join(sorted(k for k, v in METHODS.items() if v.needs_operator))}"
        )
    if fields.steps > LARGE_STEPS and not spec.steps_free:
        warnings.warn(
            f"steps: M = {fields.steps} is far above the M of implicit diffusion operators in "
            f"use (4-20), and the cost of {spec.name} grows with M (selinv factors M/2 + 1 "
            "shifted matrices; brute force, probing and randomization solve M systems per "
            "column, colour or sample), so this may run for hours: check the steps attribute",
            LargeStepsWarning,
            stacklevel=2,
        )
    if operator is not None and not same_fields(operator.fields, fields):
        raise ValueError(
            "operator: it was built for other fields (grid, mask, area, alphas or M differ); "
            "pass the operator alone, estimate(operator, method), or build one for these "
            "fields with make_operator(fields)"
        )
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
