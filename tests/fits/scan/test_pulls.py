"""Tests of the pull statistics of fits/scan/truth.py (`pull_table`, `orientation_errors`):
hand-made fits whose errors are drawn from their stored standard errors give pull standard
deviations of 1; halved standard errors give 2."""
import h5py
import numpy as np
import pytest

from fits.scan.truth import format_pull_table, orientation_errors, pull_table
from fits.status import FitStatus
from xmodel import orientation

N = 400


def _rot(t1, t2, phi, base):
    return np.asarray(orientation.sl_orientation(base, np.radians(phi), np.radians(t1), np.radians(t2)))


def _files(tmp_path, stderr_factor=1.0):
    rng = np.random.default_rng(7)
    base = np.asarray(orientation.base_orientation((0, 0, -1), (1, 0, 0)))
    t1, t2, phi = rng.uniform(-8, 8, N), rng.uniform(-8, 8, N), rng.uniform(-40, 40, N)
    s_ang = rng.uniform(0.01, 0.05, (N, 3))
    d_ang = rng.normal(0, 1, (N, 3)) * s_ang
    R_t = np.stack([_rot(t1[i], t2[i], phi[i], base) for i in range(N)])
    f1, f2, fp = t1 + d_ang[:, 0], t2 + d_ang[:, 1], phi + d_ang[:, 2]
    R_f = np.stack([_rot(f1[i], f2[i], fp[i], base) for i in range(N)])
    a_t, s_a = np.full(N, 150.0), rng.uniform(0.05, 0.2, N)
    d_t, s_d = np.full(N, 12.0), rng.uniform(0.1, 0.5, N)
    label = np.zeros(N, int)
    label[:10] = -1                                  # outside the domains: left out
    status = np.full(N, FitStatus.OK.code, np.int32)
    status[10:20] = FitStatus.NOT_CONVERGED.code     # not ok: left out
    a_f = a_t + rng.normal(0, 1, N) * s_a
    a_f[10:20] += 50.0                               # far off, but not ok
    fits_h5, truth_h5 = tmp_path / "fits.h5", tmp_path / "truth.h5"
    with h5py.File(fits_h5, "w") as f:
        g = f.create_group("entry/fits")
        g["orientation_matrix"], g["tilt1_deg"], g["tilt2_deg"], g["inplane_deg"] = R_f, f1, f2, fp
        g["lattice_constant"] = a_f
        g["disorder_deg"] = d_t + rng.normal(0, 1, N) * s_d
        g["status"] = status
        for k, s in (("lattice_constant", s_a), ("disorder_deg", s_d), ("tilt1_deg", s_ang[:, 0]),
                     ("tilt2_deg", s_ang[:, 1]), ("inplane_deg", s_ang[:, 2])):
            g[k + "_stderr"] = s * stderr_factor
        g["orientation_stderr_deg"] = np.sqrt((s_ang ** 2).sum(axis=1)) * stderr_factor
        g.attrs["frames_done"] = N
    with h5py.File(truth_h5, "w") as f:
        g = f.create_group("truth")
        g["label"], g["empty"], g["mixed"] = label, np.zeros(N, bool), np.zeros(N, bool)
        g["orientation_matrix"], g["lattice_constant"], g["disorder_deg"] = R_t, a_t, d_t
    return fits_h5, truth_h5, d_ang, f1, f2


def test_pulls_of_errors_drawn_from_the_stderr_have_unit_spread(tmp_path):
    fits_h5, truth_h5, *_ = _files(tmp_path)
    table = pull_table(fits_h5, truth_h5)
    assert set(table) == {"lattice_constant", "disorder_deg", "tilt1_deg", "tilt2_deg", "inplane_deg",
                          "orientation"}
    for k, s in table.items():
        assert s["n"] == N - 20, k
        # the sample std of 380 unit normals is 1 +- 0.036; the MAD-based one +- 0.06
        assert 0.88 < s["std"] < 1.12, (k, s)
        assert 0.82 < s["robust_std"] < 1.18, (k, s)
    assert "| lattice_constant | 380 |" in format_pull_table(table)
    assert all(s["misfits"] == 0 for s in table.values())


