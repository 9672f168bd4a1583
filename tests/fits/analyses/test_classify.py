"""Domain classification on a small synthetic scan of polar images from the forward model."""
import numpy as np
import pytest

from fits.analyses import classify, xcca

CHI = np.arange(-180.0, 180.0, 1.0) + 0.5
DOMAINS = ("red", "purple", "yellow")
Q_SL, Q_AL = 0.0837, 2.12
DQ_SL, DQ_AL = 0.002, xcca.default_dq(2.12)
SHAPE = (5, 6)


@pytest.fixture(scope="module")
def scan():
    """5 x 6 points: three domains in blocks, one empty point, one mixed (red + purple) point."""
    from xmodel.config import default_paths, load_config
    from xmodel.experiment import Experiment
    from xmodel.noise import poisson_counts
    from xmodel.parameters import params_from_config, structure_from_config

    cfgs = [load_config(default_paths(d)) for d in DOMAINS]
    exp = Experiment.from_config(cfgs[0])
    params = [params_from_config(c).replace(background=0.5) for c in cfgs]
    structure = structure_from_config(cfgs[0], lattice_constant_range=(145.0, 155.0))
    q = np.concatenate([np.linspace(Q_SL - DQ_SL, Q_SL + DQ_SL, 3), np.linspace(Q_AL - DQ_AL, Q_AL + DQ_AL, 5)])
    t_sl = classify.templates_from_model(params, exp, structure, q, CHI, Q_SL, DQ_SL)
    t_al = classify.templates_from_model(params, exp, structure, q, CHI, Q_AL, DQ_AL)
    from xmodel.pattern import PatternModel
    model = PatternModel(exp.polar_pixels(q, CHI), structure, params[0], orientation_margin_deg=None,
                         lattice_constant_range=(145.0, 155.0))
    images = [xcca.model_polar_image(model, p) for p in params]
    empty = xcca.model_polar_image(model, params[0].replace(sl_scale=0.0, al_scale=0.0, diffuse_scale=0.0))
    truth = np.repeat(np.array([0, 0, 1, 1, 2, 2]), 5).reshape(6, 5).T.ravel()    # columns in pairs
    truth[7] = classify.EMPTY
    truth[20] = classify.MIXED
    frames = []
    for i, t in enumerate(truth):
        if t == classify.EMPTY:
            expct = empty
        elif t == classify.MIXED:
            expct = 0.6 * images[0] + 0.4 * images[1]
        else:
            expct = images[t]
        valid = np.isfinite(expct)
        counts = poisson_counts(np.where(valid, expct, 0.0), seed=i).astype(float)
        frames.append(np.where(valid, counts, np.nan))
    polar = np.array(frames)
    return dict(polar=polar, q=q, truth=truth, t_sl=t_sl, t_al=t_al, params=params)


def _rings(s):
    r_sl = xcca.ring_profile(s["polar"], s["q"], CHI, Q_SL, DQ_SL)
    r_al = xcca.ring_profile(s["polar"], s["q"], CHI, Q_AL, DQ_AL)
    return r_sl, r_al


def test_given_templates_label_every_point(scan):
    r_sl, r_al = _rings(scan)
    saxs = classify.fit_templates(r_sl.intensity, r_sl.weight, scan["t_sl"])
    waxs = classify.fit_templates(r_al.intensity, r_al.weight, scan["t_al"])
    np.testing.assert_array_equal(saxs.label, scan["truth"])
    label, conf = classify.combine_labels(saxs, waxs)
    np.testing.assert_array_equal(label, scan["truth"])
    pure = scan["truth"] >= 0
    assert np.all(conf[pure] > 0.8) and np.all((conf >= 0) & (conf <= 1))
    # the WAXS ring alone also separates the domains (AL peaks of a few counts)
    assert np.mean(waxs.label[pure] == scan["truth"][pure]) == 1.0
    assert waxs.label[7] == classify.EMPTY


