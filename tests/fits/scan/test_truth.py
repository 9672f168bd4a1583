"""Tests of fits/scan/truth.py: hand-made fits.h5 and truth.h5 with known errors, every number of the
summary checked against arithmetic done by hand (not against the code's own output).

The scan has 10 points: red (label 0) points 0-3, blue (label 1) points 4-6, two empty points
(7: no signal, 8: fitted ok by mistake) and one mixed point (9, fitted ok, 30 deg off: it must
not enter the in-domain errors). Errors of the in-domain points, by construction:

====  =================================  ======  ==============  ==============  ========
pt    orientation (deg)                  a (%)   dPhi (deg)      configuration   status
====  =================================  ======  ==============  ==============  ========
0     0                                  0       0               right           ok
1     0.3 about lab (1, 2, 3)            +0.2    +1.0            right           ok
2     1.0 about the beam e3              -1.0    undetermined    undetermined    ok
3     no fit (NaN)                       NaN     NaN             undetermined    failed
4     0 (cubic copy R S of the truth)    0       +2.0            wrong           ok
5     2.0 about e1                       +0.4    -0.5            right           at bound
6     0.3 about e2                       0       0               right           not conv.
====  =================================  ======  ==============  ==============  ========
"""
import h5py
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from fits.scan.truth import compare_to_truth, format_truth_table, read_truth
from fits.status import FitStatus

N = 10
A_TRUE = np.array([150.0, 150.0, 150.0, 150.0, 140.0, 140.0, 140.0, np.nan, np.nan, 150.0])
D_TRUE = np.array([12.0, 12.0, 12.0, 12.0, 14.0, 14.0, 14.0, np.nan, np.nan, 12.0])
CONF_TRUE = ["conf1"] * 4 + ["conf2"] * 3 + ["", "", "conf1"]
LABEL = np.array([0, 0, 0, 0, 1, 1, 1, -1, -1, 0])
EMPTY = np.array([False] * 7 + [True, True, False])
MIXED = np.array([False] * 9 + [True])
#: SL peaks visible: points 3 (the failed one) and 6 are faint; the mixed point shows peaks
SL_VISIBLE = np.array([True, True, True, False, True, True, False, False, False, True])


def _lab_rotation(angle_deg: float, axis) -> np.ndarray:
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    return Rotation.from_rotvec(np.radians(angle_deg) * axis).as_matrix()


def _files(tmp_path, sl_visible=None):
    rng = np.random.default_rng(4)
    R_true = Rotation.random(N, random_state=rng).as_matrix()
    R_true[7:9] = np.nan
    cubic_copy = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])   # 90 deg about [001]
    R_fit = np.array([
        R_true[0],
        _lab_rotation(0.3, (1, 2, 3)) @ R_true[1],
        _lab_rotation(1.0, (0, 0, 1)) @ R_true[2],
        np.full((3, 3), np.nan),
        R_true[4] @ cubic_copy,
        _lab_rotation(2.0, (1, 0, 0)) @ R_true[5],
        _lab_rotation(0.3, (0, 1, 0)) @ R_true[6],
        np.full((3, 3), np.nan),
        np.eye(3),
        _lab_rotation(30.0, (0, 0, 1)) @ R_true[9],
    ])
    a_fit = A_TRUE * np.array([1.0, 1.002, 0.99, np.nan, 1.0, 1.004, 1.0, np.nan, np.nan, 1.1])
    a_fit[8] = 150.0
    d_fit = D_TRUE + np.array([0.0, 1.0, np.nan, np.nan, 2.0, -0.5, 0.0, np.nan, np.nan, 5.0])
    d_fit[8] = 10.0
    conf_fit = ["conf1", "conf1", "", "", "conf1", "conf2", "conf2", "", "conf1", "conf2"]
    S = FitStatus
    status = [S.OK, S.OK, S.OK, S.FAILED, S.OK, S.AT_BOUND, S.NOT_CONVERGED, S.NO_SIGNAL, S.OK, S.OK]

    strings = h5py.string_dtype()
    fits_h5 = tmp_path / "fits.h5"
    with h5py.File(fits_h5, "w") as f:          # the layout of fits.scan.results (FIT_DATASETS)
        g = f.create_group("entry/fits")
        g["orientation_matrix"] = R_fit
        g["lattice_constant"] = a_fit
        g["disorder_deg"] = d_fit
        g.create_dataset("configuration", data=np.array(conf_fit, dtype=object), dtype=strings)
        g["status"] = np.array([s.code for s in status], np.int32)
        g.create_dataset("message", data=np.array([s.value for s in status], dtype=object), dtype=strings)
        g.attrs["frames_done"] = N
    truth_h5 = tmp_path / "truth.h5"
    with h5py.File(truth_h5, "w") as f:         # the layout of xmodel.synth.write_truth
        g = f.create_group("truth")
        g["label"] = LABEL.astype(np.int32)
        g.create_dataset("label_names", data=np.array(["red", "blue"], dtype=object), dtype=strings)
        g["empty"] = EMPTY
        g["mixed"] = MIXED
        g["orientation_matrix"] = R_true
        g["lattice_constant"] = A_TRUE
        g["disorder_deg"] = D_TRUE
        g.create_dataset("configuration", data=np.array(CONF_TRUE, dtype=object), dtype=strings)
        if sl_visible is not None:
            g["sl_visible"] = sl_visible
    return fits_h5, truth_h5


