"""Tests of fits.analyses.qmap: vectorised peak fits, statuses, maps, line profiles, command."""
import json

import h5py
import numpy as np
import pytest

from fits.analyses.qmap import (family_window, fcc_shells, fit_lattice_comb, fit_profile, fit_profiles, line_profile,
                                qmap_scan, spot_profiles)
from fits.status import FitStatus, read_status
from xmodel import cli

OK, NO_PEAK, NO_DATA = FitStatus.OK.code, FitStatus.NO_PEAK.code, FitStatus.NO_DATA.code
AMBIGUOUS, FROM_MODEL_FIT = FitStatus.AMBIGUOUS.code, FitStatus.FROM_MODEL_FIT.code

Q = np.linspace(0.05, 0.2, 300)


def _profiles(a, rng, height=60.0, sigma=0.0025):
    q311 = 2 * np.pi * np.sqrt(11) / a
    lam = height * np.exp(-0.5 * ((Q - q311[:, None]) / sigma) ** 2) + 30.0 - 60.0 * (Q - 0.14)
    return rng.poisson(lam).astype(float), q311


def test_windows():
    assert family_window("311") [1:] == pytest.approx((0.130, 0.160), abs=5e-4)
    _, lo, hi = family_window("200", a_nominal=140.0)
    assert lo == pytest.approx(0.9 * 4 * np.pi / 140.0) and hi == pytest.approx(1.2 * 4 * np.pi / 140.0)
    with pytest.raises(ValueError, match="unknown family '111'"):
        family_window("111")
    with pytest.raises(ValueError, match=r"window \(--window\) = \(0.2, 0.1\): expected two finite numbers Q_LO, Q_HI with 0 < Q_LO < Q_HI"):
        family_window("311", window=(0.2, 0.1))


def test_vectorised_matches_lmfit_and_statuses():
    rng = np.random.default_rng(1)
    y, q311 = _profiles(rng.uniform(140, 155, 40), rng)
    y[0] = np.nan                        # fully masked ring
    y[1] = 30.0                          # no peak
    y[2, (Q > 0.12) & (Q < 0.17)] = np.nan  # too few bins
    y[3] = np.inf                        # broken frame: no finite bin
    res = fit_profiles(Q, y, (0.130, 0.160))
    assert res["status"][:4].tolist() == [NO_DATA, NO_PEAK, NO_DATA, NO_DATA]
    assert np.all(res["status"][4:] == OK)
    assert np.all(np.isnan(res["center"][:4]))
    np.testing.assert_allclose(res["center"][4:], q311[4:], atol=6e-4)
    for i in (4, 5, 6):
        ref = fit_profile(Q, y[i], (0.130, 0.160))
        assert res["center"][i] == pytest.approx(ref.params["g_center"].value, rel=1e-6)
        assert res["center_err"][i] == pytest.approx(ref.params["g_center"].stderr, rel=0.02)
        assert res["amplitude"][i] == pytest.approx(ref.params["g_amplitude"].value, rel=1e-4)
    with pytest.raises(ValueError, match="holds 0 finite bins"):
        fit_profile(Q, y[0], (0.130, 0.160))
    with pytest.raises(ValueError, match="background must be 'linear' or 'constant'"):
        fit_profiles(Q, y, (0.13, 0.16), background="cubic")


def test_line_profile():
    yy, xx = np.meshgrid(np.arange(5) * 0.25, np.arange(5) * 0.25, indexing="ij")
    pos = np.stack([yy.ravel(), xx.ravel()], axis=1)
    line = line_profile(pos, {"v": np.arange(25.0)}, (0.0, 0.0), (1.0, 1.0))
    assert line.frame.tolist() == [0, 6, 12, 18, 24]
    assert line.distance_um[-1] == pytest.approx(np.sqrt(2))
    with pytest.raises(ValueError, match="has zero length"):
        line_profile(pos, {}, (0.0, 0.0), (0.0, 0.0))
    with pytest.raises(ValueError, match="lies outside the scan"):
        line_profile(pos, {}, (0.0, 0.0), (9.0, 0.0))


def _comb_profiles(a, rng, shells=(3, 4, 8, 11, 12), height=80.0, sigma_rel=0.008):
    """Radial profiles with the fcc shells ``N`` of lattice constants ``a`` on a smooth background."""
    lam = 30.0 - 60.0 * (Q - 0.14) + 0 * a[:, None]
    for nn in shells:
        qn = 2 * np.pi * np.sqrt(nn) / a[:, None]
        lam = lam + height * np.exp(-0.5 * ((Q - qn) / (sigma_rel * qn)) ** 2)
    return rng.poisson(lam).astype(float)


