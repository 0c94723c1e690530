"""A crop padded by halo_width gives the whole grid's γ in its interior."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import random_fields
from diffnorm.data.crops import halo_width, interior_gamma
from diffnorm.methods import estimate


@pytest.mark.parametrize("periodic_x", [True, False])
def test_the_interior_of_a_padded_crop_is_the_whole_grid_gamma(periodic_x):
    fields = random_fields(ny=60, nx=70, steps=10, periodic_x=periodic_x, kappa=0.3, seed=2)
    whole = estimate(fields, "selinv", tolerance=1e-9).gamma
    for tol, box in ((1e-3, (20, 40, 0, 25)), (1e-5, (25, 35, 50, 66))):
        inner, (hy, hx) = interior_gamma(fields, *box, tolerance=tol)
        j0, j1, i0, i1 = box
        ref = whole[j0:j1, i0:i1]
        m = np.isfinite(ref)
        assert np.abs(inner[m] ** 2 / ref[m] ** 2 - 1).max() <= tol
        # and the halo is needed: half of it gives a larger error somewhere
    small, _ = interior_gamma(fields, 20, 40, 0, 25, tolerance=0.3)
    ref = whole[20:40, 0:25]
    m = np.isfinite(ref)
    assert np.abs(small[m] ** 2 / ref[m] ** 2 - 1).max() > 1e-3


def test_halo_grows_with_the_length_scale_and_the_tolerance():
    assert halo_width(0.5, 0.5, 10, 1e-6) < halo_width(2.0, 2.0, 10, 1e-6)
    hy, hx = halo_width(4.0, 0.25, 10, 1e-6)
    assert hx > hy  # anisotropic: wider along the long axis
    assert halo_width(1.0, 1.0, 10, 1e-3) < halo_width(1.0, 1.0, 10, 1e-8)