def approx(x):
    return pytest.approx(x, rel=1e-6, abs=1e-9)


def test_summary_over_in_domain_points(tmp_path):
    t = compare_to_truth(*_files(tmp_path))
    assert (t["n_points"], t["n_in_domain"], t["n_empty"], t["n_mixed"], t["frames_done"]) == (10, 7, 2, 1, 10)

    o = t["orientation"]                        # sorted: 0, 0, 0.3, 0.3, 1, 2, inf
    assert o["n"] == 7 and o["tolerance"] == 0.5
    assert o["median"] == approx(0.3)
    assert o["p95"] == np.inf                   # the failed point counts as an infinite error
    assert o["within"] == approx(4 / 7)

    a = t["lattice_constant"]                   # sorted: 0, 0, 0, 0.2, 0.4, 1, inf (%)
    assert a["n"] == 7 and a["tolerance"] == 0.5
    assert a["median"] == approx(0.2)
    assert a["p95"] == np.inf
    assert a["within"] == approx(5 / 7)

    d = t["disorder"]                           # determined at 0, 1, 4, 5, 6: 0, 0, 0.5, 1, 2 (deg)
    assert d["n"] == 5 and d["tolerance"] == 1.5
    assert d["median"] == approx(0.5)
    assert d["p95"] == approx(2.0)
    assert d["within"] == approx(4 / 5)
    assert t["disorder_determined"] == approx(5 / 7)

    assert t["configuration_accuracy"] == approx(4 / 7)          # 0, 1, 5, 6 right
    assert t["configuration_undetermined"] == approx(2 / 7)      # 2, 3
    assert t["not_ok"] == approx(3 / 7)                          # failed, at bound, not converged
    assert t["in_domain_status"] == {"at_bound": 1, "failed": 1, "not_converged": 1, "ok": 4}
    assert t["empty_status"] == {"no_signal": 1, "ok": 1}
    assert t["empty_flagged"] == approx(0.5)
    assert t["mixed_status"] == {"ok": 1}
    assert t["mixed_flagged"] == 0.0
    assert t["with_sl_peaks"] is None


