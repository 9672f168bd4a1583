"""Polar (q, chi) images and radial profiles from detector frames, streamed over a scan.

Each valid pixel falls, by its centre, into one (chi, q) bin (no pixel splitting, pyFAI's
``("no", "histogram", "cython")``); the bin assignment is a sparse pixel -> bin matrix built
once (:func:`build_bin_map`) and applied to batches of frames (:func:`reduce_frames`).
:func:`reduce_scan` streams a whole Eiger scan through it with a reader thread overlapping
the decompression with the sparse products, and resumes an interrupted run. Pixels invalid in
one frame (the dtype's dummy value, saturated, negative) are left out of that frame's bins
only; the scan positions, monitor and exposure time are stored with the results, whose
schema :mod:`xmodel.reduced` owns.
"""
from __future__ import annotations

import errno
import hashlib
import logging
import queue
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import scipy.sparse as sp

from xmodel import reduced
from xmodel.io import ScanError, open_scan

log = logging.getLogger(__name__)

#: Poisson standard deviations above its neighbourhood that make a pixel hot (`hot_pixel_mask`)
HOT_SIGMA = 10.0


class ReductionError(ValueError):
    """Bad reduction input or an existing output that does not match the requested run."""


@dataclass(frozen=True)
class PolarBins:
    """Bins in |q| (1/A) and chi (degrees, pyFAI's azimuth); regular or, in q, log-spaced.

    ``q_edges`` (n_q + 1,) and ``chi_edges`` (n_chi + 1,) are the outer edges; a chi range may
    cross the +-180 degree cut (e.g. 90 to 270): chi is wrapped into it modulo 360.
    """

    q_edges: np.ndarray
    chi_edges: np.ndarray

    @property
    def q_centres(self) -> np.ndarray:
        """Bin centres in q (1/A)."""
        return 0.5 * (self.q_edges[1:] + self.q_edges[:-1])

    @property
    def chi_centres(self) -> np.ndarray:
        """Bin centres in chi (degrees)."""
        return 0.5 * (self.chi_edges[1:] + self.chi_edges[:-1])

    @property
    def n_q(self) -> int:
        return self.q_edges.size - 1

    @property
    def n_chi(self) -> int:
        return self.chi_edges.size - 1


def _regular_edges(lo: float, hi: float, n: int, what: str) -> np.ndarray:
    if int(n) < 1:
        raise ReductionError(f"{what}: n={n} bins must be a positive integer, e.g. 500.")
    if not (np.isfinite(lo) and np.isfinite(hi) and hi > lo):
        raise ReductionError(f"{what} range ({lo}, {hi}) must be finite with upper > lower.")
    return np.linspace(float(lo), float(hi), int(n) + 1)


def default_bins(
    geometry,
    mask: np.ndarray,
    n_q: int = 500,
    n_chi: int = 360,
    q_range: tuple[float, float] | None = None,
    chi_range: tuple[float, float] | None = None,
    q_spacing: str = "linear",
) -> PolarBins:
    """Bins covering the valid pixels, regular in chi and regular or log-spaced in q.

    Parameters
    ----------
    geometry
        :class:`xmodel.geometry.Geometry`.
    mask
        bool, True = masked, shape ``geometry.shape``.
    n_q, n_chi
        Numbers of bins.
    q_range
        (lower, upper) outer edges in 1/A; default: min and max |q| of valid pixel centres.
    chi_range
        (lower, upper) outer edges in degrees, at most 360 apart; default (-180, 180).
    q_spacing
        "linear" (pyFAI's regular bins) or "log": constant relative width dq/q, which
        resolves the narrow small-angle SL peaks and the broad wide-angle AL peaks with the
        same number of bins per peak (500 log bins from 0.01 to 3.4 1/A are 1.2 % wide).
        With "log" and no ``q_range`` the lower edge is max(min |q|, 0.005 1/A).

    Returns
    -------
    PolarBins

    Notes
    -----
    pyFAI's defaults for ``integrate2d`` (Ashiotis et al. 2015, doi:10.1107/S1600576715004306):
    the radial range spans the valid pixel centres, the azimuth the full circle.

    Validation
    ----------
    Centres equal pyFAI's ``radial`` / ``azimuthal`` for the same ranges to 1e-6
    (tests/xmodel/test_reduction.py).
    """
    given_q_range = q_range is not None
    if q_range is None:
        q = np.asarray(geometry.q())[~np.asarray(mask, dtype=bool)]
        if q.size == 0:
            raise ReductionError("Every pixel is masked: no q range to bin; check the mask.")
        q_range = (float(q.min()), float(q.max()))
    chi_range = (-180.0, 180.0) if chi_range is None else chi_range
    if q_spacing not in ("linear", "log"):
        raise ReductionError(f"q_spacing must be 'linear' or 'log', not {q_spacing!r}.")
    if chi_range[1] - chi_range[0] > 360.0 + 1e-9:
        raise ReductionError(
            f"chi_range {tuple(chi_range)} spans more than 360 degrees; use e.g. (-180, 180) or (0, 360)."
        )
    if q_spacing == "log":
        _regular_edges(*q_range, n_q, "q (1/A)")        # validates n_q and the span
        lo = float(q_range[0]) if given_q_range else max(float(q_range[0]), 0.005)
        if not 0 < lo < q_range[1]:
            raise ReductionError(f"q_range {tuple(q_range)} must be positive for log-spaced bins.")
        q_edges = np.geomspace(lo, float(q_range[1]), n_q + 1)
        return PolarBins(q_edges=q_edges, chi_edges=_regular_edges(*chi_range, n_chi, "chi (deg)"))
    return PolarBins(
        q_edges=_regular_edges(*q_range, n_q, "q (1/A)"),
        chi_edges=_regular_edges(*chi_range, n_chi, "chi (deg)"),
    )


