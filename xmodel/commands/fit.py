"""``xmodel fit``: fit every frame of a scan (search + refinement) into ``/entry/fits``."""
from __future__ import annotations

from pathlib import Path

from fits.scan.settings import FIT_CLI_KEYS, add_cli_options
from xmodel.commands._common import (
    add_command,
    add_scan_config_args,
    scan_configs,
    wrote,
)
from xmodel.commands._scan_args import (
    add_run_arguments,
    add_scan_arguments,
    check_run_arguments,
    follow_options,
    resolve_scan_arguments,
)

#: bins of the reduction of a master file: an Eiger 4M spans about 2000 pixels radially, so more
#: q bins are mostly empty; 3600 chi bins are 0.1 deg
MAX_Q_BINS, MAX_CHI_BINS = 10000, 3600


def reduced_path(out: str | Path) -> Path:
    """Where ``xmodel fit MASTER --out OUT`` writes the reduction: ``OUT_reduced.h5`` beside it."""
    out = Path(out)
    return out.with_name(out.stem + "_reduced.h5")


def run(args) -> int:
    from fits.analyses.arguments import positive_int
    from fits.scan.driver import fit_scan
    from fits.scan.settings import apply_cli, settings_from_config
    from xmodel.config import load_config
    from xmodel.outputs import prepare_file
    from xmodel.reduced import is_reduced

    src = Path(args.input)
    check_run_arguments(args)
    if args.follow:
        return _run_live(args, src)
    if not src.exists():
        raise FileNotFoundError(f"{src} does not exist; pass a Dectris <name>_master.h5 or a results "
                                f"file with /entry/reduction.")
    if src.is_dir():
        raise ValueError(f"{src} is a folder; pass a Dectris <name>_master.h5 or a results file with "
                         f"/entry/reduction.")
    q_bins = positive_int(args.q_bins, "q_bins", "--q-bins", maximum=MAX_Q_BINS, example="500")
    chi_bins = positive_int(args.chi_bins, "chi_bins", "--chi-bins", maximum=MAX_CHI_BINS, example="360")
    cfg = load_config(scan_configs(args), args.overrides)
    # defaults < [fit] tables of the configs < --set fit.KEY=VALUE < the options below; checked
    # before anything is written, so a bad value leaves nothing behind
    settings = apply_cli(settings_from_config(cfg), args, FIT_CLI_KEYS)
    out = prepare_file(args.out, "--out", hdf5=True, example="fits.h5")
    reduced = is_reduced(src)
    if not reduced:
        prepare_file(reduced_path(out), "--out (its reduction)", hdf5=True)
    progress = args.quiet_level <= 0
    if not reduced:
        from xmodel.io import open_scan
        from xmodel.reduction import reduce_scan

        with open_scan(src) as scan:
            given = resolve_scan_arguments(args, scan.n_frames)
        src = reduce_scan(src, reduced_path(out), q_bins=q_bins, chi_bins=chi_bins,
                          positions_um=given.positions_um, monitor=given.monitor,
                          positions_source=given.source, progress=progress,
                          scheduler=args.scheduler, tile=args.tile)
    else:
        from xmodel.reduced import open_reduced, store_scan_metadata

        given = resolve_scan_arguments(args, open_reduced(src).n_frames)
        if given.positions_um is not None or given.monitor is not None:
            store_scan_metadata(src, given.positions_um, given.monitor, given.source)
    # says once, in plain words, when the scan has no positions (the neighbour passes are skipped)
    from xmodel.reduced import open_reduced

    open_reduced(src).has_positions()
    fit_scan(src, cfg, out, settings, progress=progress, scheduler=args.scheduler, tile=args.tile)
    wrote(args, out)
    return 0


def _run_live(args, master: Path) -> int:
    """``xmodel fit MASTER --follow``: reduce and fit the frames as the detector writes them."""
    from fits.scan.live import fit_live
    from fits.scan.settings import apply_cli, settings_from_config
    from xmodel.commands._common import UsageError
    from xmodel.config import load_config
    from xmodel.follow import open_live_scan
    from xmodel.reduced import is_reduced

    if is_reduced(master):
        raise UsageError(f"--follow follows the detector's files: pass the master file, not the reduced {master}")
    cfg = load_config(scan_configs(args), args.overrides)
    settings = apply_cli(settings_from_config(cfg), args, FIT_CLI_KEYS)
    follow = follow_options(args)
    with open_live_scan(master, follow) as scan:           # waits for the master and the first frame
        given = resolve_scan_arguments(args, scan.n_frames)
    fit_live(master, reduced_path(args.out), args.out, cfg, settings, follow, progress=args.quiet_level == 0,
             q_bins=args.q_bins, chi_bins=args.chi_bins, positions_um=given.positions_um, monitor=given.monitor,
             positions_source=given.source)
    wrote(args, args.out)
    return 0


def add_parser(sub) -> None:
    p = add_command(sub, "fit", "fit every frame of a scan (orientation, a, tilt, disorder, configuration)",
                    epilog="Every tuning number of the fit is a setting of a [fit] table "
                              "(docs/configuration.md); set one with --set fit.KEY=VALUE.")
    p.add_argument("input", metavar="MASTER_OR_RESULTS", help="Dectris master file or results file with /entry/reduction")
    add_scan_config_args(p)
    p.add_argument("--out", required=True, help="results HDF5 file (/entry/fits); a killed run resumes")
    add_cli_options(p, FIT_CLI_KEYS)
    add_scan_arguments(p)
    add_run_arguments(p)
    p.add_argument("--q-bins", type=int, default=500,
                   help=f"q bins when reducing a master file, linearly spaced over the valid pixels (pyFAI's "
                        f"regular bins; 1 to {MAX_Q_BINS}); for log-spaced bins reduce first with "
                        f"xmodel reduce --q-spacing log")
    p.add_argument("--chi-bins", type=int, default=360,
                   help=f"chi bins when reducing a master file (1 to {MAX_CHI_BINS})")
    p.set_defaults(func=run)
