"""Design scans: the --vary syntax, its errors, and bounds over a setting."""
from __future__ import annotations

import numpy as np
import pytest

from fits.study.design import design_scan, override_for, parse_vary, valid_keys
from xmodel.config import default_paths, load_config

YELLOW = [str(p) for p in default_paths("yellow")]
SMALL = ["detector.binning=16"]


@pytest.fixture(scope="module")
def cfg():
    return load_config(YELLOW, SMALL)


def test_range_and_list_forms(cfg):
    s = parse_vary("detector.distance_m=0.3:0.6:7", cfg)
    assert s.key == "detector.distance_m" and s.numeric
    np.testing.assert_allclose(s.values, np.linspace(0.3, 0.6, 7))
    z = parse_vary("superlattice.beam_direction={[0,0,1];[1,1,0]}", cfg)
    assert z.values == ((0, 0, 1), (1, 1, 0)) and not z.numeric
    assert parse_vary("beam.exposure_s=0.1:1:3", cfg).key == "exposure_s"
    assert override_for("detector.beam_center_px[1]", 300.0, cfg) == "detector.beam_center_px=[1950.0,300.0]"
    assert override_for("superlattice.beam_direction", (1, 1, 0), cfg) == "superlattice.beam_direction=[1,1,0]"
    assert override_for("exposure_s", 0.5, cfg) is None
    assert {"exposure_s", "detector.distance_m", "beam.energy_kev", "superlattice.tilt1_deg",
            "atomic_lattice.disorder_fwhm_deg", "detector.beam_center_px[0]"} <= set(valid_keys(cfg))


def test_bad_vary_key_names_the_valid_keys(cfg):
    with pytest.raises(ValueError, match=r"--vary: unknown or non-numeric setting 'detector.distanc_m'\. "
                                         r"Perhaps you meant 'detector.distance_m'\? Valid keys are "
                                         r"\['exposure_s', 'beam.energy_kev'.*'detector.distance_m'"):
        parse_vary("detector.distanc_m=0.3:0.6:7", cfg)
    with pytest.raises(ValueError, match=r"non-numeric setting 'atomic_lattice.configuration'"):
        parse_vary("atomic_lattice.configuration=1:2:3", cfg)


@pytest.mark.parametrize("text, match", [
    ("detector.distance_m", r"has no '='; write KEY=LO:HI:N"),
    ("detector.distance_m=0.3:0.6", r"the range '0.3:0.6' is not LO:HI:N"),
    ("detector.distance_m=0.3:0.6:1", r"N = 1 must be at least 2"),
    ("superlattice.beam_direction={[0,0,1];[1,1,}", r"'\[1,1,' is not a TOML value"),
])
def test_bad_vary_syntax(cfg, text, match):
    with pytest.raises(ValueError, match=match):
        parse_vary(text, cfg)


def test_bounds_over_exposure_and_distance():
    """Four times the exposure halves the bound; the points keep the order of the settings."""
    res = design_scan(YELLOW, SMALL, ["exposure_s=0.3:1.2:2", "detector.distance_m={0.41;0.5}"], ["tilt1_deg"],
                      grid="binned")
    b = res.crlb("tilt1_deg")
    assert b.shape == (2, 2)
    np.testing.assert_allclose(b[1], b[0] / 2, rtol=1e-6)
    assert res.points[1] == (0.3, 0.5)
    assert res.results[1].exposure_s == pytest.approx(0.3)
    assert not np.isclose(b[0, 0], b[0, 1])
    d = res.to_dict()
    assert d["vary"][0]["key"] == "exposure_s" and len(d["points"]) == 4
    assert d["points"][3]["settings"] == {"exposure_s": 1.2, "detector.distance_m": 0.5}
