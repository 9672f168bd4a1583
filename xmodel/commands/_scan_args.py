"""The scan-position and monitor options shared by ``xmodel reduce`` and ``xmodel fit``.

``add_scan_arguments(parser)`` adds them; ``resolve_scan_arguments(args, n_frames)`` turns the
parsed options into per-frame positions and monitor (`xmodel.positions`).
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:            # numpy is not needed to build the parser (xmodel --help stays fast)
    import numpy as np


def add_scan_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--scan-shape``, ``--step-um``, ``--scan-order``, ``--positions``, ``--position-columns``,
    ``--position-units`` and ``--monitor`` to ``parser``."""
    g = parser.add_argument_group("scan positions and incident flux (when the master has none)")
    g.add_argument("--scan-shape", metavar="ROWSxCOLS",
                   help="the scan's grid, e.g. 121x121 (rows along the slow motor); with --step-um")
    g.add_argument("--step-um", metavar="S|SY,SX", help="scan step in um, one for both axes or SY,SX (default 1)")
    g.add_argument("--scan-order", choices=("raster", "snake"), default="raster",
                   help="raster: every row in the same direction (default); snake: every other row reversed")
    g.add_argument("--positions", metavar="FILE",
                   help="per-frame positions: CSV/text with a header (columns x_um,y_um), .npy (frames, 2) "
                        "as (y, x) um, FILE.h5:/path, or a P10 .fio scan file")
    g.add_argument("--position-columns", metavar="NAME_X,NAME_Y",
                   help="columns of --positions holding x (fast) and y (slow); default x_um,y_um")
    g.add_argument("--position-units", choices=("um", "mm", "nm"),
                   help="unit of the --positions values when the file does not say (default um)")
    g.add_argument("--monitor", metavar="FILE[:COLUMN]",
                   help="per-frame incident-flux monitor: a column of a .fio/CSV file (FILE:COLUMN), "
                        "FILE.h5:/path or FILE.npy; counts are normalised to its median")


@dataclass(frozen=True)
class ScanArguments:
    """What the options resolved to.

    Attributes
    ----------
    positions_um : (frames, 2) um (y, x) or None when no option gave positions
    scan_shape : (rows, cols) or None
    monitor : (frames,) or None
    source : words saying where the positions came from (for the log)
    """

    positions_um: np.ndarray | None
    scan_shape: tuple[int, int] | None
    monitor: np.ndarray | None
    source: str


def resolve_scan_arguments(args: argparse.Namespace, n_frames: int) -> ScanArguments:
    """Positions, scan shape and monitor of ``n_frames`` frames from the parsed options.

    Raises
    ------
    xmodel.positions.PositionsError
        For contradicting options, an unreadable file, or a file whose rows do not match the
        frames.
    """
    from xmodel.positions import (PositionsError, grid_positions, parse_scan_shape, parse_step, read_monitor,
                                  read_positions)

    shape = parse_scan_shape(args.scan_shape) if getattr(args, "scan_shape", None) else None
    positions = None
    source = "none"
    if getattr(args, "positions", None):
        columns = None
        if args.position_columns:
            columns = tuple(c.strip() for c in args.position_columns.split(","))
            if len(columns) != 2 or not all(columns):
                raise PositionsError(f"--position-columns {args.position_columns!r} must name two columns, "
                                     f"NAME_X,NAME_Y (x the fast axis).")
        positions = read_positions(args.positions, n_frames, columns=columns, units=args.position_units)
        source = f"--positions {args.positions}"
        if shape is not None:
            from xmodel.positions import derive_grid

            grid = derive_grid(positions)
            if grid is not None and grid.shape != shape:
                raise PositionsError(f"--scan-shape {args.scan_shape} does not match the grid of --positions "
                                     f"{args.positions} ({grid.shape[0]}x{grid.shape[1]}); drop one of them.")
    elif shape is not None:
        if shape[0] * shape[1] != n_frames:
            raise PositionsError(f"--scan-shape {args.scan_shape} holds {shape[0] * shape[1]} points but the scan "
                                 f"has {n_frames} frames.")
        step = parse_step(args.step_um) if args.step_um else (1.0, 1.0)
        positions = grid_positions(shape, step, args.scan_order)
        source = f"--scan-shape {args.scan_shape} --step-um {args.step_um or 1} --scan-order {args.scan_order}"
    elif getattr(args, "step_um", None):
        raise PositionsError("--step-um needs --scan-shape ROWSxCOLS (the grid it steps over).")
    monitor = read_monitor(args.monitor, n_frames) if getattr(args, "monitor", None) else None
    return ScanArguments(positions, shape, monitor, source)


