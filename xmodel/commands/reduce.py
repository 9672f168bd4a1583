"""``xmodel reduce``: every frame of a scan to a polar image and a radial profile."""
from __future__ import annotations

from xmodel.commands._common import add_command
from xmodel.commands._scan_args import (
    add_run_arguments,
    add_scan_arguments,
    check_run_arguments,
    follow_options,
    resolve_scan_arguments,
)


def run(args) -> int:
    from xmodel.io import open_scan
    from xmodel.reduction import check_arguments, default_bins, reduce_scan

    check_arguments(q_bins=args.q_bins, chi_bins=args.chi_bins, batch_size=args.batch_size, workers=args.workers,
                    hot_pixels=args.hot_pixels)
    check_run_arguments(args)
    follow = follow_options(args)
    if follow is not None:                 # waits for the master and the first frame
        from xmodel.follow import open_live_scan

        opened = open_live_scan(args.master, follow, poni=args.poni, mask=args.mask)
    else:
        opened = open_scan(args.master, poni=args.poni, mask=args.mask)
    with opened as scan:
        bins = default_bins(scan.geometry, scan.mask, n_q=args.q_bins, n_chi=args.chi_bins,
                            q_range=tuple(args.q_range) if args.q_range else None,
                            chi_range=tuple(args.chi_range) if args.chi_range else None,
                            q_spacing=args.q_spacing)
        n_frames = scan.n_frames
    given = resolve_scan_arguments(args, n_frames)
    out = reduce_scan(args.master, args.out, poni=args.poni, mask=args.mask, bins=bins,
                      batch_size=args.batch_size, workers=args.workers, progress=args.quiet_level == 0,
                      positions_um=given.positions_um, monitor=given.monitor, hot_pixels=args.hot_pixels,
                      positions_source=given.source, scheduler=args.scheduler, tile=args.tile, follow=follow)
    print(f"wrote {out}")
    return 0


def add_parser(sub) -> None:
    p = add_command(sub, "reduce", "reduce a scan to polar images and radial profiles (resumable)")
    p.add_argument("master", help="Eiger <name>_master.h5")
    p.add_argument("--out", required=True, help="results HDF5 (an unfinished run there is resumed)")
    p.add_argument("--poni", help="pyFAI .poni geometry (default: the NeXus metadata of the master)")
    p.add_argument("--mask", help="mask file (npy, h5, edf, tiff; nonzero = masked)")
    p.add_argument("--q-bins", type=int, default=500, help="number of q bins (default 500)")
    p.add_argument("--chi-bins", type=int, default=360, help="number of chi bins (default 360)")
    p.add_argument("--q-range", type=float, nargs=2, metavar=("LO", "HI"), help="q range in 1/A")
    p.add_argument("--chi-range", type=float, nargs=2, metavar=("LO", "HI"), help="chi range in degrees")
    p.add_argument("--q-spacing", choices=("log", "linear"), default="log",
                   help="log (default: constant dq/q, resolves SAXS and WAXS peaks alike) or linear (pyFAI's)")
    p.add_argument("--hot-pixels", type=int, default=0, metavar="N",
                   help="mask pixels that are high in most of N frames spread over the scan (a median test); "
                        "default 0: off")
    p.add_argument("--batch-size", type=int, default=16, help="frames per sparse product (default 16)")
    p.add_argument("--workers", type=int, default=2, help="threads (1 or 2; default 2)")
    add_scan_arguments(p)
    add_run_arguments(p)
    p.set_defaults(func=run)
