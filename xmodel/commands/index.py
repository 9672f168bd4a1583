"""``xmodel index``: fcc indexing of superlattice peaks and <a> per domain (Table S1)."""
from __future__ import annotations

import json

from xmodel.commands._common import add_command, add_json_arg


def _floats(text: str, name: str) -> list[float]:
    try:
        return [float(x) for x in text.replace(",", " ").split()]
    except ValueError:
        raise ValueError(f"{name} must be numbers separated by commas or spaces, got {text!r}.") from None


def run(args) -> int:
    import numpy as np

    from fits.analyses.disorder import domain_frames
    from fits.analyses.indexing import domain_lattice_constant, format_assignments, index_peaks, radial_peaks

    zone = None
    if args.zone is not None:
        zone = [int(round(x)) for x in _floats(args.zone, "--zone")]
    if args.q:
        q = np.asarray(args.q, float)
    elif args.results:
        import h5py
        with h5py.File(args.results, "r") as f:
            if "/entry/reduction/radial" not in f:
                raise ValueError(f"{args.results!r} has no /entry/reduction/radial; pass a reduced scan "
                                 f"(`xmodel reduce`) or give peak positions with --q.")
            qs = f["/entry/reduction/q"][()]
            radial = f["/entry/reduction/radial"]
            frames = domain_frames(args.labels, args.domain, radial.shape[0])
            block = radial[np.sort(frames)]
            with np.errstate(invalid="ignore"):        # all-NaN q bins (no pixel) stay NaN
                n = np.isfinite(block).sum(axis=0)
                profile = np.where(n > 0, np.nansum(block, axis=0) / np.maximum(n, 1), np.nan)
        q = radial_peaks(qs, profile)
        if q.size == 0:
            raise ValueError(f"no SAXS peaks found in the averaged radial profile of {args.results!r}; "
                             f"check the domain and the reduction's q range.")
    else:
        raise ValueError("give peak positions with --q Q1 Q2 ... (1/A) or a reduced scan RESULTS.")
    result = index_peaks(q, args.chi, zone=zone, a_nominal=args.a_nominal, tolerance=args.tolerance)
    if args.json:
        mean, std, n = domain_lattice_constant(result)
        print(json.dumps({"peaks": [p.as_dict() for p in result], "mean_lattice_constant": mean,
                          "std_lattice_constant": std, "n_indexed": n, "a_nominal": args.a_nominal,
                          "zone": zone}, indent=1))
    else:
        print(format_assignments(result, args.a_nominal))
    return 0


def add_parser(sub) -> None:
    p = add_command(sub, "index", "fcc indexing of SL peaks and <a> per domain (Table S1)")
    p.add_argument("results", nargs="?", default=None, metavar="RESULTS",
                   help="reduced scan (HDF5): index the peaks of its averaged radial profile")
    p.add_argument("--q", nargs="+", type=float, help="peak positions (1/A), instead of RESULTS")
    p.add_argument("--chi", nargs="+", type=float, help="peak azimuths (deg), one per --q (nan = unknown)")
    p.add_argument("--zone", help="SL zone axis along the beam, e.g. 1,1,0")
    p.add_argument("--a-nominal", type=float, default=150.0, help="nominal lattice constant (A)")
    p.add_argument("--tolerance", type=float, default=0.04,
                   help="largest relative deviation of the implied a from the nominal")
    p.add_argument("--domain", help="average only this domain's frames (name or integer label)")
    p.add_argument("--labels", metavar="FILE",
                   help="HDF5 with per-frame labels (results of `xmodel classify`, or a twin truth.h5)")
    add_json_arg(p, "the assignments and <a>")
    p.set_defaults(func=run)
