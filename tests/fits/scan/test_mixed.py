"""Tests of the mixed-pattern decision (fits/scan/mixed.py) under model mismatch: a frame of the
model itself, the same grain with its peaks reshaped (broader, heavier tails than the model's
Gaussians) and the same grain with a second orientation added, each fitted by the model's
linear scales at the true orientation."""
import numpy as np
import pytest

from fits.scan.linear import COMPONENTS, component_images, linear_scales
from fits.scan.mixed import al_residual, dispersion_on, flag_mixed, residual_spikes
from fits.scan.results import empty_results
from fits.scan.search import isolated_spikes, localised_significance, spike_floor
from fits.scan.settings import FitSettings
from fits.scan.setup import FitSetup
from fits.scan.starts import stack_params
from fits.status import FitStatus
from xmodel import orientation
from xmodel.config import default_paths, load_config
from xmodel.parameters import params_from_config

CHI = np.arange(180) * 2.0 - 179.0
Q = np.concatenate([np.geomspace(0.06, 0.24, 80), np.geomspace(1.72, 2.3, 24)])
SETTINGS = FitSettings()
#: detector pixels per polar bin: few at small q, hundreds in the wide-angle bins (as on an Eiger)
PIXELS = np.broadcast_to(np.where(Q < 1.0, 4.0, 300.0), (CHI.size, Q.size))


@pytest.fixture(scope="module")
def frames():
    """Polar frames (mean counts per pixel of each bin) and the fitted (linear-scale) params of
    four cases: the model, the model with its peaks reshaped, the model plus a second grain, and
    the model with a hot pixel in a wide-angle bin."""
    cfg = load_config(default_paths("red"))
    setup = FitSetup.build(cfg, Q, CHI, PIXELS, SETTINGS)
    p = params_from_config(cfg).replace(sl_scale=3000.0, diffuse_scale=45.0, al_scale=20.0, background=0.05)
    # the reshaped frame: the peaks' intensity split over Gaussians 1, 1.8 and 3.5 times wider
    # (radially and angularly), a heavier-tailed peak than one Gaussian, as paracrystal and
    # finite-crystal peaks are
    parts = [(1.0, 0.4), (1.8, 0.35), (3.5, 0.25)]
    shapes = [p.replace(sl_radial_width=f * float(p.sl_radial_width), sl_mosaic=f * float(p.sl_mosaic),
                        al_radial_width=f * float(p.al_radial_width), disorder=f * float(p.disorder),
                        sl_scale=c * 3000.0 / f ** 2, al_scale=c * 20.0 / f ** 2, diffuse_scale=0.0, background=0.0)
              for f, c in parts]
    R2 = orientation.rotation_about_axis(2, np.radians(30.0)) @ np.asarray(p.sl_orientation(), float)
    second = p.replace(base_orientation=R2, inplane=0.0, tilt1=0.0, tilt2=0.0, sl_scale=0.3 * 3000.0,
                       al_scale=0.3 * 20.0, diffuse_scale=0.0, background=0.0)
    model = np.asarray(setup.model(p), float)
    reshaped = np.asarray(setup.model(p.replace(sl_scale=0.0, al_scale=0.0)), float) + \
        sum(np.asarray(setup.model(sh), float) for sh in shapes)
    mus = [model, reshaped, model + np.asarray(setup.model(second), float), model]
    rng = np.random.default_rng(7)
    n = setup.weight
    obs = np.stack([rng.poisson(mu * n) / n for mu in mus])
    q_i = setup.index % Q.size
    inner = (q_i > 84) & (q_i < Q.size - 4)               # a wide-angle bin with wide-angle neighbours
    hot = int(np.flatnonzero(inner & (model < 2 * float(p.background) + 0.5))[0])
    obs[3, hot] += 3000.0 / n[hot]                       # one pixel of 3000 counts in a 300-pixel bin
    comps = component_images(setup.model, stack_params([p] * 4))
    scales, _ = linear_scales(comps, obs, np.ones(obs.shape, bool), n)
    fitted = stack_params([p.replace(**dict(zip(COMPONENTS, s))) for s in scales])
    polar = np.full((4, CHI.size * Q.size), np.nan)
    polar[:, setup.index] = obs
    return {"setup": setup, "polar": polar.reshape(4, CHI.size, Q.size), "params": fitted, "p": p, "hot": hot}


def decide(frames, settings=SETTINGS):
    setup, polar = frames["setup"], frames["polar"]
    out = empty_results(polar.shape[0])
    out["status"][:] = FitStatus.OK.code
    out["configuration"][:] = "conf1"
    a = np.full((polar.shape[0], 1), float(frames["p"].lattice_constant))
    out["significance"][:] = localised_significance(polar, setup.q, a, tuple(int(s) for s in setup.bank.shells),
                                                    settings.search.ring_sigma_q).max(axis=(1, 2))
    flag_mixed(out, np.arange(polar.shape[0]), polar, setup, frames["params"], settings)
    return out


def test_a_second_orientation_is_mixed_reshaped_peaks_and_the_model_are_not(frames):
    out = decide(frames)
    st = [FitStatus.from_code(c) for c in out["status"]]
    assert st == [FitStatus.OK, FitStatus.OK, FitStatus.MIXED, FitStatus.OK], \
        (out["message"], out["residual_significance"], out["al_residual_significance"])
    assert "second orientation" in out["message"][2]


def test_the_reshaped_fit_misses_its_peaks_and_the_model_fit_does_not(frames):
    """The reshaped frame is a real mismatch (dispersion on the fitted peaks far above 1), the
    model frame is not (about 1: the scaled statistics are the Poisson ones)."""
    from fits.scan.mixed import fitted_terms

    setup = frames["setup"]
    y, mu, terms = fitted_terms(frames["polar"], setup, frames["params"])
    on = (terms[:, COMPONENTS.index("sl_scale")] > np.sqrt(mu / setup.weight))
    phi = dispersion_on(y, mu, setup.weight, on)
    assert phi[0] < 1.5 and phi[1] > 5.0, phi


