"""Polar (q, chi) images and radial profiles from detector frames, streamed over a scan.

Each valid pixel falls, by its centre, into one (chi, q) bin (no pixel splitting, pyFAI's
``("no", "histogram", "cython")``); the bin assignment is a sparse pixel -> bin matrix built
once (:func:`build_bin_map`) and applied to batches of frames (:func:`reduce_frames`).
:func:`reduce_scan` streams a whole Eiger scan through it with a reader thread overlapping
the decompression with the sparse products, and resumes an interrupted run. Pixels invalid in
one frame (the dtype's dummy value, saturated, negative) are left out of that frame's bins
only; a frame that cannot be read is flagged and the scan goes on; the scan positions, monitor
and exposure time are stored with the results, whose schema :mod:`xmodel.reduced` owns.
"""
from __future__ import annotations

import errno
import hashlib
import logging
import math
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
from xmodel.io import FrameReadError, ScanError, open_scan

log = logging.getLogger(__name__)

#: Poisson standard deviations above its neighbourhood that make a pixel hot (`hot_pixel_mask`)
HOT_SIGMA = 10.0
#: most q bins (``--q-bins``): 100000 resolve dq/q = 1e-5 over a decade, far below any peak width
MAX_Q_BINS = 100_000
#: most chi bins (``--chi-bins``): 36000 are 0.01 degree wide
MAX_CHI_BINS = 36_000
#: most bins of one polar image: 2**26 float32 bins are 256 MiB per frame (HDF5 chunks stay < 4 GiB)
MAX_BINS = 2**26


class ReductionError(ValueError):
    """Bad reduction input or an existing output that does not match the requested run."""


def _checked_int(value, name: str, option: str, *, minimum: int = 1, maximum: int | None = None,
                 meaning: str = "", example: str = "") -> int:
    """``value`` as an int in [minimum, maximum]; else ReductionError quoting the argument, its
    command-line option, the value and the range (an integral float is accepted, a bool is not)."""
    try:
        number = math.nan if isinstance(value, bool) else float(value)
    except (TypeError, ValueError, OverflowError):
        number = math.nan
    if not (math.isfinite(number) and number.is_integer() and number >= minimum
            and (maximum is None or number <= maximum)):
        span = f"from {minimum} to {maximum}" if maximum is not None else f">= {minimum}"
        raise ReductionError(f"{name} ({option}) = {value!r}: expected an integer {span}"
                             f"{' (' + meaning + ')' if meaning else ''}{', e.g. ' + example if example else ''}.")
    return int(number)


def check_arguments(*, q_bins: int = 500, chi_bins: int = 360, batch_size: int = 16, workers: int = 2,
                    hot_pixels: int = 0) -> tuple[int, int, int, int, int]:
    """The numeric arguments of a reduction (and their ``xmodel reduce`` options), checked.

    Returns
    -------
    (q_bins, chi_bins, batch_size, workers, hot_pixels) as ints.

    Raises
    ------
    ReductionError
        A value that is not an integer in its range, naming the argument and its option: q bins
        1 to `MAX_Q_BINS`, chi bins 1 to `MAX_CHI_BINS` and together at most `MAX_BINS`,
        batch size and workers >= 1, hot-pixel frames >= 0 (0: off).
    """
    q_bins = _checked_int(q_bins, "q_bins", "--q-bins", maximum=MAX_Q_BINS, example="500")
    chi_bins = _checked_int(chi_bins, "chi_bins", "--chi-bins", maximum=MAX_CHI_BINS, example="360")
    if q_bins * chi_bins > MAX_BINS:
        raise ReductionError(f"q_bins x chi_bins (--q-bins {q_bins} --chi-bins {chi_bins}) = {q_bins * chi_bins} bins "
                             f"per frame: expected at most {MAX_BINS} (2**26, 256 MiB of float32 per frame), "
                             f"e.g. --q-bins 500 --chi-bins 360.")
    batch_size = _checked_int(batch_size, "batch_size", "--batch-size", meaning="frames per sparse product",
                              example="16")
    workers = _checked_int(workers, "workers", "--workers", meaning="threads; more than 2 work as 2", example="2")
    hot_pixels = _checked_int(hot_pixels, "hot_pixels", "--hot-pixels", minimum=0,
                              meaning="frames of the hot-pixel test, 0: off", example="32")
    return q_bins, chi_bins, batch_size, workers, hot_pixels


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


