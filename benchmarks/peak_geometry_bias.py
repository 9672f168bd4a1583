"""Lattice-constant bias of the model's cap-shaped SL peak fitted to a finite grain's ball-shaped one.

A finite grain broadens a reflection G into a ball, ``exp(-|q - G|^2 / 2 w^2)`` with ``w = sqrt(5/2)
/ R`` (Guinier) for a grain of radius R. The model's SL peak is written in ``|q| - |G|`` and the
chord ``|G| |q_hat - G_hat|`` (`xmodel.pattern.sl_peak`), a cap on the sphere ``|q| = |G|``, and
``|q - G|^2 = (|q| - |G|)^2 + (|q| / |G|) chord^2``. This script fits the cap (position, radial
and tangential widths, height; Poisson weights, no form factor) to the ball on a polar patch
around one spot, for a spot centred on the Ewald sphere and for spots whose centre lies ``h`` off
it, and prints the relative error of the lattice constant ``|G_true| / |G_fit| - 1``; a second
column puts the factor ``|q| / |G|`` on the cap's chord, in the detector's surface and across the
sphere (docs/validation.md, "Where the lattice-constant bias comes from").

A second table gives the bias of a fit that holds the radial width at the config's ``s`` while
the grain's spots have ``w``: a Gaussian spot of radial sigma ``s`` times the Bragg factor ``B``
has its centroid at ``s^2 d ln B / dq`` from G, so the shell moves by ``(w^2 - s^2) d ln B / dq``
(``B`` = `xmodel.form_factor.sphere_form_factor`, NC radius 34 +- 2.5 A, converged, 6 sigma).

    python benchmarks/peak_geometry_bias.py --grain-diameter 1100 1800

Seconds on one core.
"""
from __future__ import annotations

import argparse

import numpy as np
from scipy.optimize import least_squares

#: SL shells of the paper's lattice (a = 150 A): 111, 200, 220
SHELLS = {"111": 0.0725, "200": 0.0838, "220": 0.1185}


def fitted_bias(g: float, w: float, h: float, chord_factor: bool) -> float:
    """Relative lattice-constant error (%) of the cap fitted to the ball of width ``w`` (1/A)
    around a reflection ``|G| = g`` whose centre lies ``h`` (1/A) off the detector's sphere."""
    qq = np.linspace(g - 7 * w, g + 7 * w, 141)
    ang = np.linspace(-7 * w / g, 7 * w / g, 141)
    q, a = np.meshgrid(qq, ang, indexing="ij")
    g_in = np.sqrt(g * g - h * h)              # the centre's component in the detector's surface
    data = 1e6 * np.exp(-0.5 * (q * q + g_in * g_in - 2 * q * g_in * np.cos(a) + h * h) / w ** 2)

    def cap(p):
        gf, log_r, log_t, log_h = p
        # the chord in the detector's surface and across the sphere (the centre's offset h)
        chord2 = gf * gf * 2.0 * (1.0 - np.cos(a)) + h * h
        f = q / gf if chord_factor else 1.0
        return np.exp(log_h - 0.5 * (q - gf) ** 2 / (w * np.exp(log_r)) ** 2
                      - 0.5 * f * chord2 / (w * np.exp(log_t)) ** 2)

    fit = least_squares(lambda p: ((cap(p) - data) / np.sqrt(cap(p) + 1.0)).ravel(),
                        [g, 0.0, 0.0, np.log(data.max())], x_scale=[w, 0.1, 0.1, 0.1])
    return 100.0 * (g / fit.x[0] - 1.0)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--grain-diameter", type=float, nargs="+", default=[1100.0, 1800.0],
                    help="grain diameters (A)")
    ap.add_argument("--offsets", type=float, nargs="+", default=[0.0, 1.0, 2.0],
                    help="spot centres' distances from the Ewald sphere, in ball widths w")
    ap.add_argument("--held-width", type=float, default=0.0015,
                    help="radial sigma the fit holds (1/A; superlattice.radial_width of the configs)")
    args = ap.parse_args(argv)
    print("| grain diameter (A) | shell | h / w | a error, cap (%) | a error, cap with |q|/|G| (%) |")
    print("|---|---|---|---|---|")
    for d in args.grain_diameter:
        w = np.sqrt(2.5) / (0.5 * d)
        for name, g in SHELLS.items():
            for k in args.offsets:
                print(f"| {d:.0f} | {name} | {k:g} | {fitted_bias(g, w, k * w, False):+.3f} | "
                      f"{fitted_bias(g, w, k * w, True):+.3f} |")
    from xmodel.form_factor import sphere_form_factor

    print("\n| grain diameter (A) | shell | d ln B / dq (A) | a error, radial width held at "
          f"{args.held_width:g} 1/A (%) |")
    print("|---|---|---|---|")
    for d in args.grain_diameter:
        w = np.sqrt(2.5) / (0.5 * d)
        for name, g in SHELLS.items():
            h = 1e-5
            b = np.log(np.asarray(sphere_form_factor(np.array([g - h, g + h]), 34.0, 2.5, n_nodes=80, n_sigma=6.0),
                                  float))
            slope = (b[1] - b[0]) / (2 * h)
            print(f"| {d:.0f} | {name} | {slope:.1f} | {-100.0 * (w * w - args.held_width ** 2) * slope / g:+.3f} |")


if __name__ == "__main__":
    main()
