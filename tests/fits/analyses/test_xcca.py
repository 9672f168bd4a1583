"""XCCA (Eqs. 1-6): FFT vs direct sum with gapped masks, degenerate rings, zone-axis CCF maxima."""
import numpy as np
import pytest

from fits.analyses import xcca

CHI = np.arange(-180.0, 180.0, 1.0) + 0.5


def _direct_eq3(i1, w1, i2, w2, step_deg):
    """Eq. 3 as an explicit double loop over phi and Delta."""
    n = i1.size
    out = np.zeros(n)
    for k in range(n):
        for j in range(n):
            out[k] += i1[j] * w1[j] * i2[(j + k) % n] * w2[(j + k) % n]
    return out * np.radians(step_deg)


def test_fft_equals_direct_sum_with_gapped_masks():
    rng = np.random.default_rng(1)
    chi = np.arange(0.0, 360.0, 2.0)
    i1, i2 = rng.random(chi.size), rng.random(chi.size)
    w1 = np.ones(chi.size); w1[10:14] = 0; w1[100:103] = 0          # module gaps
    w2 = xcca.angular_window(chi, 200.0, 300.0); w2[150:152] = 0     # WAXS window + a gap
    delta, c = xcca.cross_correlation(i1, w1, i2, w2, chi)
    direct = _direct_eq3(i1, w1, i2, w2, 2.0)
    k = np.round(delta / 2.0).astype(int) % chi.size
    np.testing.assert_allclose(c, direct[k], rtol=1e-12, atol=1e-12)
    assert np.all(np.diff(delta) > 0) and delta[0] == -180.0


def test_partial_chi_range_is_padded_to_full_circle():
    chi = np.arange(-97.0, 8.0, 1.0)              # only the WAXS part of the circle
    rng = np.random.default_rng(2)
    i1, i2 = rng.random(chi.size), rng.random(chi.size)
    delta, c = xcca.cross_correlation(i1, 1.0, i2, 1.0, chi)
    full = np.zeros(360); full2 = np.zeros(360)
    full[:chi.size] = i1; full2[:chi.size] = i2
    direct = _direct_eq3(full, np.ones(360), full2, np.ones(360), 1.0)
    np.testing.assert_allclose(c, direct[np.round(delta).astype(int) % 360], rtol=1e-12, atol=1e-12)


def test_ring_profile_masks_nan_bins_and_domain_average():
    q = np.array([0.08, 0.083, 0.086, 2.1, 2.12, 2.14])
    polar = np.ones((3, CHI.size, q.size))
    polar[:, 5:9, :3] = np.nan                 # a gap across the SAXS band
    polar[:, 20, 1] = np.nan                   # one bin: the others of the band still count
    polar[:, 40:200, 3:] = np.nan              # WAXS only partly covered
    polar[1] *= 3.0
    r = xcca.ring_profile(polar, q, CHI, 0.083, 0.004)
    assert r.weight.shape == (3, CHI.size)
    assert np.all(r.weight[:, 5:9] == 0) and np.all(r.weight[:, 20] == 1)
    np.testing.assert_allclose(r.intensity[1, 20], 3.0)
    res = xcca.domain_ccf(polar + np.sin(np.radians(CHI))[None, :, None] ** 2, q, CHI, 0.083, 2.12,
                          dq1=0.004, dq2=0.03, frames=[0, 2])
    assert res.n_frames == 2 and res.ccf.min() == 0.0 and res.ccf.max() == 1.0


def test_empty_ring_raises_clear_error():
    q = np.array([0.083, 2.12])
    polar = np.zeros((CHI.size, q.size))
    with pytest.raises(ValueError, match="is constant .* empty ring gives all zeros"):
        xcca.domain_ccf(polar, q, CHI, 0.083, 2.12, dq1=0.001, dq2=0.001)


def test_fully_masked_ring_raises_naming_q():
    q = np.array([0.083, 2.12])
    polar = np.ones((CHI.size, q.size))
    polar[:, 1] = np.nan
    with pytest.raises(ValueError, match=r"ring at q = 2.12 1/A .* is fully masked"):
        xcca.domain_ccf(polar, q, CHI, 0.083, 2.12, dq1=0.001, dq2=0.001)


def test_ring_outside_grid_and_bad_chi_raise():
    q = np.array([0.08, 0.09])
    with pytest.raises(ValueError, match="lies outside the polar grid's q range"):
        xcca.ring_profile(np.ones((CHI.size, 2)), q, CHI, 2.12, 0.01)
    with pytest.raises(ValueError, match="chi must be uniform and increasing"):
        xcca.cross_correlation(np.ones(3), 1, np.ones(3), 1, np.array([0.0, 1.0, 3.0]))
    with pytest.raises(ValueError, match="does not divide 360"):
        xcca.cross_correlation(np.ones(3), 1, np.ones(3), 1, np.array([0.0, 7.0, 14.0]))


# --------------------------------------------------------------------------- forward model


