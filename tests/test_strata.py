"""Error strata: every counted cell falls in one bin of each stratum."""

from __future__ import annotations

import numpy as np

from conftest import folded_fields, random_fields
from diffnorm.cells import cell_geometry
from diffnorm.metrics import error_strata, merge_strata, strata_table


def test_every_cell_in_one_bin_and_the_means_add_up():
    fields = random_fields(ny=14, nx=17, anisotropy=2.0)
    eps = np.where(fields.mask, np.linspace(-0.1, 0.1, fields.mask.size).reshape(14, 17), np.nan)
    strata = error_strata(eps, fields)
    n = fields.n_ocean
    for name in ("coast distance", "open faces", "passage", "steps M"):
        rows = strata[name]
        assert sum(r["cells"] for r in rows.values()) == n, name
        total = sum(r["mean_abs"] * r["cells"] for r in rows.values())
        np.testing.assert_allclose(total / n, np.abs(eps[fields.mask]).mean())
    assert strata["open faces"]["0"]["cells"] == 1  # the one-cell lake
    both = merge_strata([strata, strata])
    assert both["passage"]["no"]["cells"] == 2 * strata["passage"]["no"]["cells"]
    assert "| open faces 0 | 1 |" in strata_table(strata)
    other = error_strata(eps, fields.replace(steps=16))  # M: one bin per sample
    assert list(other["steps M"]) == ["14-20"] and list(strata["steps M"]) == ["4-6"]
    assert list(merge_strata([other, strata])["steps M"]) == ["4-6", "14-20"]  # bin order


def test_geometry_knows_passages_and_counts_a_t_fold_cell_once():
    fields = folded_fields("T", ny=9, nx=12)
    cells = cell_geometry(fields)
    assert cells["open_faces"][~fields.mask].max() == 0
    eps = np.where(fields.mask, 0.01, np.nan)
    strata = error_strata(eps, fields)
    assert sum(r["cells"] for r in strata["open faces"].values()) == fields.n_ocean
    single = np.zeros((5, 5))
    single[2, 1:4] = 1  # a channel one cell wide
    f = random_fields(ny=5, nx=5, islands=False, periodic_x=False).replace(mask=single)
    assert cell_geometry(f)["passage"][2, 1:4].all()