@pytest.fixture
def reduced(tmp_path):
    """A 10 x 12 raster: a compressed boundary at x = 0 (a drops 8 %), an empty column."""
    rng = np.random.default_rng(2)
    ny, nx, step = 10, 12, 0.25
    yy, xx = np.meshgrid(np.arange(ny) * step, np.arange(nx) * step, indexing="ij")
    a_true = 150.0 * (1 - 0.08 * np.exp(-xx / 0.5))
    y = _comb_profiles(a_true.ravel(), rng)
    y[(xx.ravel() > 2.6)] = rng.poisson(30.0 - 60.0 * (Q - 0.14), size=(ny, Q.size)).astype(float)
    path = tmp_path / "scan.h5"
    with h5py.File(path, "w") as f:
        g = f.create_group("entry/reduction")
        g["radial"], g["q"] = y, Q
        g["positions"] = np.stack([yy.ravel(), xx.ravel()], axis=1)
        g["scan_shape"] = np.array([ny, nx])
    return path, a_true


def test_qmap_scan(reduced, tmp_path):
    path, a_true = reduced
    res = qmap_scan(path, "311", line=((0.0, 1.0), (2.5, 1.0)), figures=tmp_path / "fig")
    fits = res["fits"]
    status = fits["status"].reshape(a_true.shape)
    assert np.all(status[:, -1] == NO_PEAK) and np.all(status[:, :-1] == OK)
    a = fits["lattice_constant"].reshape(a_true.shape)[:, :-1]
    np.testing.assert_allclose(a, a_true[:, :-1], rtol=0.005)
    assert all(p.exists() for p in res["figures"])
    line = res["line"]
    assert np.all(np.diff(line.values["lattice_constant"][:6]) > 0)  # a grows away from the boundary
    with h5py.File(path, "r") as f:
        g = f["/entry/qmap/311"]
        assert g["center"].attrs["units"] == "1/angstrom"
        assert g.attrs["spot_source"] == "radial"
        assert "10 AMBIGUOUS: another indexing explains the spots as well (ambiguous)" in list(
            g["status"].attrs["status_codes"])
        np.testing.assert_array_equal(read_status(g["status"]), fits["status"])
        np.testing.assert_array_equal(read_status(g["peak_status"]), fits["peak_status"])
        assert g["line/lattice_constant"].shape == line.distance_um.shape
        assert tuple(g.attrs["scan_shape"]) == a_true.shape