def test_per_domain_rows(tmp_path):
    per = compare_to_truth(*_files(tmp_path))["per_domain"]
    assert list(per) == ["red", "blue"]
    red, blue = per["red"], per["blue"]
    assert red["n"] == 4                        # orientation 0, 0.3, 1, inf; a 0, 0.2, 1, inf
    assert red["orientation_median"] == approx(0.65)
    assert red["orientation_p95"] == np.inf
    assert red["lattice_median"] == approx(0.6)
    assert red["configuration_accuracy"] == approx(0.5)
    assert blue["n"] == 3                       # orientation 0, 2, 0.3; a 0, 0.4, 0
    assert blue["orientation_median"] == approx(0.3)
    assert blue["orientation_p95"] == approx(2.0)
    assert blue["lattice_median"] == approx(0.0)
    assert blue["configuration_accuracy"] == approx(2 / 3)


def test_summary_over_points_with_sl_peaks(tmp_path):
    t = compare_to_truth(*_files(tmp_path, SL_VISIBLE))
    v = t["with_sl_peaks"]                      # in-domain and visible: 0, 1, 2, 4, 5
    assert v["n_in_domain"] == 5
    assert v["orientation"]["median"] == approx(0.3)      # 0, 0, 0.3, 1, 2
    assert v["orientation"]["p95"] == approx(2.0)
    assert v["orientation"]["within"] == approx(3 / 5)
    assert v["lattice_constant"]["median"] == approx(0.2)  # 0, 0, 0.2, 0.4, 1
    assert v["lattice_constant"]["p95"] == approx(1.0)
    assert v["lattice_constant"]["within"] == approx(4 / 5)
    assert v["disorder"]["n"] == 4                         # 0, 0.5, 1, 2
    assert v["disorder"]["median"] == approx(0.75)
    assert v["disorder"]["p95"] == approx(2.0)
    assert v["disorder"]["within"] == approx(3 / 4)
    assert v["disorder_determined"] == approx(4 / 5)
    assert v["configuration_accuracy"] == approx(3 / 5)
    assert v["configuration_undetermined"] == approx(1 / 5)
    assert v["not_ok"] == approx(1 / 5)
    assert v["in_domain_status"] == {"at_bound": 1, "ok": 4}
    # the all-in-domain numbers are kept as they are
    (tmp_path / "plain").mkdir()
    plain = compare_to_truth(*_files(tmp_path / "plain"))
    for key in ("n_in_domain", "orientation", "lattice_constant", "disorder", "configuration_accuracy", "not_ok"):
        assert t[key] == plain[key]


def test_table_text(tmp_path):
    text = format_truth_table(compare_to_truth(*_files(tmp_path)))
    assert text.startswith("Recovered vs true over 7 in-domain points (10 points, 2 empty, 1 mixed).")
    assert "| orientation (misorientation) | 0.3 deg | inf deg | 57.1 % (n = 7) | 0.5 deg |" in text
    assert "| lattice constant a | 0.2 % | inf % | 71.4 % (n = 7) | 0.5 % |" in text
    assert "| disorder dPhi (FWHM) | 0.5 deg | 2 deg | 80.0 % (n = 5) | 1.5 deg |" in text
    assert "| configuration right | 57.1 % (undetermined 28.6 %) |" in text
    assert "| in-domain status other than ok | 42.9 % (at_bound 1, failed 1, not_converged 1, ok 4) |" in text
    assert "| empty points flagged | 50.0 % (no_signal 1, ok 1) |" in text
    assert "| mixed points flagged | 0.0 % (ok 1) |" in text
    assert "| red | 4 | 0.65 / inf | 0.6 | 50.0 % |" in text
    assert "| blue | 3 | 0.3 / 2 | 0 | 66.7 % |" in text
    assert "with SL peaks" not in text


def test_table_text_with_sl_peaks(tmp_path):
    text = format_truth_table(compare_to_truth(*_files(tmp_path, SL_VISIBLE)))
    assert "| orientation (misorientation) | 0.3 deg | inf deg | 57.1 % (n = 7) | 0.5 deg |" in text
    assert "Over the 5 in-domain points with SL peaks (/truth/sl_visible)." in text
    assert "| orientation (misorientation) | 0.3 deg | 2 deg | 60.0 % (n = 5) | 0.5 deg |" in text
    assert "| lattice constant a | 0.2 % | 1 % | 80.0 % (n = 5) | 0.5 % |" in text
    assert "| status other than ok | 20.0 % (at_bound 1, ok 4) |" in text


