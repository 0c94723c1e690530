"""Exact-to-a-certified-tolerance γ from a few shifted selected inversions.

With ``A = W^{-1/2}(W + K)W^{-1/2}`` (SPD, spectrum in ``[1, b]``), ``v_i w_i = (A^{-M})_ii``.
Cauchy's formula on the circle ``|z| = ρ < 1`` (around the pole of ``x^{-M}``, away from the
spectrum) with the ``N``-point trapezoid rule gives a rational function with simple poles:

    r(x) = Σ_k c_k / (x − z_k),   z_k = ρ e^{2πik/N},   c_k = z_k^{1−M} / N,

and, expanding ``1/(x − z)`` in powers of ``z/x``, exactly

    r(x) = x^{-M} + Σ_{m≥1} ρ^{mN} x^{-(M+mN)}     (N ≥ M).

Every term of the error is ≥ 0 and ``A^{-(M+mN)} ≼ A^{-M}`` (eigenvalues ≥ 1), so cell by cell

    (A^{-M})_ii ≤ r(A)_ii ≤ (1 + η) (A^{-M})_ii,   η = ρ^N / (1 − ρ^N),

a relative bound known before the run, whatever the grid, κ or coast. ``r(A)_ii`` needs only
``diag((A − z_k I)⁻¹)``: one sparse ``LDLᵀ`` and one selected inversion per node (the
conjugate nodes give conjugate diagonals, so ``⌊N/2⌋ + 1`` of them). Small ``ρ`` makes the
weights ``|c_k| ~ ρ^{1−M}`` large and the sum cancel: the round-off ``R_i`` is bounded after the
run from the computed diagonals, and the certificate written is

    |ε_i| ≤ η + R_i / r(A)_ii,     ε = (γ̂² − γ²)/γ².

A node count ``N`` and radius ``ρ`` are chosen so both terms fit the tolerance; a result that
misses it is redone with more nodes, then falls back to certified probing.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from diffnorm.fields import Fields
from diffnorm.linalg.ldl import FactorizationError, Symbolic, analyse, selected_inverse_diagonal
from diffnorm.linalg.ordering import fill_reducing_ordering
from diffnorm.methods.base import MethodOutput, Progress, register
from diffnorm.operator import make_operator, system_matrix

UNIT_ROUNDOFF = np.finfo(np.float64).eps / 2
# the round-off bound R_i = g·u·Σ_k |w_k| |D_k,i| cond_k: with g = 1 it was ≥ 2.3× the round-off
# measured against dense eigen-decompositions (M 4–20, κ 0.5–16 cells², anisotropy 4)
ROUNDOFF_GROWTH = 4.0
TRUNCATION_SHARE = 0.8  # of the tolerance; the rest for round-off
MAX_ATTEMPTS = 3
MAX_NODES_PER_STEP = 8  # beyond, probing is cheaper
_CACHE: OrderedDict[bytes, Symbolic] = OrderedDict()
_CACHE_SIZE = 4


class SelinvCertificateError(RuntimeError):
    """The contour rule could not certify its result at the requested tolerance."""


@dataclass(frozen=True)
class CircleRule:
    """``N``-point trapezoid rule for ``x^{-M}`` on ``|z| = ρ`` and its a-priori bound ``η``."""

    steps: int
    nodes: int
    radius: float

    @classmethod
    def for_truncation(cls, steps: int, nodes: int, eta: float) -> CircleRule:
        """The largest radius (least cancellation) whose ``η`` is ``eta``."""
        return cls(steps, nodes, (eta / (1.0 + eta)) ** (1.0 / nodes))

    @property
    def truncation(self) -> float:
        q = self.radius**self.nodes
        return q / (1.0 - q)

    def points(self) -> tuple[np.ndarray, np.ndarray]:
        """Nodes ``z_k`` in the upper half plane (``0 ≤ arg z ≤ π``) and the weights that fold
        in their conjugates (2 Re of the pair), so ``r(A)_ii = Re Σ w_k diag((A − z_k)⁻¹)``."""
        k = np.arange(self.nodes // 2 + 1)
        z = self.radius * np.exp(2j * np.pi * k / self.nodes)
        c = z ** (1 - self.steps) / self.nodes
        paired = (k > 0) & (2 * k < self.nodes)
        weights = np.where(paired, 2.0, 1.0) * c
        z = np.where(np.abs(z.imag) <= 1e-14 * self.radius, z.real, z)
        return z, weights


def certificate(rule: CircleRule, total: np.ndarray, roundoff: np.ndarray) -> np.ndarray:
    """Per-cell bound on ``|ε|`` for the centred estimate ``r(A)_ii / (1 + η/2)``.

    With ``r(A)_ii = T(1 + e) + δ``, ``0 ≤ e ≤ η``, ``|δ| ≤ R``:
    ``|ε| ≤ η/2 + (1 + η/2) R/r(A)_ii`` (infinite where ``R ≥ r(A)_ii``).
    """
    eta = rule.truncation
    out = np.full(total.shape, np.inf)
    ok = total > roundoff
    out[ok] = eta / 2 + (1 + eta / 2) * roundoff[ok] / total[ok]
    return out


def plan_nodes(steps: int, tolerance: float, nodes: int = 0, roundoff_ratio: float = 0.0) -> int:
    """Nodes ``N ≥ M`` for a first attempt, or after one with ``nodes`` nodes whose round-off
    share came out ``roundoff_ratio`` times its budget.

    At fixed ``η`` the radius is ``ρ = η^{1/N}`` and the weights grow like
    ``ρ^{1−M} = exp(L/N)``, ``L = (M − 1)|ln η|``: dividing them by ``2·ratio`` needs
    ``L/N' = L/N − ln(2·ratio)``. Returns 0 when no node count can (the round-off floor of
    ``ρ → 1``).
    """
    if roundoff_ratio <= 1.0 or steps <= 1:
        return max(steps, nodes)
    eta = 2 * TRUNCATION_SHARE * tolerance
    big = (steps - 1) * abs(math.log(eta / (1 + eta)))
    room = big / nodes - math.log(2.0 * roundoff_ratio)
    if room <= 0 or big / room > MAX_NODES_PER_STEP * steps:
        return 0
    return max(nodes + 1, math.ceil(big / room))


def scaled_matrix(fields: Fields) -> sp.csr_matrix:
    """``A = W^{-1/2}(W + K)W^{-1/2}`` on the ocean cells, row-major (sorted CSR)."""
    matrix = system_matrix(fields)
    s = sp.diags(1.0 / np.sqrt(fields.weights))
    a = sp.csr_matrix(s @ matrix @ s)
    a.sort_indices()
    return a


def symbolic_for(a: sp.csr_matrix) -> Symbolic:
    """Fill-reducing ordering and elimination tree of ``a``'s pattern, cached: every sample
    of a dataset on one grid shares them."""
    key = _pattern_key(a)
    hit = _CACHE.get(key)
    if hit is not None:
        _CACHE.move_to_end(key)
        return hit
    perm, ordering = fill_reducing_ordering(a)
    symbolic = analyse(a, perm, ordering)
    _CACHE[key] = symbolic
    while len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return symbolic


def _pattern_key(a: sp.csr_matrix) -> bytes:
    """Digest of the sparsity pattern, hashed in place (a copy would be ~0.5 GB at 1/12°)."""
    h = hashlib.blake2b(digest_size=32)
    for part in (np.int64(a.shape[0]), a.indptr, a.indices):
        h.update(np.ascontiguousarray(part).data)
        h.update(str(np.asarray(part).dtype).encode())
    return h.digest()


def _gershgorin(a: sp.csr_matrix) -> float:
    return float(np.asarray(abs(a).sum(axis=1)).max()) if a.shape[0] else 1.0


def contour_diagonal(
    symbolic: Symbolic,
    a: sp.csr_matrix,
    rule: CircleRule,
    threads: int,
    progress: Progress | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``r(A)_ii`` and its round-off bound ``R_i``."""
    z, weights = rule.points()
    upper = _gershgorin(a)
    done = [0]

    def one(shift: complex) -> np.ndarray:
        diag = selected_inverse_diagonal(symbolic, a.data, shift)
        done[0] += 1
        if progress is not None:
            progress(done[0], z.size)
        return diag

    if threads > 1 and z.size > 1:
        with ThreadPoolExecutor(max_workers=min(threads, z.size)) as pool:
            diagonals = list(pool.map(one, z))
    else:
        diagonals = [one(s) for s in z]
    total = np.zeros(symbolic.n)
    roundoff = np.zeros(symbolic.n)
    for shift, w, diag in zip(z, weights, diagonals, strict=True):
        total += (w * diag).real
        # |(A − z)⁻¹| entries are perturbed by ~u·cond(A − z), cond ≤ (b + ρ)/dist(z, [1, b])
        distance = abs(shift - 1.0) if shift.real <= 1.0 else abs(shift.imag)
        cond = (upper + rule.radius) / distance
        roundoff += abs(w) * np.abs(diag) * cond
    roundoff *= UNIT_ROUNDOFF * ROUNDOFF_GROWTH
    return total, roundoff


