"""The implicit diffusion operator of DESIGN §1 on the ocean cells of a grid.

With ``W = diag(area)`` and the stiffness ``K`` (``φᵀKφ = Σ_open faces α_f (φ_a − φ_b)²``),
one implicit step is ``S = (W + K)⁻¹ W``, ``L = S^M`` and ``L^{1/2} = S^{M/2}``.
All methods work with the symmetric step

    Ŝ = W^{1/2} (W + K)⁻¹ W^{1/2} = W^{1/2} S W^{-1/2},

for which ``L W⁻¹ = W^{-1/2} Ŝ^M W^{-1/2}``, so the variance before normalization is
``v_i = (Ŝ^M)_ii / w_i = ‖Ŝ^{M/2} e_i‖² / w_i`` and ``γ = v^{-1/2}``.

Vectors live on the unknowns only: ocean cells in row-major (``j``, then ``i``) order, each
T-fold cell once (:mod:`diffnorm.topology`); blocks of right-hand sides are ``(n, k)`` arrays.
"""

from __future__ import annotations

import abc
import logging

import numpy as np
import scipy.sparse as sp

from diffnorm.fields import Fields

log = logging.getLogger(__name__)

BLOCK_BYTES = 96 * 2**20


class DiffusionOperator(abc.ABC):
    """Applies ``(W + K)⁻¹`` and the derived operators to blocks of ocean vectors."""

    backend: str = "abstract"

    def __init__(self, fields: Fields):
        self.fields = fields
        self.ocean = fields.ocean
        self.n = self.ocean.size
        self.weights = fields.weights
        self.sqrt_w = np.sqrt(self.weights)

    # -- primitives ---------------------------------------------------------------------------
    @abc.abstractmethod
    def solve(self, b: np.ndarray) -> np.ndarray:
        """``(W + K)⁻¹ b`` for ``b`` of shape ``(n,)`` or ``(n, k)``."""

    def solve_into(self, b: np.ndarray, out: np.ndarray) -> None:
        """``out[...] = (W + K)⁻¹ b`` (C-contiguous float64 arrays of the same shape, distinct);
        backends may override to avoid the temporary."""
        out[...] = self.solve(b)

    def sym_power(self, x: np.ndarray, power: int) -> np.ndarray:
        """``Ŝ^p x``; backends may override to keep data on a device between steps.

        Works in place on two buffers: fresh arrays of a large block per step cost more than
        the arithmetic (page faults).
        """
        y = np.array(x, dtype=np.float64, copy=True, order="C")
        if power <= 0:
            return y
        scale = self.sqrt_w if y.ndim == 1 else self.sqrt_w[:, None]
        buf = np.empty_like(y)
        for _ in range(power):
            y *= scale
            self.solve_into(y, buf)
            buf *= scale
            y, buf = buf, y
        return y

    # -- derived operators --------------------------------------------------------------------
    def apply_s(self, x: np.ndarray) -> np.ndarray:
        """One implicit step ``S x = (W + K)⁻¹ W x``."""
        return self.solve(self._w(x) * x)

    def apply_st(self, x: np.ndarray) -> np.ndarray:
        """Adjoint step ``Sᵀ x = W (W + K)⁻¹ x``."""
        return self._w(x) * self.solve(x)

    def apply_sqrt(self, x: np.ndarray) -> np.ndarray:
        """``L^{1/2} x = S^{M/2} x``."""
        s = self._sqrt_w(x)
        return self.sym_power(s * x, self.fields.steps // 2) / s

    def apply_sqrt_adjoint(self, x: np.ndarray) -> np.ndarray:
        """``(L^{1/2})ᵀ x = (Sᵀ)^{M/2} x``."""
        s = self._sqrt_w(x)
        return s * self.sym_power(x / s, self.fields.steps // 2)

    def apply_correlation(self, x: np.ndarray, gamma: np.ndarray) -> np.ndarray:
        """``C x = Γ L^{1/2} W⁻¹ (L^{1/2})ᵀ Γ x`` with ``gamma`` on ocean cells."""
        g = gamma if x.ndim == 1 else gamma[:, None]
        y = self.apply_sqrt_adjoint(g * x)
        return g * self.apply_sqrt(y / self._w(x))

    # -- grid <-> ocean vectors --------------------------------------------------------------
    def to_grid(self, values: np.ndarray, fill: float = np.nan) -> np.ndarray:
        """Scatter an ocean vector onto the ``(ny, nx)`` grid, ``fill`` on land."""
        return self.fields.to_grid(values, fill)

    def from_grid(self, grid: np.ndarray) -> np.ndarray:
        """The ocean values of a ``(ny, nx)`` array."""
        return np.asarray(grid, dtype=np.float64).ravel()[self.ocean]

    def block_size(self, requested: int | None = None) -> int:
        """Right-hand sides per block: the request, else what fits ``BLOCK_BYTES``."""
        if requested is not None:
            if requested < 1:
                raise ValueError(f"block_size must be >= 1, got {requested}")
            return int(requested)
        return int(np.clip(BLOCK_BYTES // (8 * 3 * max(self.n, 1)), 8, 512))

    def _w(self, x: np.ndarray) -> np.ndarray:
        return self.weights if x.ndim == 1 else self.weights[:, None]

    def _sqrt_w(self, x: np.ndarray) -> np.ndarray:
        return self.sqrt_w if x.ndim == 1 else self.sqrt_w[:, None]


Stencil = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def grid_stencil(fields: Fields, cells: np.ndarray | None = None) -> Stencil:
    """:meth:`Topology.stencil` of the fields (weights, neighbours, coefficients) and the
    unknown index of every cell: what :func:`system_block` reads, to share between blocks;
    ``cells`` (flat grid indices): only the rows of those cells are filled."""
    topo = fields.topology
    w, nbr, c = topo.stencil(fields.mask, fields.area, fields.slot_alpha(), cells)
    return w, nbr, c, topo.unknown_index(fields.mask)


def _rows(
    fields: Fields, unknowns: np.ndarray, stencil: Stencil | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The entries of ``W + K`` in the rows of the unknowns at positions ``unknowns`` (of
    ``fields.ocean``), from :meth:`Topology.stencil` (wrap and fold included): the diagonal,
    and the off-diagonal entries as (row in ``unknowns``, column as an unknown, value)."""
    w, nbr, c, index = grid_stencil(fields) if stencil is None else stencil
    cells = fields.ocean[unknowns]
    coef = c[:, cells]
    opened = coef > 0  # closed slots carry no entry: the pattern is the open faces'
    rows = np.broadcast_to(np.arange(cells.size), coef.shape)[opened]
    cols = index[nbr[:, cells][opened]]
    return w[cells] + coef.sum(axis=0), rows, cols, -coef[opened]


def system_matrix(fields: Fields) -> sp.csr_matrix:
    """``W + K`` on the unknowns (symmetric positive definite, an M-matrix), from the same
    stencil as the matrix-free backend (:meth:`Topology.stencil`: wrap and fold included)."""
    n = fields.ocean.size
    diag, rows, cols, values = _rows(fields, np.arange(n))
    row = np.arange(n)
    # duplicate (row, col) entries, e.g. a T pivot's two half faces to one cell, are summed
    return sp.csr_matrix(
        (
            np.concatenate([diag, values]),
            (np.concatenate([row, rows]), np.concatenate([row, cols])),
        ),
        shape=(n, n),
    )


def system_block(
    fields: Fields, unknowns: np.ndarray, stencil: Stencil | None = None
) -> np.ndarray:
    """``W + K`` restricted to the unknowns at sorted positions ``unknowns`` (of
    ``fields.ocean``), dense: :func:`system_matrix`'s rows and columns there, without
    assembling the whole grid's matrix. Faces to unknowns outside the set still count in the
    diagonal, so a set that is a union of basins is exact. ``stencil``: :func:`grid_stencil`,
    computed once for many blocks of the same fields."""
    diag, rows, cols, values = _rows(fields, unknowns, stencil)
    local = np.searchsorted(unknowns, cols)
    inside = (local < unknowns.size) & (unknowns[np.minimum(local, unknowns.size - 1)] == cols)
    block = np.diag(diag)
    np.add.at(block, (rows[inside], local[inside]), values[inside])
    return block


class SparseOperator(DiffusionOperator):
    """``W + K`` factorized once (CHOLMOD through cholespy, else SciPy's SuperLU)."""

    backend = "sparse"

    def __init__(self, fields: Fields, solver: str = "auto"):
        super().__init__(fields)
        self.matrix = system_matrix(fields)
        if solver not in ("auto", "cholmod", "superlu"):
            raise ValueError(f"solver must be 'auto', 'cholmod' or 'superlu', got {solver!r}")
        self._chol = None
        self._lu = None
        if solver in ("auto", "cholmod"):
            try:
                import cholespy

                coo = self.matrix.tocoo()
                self._chol = cholespy.CholeskySolverD(
                    self.n,
                    coo.row.astype(np.int32),
                    coo.col.astype(np.int32),
                    coo.data.astype(np.float64),
                    cholespy.MatrixType.COO,
                )
                self.solver = "cholmod"
            except ImportError:
                if solver == "cholmod":
                    raise
                log.info("cholespy is not installed; using SciPy SuperLU")
        if self._chol is None:
            from scipy.sparse.linalg import splu

            self._lu = splu(self.matrix.tocsc())
            self.solver = "superlu"

    def solve(self, b: np.ndarray) -> np.ndarray:
        b = np.ascontiguousarray(b, dtype=np.float64)
        if self._chol is not None:
            x = np.empty_like(b)
            self._chol.solve(b, x)
            return x
        return self._lu.solve(b)

    def solve_into(self, b: np.ndarray, out: np.ndarray) -> None:
        if self._chol is not None:
            self._chol.solve(b, out)
        else:
            out[...] = self._lu.solve(b)


def make_operator(fields: Fields, backend: str = "sparse", **options) -> DiffusionOperator:
    """The operator for ``fields`` on a backend: ``sparse`` (CPU, direct) or ``torch``
    (matrix-free conjugate gradients, CPU or GPU)."""
    if isinstance(fields, DiffusionOperator):
        return fields
    if backend == "sparse":
        return SparseOperator(fields, **options)
    if backend == "torch":
        from diffnorm.torch_operator import TorchStencilOperator

        return TorchStencilOperator(fields, **options)
    raise ValueError(f"backend must be 'sparse' or 'torch', got {backend!r}")