def _checked_range(pair, name: str, option: str, unit: str, lower: float, example: str) -> tuple[float, float]:
    """A (lo, hi) range of finite numbers with lower <= lo < hi; else ReductionError naming the option."""
    try:
        lo, hi = (math.nan if isinstance(v, bool) else float(v) for v in pair)
    except (TypeError, ValueError, OverflowError):
        lo = hi = math.nan
    if not (math.isfinite(lo) and math.isfinite(hi) and lower <= lo < hi):
        low = f"{lower:g} <= " if math.isfinite(lower) else ""
        raise ReductionError(f"{name} ({option}) = {tuple(pair) if isinstance(pair, (list, tuple)) else pair!r}: "
                             f"expected two finite numbers LO HI with {low}LO < HI ({unit}), e.g. {option} {example}.")
    return lo, hi


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
    n_q, n_chi = check_arguments(q_bins=n_q, chi_bins=n_chi)[:2]
    if q_spacing not in ("linear", "log"):
        raise ReductionError(f"q_spacing must be 'linear' or 'log', not {q_spacing!r}.")
    given_q_range = q_range is not None
    if q_range is None:
        q = np.asarray(geometry.q())[~np.asarray(mask, dtype=bool)]
        if q.size == 0:
            raise ReductionError("Every pixel is masked: no q range to bin; check the mask.")
        q_range = (float(q.min()), float(q.max()))
    else:
        q_range = _checked_range(q_range, "q_range", "--q-range", "1/A", 0.0, "0.01 3.4")
    chi_range = (-180.0, 180.0) if chi_range is None else _checked_range(
        chi_range, "chi_range", "--chi-range", "degrees", -math.inf, "-180 180")
    if chi_range[1] - chi_range[0] > 360.0 + 1e-9:
        raise ReductionError(
            f"chi_range (--chi-range) = {tuple(chi_range)} spans more than 360 degrees; use e.g. (-180, 180) "
            f"or (0, 360)."
        )
    chi_edges = np.linspace(chi_range[0], chi_range[1], n_chi + 1)
    if q_spacing == "log":
        lo = float(q_range[0]) if given_q_range else max(float(q_range[0]), 0.005)
        if not 0 < lo < q_range[1]:
            raise ReductionError(f"q_range (--q-range) = {tuple(q_range)}: log-spaced q bins need 0 < LO < HI "
                                 f"(1/A), e.g. --q-range 0.01 3.4, or --q-spacing linear.")
        return PolarBins(q_edges=np.geomspace(lo, float(q_range[1]), n_q + 1), chi_edges=chi_edges)
    return PolarBins(q_edges=np.linspace(q_range[0], q_range[1], n_q + 1), chi_edges=chi_edges)


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
        try:
            frame = scan.frame(int(i))
        except FrameReadError as err:      # left out of the median; the reduction flags it
            log.warning("hot-pixel test: %s", err)
            stack[k] = np.nan
            continue
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


def _read_frames(scan, start: int, buffer: np.ndarray, b: int) -> list[FrameReadError]:
    """Read frames ``start .. start + b - 1`` into ``buffer[:b]``, one h5py call per frame (h5py
    holds the GIL for a whole call); a frame that does not decode is zero-filled and returned."""
    failed = []
    for k in range(b):
        try:
            scan.read_into(start + k, buffer[k:k + 1])
        except FrameReadError as err:
            buffer[k] = 0
            failed.append(err)
    return failed


def _reader(scan, work: list[tuple[int, int]], pool: queue.Queue, ready: queue.Queue, stop: threading.Event) -> None:
    """Read the batches ``(start, b)`` into recycled buffers; h5py holds the GIL, so this runs in its
    own thread."""
    try:
        for start, b in work:
            buffer = pool.get()
            if buffer is None or stop.is_set():
                break
            ready.put((start, buffer, b, _read_frames(scan, start, buffer, b)))
        ready.put(None)
    except BaseException as err:  # handed to the main thread
        ready.put(err)