def test_the_dispersion_scaling_leaves_a_model_frame_decision_unchanged(frames, monkeypatch):
    """With the model's own peaks the dispersion is about 1 (never below), so the scaled
    statistics of the model frame are its Poisson ones: the decisions of the model frame and of
    the frame with a second grain are those of the unscaled test (dispersion set to 1), and the
    reshaped frame's AL excess, past the threshold in Poisson sigmas, is far below it over the
    dispersion."""
    import fits.scan.mixed

    setup = frames["setup"]
    z, _ = al_residual(frames["polar"][:1], setup, _one(frames["params"], 0), SETTINGS.evidence.mixed_al_band_sigma)
    assert z[0] < 6.0
    scaled = decide(frames)
    monkeypatch.setattr(fits.scan.mixed, "dispersion_on", lambda y, mu, weight, where: np.ones(len(y)))
    plain = decide(frames)
    assert list(plain["status"][[0, 2, 3]]) == list(scaled["status"][[0, 2, 3]])
    assert plain["residual_significance"][0] == pytest.approx(scaled["residual_significance"][0])
    # the reshaped frame's AL tails: past the threshold in Poisson sigmas, far below it over the dispersion
    level = SETTINGS.evidence.mixed_al_significance
    assert plain["al_residual_significance"][1] >= level > 2.0 * scaled["al_residual_significance"][1]


def test_a_hot_pixel_in_a_wide_angle_bin_is_no_second_grain(frames):
    """3000 counts in one of 300 pixels: a few counts on the bin's mean, below the one-pixel noise
    bound of the search's spike mask, but hundreds of point sigmas above the fit."""
    from fits.scan.mixed import fitted_terms

    setup = frames["setup"]
    y, mu, _ = fitted_terms(frames["polar"], setup, frames["params"], spike_sigma=np.inf)
    spikes = residual_spikes(y, mu, setup, SETTINGS.search.spike_sigma)
    assert spikes[3, frames["hot"]] and spikes[3].sum() == 1
    assert not spikes[0].any() and not spikes[2].any()
    z_in, _ = al_residual(frames["polar"][3:], setup, _one(frames["params"], 3), SETTINGS.evidence.mixed_al_band_sigma,
                          spike_sigma=np.inf)
    z_out, _ = al_residual(frames["polar"][3:], setup, _one(frames["params"], 3), SETTINGS.evidence.mixed_al_band_sigma)
    assert z_in[0] > SETTINGS.evidence.mixed_al_significance > 6.0 > z_out[0], (z_in, z_out)


def _row(params, k):
    import jax

    return jax.tree_util.tree_map(lambda x: x[k], params)


def _one(params, k):
    return stack_params([_row(params, k)])


def test_the_search_mask_sees_a_hot_pixel_by_the_noise_of_the_bin_mean(frames):
    """The search's spike mask with the bins' pixel counts finds the hot pixel (3000 counts in one
    of 300 pixels: about 10 counts on the bin's mean, many sigma of a 300-pixel mean but below
    one pixel's noise), the one-pixel bound does not; no bin of the model's peaks (at the
    narrowest SL peak the mask allows, `SearchSettings.ring_sigma_q`), of the reshaped peaks, of
    a second grain, or of SL peaks 100 times brighter (noise far below their shape) is a spike."""
    setup, polar, p = frames["setup"], frames["polar"], frames["p"]
    assert float(p.sl_radial_width) <= SETTINGS.search.ring_sigma_q * 1.001
    kw = {"sigma_q": SETTINGS.search.ring_sigma_q, "mosaic_deg": float(setup.bank.key["mosaic_deg"]),
          "n_sigma": SETTINGS.search.spike_sigma}
    spikes = isolated_spikes(polar, Q, pixels=setup.bin_pixels(), **kw).reshape(4, -1)[:, setup.index]
    assert spikes[3, frames["hot"]] and spikes[3].sum() == 1
    assert not spikes[:3].any()
    assert not isolated_spikes(polar, Q, **kw).any()               # the one-pixel bound misses it
    n = setup.weight
    bright = np.asarray(setup.model(p.replace(sl_scale=100 * 3000.0)), float)
    img = np.full(CHI.size * Q.size, np.nan)
    img[setup.index] = np.random.default_rng(3).poisson(bright * n) / n
    assert not isolated_spikes(img.reshape(1, CHI.size, Q.size), Q, pixels=setup.bin_pixels(), **kw).any()


def test_spike_floor_is_the_noise_of_bin_means():
    """``r e - n_sigma s`` with ``s^2`` the Poisson variance of the two bin means: one pixel per bin
    gives one pixel's noise, ``n`` pixels per bin ``1 / n`` of that variance (plus one count per
    bin's total)."""
    e, level, r = np.full((1, 1, 1), 8.0), np.full((1, 1, 1), 2.0), 0.5
    one = spike_floor(e, level, r, np.ones((1, 1)), np.ones((1, 1)), 5.0)
    assert one[0, 0, 0] == pytest.approx(4.0 - 5.0 * np.sqrt(4.0 + 2.0 + 1.0 + 0.25 * (8.0 + 2.0 + 1.0)))
    many = spike_floor(e, level, r, np.full((1, 1), 400.0), np.full((1, 1), 100.0), 5.0)
    var = (6.0 + 0.01) / 100.0 + 0.25 * (10.0 + 1 / 400.0) / 400.0
    assert many[0, 0, 0] == pytest.approx(4.0 - 5.0 * np.sqrt(var))