def test_errors_are_explained(tmp_path):
    fits_h5, truth_h5 = _files(tmp_path)
    with pytest.raises(FileNotFoundError, match="nope.h5 does not exist; pass the truth.h5 that `xmodel synth` writes"):
        compare_to_truth(fits_h5, tmp_path / "nope.h5")
    with pytest.raises(ValueError, match="has no /truth; pass the truth.h5"):
        read_truth(fits_h5)
    short = tmp_path / "short.h5"
    with h5py.File(truth_h5, "r") as src, h5py.File(short, "w") as f:
        g = f.create_group("truth")
        for k, ds in src["truth"].items():
            g[k] = ds[()] if k == "label_names" else ds[:4]
    with pytest.raises(ValueError, match="holds fits of 10 points but .* describes 4"):
        compare_to_truth(fits_h5, short)
    (tmp_path / "bad").mkdir()
    _, bad = _files(tmp_path / "bad", SL_VISIBLE[:5])
    with pytest.raises(ValueError, match="sl_visible of .* has 5 entries but /truth/label has 10"):
        compare_to_truth(fits_h5, bad)


def test_bias_table_means_and_groups(tmp_path):
    """Bulk points of one domain off by known amounts, boundary points and a misfit (an alias)."""
    from fits.scan.truth import bias_table, format_bias_table

    n = 6
    rng = np.random.default_rng(7)
    R_true = Rotation.random(n, random_state=rng).as_matrix()
    inplane = np.array([0.1, 0.2, 0.3, -0.2, -0.4, 30.0])          # deg about the beam (lab e3)
    R_fit = np.stack([_lab_rotation(d, (0, 0, 1)) @ r for d, r in zip(inplane, R_true)])
    a_true = np.full(n, 150.0)
    a_fit = a_true * (1.0 + np.array([0.1, 0.2, 0.3, -0.5, -0.7, 5.0]) / 100.0)
    d_true = np.full(n, 12.0)
    d_fit = d_true + np.array([1.0, 1.0, 1.0, 0.0, 2.0, 0.0])
    conf_fit = ["conf1", "conf1", "conf2", "conf1", "conf1", "conf2"]
    strings = h5py.string_dtype()
    fits_h5, truth_h5 = tmp_path / "fits.h5", tmp_path / "truth.h5"
    with h5py.File(fits_h5, "w") as f:
        g = f.create_group("entry/fits")
        g["orientation_matrix"] = R_fit
        g["lattice_constant"] = a_fit
        g["disorder_deg"] = d_fit
        g["tilt1_deg"] = np.zeros(n)
        g["tilt2_deg"] = np.zeros(n)
        g.create_dataset("configuration", data=np.array(conf_fit, dtype=object), dtype=strings)
        g["status"] = np.full(n, FitStatus.OK.code, np.int32)
        g.attrs["frames_done"] = n
    with h5py.File(truth_h5, "w") as f:
        g = f.create_group("truth")
        g["label"] = np.zeros(n, np.int32)
        g.create_dataset("label_names", data=np.array(["red"], dtype=object), dtype=strings)
        g["empty"] = np.zeros(n, bool)
        g["mixed"] = np.zeros(n, bool)
        g["orientation_matrix"] = R_true
        g["lattice_constant"] = a_true
        g["disorder_deg"] = d_true
        g["boundary_s"] = np.array([0.0, 0.0, 0.0, 0.5, 0.8, 0.0])
        g.create_dataset("configuration", data=np.array(["conf1"] * n, dtype=object), dtype=strings)
    t = bias_table(fits_h5, truth_h5, misfit_deg=5.0)
    assert list(t) == ["red bulk", "boundary", "all"]
    bulk, edge, every = t["red bulk"], t["boundary"], t["all"]
    assert (bulk["points"], bulk["fitted"], bulk["misfits"]) == (4, 3, 1)        # point 5: 30 deg off
    assert bulk["configuration_right"] == approx(2 / 4)
    assert bulk["lattice_constant_pct"]["mean"] == pytest.approx(0.2, abs=1e-9)
    assert bulk["lattice_constant_pct"]["std"] == pytest.approx(0.1, abs=1e-9)
    assert bulk["inplane_deg"]["mean"] == pytest.approx(0.2, abs=1e-6)
    assert abs(bulk["tilt1_deg"]["mean"]) < 1e-6 and abs(bulk["tilt2_deg"]["mean"]) < 1e-6
    assert bulk["disorder_deg"]["mean"] == approx(1.0) and bulk["disorder_deg"]["std"] == approx(0.0)
    assert (edge["points"], edge["fitted"]) == (2, 2)
    assert edge["lattice_constant_pct"]["mean"] == pytest.approx(-0.6, abs=1e-9)
    assert edge["inplane_deg"]["mean"] == pytest.approx(-0.3, abs=1e-6)
    assert edge["disorder_deg"]["median"] == approx(1.0)
    assert every["fitted"] == 5 and every["misfits"] == 1
    text = format_bias_table(t)
    assert "| red bulk | 4 | 3 | 1 | 50.0 % | +0.200 +- 0.100 |" in text
    # every fitted frame counts when the status does not matter (here all are ok: same numbers)
    assert bias_table(fits_h5, truth_h5, misfit_deg=5.0, ok_only=False)["all"]["fitted"] == 5
    with pytest.raises(ValueError, match="grain_orientation_matrix"):
        bias_table(fits_h5, truth_h5, reference="grains")
    with pytest.raises(ValueError, match="orientation reference 'lab'"):
        bias_table(fits_h5, truth_h5, reference="lab")
    # the grains in the beam where the fits are: no in-plane error from them, the domain's still there
    with h5py.File(truth_h5, "a") as f:
        f["truth/grain_orientation_matrix"] = R_fit
    assert abs(bias_table(fits_h5, truth_h5)["red bulk"]["inplane_deg"]["mean"]) < 1e-6
    assert bias_table(fits_h5, truth_h5, reference="domain")["red bulk"]["inplane_deg"]["mean"] == pytest.approx(
        0.2, abs=1e-6)