def test_clustering_finds_the_classes(scan):
    r_sl, r_al = _rings(scan)
    temps = classify.cluster_templates(r_sl.intensity, r_sl.weight, n_classes=4)
    assert temps.shape[0] == 3            # the mixed point does not become a class
    saxs = classify.fit_templates(r_sl.intensity, r_sl.weight, temps)
    truth = scan["truth"]
    mapping = classify.match_classes(saxs.label, truth)
    mapped = np.array([mapping.get(v, v) if v >= 0 else v for v in saxs.label])
    np.testing.assert_array_equal(mapped, truth)
    # without n_classes: cut by similarity
    temps2 = classify.cluster_templates(r_sl.intensity, r_sl.weight)
    assert temps2.shape[0] == 3


def test_cluster_without_signal_raises():
    flat = np.ones((4, CHI.size))
    with pytest.raises(ValueError, match="clustering needs at least 2"):
        classify.cluster_templates(flat, np.ones(CHI.size))


def test_orientation_clustering_is_symmetry_aware(scan):
    from xmodel.orientation import cubic_symmetry_operators, rotation_matrix

    base = np.array([np.asarray(p.astype(np.float64).sl_orientation()) for p in scan["params"]])
    ops = cubic_symmetry_operators()
    rng = np.random.default_rng(0)
    truth = np.repeat(np.arange(3), 6)
    mats = []
    for k in truth:
        small = np.asarray(rotation_matrix(rng.normal(0, np.radians(1.0), 3)))
        mats.append(small @ base[k] @ ops[rng.integers(24)])     # symmetry-equivalent settings
    mats = np.array(mats)
    ok = np.ones(truth.size, bool)
    ok[4] = False
    label, angle = classify.classify_orientations(mats, ok, base)
    expect = truth.copy(); expect[4] = classify.EMPTY
    np.testing.assert_array_equal(label, expect)
    assert np.nanmax(angle) < 5.0
    # red and yellow SL orientations differ by only 8.6 deg (both [001], Conf1 vs Conf2): a tighter
    # tolerance separates them when no templates are given
    label2, _ = classify.classify_orientations(mats, ok, tolerance_deg=5.0)
    mapping = classify.match_classes(label2, truth)
    np.testing.assert_array_equal([mapping[v] for v in label2[ok]], truth[ok])


def _write_reduced(path, s):
    import h5py

    with h5py.File(path, "w") as f:
        g = f.create_group("entry/reduction")
        g.create_dataset("polar", data=s["polar"].astype(np.float32), chunks=(1,) + s["polar"].shape[1:])
        g["q"] = s["q"]
        g["chi"] = CHI
        g["scan_shape"] = np.array(SHAPE)