def _write_failure(out: Path, err: OSError, start: int, stop: int, done: int, path: Path | None = None
                   ) -> ReductionError:
    """The message of a failed write: what failed, where the checkpoint is, what to do."""
    cause, fix = _cause(err, path or out)
    kept = f"frames 0 to {done - 1} are safely written" if done else "no frame is written yet"
    return ReductionError(
        f"Writing frames {start} to {stop - 1} to {out} failed: {cause}. The checkpoint stays at frame "
        f"{done} ({kept}); {fix} and run the same command again to finish the scan."
    )


def _cause(err: OSError, path: Path) -> tuple[str, str]:
    """What a failed write says happened, and what to do about it."""
    from xmodel.io import open_error

    text = str(err).lower()
    if getattr(err, "errno", None) == errno.ENOSPC or "no space left" in text:
        return "the disk is full (ENOSPC)", "free some space"
    if "lock" in text or isinstance(err, PermissionError):
        return f"{path} {open_error(path, err)}", "then"
    return f"{err}", "fix the cause"


def _check_output_path(out: Path) -> None:
    """A directory or a path in a missing folder as ``--out``: a ReductionError saying so."""
    if out.is_dir():
        raise ReductionError(f"out (--out) {out} is a directory: give the name of the results file, e.g. "
                             f"--out {out / 'reduced.h5'}.")
    if not out.parent.is_dir():
        what = "is a file, not a folder" if out.parent.exists() else "does not exist"
        raise ReductionError(f"The folder {out.parent} of out (--out) {out} {what}: create the folder first or "
                             f"choose another output path.")