@pytest.fixture(scope="module", params=["yellow", "purple"])
def domain(request):
    from xmodel.config import default_paths, load_config
    from xmodel.experiment import Experiment
    from xmodel.parameters import params_from_config, structure_from_config
    from xmodel.pattern import PatternModel
    from xmodel.peaks import reflection_table

    name = request.param
    cfg = load_config(default_paths(name))
    exp = Experiment.from_config(cfg)
    params = params_from_config(cfg)
    structure = structure_from_config(cfg)
    a = cfg.superlattice.lattice_constant
    # paper: 200_SL with 200_AL for yellow; 311_SL with 200_AL for purple (311 at this a)
    q1 = 2 * np.pi * (2.0 if name == "yellow" else np.sqrt(11.0)) / a
    q2 = 2.12
    dq1, dq2 = 0.002, xcca.default_dq(q2)
    q = np.concatenate([np.linspace(q1 - dq1, q1 + dq1, 5), np.linspace(q2 - dq2, q2 + dq2, 7)])
    model = PatternModel(exp.polar_pixels(q, CHI), structure, params)
    polar = xcca.model_polar_image(model, params)
    rows = reflection_table(exp, structure, params)
    return dict(name=name, polar=polar, q=q, q1=q1, q2=q2, dq1=dq1, dq2=dq2, rows=rows, params=params)


def test_ccf_maxima_sit_at_zone_axis_angles(domain):
    d = domain
    res = xcca.domain_ccf(d["polar"], d["q"], CHI, d["q1"], d["q2"], dq1=d["dq1"], dq2=d["dq2"])
    sl = xcca.ring_peaks(d["rows"], "SL", d["q1"], d["dq1"] + 0.001, d["params"])[0]
    al = xcca.ring_peaks(d["rows"], "AL", d["q2"], d["dq2"], d["params"])[0]
    expected = ((al[None, :] - sl[:, None]).ravel() + 180.0) % 360.0 - 180.0
    n_expected = {"yellow": 4, "purple": 8}[d["name"]]          # paper, Fig. 2b,c
    assert expected.size == n_expected
    found = xcca.ccf_maxima(res.delta_deg, res.ccf, min_height=0.3)
    assert found.size == n_expected
    for e in expected:
        dist = np.abs((found - e + 180.0) % 360.0 - 180.0)
        assert dist.min() < 1.0, (d["name"], e, found)


def test_gaussian_peak_ccf_matches_forward_model(domain):
    d = domain
    res = xcca.domain_ccf(d["polar"], d["q"], CHI, d["q1"], d["q2"], dq1=d["dq1"], dq2=d["dq2"])
    saxs = xcca.ring_peaks(d["rows"], "SL", d["q1"], d["dq1"] + 0.001, d["params"], chi_step_deg=1.0)
    waxs = xcca.ring_peaks(d["rows"], "AL", d["q2"], d["dq2"], d["params"], chi_step_deg=1.0)
    w2 = xcca.ring_profile(d["polar"], d["q"], CHI, d["q2"], d["dq2"]).weight    # Eq. 5 window + gaps
    sim = xcca.gaussian_ccf(CHI, saxs, waxs, w_waxs=w2)
    assert xcca.ccf_score(res.ccf, sim.ccf) >= 0.95


def test_cli_ccf_on_single_simulated_pattern(tmp_path, capsys):
    """A small `xmodel simulate`-style file: 4 SAXS peaks at 0.083 and one WAXS-like peak."""
    import json

    import h5py

    from xmodel.cli import main
    from xmodel.geometry import Geometry

    geom = Geometry(dist=0.41, poni1=100 * 75e-6, poni2=100 * 75e-6, rot1=0.0, rot2=0.0, rot3=0.0,
                    wavelength=0.898e-10, pixel1=75e-6, pixel2=75e-6, shape=(201, 201), detector_name="")
    q, chi = geom.q(), geom.chi()
    ring = lambda q0, c, s: np.exp(-0.5 * ((q - q0) / 0.002) ** 2) * xcca.gaussian_ring(  # noqa: E731
        chi.ravel(), c, 1.0, s).reshape(q.shape)
    qa = float(np.percentile(q, 90))                                        # stands in for 2.12
    image = 100 * ring(0.03, [0, 90, 180, -90], 2.0) + 50 * ring(qa, [30.0], 5.0) + 1.0
    mask = np.zeros(image.shape, np.uint8); mask[:, 150:153] = 1
    path = tmp_path / "pattern.h5"
    with h5py.File(path, "w") as f:
        f["entry/pattern/intensity"] = image * (1 - mask)
        f["entry/pattern/mask"] = mask
        g = f.create_group("entry/geometry")
        for k in ("dist", "poni1", "poni2", "rot1", "rot2", "rot3", "wavelength", "pixel1", "pixel2"):
            g.attrs[k] = getattr(geom, k)
        g.attrs["shape"] = np.array(geom.shape)
    assert main(["ccf", str(path), "--q1", "0.03", "--q2", f"{qa}", "--dq", "0.003", "--json",
                 "--figure", str(tmp_path / "ccf.png")]) == 0
    res = json.loads(capsys.readouterr().out)
    assert (tmp_path / "ccf.png").exists()
    found = np.array(res["maxima_deg"])
    for e in (30.0, -60.0, 120.0, -150.0):      # Delta = 30 - (0, 90, 180, -90)
        assert np.abs((found - e + 180) % 360 - 180).min() < 1.0
    assert main(["ccf", str(path), "--q1", "0.03", "--q2", "5.0"]) == 3
    assert "is fully masked" in capsys.readouterr().err


def test_maxima_offset_is_circular_and_flags_missing_maxima():
    assert xcca.maxima_offset(np.array([-179.5, 45.2]), np.array([179.8, 45.0])) == pytest.approx(0.7)
    assert xcca.maxima_offset(np.array([10.0]), np.array([10.0, 100.0])) == pytest.approx(90.0)
    assert xcca.maxima_offset(np.zeros(0), np.array([5.0])) == float("inf")
    assert xcca.maxima_offset(np.array([5.0]), np.zeros(0)) == 0.0
