"""Sparse ``LDLᵀ`` and its selected inversion (Takahashi), compiled with numba.

``A = L D Lᵀ`` with ``L`` unit lower triangular, for a symmetric ``A`` (real, or complex
symmetric — not Hermitian — such as ``A − zI`` with ``A`` SPD and ``Re z`` below its spectrum,
whose Hermitian part is positive definite so no pivoting is needed). The factor is simplicial
and up-looking (row ``k`` of ``L`` from a triangular solve with the rows above, its pattern from
the elimination tree), so each column's row indices come out sorted.

Selected inversion. ``Z = A⁻¹`` on the pattern of ``L`` follows from ``Z = D⁻¹L⁻¹ + (I − Lᵀ) Z``
(Takahashi, Fagan & Chen 1973) taken column by column from the last:

    Z[I, j] = −Z[I, I] L[I, j],    Z[j, j] = 1/d_j − L[I, j]ᵀ Z[I, j],

with ``I`` the rows of column ``j`` of ``L``. ``I`` is a clique of the filled graph, so every
``Z[I, I]`` entry lies in the pattern of an earlier-computed column: the cost is that of the
factorization, and ``Z`` overwrites ``L`` in place.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numba
import numpy as np
import scipy.sparse as sp


@numba.njit(cache=True, nogil=True)
def _walk(n, ap, ai, parent, lnz, lp, li, fill):  # pragma: no cover - compiled
    """Row ``k`` of ``L`` meets column ``i`` along the path from each ``A[i, k]`` (``i < k``)
    up the elimination tree. First pass (``fill`` false): build the tree and count each
    column; second: write the row indices (sorted, as ``k`` increases)."""
    flag = np.empty(n, dtype=np.int64)
    for k in range(n):
        flag[k] = k
        for p in range(ap[k], ap[k + 1]):
            i = ai[p]
            if i < k:
                while flag[i] != k:
                    if fill:
                        li[lp[i] + lnz[i]] = k
                    elif parent[i] == -1:
                        parent[i] = k
                    lnz[i] += 1
                    flag[i] = k
                    i = parent[i]


def _symbolic(n: int, ap: np.ndarray, ai: np.ndarray) -> tuple[np.ndarray, ...]:
    """Elimination tree, column pointers and row indices (int32) of ``L``."""
    parent = np.full(n, -1, dtype=np.int64)
    lnz = np.zeros(n, dtype=np.int64)
    lp = np.zeros(n + 1, dtype=np.int64)
    _walk(n, ap, ai, parent, lnz, lp, np.zeros(0, dtype=np.int32), False)
    np.cumsum(lnz, out=lp[1:])
    li = np.empty(lp[n], dtype=np.int32)
    _walk(n, ap, ai, parent, np.zeros(n, dtype=np.int64), lp, li, True)
    return parent, lp, li


@numba.njit(cache=True, nogil=True, fastmath=True)
def _numeric(n, ap, ai, ax, parent, lp, li, lx, d):  # pragma: no cover - compiled
    y = np.zeros(n, dtype=lx.dtype)
    pattern = np.empty(n, dtype=np.int64)
    flag = np.empty(n, dtype=np.int64)
    lnz = np.zeros(n, dtype=np.int64)
    for k in range(n):
        top = n
        flag[k] = k
        for p in range(ap[k], ap[k + 1]):
            i = ai[p]
            if i <= k:
                y[i] += ax[p]
                length = 0
                while flag[i] != k:
                    pattern[length] = i
                    length += 1
                    flag[i] = k
                    i = parent[i]
                while length > 0:
                    top -= 1
                    length -= 1
                    pattern[top] = pattern[length]
        dk = y[k]
        y[k] = 0
        while top < n:
            i = pattern[top]
            top += 1
            yi = y[i]
            y[i] = 0
            p2 = lp[i] + lnz[i]
            for p in range(lp[i], p2):
                y[li[p]] -= lx[p] * yi
            lki = yi / d[i]
            dk -= lki * yi
            lx[p2] = lki
            lnz[i] += 1
        if dk == 0:
            return k
        d[k] = dk
    return -1


@numba.njit(cache=True, nogil=True, fastmath=True)
def _takahashi(n, lp, li, lx, d, zd):  # pragma: no cover - compiled
    y = np.zeros(n, dtype=lx.dtype)
    for j in range(n - 1, -1, -1):
        p0 = lp[j]
        m = lp[j + 1] - p0
        for a in range(m):
            y[a] = 0
        for a in range(m):
            k = li[p0 + a]
            lk = lx[p0 + a]
            acc = zd[k] * lk
            # column k holds Z[i, k] for its rows i > k, a superset of I[a+1:] (both sorted)
            q0 = lp[k]
            q1 = lp[k + 1]
            if q1 - q0 == m - a - 1:  # the same rows: a dense dot and axpy
                for t in range(q1 - q0):
                    zik = lx[q0 + t]
                    y[a + 1 + t] += zik * lk
                    acc += zik * lx[p0 + a + 1 + t]
            elif 4 * (m - a - 1) >= q1 - q0:  # a few extra rows: merge the sorted lists
                b = a + 1
                for q in range(q0, q1):
                    if b == m:
                        break
                    if li[q] == li[p0 + b]:
                        zik = lx[q]
                        y[b] += zik * lk
                        acc += zik * lx[p0 + b]
                        b += 1
            else:  # a long column: binary-search each row of I in what is left of it
                lo = q0
                for b in range(a + 1, m):
                    target = li[p0 + b]
                    hi = q1
                    while lo < hi:
                        mid = (lo + hi) >> 1
                        if li[mid] < target:
                            lo = mid + 1
                        else:
                            hi = mid
                    zik = lx[lo]
                    y[b] += zik * lk
                    acc += zik * lx[p0 + b]
                    lo += 1
            y[a] += acc
        s = 1.0 / d[j]
        for a in range(m):
            s += lx[p0 + a] * y[a]
            lx[p0 + a] = -y[a]
        zd[j] = s
    return zd


class FactorizationError(ArithmeticError):
    """A zero pivot: the matrix is singular (or needs pivoting) in this ordering."""


@dataclass(frozen=True)
class Symbolic:
    """Ordering and elimination tree of one sparsity pattern, reusable for any values on it."""

    perm: np.ndarray  # new → old
    indptr: np.ndarray  # CSC of P A Pᵀ (full symmetric pattern, sorted)
    indices: np.ndarray
    source: np.ndarray  # position in the input's CSR data of each permuted entry
    parent: np.ndarray
    lp: np.ndarray  # column pointers of L
    li: np.ndarray  # row indices of L (int32), shared by every numeric factorization
    ordering: str = "given"

    @functools.cached_property
    def diagonal(self) -> np.ndarray:
        """Positions of the diagonal entries in the permuted CSC data (where shifts go)."""
        cols = np.repeat(np.arange(self.n), np.diff(self.indptr))
        return np.flatnonzero(self.indices == cols)

    @property
    def n(self) -> int:
        return self.perm.size

    @property
    def factor_nnz(self) -> int:
        return int(self.lp[-1])

    def flops(self) -> float:
        """Multiply-adds of the factorization, ``Σ_j |L[:, j]|²`` (the same order for
        selected inversion)."""
        counts = np.diff(self.lp).astype(np.float64)
        return float((counts**2).sum())


def analyse(matrix: sp.csr_matrix, perm: np.ndarray, ordering: str = "given") -> Symbolic:
    """Symbolic analysis of a symmetric ``matrix`` (CSR, pattern symmetric) in order ``perm``."""
    a = sp.csr_matrix(matrix)
    a.sort_indices()
    tagged = sp.csr_matrix(
        (np.arange(1, a.nnz + 1, dtype=np.float64), a.indices, a.indptr), shape=a.shape
    )
    # a symmetric CSR permuted is the CSC of the permuted matrix
    permuted = tagged[perm][:, perm].tocsc()
    permuted.sort_indices()
    source = (permuted.data - 1).astype(np.int64)
    indptr = permuted.indptr.astype(np.int64)
    indices = permuted.indices.astype(np.int64)
    n = a.shape[0]
    if n >= 2**31:
        raise ValueError(f"{n} unknowns: more than the int32 row indices of the factor hold")
    parent, lp, li = _symbolic(n, indptr, indices)
    perm = np.asarray(perm, dtype=np.int64)
    return Symbolic(perm, indptr, indices, source, parent, lp, li, ordering)


def selected_inverse_diagonal(
    symbolic: Symbolic, data: np.ndarray, shift: complex = 0.0
) -> np.ndarray:
    """``diag((A − shift·I)⁻¹)`` in the input's order; ``data`` is ``A``'s CSR data (sorted
    indices, as given to :func:`analyse`). Real arithmetic for a real shift."""
    dtype = np.complex128 if np.iscomplexobj(shift) and complex(shift).imag != 0 else np.float64
    ax = np.asarray(data)[symbolic.source].astype(dtype)
    n = symbolic.n
    if shift != 0:
        ax[symbolic.diagonal] -= shift if dtype == np.complex128 else complex(shift).real
    li = symbolic.li
    lx = np.empty(symbolic.factor_nnz, dtype=dtype)
    d = np.empty(n, dtype=dtype)
    bad = _numeric(
        n, symbolic.indptr, symbolic.indices, ax, symbolic.parent, symbolic.lp, li, lx, d
    )
    if bad >= 0:
        raise FactorizationError(f"zero pivot at position {bad} of the ordering")
    zd = _takahashi(n, symbolic.lp, li, lx, d, np.empty(n, dtype=dtype))
    out = np.empty(n, dtype=dtype)
    out[symbolic.perm] = zd
    return out
