"""``xmodel disorder``: NC orientational disorder dPhi from 200_AL peak widths (Eq. 7, Table S2)."""
from __future__ import annotations

import json

from xmodel.commands._common import add_command, add_json_arg


def run(args) -> int:
    from fits.analyses.disorder import average_polar, domain_disorder, domain_frames, orientational_disorder

    if args.results is None:
        if args.fwhm_az is None or args.fwhm_rad is None:
            raise ValueError("give a reduced scan RESULTS, or both --fwhm-az and --fwhm-rad (degrees).")
        res = orientational_disorder(args.fwhm_az, args.fwhm_rad, args.fwhm_az_err, args.fwhm_rad_err)
        widths = None
    else:
        import h5py
        with h5py.File(args.results, "r") as f:
            if "/entry/reduction/polar" not in f:
                raise ValueError(f"{args.results!r} has no /entry/reduction/polar; pass a reduced scan.")
            n = f["/entry/reduction/polar"].shape[0]
            wavelength = args.wavelength
            poni = f["/entry/reduction"].attrs.get("poni", "")
        if wavelength is None and poni:
            for line in str(poni).splitlines():
                if line.strip().lower().startswith("wavelength"):
                    wavelength = float(line.split(":", 1)[1]) * 1e10
        frames = domain_frames(args.labels, args.domain, n)
        image, q, chi = average_polar(args.results, frames)
        res, widths = domain_disorder(image, q, chi, wavelength_A=wavelength,
                                      ewald_correction=not args.no_ewald_correction)
    out = res.as_dict()
    if widths is not None:
        out.update({"q_center": widths.q_center, "chi_center_deg": widths.chi_center_deg,
                    "fwhm_chi_raw_deg": widths.fwhm_chi_deg, "fwhm_q": widths.fwhm_q,
                    "domain": args.domain})
    if args.json:
        print(json.dumps(out, indent=1))
    else:
        if widths is not None:
            print(f"200_AL peak at q = {widths.q_center:.4f} 1/A, chi = {widths.chi_center_deg:.1f} deg; "
                  f"raw chi FWHM {widths.fwhm_chi_deg:.2f} deg")
        print(f"azimuthal FWHM {res.fwhm_az_deg:.2f} +- {res.fwhm_az_err_deg:.2f} deg, radial FWHM "
              f"{res.fwhm_rad_deg:.2f} +- {res.fwhm_rad_err_deg:.2f} deg -> dPhi = {res.dphi_deg:.2f} +- "
              f"{res.dphi_err_deg:.2f} deg (Eq. 7)")
    return 0


def add_parser(sub) -> None:
    p = add_command(sub, "disorder", "NC orientational disorder from 200_AL widths (Eq. 7, Table S2)")
    p.add_argument("results", nargs="?", default=None, metavar="RESULTS", help="reduced scan (HDF5)")
    p.add_argument("--domain", help="average only this domain's frames (name or integer label)")
    p.add_argument("--labels", metavar="FILE",
                   help="HDF5 with per-frame labels (results of `xmodel classify`, or a twin truth.h5)")
    p.add_argument("--fwhm-az", type=float, help="azimuthal FWHM (deg), instead of RESULTS")
    p.add_argument("--fwhm-rad", type=float, help="radial FWHM as an angle (deg), instead of RESULTS")
    p.add_argument("--fwhm-az-err", type=float, default=0.0, help="error of --fwhm-az (deg)")
    p.add_argument("--fwhm-rad-err", type=float, default=0.0, help="error of --fwhm-rad (deg)")
    p.add_argument("--wavelength", type=float, default=None,
                   help="wavelength (A) for the Ewald cos(theta) correction (default: from the PONI)")
    p.add_argument("--no-ewald-correction", action="store_true",
                   help="use the raw chi FWHM (no cos(theta) factor)")
    add_json_arg(p, "the widths and dPhi")
    p.set_defaults(func=run)