def _check_per_frame(values: np.ndarray, name: str, n_frames: int, master, shape: tuple, positive: bool) -> np.ndarray:
    """Positions or monitor given to `reduce_scan`: one finite row per frame (a positive monitor)."""
    values = np.asarray(values, dtype=np.float64)
    if values.shape != shape:
        raise ReductionError(f"{name} has shape {values.shape} but {master} holds {n_frames} frames: expected "
                             f"{shape}, one {'(y, x) row' if len(shape) == 2 else 'value'} per frame.")
    ok = np.isfinite(values) & ((values > 0) if positive else True)
    bad = np.flatnonzero(~ok.reshape(n_frames, -1).all(axis=1))
    if bad.size:
        need = "a finite value > 0 (a monitor of zero or below cannot normalise a frame)" if positive else "finite"
        raise ReductionError(f"{name} of frame {int(bad[0])} is {values[bad[0]].tolist()}: expected {need}; "
                             f"{bad.size} such frames.")
    return values


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
        mask, invalid_pixels, invalid_bins, unreadable, positions, scan_shape, grid_index,
        monitor, count_time}`` (see :mod:`xmodel.reduced`).

    Raises
    ------
    ReductionError
        Bad arguments (naming the argument and its ``xmodel reduce`` option, see
        :func:`check_arguments`), bins that hold no valid pixel, an output that is a directory
        or in a missing folder, an output of another run, or a failed write (a full disk): the
        message names the file and the frames; the checkpoint stays at the last batch really
        written and a rerun finishes the scan.
    xmodel.reduced.OutputError
        An existing output that is locked by another process, not HDF5, or another kind of
        file (a master, a fit file); it is left as it is.
    xmodel.io.ScanError
        A scan that cannot be opened.

    Notes
    -----
    Each batch is written and flushed, then ``frames_done`` is advanced and flushed, so a
    killed or failed run loses at most the batch in flight. Binning as :func:`reduce_frames`;
    values invalid in their own frame (:meth:`xmodel.io.Scan.invalid_pixels`) are left out of
    that frame's bin sums and pixel counts only. A frame that cannot be read
    (:class:`xmodel.io.FrameReadError`) is stored as NaN, flagged in ``unreadable`` and named
    in the log, and the scan goes on; a later run of the same reduction reads the flagged
    frames again (after the data file is copied again) before it resumes. ``batch_size`` is
    at most the number of frames.

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
    checked = check_arguments(q_bins=q_bins, chi_bins=chi_bins, batch_size=batch_size, workers=workers,
                              hot_pixels=hot_pixels)
    _, _, batch_size, workers, hot_pixels = checked
    if bins is None:
        q_bins, chi_bins = checked[:2]
    _check_output_path(out)
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
        batch_size = min(batch_size, scan.n_frames)
        name = "positions_um"
        if positions_um is None and scan.positions_um is not None:
            positions_um, positions_source = scan.positions_um, f"{scan.master}:/entry/sample/positions"
            name = positions_source
        grid = None
        if positions_um is not None:
            positions_um = _check_per_frame(positions_um, name, scan.n_frames, scan.master, (scan.n_frames, 2),
                                            positive=False)
            grid = derive_grid(positions_um)
        else:
            log.warning("%s: %s", scan.master, NO_POSITIONS)
            if scan.scan_shape is not None:
                try:
                    grid = grid_from_shape(scan.n_frames, scan.scan_shape)
                except PositionsError:
                    grid = None
        if monitor is not None:
            monitor = _check_per_frame(monitor, "monitor", scan.n_frames, scan.master, (scan.n_frames,),
                                       positive=True)
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
        if not bin_map.counts.any():
            _no_pixel_in_bins(scan, geometry, full_mask, bin_map.bins)
        poni_text = _poni_text(geometry)
        done = _prepare_output(out, scan, bin_map, poni_text, full_mask, positions_um, grid, monitor,
                               int(hot_pixels), positions_source)
        if progress is True:
            report = _progress_printer(scan.n_frames)
        elif callable(progress):
            report = progress
        else:
            report = None
        if follow is not None and done < scan.n_frames:
            from xmodel.follow import follow_frames

            follow_frames(scan, out, bin_map, done, batch_size, report, follow)
            wrote = True
        elif scheduler is not None and done < scan.n_frames:
            from xmodel.distributed import DEFAULT_TILE, reduce_tiles

            reduce_tiles(scan, out, bin_map, grid, scheduler, poni=poni, report=report, tile=tile or DEFAULT_TILE)
            wrote = True
        else:
            retry = reduced.unreadable_frames(out, done)
            if retry.size:
                log.info("%s: reading again the %d frames an earlier run could not read: %s", scan.master,
                         retry.size, _frame_list(retry))
            work = [(int(i), 1) for i in retry]
            work += [(s, min(batch_size, scan.n_frames - s)) for s in range(done, scan.n_frames, batch_size)]
            wrote = _stream(scan, out, bin_map, work, done, batch_size, workers, report)
    _finish(out, scan.master, scan.n_frames, wrote)
    return out


def _frame_list(frames: np.ndarray, shown: int = 10) -> str:
    """Frame numbers for a message: the first ``shown`` and how many more."""
    text = ", ".join(str(int(i)) for i in frames[:shown])
    return text + (f" and {frames.size - shown} more" if frames.size > shown else "")


def _no_pixel_in_bins(scan, geometry, mask: np.ndarray, bins: PolarBins) -> None:
    """Bins that hold no valid pixel: a ReductionError comparing their ranges with the detector's."""
    valid = ~np.asarray(mask, bool)
    q = np.asarray(geometry.q())[valid]
    span = f"its valid pixels span q from {q.min():.4g} to {q.max():.4g} 1/A" if q.size else "every pixel is masked"
    raise ReductionError(
        f"No valid pixel of {scan.master} lies in the bins: q from {bins.q_edges[0]:.4g} to {bins.q_edges[-1]:.4g} "
        f"1/A (--q-range), chi from {bins.chi_edges[0]:g} to {bins.chi_edges[-1]:g} deg (--chi-range), while "
        f"{span}; choose ranges that overlap the detector (or leave them out for the full range)."
    )


