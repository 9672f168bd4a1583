"""Tests of fits/scan/second_grain.py: mixed frames found through a neighbour grain's orientation."""
import h5py
import numpy as np
import pytest

from fits.scan.driver import fit_scan
from fits.scan.neighbours import neighbours
from fits.scan.results import read_fits, second_grains_done
from fits.scan.second_grain import (
    flag_second_grains,
    second_grain_gains,
    second_grain_pairs,
)
from fits.scan.settings import FitSettings, settings_from_config
from fits.scan.setup import FitSetup
from fits.scan.starts import stack_params
from fits.status import FitStatus
from xmodel import orientation
from xmodel.config import default_paths, load_config
from xmodel.noise import poisson_counts
from xmodel.parameters import params_from_config

CHI = np.arange(180) * 2.0 - 179.0
Q = np.concatenate([np.geomspace(0.06, 0.24, 80), np.geomspace(1.72, 2.3, 24)])


def _grid(nx: int, ny: int) -> np.ndarray:
    return np.array([[float(x), float(y)] for y in range(ny) for x in range(nx)])


def _fits(R: np.ndarray, status=None, objective=None) -> dict:
    n = R.shape[0]
    return {"orientation_matrix": R, "status": np.full(n, FitStatus.OK.code) if status is None else status,
            "objective": np.arange(n, dtype=float) if objective is None else objective}


def _rot(deg: float) -> np.ndarray:
    """A rotation of ``deg`` about [1 2 3] / |[1 2 3]|: no cubic symmetry maps it to a smaller one below 45 deg."""
    v = np.array([1.0, 2.0, 3.0]) / np.sqrt(14.0)
    return np.asarray(orientation.rotation_matrix(np.radians(deg) * v), float)


def test_the_rotation_of_these_tests_is_its_own_misorientation():
    for deg in (8.0, 30.0):
        assert np.degrees(orientation.misorientation_angle(np.eye(3), _rot(deg))) == pytest.approx(deg, abs=1e-6)


def test_pairs_take_neighbours_of_another_grain_that_agree_with_their_own():
    """4 x 3 scan points: grain A in the columns x = 0, 1, grain B (30 deg away) in x = 2, 3."""
    pos = _grid(4, 3)
    nbs = neighbours(pos, 1.5)
    R = np.stack([np.eye(3) if x < 2 else _rot(30.0) for x, _ in pos])
    s = FitSettings()
    pairs = second_grain_pairs(_fits(R, objective=-np.arange(12.0)), nbs, s)
    # each boundary point is paired with one point of the other grain: the one of lowest deviance
    # (the highest index here), the others being the same orientation (distinct_deg)
    assert sorted(pairs) == [(1, 6), (2, 5), (5, 10), (6, 9), (9, 10), (10, 9)]
    # within the high-angle limit the neighbour is the same grain, bent (a boundary's gradient)
    R8 = np.stack([np.eye(3) if x < 2 else _rot(8.0) for x, _ in pos])
    assert second_grain_pairs(_fits(R8), nbs, s) == []
    assert second_grain_pairs(_fits(R), nbs, FitSettings.of(second_grain_deg=float("inf"))) == []


def test_pairs_leave_out_misfits_flagged_frames_and_neighbours_that_are_not_ok():
    pos = _grid(3, 3)
    nbs = neighbours(pos, 1.5)
    R = np.stack([np.eye(3)] * 9)
    R[4] = _rot(30.0)                            # a misfit: none of its neighbours agrees with it
    pairs = second_grain_pairs(_fits(R), nbs, FitSettings())
    # the misfit is tested against its neighbours' grain, which is no second grain of any other point
    assert [i for i, _ in pairs] == [4] and pairs[0][1] in nbs[4]
    status = np.full(9, FitStatus.OK.code)
    status[4] = FitStatus.MIXED.code              # already flagged: left as it is
    assert second_grain_pairs(_fits(R, status), nbs, FitSettings()) == []
    status[4] = FitStatus.NOT_CONVERGED.code      # tested, as the residual tests do
    assert [i for i, _ in second_grain_pairs(_fits(R, status), nbs, FitSettings())] == [4]
    status[:] = FitStatus.NO_SIGNAL.code
    status[4] = FitStatus.OK.code                 # no ok neighbour: nothing to pair with
    assert second_grain_pairs(_fits(R, status), nbs, FitSettings()) == []


