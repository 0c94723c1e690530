"""Exact γ by brute force: ``v_i = ‖Ŝ^{M/2} e_i‖² / w_i`` for every ocean cell.

Cost: ``n × M/2`` solves with the one factorization, in blocks of columns.
"""

from __future__ import annotations

import numpy as np

from diffnorm.methods.base import MethodOutput, Progress, register, unit_blocks
from diffnorm.operator import DiffusionOperator


def brute_variance(
    op: DiffusionOperator,
    columns: np.ndarray | None = None,
    block_size: int | None = None,
    progress: Progress | None = None,
) -> np.ndarray:
    """``diag(L W⁻¹)`` at ``columns`` (ocean-vector indices; all by default)."""
    cols_all = np.arange(op.n) if columns is None else np.asarray(columns, dtype=np.int64)
    half = op.fields.steps // 2
    out = np.empty(cols_all.size)
    done = 0
    for cols, block in unit_blocks(op, cols_all, block_size):
        g = op.sym_power(block, half)
        out[done : done + cols.size] = np.einsum("ij,ij->j", g, g) / op.weights[cols]
        done += cols.size
        if progress is not None:
            progress(done, cols_all.size)
    return out


@register("brute", "exact: one column of L^(1/2) per ocean cell (n x M/2 solves)")
def brute(
    op: DiffusionOperator,
    *,
    columns: np.ndarray | None = None,
    block_size: int | None = None,
    progress: Progress | None = None,
) -> MethodOutput:
    """Exact variance on all ocean cells, or on ``columns`` only (others NaN)."""
    if columns is None:
        variance = brute_variance(op, None, block_size, progress)
        n_cols = op.n
    else:
        given = np.asarray(columns)
        if given.ndim != 1 or not (
            given.size == 0
            or (np.issubdtype(given.dtype, np.number) and np.all(given == np.round(given)))
        ):
            # int64 of 1.5 is 1: a fractional index would solve another cell without a word
            raise ValueError(
                f"columns must be a 1-D list of whole ocean-cell indices, got {given.tolist()!r}"
            )
        cols = given.astype(np.int64)
        if cols.size and (cols.min() < 0 or cols.max() >= op.n):
            raise ValueError(f"columns must be ocean-cell indices in [0, {op.n}), got out of range")
        variance = np.full(op.n, np.nan)
        variance[cols] = brute_variance(op, cols, block_size, progress)
        n_cols = cols.size
    return MethodOutput(
        variance,
        tolerance=0.0,
        info={"solves": n_cols * (op.fields.steps // 2), "columns": n_cols},
    )