def test_cli(reduced, tmp_path, capsys):
    path, _ = reduced
    assert cli.main(["qmap", str(path), "--family", "311", "--figures", str(tmp_path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    counts = out["status_counts"]
    assert counts[FitStatus.OK.value] == 110 and counts[FitStatus.NO_PEAK.value] == 10
    assert sum(counts.values()) == 120
    assert out["decided_by_angles"] == 0               # radial profiles only: no azimuths
    assert cli.main(["qmap", str(path), "--family", "311", "--from", "0,0"]) == 3
    assert "give both --from X0,Y0 and --to X1,Y1" in capsys.readouterr().err
    assert cli.main(["qmap", str(tmp_path / "missing.h5"), "--family", "200"]) == 3
    assert "does not exist" in capsys.readouterr().err


def test_batch_results_do_not_depend_on_the_other_profiles():
    """Each profile converges on its own: fitted alone or in a batch, the same result."""
    from fits.analyses.qmap import fit_profiles
    rng = np.random.default_rng(3)
    q = np.linspace(0.07, 0.10, 60)
    centres = rng.uniform(0.080, 0.088, 200)
    profiles = np.array([5 + 8 * np.exp(-0.5 * ((q - c) / 0.0015) ** 2) for c in centres])
    profiles = rng.poisson(profiles).astype(float)
    together = fit_profiles(q, profiles, (0.07, 0.10))
    for i in range(200):
        alone = fit_profiles(q, profiles[i:i + 1], (0.07, 0.10))
        assert alone["status"][0] == together["status"][i]
        np.testing.assert_allclose(alone["center"][0], together["center"][i], rtol=1e-6)


def test_fcc_shells():
    n, names = fcc_shells(np.sqrt(20.5))
    assert n.tolist() == [3, 4, 8, 11, 12, 16, 19, 20]
    assert names[:5] == ["111", "200", "220", "311", "222"]


def _spots(a, shells, q, z=30.0, sigma_rel=0.008):
    out = np.zeros((len(a), q.size))
    for i, (ai, sh) in enumerate(zip(a, shells)):
        for nn in sh:
            qn = 2 * np.pi * np.sqrt(nn) / ai
            out[i] += z * np.exp(-0.5 * ((q - qn) / (sigma_rel * qn)) ** 2)
    return out


def test_comb_decides_the_111_200_alias_by_the_other_shells():
    """111 of a = 132 A sits at the 200 position of a = 152.4 A: other shells decide, or 'ambiguous'."""
    q = np.exp(np.linspace(np.log(0.055), np.log(0.2), 121))   # log bins as the reduction
    rng = np.random.default_rng(4)
    a = np.array([132.0, 132.0, 150.0, 150.0, 132.0, 150.0])
    shells = [(3, 4, 8), (3, 11), (4, 8, 11), (4, 11), (3,), ()]
    spots = np.maximum(_spots(a, shells, q) + rng.normal(0, 1.0, (len(a), q.size)), 0)
    res = fit_lattice_comb(q, spots)
    assert res["status"].tolist() == [OK, OK, OK, OK, AMBIGUOUS, NO_PEAK]
    np.testing.assert_allclose(res["lattice_constant"][:4], a[:4], rtol=0.005)
    assert np.isnan(res["lattice_constant"][4]) and np.isnan(res["lattice_constant"][5])
    alias = sorted([res["alias_lattice_constant"][4], res["lattice_constant"][4]])
    assert res["alias_lattice_constant"][4] == pytest.approx(132.0 * np.sqrt(4 / 3), rel=0.01) or \
        res["alias_lattice_constant"][4] == pytest.approx(132.0, rel=0.01), alias
    with pytest.raises(ValueError, match="a_range must be"):
        fit_lattice_comb(q, spots, a_range=(150.0, 120.0))


def test_spot_profiles_keep_friedel_pairs_only():
    rng = np.random.default_rng(5)
    n_chi, n_q = 72, 40
    npix = np.full((n_chi, n_q), 50.0)
    npix[:, :2] = 0                                      # masked q bins
    lam = np.full((3, n_chi, n_q), 0.5)
    lam[0, 10, 20] += 3.0
    lam[0, 46, 20] += 3.0                                # a Friedel pair (chi + 180 deg)
    lam[1, 10, 20] += 3.0                                # no mate: a hot spot, not a Bragg peak
    polar = rng.poisson(lam * npix) / np.maximum(npix, 1)
    prof = spot_profiles(polar, npix)
    assert prof.shape == (3, n_q)
    assert prof[0, 20] > 5 and np.argmax(prof[0]) in (19, 20, 21)
    assert np.all(prof[1] == 0) and np.all(prof[2] == 0)


def test_qmap_scan_decides_a_lone_ring_by_the_pair_angles(tmp_path):
    """Polar images: 111 pairs 70.53 deg apart are decided, a single pair stays ambiguous."""
    rng = np.random.default_rng(6)
    q = np.exp(np.linspace(np.log(0.055), np.log(0.2), 121))
    chi = -180 + (np.arange(180) + 0.5) * 2.0
    npix = np.full((180, q.size), 50, np.int32)
    frames = [(132.0, [(3, 10.0), (3, 80.53)]), (132.0, [(3, 10.0)]), (150.0, []),
              (150.0, [(3, 20.0), (4, 74.7), (8, 20.0 + 90.0)])]
    lam = np.full((len(frames), chi.size, q.size), 0.5)
    for i, (a, pairs) in enumerate(frames):
        for nn, c in pairs:
            qn = 2 * np.pi * np.sqrt(nn) / a
            for cc in (c, c - 180.0):
                dchi = (chi - cc + 180) % 360 - 180
                lam[i] += 4.0 * np.exp(-0.5 * (dchi[:, None] / 1.5) ** 2 - 0.5 * ((q - qn) / (0.008 * qn)) ** 2)
    polar = (rng.poisson(lam * npix) / npix).astype(np.float32)
    path = tmp_path / "polar.h5"
    with h5py.File(path, "w") as f:
        g = f.create_group("entry/reduction")
        g["polar"], g["counts"], g["chi"], g["q"] = polar, npix, chi, q
        g["radial"] = polar.mean(axis=1)
        g["scan_shape"] = np.array([1, len(frames)])
    fits = qmap_scan(path, "311", figures=tmp_path)["fits"]
    assert fits["status"].tolist() == [OK, AMBIGUOUS, NO_PEAK, OK]
    assert fits["decided_by_angles"].tolist() == [True, False, False, False]
    np.testing.assert_allclose(fits["lattice_constant"][[0, 3]], [132.0, 150.0], rtol=0.01)
    with h5py.File(path, "r") as f:
        assert f["/entry/qmap/311"].attrs["spot_source"] == "polar"
        assert f["/entry/qmap/311/decided_by_angles"][()].tolist() == [True, False, False, False]


def test_comb_alias_decided_by_a_prior_lattice_constant():
    """A lone 111 ring (a = 132 A, or 200 of 152.4 A) is decided by the model fit's a, and only
    when the prior is near one indexing and far from the other."""
    q = np.exp(np.linspace(np.log(0.055), np.log(0.2), 121))
    rng = np.random.default_rng(5)
    a = np.full(4, 132.0)
    spots = np.maximum(_spots(a, [(3,)] * 4, q) + rng.normal(0, 1.0, (4, q.size)), 0)
    prior = np.array([132.6, 152.0, 141.0, np.nan])          # near 132, near the alias, between, none
    res = fit_lattice_comb(q, spots, prior_lattice_constant=prior)
    assert res["status"].tolist() == [OK, OK, AMBIGUOUS, AMBIGUOUS]
    assert res["decided_by_prior"].tolist() == [True, True, False, False]
    assert res["lattice_constant"][0] == pytest.approx(132.0, rel=0.005)
    assert res["lattice_constant"][1] == pytest.approx(132.0 * np.sqrt(4 / 3), rel=0.005)
    with pytest.raises(ValueError, match="prior_lattice_constant has 2 values but spots has 4"):
        fit_lattice_comb(q, spots, prior_lattice_constant=prior[:2])


def test_fitted_lattice_constant_reads_ok_fits_only(tmp_path):
    import h5py

    from fits.analyses.qmap import fitted_lattice_constant

    path = tmp_path / "fits.h5"
    with h5py.File(path, "w") as f:
        g = f.create_group("entry/fits")
        g["lattice_constant"] = [140.0, 141.0, 142.0]
        g["status"] = np.array([FitStatus.OK.code, FitStatus.MIXED.code, FitStatus.OK.code], np.int32)
        g.attrs["frames_done"] = 2
    np.testing.assert_array_equal(fitted_lattice_constant(path, 3), [140.0, np.nan, np.nan])
    with pytest.raises(ValueError, match="holds fits of 3 frames but the reduced scan has 4"):
        fitted_lattice_constant(path, 4)
    with pytest.raises(FileNotFoundError, match="run `xmodel fit"):
        fitted_lattice_constant(tmp_path / "none.h5", 3)


def test_qmap_scan_takes_the_model_fit_where_the_spots_say_nothing(reduced, tmp_path):
    """The empty column has no SL peak: with --fits, frames whose fit is ok get the fit's a
    (FROM_MODEL_FIT), frames whose fit is not ok stay NO_PEAK; frames the spots decide keep theirs."""
    path, a_true = reduced
    n = a_true.size
    a_fit = np.full(n, 141.0)
    status = np.full(n, FitStatus.OK.code, np.int32)
    empty = np.flatnonzero(np.arange(n) % a_true.shape[1] == a_true.shape[1] - 1)   # the empty column
    status[empty[0]] = FitStatus.NO_SIGNAL.code            # no usable fit there either
    fits_h5 = tmp_path / "fits.h5"
    with h5py.File(fits_h5, "w") as f:
        g = f.create_group("entry/fits")
        g["lattice_constant"], g["lattice_constant_stderr"], g["status"] = a_fit, np.full(n, 0.2), status
        g.attrs["frames_done"] = n
    res = qmap_scan(path, "200", fits_file=fits_h5, figures=tmp_path)["fits"]
    assert res["status"][empty[0]] == NO_PEAK and np.isnan(res["lattice_constant"][empty[0]])
    assert np.all(res["status"][empty[1:]] == FROM_MODEL_FIT) and np.allclose(res["lattice_constant"][empty[1:]], 141.0)
    assert np.allclose(res["lattice_constant_err"][empty[1:]], 0.2)
    spots = np.setdiff1d(np.arange(n), empty)
    assert np.all(res["status"][spots] == OK)
    np.testing.assert_allclose(res["lattice_constant"][spots], a_true.ravel()[spots], rtol=0.005)
    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(read_status(f["/entry/qmap/200/status"]), res["status"])