def test_orientation_against_the_grains_in_the_beam(tmp_path):
    """A truth with the grains' mean orientation (the realistic twin): every in-domain point's grains
    0.2 deg about the beam from the domain's orientation, point 2's exactly where its fit is."""
    fits_h5, truth_h5 = _files(tmp_path)
    with h5py.File(truth_h5, "a") as f:
        R_true = f["truth/orientation_matrix"][()]
        R_g = np.stack([_lab_rotation(0.2, (0, 0, 1)) @ r for r in R_true])
        R_g[2] = _lab_rotation(1.0, (0, 0, 1)) @ R_true[2]
        f["truth/grain_orientation_matrix"] = R_g
    t = compare_to_truth(fits_h5, truth_h5)
    # against the domain, as before: points 0, 1, 4, 6 within 0.5 deg
    assert t["orientation"]["within"] == approx(4 / 7)
    # against the grains: 0.2, |0.3 n - 0.2 e3| = 0.184, 0, inf, 0.2, 2.01, |0.3 e2 - 0.2 e3| = 0.361
    g = t["orientation_grains"]
    assert g["n"] == 7 and g["within"] == approx(5 / 7)
    assert g["median"] == pytest.approx(0.2, abs=1e-3)
    assert t["grains_within"] == approx(6 / 7)                   # point 2's grains are 1 deg off
    text = format_truth_table(t)
    assert "| orientation vs the grains in the beam | 0.2 deg |" in text
    assert "within 0.5 deg of the domain's at 85.7 % of these points" in text
    # a truth without grains: no such row
    plain = tmp_path / "plain"
    plain.mkdir()
    fits2, truth2 = _files(plain)
    t2 = compare_to_truth(fits2, truth2)
    assert t2["orientation_grains"] is None and t2["grains_within"] is None
    assert "grains in the beam" not in format_truth_table(t2)


