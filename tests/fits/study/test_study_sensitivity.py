"""Sensitivity maps: per-point Fisher shares and dI/dtheta * sigma images."""
from __future__ import annotations

import numpy as np
import pytest

from fits.study.sensitivity import plot_sensitivity, sensitivity_maps


def test_maps_sum_to_the_information_and_scale_with_the_bound(small_problem, tmp_path):
    p = small_problem
    maps = sensitivity_maps(p, ["tilt1_deg", "disorder_deg"])
    assert maps.change.shape == (2,) + p.grid.image_shape
    np.testing.assert_allclose(np.nansum(maps.fisher_fraction, axis=(1, 2)), 1.0, rtol=1e-10)
    m, jac = p.jacobian()
    fa = p.fisher()
    i = p.names.index("tilt1_deg")
    np.testing.assert_allclose(maps.change[0].reshape(-1)[p.grid.index], jac[:, i] * fa.crlb[i], rtol=1e-12)
    # the disorder is measured on the AL arcs only (|q| > 1 1/A)
    q = p.grid.image(p.grid.pixels.q_abs)
    assert np.nansum(maps.fisher_fraction[1][q > 1.0]) > 0.999
    paths = plot_sensitivity(p, maps, tmp_path)
    assert [x.name for x in paths] == ["sensitivity_tilt1_deg.png", "sensitivity_disorder_deg.png"]
    assert all(x.stat().st_size > 10_000 for x in paths)


def test_map_of_a_parameter_not_studied_is_refused(small_problem):
    with pytest.raises(ValueError, match=r"sensitivity map of 'radius' asked, but the study only holds"):
        sensitivity_maps(small_problem, ["radius"])