def default_threads() -> int:
    """The usable cores, or ``OMP_NUM_THREADS`` when set (Dask workers set it to their share)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    try:
        wanted = int(os.environ.get("OMP_NUM_THREADS", ""))
    except ValueError:
        wanted = cores
    return max(1, min(cores, wanted))


@register(
    "selinv",
    "exact to a certified tolerance: contour rule, one selected inversion per node (~M/2+1)",
    needs_operator=False,  # it factors its own shifted matrices
)
def selinv(
    fields: Fields,
    *,
    tolerance: float = 1e-6,
    nodes: int | None = None,
    threads: int | None = None,
    fallback: bool = True,
    progress: Progress | None = None,
) -> MethodOutput:
    """Certified ``v = diag(L W⁻¹)``: see the module docstring.

    ``nodes`` forces the rule's node count (≥ M); ``threads`` runs nodes in parallel (default:
    the usable cores); with ``fallback`` a result that cannot be certified is recomputed by
    certified probing (written in ``info``), else :class:`SelinvCertificateError` is raised.
    """
    if not (0 < tolerance < 1):
        raise ValueError(f"tolerance must be in (0, 1), got {tolerance}")
    steps = fields.steps
    if nodes is not None and nodes < steps:
        raise ValueError(
            f"nodes must be >= steps (M = {steps}): fewer nodes alias x^(M-N); got {nodes}"
        )
    workers = default_threads() if threads is None else int(threads)
    if workers < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    weights = fields.weights
    a = scaled_matrix(fields)
    symbolic = symbolic_for(a)
    info: dict = {
        "ordering": symbolic.ordering,
        "factor_nnz": symbolic.factor_nnz,
        "threads": workers,
        "factorizations": 0,
    }
    eta = 2 * TRUNCATION_SHARE * tolerance
    count = steps if nodes is None else nodes
    reason = ""
    for attempt in range(1, MAX_ATTEMPTS + 1):
        rule = CircleRule.for_truncation(steps, count, eta)
        info.update(
            attempts=attempt, nodes=rule.nodes, radius=rule.radius, truncation_bound=rule.truncation
        )
        try:
            total, roundoff = contour_diagonal(symbolic, a, rule, workers, progress)
        except FactorizationError as err:  # a valid operator never has a zero pivot: guard
            reason = f"factorization failed ({err})"
            break
        info["factorizations"] += rule.nodes // 2 + 1
        error = certificate(rule, total, roundoff)
        worst = float(error.max()) if error.size else 0.0
        info["certificate_max"] = worst
        if worst <= tolerance:
            variance = total / (1 + rule.truncation / 2) / weights
            return MethodOutput(variance, worst, error, info)
        reason = (
            f"contour rule with {rule.nodes} nodes is not certified: relative error on gamma^2 "
            f"up to {worst:.2e} > tolerance {tolerance:.1e}"
        )
        share = float((roundoff / np.maximum(total, 1e-300)).max())
        count = plan_nodes(
            steps, tolerance, rule.nodes, share / ((1 - TRUNCATION_SHARE) * tolerance)
        )
        if count == 0 or nodes is not None:
            break
        count = max(count, rule.nodes + 1)
    if not fallback:
        raise SelinvCertificateError(reason + "; use more nodes or a larger tolerance")
    from diffnorm.methods.probing import probing

    out = probing(make_operator(fields), tolerance=tolerance, progress=progress)
    out.info.update(fallback="probing", fallback_reason=reason)
    return out
