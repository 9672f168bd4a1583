"""The forward model: intensity in every detector point for given `ModelParams`.

``I = w * (background + I_SL + I_AL)`` with ``w`` the solid angle times polarization
(docs/conventions.md, "The forward model"), zero where masked, and

* ``I_SL(q) = diffuse_scale * P(|q|) + sl_scale * B(|q|) * sum_G g(q; R_sl G)`` over the fcc
  SL reflections, ``P`` the polydisperse sphere form factor, ``B`` the Bragg weight of the
  size distribution: ``|<F>|^2 / <V>^2`` (the decoupling approximation) with
  ``model.sl_peak_weighting = "decoupling"``, ``P`` with ``"average"`` (the default for now;
  `xmodel.form_factor.sl_peak_factor`, `xmodel.config.DEFAULT_SL_PEAK_WEIGHTING`), ``g`` a
  Gaussian peak with radial sigma ``sigma_r`` and tangential sigma ``|G| sigma_mosaic`` (the
  default ``model.sl_peak_shape = "mosaic"``), or with the widths and the integrated-intensity
  normalisation of a finite, mosaic, paracrystalline grain (``"crystal"``, `sl_peak_widths`),
  and across the Ewald sphere a pseudo-Voigt with ``model.sl_peak_tail`` (`across_sphere_profile`)
  or, with ``"grain"``, the pseudo-Voigt that the grain's own size and mosaic give (`grain_across`);
* ``I_AL(q) = al_scale * sum_G |F_G|^2/|F_200|^2 h_G g(q; R_al G)`` over the rock-salt PbS
  reflections, radial sigma ``sigma_s`` and tangential ``sigma_t = sqrt(sigma_s^2 + (|G|
  sigma_Phi)^2)`` (the model behind the paper's Eq. 7), ``h_G = (sigma_t,200 / sigma_t)^2`` so that
  each reflection's integrated intensity follows ``|F_G|^2`` (``model.al_peak_intensity =
  "integrated"``, the default; `al_peak_height`), or ``h_G = 1`` (``"height"``).

Peak shape. A peak is Gaussian in the radial distance ``|q| - |G|`` and in the tangential
chord ``|G| |q_hat - G_hat|`` (a cap on the sphere of radius |G|, which is where an
orientational spread — SL mosaic, NC disorder — moves G; a 3D Gaussian in ``q - G`` is its
small-angle limit). With this shape the azimuthal FWHM measured along a ring equals the
tangential one, so Eq. 7 applied to simulated patterns returns the model's disorder.

Cost. A naive evaluation tests every pixel against every reflection. Here reflections are
grouped in shells of equal ``h^2 + k^2 + l^2`` (equal |G|), and the static `Support` keeps,
for each shell, only the pixels of its q-band (``||q| - |G|| < band_nsigma sigma_r``) where
some member reaches ``band_nsigma`` sigmas, and only the members that reach some of those
pixels. With ``c = q . G_hat`` the distances need one product per pair, fused by XLA.
The support is computed once, outside `jit`, for given parameters and parameter ranges
(like a neighbour list); rebuild it when a fit moves outside those ranges.

Validation. What each part was checked against is in its docstring; in short: the sparse
model against `dense_pattern` (every point against every reflection), its gradients against
central finite differences in float64, the peak widths against Eq. 7 on simulated rings, and
its inputs against external codes (q, chi, solid angle and polarization against pyFAI,
tests/xmodel/test_geometry.py; the form factor against sasmodels' ``sphere``,
tests/xmodel/test_form_factor.py). The pattern as a whole is not compared with an external
pattern code (sasmodels' ``fcc_paracrystal`` has another peak model; it serves only as a
speed reference in benchmarks/forward.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from xmodel.form_factor import sl_peak_factor, sphere_form_factor
from xmodel.parameters import ModelParams, Structure
from xmodel.pixels import PixelSet
from xmodel.precision import EXACT

TWO_PI = 2.0 * np.pi

#: what of an AL reflection follows ``|F|^2`` (``model.al_peak_intensity``, `al_peak_height`); the
#: same tuple as `xmodel.config.AL_PEAK_INTENSITIES`
AL_PEAK_INTENSITIES = ("integrated", "height")
#: shapes of the SL Bragg peaks (``model.sl_peak_shape``, `sl_peak_widths`); the same tuple as
#: `xmodel.config.SL_PEAK_SHAPES`
SL_PEAK_SHAPES = ("mosaic", "crystal", "grain")
#: the shapes with the finite grain's widths and integrated-intensity normalisation
SIZE_SHAPES = ("crystal", "grain")
#: reference sigma of the "crystal" shape's normalisation (1/A): ``sl_scale`` is the height of a
#: reflection whose three sigmas are all this (a FWHM of 4.7e-3 1/A, about a 100 nm grain's)
SL_REFERENCE_SIGMA = 2.0e-3
#: half width at half maximum of the Lorentzian of the SL profile across the Ewald sphere, in
#: units of the tangential sigma: the Gaussian's, ``sqrt(2 ln 2)`` (`across_sphere_profile`)
TAIL_HWHM = float(np.sqrt(2.0 * np.log(2.0)))
#: FWHM of a Gaussian over its sigma, ``2 sqrt(2 ln 2)``
GAUSS_FWHM = 2.0 * TAIL_HWHM
#: integral of the unit-height Lorentzian over that of the unit-height Gaussian of equal HWHM,
#: ``pi sqrt(2 ln 2) / sqrt(2 pi)`` (`sl_tail_integral`)
TAIL_INTEGRAL_RATIO = float(np.pi * TAIL_HWHM / np.sqrt(2.0 * np.pi))


def sl_peak_widths(g, sl_radial_width, sl_mosaic, shape: str = "mosaic", paracrystal: float = 0.0,
                   tail: float = 0.0):
    """Radial and tangential sigmas of a SL reflection of modulus ``g`` and its height factor.

    Parameters
    ----------
    g : |G| (1/A), a number or an array (numpy or JAX).
    sl_radial_width : sigma_r (1/A); with "crystal" the isotropic (size) width at G -> 0.
    sl_mosaic : sigma_mosaic (rad).
    shape : "mosaic", "crystal" or "grain" (`SL_PEAK_SHAPES`, ``model.sl_peak_shape``).
    paracrystal : s (A), the radial growth with "crystal" (``model.sl_paracrystal``); 0 leaves it out.
    tail : the Lorentzian share of the profile across the Ewald sphere (``model.sl_peak_tail``,
        `across_sphere_profile`); with "crystal" the height keeps the integrated intensity.

    Returns
    -------
    sigma_r, sigma_t : radial and tangential sigmas (1/A), broadcast like ``g``.
    height : factor on the peak's height (unitless): 1 for "mosaic".

    Raises
    ------
    ValueError
        If ``shape`` is not one of `SL_PEAK_SHAPES`.

    Notes
    -----
    "mosaic" (the default, the model of earlier versions): ``sigma_r``, ``sigma_t = |G|
    sigma_mosaic``, height ``sl_scale B(|q|)`` whatever the widths, so a reflection's integrated
    intensity grows as ``sigma_r sigma_t^2`` (as ``|G|^2 sigma_mosaic^2``).

    "crystal": the peak of a finite, mosaic, paracrystalline grain. "grain": the same widths and
    normalisation, with the profile across the Ewald sphere of that grain (`grain_across`)
    instead of the Gaussian or ``model.sl_peak_tail``'s pseudo-Voigt.

    * Size (Scherrer): a coherent grain of diameter D broadens every reflection by the Fourier
      transform of its shape, the same in every direction for a compact grain and independent of
      |G| (Warren, "X-ray Diffraction", 1969, ch. 13; for a sphere ``|Phi|^2 ~ exp(-q^2 R^2 / 5)``,
      a sigma of ``sqrt(5/2) / R``). ``sl_radial_width`` is taken as that isotropic term: it is
      the radial width where the |G|-dependent terms vanish, so one parameter describes both
      directions and the parameter set stays as it is. The size term is a ball about G, not a
      cap on the sphere ``|q| = |G|``: its tangential variance is taken at each point's ``|q|``
      (`ball_sigmas`), ``sigma_r^2 |G| / |q|``, so that with no mosaic the peak is exactly
      ``exp(-|q - G|^2 / 2 sigma_r^2)``.
    * Mosaic: a spread of grain orientations moves G over its sphere, ``|G| sigma_mosaic``
      tangentially; convolved with the size term the tangential sigma is
      ``sigma_t = sqrt(sigma_r^2 + (|G| sigma_mosaic)^2)`` at ``|q| = |G|`` (the AL peaks' form,
      `al_tangential_sigma`), ``sqrt(sigma_r^2 |G| / |q| + (|G| sigma_mosaic)^2)`` elsewhere.
    * Paracrystal: cumulative lattice disorder (an ideal paracrystal, Hosemann & Bagchi, "Direct
      Analysis of Diffraction by Matter", 1962; Guinier, "X-ray Diffraction", 1963, ch. 9)
      broadens the reflection of order h radially by an integral breadth growing as h^2, ``(pi/2)
      g_p^2 d |G|^2`` for a relative spacing spread g_p and spacing d; here as a Gaussian term
      added in quadrature, ``sigma_r(G)^2 = sigma_r^2 + (s |G|^2)^2`` (``s ~ sqrt(pi / 8) g_p^2
      d``: 0.06 A for 3 % of a 106 A spacing).
    * Integrated intensity: broadening redistributes a reflection's scattering over reciprocal
      space but keeps its integral (the kinematic integrated intensity of a mosaic crystal,
      Als-Nielsen & McMorrow, "Elements of Modern X-ray Physics", 2nd ed. 2011, sections 5.6 and
      6.3; Warren ch. 13), so the height falls as ``1 / (sigma_r sigma_t^2)``. The convention:
      ``height = sigma_ref^3 / (sigma_r sigma_t^2)`` with ``sigma_ref`` = `SL_REFERENCE_SIGMA`, so
      a reflection's integral over reciprocal space is ``(2 pi)^{3/2} sigma_ref^3 sl_scale B``
      whatever its widths, and ``sl_scale`` is the height a peak of sigmas ``sigma_ref`` would have
      (with the default widths 1.5e-3 1/A and 1 deg the heights at 111 to 220 are 1.5 to 0.8
      ``sl_scale``). With a tail across the Ewald sphere the height is further divided by
      `sl_tail_integral`, the profile's integral relative to the Gaussian's.

    Validation: the numerical 3D integral of one reflection does not change with ``sl_radial_width``
    and ``sl_mosaic`` (rel 1e-3), and the gradients of the "crystal" model agree with central
    finite differences in float64 (tests/xmodel/test_pattern.py::test_crystal_*).
    """
    if shape == "mosaic":
        return sl_radial_width, g * sl_mosaic, 1.0
    if shape not in SIZE_SHAPES:
        raise ValueError(f"SL peak shape {shape!r} is unknown; use one of {list(SL_PEAK_SHAPES)} "
                         f"(model.sl_peak_shape).")
    size2 = sl_radial_width * sl_radial_width
    sr = sl_radial_width if not paracrystal else (size2 + (paracrystal * g * g) ** 2) ** 0.5
    st2 = size2 + (g * sl_mosaic) ** 2
    if shape == "grain":
        eta, sa = grain_across(g, sl_radial_width, sl_mosaic)
        across = (sa / st2 ** 0.5) * ((1.0 - eta) + eta * TAIL_INTEGRAL_RATIO)
    else:
        across = sl_tail_integral(tail)
    return sr, st2 ** 0.5, SL_REFERENCE_SIGMA ** 3 / (sr * st2 * across)


def tch_pseudo_voigt(fwhm_g, fwhm_l):
    """FWHM and Lorentzian share eta of the pseudo-Voigt that stands for the Voigt profile of a
    Gaussian and a Lorentzian of FWHMs ``fwhm_g`` and ``fwhm_l`` (numbers or arrays, numpy or JAX).

    Thompson, Cox & Hastings, J. Appl. Cryst. 20, 79 (1987), eqs. 3-4: ``f^5 = f_G^5 + 2.69269
    f_G^4 f_L + 2.42843 f_G^3 f_L^2 + 4.47163 f_G^2 f_L^3 + 0.07842 f_G f_L^4 + f_L^5``, ``eta =
    1.36603 r - 0.47719 r^2 + 0.11116 r^3``, ``r = f_L / f``. Its FWHM is within 0.45 % of the
    Voigt's for any ``f_L / f_G`` (against scipy's `voigt_profile`).

    Validation: the FWHM against scipy's `voigt_profile` (tests/xmodel/test_grain_profile.py).
    """
    fg, fl = fwhm_g, fwhm_l
    f = (fg ** 5 + 2.69269 * fg ** 4 * fl + 2.42843 * fg ** 3 * fl ** 2 + 4.47163 * fg ** 2 * fl ** 3
         + 0.07842 * fg * fl ** 4 + fl ** 5) ** 0.2
    r = fl / f
    return f, 1.36603 * r - 0.47719 * r * r + 0.11116 * r ** 3


def _sphere_profile() -> tuple[float, float, float, float]:
    """The pseudo-Voigt of a sphere's shape transform across the Ewald sphere, in units of the
    sphere's Guinier sigma ``s = sqrt(5/2) / R``: its FWHM and eta, and the FWHMs of the Gaussian
    and the Lorentzian of the Voigt that `tch_pseudo_voigt` turns into it (`grain_across`).

    What a detector sees of a reflection along the sphere's normal is the peak integrated over
    the other two directions: the Fourier transform of the grain's autocorrelation along the
    normal, for a sphere of radius R ``gamma(z) = 1 - 3|z| / (4 R) + |z|^3 / (16 R^3)`` (|z| <=
    2R; Guinier & Fournet, "Small-Angle Scattering of X-rays", 1955, ch. 2). Its height is
    ``3 R / 2``, its integral ``2 pi`` and its tail ``(3 / (2 R)) / delta^2`` (from the kink of
    ``gamma`` at 0). The pseudo-Voigt of the same height, integral and tail has ``eta W^2 = 4``
    (W its FWHM times R) and ``W (c (1 - eta) + eta pi / 2) = 4 pi / 3`` with ``c = sqrt(pi /
    (4 ln 2))``: a quadratic in W. It stays within 4 % of the marginal's height everywhere
    (tests/xmodel/test_grain_profile.py). The Voigt components come from inverting
    `tch_pseudo_voigt` (its eta cubic for r, then its f^5 for f_G).
    """
    c = float(np.sqrt(np.pi / (4.0 * np.log(2.0))))
    beta = 4.0 * np.pi / 3.0
    w = (beta + np.sqrt(beta * beta - 16.0 * c * (0.5 * np.pi - c))) / (2.0 * c)     # FWHM * R
    eta = 4.0 / (w * w)
    roots = np.roots([0.11116, -0.47719, 1.36603, -eta])
    r = float(min(x.real for x in roots if abs(x.imag) < 1e-12 and 0.0 <= x.real <= 1.0))
    fl = r * w
    lo, hi = 0.0, w
    for _ in range(200):                     # bisection of f(f_G) = w, f increasing in f_G
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if float(tch_pseudo_voigt(mid, fl)[0]) < w else (lo, mid)
    per_sigma = float(np.sqrt(2.5))          # R = sqrt(5/2) / s: a width w / R is (w / sqrt(5/2)) s
    return float(w / per_sigma), float(eta), float(0.5 * (lo + hi) / per_sigma), float(fl / per_sigma)


#: the sphere's profile across the Ewald sphere per unit of its size sigma: FWHM, eta, and its
#: Voigt's Gaussian and Lorentzian FWHMs (`_sphere_profile`)
SPHERE_FWHM, SPHERE_ETA, SPHERE_FWHM_G, SPHERE_FWHM_L = _sphere_profile()


def grain_across(g, size_sigma, sl_mosaic):
    """The profile across the Ewald sphere of a finite, mosaic grain's reflection: its
    pseudo-Voigt share eta and its sigma (the Gaussian sigma of equal FWHM), for the "grain" shape.

    Parameters
    ----------
    g : |G| (1/A); size_sigma : the grain's isotropic size sigma ``sqrt(5/2) / R`` (1/A, the
        "crystal" shape's ``sl_radial_width``); sl_mosaic : sigma_mosaic (rad). Numbers or arrays,
        numpy or JAX.

    Returns
    -------
    eta : the Lorentzian share (unitless, 0 to 1); sigma_a : ``FWHM / (2 sqrt(2 ln 2))`` (1/A).

    Notes
    -----
    The grain (a sphere of radius ``R = sqrt(5/2) / size_sigma``, the Guinier sigma of the
    "crystal" shape) gives, along the sphere's normal, the pseudo-Voigt of `_sphere_profile`:
    eta 0.352, FWHM ``3.37 / R``, whose tail falls as ``delta^-2`` where a Gaussian's falls as
    ``exp(-delta^2 / 2 sigma^2)``. The mosaic moves the reflection across the sphere by a Gaussian
    of sigma ``|G| sigma_mosaic``. Convolved, Gaussians add in quadrature and Lorentzians
    linearly: the grain's Voigt components (`SPHERE_FWHM_G`, `SPHERE_FWHM_L`) with the mosaic's
    Gaussian give ``f_G = sqrt((SPHERE_FWHM_G s)^2 + (2 sqrt(2 ln 2) |G| sigma_mosaic)^2)`` and
    ``f_L = SPHERE_FWHM_L s``, and `tch_pseudo_voigt` the profile. No constant is chosen: the size
    and the mosaic are the model's own parameters.

    Validation: its FWHM against scipy's `voigt_profile`, its limits (the sphere's pseudo-Voigt
    without mosaic, the Gaussian without size) and the sphere's marginal (numerical Fourier
    transform) in tests/xmodel/test_grain_profile.py.
    """
    fg_m = GAUSS_FWHM * g * sl_mosaic
    fg_s = SPHERE_FWHM_G * size_sigma
    f, eta = tch_pseudo_voigt((fg_s * fg_s + fg_m * fg_m) ** 0.5, SPHERE_FWHM_L * size_sigma)
    return eta, f / GAUSS_FWHM


def gaussian_peak(dq_r2, dq_t2, sigma_r, sigma_t):
    """3D Gaussian peak of unit height.

    Parameters
    ----------
    dq_r2, dq_t2 : squared radial and tangential distances from the reciprocal lattice
        point (1/A^2).
    sigma_r, sigma_t : radial and tangential standard deviations (1/A).

    Notes
    -----
    ``exp(-dq_r^2 / (2 sigma_r^2) - dq_t^2 / (2 sigma_t^2))`` (docs/conventions.md,
    "Peaks").

    Validation: no external reference; `dense_pattern` uses it too. The widths it gives are
    checked through Eq. 7: the azimuthal and radial FWHMs of a simulated 200_AL ring return the
    model's dPhi within 0.3 deg (tests/fits/analyses/test_disorder.py), and the CCFs of
    Gaussian ring peaks from the reflection table match the model's (score >= 0.95,
    tests/fits/analyses/test_xcca.py).
    """
    return jnp.exp(-0.5 * (dq_r2 / sigma_r ** 2 + dq_t2 / sigma_t ** 2))


def _array_module(x):
    """numpy for numpy input (kept in float64 outside JAX, e.g. `xmodel.peaks`), else jax.numpy."""
    return np if isinstance(x, (np.ndarray, np.generic, float, int)) else jnp


def across_sphere_profile(u, tail: float):
    """SL peak profile across the Ewald sphere: a pseudo-Voigt of unit height.

    Parameters
    ----------
    u : squared offset along ``e2`` (the tangential direction out of the detector plane, about
        the Ewald sphere's normal, `bin_frame`) in units of the tangential sigma squared
        (unitless); numpy or JAX.
    tail : eta, the Lorentzian's share of the pseudo-Voigt (0 to 1, ``model.sl_peak_tail``).

    Returns
    -------
    ``(1 - eta) exp(-u / 2) + eta / (1 + u / (2 ln 2))``: a Gaussian of sigma ``sigma_t`` and a
    Lorentzian of the same half width at half maximum (``sqrt(2 ln 2) sigma_t``), the
    pseudo-Voigt of Thompson, Cox & Hastings, J. Appl. Cryst. 20, 79 (1987).

    Notes
    -----
    Why a tail, and why across the sphere only. A finite coherent grain broadens each reflection
    by its shape transform ``|Phi(q)|^2`` (Warren, "X-ray Diffraction", 1969, ch. 13). What a
    detector measures of a reflection cut by the Ewald sphere at an excitation error ``delta`` is
    the section of the peak at ``delta``, integrated over its extent on the detector: the peak's
    marginal along the sphere's normal. For a grain of radius ``R_g`` that marginal is the
    Fourier transform of the grain's autocorrelation along the normal,
    ``gamma(z) = V (1 - 3|z| / (4 R_g) + |z|^3 / (16 R_g^3))`` (Guinier & Fournet, "Small-Angle
    Scattering of X-rays", 1955, ch. 2); its kink at ``z = 0`` makes the marginal fall as
    ``delta^-2``, a Lorentzian's tail of half width about ``3 / (4 R_g)``, where a Gaussian falls
    as ``exp(-delta^2 / 2 sigma^2)``. A tilt of the lattice is fitted from how the cut
    reflections' intensities change with their excitation errors, so this profile is what the
    tilts measure; in the detector plane (radial and ``e1``) the peak's shape is seen directly
    and the Gaussian stays, which keeps the SL windows of the scan fit (`fits.scan.window`) as
    they are. ``eta = 0`` is the Gaussian peak of `gaussian_peak`.
    """
    g = _array_module(u).exp(-0.5 * u)
    if not has_tail(tail):
        return g
    return (1.0 - tail) * g + tail / (1.0 + u / (TAIL_HWHM * TAIL_HWHM))


def has_tail(tail) -> bool:
    """Whether ``tail`` asks for the pseudo-Voigt across the sphere: anything but a static zero
    (a traced eta, e.g. `grain_across`'s, always does)."""
    return not (isinstance(tail, (int, float)) and tail == 0)


def sl_size_variance(shape: str, sl_radial_width):
    """The size (Scherrer) part of a SL reflection's tangential variance, ``sl_radial_width^2``
    (1/A^2), for the shapes with a size width (`SIZE_SHAPES`); None for "mosaic", whose peak is a
    cap by construction (`ball_sigmas`)."""
    return sl_radial_width * sl_radial_width if shape in SIZE_SHAPES else None


def ball_sigmas(qa, g, sigma_t, sigma_a, size_var):
    """Tangential and across-sphere sigmas at ``|q| = qa`` of a peak whose size term is a ball.

    A spread of orientations moves G over its sphere: the peak is a cap, Gaussian in ``|q| - g``
    and in the chord ``g |q_hat - G_hat|`` (`shell_sum`). A finite grain's size broadening is a
    ball about G, ``|q - G|^2 = (|q| - g)^2 + (|q| / g) chord^2``: its tangential variance at
    ``|q|`` is ``sigma_s^2 g / |q|``. The ball convolved with the cap (small angles) has the
    tangential variance ``sigma_s^2 g / |q| + (g sigma_mosaic)^2``, i.e. ``sigma_t^2 + size_var
    (g / |q| - 1)`` with ``size_var = sigma_s^2`` (`sl_size_variance`); the across-sphere sigma
    is scaled by the same factor. Without it a ball's ridge, at ``|q| = g cos theta`` along a
    detector row at angle theta from G and at the in-plane ``sqrt(g^2 - h^2)`` for a centre ``h``
    off the Ewald sphere, lies inside the cap's ``|q| = g``, and a fit puts the lattice
    constant high by about ``(w / g)^2 / 2`` and ``h^2 / 2 g^2`` (docs/validation.md, "Where the
    lattice-constant bias comes from"; `benchmarks/peak_geometry_bias.py`).

    Parameters
    ----------
    qa : ``|q|`` (1/A); g : ``|G|`` (1/A); sigma_t : tangential sigma at ``|q| = g`` (1/A);
        sigma_a : across-sphere sigma (1/A) or None; size_var : ``sigma_s^2`` (1/A^2) or None
        (the cap: the sigmas as given). Numpy or JAX; broadcasts.

    Returns
    -------
    (sigma_t, sigma_a) at ``qa`` (sigma_a None where given None).
    """
    if size_var is None:
        return sigma_t, sigma_a
    xp = _array_module(qa)
    st = xp.sqrt(sigma_t * sigma_t + size_var * (g / xp.maximum(qa, 1e-12) - 1.0))
    return st, (None if sigma_a is None else sigma_a * (st / sigma_t))


def sl_peak(dq_r2, dq_t2, dq_1_2, sigma_r, sigma_t, tail=0.0, sigma_a=None):
    """SL peak of unit height: `gaussian_peak` with the profile across the Ewald sphere
    `across_sphere_profile`.

    Parameters
    ----------
    dq_r2, dq_t2 : squared radial distance and squared tangential chord (1/A^2, `gaussian_peak`).
    dq_1_2 : the chord's squared part along ``e1 = e_beam x q_hat`` (in the detector plane;
        1/A^2); the rest, ``dq_t2 - dq_1_2``, lies across the sphere. Not used without a tail.
    sigma_r, sigma_t : radial and tangential sigmas (1/A); tail : eta (static, or traced with the
        "grain" shape, `grain_across`).
    sigma_a : the across-sphere profile's sigma (1/A, `grain_across`); None: ``sigma_t``.
    """
    if not has_tail(tail):
        return gaussian_peak(dq_r2, dq_t2, sigma_r, sigma_t)
    sa = sigma_t if sigma_a is None else sigma_a
    return gaussian_peak(dq_r2, dq_1_2, sigma_r, sigma_t) * across_sphere_profile(
        jnp.maximum(dq_t2 - dq_1_2, 0.0) / sa ** 2, tail)


def chord_on_e1(gn_x, gn_y, qx, qy):
    """``G_hat . e1`` with ``e1 = e_beam x q_hat`` (unitless; broadcasts; numpy or JAX): the chord's
    component along ``e1`` is ``-|G| G_hat . e1`` (``q_hat`` is normal to ``e1``)."""
    xp = _array_module(qx)
    return (gn_y * qx - gn_x * qy) / xp.maximum(xp.sqrt(qx * qx + qy * qy), 1e-12)


def tail_reach(tail: float, nsigma: float) -> float:
    """Factor on the tangential sigma beyond which `across_sphere_profile` is below the Gaussian
    cut ``exp(-nsigma^2 / 2)`` (`build_support`'s pruning); 1 without a tail.

    The Lorentzian part ``eta / (1 + u / (2 ln 2))`` falls below the cut at ``u = 2 ln 2 (eta
    exp(nsigma^2 / 2) - 1)``.
    """
    if not tail:
        return 1.0
    u_cut = TAIL_HWHM ** 2 * (tail * np.exp(0.5 * nsigma ** 2) - 1.0)
    return float(np.sqrt(max(u_cut, nsigma ** 2)) / nsigma)


#: bound on the ratio of `grain_across`'s sigma to the tangential sigma ``sqrt(s^2 + (|G|
#: sigma_mosaic)^2)``: a Voigt's FWHM is at most ``f_G + f_L``, and ``f_G <= max(SPHERE_FWHM_G,
#: 2 sqrt(2 ln 2)) sigma_t``, ``f_L <= SPHERE_FWHM_L sigma_t``
GRAIN_REACH = (max(SPHERE_FWHM_G, GAUSS_FWHM) + SPHERE_FWHM_L) / GAUSS_FWHM


def sl_reach(shape: str, tail: float, nsigma: float) -> float:
    """`tail_reach` of a SL shape: with "grain" that of a whole Lorentzian (eta <= 1) of the
    widest sigma `grain_across` gives (`GRAIN_REACH` times the tangential sigma)."""
    return tail_reach(1.0, nsigma) * GRAIN_REACH if shape == "grain" else tail_reach(tail, nsigma)


def sl_tail_integral(tail: float) -> float:
    """Integral of `across_sphere_profile` over that of its Gaussian (unitless).

    ``(1 - eta) + eta pi sqrt(2 ln 2) / sqrt(2 pi)`` (the Lorentzian ``1 / (1 + t^2 / w^2)``
    integrates to ``pi w``, the Gaussian to ``sqrt(2 pi) sigma``); the "crystal" shape divides
    its height by it so that a reflection's integrated intensity stays independent of ``eta``.
    """
    return (1.0 - tail) + tail * TAIL_INTEGRAL_RATIO


def shell_sum(q_t, q2, g_rot, g, sigma_r, sigma_t, tail=0.0, sigma_a=None, size_var=None):
    """Sum of the peaks of one shell (reflections of equal |G| = g) at points q.

    Parameters
    ----------
    q_t : (3, n) scattering vectors, components first (1/A); q2 : (n,) their squared norms.
    g_rot : (m, 3) reciprocal lattice vectors in the lab frame, all of norm ``g`` (1/A).
    sigma_r, sigma_t : radial and tangential sigmas (1/A).
    tail : the Lorentzian share of the profile across the Ewald sphere (`across_sphere_profile`;
        a static number, 0 for the Gaussian peak).
    size_var : the size part of ``sigma_t^2`` (`sl_size_variance`), which is a ball about G and
        not a cap (`ball_sigmas`); None: a cap.

    Notes
    -----
    Each peak is a Gaussian in spherical coordinates about the origin (a "curved cap"):
    radial distance ``|q| - g`` and tangential distance the chord ``g |q_hat - G_hat|``,
    ``dq_t^2 = 2 g^2 (1 - q_hat . G_hat)``. A spread of orientations (SL mosaic, NC
    disorder) keeps |G| and moves G over the sphere of radius g, so the peak follows that
    sphere rather than its tangent plane; the azimuthal width measured along a ring of
    constant |q| is then the tangential sigma itself, as assumed by Eq. 7. Written as an
    elementwise expression over (m, n) rather than a matrix product with an inner
    dimension of 3, which XLA fuses into one loop.

    Validation: the chord through ``c = q . G_hat`` equals `dense_pattern`'s explicit
    ``|q_hat |G| - G|`` to within 1e-3 of the brightest SL and AL peak on the yellow, purple
    and orange domains (tests/xmodel/test_pattern.py::test_sparse_equals_dense_reference);
    its gradients agree with central finite differences in float64 (rel 2e-5,
    test_gradients_against_finite_differences_float64).
    """
    qa = jnp.sqrt(q2)
    gn = g_rot / g
    c = gn[:, 0:1] * q_t[0][None, :] + gn[:, 1:2] * q_t[1][None, :] + gn[:, 2:3] * q_t[2][None, :]
    dr = qa - g
    dt2 = (2.0 * g * g) * jnp.maximum(1.0 - c / jnp.maximum(qa, 1e-12)[None, :], 0.0)
    t1 = None
    if has_tail(tail):
        c1 = chord_on_e1(gn[:, 0:1], gn[:, 1:2], q_t[0][None, :], q_t[1][None, :])
        t1 = (g * g) * c1 * c1
    sigma_t, sigma_a = ball_sigmas(qa[None, :], g, sigma_t, sigma_a, size_var)
    return jnp.sum(sl_peak((dr * dr)[None, :], dt2, t1, sigma_r, sigma_t, tail, sigma_a), axis=0)


def bin_frame(q_lab: np.ndarray, spread: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Chi direction of each point and its bin spread in the frame ``(q_hat, e1, e2)`` (numpy, float64).

    Parameters
    ----------
    q_lab : (n, 3) points (1/A); spread : (n, 3, 3) covariance of the q-vectors of each point's
        pixels (1/A^2, `xmodel.pixels.PixelSet.spread`).

    Returns
    -------
    e1 : (3, n) the unit tangential vector ``e_beam x q_hat`` (the direction of increasing
        azimuth, along which a polar bin spans its chi width).
    local : (4, n) the spread ``S_uu, S_u1, S_11, S_22`` (1/A^2) in the frame
        ``(q_hat, e1, e2)``, ``e2 = q_hat x e1``; `binned_shell_sum` neglects ``S_u2`` and
        ``S_12`` (see there).
    """
    q = np.asarray(q_lab, np.float64).reshape(-1, 3)
    cov = np.asarray(spread, np.float64).reshape(-1, 3, 3)
    u = q / np.maximum(np.linalg.norm(q, axis=1), 1e-300)[:, None]
    e1 = np.cross(np.array([0.0, 0.0, 1.0]), u)
    small = np.linalg.norm(e1, axis=1) < 1e-6           # q along the beam: any perpendicular
    e1[small] = np.cross(np.array([1.0, 0.0, 0.0]), u[small])
    e1 /= np.maximum(np.linalg.norm(e1, axis=1), 1e-300)[:, None]
    e2 = np.cross(u, e1)
    basis = (u, e1, e2)
    pairs = ((0, 0), (0, 1), (1, 1), (2, 2))
    local = np.stack([np.einsum("ni,nij,nj->n", basis[a], cov, basis[b]) for a, b in pairs])
    return e1.T.copy(), local


def binned_shell_sum(q_t, q2, e1, local, g_rot, g, sigma_r, sigma_t, tail=0.0, sigma_a=None, size_var=None):
    """Mean of the peaks of one shell over the pixels of reduced bins, to second order.

    Parameters
    ----------
    q_t : (3, n) bin centroids, components first (1/A); q2 : (n,) their squared norms.
    e1, local : (3, n) each centroid's chi direction and (4, n) the covariance of its pixels'
        q-vectors in the frame ``(q_hat, e1, e2)`` (`bin_frame`; 1/A^2).
    g_rot : (m, 3) reciprocal lattice vectors in the lab frame, all of norm ``g`` (1/A).
    sigma_r, sigma_t : radial and tangential sigmas (1/A).

    Notes
    -----
    The peak of `shell_sum` is, about a point q, a Gaussian ``exp(-d^T C^-1 d / 2)`` in the
    offsets ``d = (|q| - g, t1, t2)`` (radial, and the tangential chord ``g (q_hat - G_hat)`` on
    ``e1``, ``e2``) with ``C = diag(sigma_r^2, sigma_t^2, sigma_t^2)``. A pixel of the bin at
    ``q + delta`` moves ``d`` by ``(delta_u, r delta_1, r delta_2)``, ``r = g / |q|``, so with the
    pixels spread as ``N(q, S)`` the bin mean of the peak is the Gaussian convolved with the
    spread: the convolution of two Gaussians is a Gaussian with the summed covariances
    (e.g. Bromiley, "Products and convolutions of Gaussian probability density functions",
    Tina-Vision memo 2003-003, section 2; Rasmussen & Williams, "Gaussian Processes for
    Machine Learning", 2006, eq. A.7), here with the peak's unit height:

    ``<g>_bin = sqrt(det C / det(C + S')) exp(-d^T (C + S')^-1 d / 2)``, ``S' = J S J``,
    ``J = diag(1, r, r)``.

    It is exact for a Gaussian spread and second order in the bin's width for any spread (the
    midpoint rule about the centroid plus the curvature term). The pixels of a polar bin lie on
    the Ewald sphere and spread along |q| and chi (``q_hat`` and ``e1``); along ``e2`` the
    sphere's tangent plane tilts by theta out of the radial direction, so ``S_22 ~ S_uu
    tan^2 theta`` and ``S_u2 ~ S_uu tan theta``, and ``S_12`` vanishes for a bin symmetric in
    chi. The 3 x 3 sum is therefore taken as the 2 x 2 block on ``(q_hat, e1)``, inverted in
    closed form, and ``S_22`` alone on ``e2``. On the fit points of a P10 Eiger 4M scan reduced
    on 1 % x 1 deg bins the neglected terms are ``|S_u2| / (sigma_r sigma_t) <= 3e-3`` and
    ``|S_12| / sigma_t^2 <= 1e-3`` for the SL and AL shells, where the kept ones reach
    ``S_uu / sigma_r^2 = 0.5``, ``S_11 / sigma_t^2 = 0.24`` and ``|S_u1| / (sigma_r sigma_t) =
    0.14`` (SL). A (point, reflection) pair then costs one more dot product (``G_hat . e1``) and
    a 2 x 2 quadratic form. The chord's part off ``e1`` (``t2`` and the second-order part
    along ``q_hat``) is taken from the chord itself, so with ``S = 0`` this is `shell_sum`
    exactly.

    With a ``tail`` the factor on ``e2`` (the chord's part off ``e1``) is
    `across_sphere_profile`; its Lorentzian part is evaluated at the centroid (the bins' spread
    along ``e2``, ``S_22 ~ S_uu tan^2 theta``, is below 1e-4 of ``sigma_t^2`` on the SAXS bins).

    Validation: equals the mean of `shell_sum` over the pixels of synthetic 1 % x 1 deg bins
    around a SL peak to 1e-3 of its height, where the peak at the centroid is 5e-2 off; with
    ``S = 0`` equals `shell_sum`; gradients against central finite differences in float64
    (tests/xmodel/test_pattern.py::test_binned_*).
    """
    qa = jnp.sqrt(q2)
    gn = g_rot / g
    c = gn[:, 0:1] * q_t[0][None, :] + gn[:, 1:2] * q_t[1][None, :] + gn[:, 2:3] * q_t[2][None, :]
    c1 = gn[:, 0:1] * e1[0][None, :] + gn[:, 1:2] * e1[1][None, :] + gn[:, 2:3] * e1[2][None, :]
    return jnp.sum(binned_peak(qa, c, c1, local, g, sigma_r, sigma_t, tail, sigma_a, size_var), axis=0)


def binned_peak(qa, c, c1, local, g, sigma_r, sigma_t, tail=0.0, sigma_a=None, size_var=None):
    """Unit-height peak averaged over a bin's pixels, per (reflection, point) pair (`binned_shell_sum`).

    Parameters
    ----------
    qa : ``|q|`` of the bin centroids (1/A); c : ``G_hat . q`` and c1 : ``G_hat . e1`` of each
        pair (1/A and unitless); local : the bins' spread ``(S_uu, S_u1, S_11, S_22)`` (1/A^2,
        `bin_frame`), each broadcasting like ``qa`` against ``c``.
    g : ``|G|`` (1/A); sigma_r, sigma_t : radial and tangential sigmas (1/A).
    tail : the Lorentzian share across the Ewald sphere (`across_sphere_profile`; static, 0 for
        the Gaussian, or traced with the "grain" shape); sigma_a : the across-sphere profile's
        sigma (1/A, `grain_across`; None: ``sigma_t``).
    size_var : the size part of ``sigma_t^2``, a ball about G (`ball_sigmas`, taken at the
        centroid's ``|q|``); None: a cap.

    Returns
    -------
    The bin mean of the peak for every pair (shape of ``c``): the Gaussian with covariance
    ``C + S'`` at the centroid times ``sqrt(det C / det(C + S'))`` (derivation and validation
    in `binned_shell_sum`; with a zero spread `gaussian_peak`).
    """
    sigma_t, sigma_a = ball_sigmas(qa, g, sigma_t, sigma_a, size_var)
    x0 = (qa - g) / sigma_r
    x1 = (-g / sigma_t) * c1
    dt2 = ((2.0 * g * g) / sigma_t ** 2) * jnp.maximum(1.0 - c / jnp.maximum(qa, 1e-12), 0.0)
    at = (g / jnp.maximum(qa, 1e-12)) / sigma_t
    m00 = 1.0 + local[0] / sigma_r ** 2
    m01 = local[1] * at / sigma_r
    m11 = 1.0 + local[2] * at * at
    m22 = 1.0 + local[3] * at * at
    det = m00 * m11 - m01 * m01
    # exponent d^T M^-1 d over (x0, x1), and the rest of the chord over the e2 variance
    k00, k01, k11, k22 = m11 / det, -2.0 * m01 / det, m00 / det, 1.0 / m22
    if not has_tail(tail):
        arg = k00 * x0 * x0 + k01 * x0 * x1 + (k11 - k22) * x1 * x1 + k22 * dt2
        return jnp.exp(-0.5 * arg) * jax.lax.rsqrt(det * m22)
    # the e2 factor (across the sphere) as a pseudo-Voigt of sigma sigma_a: its Gaussian part
    # convolved with the bins' e2 spread as above, its Lorentzian part at the centroid
    ra2 = 1.0 if sigma_a is None else (sigma_t / sigma_a) ** 2
    u = jnp.maximum(dt2 - x1 * x1, 0.0) * ra2
    m22a = m22 if sigma_a is None else 1.0 + local[3] * at * at * ra2
    core = jnp.exp(-0.5 * (k00 * x0 * x0 + k01 * x0 * x1 + k11 * x1 * x1)) * jax.lax.rsqrt(det)
    across = (1.0 - tail) * jnp.exp(-0.5 * u / m22a) * jax.lax.rsqrt(m22a) + tail / (1.0 + u / (TAIL_HWHM * TAIL_HWHM))
    return core * across


def al_tangential_sigma(g, al_radial_width, disorder):
    """Tangential sigma of an AL peak: ``sqrt(sigma_s^2 + (|G| sigma_Phi)^2)`` (Eq. 7 as sigmas).

    Parameters
    ----------
    g : |G| of the reflections (1/A); al_radial_width : sigma_s (1/A); disorder : sigma_Phi (rad).

    Validation: Eq. 7 applied to a simulated 200_AL ring of the red domain returns the model's
    dPhi = 2.3548 sigma_Phi within 0.3 deg, closer with the Ewald factor than without
    (tests/fits/analyses/test_disorder.py::test_forward_model_cross_check).
    """
    return jnp.sqrt(al_radial_width ** 2 + (g * disorder) ** 2)


def al_peak_height(g, al_radial_width, disorder, al_lattice_constant: float, intensity: str = "integrated"):
    """Factor ``h_G`` on the height of an AL reflection of modulus ``g``, relative to 200 (unitless).

    Parameters
    ----------
    g : |G| (1/A), a number or an array (numpy or JAX).
    al_radial_width : sigma_s (1/A); disorder : sigma_Phi (rad).
    al_lattice_constant : the rock-salt lattice constant (A): |G_200| = 4 pi / a.
    intensity : "integrated" or "height" (`AL_PEAK_INTENSITIES`, ``model.al_peak_intensity``).

    Returns
    -------
    ``(sigma_t(G_200) / sigma_t(G))^2`` with ``sigma_t`` = `al_tangential_sigma` for "integrated";
    1 for "height". ``al_scale |F_G|^2 / |F_200|^2 h_G`` is the reflection's peak height, so
    ``al_scale`` stays the height of the 200 reflection.

    Raises
    ------
    ValueError
        If ``intensity`` is not one of `AL_PEAK_INTENSITIES`.

    Notes
    -----
    Each NC scatters into reflection G an integrated intensity ``|F_G|^2`` times its volume (the
    kinematic integrated intensity of a crystal, independent of its orientation and of the
    reflection's widths: Warren, "X-ray Diffraction", 1969, ch. 13; Als-Nielsen & McMorrow,
    "Elements of Modern X-ray Physics", 2nd ed. 2011, sections 5.6 and 6.3). The NCs' orientational
    spread sigma_Phi moves G over a cap of the sphere of radius |G|, of area ``~ (|G| sigma_Phi)^2``,
    and the NC size broadens it by sigma_s in every direction; the same integral over a Gaussian of
    sigmas ``(sigma_s, sigma_t, sigma_t)`` has the height ``1 / ((2 pi)^{3/2} sigma_s sigma_t^2)``.
    sigma_s is the same for every reflection (the NC's size, independent of |G|), so relative to
    200 the height falls as ``(sigma_t,200 / sigma_t)^2``: at dPhi = 8 deg and sigma_s = 0.047 1/A the
    111 arc is 1.3 times, the 220 arc 0.53 times as high as with equal heights. The "height" convention (earlier
    versions) keeps the heights at ``|F|^2`` and so gives the outer reflections too much intensity
    against the inner ones; on frames that see arcs of two shells, the fit then tilts the lattice to
    change how the Ewald sphere cuts them (docs/validation.md, "Where the tilt offsets come from").

    Validation: the numerical 3D integral of one reflection relative to 200's is ``|F|^2``'s at two
    disorders (tests/xmodel/test_al_peak_height.py); the real-space simulator's WAXS, finite
    spheres of PbS with sampled orientations, follows it (docs/validation.md).
    """
    if intensity == "height":
        return 1.0
    if intensity != "integrated":
        raise ValueError(f"al_peak_intensity {intensity!r} is unknown; use one of {list(AL_PEAK_INTENSITIES)} "
                         f"(model.al_peak_intensity).")
    g200 = 4.0 * np.pi / float(al_lattice_constant)
    st200 = al_tangential_sigma(g200, al_radial_width, disorder)
    st = al_tangential_sigma(g, al_radial_width, disorder)
    return (st200 / st) ** 2


# --------------------------------------------------------------------------- support


@dataclass(frozen=True)
class Shell:
    """One shell of reflections evaluated on a subset of points.

    ``points``: indices into the lattice's point set; ``members``: indices into the
    structure's hkl list; ``n2``: h^2 + k^2 + l^2 of the shell.
    """

    n2: int
    points: np.ndarray
    members: np.ndarray


@dataclass(frozen=True, eq=False)
class Support:
    """Where each shell of reflections is evaluated (static; see module docstring).

    ``saxs_points`` / ``al_points`` index the valid points of the `PixelSet` that carry SL
    (and the diffuse term) / AL signal; each shell's ``points`` index into those.
    """

    saxs_points: np.ndarray
    sl_shells: tuple[Shell, ...]
    al_points: np.ndarray
    al_shells: tuple[Shell, ...]

    @property
    def n_pairs(self) -> int:
        """Number of (point, reflection) Gaussians evaluated."""
        return int(sum(s.points.size * s.members.size for s in self.sl_shells + self.al_shells))


def _shells(hkl: np.ndarray) -> dict[int, np.ndarray]:
    n2 = np.sum(np.asarray(hkl) ** 2, axis=1)
    return {int(v): np.flatnonzero(n2 == v) for v in np.unique(n2)}


def _lattice_support(q_lab, qabs, order, hkl, rot, a_values, sigma_r_of_g, sigma_t_of_g, nsigma, margin_rad,
                     prune):
    """Points and members per shell for one lattice (numpy, float64).

    ``order`` sorts ``qabs``; since ``|q - G| >= ||q| - |G||``, only points with
    ``||q| - g| < nsigma * max(sigma_r, sigma_t)`` can pass, and they are found by bisection
    before the exact test. ``sigma_r_of_g`` and ``sigma_t_of_g`` give the widths at |G| (1/A),
    both non-decreasing in |G| for the radial one.
    """
    limit = nsigma ** 2
    sorted_q = qabs[order]
    shells = []
    for n2, members in _shells(hkl).items():
        gs = TWO_PI * np.sqrt(n2) / np.asarray(a_values)
        sigma_r = float(sigma_r_of_g(gs.max()))
        reach = nsigma * sigma_r
        lo, hi = np.searchsorted(sorted_q, [gs.min() - reach, gs.max() + reach])
        cand = np.sort(order[lo:hi])
        qc = qabs[cand]
        keep = np.zeros(cand.size, bool)
        for g in gs:     # at fixed |q| the tangential distance can vanish: the band is radial
            keep |= (qc - g) ** 2 / sigma_r ** 2 < limit
        pts = cand[keep]
        if pts.size == 0:
            continue
        if prune:
            # members that reach some band point, with the tangential sigma widened by the
            # orientation margin (a rotation by margin moves G by |G| margin)
            g0 = gs[len(gs) // 2]
            st = np.sqrt(sigma_t_of_g(g0) ** 2 + (g0 * margin_rad) ** 2)
            sr = sigma_r + (gs.max() - gs.min()) / 2
            g_rot = (TWO_PI / np.asarray(a_values)[len(gs) // 2]) * hkl[members] @ rot.T
            gn = g_rot / np.linalg.norm(g_rot, axis=1, keepdims=True)
            near = np.zeros((pts.size, members.size), bool)
            for start in range(0, pts.size, 200_000):
                sl = slice(start, start + 200_000)
                qa = qabs[pts[sl], None]
                cos = (q_lab[pts[sl]] @ gn.T) / np.maximum(qa, 1e-12)
                e = (qa - g0) ** 2 / sr ** 2 + 2 * g0 ** 2 * np.maximum(1 - cos, 0) / st ** 2
                near[sl] = e < limit
            used = near.any(axis=0)
            if not used.any():
                continue
            members = members[used]
            pts = pts[near[:, used].any(axis=1)]
        shells.append(Shell(n2=n2, points=pts, members=members))
    return tuple(shells)


def build_support(pixels: PixelSet, structure: Structure, params: ModelParams, *,
                  lattice_constant_range: tuple[float, float] | None = None,
                  width_factor: float = 1.0, orientation_margin_deg: float | None = 2.0,
                  nsigma: float | None = None) -> Support:
    """Static support of the pattern for ``params`` and the given ranges.

    Parameters
    ----------
    lattice_constant_range : (a_min, a_max) in A that the SL lattice constant may take while
        this support is used (default: the value in ``params``).
    width_factor : peak widths may grow up to this factor (>= 1) while the support is used.
    orientation_margin_deg : orientations may move this far (deg) from ``params``; ``None``
        keeps every member of every shell (orientation-free support).
    nsigma : cut-off in sigmas (default ``structure.band_nsigma``); 4 sigma keeps every
        neglected Gaussian below 3.4e-4 of its peak.

    Raises
    ------
    ValueError
        If ``params`` is a batch rather than the parameters of one pattern.

    Validation: the model on this support equals `dense_pattern` within 1e-3 of the brightest
    SL and AL peak while evaluating fewer than 20 % of the point-reflection pairs (binned
    detector, three domains), and within 1e-3 of the maximum on a 90 x 300 polar grid
    (tests/xmodel/test_pattern.py).
    """
    n = structure.band_nsigma if nsigma is None else nsigma
    valid = np.flatnonzero(pixels.valid)
    q_lab = pixels.q_lab[valid]
    qabs = np.linalg.norm(q_lab, axis=1)
    order = np.argsort(qabs, kind="stable")
    p = {k: float(np.asarray(v)) for k, v in params.to_dict().items() if np.asarray(v).ndim == 0}
    if any(np.asarray(v).ndim > 0 for k, v in params.to_dict().items()
           if k not in ("misorientation", "base_orientation", "relationship")):
        raise ValueError("build_support needs the parameters of one pattern, not a batch; "
                         "build it from one member of the batch and a wide enough range")
    a0 = p["lattice_constant"]
    a_range = lattice_constant_range or (a0, a0)
    a_values = np.linspace(min(a_range), max(a_range), 9 if a_range[0] != a_range[1] else 1)
    prune = orientation_margin_deg is not None
    margin = np.radians(orientation_margin_deg or 0.0)
    wf = max(1.0, float(width_factor))

    # superlattice: the SAXS points are every valid point that a SL shell reaches or where
    # the diffuse term is evaluated (|q| <= q_max_sl)
    sr = p["sl_radial_width"] * wf
    mosaic = p["sl_mosaic"] * wf
    rot_sl = np.asarray(params.sl_orientation(), np.float64)
    # the diffuse P(q) term is kept out to 2 q_max_sl, where it has decayed as q^-4
    saxs_mask = qabs <= 2.0 * structure.q_max_sl
    para = structure.sl_paracrystal * wf
    # a tail across the Ewald sphere reaches further than the Gaussian off the sphere: the members
    # are kept out to where its Lorentzian falls below the cut (the bands are radial, unchanged)
    reach_t = sl_reach(structure.sl_peak_shape, structure.sl_peak_tail, n)
    sl_all = _lattice_support(q_lab, qabs, order, structure.sl_hkl, rot_sl, a_values,
                              lambda g: sl_peak_widths(g, sr, mosaic, structure.sl_peak_shape, para)[0],
                              lambda g: sl_peak_widths(g, sr, mosaic, structure.sl_peak_shape, para)[1] * reach_t,
                              n, margin, prune)
    for s in sl_all:
        saxs_mask[s.points] = True
    saxs_points = np.flatnonzero(saxs_mask)
    local = np.full(qabs.size, -1)
    local[saxs_points] = np.arange(saxs_points.size)
    sl_shells = tuple(Shell(s.n2, local[s.points], s.members) for s in sl_all)

    # atomic lattice
    ss = p["al_radial_width"] * wf
    dis = p["disorder"] * wf
    rot_al = np.asarray(params.al_orientation(), np.float64)
    al_all = _lattice_support(q_lab, qabs, order, structure.al_hkl, rot_al, [structure.al_lattice_constant],
                              lambda g: ss, lambda g: float(np.sqrt(ss ** 2 + (g * dis) ** 2)), n, margin, prune)
    al_mask = np.zeros(qabs.size, bool)
    for s in al_all:
        al_mask[s.points] = True
    al_points = np.flatnonzero(al_mask)
    local = np.full(qabs.size, -1)
    local[al_points] = np.arange(al_points.size)
    al_shells = tuple(Shell(s.n2, local[s.points], s.members) for s in al_all)
    return Support(saxs_points=valid[saxs_points], sl_shells=sl_shells,
                   al_points=valid[al_points], al_shells=al_shells)


# --------------------------------------------------------------------------- evaluation


@dataclass(frozen=True)
class _Layout:
    """Hashable static layout (closed over by the jitted function)."""

    size: int
    sl_shells: tuple[tuple[int, int], ...]   # (n2, n_members) in order
    al_shells: tuple[tuple[int, int], ...]
    al_a: float
    nodes: int
    nsigma: float
    weighting: str
    binned: bool = False   # points are reduced bins with a q spread (`binned_shell_sum`)
    sl_shape: str = "mosaic"      # `sl_peak_widths`
    sl_paracrystal: float = 0.0   # A
    sl_tail: float = 0.0          # `across_sphere_profile`
    al_intensity: str = "integrated"  # `al_peak_height`


def sl_widths(layout: _Layout, g, p: ModelParams):
    """`sl_peak_widths` of the model's SL shape at |G| = ``g`` for parameters ``p``
    (``(sigma_r, sigma_t, height)``; also `fits.scan.window`)."""
    return sl_peak_widths(g, p.sl_radial_width, p.sl_mosaic, layout.sl_shape, layout.sl_paracrystal,
                          layout.sl_tail)


def sl_across_profile(shape: str, tail: float, g, size_sigma, sl_mosaic):
    """``(eta, sigma_a)`` of the SL profile across the Ewald sphere at |G| = ``g``: `grain_across`
    with the "grain" shape (traced with the parameters), else ``(tail, None)`` (``model.sl_peak_tail``,
    static; sigma_a None: the tangential sigma). Also `dense_pattern` and `xmodel.peaks`."""
    if shape == "grain":
        return grain_across(g, size_sigma, sl_mosaic)
    return tail, None


def sl_across(layout: _Layout, g, p: ModelParams):
    """`sl_across_profile` of the model's SL shape at |G| = ``g`` for parameters ``p`` (also
    `fits.scan.window`)."""
    return sl_across_profile(layout.sl_shape, layout.sl_tail, g, p.sl_radial_width, p.sl_mosaic)


#: the terms the model is linear in, named by their scale parameter (`ModelParams`)
TERMS = ("sl_scale", "diffuse_scale", "al_scale", "background")


def saxs_factors(layout: _Layout, arrays: dict, p: ModelParams, bragg: bool = True):
    """Form factor ``P(|q|)`` and SL Bragg factor ``B(|q|)`` at the SAXS points (None unless
    ``bragg``), and the function that places values at the SAXS points on all points times their
    weight (`_terms`; also `fits.scan.window`).

    ``P`` is tabulated on a fine ``|q|`` grid and interpolated (linear, 4096 nodes: relative
    error < 1e-5 for the default NCs); ``B`` is ``P`` for the "average" weighting, else
    `xmodel.form_factor.sl_peak_factor` on the same grid.
    """
    dtype = arrays["weight"].dtype
    grid = arrays["ff_grid"]
    ff = jnp.interp(arrays["saxs_qabs"], grid, sphere_form_factor(grid, p.radius, p.radius_sigma,
                                                                n_nodes=layout.nodes, n_sigma=layout.nsigma))
    factor = None
    if bragg:
        factor = ff if layout.weighting == "average" else jnp.interp(arrays["saxs_qabs"], grid, sl_peak_factor(
            grid, p.radius, p.radius_sigma, layout.weighting, n_nodes=layout.nodes, n_sigma=layout.nsigma))

    def place(v):
        return jnp.zeros((layout.size,), dtype).at[arrays["saxs_index"]].add(
            v, indices_are_sorted=True, unique_indices=True) * arrays["weight"]

    return ff, factor, place


def _terms(layout: _Layout, arrays: dict, params: ModelParams, parts: tuple[str, ...] = TERMS):
    """Unit-scale terms of the model, ``{name: (P,)}`` for the names in ``parts`` (`TERMS`).

    The intensity is ``sum_t scale_t * term_t`` (docs/conventions.md, "The forward model"): SL peaks times
    P(q), isotropic diffuse P(q), AL peaks and a constant background, each times the point's
    solid angle and polarization weight. Terms not asked for are not computed.
    """
    dtype = arrays["weight"].dtype
    p = jax.tree_util.tree_map(lambda x: jnp.asarray(x, dtype), params)
    w = arrays["weight"]
    out = {}
    if "background" in parts:
        out["background"] = w
    if "sl_scale" in parts or "diffuse_scale" in parts:
        ff, bragg, place = saxs_factors(layout, arrays, p, "sl_scale" in parts)
        if "diffuse_scale" in parts:
            out["diffuse_scale"] = place(ff)
        if "sl_scale" in parts:
            rot = p.sl_orientation()
            sl = jnp.zeros_like(ff)
            for i, (n2, _) in enumerate(layout.sl_shells):
                pts = arrays["sl_points"][i]
                g = float(TWO_PI * np.sqrt(n2)) / p.lattice_constant
                g_rot = (TWO_PI / p.lattice_constant) * jnp.matmul(arrays["sl_hkl"][i], rot.T, precision=EXACT)
                sr, st, height = sl_widths(layout, g, p)
                eta, sa = sl_across(layout, g, p)
                ball = sl_size_variance(layout.sl_shape, p.sl_radial_width)
                if layout.binned:
                    vals = binned_shell_sum(arrays["sl_q"][i], arrays["sl_q2"][i], arrays["sl_frame"][i],
                                            arrays["sl_spread"][i], g_rot, g, sr, st, eta, sa, ball)
                else:
                    vals = shell_sum(arrays["sl_q"][i], arrays["sl_q2"][i], g_rot, g, sr, st, eta, sa, ball)
                sl = sl.at[pts].add(bragg[pts] * (height * vals), indices_are_sorted=True, unique_indices=True)
            out["sl_scale"] = place(sl)
    if "al_scale" in parts:
        al = jnp.zeros(arrays["al_index"].shape[0], dtype)
        if layout.al_shells:
            rot_al = p.al_orientation()
            for i, (n2, _) in enumerate(layout.al_shells):
                pts = arrays["al_points"][i]
                g = float(TWO_PI * np.sqrt(n2) / layout.al_a)
                g_rot = (TWO_PI / layout.al_a) * jnp.matmul(arrays["al_hkl"][i], rot_al.T, precision=EXACT)
                st = al_tangential_sigma(g, p.al_radial_width, p.disorder)
                h = al_peak_height(g, p.al_radial_width, p.disorder, layout.al_a, layout.al_intensity)
                if layout.binned:
                    vals = binned_shell_sum(arrays["al_q"][i], arrays["al_q2"][i], arrays["al_frame"][i],
                                            arrays["al_spread"][i], g_rot, g, p.al_radial_width, st)
                else:
                    vals = shell_sum(arrays["al_q"][i], arrays["al_q2"][i], g_rot, g, p.al_radial_width, st)
                al = al.at[pts].add((arrays["al_weight"][i] * h) * vals, indices_are_sorted=True, unique_indices=True)
        out["al_scale"] = jnp.zeros((layout.size,), dtype).at[arrays["al_index"]].add(
            al, indices_are_sorted=True, unique_indices=True) * w
    return out


def _evaluate(layout: _Layout, arrays: dict, params: ModelParams):
    """``sum_t scale_t * term_t`` over `TERMS` (`_terms`): expected counts per point."""
    dtype = arrays["weight"].dtype
    t = _terms(layout, arrays, params)
    return sum(jnp.asarray(getattr(params, name), dtype) * t[name] for name in TERMS)


def _components(layout: _Layout, parts: tuple[str, ...], arrays: dict, params: ModelParams):
    t = _terms(layout, arrays, params, parts)
    return jnp.stack([t[name] for name in parts])


class PatternModel:
    """A jitted forward model on a fixed `PixelSet` and `Support`.

    Call it with `ModelParams` (or a batch under `jax.vmap`) to get the (P,) intensities in
    counts per point; `image` reshapes to the pixel set's shape. Masked points are 0. Points
    with a spread (reduced bins, `xmodel.pixels.PixelSet.spread`) get each SL and AL peak
    averaged over their pixels to second order (`binned_shell_sum`); without one (single
    pixels, simulations) the peaks are evaluated at the points (`shell_sum`).

    Examples
    --------
    >>> model = PatternModel(pixels, structure, params)          # doctest: +SKIP
    >>> img = model.image(params)                                # doctest: +SKIP
    >>> val, grad = jax.value_and_grad(lambda p: model(p).sum())(params)  # doctest: +SKIP

    Validation (tests/xmodel/test_pattern.py): equals `dense_pattern` (see `build_support`);
    `value_and_grad` agrees with central finite differences in float64 for every continuous
    parameter (rel 2e-5); `jacobian` (forward mode) equals the reverse-mode gradient to 1e-9;
    `jax.vmap` over a batch equals a loop to 1e-10; `components` weighted by the four scales
    sum to the model; masked points are 0.
    """

    def __init__(self, pixels: PixelSet, structure: Structure, params: ModelParams, *,
                 support: Support | None = None, dtype=jnp.float32, **support_options):
        self.pixels = pixels
        self.structure = structure
        self.support = support or build_support(pixels, structure, params, **support_options)
        s = self.support
        f = lambda x: jnp.asarray(x, dtype)
        i = lambda x: jnp.asarray(x, jnp.int32)
        al_n2 = np.sum(structure.al_hkl ** 2, axis=1)
        q_saxs = pixels.q_lab[s.saxs_points]
        q_al = pixels.q_lab[s.al_points]
        qmax = float(np.linalg.norm(q_saxs, axis=1).max()) if q_saxs.size else 1.0
        self.arrays = {
            "weight": f(np.where(pixels.valid, pixels.weight, 0.0)),
            "saxs_index": i(s.saxs_points),
            "al_index": i(s.al_points),
            "saxs_qabs": f(np.linalg.norm(q_saxs, axis=1)),
            "ff_grid": f(np.linspace(0.0, qmax * 1.001 + 1e-6, 4096)),
            "sl_points": [i(sh.points) for sh in s.sl_shells],
            "sl_q": [f(q_saxs[sh.points].T) for sh in s.sl_shells],
            "sl_q2": [f(np.sum(q_saxs[sh.points] ** 2, axis=1)) for sh in s.sl_shells],
            "sl_hkl": [f(structure.sl_hkl[sh.members]) for sh in s.sl_shells],
            "al_points": [i(sh.points) for sh in s.al_shells],
            "al_q": [f(q_al[sh.points].T) for sh in s.al_shells],
            "al_q2": [f(np.sum(q_al[sh.points] ** 2, axis=1)) for sh in s.al_shells],
            "al_hkl": [f(structure.al_hkl[sh.members]) for sh in s.al_shells],
            "al_weight": [f(structure.al_weight[np.flatnonzero(al_n2 == sh.n2)[0]]) for sh in s.al_shells],
        }
        if pixels.spread is not None:
            # reduced bins: each shell's points carry their chi direction and q spread
            for name, points, shells in (("sl", s.saxs_points, s.sl_shells), ("al", s.al_points, s.al_shells)):
                frame, local = bin_frame(pixels.q_lab[points], pixels.spread[points])
                self.arrays[f"{name}_frame"] = [f(frame[:, sh.points]) for sh in shells]
                self.arrays[f"{name}_spread"] = [f(local[:, sh.points]) for sh in shells]
        self.layout = _Layout(size=pixels.size,
                              sl_shells=tuple((sh.n2, sh.members.size) for sh in s.sl_shells),
                              al_shells=tuple((sh.n2, sh.members.size) for sh in s.al_shells),
                              al_a=float(structure.al_lattice_constant),
                              nodes=int(structure.form_factor_nodes),
                              nsigma=float(structure.form_factor_nsigma),
                              weighting=str(structure.sl_peak_weighting),
                              binned=pixels.spread is not None,
                              sl_shape=str(structure.sl_peak_shape),
                              sl_paracrystal=float(structure.sl_paracrystal),
                              sl_tail=float(structure.sl_peak_tail),
                              al_intensity=str(structure.al_peak_intensity))
        self._fn = jax.jit(partial(_evaluate, self.layout))

    def __call__(self, params: ModelParams) -> jax.Array:
        return self._fn(self.arrays, params)

    @property
    def evaluate(self):
        """The pure function ``(arrays, params) -> intensities`` behind the model (not jitted).

        Compose it inside your own `jax.jit` with ``self.arrays`` passed as an argument, so
        that the model's constants are not baked into the compiled program.
        """
        return partial(_evaluate, self.layout)

    def components(self, parts: tuple[str, ...] = TERMS):
        """The pure function ``(arrays, params) -> (len(parts), P)`` of unit-scale terms (not jitted).

        The model is linear in ``sl_scale``, ``diffuse_scale``, ``al_scale`` and ``background``
        (`TERMS`); term ``t`` is the intensity with scale ``t`` = 1 and the others 0, computed
        without the terms not asked for (an AL term alone skips the SL shells).

        Raises
        ------
        ValueError
            If ``parts`` names anything but `TERMS`.
        """
        parts = tuple(parts)
        bad = [t for t in parts if t not in TERMS]
        if bad or not parts:
            raise ValueError(f"components: unknown or no terms {bad or parts!r}; valid are {TERMS}.")
        return partial(_components, self.layout, parts)

    def image(self, params: ModelParams) -> jax.Array:
        """Intensities reshaped to the pixel set's shape (counts; 0 where masked)."""
        return self(params).reshape(self.pixels.shape)

    def compose(self, fn):
        """Jitted ``(params, *args) -> fn(intensities, params, *args)`` (e.g. a loss).

        The model's constant arrays are passed as jit arguments, not baked into the compiled
        program, so composing is as cheap as calling the model.
        """
        layout = self.layout
        inner = jax.jit(lambda arrays, params, *args: fn(_evaluate(layout, arrays, params), params, *args))
        return lambda params, *args: inner(self.arrays, params, *args)

    def value_and_grad(self, fn):
        """Jitted ``(params, *args) -> (value, d value / d params)`` of ``fn(intensities, params, *args)``."""
        layout = self.layout

        def scalar(params, arrays, *args):
            return fn(_evaluate(layout, arrays, params), params, *args)

        inner = jax.jit(jax.value_and_grad(scalar))
        return lambda params, *args: inner(params, self.arrays, *args)

    def jacobian(self, rows: np.ndarray | None = None):
        """Jitted ``params -> d intensities / d params`` (forward mode, a `ModelParams` of
        arrays with a leading axis over points), optionally only at the flat indices ``rows``."""
        layout = self.layout
        idx = None if rows is None else jnp.asarray(rows)

        def f(params, arrays):
            out = _evaluate(layout, arrays, params)
            return out if idx is None else out[idx]

        inner = jax.jit(jax.jacfwd(f))
        return lambda params: inner(params, self.arrays)


def dense_pattern(pixels: PixelSet, structure: Structure, params: ModelParams, *,
                  dtype=jnp.float32, chunk: int = 262_144) -> np.ndarray:
    """Reference evaluation: every valid point against every reflection, no support.

    Written independently of `PatternModel` (explicit ``|q - G|`` and projections) so that
    tests can compare the two. Evaluated in chunks of points to bound memory.

    Validation: it is the reference, not the checked side. It shares `gaussian_peak`,
    `al_tangential_sigma` and `sphere_form_factor` with `PatternModel`, so the comparison
    checks the support, the shell grouping and the ``c = q . G_hat`` algebra, not the peak
    formula (for that see `gaussian_peak`).

    Raises
    ------
    ValueError
        If ``pixels`` carries a bin spread (`PixelSet.spread`): the reference evaluates peaks
        at the points only.
    """
    if pixels.spread is not None:
        raise ValueError("dense_pattern evaluates single points; this PixelSet carries bin spreads "
                         "(PixelSet.spread); use PatternModel, or a PixelSet without spread")
    p = params.astype(dtype)
    sl_g = (TWO_PI / p.lattice_constant) * jnp.matmul(jnp.asarray(structure.sl_hkl, dtype), p.sl_orientation().T,
                                                      precision=EXACT)
    al_g = (TWO_PI / structure.al_lattice_constant) * jnp.matmul(jnp.asarray(structure.al_hkl, dtype),
                                                                 p.al_orientation().T, precision=EXACT)
    al_w = jnp.asarray(structure.al_weight, dtype)
    nodes = structure.form_factor_nodes
    nsigma = float(structure.form_factor_nsigma)

    @jax.jit
    def block(q):
        qa = jnp.linalg.norm(q, axis=1)

        def peaks(G, sr, st, tail=0.0, sa=None, size_var=None):
            gn = jnp.linalg.norm(G, axis=1)
            st, sa = ball_sigmas(qa[:, None], gn[None, :], st, sa, size_var)
            # radial |q| - |G| and chord |G| |q_hat - G_hat| (module docstring)
            dr = qa[:, None] - gn[None, :]
            u = q / jnp.maximum(qa, 1e-12)[:, None]
            chord = u[:, None, :] * gn[None, :, None] - G[None, :, :]
            dt2 = jnp.sum(chord * chord, axis=2)
            # the chord's part on e1 = e_beam x q_hat, explicitly (`sl_peak`)
            e1 = jnp.stack([-u[:, 1], u[:, 0], jnp.zeros_like(qa)], axis=1)
            e1 = e1 / jnp.maximum(jnp.linalg.norm(e1, axis=1), 1e-12)[:, None]
            t1 = jnp.sum(chord * e1[:, None, :], axis=2) ** 2
            return sl_peak(dr * dr, dt2, t1, sr, st, tail, sa)

        ff = sphere_form_factor(qa, p.radius, p.radius_sigma, n_nodes=nodes, n_sigma=nsigma)
        bragg = sl_peak_factor(qa, p.radius, p.radius_sigma, structure.sl_peak_weighting, n_nodes=nodes,
                               n_sigma=nsigma)
        gn_sl = jnp.linalg.norm(sl_g, axis=1)
        sr, st, height = sl_peak_widths(gn_sl, p.sl_radial_width, p.sl_mosaic, structure.sl_peak_shape,
                                        structure.sl_paracrystal, structure.sl_peak_tail)
        eta, sa = sl_across_profile(structure.sl_peak_shape, structure.sl_peak_tail, gn_sl, p.sl_radial_width,
                                    p.sl_mosaic)
        sl = jnp.sum(height * peaks(sl_g, sr, st, eta, sa, sl_size_variance(structure.sl_peak_shape,
                                                                               p.sl_radial_width)), axis=1)
        gn_al = jnp.linalg.norm(al_g, axis=1)
        al = peaks(al_g, p.al_radial_width, al_tangential_sigma(gn_al, p.al_radial_width, p.disorder))
        al_h = al_peak_height(gn_al, p.al_radial_width, p.disorder, structure.al_lattice_constant,
                              structure.al_peak_intensity)
        return p.background + p.diffuse_scale * ff + p.sl_scale * bragg * sl + p.al_scale * jnp.matmul(al, al_w * al_h, precision=EXACT)

    out = np.zeros(pixels.size, np.dtype(dtype))
    idx = np.flatnonzero(pixels.valid)
    q = pixels.q_lab[idx]
    for start in range(0, idx.size, chunk):
        qq = q[start:start + chunk]
        n = qq.shape[0]
        if n < chunk and idx.size > chunk:
            qq = np.concatenate([qq, np.zeros((chunk - n, 3))])   # keep one compiled shape
        out[idx[start:start + n]] = np.asarray(block(jnp.asarray(qq, dtype)))[:n]
    return out * np.where(pixels.valid, pixels.weight, 0.0)
