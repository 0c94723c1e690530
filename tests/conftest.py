"""Small deterministic grids shared by the tests."""

from __future__ import annotations

import numpy as np
import pytest

from diffnorm.fields import Fields


def random_fields(
    ny: int = 14,
    nx: int = 17,
    steps: int = 6,
    periodic_x: bool = True,
    seed: int = 0,
    kappa: float = 0.8,
    anisotropy: float = 1.0,
    islands: bool = True,
) -> Fields:
    """Random positive metrics, a few islands and a lake, length scales of about 2–3 cells."""
    rng = np.random.default_rng(seed)
    mask = np.ones((ny, nx))
    if islands:
        mask[3:6, 4:7] = 0
        mask[ny - 4, nx - 5 :] = 0
        mask[ny - 2, 1] = 0
        mask[0, nx // 2] = 0
        # a one-cell lake cut off from the rest
        mask[8:11, 10:13] = 0
        mask[9, 11] = 1
    area = rng.uniform(0.6, 1.4, (ny, nx)) * 1e8
    ax = kappa * anisotropy * rng.uniform(0.5, 1.5, (ny, nx)) * 1e8
    ay = kappa / anisotropy * rng.uniform(0.5, 1.5, (ny, nx)) * 1e8
    return Fields(mask, area, ax, ay, steps, periodic_x)


def dense_variance(fields: Fields) -> np.ndarray:
    """``diag(S^M W⁻¹)`` by dense linear algebra, on the ocean cells."""
    from diffnorm.operator import system_matrix

    a = system_matrix(fields).toarray()
    w = fields.area.ravel()[np.flatnonzero(fields.mask.ravel())]
    s = np.linalg.solve(a, np.diag(w))
    return np.diag(np.linalg.matrix_power(s, fields.steps) / w[None, :])


@pytest.fixture
def small_fields() -> Fields:
    return random_fields()
