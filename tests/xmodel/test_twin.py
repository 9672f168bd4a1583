"""Tests of the digital-twin sample (xmodel/twin.py) on the shipped configs/twin.toml."""
from __future__ import annotations

import numpy as np
import pytest

from xmodel.config import CONFIG_DIR
from xmodel.twin import TwinError, components, load_twin, point_params, point_truth

TWIN = CONFIG_DIR / "twin.toml"


@pytest.fixture(scope="module")
def twin():
    sample = load_twin(TWIN)
    comps = components(sample)
    return sample, comps, point_truth(sample, comps)


def test_five_domains_with_paper_areas(twin):
    sample, _, truth = twin
    assert sample.shape == (121, 121) and sample.step_um == 0.25
    assert sorted(sample.label_names) == ["green", "orange", "purple", "red", "yellow"]
    for k, name in enumerate(sample.label_names):
        area = (sample.label_raster == k).sum() * sample.raster_um ** 2
        assert 50.0 <= area <= 100.0, (name, area)
        # the scan sees each domain as the strongest component on about its area
        seen = (truth["label"] == k).sum() * sample.step_um ** 2
        assert abs(seen - area) < 0.2 * area, (name, seen, area)
    assert list(truth["label_names"]) == list(sample.label_names)
    assert truth["orientation_matrix"].shape == (sample.n_points, 3, 3)
    rot = truth["orientation_matrix"][~truth["empty"]]
    np.testing.assert_allclose(rot @ np.swapaxes(rot, 1, 2), np.broadcast_to(np.eye(3), rot.shape), atol=1e-5)


def test_boundary_rule(twin):
    sample, comps, truth = twin
    for k, d in enumerate(sample.domains):
        a0 = d.config.superlattice.lattice_constant
        own = (truth["label"] == k)
        s = truth["boundary_s"][own]
        a = truth["lattice_constant"][own]
        np.testing.assert_allclose(a, a0 * (1 - d.shrink * s), rtol=1e-12)
        assert 1.0 <= d.width_um <= 4.0
        assert 0.05 <= d.shrink <= 0.13
        assert np.all(a <= a0 + 1e-9) and np.all(a >= a0 * (1 - 0.13) - 1e-9)
        assert s.max() == 1.0 and s.min() == 0.0  # every domain has an interior and an edge
        # boundary tilt = the point's tilt minus the domain's own bulk tilt (e.g. red's -7 deg)
        t1 = truth["tilt1_deg"][own] - d.config.superlattice.tilt1_deg
        t2 = truth["tilt2_deg"][own] - d.config.superlattice.tilt2_deg
        tilt = np.hypot(t1, t2)
        if d.edge_tilt_deg is None:
            assert 8.0 <= d.tilt_deg <= 14.0
            np.testing.assert_allclose(tilt, d.tilt_deg * s, atol=1e-6)
            # the tilt axis lies in the sample plane, along the edge: |axis| = 1
            assert tilt[s == 1].min() >= 8.0 - 1e-6 and tilt.max() <= 14.0 + 1e-6
        else:  # orange: scan S2, 22 deg about [010]_SL (lab e2) plus 7 deg about e1
            np.testing.assert_allclose(t2, 22.0 * s, atol=1e-6)
            np.testing.assert_allclose(t1, 7.0 * s, atol=1e-6)
        # deeper inside (larger distance to the edge) never means a smaller lattice constant
        e = truth["boundary_distance_um"][own]
        order = np.argsort(e)
        assert np.all(np.diff(a[order]) >= -1e-9)


def test_empty_and_mixed_points(twin):
    sample, comps, truth = twin
    empty, mixed = truth["empty"], truth["mixed"]
    assert 0.2 < empty.mean() < 0.7
    assert np.all(truth["label"][empty] == -1) and np.all(np.isnan(truth["lattice_constant"][empty]))
    assert np.all(truth["material_fraction"][empty] < sample.empty_threshold)
    assert mixed.sum() > 20
    assert np.all(truth["second_fraction"][mixed] >= sample.mixed_threshold)
    assert np.all(truth["second_label"][mixed] >= 0)
    assert np.all(truth["second_label"][mixed] != truth["label"][mixed])
    # the overlap patch (purple on red, 40 %) is mixed in its centre
    red, purple = sample.label_names.index("red"), sample.label_names.index("purple")
    i = 20 * sample.shape[1] + 20  # (5 um, 5 um)
    assert truth["mixed"][i] and truth["label"][i] == red and truth["second_label"][i] == purple
    assert truth["second_fraction"][i] == pytest.approx(0.4, abs=0.02)
    comps_i = point_params(sample, i, comps)
    assert len(comps_i) == 2 and sum(w for w, _ in comps_i) == pytest.approx(1.0, abs=0.02)
    j = int(np.flatnonzero(empty)[0])
    assert point_params(sample, j, comps) == []
    w, p = point_params(sample, int(np.flatnonzero(~empty & ~mixed)[0]), comps)[0]
    assert float(p.sl_scale) == pytest.approx(sample.photons * sample.efficiency["sl_peak"])
    assert float(p.background) == 0.0


def test_deterministic_for_a_seed():
    a, b = load_twin(TWIN, ["seed=5"]), load_twin(TWIN, ["seed=5"])
    c = load_twin(TWIN, ["seed=6"])
    np.testing.assert_array_equal(a.label_raster, b.label_raster)
    assert [d.shrink for d in a.domains] == [d.shrink for d in b.domains]
    assert [d.shrink for d in a.domains] != [d.shrink for d in c.domains]
    assert not np.array_equal(a.label_raster, c.label_raster)


def test_overrides_and_counts():
    s = load_twin(TWIN, ["scan.shape=[4, 5]", "scan.step_um=2", "beam.flux_photons_per_s=2e9"])
    assert s.shape == (4, 5) and s.n_points == 20
    assert s.photons == pytest.approx(2e9 * 0.3)
    np.testing.assert_allclose(s.positions_um()[6], [2.0, 2.0])
    assert s.domains[0].config.beam.flux_photons_per_s == 2e9


def _absolute_twin_text() -> str:
    return (TWIN.read_text().replace('"domains/', f'"{CONFIG_DIR}/domains/')
            .replace('"experiment/', f'"{CONFIG_DIR}/experiment/'))


def test_errors(tmp_path):
    with pytest.raises(TwinError, match=r"scan\.nope is not a twin key"):
        load_twin(TWIN, ["scan.nope=1"])
    with pytest.raises(TwinError, match=r"scan\.shape = \[4\] is invalid; expected \[rows, cols\]"):
        load_twin(TWIN, ["scan.shape=[4]"])
    with pytest.raises(TwinError, match="does not exist"):
        load_twin(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text(_absolute_twin_text().replace('domain = "purple"', 'domain = "blue"'))
    with pytest.raises(TwinError, match=r"domain = 'blue' is invalid; expected one of the domain names"):
        load_twin(bad)
    bad.write_text(_absolute_twin_text() + "\n[extra]\nx = 1\n")
    with pytest.raises(TwinError, match="unknown key or table 'extra'"):
        load_twin(bad)
    bad.write_text(_absolute_twin_text().replace("\n[boundary]\n", "\n[boundary]\nwidth = 2\n"))
    with pytest.raises(TwinError, match=r"unknown key \[boundary\] 'width'"):
        load_twin(bad)
    with pytest.raises(IndexError, match="outside the twin's 16 points"):
        point_params(load_twin(TWIN, ["scan.shape=[4,4]"]), 16)
