"""Scan positions and the incident-flux monitor, from outside the detector's master file.

Real Eiger master files carry no scan positions: they live in the beamline's scan file. This
module turns every source a user may have into per-frame arrays, in acquisition order:

* a nominal grid: ``scan_shape`` (rows, cols) and ``step_um`` with a raster or snake order
  (:func:`grid_positions`);
* a CSV or whitespace text table with a header (:func:`read_table`), an ``.npy`` array of
  shape (frames, 2), an HDF5 dataset ``FILE.h5:/path`` of shape (frames, 2), or a P10
  ``.fio`` scan file (:mod:`xmodel.fio`), through :func:`read_positions`;
* a per-frame monitor column or dataset (:func:`read_monitor`).

Positions are ``(frames, 2)`` float64 micrometres, column 0 the slow axis (y, scan rows),
column 1 the fast axis (x, scan columns), as in the rest of xmodel. :func:`derive_grid` puts
the frames on a regular 2D grid, tolerant to encoder jitter, so maps are images.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

#: unit name -> factor to micrometres
UNITS_TO_UM = {"um": 1.0, "µm": 1.0, "micron": 1.0, "microns": 1.0, "micrometer": 1.0, "micrometre": 1.0,
               "mm": 1e3, "millimeter": 1e3, "millimetre": 1e3, "nm": 1e-3, "m": 1e6}
#: default column names of a positions table (x fast, y slow)
DEFAULT_COLUMNS = ("x_um", "y_um")
#: HDF5 file name endings recognised in ``FILE.h5:/path``
HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf", ".nxs", ".nx5")
#: a position may sit this fraction of a step away from its grid point (encoder jitter)
GRID_TOLERANCE = 0.3
#: the message when no positions are known anywhere
NO_POSITIONS = ("no scan positions: maps need --scan-shape or --positions; the neighbour passes "
                "are skipped")


class PositionsError(ValueError):
    """Positions or monitor values that cannot be read or do not fit the scan."""


# ----------------------------------------------------------------------------- nominal grids
def parse_scan_shape(text: str) -> tuple[int, int]:
    """``"121x121"`` -> (121, 121) (rows = slow, cols = fast)."""
    m = re.fullmatch(r"\s*(\d+)\s*[xX×,]\s*(\d+)\s*", str(text))
    if not m or int(m.group(1)) < 1 or int(m.group(2)) < 1:
        raise PositionsError(f"--scan-shape {text!r} is not ROWSxCOLS with positive integers; "
                             f"write e.g. --scan-shape 121x121.")
    return int(m.group(1)), int(m.group(2))


def parse_step(text: str | float) -> tuple[float, float]:
    """``"0.25"`` -> (0.25, 0.25); ``"0.5,0.25"`` -> (0.5, 0.25) as (step_y, step_x) in um."""
    parts = [p for p in str(text).split(",")]
    try:
        values = [float(p) for p in parts]
    except ValueError:
        values = []
    if len(values) not in (1, 2) or not all(np.isfinite(v) and v > 0 for v in values):
        raise PositionsError(f"--step-um {text!r} is not a positive step in um (S or SY,SX); "
                             f"write e.g. --step-um 0.25 or --step-um 0.5,0.25.")
    return (values[0], values[-1])


def grid_positions(scan_shape: tuple[int, int], step_um: float | tuple[float, float],
                   order: str = "raster") -> np.ndarray:
    """Positions (frames, 2) in um (slow y, fast x) of a rectangular scan, in acquisition order.

    Parameters
    ----------
    scan_shape : (rows, cols); rows along the slow motor.
    step_um : step (um), one for both axes or (step_y, step_x).
    order : "raster" (every row in the same direction) or "snake" (every other row reversed).

    Examples
    --------
    >>> grid_positions((2, 3), 1.0, "snake")[:, 1].tolist()
    [0.0, 1.0, 2.0, 2.0, 1.0, 0.0]
    """
    rows, cols = (int(v) for v in scan_shape)
    if rows < 1 or cols < 1:
        raise PositionsError(f"scan_shape {tuple(scan_shape)} must be two positive integers (rows, cols).")
    sy, sx = (float(step_um), float(step_um)) if np.ndim(step_um) == 0 else (float(v) for v in step_um)
    if order not in ("raster", "snake"):
        raise PositionsError(f"--scan-order {order!r} must be 'raster' or 'snake'.")
    iy, ix = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    if order == "snake":
        ix[1::2] = ix[1::2, ::-1]
    return np.stack([iy.ravel() * sy, ix.ravel() * sx], axis=1).astype(np.float64)


def acquisition_order(scan_shape: tuple[int, int], order: str = "raster") -> np.ndarray:
    """Row-major point index (row * cols + col) of every frame, in acquisition order.

    Examples
    --------
    >>> acquisition_order((2, 3), "snake").tolist()
    [0, 1, 2, 5, 4, 3]
    """
    rows, cols = (int(v) for v in scan_shape)
    if order not in ("raster", "snake"):
        raise PositionsError(f"--scan-order {order!r} must be 'raster' or 'snake'.")
    index = np.arange(rows * cols).reshape(rows, cols)
    if order == "snake":
        index[1::2] = index[1::2, ::-1]
    return index.ravel()


# ----------------------------------------------------------------------------- tables
def _unit_of_name(name: str) -> str | None:
    """A unit spelled in a column name: ``x_mm``, ``x (mm)``, ``x[um]``."""
    m = re.search(r"[\[(]\s*([^\])]+?)\s*[\])]\s*$", name) or re.search(r"_([A-Za-zµ]+)$", name)
    if m and m.group(1).lower() in UNITS_TO_UM:
        return m.group(1).lower()
    return None


@dataclass(frozen=True)
class Table:
    """Columns of a scan file: name -> float64 array, the unit of each column when the file says.

    ``text`` names the columns that hold text, with the first value that is not a number and its
    data row (1-based), e.g. ``{"time": (1, "10:00:00")}``.
    """

    path: Path
    columns: dict
    units: dict
    text: dict = field(default_factory=dict)

    def column(self, name: str) -> np.ndarray:
        if name in self.text:
            row, value = self.text[name]
            raise PositionsError(f"{self.path}: column {name!r} holds {value!r} in data row {row}, not a number; "
                                 f"fix that row or name other columns with --position-columns NAME_X,NAME_Y "
                                 f"(or --monitor FILE:COLUMN).")
        if name not in self.columns:
            raise PositionsError(f"{self.path} has no column {name!r}; its columns are "
                                 f"{list(self.columns) + list(self.text)}. Name the columns with --position-columns "
                                 f"NAME_X,NAME_Y (or --monitor FILE:COLUMN).")
        return self.columns[name]


def _is_number(word: str) -> bool:
    try:
        float(word)
        return True
    except ValueError:
        return False


def read_table(path: str | Path) -> Table:
    """Read a ``.fio`` scan file or a CSV / whitespace text table whose first line names the columns.

    The header may start with ``#`` (as ``numpy.savetxt`` writes it); other ``#`` lines are
    comments. Units come from the column names (``x_mm``, ``x (mm)``) or, in a ``.fio``, from a
    parameter ``<NAME>_unit`` / ``<NAME>_units``.
    """
    path = Path(path)
    if not path.exists():
        raise PositionsError(f"Scan file {path} does not exist.")
    if path.is_dir():
        raise PositionsError(f"Scan file {path} is a directory: expected a .fio, CSV or text file.")
    if path.suffix.lower() == ".fio":
        from xmodel.fio import read_fio

        fio = read_fio(path)
        columns = {n: fio.data[n].astype(np.float64) for n in fio.columns if fio.data[n].dtype.kind in "fiu"}
        text = {n: (1, str(fio.data[n][0]) if fio.data[n].size else "") for n in fio.columns if n not in columns}
        units = {}
        for n in columns:
            unit = fio.parameters.get(f"{n}_unit", fio.parameters.get(f"{n}_units")) or _unit_of_name(n)
            if unit is not None:
                units[n] = str(unit).strip().lower()
        return Table(path, columns, units, text)
    try:
        raw = path.read_text(errors="replace")
    except OSError as err:
        raise PositionsError(f"Scan file {path} cannot be read: {err.strerror or err}.") from err
    lines = [ln.strip() for ln in raw.splitlines()]
    lines = [ln for ln in lines if ln]

    def words_of(text: str) -> list[str]:
        text = text.lstrip("#").strip()
        return [w.strip() for w in (text.split(",") if "," in text else text.split()) if w.strip()]

    # the header: the first line that is not a comment, unless it holds a number; then the last
    # comment line before it (as numpy.savetxt writes "# x_um,y_um")
    first = next((k for k, ln in enumerate(lines) if not ln.startswith("#")), None)
    if first is None:
        raise PositionsError(f"{path} is empty: expected a header line and one row per frame.")
    if not any(_is_number(w) for w in words_of(lines[first])):
        header_line, body = lines[first], lines[first + 1:]
    elif first > 0:
        header_line, body = lines[first - 1], lines[first:]
    else:
        raise PositionsError(f"{path} has no header line naming its columns (e.g. 'x_um,y_um'); "
                             f"add one, or pass an .npy array of shape (frames, 2).")
    header = words_of(header_line)
    comma = "," in header_line
    rows = []
    for k, ln in enumerate(ln for ln in body if not ln.startswith("#")):
        words = [w.strip() for w in (ln.split(",") if comma else ln.split())]
        if len(words) != len(header):
            raise PositionsError(f"{path}: data row {k + 1} has {len(words)} values but the header names "
                                 f"{len(header)} columns {header}.")
        rows.append(words)
    columns, text = {}, {}
    for j, name in enumerate(header):
        try:
            columns[name] = np.asarray([r[j] for r in rows], dtype=np.float64)
        except ValueError:  # a text column (e.g. a time stamp) is not a position
            row = next(k for k, r in enumerate(rows) if not _is_number(r[j]))
            text[name] = (row + 1, rows[row][j])
    units = {n: u for n in columns if (u := _unit_of_name(n)) is not None}
    return Table(path, columns, units, text)


def _split_spec(spec: str) -> tuple[Path, str | None]:
    """``FILE:INNER`` -> (FILE, INNER) when FILE exists; else (spec, None)."""
    spec = str(spec)
    if Path(spec).exists():
        return Path(spec), None
    head, sep, tail = spec.rpartition(":")
    if sep and head and Path(head).exists():
        return Path(head), tail
    return Path(spec), None


def _check_rows(values: np.ndarray, n_frames: int | None, what: str) -> np.ndarray:
    if n_frames is not None and values.shape[0] != n_frames:
        raise PositionsError(f"{what} has {values.shape[0]} rows but the scan has {n_frames} frames: "
                             f"give one row per frame, in acquisition order.")
    return values


def _to_um(values: np.ndarray, unit: str | None, what: str) -> np.ndarray:
    if unit is None:
        return values
    if unit not in UNITS_TO_UM:
        raise PositionsError(f"{what}: unit {unit!r} is not one of {sorted(set(UNITS_TO_UM))}.")
    return values * UNITS_TO_UM[unit]


def _read_h5_dataset(path: Path, inner: str | None, option: str, example: str, what: str
                     ) -> tuple[np.ndarray, str | None]:
    """A dataset of ``FILE.h5:/path`` as float64, and its ``units`` (or ``unit``) attribute."""
    import h5py

    from xmodel.io import open_error

    if not inner:
        raise PositionsError(f"Name the dataset inside {path}: {option} {path}:{example}.")
    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise PositionsError(f"{path} (from {option}) {open_error(path, err)}.") from err
    with f:
        if inner not in f:
            raise PositionsError(f"{path} has no dataset {inner!r}: pass {option} FILE.h5:/path to {what}.")
        ds = f[inner]
        if not isinstance(ds, h5py.Dataset) or ds.dtype.kind not in "uifb":
            shown = "a group" if not isinstance(ds, h5py.Dataset) else f"{ds.dtype} values"
            raise PositionsError(f"{path}:{inner} (from {option}) holds {shown}; expected {what} of numbers.")
        unit = ds.attrs.get("units", ds.attrs.get("unit"))
        return np.asarray(ds[()], dtype=np.float64), unit.decode() if isinstance(unit, bytes) else unit


def _load_npy(path: Path, option: str) -> np.ndarray:
    """An ``.npy`` array of numbers as float64; PositionsError naming the file otherwise."""
    try:
        values = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:
        raise PositionsError(f"{path} (from {option}) is not a readable .npy array: {err}.") from err
    if values.dtype.kind not in "uifb":
        raise PositionsError(f"{path} (from {option}) holds {values.dtype} values; expected numbers.")
    return values.astype(np.float64)


def _source(spec, option: str, what: str) -> tuple[Path, str | None]:
    """The file (and inner dataset or column) of ``--positions`` / ``--monitor``: it must exist and
    not be a directory."""
    path, inner = _split_spec(spec)
    if not path.exists():
        raise PositionsError(f"{what} file {path} does not exist (from {option} {str(spec)!r}).")
    if path.is_dir():
        raise PositionsError(f"{what} file {path} (from {option} {str(spec)!r}) is a directory: expected a file.")
    return path, inner


def read_positions(spec: str | Path, n_frames: int | None = None,
                   columns: tuple[str, str] | None = None, units: str | None = None) -> np.ndarray:
    """Per-frame positions (frames, 2) in um (slow y, fast x) from a file.

    Parameters
    ----------
    spec
        ``FILE.npy`` (frames, 2) as (y, x); ``FILE.h5:/path`` to a (frames, 2) dataset (y, x);
        a ``.fio`` scan file or a CSV/text table with a header (one row per frame).
    n_frames
        Frames of the scan; the file must hold exactly as many rows.
    columns
        (NAME_X, NAME_Y) of a table; default ``("x_um", "y_um")``.
    units
        Unit of the values when the file does not say ("um", "mm", "nm"); a unit in the file
        (column name ``x_mm``, ``.fio`` parameter ``NAME_unit = mm``, HDF5 attribute ``units``)
        wins unless this is given. Default um.

    Raises
    ------
    PositionsError
        Unknown file or column, wrong number of rows, non-finite values.
    """
    path, inner = _source(spec, "--positions", "Positions")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        values = _load_npy(path, "--positions")
        if values.ndim != 2 or values.shape[1] != 2:
            raise PositionsError(f"{path} holds an array of shape {values.shape}; expected (frames, 2) "
                                 f"as (y, x) in um.")
        values = _to_um(values, units, str(path))
    elif suffix in HDF5_SUFFIXES:
        values, unit = _read_h5_dataset(path, inner, "--positions", "/entry/positions", "a (frames, 2) dataset")
        if values.ndim != 2 or values.shape[1] != 2:
            raise PositionsError(f"{path}:{inner} has shape {values.shape}; expected (frames, 2) as (y, x).")
        values = _to_um(values, units or (str(unit).lower() if unit else None), f"{path}:{inner}")
    else:
        table = read_table(path)
        name_x, name_y = columns or DEFAULT_COLUMNS
        x, y = table.column(name_x), table.column(name_y)
        what = f"{path} columns {name_x!r}, {name_y!r}"
        unit_x = units or table.units.get(name_x)
        unit_y = units or table.units.get(name_y)
        if unit_x is None and unit_y is None and suffix == ".fio":
            log.info("%s names no unit for %s, %s: read as um (pass --position-units mm if they are mm)",
                     path, name_x, name_y)
        values = np.stack([_to_um(y, unit_y, what), _to_um(x, unit_x, what)], axis=1)
    _check_rows(values, n_frames, f"Positions file {spec}")
    bad = np.flatnonzero(~np.all(np.isfinite(values), axis=1))
    if bad.size:
        raise PositionsError(f"Positions file {spec}: frame {int(bad[0])} has a non-finite position "
                             f"{values[bad[0]].tolist()} ({bad.size} such frames).")
    return values


def read_monitor(spec: str | Path, n_frames: int | None = None) -> np.ndarray:
    """Per-frame incident-flux monitor (frames,) from ``FILE:COLUMN`` (``.fio``/CSV), ``FILE.h5:/path``
    or ``FILE.npy``.

    Raises
    ------
    PositionsError
        Missing file or column, wrong number of rows, or a value that is zero, negative or
        not finite (the frame cannot be normalised: the beam was lost or the column is wrong).
    """
    path, inner = _source(spec, "--monitor", "Monitor")
    suffix = path.suffix.lower()
    if suffix in (".npy", *HDF5_SUFFIXES):
        if suffix == ".npy":
            values = _load_npy(path, "--monitor")
        else:
            values = _read_h5_dataset(path, inner, "--monitor", "/entry/monitor", "a (frames,) dataset")[0]
        if values.ndim == 2 and values.shape[1] == 1:
            values = values[:, 0]
        if values.ndim != 1:
            raise PositionsError(f"Monitor {spec} holds an array of shape {values.shape}; expected one value per "
                                 f"frame, shape (frames,).")
    else:
        table = read_table(path)
        if not inner:
            raise PositionsError(f"Name the monitor column of {path}: --monitor {path}:COLUMN, one of "
                                 f"{list(table.columns)}.")
        values = table.column(inner)
    _check_rows(values, n_frames, f"Monitor {spec}")
    bad = np.flatnonzero(~(np.isfinite(values) & (values > 0)))
    if bad.size:
        raise PositionsError(f"Monitor {spec}: frame {int(bad[0])} reads {values[bad[0]]:g}; a monitor of zero, "
                             f"below zero or not finite cannot normalise a frame (beam lost, or the wrong "
                             f"column?). {bad.size} such frames.")
    return values


# ----------------------------------------------------------------------------- grid
@dataclass(frozen=True)
class ScanGrid:
    """Frames placed on a regular 2D grid.

    Attributes
    ----------
    shape : (rows, cols)
    row, col : (frames,) int grid indices of every frame
    step_um : (step_y, step_x) in um (NaN along an axis with one point)
    origin_um : (y0, x0) position of grid point (0, 0), um
    """

    shape: tuple[int, int]
    row: np.ndarray
    col: np.ndarray
    step_um: tuple[float, float]
    origin_um: tuple[float, float]

    def image(self, values: np.ndarray) -> np.ndarray:
        """Per-frame values (frames, ...) -> image (rows, cols, ...), NaN at grid points without a frame."""
        values = np.asarray(values, dtype=np.float64)
        out = np.full((*self.shape, *values.shape[1:]), np.nan)
        out[self.row, self.col] = values
        return out


def _axis(values: np.ndarray, tol: float) -> tuple[np.ndarray, float, float] | None:
    """Grid index, step and origin of one axis, or None when the values are not on a grid."""
    order = np.argsort(values)
    s = values[order]
    gaps = np.diff(s)
    if gaps.size == 0 or gaps.max() <= 0:
        return np.zeros(values.size, dtype=np.int64), float("nan"), float(s[0])
    # clusters: split where a gap is at least half the typical large gap (jitter makes only small ones)
    big = gaps[gaps > 0.2 * gaps.max()]
    cut = gaps > 0.5 * float(np.median(big))
    cluster = np.concatenate([[0], np.cumsum(cut)])
    means = np.array([s[cluster == c].mean() for c in range(cluster[-1] + 1)])
    if means.size == 1:
        index = np.zeros(values.size, dtype=np.int64)
        return index, float("nan"), float(means[0])
    step = float(np.median(np.diff(means)))
    c_index = np.rint((means - means[0]) / step).astype(np.int64)
    index = np.empty(values.size, dtype=np.int64)
    index[order] = c_index[cluster]
    # refine step and origin by least squares over all frames
    a = np.vstack([index, np.ones_like(index)]).T.astype(np.float64)
    (step, origin), *_ = np.linalg.lstsq(a, values, rcond=None)
    if np.max(np.abs(values - origin - index * step)) > tol * abs(step):
        return None
    return index, float(step), float(origin)


def derive_grid(positions_um: np.ndarray, tolerance: float = GRID_TOLERANCE) -> ScanGrid | None:
    """The regular grid the positions sample, or None when they are not on one.

    Each axis: sorted positions split into clusters where a gap reaches half the typical large
    gap (jitter makes only small ones); the step is the median spacing of the cluster means,
    refined by least squares of position = origin + index * step; every frame must sit within ``tolerance`` steps of its
    grid point and no two frames on one point. Missing points are allowed (NaN in images).
    """
    pos = np.asarray(positions_um, dtype=np.float64)
    if pos.ndim != 2 or pos.shape[1] != 2 or pos.shape[0] == 0:
        raise PositionsError(f"positions have shape {pos.shape}; expected (frames, 2) as (y, x) in um.")
    axes = [_axis(pos[:, k], tolerance) for k in (0, 1)]
    if any(a is None for a in axes):
        log.warning("the scan positions do not lie on a regular grid (within %.0f %% of a step); "
                    "maps cannot be drawn as images", 100 * tolerance)
        return None
    (row, sy, y0), (col, sx, x0) = axes
    shape = (int(row.max()) + 1, int(col.max()) + 1)
    flat = row * shape[1] + col
    if np.unique(flat).size != flat.size:
        log.warning("two or more frames share one grid point of the scan positions; maps cannot be "
                    "drawn as images")
        return None
    return ScanGrid(shape, row, col, (sy, sx), (y0, x0))


def grid_from_shape(n_frames: int, scan_shape: tuple[int, int]) -> ScanGrid:
    """Row-major raster grid of ``n_frames`` for a given (rows, cols) without positions."""
    rows, cols = scan_shape
    if rows * cols != n_frames:
        raise PositionsError(f"scan_shape {tuple(scan_shape)} holds {rows * cols} points but the scan has "
                             f"{n_frames} frames.")
    index = np.arange(n_frames)
    return ScanGrid((int(rows), int(cols)), index // cols, index % cols, (float("nan"),) * 2, (0.0, 0.0))
