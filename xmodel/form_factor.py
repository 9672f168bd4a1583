"""Form factor of (polydisperse) homogeneous spheres, pure JAX and differentiable.

Contract
--------
Functions are pure, ``jax.jit``/``jax.vmap``-able and differentiable in ``q``, ``radius`` and
``sigma``; the number of quadrature nodes is static. ``q`` in 1/Angstrom, radii and their
standard deviation in Angstrom. The result's dtype follows the inputs (float32 in, float32
out; Python floats are weakly typed and do not promote).

The polydisperse average ``P(q) = <V^2 Phi(qR)^2> / <V^2>`` is the volume-squared-weighted
average used by sasmodels' ``sphere`` model with a Gaussian radius distribution truncated at
``+-n_sigma`` standard deviations and at ``R > 0`` (sasmodels' defaults: 3 sigma), so
``P(0) = 1``. It multiplies the superlattice intensity (DESIGN.md, "Form factor").
"""

from __future__ import annotations

import math
import operator

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["sphere_amplitude", "sphere_form_factor"]

#: Below this ``|x| = |q R|`` the amplitude is evaluated by its Taylor series.
_SERIES_X_MAX = 1.0

#: Taylor coefficients of ``3 (sin x - x cos x) / x^3`` in powers of ``x^2``:
#: ``c_k = 3 (-1)^(k+1) 2k / (2k+1)!`` for k = 1..7. The first omitted term is
#: 1.3e-13 x^14, so at ``|x| = 1`` the series is exact to float64 rounding, and the closed
#: form's cancellation ``~ eps / x^2`` is harmless above ``|x| = 1`` even in float32.
_SERIES = (
    1.0,
    -1.0 / 10.0,
    1.0 / 280.0,
    -1.0 / 15120.0,
    1.0 / 1330560.0,
    -1.0 / 172972800.0,
    1.0 / 31135104000.0,
)


def sphere_amplitude(q, radius):
    """Normalised scattering amplitude of a homogeneous sphere, ``Phi(qR)``.

    Parameters
    ----------
    q
        Scattering vector magnitude, 1/Angstrom (array, broadcasts with ``radius``).
    radius
        Sphere radius, Angstrom.

    Returns
    -------
    jax.Array
        ``Phi(x) = 3 (sin x - x cos x) / x^3`` with ``x = q R``, dimensionless, ``Phi(0) = 1``;
        broadcast shape of the inputs, dtype of the inputs.

    Notes
    -----
    Rayleigh (1911), the sphere amplitude; Guinier & Fournet, Small-Angle Scattering of
    X-rays (1955); the same function as sasmodels' ``sas_3j1x_x``. For ``|x| < 1`` a 7-term
    Taylor series in ``x^2`` is used, and the closed form sees a safe ``x`` there
    (``jnp.where`` on both sides), so values and all derivatives are finite at ``q = 0``.

    Validation
    ----------
    Against the closed form in float64 at moderate x, its series at x -> 0 and finite
    differences of its gradient at q = 0 (``tests/xmodel/test_form_factor.py``).
    """
    x = jnp.asarray(q) * jnp.asarray(radius)
    small = jnp.abs(x) < _SERIES_X_MAX
    x_safe = jnp.where(small, _SERIES_X_MAX, x)
    closed = 3.0 * (jnp.sin(x_safe) - x_safe * jnp.cos(x_safe)) / x_safe**3
    x2 = jnp.where(small, x * x, 0.0)
    series = jnp.zeros_like(x2) + _SERIES[-1]
    for c in _SERIES[-2::-1]:
        series = series * x2 + c
    return jnp.where(small, series, closed)