@dataclass(frozen=True)
class BinMap:
    """Precomputed pixel -> (chi, q) bin assignment of one detector, geometry and mask.

    Attributes
    ----------
    bins : PolarBins
    matrix : scipy.sparse.csr_matrix
        (n_chi * n_q, rows * cols) float32, 1 where a valid pixel's centre lies in the bin.
    counts : numpy.ndarray
        (n_chi, n_q) number of pixels per bin.
    q_index : numpy.ndarray
        (rows * cols,) q bin of every pixel, -1 for masked or out-of-range pixels.
    radial_counts : numpy.ndarray
        (n_q,) pixels per q bin (over the chi range).
    shape : tuple[int, int]
        Detector (rows, cols).
    pixel_bin : numpy.ndarray
        (rows * cols,) flat bin (chi * n_q + q) of every pixel, -1 for pixels in no bin.
    """

    bins: PolarBins
    matrix: sp.csr_matrix
    counts: np.ndarray
    q_index: np.ndarray
    radial_counts: np.ndarray
    shape: tuple[int, int]
    pixel_bin: np.ndarray


def _bin_index(x: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Index of the bin holding x, -1 outside; the upper edge belongs to the last bin.

    Bin k holds ``edges[k] <= x < edges[k + 1]`` exactly (as ``numpy.searchsorted``). Regular
    edges use one multiply and a one-step correction where it rounded across an edge (fast
    path); irregular ones (e.g. log-spaced q) a search.
    """
    n = edges.size - 1
    lo, hi = edges[0], edges[-1]
    widths = np.diff(edges)
    if np.allclose(widths, widths[0], rtol=1e-9, atol=0):
        index = np.floor((x - lo) * (n / (hi - lo))).astype(np.int64)
        # the multiply rounds: move values that landed across an edge to the bin the edges say
        inside = (index >= 0) & (index < n)
        k = np.clip(index, 0, n - 1)
        index = np.where(inside & (x < edges[k]), index - 1, index)
        index = np.where(inside & (k + 1 <= n - 1) & (x >= edges[np.minimum(k + 1, n)]), index + 1, index)
    else:
        index = np.searchsorted(edges, x, side="right").astype(np.int64) - 1
    index[x == hi] = n - 1
    index[(x < lo) | (x > hi) | ~np.isfinite(x)] = -1
    return np.clip(index, -1, n - 1)


def build_bin_map(q: np.ndarray, chi_deg: np.ndarray, mask: np.ndarray, bins: PolarBins) -> BinMap:
    """Sparse map from pixels to (chi, q) bins, each pixel by its centre (no splitting).

    Parameters
    ----------
    q
        |q| of every pixel centre (1/A), shape (rows, cols), e.g. ``Geometry.q()``.
    chi_deg
        chi of every pixel centre (degrees, pyFAI convention), e.g. ``Geometry.chi()``.
    mask
        bool, True = masked.
    bins
        Bin edges.

    Returns
    -------
    BinMap

    Notes
    -----
    Histogram integration without pixel splitting (Ashiotis et al. 2015,
    doi:10.1107/S1600576715004306, section 2.2); chi is wrapped into the bins' range
    modulo 360 degrees so ranges crossing the +-180 cut work.

    Validation
    ----------
    pyFAI ``integrate2d_ng`` / ``integrate1d_ng`` with method ("no", "histogram", "cython")
    to 1e-4 relative (tests/xmodel/test_reduction.py).
    """
    q = np.asarray(q, dtype=np.float64)
    chi_deg = np.asarray(chi_deg, dtype=np.float64)
    mask = np.asarray(mask, dtype=bool)
    if not (q.shape == chi_deg.shape == mask.shape) or q.ndim != 2:
        raise ReductionError(
            f"q {q.shape}, chi {chi_deg.shape} and mask {mask.shape} must be 2D arrays of the "
            f"same detector shape (rows, cols)."
        )
    lo_chi = bins.chi_edges[0]
    chi_wrapped = lo_chi + np.mod(chi_deg - lo_chi, 360.0)
    q_index = _bin_index(q.ravel(), bins.q_edges)
    chi_index = _bin_index(chi_wrapped.ravel(), bins.chi_edges)
    valid = (q_index >= 0) & (chi_index >= 0) & ~mask.ravel()
    q_index = np.where(valid, q_index, -1).astype(np.int32)
    pixels = np.flatnonzero(valid)
    rows = chi_index[pixels] * bins.n_q + q_index[pixels]
    n_bins = bins.n_chi * bins.n_q
    order = np.argsort(rows, kind="stable")
    indptr = np.zeros(n_bins + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=n_bins), out=indptr[1:])
    indices = pixels[order].astype(np.int32 if q.size < 2**31 else np.int64)
    matrix = sp.csr_matrix(
        (np.ones(pixels.size, dtype=np.float32), indices, indptr), shape=(n_bins, q.size)
    )
    counts = np.diff(indptr).reshape(bins.n_chi, bins.n_q)
    pixel_bin = np.full(q.size, -1, dtype=np.int32)
    pixel_bin[pixels] = rows
    return BinMap(bins, matrix, counts, q_index, counts.sum(axis=0), q.shape, pixel_bin)


def _as_columns(frames: np.ndarray, out: np.ndarray | None = None, block: int = 1 << 22) -> np.ndarray:
    """(b, rows, cols) -> (rows * cols, b) float32 in a few large blocks.

    Each block's copy releases the GIL; few blocks keep the GIL requests, which wait for the
    reader thread's h5py call to return, rare.
    """
    b = frames.shape[0]
    flat = frames.reshape(b, -1)
    if out is None:
        out = np.empty((flat.shape[1], b), dtype=np.float32)
    for start in range(0, flat.shape[1], block):
        out[start:start + block] = flat[:, start:start + block].T
    return out


def _means(sums: np.ndarray, bin_map: BinMap, counts: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Bin sums (n_bins, b) -> polar means (b, n_chi, n_q) float32, radial (b, n_q) float32.

    ``counts`` (n_bins, b): valid pixels per bin and frame when some frames lost pixels
    (invalid values); default the bin map's counts for every frame.

    One large numpy call per output: each releases the GIL, and each release can make the
    calling thread wait for the reader thread's h5py call.
    """
    bins = bin_map.bins
    b = sums.shape[1]
    with np.errstate(invalid="ignore", divide="ignore"):
        if counts is None:
            per_bin = bin_map.counts.reshape(1, -1).astype(np.float32)
            polar = np.divide(sums.T, per_bin, dtype=np.float32)  # 0 / 0 = NaN for empty bins
            radial_counts = bin_map.radial_counts[:, None]
        else:
            polar = np.divide(sums.T, counts.T, dtype=np.float32)
            radial_counts = counts.reshape(bins.n_chi, bins.n_q, b).sum(axis=0, dtype=np.float64)
        radial = sums.reshape(bins.n_chi, bins.n_q, b).sum(axis=0, dtype=np.float64)
        radial = (radial / radial_counts).T.astype(np.float32)
    return polar.reshape(b, bins.n_chi, bins.n_q), radial


def _exclude_invalid(frames: np.ndarray, sums: np.ndarray, bin_map: BinMap, scan,
                     full_check: bool) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    """Take the pixels invalid in their own frame out of the bin sums.

    Parameters
    ----------
    frames : (b, rows, cols) as read
    sums : (n_bins, b) bin sums of the frames as read; corrected in place
    scan : the open scan (:meth:`xmodel.io.Scan.invalid_pixels`)
    full_check : test every frame pixel by pixel (signed or float data); otherwise only the
        pixels of bins whose sum is above ``scan.invalid_above`` (a value above it makes the
        sum of its bin larger still, unsigned counts being non-negative), so a frame without
        invalid values costs one comparison per bin

    Returns
    -------
    counts : (n_bins, b) valid pixels per bin and frame, None when no frame lost a pixel
    invalid : (b,) binned pixels invalid in each frame
    lost : (K, 3) frame offset in the batch, flat bin, pixels lost
    """
    b = frames.shape[0]
    invalid = np.zeros(b, dtype=np.int32)
    lost_rows = []
    counts = None
    high = None
    if full_check:
        suspects = range(b)
    elif scan.invalid_above is None:
        suspects = []
    else:
        # float32 sums round: a little slack only adds suspects, which are then checked exactly
        high = sums > np.float32(scan.invalid_above) * np.float32(0.999)
        suspects = np.flatnonzero(high.any(axis=0))
    for k in suspects:
        flat = frames[k].reshape(-1)
        if high is None:  # every pixel of the frame
            bad = np.flatnonzero(scan.invalid_pixels(flat))
            bad = bad[bin_map.pixel_bin[bad] >= 0]
        else:  # only the pixels of the bins whose sum is high enough to hide an invalid value
            pixels = bin_map.matrix[np.flatnonzero(high[:, k])].indices
            bad = pixels[scan.invalid_pixels(flat[pixels])]
        if bad.size == 0:
            continue
        column = flat.astype(np.float32)
        column[bad] = 0.0
        sums[:, k] = bin_map.matrix @ column
        lost = np.bincount(bin_map.pixel_bin[bad], minlength=sums.shape[0])
        if counts is None:
            counts = np.repeat(bin_map.counts.reshape(-1, 1), b, axis=1).astype(np.float32)
        counts[:, k] -= lost
        invalid[k] = bad.size
        where = np.flatnonzero(lost)
        lost_rows.append(np.stack([np.full(where.size, k), where, lost[where]], axis=1))
    lost = np.concatenate(lost_rows).astype(np.int64) if lost_rows else np.zeros((0, 3), np.int64)
    return counts, invalid, lost


def reduce_scan_frames(scan, bin_map: BinMap, frames) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Read the frames ``frames`` (increasing indices) of an open scan and reduce them as
    :func:`reduce_scan` does: the work of one spatial tile of a distributed run
    (:mod:`xmodel.distributed`) or one batch of a live run (:mod:`xmodel.follow`).

    Returns
    -------
    polar (b, n_chi, n_q), radial (b, n_q) float32 means; invalid (b,) pixels invalid in each
    frame; lost (K, 3) scan frame, flat bin, pixels lost (:func:`_exclude_invalid`).
    """
    frames = np.asarray(frames, dtype=np.int64).reshape(-1)
    buffer = np.empty((frames.size, *scan.frame_shape), dtype=scan.dtype)
    for run in np.split(np.arange(frames.size), np.flatnonzero(np.diff(frames) != 1) + 1):
        if run.size:                                      # consecutive frames in one read
            scan.read_into(int(frames[run[0]]), buffer[run[0]:run[-1] + 1])
    sums = bin_map.matrix @ _as_columns(buffer)
    counts, invalid, lost = _exclude_invalid(buffer, sums, bin_map, scan, scan.dtype.kind in "if")
    polar, radial = _means(sums, bin_map, counts)
    lost[:, 0] = frames[lost[:, 0]]
    return polar, radial, invalid, lost


def reduce_frames(frames: np.ndarray, bin_map: BinMap) -> tuple[np.ndarray, np.ndarray]:
    """Mean intensity per (chi, q) bin and per q bin for a batch of frames.

    Parameters
    ----------
    frames
        (b, rows, cols) or (rows, cols), counts (any real dtype).
    bin_map
        From :func:`build_bin_map` for the same detector shape.

    Returns
    -------
    polar : numpy.ndarray
        (b, n_chi, n_q) float32 mean per bin, NaN where a bin holds no valid pixel.
    radial : numpy.ndarray
        (b, n_q) float32 mean per q bin over all valid pixels in the chi range.

    Notes
    -----
    Mean = sum of pixel values / number of pixels per bin (pyFAI's ``integrate2d`` with no
    corrections; Ashiotis et al. 2015, doi:10.1107/S1600576715004306).

    Validation
    ----------
    pyFAI ``integrate2d_ng`` and ``integrate1d_ng``, no splitting (tests/xmodel/test_reduction.py).
    """
    frames = np.asarray(frames)
    if frames.ndim == 2:
        frames = frames[None]
    if frames.shape[1:] != tuple(bin_map.shape):
        raise ReductionError(
            f"Frames of shape {frames.shape[1:]} do not match the bin map's detector shape "
            f"{tuple(bin_map.shape)}: build the bin map from this detector's geometry."
        )
    if frames.shape[0] == 1:
        sums = (bin_map.matrix @ frames.reshape(-1).astype(np.float32, copy=False))[:, None]
    else:
        sums = bin_map.matrix @ _as_columns(frames)
    return _means(sums, bin_map)


# --------------------------------------------------------------------------- streaming
def _progress_printer(n_frames: int) -> Callable[[int, int], None]:
    """A ``(done, total)`` callback showing progress (`xmodel.progress.progress_bar`: a tqdm bar on
    a terminal, periodic log lines otherwise)."""
    from xmodel.progress import progress_bar

    bar = progress_bar(n_frames, desc="reduce", unit="frames")

    def show(done: int, total: int) -> None:
        if done > bar.n:
            bar.update(done - bar.n)
        if done >= total:
            bar.close()

    return show


def _fingerprint(scan, bin_map: BinMap, poni_text: str, mask: np.ndarray, positions_um, monitor,
                 identity: str) -> str:
    """What a resumed run must share with the first: the master's identity (its bytes), the
    frames, geometry, mask, bins, positions and monitor."""
    digest = hashlib.sha256()
    digest.update(f"{identity} {scan.n_frames} {scan.frame_shape}".encode())
    digest.update(np.ascontiguousarray(bin_map.bins.q_edges).tobytes())
    digest.update(np.ascontiguousarray(bin_map.bins.chi_edges).tobytes())
    digest.update(np.packbits(mask).tobytes())
    digest.update(poni_text.encode())
    for extra in (positions_um, monitor):
        digest.update(b"none" if extra is None else np.ascontiguousarray(extra, np.float64).tobytes())
    return digest.hexdigest()


def _prepare_output(out: Path, scan, bin_map: BinMap, poni_text: str, mask: np.ndarray,
                    positions_um, grid, monitor, hot_pixels: int, source: str) -> int:
    """Create the output file, or check an existing one; return frames already really written."""
    identity = scan.identity()
    key = _fingerprint(scan, bin_map, poni_text, mask, positions_um, monitor, identity)
    if out.exists():
        done, attrs = reduced.checkpoint(out)
        if attrs.get("fingerprint") != key:
            same_master = attrs.get("master_identity") == identity
            what = ("geometry, mask, bins, positions or monitor" if same_master
                    else "scan (another master file, even if of the same shape)")
            raise ReductionError(
                f"{out} holds a reduction of {attrs.get('master', '?')} with a different {what} than "
                f"requested for {scan.master}; delete it to start again or choose another output path."
            )
        really = reduced.first_unwritten(out, done)
        if really < done:
            log.warning("%s: frames %d to %d were recorded as done but hold no data (an earlier write "
                        "failed); reducing them again", out, really, done - 1)
        return really
    tmp = out.with_name(out.name + ".partial")
    try:
        _create_output(
            tmp, n_frames=scan.n_frames, bins=bin_map.bins, bin_counts=bin_map.counts,
            radial_counts=bin_map.radial_counts, mask=mask, positions_um=positions_um, grid=grid,
            monitor=monitor, count_time=scan.count_time,
            attrs={"poni": poni_text, "master": str(Path(scan.master).resolve()), "master_identity": identity,
                   "fingerprint": key,
                   "method": "histogram, no pixel splitting, no corrections; pixels invalid in a frame excluded",
                   "positions_source": source, "hot_pixels": int(hot_pixels)})
        tmp.replace(out)
    except OSError as err:
        raise _write_failure(out, err, 0, scan.n_frames, 0) from err
    return 0


def _create_output(path: Path, **kwargs) -> None:
    """`xmodel.reduced.create`; one place for tests to make the creation fail."""
    reduced.create(path, **kwargs)


def hot_pixel_mask(scan, n_frames: int, mask: np.ndarray, threshold_sigma: float = HOT_SIGMA) -> np.ndarray:
    """Pixels that are high in most frames: True = hot, for the whole scan.

    The per-pixel median over ``n_frames`` frames spread over the scan (frame-invalid values
    left out) is compared with the median of its 5 x 5 neighbourhood; a pixel is hot when it
    exceeds that by more than ``threshold_sigma`` Poisson standard deviations,
    ``m - m_local > threshold_sigma * sqrt(m_local + 1)``.

    Notes
    -----
    A median over frames ignores a pixel that is high in a minority of frames (a real
    diffraction spot that moves); a hot pixel is high in most of them. The Poisson scale
    ``sqrt(mean)`` of counting statistics sets the threshold.
    """
    from scipy.ndimage import median_filter

    n = max(1, min(int(n_frames), scan.n_frames))
    picks = np.unique(np.linspace(0, scan.n_frames - 1, n).round().astype(int))
    stack = np.empty((picks.size, *scan.frame_shape), dtype=np.float32)
    for k, i in enumerate(picks):
        frame = scan.frame(int(i))
        values = frame.astype(np.float32)
        values[scan.invalid_pixels(frame) | mask] = np.nan
        stack[k] = values
    with warnings.catch_warnings():  # masked pixels are NaN in every frame
        warnings.simplefilter("ignore", RuntimeWarning)
        med = np.nanmedian(stack, axis=0)
    filled = np.where(np.isfinite(med), med, np.nanmedian(med))
    local = median_filter(filled, size=5, mode="nearest")
    with np.errstate(invalid="ignore"):
        hot = np.isfinite(med) & (med - local > threshold_sigma * np.sqrt(local + 1.0))
    return hot & ~mask


def _reader(scan, starts: list[int], batch_size: int, pool: queue.Queue, ready: queue.Queue, stop: threading.Event) -> None:
    """Read batches into recycled buffers; h5py holds the GIL, so this runs in its own thread."""
    try:
        for start in starts:
            buffer = pool.get()
            if buffer is None or stop.is_set():
                break
            b = min(batch_size, scan.n_frames - start)
            for k in range(b):  # one frame per call: h5py holds the GIL for a whole call
                scan.read_into(start + k, buffer[k:k + 1])
            ready.put((start, buffer, b))
        ready.put(None)
    except BaseException as err:  # handed to the main thread
        ready.put(err)


def _write_failure(out: Path, err: OSError, start: int, stop: int, done: int) -> ReductionError:
    """The message of a failed write: what failed, where the checkpoint is, what to do."""
    full = getattr(err, "errno", None) == errno.ENOSPC or "no space left" in str(err).lower()
    cause = "the disk is full (ENOSPC)" if full else f"{err}"
    kept = f"frames 0 to {done - 1} are safely written" if done else "no frame is written yet"
    return ReductionError(
        f"Writing frames {start} to {stop - 1} to {out} failed: {cause}. The checkpoint stays at frame "
        f"{done} ({kept}); {'free some space' if full else 'fix the cause'} and run the same command "
        f"again to finish the scan."
    )


def reduce_scan(
    master: str | Path,
    out: str | Path,
    *,
    poni: str | Path | None = None,
    mask=None,
    bins: PolarBins | BinMap | None = None,
    q_bins: int = 500,
    chi_bins: int = 360,
    batch_size: int = 16,
    workers: int = 2,
    progress: bool | Callable[[int, int], None] = True,
    positions_um: np.ndarray | None = None,
    monitor: np.ndarray | None = None,
    hot_pixels: int = 0,
    positions_source: str = "",
    scheduler=None,
    tile: tuple[int, int] | None = None,
    follow=None,
) -> Path:
    """Reduce every frame of a scan to polar images and radial profiles, resumably.

    Parameters
    ----------
    master
        Eiger ``<name>_master.h5``.
    out
        Output HDF5 file (schema: :mod:`xmodel.reduced`). If it exists and holds a run of the
        same scan (the master's identity, not only its shape), geometry, mask, bins, positions
        and monitor, the run resumes at the first frame not really written; otherwise
        ReductionError.
    poni, mask
        Passed to :func:`xmodel.io.open_scan`.
    bins
        Bins to use, or a ready :class:`BinMap` of this scan's geometry and mask (saves its
        set-up, about 2 s for an Eiger 4M, when several scans share them); default
        :func:`default_bins` with ``q_bins`` x ``chi_bins``.
    batch_size
        Frames per sparse product. Memory: two uint32 batches plus one float32 batch
        (about 0.9 GB for 16 Eiger 4M frames) and the bin map (about 40 MB).
    workers
        Threads: 1 reads and reduces in turn; 2 reads (h5py holds the GIL while it
        decompresses) in a second thread while the calling thread converts and multiplies
        (numpy and scipy's sparse products release the GIL), so both cores work. More than
        2 behaves as 2: one reader saturates h5py, whose reads do not run in parallel.
    progress
        True for a progress line on stderr, False for none, or a callable
        ``progress(frames_done, n_frames)`` called after each batch is saved.
    positions_um
        (frames, 2) scan positions in um (y, x), acquisition order, from the beamline's scan
        file or the nominal grid (:mod:`xmodel.positions`); default: the master's own
        ``/entry/sample/positions`` if it has any, else none (said once in the log: maps and
        the neighbour passes need positions).
    monitor
        (frames,) incident-flux monitor, stored (counts are not divided by it).
    hot_pixels
        If > 0, the number of frames whose per-pixel median finds hot pixels
        (:func:`hot_pixel_mask`), masked for the whole scan.
    positions_source
        Words saying where the positions came from (stored as an attribute).
    scheduler
        Reduce on a dask cluster, tile by tile (:mod:`xmodel.distributed`): ``"local"``,
        ``"local:N"``, a scheduler address or file, or a ``distributed.Client``; None (default)
        reduces in this process. ``workers`` and ``batch_size`` then do not apply.
    tile
        (rows, cols) scan points per task of a distributed run (default
        :data:`xmodel.distributed.DEFAULT_TILE`).
    follow
        :class:`xmodel.follow.FollowOptions`: reduce the frames while the detector writes them
        (live mode, :mod:`xmodel.follow`): wait for the master and the first frame, then for
        new frames until the scan's last (``nimages x ntrigger``) or the stop file; None
        (default): the scan is complete. Not with ``hot_pixels`` or ``scheduler``.

    Returns
    -------
    Path
        ``out``, with ``/entry/reduction/{polar, radial, q, chi, q_edges, chi_edges, counts,
        mask, invalid_pixels, invalid_bins, positions, scan_shape, grid_index, monitor,
        count_time}`` (see :mod:`xmodel.reduced`).

    Raises
    ------
    ReductionError
        Bad arguments, an output of another run, or a failed write (a full disk): the message
        names the file and the frames; the checkpoint stays at the last batch really written
        and a rerun finishes the scan.

    Notes
    -----
    Each batch is written and flushed, then ``frames_done`` is advanced and flushed, so a
    killed or failed run loses at most the batch in flight. Binning as :func:`reduce_frames`;
    values invalid in their own frame (:meth:`xmodel.io.Scan.invalid_pixels`) are left out of
    that frame's bin sums and pixel counts only.

    Validation
    ----------
    An interrupted and resumed run equals an uninterrupted one; polar images equal an exact
    float64 histogram over pyFAI's pixel centres with the frame's dummy pixels left out
    (tests/xmodel/test_reduction.py).
    """
    from xmodel.geometry import _poni_text
    from xmodel.positions import (
        NO_POSITIONS,
        PositionsError,
        derive_grid,
        grid_from_shape,
    )

    out = Path(out)
    if int(batch_size) < 1 or int(workers) < 1:
        raise ReductionError(
            f"batch_size={batch_size} and workers={workers} must be positive integers, e.g. 16 and 2."
        )
    batch_size = int(batch_size)
    if follow is not None and (int(hot_pixels) > 0 or scheduler is not None):
        raise ReductionError("A live run (follow) reduces the frames in order as they arrive, in this process: "
                             "it takes neither hot_pixels (they need frames from the whole scan) nor a scheduler.")
    if follow is not None:
        from xmodel.follow import open_live_scan

        opened = open_live_scan(master, follow, poni=poni, mask=mask)
    else:
        opened = open_scan(master, poni=poni, mask=mask)
    with opened as scan:
        geometry = scan.geometry
        if positions_um is None and scan.positions_um is not None:
            positions_um, positions_source = scan.positions_um, f"{scan.master}:/entry/sample/positions"
        grid = None
        if positions_um is not None:
            positions_um = np.asarray(positions_um, dtype=np.float64)
            if positions_um.shape != (scan.n_frames, 2):
                raise ReductionError(f"positions_um has shape {positions_um.shape} but {scan.master} holds "
                                     f"{scan.n_frames} frames: give one (y, x) row per frame.")
            grid = derive_grid(positions_um)
        else:
            log.warning("%s: %s", scan.master, NO_POSITIONS)
            if scan.scan_shape is not None:
                try:
                    grid = grid_from_shape(scan.n_frames, scan.scan_shape)
                except PositionsError:
                    grid = None
        if monitor is not None:
            monitor = np.asarray(monitor, dtype=np.float64).reshape(-1)
            if monitor.shape != (scan.n_frames,):
                raise ReductionError(f"monitor has {monitor.size} values but {scan.master} holds "
                                     f"{scan.n_frames} frames.")
        full_mask = scan.mask
        if int(hot_pixels) > 0:
            hot = hot_pixel_mask(scan, int(hot_pixels), scan.mask)
            log.info("%s: %d hot pixels masked for the whole scan", scan.master, int(hot.sum()))
            full_mask = scan.mask | hot
        if isinstance(bins, BinMap):
            bin_map = bins
            if tuple(bin_map.shape) != scan.frame_shape:
                raise ReductionError(
                    f"The bin map is for a detector of shape {tuple(bin_map.shape)} but {scan.master} "
                    f"holds frames of shape {scan.frame_shape}: build it from this scan's geometry."
                )
            if int(hot_pixels) > 0:
                bin_map = build_bin_map(geometry.q(), geometry.chi(), full_mask, bin_map.bins)
        else:
            if bins is None:
                bins = default_bins(geometry, full_mask, n_q=q_bins, n_chi=chi_bins)
            bin_map = build_bin_map(geometry.q(), geometry.chi(), full_mask, bins)
        poni_text = _poni_text(geometry)
        done = _prepare_output(out, scan, bin_map, poni_text, full_mask, positions_um, grid, monitor,
                               int(hot_pixels), positions_source)
        if progress is True:
            report = _progress_printer(scan.n_frames)
        elif callable(progress):
            report = progress
        else:
            report = None
        if done >= scan.n_frames:
            return out
        if follow is not None:
            from xmodel.follow import follow_frames

            follow_frames(scan, out, bin_map, done, batch_size, report, follow)
            reduced.write_intensity_map(out)
            return out
        if scheduler is not None:
            from xmodel.distributed import DEFAULT_TILE, reduce_tiles

            reduce_tiles(scan, out, bin_map, grid, scheduler, poni=poni, report=report, tile=tile or DEFAULT_TILE)
            reduced.write_intensity_map(out)
            return out
        full_check = scan.dtype.kind in "if"
        starts = list(range(done, scan.n_frames, batch_size))
        n_buffers = 2 if workers > 1 else 1  # the reader fills one while the other is converted
        pool: queue.Queue = queue.Queue()
        for _ in range(n_buffers):
            pool.put(np.empty((batch_size, *scan.frame_shape), dtype=scan.dtype))
        columns = np.empty((int(np.prod(scan.frame_shape)), batch_size), dtype=np.float32)
        ready: queue.Queue = queue.Queue()
        stop = threading.Event()
        thread = None
        if workers > 1:
            thread = threading.Thread(
                target=_reader, args=(scan, starts, batch_size, pool, ready, stop), daemon=True
            )
            thread.start()
        f = None
        try:
            try:
                f = h5py.File(out, "r+")
            except OSError as err:
                raise _write_failure(out, err, done, scan.n_frames, done) from err
            for start in starts:
                if thread is None:
                    buffer = pool.get()
                    b = min(batch_size, scan.n_frames - start)
                    scan.read_into(start, buffer[:b])
                else:
                    item = ready.get()
                    if isinstance(item, BaseException):
                        raise item
                    start, buffer, b = item
                cols = _as_columns(buffer[:b], columns[:, :b] if b == batch_size else None)
                sums = bin_map.matrix @ cols
                counts, invalid, lost = _exclude_invalid(buffer[:b], sums, bin_map, scan, full_check)
                pool.put(buffer)
                polar, radial = _means(sums, bin_map, counts)
                lost[:, 0] += start
                try:
                    _write_batch(f, start, polar, radial, invalid, lost)
                    f.flush()
                    reduced.set_frames_done(f, start + b)
                    f.flush()
                except OSError as err:
                    raise _write_failure(out, err, start, start + b, start) from err
                done = start + b
                if report is not None:
                    report(start + b, scan.n_frames)
        finally:
            stop.set()
            if thread is not None:
                pool.put(None)  # wakes a reader waiting for a free buffer
                thread.join()
            if f is not None:
                try:
                    f.close()
                except OSError as err:  # a failed write may fail the close too; the checkpoint holds
                    log.warning("closing %s after a failed write: %s", out, err)
    reduced.write_intensity_map(out)
    return out


def _write_batch(f: h5py.File, start: int, polar, radial, invalid, lost) -> None:
    """Store one batch (`xmodel.reduced.write_batch`); one place for tests to make a write fail."""
    reduced.write_batch(f, start, polar, radial, invalid, lost)


__all__ = [
    "HOT_SIGMA", "hot_pixel_mask", "BinMap", "PolarBins", "ReductionError", "ScanError", "build_bin_map", "default_bins",
    "reduce_frames", "reduce_scan",
]
