"""Flips, rotations and shifts of the staggered grid commute with exact γ."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import random_fields
from diffnorm.augment import Transform, random_transform, symmetries
from diffnorm.methods import estimate
from diffnorm.topology import Topology


@pytest.mark.parametrize("periodic_x", [False, True])
def test_exact_gamma_commutes_with_every_symmetry(periodic_x):
    f = random_fields(ny=12, nx=12, periodic_x=periodic_x, anisotropy=2.0, seed=4)
    gamma = estimate(f, "brute").gamma
    transforms = symmetries(f.topology)
    if periodic_x:
        transforms += [Transform(flip_x=True, shift_x=5), Transform(shift_x=11)]
    assert len({t.name for t in transforms}) == len(transforms)
    for t in transforms:
        moved = estimate(t.fields(f), "brute").gamma
        np.testing.assert_allclose(moved, t.cells(gamma), rtol=1e-11, equal_nan=True)


def test_restore_cells_undoes_every_transform():
    a = np.arange(7 * 9, dtype=float).reshape(7, 9)
    for t in symmetries(Topology(7, 9)) + [Transform(flip_x=True, shift_x=4)]:
        np.testing.assert_array_equal(t.restore_cells(t.cells(a)), a)


def test_a_wrong_face_convention_would_be_caught():
    # flipping face fields like cell fields (no shift) breaks the symmetry: the test has teeth
    f = random_fields(ny=10, nx=13, periodic_x=True, anisotropy=2.0, seed=1, islands=False)
    t = Transform(flip_x=True)
    naive = t.fields(f).replace(alpha_x=t.cells(f.alpha_x))
    exact = t.cells(estimate(f, "brute").gamma)
    assert np.max(np.abs(estimate(naive, "brute").gamma / exact - 1)) > 1e-3


def test_transpose_refused_on_periodic_grids_and_shift_on_closed_ones():
    with pytest.raises(ValueError, match="periodic"):
        Transform(transpose=True).fields(random_fields(periodic_x=True))
    with pytest.raises(ValueError, match="shift_x"):
        Transform(shift_x=2).fields(random_fields(periodic_x=False))


def test_random_transform_is_seeded_and_keeps_the_shape():
    periodic, closed = Topology(9, 16, periodic_x=True), Topology(9, 16)
    a = [random_transform(np.random.default_rng(7), periodic) for _ in range(2)]
    assert a[0] == a[1]
    drawn = {random_transform(np.random.default_rng(s), closed).name for s in range(40)}
    assert len(drawn) == 4 and not any("transpose" in n for n in drawn)
