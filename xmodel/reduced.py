"""The reduced-scan file schema, ``/entry/reduction``: the one module that spells its paths.

`xmodel.reduction.reduce_scan` writes it (through :func:`create`, :func:`write_batch`,
:func:`set_frames_done`); everything else reads it through :func:`open_reduced`.

==========================  =====================  ===========================================
dataset                     shape, unit            meaning
==========================  =====================  ===========================================
polar                       (N, n_chi, n_q)        mean counts per valid pixel of each bin
                            counts                 (NaN: no valid pixel, or frame not reduced)
radial                      (N, n_q)               the same over all chi
q, q_edges                  (n_q [+1],) 1/A        bin centres and edges
chi, chi_edges              (n_chi [+1],) deg      bin centres and edges (pyFAI's chi)
counts                      (n_chi, n_q) pixels    valid pixels per bin (static mask)
radial_counts               (n_q,) pixels          valid pixels per q bin
mask                        (rows, cols) uint8     1 = masked for the whole scan
invalid_pixels              (N,) pixels            pixels invalid in that frame only (dummy,
                                                   saturated, negative; -1: not reduced yet)
unreadable                  (N,) uint8             1: the frame could not be read (its chunk
                                                   does not decode); polar and radial NaN
invalid_bins                (K, 3) int             frame, bin (chi * n_q + q), pixels lost
positions                   (N, 2) um              scan positions (y slow, x fast), acquisition
                                                   order (absent when none are known)
scan_shape                  (2,)                   grid (rows, cols) the positions lie on
grid_index                  (N, 2)                 grid (row, col) of every frame
monitor                     (N,)                   incident-flux monitor (absent: none)
count_time                  () s                   exposure per frame from the master
==========================  =====================  ===========================================

Attributes: ``poni``, ``master``, ``master_identity``, ``fingerprint``, ``frames_done``,
``method``, ``positions_source``, ``hot_pixels``.

NeXus (`xmodel.nexus`): ``/entry`` is an NXentry, ``/entry/reduction`` an NXprocess (fields
``program``, ``version``, ``date``, ``command_line``, ``environment``); ``/entry/polar`` (frame, chi, q) and
``/entry/radial`` (frame, q) are NXdata groups whose fields are soft links to the datasets above,
``/entry/intensity_map`` (when the frames lie on a grid) is the map of each frame's mean
intensity over y and x in um (`write_intensity_map`), and the file's ``default`` chain leads to
``/entry/radial``. Units are unit strings (``counts``,
``1/angstrom``, ``degree``, ``um``, ``s``; ``pixels`` for numbers of pixels).

Counts are stored as measured: the monitor is not divided into them, so the Poisson
statistics of the fits stay those of the counts. :meth:`ReducedScan.flux_factor` gives
``median(monitor) / monitor`` per frame; a fit models counts with per-frame scales (a frame at
half flux has half the scales), and maps show counts times the flux factor
(:meth:`ReducedScan.polar_normalised`).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from xmodel.positions import NO_POSITIONS, ScanGrid, grid_from_shape

log = logging.getLogger(__name__)

GROUP = "/entry/reduction"
_WARNED: set[str] = set()


class NotReducedError(ValueError):
    """A file that is not a reduced scan (no ``/entry/reduction/polar``)."""


@dataclass(frozen=True)
class ReducedScan:
    """What a reduction file holds, apart from the per-frame images (read on demand).

    Attributes
    ----------
    path : the file
    n_frames : frames of the scan (N)
    frames_done : frames reduced so far (a resumable run may be unfinished)
    q, q_edges : 1/A
    chi, chi_edges : degrees
    pixel_counts : (n_chi, n_q) valid pixels per bin (static mask)
    radial_counts : (n_q,)
    mask : (rows, cols) bool, True = masked for the whole scan
    positions_um : (N, 2) um (y, x) or None
    scan_shape : (rows, cols) or None
    grid : `xmodel.positions.ScanGrid` or None (frames placed on the map grid)
    monitor : (N,) or None
    count_time : s or None
    invalid_pixels : (N,) pixels invalid in each frame only (-1 where not reduced)
    invalid_bins : (K, 3) frame, flat bin, pixels lost
    unreadable : (N,) bool, True for a frame that could not be read (NaN images)
    poni : the geometry as .poni text
    master : the master file reduced (absolute path)
    attrs : every attribute of the group
    """

    path: Path
    n_frames: int
    frames_done: int
    q: np.ndarray
    q_edges: np.ndarray
    chi: np.ndarray
    chi_edges: np.ndarray
    pixel_counts: np.ndarray
    radial_counts: np.ndarray
    mask: np.ndarray
    positions_um: np.ndarray | None
    scan_shape: tuple[int, int] | None
    grid: ScanGrid | None
    monitor: np.ndarray | None
    count_time: float | None
    invalid_pixels: np.ndarray
    invalid_bins: np.ndarray
    poni: str
    master: str
    attrs: dict = field(default_factory=dict)
    unreadable: np.ndarray | None = None

    # -- per-frame data ---------------------------------------------------------------------
    def _read(self, name: str, frames) -> np.ndarray:
        """Rows ``frames`` of a per-frame dataset as float64: an index, a slice, or indices in any
        order (returned in that order; h5py itself takes only increasing indices)."""
        with h5py.File(self.path, "r") as f:
            ds = f[GROUP][name]
            if isinstance(frames, (slice, int, np.integer)):
                return np.asarray(ds[frames], np.float64)
            idx = np.asarray(frames, int).reshape(-1)
            order = np.argsort(idx, kind="stable")
            uniq, inv = np.unique(idx[order], return_inverse=True)
            data = (np.asarray(ds[uniq.tolist()], np.float64) if uniq.size
                    else np.zeros((0,) + ds.shape[1:], np.float64))
            out = np.empty((idx.size,) + data.shape[1:], np.float64)
            out[order] = data[inv]
            return out

    def polar(self, frames=slice(None)) -> np.ndarray:
        """Polar images (counts per pixel, float64, NaN where no valid pixel) of ``frames``: an
        index, a slice, or indices in any order (returned in that order)."""
        return self._read("polar", frames)

    def radial(self, frames=slice(None)) -> np.ndarray:
        """Radial profiles (counts per pixel, float64) of ``frames``, as `polar`."""
        return self._read("radial", frames)

    def flux_factor(self) -> np.ndarray:
        """(N,) ``median(monitor) / monitor``; ones without a monitor.

        Notes
        -----
        Normalisation to the median monitor: counts scale with the incident flux, so
        ``counts * flux_factor`` is what every frame would have counted at the median flux.
        """
        if self.monitor is None:
            return np.ones(self.n_frames)
        return float(np.median(self.monitor)) / self.monitor

    def polar_normalised(self, frames=slice(None)) -> np.ndarray:
        """Polar images times the flux factor (counts per pixel at the median monitor), for maps."""
        idx = np.arange(self.n_frames)[frames]
        return self.polar(frames) * self.flux_factor()[idx].reshape(np.shape(idx) + (1, 1))

    def radial_normalised(self, frames=slice(None)) -> np.ndarray:
        """Radial profiles times the flux factor, for maps."""
        idx = np.arange(self.n_frames)[frames]
        return self.radial(frames) * self.flux_factor()[idx].reshape(np.shape(idx) + (1,))

    def frame_pixel_counts(self, frame: int) -> np.ndarray:
        """(n_chi, n_q) valid pixels per bin in ``frame``: the static counts minus the pixels
        invalid in that frame (the weights of that frame's bins in a fit); zeros for a frame that
        could not be read."""
        counts = self.pixel_counts.astype(np.int64).copy()
        if self.unreadable is not None and self.unreadable[int(frame)]:
            return np.zeros_like(counts)
        rows = self.invalid_bins[self.invalid_bins[:, 0] == int(frame)]
        if rows.size:
            np.subtract.at(counts.reshape(-1), rows[:, 1], rows[:, 2])
        return counts

    # -- maps --------------------------------------------------------------------------------
    def has_positions(self) -> bool:
        """True when the file knows the scan positions; otherwise says so once (logging)."""
        if self.positions_um is not None:
            return True
        key = str(self.path)
        if key not in _WARNED:
            _WARNED.add(key)
            log.warning("%s: %s", self.path, NO_POSITIONS)
        return False

    def axes_um(self) -> tuple[np.ndarray, np.ndarray] | None:
        """Column positions x and row positions y (um) of the scan grid, or None without
        positions on a grid.

        Least squares of position = origin + index * step over the frames, per grid axis (the
        grid of `xmodel.positions.derive_grid`); an axis with one row or column is the mean
        position of the frames.
        """
        if self.grid is None or self.positions_um is None:
            return None
        out = []
        for dim, index in ((1, self.grid.col), (0, self.grid.row)):
            pos = self.positions_um[:, dim]
            if np.unique(index).size < 2:
                out.append(np.full(self.grid.shape[dim], float(np.mean(pos))))
                continue
            a = np.vstack([index, np.ones_like(index)]).T.astype(np.float64)
            (step, origin), *_ = np.linalg.lstsq(a, pos, rcond=None)
            out.append(origin + step * np.arange(self.grid.shape[dim]))
        return out[0], out[1]

    def map_axes(self) -> list[tuple[str, np.ndarray, str | None, str]]:
        """NXdata axes ``[(name, values, units, long_name)]`` of a map image (rows, cols): y and x
        in um, or the scan row and column indices when no positions are known
        (`xmodel.nexus.create_nxdata`).

        Raises
        ------
        ValueError
            When the frames cannot be arranged on a map (see `map_image`).
        """
        if self.grid is None:
            self.map_image(np.zeros(self.n_frames))          # raises the message that says why
        axes = self.axes_um()
        if axes is None:
            rows, cols = self.grid.shape
            return [("row", np.arange(rows), None, "scan row"), ("column", np.arange(cols), None, "scan column")]
        x, y = axes
        return [("y", y, "um", "y (um)"), ("x", x, "um", "x (um)")]

    def map_image(self, values: np.ndarray) -> np.ndarray:
        """Per-frame values (N, ...) as a map (rows, cols, ...) on the scan grid (NaN where no frame).

        Raises
        ------
        ValueError
            When neither positions on a grid nor a scan shape are known.
        """
        if self.grid is None:
            self.has_positions()
            raise ValueError(f"{self.path}: the frames cannot be arranged on a map: {NO_POSITIONS}; "
                             f"reduce again with --scan-shape ROWSxCOLS or --positions FILE.")
        return self.grid.image(values)


def _attr(value):
    return value.decode() if isinstance(value, bytes) else value


def is_reduced(path: str | Path) -> bool:
    """True when ``path`` is an HDF5 file with polar images under ``/entry/reduction``."""
    try:
        with h5py.File(path, "r") as f:
            return f"{GROUP}/polar" in f
    except OSError:
        return False


def open_reduced(path: str | Path) -> ReducedScan:
    """Read the description of a reduced scan (not its images, see `ReducedScan.polar`).

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    NotReducedError
        If it is not an HDF5 file with ``/entry/reduction/polar`` (e.g. a master file or a
        fits file): the message says to run ``xmodel reduce``.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; run `xmodel reduce MASTER --out {path}` first.")
    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise NotReducedError(f"{path} is not an HDF5 file ({err}); pass the results of `xmodel reduce`.") from err
    with f:
        if f"{GROUP}/polar" not in f:
            raise NotReducedError(f"{path} is not a reduced scan (no {GROUP}/polar): run "
                                  f"`xmodel reduce MASTER --out {path.name}` on the scan first.")
        g = f[GROUP]
        n = int(g["polar"].shape[0])

        def get(name, default=None):
            return np.asarray(g[name][()]) if name in g else default

        positions = get("positions")
        positions = None if positions is None else positions.astype(np.float64)
        shape = get("scan_shape")
        if shape is None and "scan_shape" in g.attrs:
            shape = np.asarray(g.attrs["scan_shape"])
        shape = None if shape is None else tuple(int(v) for v in shape)
        grid = None
        index = get("grid_index")
        if index is not None and shape is not None:
            grid = ScanGrid(shape, index[:, 0].astype(np.int64), index[:, 1].astype(np.int64),
                            (float("nan"),) * 2, (0.0, 0.0))
        elif positions is not None:
            from xmodel.positions import derive_grid

            grid = derive_grid(positions)
            shape = grid.shape if grid is not None else shape
        elif shape is not None and shape[0] * shape[1] == n:
            grid = grid_from_shape(n, shape)
        count_time = get("count_time")
        invalid = get("invalid_pixels")
        return ReducedScan(
            path=path, n_frames=n, frames_done=int(g.attrs.get("frames_done", n)),
            q=get("q"), q_edges=get("q_edges"), chi=get("chi"), chi_edges=get("chi_edges"),
            pixel_counts=get("counts"), radial_counts=get("radial_counts"),
            mask=None if "mask" not in g else get("mask").astype(bool),
            positions_um=positions, scan_shape=shape, grid=grid,
            monitor=None if "monitor" not in g else get("monitor").astype(np.float64),
            count_time=None if count_time is None else float(count_time),
            invalid_pixels=np.zeros(n, np.int64) if invalid is None else invalid.astype(np.int64),
            invalid_bins=np.zeros((0, 3), np.int64) if "invalid_bins" not in g else get("invalid_bins").astype(np.int64),
            poni=str(_attr(g.attrs.get("poni", ""))), master=str(_attr(g.attrs.get("master", ""))),
            attrs={k: _attr(v) for k, v in g.attrs.items()},
            unreadable=np.zeros(n, bool) if "unreadable" not in g else get("unreadable").astype(bool),
        )


# ----------------------------------------------------------------------------- writing
def create(path: Path, *, n_frames: int, bins, bin_counts: np.ndarray, radial_counts: np.ndarray,
           mask: np.ndarray, positions_um: np.ndarray | None, grid: ScanGrid | None,
           monitor: np.ndarray | None, count_time: float | None, attrs: dict) -> None:
    """Create an empty reduction file (frames NaN, ``frames_done`` 0) at ``path``.

    The datasets sit in ``/entry/reduction`` (an NXprocess with program, version and date); the
    NXdata groups ``/entry/polar`` (signal ``polar`` over frame, chi, q) and ``/entry/radial``
    (frame, q) link to them (HDF5 soft links, so the data are stored once), and the root's
    ``default`` chain leads to ``/entry/radial`` (`xmodel.nexus`).
    """
    from xmodel import nexus

    with h5py.File(path, "w") as f:
        entry = nexus.create_entry(f, title="reduced scan")
        grp = entry.create_group("reduction")
        nexus.describe_process(grp, program="xmodel reduce")
        n, nc, nq = n_frames, bins.n_chi, bins.n_q
        polar = grp.create_dataset("polar", (n, nc, nq), dtype=np.float32, chunks=(1, nc, nq), fillvalue=np.nan)
        polar.attrs["units"] = "counts"
        polar.attrs["long_name"] = "mean counts per valid pixel"
        radial = grp.create_dataset("radial", (n, nq), dtype=np.float32, chunks=(min(n, 64), nq), fillvalue=np.nan)
        radial.attrs["units"] = "counts"
        radial.attrs["long_name"] = "mean counts per valid pixel"
        for name, values, units, long_name in (
            ("q", bins.q_centres, "1/angstrom", "q (1/A)"), ("q_edges", bins.q_edges, "1/angstrom", "q (1/A)"),
            ("chi", bins.chi_centres, "degree", "chi (deg)"), ("chi_edges", bins.chi_edges, "degree", "chi (deg)"),
        ):
            ds = grp.create_dataset(name, data=values)
            ds.attrs["units"], ds.attrs["long_name"] = units, long_name
        grp.create_dataset("counts", data=bin_counts.astype(np.int32)).attrs["units"] = "pixels"
        grp.create_dataset("radial_counts", data=radial_counts.astype(np.int32)).attrs["units"] = "pixels"
        grp.create_dataset("mask", data=mask.astype(np.uint8), compression="gzip", compression_opts=1)
        inv = grp.create_dataset("invalid_pixels", (n,), dtype=np.int32, fillvalue=-1)
        inv.attrs["units"] = "pixels"
        inv.attrs["description"] = "pixels invalid in this frame only (dummy, saturated, negative); -1 not reduced"
        _create_unreadable(grp, n)
        grp.create_dataset("invalid_bins", (0, 3), dtype=np.int64, maxshape=(None, 3), chunks=(1024, 3))
        if positions_um is not None:
            grp.create_dataset("positions", data=positions_um).attrs["units"] = "um"
        if grid is not None:
            grp.create_dataset("scan_shape", data=np.asarray(grid.shape))
            grp.create_dataset("grid_index", data=np.stack([grid.row, grid.col], axis=1).astype(np.int32))
        if monitor is not None:
            grp.create_dataset("monitor", data=np.asarray(monitor, np.float64))
        if count_time is not None:
            grp.create_dataset("count_time", data=float(count_time)).attrs["units"] = "s"
        for k, v in attrs.items():
            grp.attrs[k] = v
        grp.attrs["frames_done"] = 0
        _link_nxdata(entry, n)


def _link_nxdata(entry: h5py.Group, n_frames: int) -> None:
    """NXdata groups ``polar`` (frame, chi, q) and ``radial`` (frame, q) in ``entry`` whose
    signals and axes are soft links to the datasets of ``/entry/reduction``; the default plot is
    the radial profiles (frames down, q across)."""
    from xmodel import nexus

    for name, dims in (("polar", ("frame", "chi", "q")), ("radial", ("frame", "q"))):
        nx = nexus.require_group(entry, name, "NXdata")
        nx[name] = h5py.SoftLink(f"{GROUP}/{name}")
        for axis in dims[1:]:
            nx[axis] = h5py.SoftLink(f"{GROUP}/{axis}")
        frame = nx.create_dataset("frame", data=np.arange(n_frames, dtype=np.int32))
        frame.attrs["long_name"] = "frame"
        nx.attrs["signal"] = name
        nx.attrs["axes"] = np.array(dims, dtype=h5py.string_dtype())
        for k, axis in enumerate(dims):
            nx.attrs[f"{axis}_indices"] = np.int32(k)
        nx.create_dataset("title", data=f"{name} intensity per frame (mean counts per valid pixel)")
    nexus.set_default(entry["radial"])


def _create_unreadable(grp: h5py.Group, n_frames: int) -> h5py.Dataset:
    ds = grp.create_dataset("unreadable", (n_frames,), dtype=np.uint8, fillvalue=0)
    ds.attrs["description"] = ("1: the frame could not be read (its stored data do not decode); its polar "
                               "and radial are NaN")
    return ds


def write_batch(f: h5py.File, start: int, polar: np.ndarray, radial: np.ndarray, invalid: np.ndarray,
                invalid_bins: np.ndarray, unreadable: np.ndarray | None = None) -> None:
    """Store the results of frames ``start .. start + len(polar) - 1`` (not yet marked done).

    ``unreadable`` (b,): 1 for the frames that could not be read (default none); written last,
    so a frame retried after a failed read stays flagged until its images are stored.
    """
    grp = f[GROUP]
    b = polar.shape[0]
    grp["polar"][start:start + b] = polar
    grp["radial"][start:start + b] = radial
    grp["invalid_pixels"][start:start + b] = invalid
    ds = grp["invalid_bins"]
    n_rows = ds.shape[0]
    if n_rows and int(ds[n_rows - 1, 0]) >= start:
        # rows of an earlier attempt at these frames go (a failed write, or a frame read again);
        # rows stay sorted by frame, so such rows can only sit at the end otherwise
        rows = ds[()]
        rows = np.concatenate([rows[(rows[:, 0] < start) | (rows[:, 0] >= start + b)],
                               np.asarray(invalid_bins, np.int64).reshape(-1, 3)])
        rows = rows[np.argsort(rows[:, 0], kind="stable")]
        ds.resize((rows.shape[0], 3))
        if rows.shape[0]:
            ds[:] = rows
    elif invalid_bins.size:
        ds.resize((n_rows + invalid_bins.shape[0], 3))
        ds[n_rows:] = invalid_bins
    flags = np.zeros(b, np.uint8) if unreadable is None else np.asarray(unreadable, np.uint8)
    if "unreadable" not in grp:          # a file of an earlier version
        if not flags.any():
            return
        _create_unreadable(grp, grp["polar"].shape[0])
    grp["unreadable"][start:start + b] = flags


def write_frames(f: h5py.File, frames: np.ndarray, polar: np.ndarray, radial: np.ndarray, invalid: np.ndarray,
                 invalid_bins: np.ndarray) -> None:
    """Store the results of the frames ``frames`` (increasing indices, any set: one spatial tile of
    a distributed run, `xmodel.distributed`); their ``invalid_pixels``, which mark them reduced
    (`reduced_frames`), are written last. ``frames_done`` is the caller's to advance."""
    grp = f[GROUP]
    idx = np.asarray(frames, dtype=np.int64)
    rows = idx.tolist()
    grp["polar"][rows] = polar
    grp["radial"][rows] = radial
    ds = grp["invalid_bins"]
    keep = ds[()]
    keep = keep[~np.isin(keep[:, 0], idx)]           # rows of an earlier attempt at these frames go
    ds.resize((keep.shape[0] + invalid_bins.shape[0], 3))
    ds[:keep.shape[0]] = keep
    if invalid_bins.size:
        ds[keep.shape[0]:] = invalid_bins
    grp["invalid_pixels"][rows] = invalid


def reduced_frames(path: str | Path) -> np.ndarray:
    """(N,) bool: frames whose results are written (``invalid_pixels`` >= 0 and a radial profile
    with values where the q bins hold pixels), whatever order they were written in."""
    with h5py.File(path, "r") as f:
        grp = f[GROUP]
        done = np.asarray(grp["invalid_pixels"][()]) >= 0
        has_pixels = np.asarray(grp["radial_counts"][()]) > 0
        if has_pixels.any():
            radial = grp["radial"]
            for s in range(0, done.size, 1024):
                block = np.asarray(radial[s:s + 1024])[:, has_pixels]
                done[s:s + block.shape[0]] &= np.isfinite(block).any(axis=1)
        return done


def store_scan_metadata(path: str | Path, positions_um: np.ndarray | None = None,
                        monitor: np.ndarray | None = None, source: str = "") -> None:
    """Add scan positions (um, (N, 2) as (y, x)) and/or a monitor (N,) to an existing reduction.

    For a scan reduced without them (e.g. ``xmodel fit RESULTS --scan-shape 13x13``), so that later
    commands read them from the file. The grid (``scan_shape``, ``grid_index``) is derived from
    the positions as `xmodel.reduction.reduce_scan` does.

    Raises
    ------
    ValueError
        If the file already holds different positions or a different monitor, or the number of
        rows is not the number of frames.
    """
    from xmodel.positions import derive_grid

    red = open_reduced(path)
    with h5py.File(red.path, "r+") as f:
        g = f[GROUP]
        for name, value, unit in (("positions", positions_um, "um"), ("monitor", monitor, None)):
            if value is None:
                continue
            value = np.asarray(value, np.float64)
            if value.shape[0] != red.n_frames:
                raise ValueError(f"{red.path}: {name} has {value.shape[0]} rows but the scan has "
                                 f"{red.n_frames} frames.")
            if name in g:
                if not np.allclose(g[name][()], value, rtol=1e-9, atol=1e-9, equal_nan=True):
                    raise ValueError(f"{red.path} already holds other {GROUP}/{name}; reduce the scan again "
                                     f"(xmodel reduce) to change them.")
                continue
            ds = g.create_dataset(name, data=value)
            if unit is not None:
                ds.attrs["units"] = unit
            if name == "positions":
                grid = derive_grid(value)
                if grid is not None:
                    for old in ("scan_shape", "grid_index"):
                        if old in g:
                            del g[old]
                    g.create_dataset("scan_shape", data=np.asarray(grid.shape))
                    g.create_dataset("grid_index", data=np.stack([grid.row, grid.col], axis=1).astype(np.int32))
                g.attrs["positions_source"] = source
    write_intensity_map(red.path)


def write_intensity_map(path: str | Path) -> None:
    """The scan map of each frame's mean intensity as NXdata ``/entry/intensity_map`` (rows y,
    columns x in um), when the frames lie on a grid and the file holds radial profiles; nothing
    otherwise.

    The mean intensity of a frame is its radial profile averaged over q with the valid pixels
    per q bin as weights (the mean counts per valid pixel of the frame), times the flux factor
    (`ReducedScan.flux_factor`); NaN for a frame not reduced.
    """
    from xmodel import nexus

    red = open_reduced(path)
    with h5py.File(red.path, "r") as f:
        has_radial = f"{GROUP}/radial" in f
    if red.grid is None or not has_radial or red.radial_counts is None:
        return
    radial = red.radial_normalised()
    weights = np.where(np.isfinite(radial), red.radial_counts[None, :].astype(np.float64), 0.0)
    total = weights.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(total > 0, np.nansum(radial * weights, axis=1) / total, np.nan)
    with h5py.File(red.path, "r+") as f:
        nx = nexus.create_nxdata(f["entry"], "intensity_map", "intensity", red.map_image(mean),
                                 axes=red.map_axes(), units="counts", long_name="mean counts per valid pixel",
                                 title="mean intensity per frame (counts per valid pixel at the median monitor)")
        nexus.set_default(nx, overwrite=False)


def set_frames_done(f: h5py.File, done: int) -> None:
    """Advance the checkpoint (call after the batch's data are flushed)."""
    f[GROUP].attrs["frames_done"] = int(done)


class OutputError(NotReducedError):
    """An output path that cannot take a reduction: a directory, a locked file, another kind of file."""


def _kind_of(f: h5py.File) -> str:
    """What an HDF5 file that is not a reduction seems to be, for a message."""
    if "entry/data/data_000001" in f or "entry/instrument/detector" in f:
        return "a Dectris master file"
    if "entry/fits" in f:
        return "an xmodel fit results file"
    if "truth" in f:
        return "a twin's truth file"
    top = sorted(f)
    return f"an HDF5 file of another kind (top level: {', '.join(top[:5]) or 'empty'})"


def checkpoint(path: Path) -> tuple[int, dict]:
    """(frames_done, attributes) of an existing reduction file.

    Raises
    ------
    OutputError
        ``path`` is a directory, is locked by another process, cannot be read, is not HDF5, or is
        another kind of HDF5 file (a master, a fit file): the message says which and that the
        file is left as it is.
    """
    from xmodel.io import open_error

    path = Path(path)
    keep = "xmodel leaves it as it is: choose another output path"
    if path.is_dir():
        raise OutputError(f"The output {path} is a directory: give the name of the results file, e.g. "
                          f"--out {path / 'reduced.h5'}.")
    try:
        f = h5py.File(path, "r")
    except OSError as err:
        reason = open_error(path, err)
        fix = "" if "locked" in reason or "permission" in reason else f"; {keep}"
        raise OutputError(f"The output {path} {reason}{fix}.") from err
    with f:
        grp = f.get(GROUP.strip("/"))
        if not isinstance(grp, h5py.Group):
            raise OutputError(f"The output {path} is {_kind_of(f)}, not an xmodel reduction (no {GROUP}); {keep}.")
        if "frames_done" not in grp.attrs or "polar" not in grp:
            raise OutputError(f"The output {path} holds a {GROUP} without frames_done or polar (not written by "
                              f"xmodel reduce, or by a version that cannot resume); {keep}.")
        return int(grp.attrs["frames_done"]), {k: _attr(v) for k, v in grp.attrs.items()}


def first_unwritten(path: Path, done: int) -> int:
    """The first of the ``done`` frames that was never really written (a batch recorded as done by
    an earlier version whose write failed), else ``done``.

    A frame is unwritten when its ``invalid_pixels`` still holds the fill value -1, or when its
    radial profile is all NaN although the q bins hold pixels and not all of them were invalid
    in that frame (a frame whose every pixel was invalid, or that could not be read, is NaN
    and written).
    """
    with h5py.File(path, "r") as f:
        grp = f[GROUP]
        radial_counts = np.asarray(grp["radial_counts"][()])
        has_pixels = radial_counts > 0
        if not has_pixels.any() or done == 0:
            return done
        binned = int(radial_counts.sum())
        radial, invalid = grp["radial"], grp["invalid_pixels"]
        for s in range(0, done, 1024):
            stop = min(done, s + 1024)
            block = np.asarray(radial[s:stop])[:, has_pixels]
            lost = np.asarray(invalid[s:stop])
            empty = np.flatnonzero((lost < 0) | (~np.isfinite(block).any(axis=1) & (lost < binned)))
            if empty.size:
                return s + int(empty[0])
    return done


def unreadable_frames(path: Path, done: int) -> np.ndarray:
    """Frames below ``done`` flagged as unreadable in the file (to be read again on a rerun)."""
    with h5py.File(path, "r") as f:
        grp = f[GROUP]
        if "unreadable" not in grp:
            return np.zeros(0, np.int64)
        return np.flatnonzero(np.asarray(grp["unreadable"][:done]))