def _scheduler(text: str):
    """argparse type of ``--scheduler`` (`xmodel.distributed.parse_scheduler`; a bad value is a usage error)."""
    from xmodel.distributed import parse_scheduler

    try:
        return parse_scheduler(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _tile(text: str) -> tuple[int, int]:
    from xmodel.distributed import parse_tile

    try:
        return parse_tile(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of seconds, e.g. 300")
    return value


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--scheduler``, ``--tile`` (a dask cluster, `xmodel.distributed`) and ``--follow``,
    ``--stop-file``, ``--idle-timeout``, ``--poll`` (live mode, `xmodel.follow`) to ``parser``."""
    g = parser.add_argument_group("running on a dask cluster (pip install 'xmodel[distributed]')")
    g.add_argument("--scheduler", type=_scheduler, metavar="local[:N[xT]]|ADDRESS|FILE",
                   help="run the frames tile by tile on dask workers: local (one worker per core), local:N, "
                        "local:NxT (N workers of T threads: a worker's tasks share its model and memory), "
                        "a scheduler address (tcp://host:8786) or a scheduler file; resumable")
    g.add_argument("--tile", type=_tile, default="8x8", metavar="ROWSxCOLS",
                   help="scan points per task with --scheduler")
    g = parser.add_argument_group("live mode: process frames while the detector writes them")
    g.add_argument("--follow", action="store_true",
                   help="wait for the master and its data files and process frames as they appear, until the "
                        "scan's last frame (nimages x ntrigger) or --stop-file")
    g.add_argument("--stop-file", metavar="PATH", help="with --follow: end cleanly when this file exists")
    g.add_argument("--idle-timeout", type=_seconds, default=300.0, metavar="S",
                   help="with --follow: give up when no new frame arrives for S seconds")
    g.add_argument("--poll", type=_seconds, default=1.0, metavar="S",
                   help="with --follow: seconds between two looks at the files")


def check_run_arguments(args: argparse.Namespace) -> None:
    """Refuse options that do not go together, and a scheduler without dask installed.

    Raises
    ------
    xmodel.commands._common.UsageError
        For ``--follow`` with ``--scheduler`` or ``--hot-pixels``, or ``--stop-file`` without ``--follow``.
    ModuleNotFoundError
        For ``--scheduler`` without dask.distributed (the message names the ``distributed`` extra).
    """
    from xmodel.commands._common import UsageError

    if args.follow and args.scheduler is not None:
        raise UsageError("--follow processes the frames in order as they arrive, in this process; drop "
                         "--scheduler (or run on the finished scan with it)")
    if args.follow and getattr(args, "hot_pixels", 0):
        raise UsageError("--hot-pixels needs frames spread over the whole scan; it cannot be used with --follow")
    if args.stop_file and not args.follow:
        raise UsageError("--stop-file goes with --follow")
    if args.scheduler is not None:
        from xmodel.distributed import require_distributed

        require_distributed()


def follow_options(args: argparse.Namespace):
    """The `xmodel.follow.FollowOptions` of the parsed options, or None without ``--follow``."""
    if not args.follow:
        return None
    from pathlib import Path

    from xmodel.follow import FollowOptions

    return FollowOptions(poll_s=args.poll, idle_timeout_s=args.idle_timeout,
                         stop_file=Path(args.stop_file) if args.stop_file else None)