def _truncated_gauss_nodes(n_nodes: int, n_sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """Gauss-Legendre nodes ``z`` on ``[-n_sigma, n_sigma]`` and weights times ``exp(-z^2/2)``."""
    x, w = np.polynomial.legendre.leggauss(n_nodes)
    z = n_sigma * x
    return z, w * np.exp(-0.5 * z * z)


def sphere_form_factor(q, radius, sigma, n_nodes: int = 40, n_sigma: float = 3.0):
    """Form factor ``P(q)`` of spheres with a Gaussian radius distribution.

    Parameters
    ----------
    q
        Scattering vector magnitude ``|q|``, 1/Angstrom; any shape.
    radius
        Mean sphere radius, Angstrom (> 0; the NC default is 34 A); scalar or broadcastable
        with ``q``.
    sigma
        Standard deviation of the radius, Angstrom (>= 0; the NC default is 2.5 A); scalar
        or broadcastable with ``q``. ``sigma = 0`` gives the monodisperse ``Phi(q R)^2``
        and is differentiable there.
    n_nodes
        Number of quadrature nodes (static Python int, >= 1).
    n_sigma
        Truncation of the Gaussian, in standard deviations (static, > 0; sasmodels' default
        3).

    Returns
    -------
    jax.Array
        ``P(q)``, dimensionless, ``P(0) = 1``; broadcast shape of the inputs, dtype of the
        inputs.

    Raises
    ------
    ValueError
        If ``n_nodes`` is not a positive int or ``n_sigma`` not a positive number.

    Notes
    -----
    ``P(q) = sum_i w_i V(R_i)^2 Phi(q R_i)^2 / sum_i w_i V(R_i)^2`` with ``V ~ R^3``,
    ``R_i = radius + sigma z_i``, ``z_i`` the Gauss-Legendre nodes on
    ``[-n_sigma, n_sigma]``, ``w_i`` their weights times ``exp(-z_i^2 / 2)``, and nodes with
    ``R_i <= 0`` dropped (their ``R^6`` weight vanishes continuously, so the cut is smooth).
    This is sasmodels' volume-squared weighting and truncated Gaussian
    (``sasmodels/models/sphere.py``, ``sasmodels/weights.py``; Doucet et al., SasView,
    doi:10.5281/zenodo.438138) with the uniform sum replaced by Gauss-Legendre.

    Why Gauss-Legendre on the truncated Gaussian rather than Gauss-Hermite on the full one:
    it reproduces what sasmodels/SasView users fit, keeps ``R > 0`` for ``sigma <
    radius / 3``, and has twice the node density of Gauss-Hermite near the centre, where
    ``Phi^2`` oscillates with period ``pi / q`` in R. With 40 nodes, against a 20001-point
    reference of the same truncated average, the relative error is < 1e-5 for
    (R, sigma) = (34, 2.5) A at all q <= 3 1/A and for (65, 5) A at q <= 2 1/A; 40-node
    Gauss-Hermite fails (> 1e-3) beyond q = 1.9 and 0.9 1/A. The truncated and the full
    Gaussian differ by up to about 2 % in P(q) (7 % polydispersity). Raise ``n_nodes`` for
    ``q sigma`` beyond about 10.

    Memory: the average broadcasts a trailing axis of ``n_nodes``; for a full detector,
    evaluate on a 1D ``|q|`` grid and interpolate.

    Validation
    ----------
    sasmodels ``sphere`` with ``radius_pd_type="gaussian"``, ``radius_pd_nsigma=3`` and a
    dense ``radius_pd_n``: within 0.5 % where P > 1e-4, 0.005 <= q <= 0.5 1/A, for
    (34, 2.5) and (65, 5) A; gradients in radius and sigma against central differences
    (``tests/xmodel/test_form_factor.py``).
    """
    try:
        n_nodes = operator.index(n_nodes)
    except TypeError:
        raise ValueError(
            f"n_nodes must be a positive Python int (static quadrature size, e.g. 40), got {n_nodes!r}."
        ) from None
    if n_nodes < 1:
        raise ValueError(f"n_nodes must be a positive Python int (e.g. 40), got {n_nodes!r}.")
    if not (isinstance(n_sigma, (int, float)) and math.isfinite(n_sigma) and n_sigma > 0):
        raise ValueError(
            f"n_sigma must be a positive Python number (Gaussian truncation in standard "
            f"deviations, e.g. 3.0), got {n_sigma!r}."
        )
    dtype = jnp.result_type(q, radius, sigma)
    if not jnp.issubdtype(dtype, jnp.floating):
        dtype = jnp.result_type(dtype, 1.0)
    if not isinstance(radius, jax.core.Tracer) and np.any(np.asarray(radius) <= 0):
        raise ValueError(f"sphere radius must be > 0 Angstrom, got {np.asarray(radius)!r}; P(q) of a "
                         "non-positive radius is undefined (0/0).")
    q = jnp.asarray(q, dtype)
    radius = jnp.asarray(radius, dtype)
    sigma = jnp.asarray(sigma, dtype)
    z_np, w_np = _truncated_gauss_nodes(n_nodes, float(n_sigma))
    z = jnp.asarray(z_np, dtype)
    w = jnp.asarray(w_np, dtype)

    r = radius[..., None] + sigma[..., None] * z  # (..., n_nodes), Angstrom
    positive = r > 0
    r_safe = jnp.where(positive, r, 1.0)
    weight = jnp.where(positive, w * r_safe**6, 0.0)  # w_i V(R_i)^2 up to (4 pi / 3)^2
    amp = sphere_amplitude(q[..., None], r_safe)
    num = jnp.sum(weight * amp * amp, axis=-1)
    den = jnp.sum(weight, axis=-1)
    return num / den