def test_resolve_reference():
    """auto: the grains' mean where the truth holds it, else the domain's; the named ones as given."""
    from fits.scan.truth import resolve_reference

    plain = {"orientation_matrix": np.eye(3)[None]}
    grains = {**plain, "grain_orientation_matrix": np.eye(3)[None]}
    assert resolve_reference(grains) == resolve_reference(grains, "grains") == "grains"
    assert resolve_reference(plain) == resolve_reference(plain, "domain") == resolve_reference(grains, "domain") == "domain"
    with pytest.raises(ValueError, match="scan.h5 has no /truth/grain_orientation_matrix"):
        resolve_reference(plain, "grains", "scan.h5")
    with pytest.raises(ValueError, match="orientation reference 'lab'"):
        resolve_reference(grains, "lab")


def test_lattice_constant_against_the_grains_in_the_beam(tmp_path):
    """A truth with the grains' lattice constant (the realistic twin's strained paracrystal grains):
    a second row against it, the share of points whose grains are within the tolerance, and the
    bias table's lattice constant against it where its angles are against the grains."""
    fits_h5, truth_h5 = _files(tmp_path)
    a_g = A_TRUE * np.array([1.0, 1.002, 0.99, 1.0, 1.003, 1.0, 1.0, 1.0, 1.0, 1.0])
    with h5py.File(truth_h5, "a") as f:
        f["truth/grain_lattice_constant"] = a_g
    t = compare_to_truth(fits_h5, truth_h5)
    assert t["lattice_constant"]["within"] == approx(5 / 7)                 # against the domain, as before
    g = t["lattice_constant_grains"]
    # |a_fit / a_g - 1|: 0, 0, 0, inf (no fit), 0.299, 0.4, 0 %
    assert g["n"] == 7 and g["within"] == approx(6 / 7) and g["median"] == pytest.approx(0.0, abs=1e-9)
    assert t["grains_lattice_within"] == approx(6 / 7)                      # point 2's grains are 1 % off
    text = format_truth_table(t)
    assert "| lattice constant vs the grains in the beam | 0 % |" in text
    assert "lies within 0.5 % of the domain's at 85.7 % of these points" in text
    # the bias table measures from the grains' lattice constant with the grains' orientation
    with h5py.File(truth_h5, "a") as f:
        f["truth/grain_orientation_matrix"] = f["truth/orientation_matrix"][()]
    with h5py.File(fits_h5, "a") as f:
        f["entry/fits/tilt1_deg"] = f["entry/fits/tilt2_deg"] = np.zeros(N)
    from fits.scan.truth import bias_table

    grains = bias_table(fits_h5, truth_h5, misfit_deg=5.0)
    domain = bias_table(fits_h5, truth_h5, misfit_deg=5.0, reference="domain")
    # red's ok fits 0, 1, 2: +0, +0.2, -1.0 % from the domain's a, none from their grains'
    assert domain["red bulk"]["lattice_constant_pct"]["mean"] == pytest.approx(-0.8 / 3, abs=1e-9)
    assert grains["red bulk"]["lattice_constant_pct"]["mean"] == pytest.approx(0.0, abs=1e-9)
    # a truth without it: no such row
    plain = tmp_path / "plain"
    plain.mkdir()
    t2 = compare_to_truth(*_files(plain))
    assert t2["lattice_constant_grains"] is None and t2["grains_lattice_within"] is None
    assert "lattice constant vs the grains" not in format_truth_table(t2)
