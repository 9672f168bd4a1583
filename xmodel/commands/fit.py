"""``xmodel fit``: fit every frame of a scan (search + refinement) into ``/entry/fits``."""
from __future__ import annotations

from pathlib import Path


def run(args) -> int:
    import h5py

    from fits.scan_fit import FitSettings, fit_scan
    from xmodel.config import load_config

    src = Path(args.input)
    if not src.exists():
        raise FileNotFoundError(f"{src} does not exist; pass a Dectris <name>_master.h5 or a results "
                                f"file with /entry/reduction.")
    cfg = load_config(args.configs, args.overrides)
    with h5py.File(src, "r") as f:
        reduced = "entry/reduction/polar" in f
    if not reduced:
        from xmodel.reduction import reduce_scan
        reduced_path = Path(args.out).with_name(Path(args.out).stem + "_reduced.h5")
        src = reduce_scan(src, reduced_path, q_bins=args.q_bins, chi_bins=args.chi_bins)
    settings = FitSettings(step_deg=args.step_deg, batch=args.batch, max_iter=args.max_iter,
                           cache_dir=args.cache_dir)
    fit_scan(src, cfg, args.out, settings, progress=not args.quiet)
    print(f"wrote {args.out}")
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("fit", help="fit every frame of a scan (orientation, a, tilt, disorder, configuration)")
    p.add_argument("input", metavar="MASTER_OR_RESULTS", help="Dectris master file or results file with /entry/reduction")
    p.add_argument("--config", dest="configs", action="append", required=True, metavar="TOML",
                   help="experiment and sample TOML files, merged in order (repeat the option)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="TABLE.KEY=VALUE")
    p.add_argument("--out", required=True, help="results HDF5 file (/entry/fits); a killed run resumes")
    p.add_argument("--step-deg", type=float, default=1.5, help="template zone-axis spacing (deg)")
    p.add_argument("--batch", type=int, default=16, help="frames per batch (one checkpoint each)")
    p.add_argument("--max-iter", type=int, default=30, help="least-squares iterations per frame")
    p.add_argument("--q-bins", type=int, default=500, help="log-spaced q bins when reducing a master file")
    p.add_argument("--chi-bins", type=int, default=360, help="chi bins when reducing a master file")
    p.add_argument("--cache-dir", default=None, help="folder for the template bank cache")
    p.add_argument("--quiet", action="store_true", help="no progress line")
    p.set_defaults(func=run)