def test_cli_classify_cluster_and_ccf_by_domain(scan, tmp_path, capsys):
    import json

    import h5py

    from xmodel.cli import main

    path = tmp_path / "scan.h5"
    _write_reduced(path, scan)
    assert main(["classify", str(path), "--templates", "cluster", "--n-classes", "4", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert Path(out["figure"]).exists()
    with h5py.File(path, "r") as f:
        g = f["entry/classification"]
        label = g["label"][()]
        names = json.loads(g.attrs["class_names"])
        assert g["confidence"].shape == (30,) and "saxs_label" in g and "waxs_label" in g
    assert len(names) == 3 and label[7] == classify.EMPTY and label[20] == classify.MIXED
    mapping = classify.match_classes(label, scan["truth"])
    assert [mapping.get(v, v) if v >= 0 else v for v in label] == scan["truth"].tolist()
    # the CCF of one class of the classification, then of a frame list
    assert main(["ccf", str(path), "--q1", "0.0837", "--q2", "2.12", "--dq", "0.002", "0.042",
                 "--domain", names[0], "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert len(res["delta_deg"]) == len(res["ccf"]) == 360 and res["n_frames"] >= 9
    assert main(["ccf", str(path), "--q1", "0.0837", "--q2", "2.12", "--domain", "0,1,2"]) == 0
    assert "maxima at" in capsys.readouterr().out
    assert main(["ccf", str(path), "--q1", "0.0837", "--q2", "2.12", "--domain", "blue"]) == 3
    assert "is not a class of" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:                          # a usage error
        main(["classify", str(path), "--templates", "six"])
    assert exc.value.code == 2
    assert "invalid choice: 'six' (choose from 'five', 'cluster')" in capsys.readouterr().err


from pathlib import Path  # noqa: E402


def test_similar_saxs_classes_are_decided_by_waxs():
    from fits.analyses.classify import RingClasses, combine_labels, template_similarity
    t = np.array([[0, 1, 0, 1.0], [0, 1, 0, 0.9], [1, 0, 1, 0.0]])
    sim = template_similarity(t)
    assert sim.shape == (3, 3) and np.allclose(np.diag(sim), 1)
    saxs = RingClasses(np.array([0, 0, 2]), np.ones(3), np.zeros((3, 3)), np.zeros((3, 3)))
    waxs = RingClasses(np.array([1, 2, 2]), np.ones(3), np.zeros((3, 3)), np.zeros((3, 3)))
    label, _ = combine_labels(saxs, waxs, saxs_similarity=sim)
    # point 0: SAXS 0 and 1 look alike -> WAXS decides; point 1: 0 and 2 differ -> SAXS kept
    np.testing.assert_array_equal(label, [1, 0, 2])


def test_scaled_ring_follows_a_compressed_superlattice(tmp_path):
    import h5py

    from fits.analyses.classify import scaled_ring
    q = np.geomspace(0.05, 0.2, 120)
    chi = np.arange(-179.5, 180, 5.0)
    centres = [0.083, 0.094]                                   # bulk and 13 % compressed
    polar = np.zeros((2, chi.size, q.size))
    for j, qc in enumerate(centres):
        prof = np.exp(-0.5 * ((q - qc) / 0.001) ** 2)
        polar[j] = 1.0 + np.outer(1 + np.cos(np.radians(2 * chi)), prof)
    path = tmp_path / "r.h5"
    with h5py.File(path, "w") as f:
        g = f.create_group("entry/reduction")
        g["polar"], g["radial"], g["q"], g["chi"] = polar, polar.mean(axis=1), q, chi
    ring, q_peak = scaled_ring(path, 0.083)
    np.testing.assert_allclose(q_peak, centres, rtol=0.012)       # one log bin
    assert ring.intensity.shape == (2, chi.size)
    # both frames show the same two-fold profile, at their own q
    assert np.corrcoef(ring.intensity[0], ring.intensity[1])[0, 1] > 0.99


# --------------------------------------------------------------------------- tilt families (H4)


def _family(centres, shifts=(-10.0, -5.0, 0.0, 5.0, 10.0), sigma=6.4, chi=CHI[100:240]):
    """Broad (15 deg FWHM) WAXS-like peaks of each class, shifted along the ring as a tilt would."""
    temps, cls = [], []
    for k, c in enumerate(centres):
        for s in shifts:
            temps.append(xcca.gaussian_ring(chi, [c + s], [1.0], sigma))
            cls.append(k)
    return np.array(temps), np.array(cls)


def test_poisson_variance_factor_matches_the_scatter():
    rng = np.random.default_rng(1)
    n_pix = np.array([[4, 9, 0], [100, 100, 100]])           # pixels per (chi, q) bin
    q = np.array([1.0, 1.01, 1.02])
    f = classify.poisson_variance_factor(n_pix, q, 1.01, 0.011)
    np.testing.assert_allclose(f, [(1 / 4 + 1 / 9) / 4, 3 / 100 / 9])
    mu = 5.0
    ring = [np.mean([rng.poisson(mu, n).mean() for n in (4, 9)]) for _ in range(4000)]
    np.testing.assert_allclose(np.var(ring), mu * f[0], rtol=0.08)


def test_tilted_params_grid_and_error():
    from xmodel.config import default_paths, load_config
    from xmodel.parameters import params_from_config

    p = params_from_config(load_config(default_paths("red")))
    out, cls = classify.tilted_params([p, p], max_tilt_deg=10.0, step_deg=5.0)
    assert len(out) == cls.size == 2 * 21 and np.sum(cls == 1) == 21     # 5 x 5 grid minus corners
    dt = np.degrees([float(q.tilt1 - p.tilt1) for q in out[:21]])
    assert np.isclose(dt.min(), -10.0) and np.isclose(dt.max(), 10.0)
    with pytest.raises(ValueError, match="must be positive"):
        classify.tilted_params([p], step_deg=0.0)


def test_families_keep_tilted_points_and_flag_mixed_and_empty():
    chi = CHI[100:240]
    temps, cls = _family([-60.0, -20.0, 30.0])
    rng = np.random.default_rng(3)
    n_pix = 300.0
    truth = [0, 1, 2, 0, classify.MIXED, classify.EMPTY, 1]
    expect = [
        0.1 + 2.0 * xcca.gaussian_ring(chi, [-53.0], [1.0], 6.4),     # class 0 "tilted" by 7 deg
        0.1 + 2.0 * xcca.gaussian_ring(chi, [-27.0], [1.0], 6.4),
        0.1 + 2.0 * xcca.gaussian_ring(chi, [38.0], [1.0], 6.4),
        0.1 + 0.2 * xcca.gaussian_ring(chi, [-60.0], [1.0], 6.4),      # weak but significant
        0.1 + 1.4 * xcca.gaussian_ring(chi, [-60.0], [1.0], 6.4) + 0.6 * xcca.gaussian_ring(chi, [30.0], [1.0], 6.4),
        0.1 + 0 * chi,
        0.1 + 2.0 * xcca.gaussian_ring(chi, [-20.0], [1.0], 6.4) + 0.08 * xcca.gaussian_ring(chi, [30.0], [1.0], 6.4),
    ]
    prof = np.array([rng.poisson(e * n_pix) / n_pix for e in expect])
    f = np.full(chi.size, 1.0 / n_pix)
    res = classify.fit_template_families(prof, np.ones(chi.size), temps, cls, variance_factor=f)
    np.testing.assert_array_equal(res.label, truth)
    assert res.significance[6, 2] >= 6.0 and res.fraction[6, 2] < 0.1     # significant, too small
    assert res.fraction[4, 2] == pytest.approx(0.3, abs=0.05)
    assert np.all((res.confidence >= 0) & (res.confidence <= 1))
    # look-alike classes never make a point mixed
    alike = np.eye(3); alike[0, 2] = alike[2, 0] = 0.95
    res2 = classify.fit_template_families(prof[4:5], np.ones(chi.size), temps, cls, variance_factor=f, alike=alike)
    assert res2.label[0] == 0
    with pytest.raises(ValueError, match="build them on the same polar grid"):
        classify.fit_template_families(prof, np.ones(chi.size), temps[:, :50], cls)


def test_combine_rings_rules():
    def rc(lab):
        lab = np.array(lab)
        return classify.RingClasses(lab, np.full(lab.size, 0.9), np.zeros((lab.size, 3)), np.zeros((lab.size, 3)))
    E, M = classify.EMPTY, classify.MIXED
    saxs = rc([0, E, 0, M, 0, 0, 1, E])
    waxs = rc([0, 1, M, 1, E, 2, 2, E])
    sim_sl = np.eye(3); sim_sl[1, 2] = sim_sl[2, 1] = 0.95             # SAXS cannot tell 1 from 2
    label, conf, source = classify.combine_rings(saxs, waxs, sim_sl, np.eye(3))
    np.testing.assert_array_equal(label, [0, 1, M, M, 0, M, 2, E])
    np.testing.assert_array_equal(source, [3, 2, -1, -1, 1, -1, -1, 0])
    sim_al = np.eye(3); sim_al[0, 2] = sim_al[2, 0] = 0.95             # WAXS cannot tell 0 from 2
    label2, _, _ = classify.combine_rings(saxs, waxs, np.eye(3), sim_al)
    assert label2[5] == 0
