"""``xmodel boundary``: warm-started fits along a line; rotation and a versus distance."""
from __future__ import annotations

import json
from pathlib import Path

from fits.scan.settings import BOUNDARY_CLI_KEYS, add_cli_options
from xmodel.commands._common import (
    add_command,
    add_json_arg,
    add_scan_config_args,
    parse_pair,
    scan_configs,
    wrote,
)


def _point(text: str, name: str) -> tuple[float, float]:
    """``X,Y`` in um (x fast, y slow, as `xmodel qmap --from/--to` takes it) -> (y, x), the positions' order."""
    x, y = parse_pair(text, name)
    return y, x


def run(args) -> int:
    from fits.scan import results as store
    from fits.scan.boundary import (
        fit_line,
        format_line,
        line_points,
        read_line,
        scan_fit_rows,
        write_line,
    )
    from fits.scan.settings import apply_cli, settings_from_config
    from fits.scan.setup import setup_from_reduction
    from xmodel.config import load_config
    from xmodel.outputs import prepare_prefix
    from xmodel.reduced import open_reduced

    p0, p1 = _point(args.start, "--from"), _point(args.end, "--to")
    cfg = load_config(scan_configs(args), args.overrides)
    settings = apply_cli(settings_from_config(cfg), args, BOUNDARY_CLI_KEYS)
    prepare_prefix(args.out, "--out", (".csv", ".json", ".h5", ".png"))
    scan = open_reduced(args.results)
    if scan.positions_um is None:
        raise ValueError(f"{args.results} has no /entry/reduction/positions; reduce the scan first.")
    pos = scan.positions_um
    fits_path = args.fits if args.fits is not None else (args.results if store.has_fits(args.results) else None)
    index, dist = line_points(pos, p0, p1)
    scan_fit = scan_bulk = None
    if fits_path is not None:
        scan_fit = scan_fit_rows(fits_path, index, len(pos))
        whole = store.read_fits(fits_path)
        scan_bulk = {k: whole[k] for k in ("orientation_matrix", "status", "orientation_stderr_deg") if k in whole}
        if not args.json and getattr(args, "quiet_level", 0) <= 0:
            print(f"starting each point also from the scan fit in {fits_path}; rotation from the domain's bulk "
                  f"orientation over the whole map")
    setup = setup_from_reduction(scan, cfg, settings)
    result = fit_line(read_line(scan, index), setup, settings, scan_fit=scan_fit, scan_bulk=scan_bulk)
    parameters = {"results": str(Path(args.results).resolve()), "from_xy_um": [p0[1], p0[0]],
                  "to_xy_um": [p1[1], p1[0]], "fits": None if fits_path is None else str(Path(fits_path).resolve()),
                  "overrides": list(args.overrides), "settings": settings.to_flat()}
    paths = write_line(result, dist, index, pos, Path(args.out), parameters=parameters,
                       configs=tuple(scan_configs(args)))
    if args.json:
        doc = json.loads(paths[1].read_text())
        print(json.dumps(doc | {"files": [str(p) for p in paths]}, indent=1))
        return 0
    if getattr(args, "quiet_level", 0) <= 0:
        print(format_line(result, dist, index))
        print("(value +- standard error, propagated from each fit's covariance; * a bulk point)")
    for path in paths:
        wrote(args, path)
    return 0


def add_parser(sub) -> None:
    p = add_command(sub, "boundary", "fit the points along a line with warm starts (rotation, a vs distance)",
                    epilog="Every tuning number of the fit is a setting of a [fit] table "
                              "(docs/configuration.md); set one with --set fit.KEY=VALUE.")
    p.add_argument("results", help="results file with /entry/reduction")
    p.add_argument("--from", dest="start", required=True, metavar="X0,Y0", help="line start (um; x the fast scan axis)")
    p.add_argument("--to", dest="end", required=True, metavar="X1,Y1", help="line end (um)")
    add_scan_config_args(p)
    p.add_argument("--out", default="boundary", help="output prefix for .csv, .json, .h5 (NeXus) and .png")
    add_json_arg(p, "the points (values, standard errors, units) and the files written")
    p.add_argument("--fits", default=None, metavar="FILE",
                   help="scan fit of the same scan (/entry/fits, xmodel fit): its result at each point is one "
                        "more start (default: RESULTS itself if it holds /entry/fits)")
    add_cli_options(p, BOUNDARY_CLI_KEYS)
    p.set_defaults(func=run)
