"""Fill-reducing orderings of a sparse symmetric pattern: METIS nested dissection (pymetis),
else geometric nested dissection from cell coordinates.

On the ORCA1-like grid METIS needs 2.8× fewer factorization flops than the geometric
dissection (7.3e7 against 2.0e8 multiply-adds), which remains as the fallback.

Geometric dissection, recursive coordinate bisection: a set of cells is split at a grid line
and the cells of one half that touch the other half (through any edge of the graph, so an
east–west wrap or a fold is cut like any other edge) form the separator, numbered after both
halves. On a 2-D grid of ``n`` cells this gives the optimal ``O(n log n)`` fill and
``O(n^{3/2})`` factorization work (George, 1973).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

LEAF = 24
BALANCE = 0.25


def _split(c: np.ndarray, balance: float) -> np.ndarray | None:
    """Which cells go above the cut: the grid line, on either axis, with the fewest cells
    among those leaving at least ``balance`` of the cells on each side (land makes short
    separators; a plain median cut would ignore it)."""
    best = None
    for axis in (0, 1):
        values = c[:, axis].astype(np.int64)
        lo = values.min()
        counts = np.bincount(values - lo)
        below = np.cumsum(counts) - counts  # cells strictly below each line
        total = values.size
        ok = (below >= balance * total) & (total - below - counts >= balance * total)
        if not ok.any():
            continue
        # prefer short lines, then balanced ones
        score = counts + 1e-3 * np.abs(2 * below + counts - total) / total
        score[~ok] = np.inf
        line = int(np.argmin(score))
        if best is None or score[line] < best[0]:
            best = (score[line], axis, line + lo)
    if best is None:
        return None
    _, axis, line = best
    return c[:, axis] >= line


def neighbour_table(pattern: sp.csr_matrix) -> np.ndarray:
    """``(n, d)`` table of each node's neighbours (diagonal excluded), padded with ``n``."""
    a = sp.csr_matrix(pattern, copy=True)
    a.setdiag(0)
    a.eliminate_zeros()
    n = a.shape[0]
    deg = np.diff(a.indptr)
    width = int(deg.max()) if n else 0
    table = np.full((n, max(width, 1)), n, dtype=np.int64)
    rows = np.repeat(np.arange(n), deg)
    slot = np.arange(a.indices.size) - np.repeat(a.indptr[:-1], deg)
    table[rows, slot] = a.indices
    return table


def nested_dissection(
    pattern: sp.csr_matrix, coords: np.ndarray, leaf: int = LEAF, balance: float = BALANCE
) -> np.ndarray:
    """Permutation ``perm`` (new position → old index) of the nodes of a symmetric ``pattern``.

    ``coords`` is ``(n, 2)`` (row, column of each cell); only their order matters.
    """
    n = pattern.shape[0]
    table = neighbour_table(pattern)
    side = np.full(n + 1, -1, dtype=np.int8)  # n: the padding neighbour, never on a side
    coords = np.asarray(coords, dtype=np.float64)
    pieces: list[np.ndarray] = []
    # explicit stack: (cells, separator-to-emit-after) keeps post-order without recursion
    stack: list[tuple[np.ndarray, bool]] = [(np.arange(n), False)]
    while stack:
        idx, is_sep = stack.pop()
        if is_sep or idx.size <= leaf:
            pieces.append(idx)
            continue
        upper = _split(coords[idx], balance)
        if upper is None:
            pieces.append(idx)
            continue
        side[idx] = upper
        # separator: the smaller set of boundary cells of either half
        touch = side[table[idx]]
        lower_b = ~upper & (touch == 1).any(axis=1)
        upper_b = upper & (touch == 0).any(axis=1)
        side[idx] = -1
        sep = lower_b if lower_b.sum() <= upper_b.sum() else upper_b
        a = idx[~upper & ~sep]
        b = idx[upper & ~sep]
        # popped in reverse: a, then b, then the separator
        stack.append((idx[sep], True))
        stack.append((b, False))
        stack.append((a, False))
    return np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int64)


def metis_ordering(pattern: sp.csr_matrix) -> np.ndarray | None:
    """METIS nested dissection (new position → old index), or ``None`` without pymetis."""
    try:
        import pymetis
    except ImportError:
        return None
    a = sp.csr_matrix(pattern, copy=True)
    a.setdiag(0)
    a.eliminate_zeros()
    if a.shape[0] < 2 or a.nnz == 0:
        return np.arange(a.shape[0])
    starts, adjacent = a.indptr.astype(np.int64), a.indices.astype(np.int64)
    if hasattr(pymetis, "CSRAdjacency"):
        perm, _ = pymetis.nested_dissection(pymetis.CSRAdjacency(starts, adjacent))
    else:  # pragma: no cover - pymetis < 2025.2
        perm, _ = pymetis.nested_dissection(xadj=starts, adjncy=adjacent)
    return np.asarray(perm, dtype=np.int64)


def fill_reducing_ordering(pattern: sp.csr_matrix, coords: np.ndarray) -> tuple[np.ndarray, str]:
    """The best ordering available and its name (``metis`` or ``geometric``)."""
    perm = metis_ordering(pattern)
    if perm is not None:
        return perm, "metis"
    return nested_dissection(pattern, coords), "geometric"
