"""The linear stage's dispersion (fits/scan/frames.py), which decides how many candidates are refined."""
import numpy as np

from fits.scan.frames import linear_dispersion


def _frames(extra: float, seed: int = 3):
    rng = np.random.default_rng(seed)
    P = 4000
    x = np.linspace(-1, 1, P)
    comps = np.stack([np.exp(-0.5 * (x / 0.05) ** 2), np.ones(P)])          # a peak and a level
    scales = np.array([200.0, 5.0])
    mu = scales @ comps
    lam = mu * rng.gamma(1.0 / extra, extra, P) if extra > 0 else mu       # extra-Poisson spread
    y = rng.poisson(lam).astype(float)
    return comps[None, None], scales[None, None], y[None], np.ones((1, P), bool), np.ones((1, P))


def test_poisson_frames_have_dispersion_one_and_misfit_frames_more():
    comps, scales, y, valid, w = _frames(0.0)
    assert linear_dispersion(comps, scales, np.array([0]), y, valid, w)[0] < 1.1
    comps, scales, y, valid, w = _frames(0.2)              # variance mu + 0.2 mu^2: phi ~ 1 + 0.2 mu
    assert linear_dispersion(comps, scales, np.array([0]), y, valid, w)[0] > 2.0