@pytest.fixture(scope="module")
def grains():
    """The yellow domain's pattern (grain A, its [001] zone along the beam) and the same lattice turned 30 deg about the beam (grain B)."""
    cfg = load_config(default_paths("yellow"))
    settings = settings_from_config(load_config(default_paths("yellow"), ["fit.batch=4"]))
    setup = FitSetup.build(cfg, Q, CHI, None, settings)
    a = params_from_config(cfg).replace(sl_scale=3000.0, diffuse_scale=45.0, al_scale=20.0, background=0.05)
    b = a.replace(inplane=a.inplane + np.radians(30.0))
    return {"cfg": cfg, "setup": setup, "a": a, "b": b,
            "mu_a": np.asarray(setup.model(a), float), "mu_b": np.asarray(setup.model(b), float)}


def test_gain_of_a_second_grain_is_large_and_of_noise_small(grains):
    """Beside grain A's fit, grain B's SL peaks gain far over sl_min_gain where the frame holds 30 %
    of B, and no more than Poisson noise gives where it holds none; their share is B's."""
    setup, a, b = grains["setup"], grains["a"], grains["b"]
    mixed = poisson_counts(0.7 * grains["mu_a"] + 0.3 * grains["mu_b"], seed=1)
    pure = poisson_counts(grains["mu_a"], seed=2)
    gain, share = second_grain_gains(setup, stack_params([a, a]), stack_params([b, b]), np.stack([mixed, pure]))
    limit = FitSettings().evidence.sl_min_gain
    assert gain[0] > 10 * limit
    assert 0.2 < share[0] < 0.4
    # one scale more, fitted to noise: a chi2 of one degree of freedom (non-negative scale), 1e-4 at 15
    assert -1.0 < gain[1] < 15.0
    assert share[1] < 0.02


def test_a_frame_between_two_grains_is_flagged_mixed_once(grains, tmp_path):
    """A line of 4 scan points: grain A, 70 % A + 30 % B, B, B. With the residual tests switched off
    the main pass fits the mixed point as A, ok; the neighbour-grain test flags it and only it (the
    B point beside it, tested against A, needs no A), records that it ran, and a second call
    changes nothing."""
    setup = grains["setup"]
    mu = [grains["mu_a"], 0.7 * grains["mu_a"] + 0.3 * grains["mu_b"], grains["mu_b"], grains["mu_b"]]
    pos = _grid(4, 1)
    imgs = []
    for j, m in enumerate(mu):
        img = np.full(CHI.size * Q.size, np.nan)
        img[setup.index] = poisson_counts(m, seed=20 + j)
        imgs.append(img.reshape(CHI.size, Q.size))
    path = tmp_path / "scan.h5"
    with h5py.File(path, "w") as f:
        g = f.create_group("entry/reduction")
        g["polar"] = np.stack(imgs).astype(np.float32)
        g["q"], g["chi"] = Q, CHI
        g["positions"] = pos
    cfg = load_config(default_paths("yellow"), ["fit.batch=4", "fit.max_iter=40", "fit.n_candidates=4",
                                                "fit.neighbour_passes=0", "fit.mixed_ratio=inf",
                                                "fit.mixed_al_significance=inf"])
    settings = settings_from_config(cfg)
    out = tmp_path / "fits.h5"
    fit_scan(path, grains["cfg"], out, settings, progress=False, setup=setup)
    fits = read_fits(out)
    status = fits["status"]
    assert second_grains_done(out)
    assert status.tolist() == [FitStatus.OK.code, FitStatus.MIXED.code, FitStatus.OK.code, FitStatus.OK.code], \
        fits["message"]
    assert "neighbour frame 2" in fits["message"][1] and "30 deg away" in fits["message"][1]
    # its values are the stronger grain's, A
    R_a = np.asarray(grains["a"].sl_orientation(), float)
    assert np.degrees(orientation.misorientation_angle(R_a, fits["orientation_matrix"][1])) < 2.5
    assert flag_second_grains(out, path, setup, settings, progress=False) == []