def test_misfits_are_left_out_when_asked(tmp_path):
    fits_h5, truth_h5, *_ = _files(tmp_path)
    with h5py.File(fits_h5, "a") as f:              # frames 30 and 31: another basin, 40 deg off
        R = f["entry/fits/orientation_matrix"][()]
        c, s = np.cos(np.radians(40)), np.sin(np.radians(40))
        R[30:32] = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]) @ R[30:32]
        f["entry/fits/orientation_matrix"][...] = R
    assert pull_table(fits_h5, truth_h5)["inplane_deg"]["std"] > 10
    table = pull_table(fits_h5, truth_h5, misfit_deg=5.0)
    for k, s in table.items():
        assert s["n"] == N - 22 and s["misfits"] == 2, k
        assert 0.88 < s["std"] < 1.12, (k, s)


def test_halved_stderr_doubles_the_pulls(tmp_path):
    fits_h5, truth_h5, *_ = _files(tmp_path, stderr_factor=0.5)
    for k, s in pull_table(fits_h5, truth_h5).items():
        assert 1.76 < s["std"] < 2.24, (k, s)
    # errors given in place of the stored ones (recomputed at the fits): the right ones again;
    # a NaN leaves that frame out of that parameter only
    with h5py.File(fits_h5) as f:
        given = {k: 2.0 * f["entry/fits"][k][()] for k in ("lattice_constant_stderr", "inplane_deg_stderr")}
    given["inplane_deg_stderr"][25:35] = np.nan
    table = pull_table(fits_h5, truth_h5, stderr=given)
    assert 0.88 < table["lattice_constant"]["std"] < 1.12 and 0.88 < table["inplane_deg"]["std"] < 1.12
    assert table["inplane_deg"]["n"] == N - 30 and table["lattice_constant"]["n"] == N - 20
    assert 1.76 < table["tilt1_deg"]["std"] < 2.24                # not given: the stored one
    with pytest.raises(ValueError, match=r"stderr\['lattice_constant_stderr'\] has shape \(3,\)"):
        pull_table(fits_h5, truth_h5, stderr={"lattice_constant_stderr": np.ones(3)})


def test_orientation_errors_recover_the_angle_errors(tmp_path):
    _, _, d_ang, f1, f2 = _files(tmp_path)
    with h5py.File(tmp_path / "fits.h5") as f, h5py.File(tmp_path / "truth.h5") as t:
        R_f, R_t = f["entry/fits/orientation_matrix"][()], t["truth/orientation_matrix"][()]
    err = orientation_errors(R_f, R_t, f1, f2)
    # first order in errors of <= 0.2 deg: second-order terms ~ (0.2 deg in rad) x 0.2 deg
    np.testing.assert_allclose(err, d_ang, atol=2e-4)
    # a cubic symmetry copy of the truth is the same orientation
    S = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    np.testing.assert_allclose(orientation_errors(R_f, R_t @ S, f1, f2), d_ang, atol=2e-4)
    assert np.isnan(orientation_errors(np.full((1, 3, 3), np.nan), R_t[:1], f1[:1], f2[:1])).all()


def test_pull_table_refuses_another_scans_truth(tmp_path):
    fits_h5, _, *_ = _files(tmp_path)
    with h5py.File(tmp_path / "short.h5", "w") as f:
        g = f.create_group("truth")
        g["label"], g["empty"], g["mixed"] = np.zeros(3, int), np.zeros(3, bool), np.zeros(3, bool)
        g["orientation_matrix"], g["lattice_constant"], g["disorder_deg"] = np.eye(3)[None].repeat(3, 0), \
            np.ones(3), np.ones(3)
    with pytest.raises(ValueError, match="holds fits of 400 points but .* describes 3"):
        pull_table(fits_h5, tmp_path / "short.h5")