def _stream(scan, out: Path, bin_map: BinMap, work: list[tuple[int, int]], done: int, batch_size: int,
            workers: int, report) -> bool:
    """Read, reduce and write the batches ``work`` ((start, frames) pairs: frames read again first,
    then the batches from the checkpoint on); True when anything was written.

    Each batch is written and flushed before the checkpoint advances; a frame that cannot be read
    is stored as NaN, flagged in ``unreadable`` and the scan goes on.
    """
    if not work:
        return False
    full_check = scan.dtype.kind in "if"
    binned = int(bin_map.radial_counts.sum())
    n_buffers = 2 if workers > 1 else 1  # the reader fills one while the other is converted
    pool: queue.Queue = queue.Queue()
    for _ in range(n_buffers):
        pool.put(np.empty((batch_size, *scan.frame_shape), dtype=scan.dtype))
    columns = np.empty((int(np.prod(scan.frame_shape)), batch_size), dtype=np.float32)
    ready: queue.Queue = queue.Queue()
    stop = threading.Event()
    thread = None
    if workers > 1:
        thread = threading.Thread(target=_reader, args=(scan, work, pool, ready, stop), daemon=True)
        thread.start()
    f = None
    try:
        try:
            f = h5py.File(out, "r+")
        except OSError as err:
            raise _write_failure(out, err, work[0][0], scan.n_frames, done) from err
        for start, b in work:
            if thread is None:
                buffer = pool.get()
                failed = _read_frames(scan, start, buffer, b)
            else:
                item = ready.get()
                if isinstance(item, BaseException):
                    raise item
                start, buffer, b, failed = item
            cols = _as_columns(buffer[:b], columns[:, :b] if b == batch_size else None)
            sums = bin_map.matrix @ cols
            counts, invalid, lost = _exclude_invalid(buffer[:b], sums, bin_map, scan, full_check)
            pool.put(buffer)
            polar, radial = _means(sums, bin_map, counts)
            flags = np.zeros(b, np.uint8)
            for err in failed:
                k = err.frame - start
                polar[k], radial[k], invalid[k], flags[k] = np.nan, np.nan, binned, 1
                log.warning("%s The frame is left out (NaN, flagged in /entry/reduction/unreadable) and the "
                            "scan goes on.", err)
            lost = lost[~np.isin(lost[:, 0], [err.frame - start for err in failed])]
            lost[:, 0] += start
            forward = start >= done
            try:
                _write_batch(f, start, polar, radial, invalid, lost, flags)
                f.flush()
                if forward:
                    reduced.set_frames_done(f, start + b)
                    f.flush()
            except OSError as err:
                raise _write_failure(out, err, start, start + b, done) from err
            if forward:
                done = start + b
                if report is not None:
                    report(done, scan.n_frames)
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
    return True


def _finish(out: Path, master, n_frames: int, wrote: bool) -> None:
    """After the last frame: the intensity map (when frames were written now or an earlier run
    failed before writing it) and the warning that lists the frames that could not be read."""
    try:
        with h5py.File(out, "r") as f:
            has_map = "entry/intensity_map" in f
        if wrote or not has_map:
            reduced.write_intensity_map(out)
    except OSError as err:
        cause, fix = _cause(err, out)
        raise ReductionError(f"Writing the intensity map to {out} failed: {cause}. Every frame is written (the "
                             f"checkpoint is at frame {n_frames}); {fix} and run the same command again to write "
                             f"the map.") from err
    bad = reduced.unreadable_frames(out, n_frames)
    if bad.size:
        log.warning("%s: %d of %d frames could not be read (frames %s); they are NaN and flagged in "
                    "/entry/reduction/unreadable of %s. Copy the damaged data files again and run the same "
                    "command: only those frames are read again.", master, bad.size, n_frames, _frame_list(bad),
                    out)


def _write_batch(f: h5py.File, start: int, polar, radial, invalid, lost, unreadable=None) -> None:
    """Store one batch (`xmodel.reduced.write_batch`); one place for tests to make a write fail."""
    reduced.write_batch(f, start, polar, radial, invalid, lost, unreadable)


__all__ = [
    "HOT_SIGMA", "hot_pixel_mask", "BinMap", "PolarBins", "ReductionError", "ScanError", "build_bin_map", "check_arguments",
    "default_bins",
    "reduce_frames", "reduce_scan",
]
