"""Read Dectris Eiger scans (master file + linked data files), streaming the frames.

The same reader opens files from a real Eiger and those written by
:func:`xmodel.dectris.write_scan`: ``/entry/data/data_000001``, ``data_000002``, ... are
external links (or datasets) of shape ``(frames, rows, cols)``; frames are numbered across
them in link order (each file may hold 1 to N frames). Metadata follow the Dectris names
(see :mod:`xmodel.dectris`). Real masters carry no scan positions: they come from the
beamline's scan file (:mod:`xmodel.positions`); ``/entry/sample/positions`` (um), written by
earlier versions of xmodel, is still read when present.

Beam centre. ``beam_center_x`` / ``beam_center_y`` are read in pixels from the detector's
outer corner, the convention of pyFAI (``pyFAI.io.nexus`` writes ``poni2 / pixel2``) and of
Fit2D's centre: for an untilted detector ``poni1 = beam_center_y * y_pixel_size`` and
``poni2 = beam_center_x * x_pixel_size``; the centre of the first pixel is at 0.5.

Invalid values. A pixel that holds the dtype's dummy value (2**32 - 1 for uint32, 2**16 - 1
for uint16, 2**8 - 1 for uint8: the Eiger's overflow / gap value), a negative or non-finite
value (float data), or more counts than the master's
``detectorSpecific/countrate_correction_count_cutoff`` is invalid in that frame
(:meth:`Scan.invalid_pixels`).

Every failure to read (a missing, renamed, truncated or locked file, a master key of the wrong
type, a frame of the wrong shape or dtype, data files without frames, the bitshuffle filter not
available) raises :class:`ScanError` naming the file, the key or the frame and what was
expected. A single frame whose chunk does not decode raises :class:`FrameReadError`, which a
reduction flags and goes past (:func:`xmodel.reduction.reduce_scan`).
"""
from __future__ import annotations

import errno
import hashlib
import logging
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

try:  # registers the bitshuffle/LZ4 filter with HDF5
    import hdf5plugin  # noqa: F401
except ImportError:  # pragma: no cover - reported when a frame fails to decompress
    hdf5plugin = None

log = logging.getLogger(__name__)

DETECTOR = "/entry/instrument/detector"
DATA_GROUP = "/entry/data"
#: names of the HDF5 filters met in detector files (HDF5 registered filter ids)
FILTER_NAMES = {1: "gzip", 2: "shuffle", 3: "fletcher32", 4: "szip", 32001: "Blosc", 32004: "LZ4",
                32008: "bitshuffle-LZ4", 32015: "Zstandard"}


class ScanError(ValueError):
    """A scan cannot be opened or one of its frames cannot be read."""


class FrameReadError(ScanError):
    """One frame cannot be read although the scan opened (its chunk does not decode).

    Attributes
    ----------
    frame : int or None
        The frame (0-based over the scan), None where unknown.
    path : Path or None
        The data file that holds it, None where unknown.
    """

    def __init__(self, message: str, frame: int | None = None, path: str | Path | None = None):
        super().__init__(message)
        self.frame = None if frame is None else int(frame)
        self.path = None if path is None else Path(path)


def open_error(path: str | Path, err: OSError) -> str:
    """Why HDF5 could not open ``path``, as the end of a sentence that starts with the file.

    Tells apart a directory, a file locked by another process (HDF5's file lock: another
    program holds it open for writing), a permission error, a truncated copy, a file that is
    not HDF5, and anything else (HDF5's own words).

    Examples
    --------
    >>> open_error("x.h5", OSError(11, "Unable to synchronously open file (unable to lock file, errno = 11)"))
    'is locked: another process holds it open for writing (HDF5 file lock); wait for that process to end or stop it'
    """
    path = Path(path)
    text = str(err)
    low = text.lower()
    if path.is_dir():
        return "is a directory, not an HDF5 file"
    if "unable to lock file" in low or (getattr(err, "errno", None) in (errno.EAGAIN, errno.EWOULDBLOCK)
                                        and "lock" in low):
        return ("is locked: another process holds it open for writing (HDF5 file lock); wait for that process "
                "to end or stop it")
    if isinstance(err, PermissionError) or getattr(err, "errno", None) == errno.EACCES:
        return "cannot be read: permission denied; check its permissions"
    m = re.search(r"truncated file: eof = (\d+).*stored_eof = (\d+)", text)
    if m:
        return (f"is truncated: it holds {int(m.group(1))} of its {int(m.group(2))} bytes (an incomplete copy "
                f"or an interrupted transfer); copy it again")
    if "file signature not found" in low:
        return "is not an HDF5 file (no HDF5 signature at its start)"
    return f"cannot be opened by HDF5: {text}"


def _shown(value) -> str:
    """A value read from a file, for a message: text decoded, arrays with their shape and dtype."""
    if isinstance(value, bytes):
        value = value.decode(errors="replace")
    array = np.asarray(value)
    if array.ndim == 0:
        return repr(value.item() if isinstance(value, np.generic) else value)
    return f"an array of shape {array.shape} ({array.dtype})"


def _number(f: h5py.File, key: str, master: Path, *, integer: bool = False, positive: bool = False,
            unit: str = "", fix: str = "") -> float | int | None:
    """The number stored at ``key`` (None when absent); ScanError naming the key and the file when
    it is not one finite number (a positive one, an integer, as asked)."""
    if key not in f:
        return None
    obj = f[key]
    value = obj[()] if isinstance(obj, h5py.Dataset) else None
    number = math.nan
    if value is not None:
        array = np.asarray(value)
        if array.size == 1 and array.dtype.kind in "uifb":
            number = float(array.reshape(-1)[0])
        elif array.size == 1 and array.dtype.kind in "SUO":
            text = array.reshape(-1)[0]
            try:
                number = float(text.decode() if isinstance(text, bytes) else text)
            except (TypeError, ValueError):
                number = math.nan
    ok = math.isfinite(number) and (not integer or number.is_integer()) and (not positive or number > 0)
    if not ok:
        what = "a group" if value is None else _shown(value)
        kind = ("a positive " if positive else "a finite ") + ("integer" if integer else "number")
        raise ScanError(f"{master}:{key} holds {what}; expected {kind}{' (' + unit + ')' if unit else ''}. "
                        f"{fix or 'The master file is damaged or not written by a Dectris detector.'}")
    return int(number) if integer else number


@dataclass
class _DataFile:
    """One data file: its link name, path, first global frame and dataset."""

    link: str
    path: Path
    first: int
    n: int
    dataset: h5py.Dataset
    file: h5py.File | None  # None when the dataset lives in the master file


def _unlinked_data_files(master: Path, linked: set[str]) -> list[str]:
    """Data files next to the master that no link names (a renamed file shows up here)."""
    found = sorted(p.name for p in master.parent.glob("*_data_*.h5") if p.name not in linked)
    return found[:4] + (["..."] if len(found) > 4 else [])


def _open_data_files(f: h5py.File, master: Path, partial: bool = False,
                     reuse: list[_DataFile] = ()) -> list[_DataFile]:
    """The data files of ``master`` in link order.

    ``partial``: a scan still being written (`xmodel.follow`): the first data file that is
    missing or cannot be opened yet ends the list instead of raising, and files are opened for
    SWMR reading; ``reuse``: files already open, kept as they are.
    """
    if DATA_GROUP not in f or not isinstance(f[DATA_GROUP], h5py.Group):
        raise ScanError(
            f"{master} has no {DATA_GROUP} group: is this a Dectris master file "
            f"(<name>_master.h5)? Pass the master file, not a data file."
        )
    group = f[DATA_GROUP]
    names = sorted(n for n in group if n.startswith("data_"))
    linked = set()
    for name in names:
        link = group.get(name, getlink=True)
        if isinstance(link, h5py.ExternalLink):
            linked.add(Path(link.filename).name)
    if not names:
        raise ScanError(
            f"{master}:{DATA_GROUP} holds no data_000001, data_000002, ... entries "
            f"(found {sorted(group)}); the scan has no frames."
        )
    files: list[_DataFile] = list(reuse)
    try:
        _open_each(group, names, linked, master, files, partial)
    except BaseException:
        for data in files[len(reuse):]:
            if data.file is not None:
                data.file.close()
        raise
    return files


def _open_each(group: h5py.Group, names: list[str], linked: set[str], master: Path,
               files: list[_DataFile], partial: bool = False) -> None:
    """Open the data of every link in ``names`` not yet in ``files`` into ``files`` (closed by
    the caller on error); ``partial``: a file not there or not readable yet ends the list."""
    first = sum(d.n for d in files)
    for name in names[len(files):]:
        link = group.get(name, getlink=True)
        if isinstance(link, h5py.ExternalLink):
            path = Path(link.filename)
            if not path.is_absolute():
                path = master.parent / path
            where = f"linked from {master}:{DATA_GROUP}/{name}, frames from {first} on"
            if partial and not path.exists():
                break
            if not path.exists():
                others = _unlinked_data_files(master, linked)
                found = (f" The folder holds data files no link names: {', '.join(others)} (renamed?); give "
                         f"them back their names." if others else "")
                raise ScanError(
                    f"Data file {path} ({where}) is missing: copy all <name>_data_*.h5 files next to the "
                    f"master file.{found}"
                )
            try:
                handle = h5py.File(path, "r", swmr=partial)
            except OSError as err:
                if partial:                     # being created, or written without SWMR: not yet
                    break
                raise ScanError(f"Data file {path} ({where}) {open_error(path, err)}.") from err
            dataset = handle.get(link.path)
            if not isinstance(dataset, h5py.Dataset):
                handle.close()
                if partial:
                    break
                raise ScanError(
                    f"Data file {path} ({where}) has no dataset {link.path}"
                    f"{' (it is a group)' if dataset is not None else ''}; it is not a data file of this "
                    f"scan, or it is incomplete: copy it again from the beamline."
                )
        else:
            handle, path = None, master
            dataset = group.get(name)
            if not isinstance(dataset, h5py.Dataset):
                what = "a group" if isinstance(dataset, h5py.Group) else "a link to nothing"
                raise ScanError(
                    f"{master}:{DATA_GROUP}/{name} (frames from {first} on) is {what}; expected a dataset of "
                    f"frames (frames, rows, cols) or an external link to a data file."
                )
        files.append(_DataFile(name, path, first, int(dataset.shape[0]) if dataset.ndim else 0, dataset, handle))
        if dataset.ndim != 3:
            raise ScanError(
                f"{path}:{dataset.name} (frames from {first} on) has shape {dataset.shape}; "
                f"expected (frames, rows, cols)."
            )
        if dataset.dtype.kind not in "uif":
            raise ScanError(
                f"{path}:{dataset.name} (frames from {first} on) holds {dataset.dtype} values; expected "
                f"counts as unsigned or signed integers or floats (uint32 on an Eiger)."
            )
        first += int(dataset.shape[0])


def _nexus_geometry(f: h5py.File, master: Path, frame_shape: tuple[int, int]):
    from xmodel.geometry import Geometry

    keys = {
        "detector_distance": f"{DETECTOR}/detector_distance",
        "beam_center_x": f"{DETECTOR}/beam_center_x",
        "beam_center_y": f"{DETECTOR}/beam_center_y",
        "x_pixel_size": f"{DETECTOR}/x_pixel_size",
        "y_pixel_size": f"{DETECTOR}/y_pixel_size",
        "incident_wavelength": "/entry/instrument/beam/incident_wavelength",
    }
    fix = ("Give the geometry with --poni FILE.poni instead (in Python: open_scan(..., poni=FILE.poni)).")
    missing = [v for v in keys.values() if v not in f]
    if missing:
        raise ScanError(
            f"{master} lacks {', '.join(missing)}, needed for the geometry: give the geometry with --poni FILE.poni "
            f"(in Python: open_scan(..., poni=FILE.poni))."
        )
    units_of = {"detector_distance": "m", "x_pixel_size": "m", "y_pixel_size": "m", "beam_center_x": "pixels",
                "beam_center_y": "pixels", "incident_wavelength": "angstrom"}
    values = {k: _number(f, v, master, positive=not k.startswith("beam_center"), unit=units_of[k], fix=fix)
              for k, v in keys.items()}
    units = f[keys["detector_distance"]].attrs.get("units", "m")
    units = units.decode() if isinstance(units, bytes) else str(units)
    to_m = {"m": 1.0, "meter": 1.0, "metre": 1.0, "mm": 1e-3, "millimeter": 1e-3, "millimetre": 1e-3}
    if units not in to_m:
        raise ScanError(f"{master}: {keys['detector_distance']} has units {units!r}; expected one of "
                        f"{sorted(to_m)}. Give the geometry with --poni FILE.poni instead "
                        f"(in Python: open_scan(..., poni=FILE.poni)).")
    dist = float(values["detector_distance"]) * to_m[units]
    pixel1, pixel2 = float(values["y_pixel_size"]), float(values["x_pixel_size"])
    from xmodel.detector import find_detector

    name = find_detector(frame_shape, (pixel1, pixel2))
    return Geometry(
        dist=dist,
        poni1=float(values["beam_center_y"]) * pixel1,  # from the outer corner, as pyFAI
        poni2=float(values["beam_center_x"]) * pixel2,
        rot1=0.0,
        rot2=0.0,
        rot3=0.0,
        wavelength=float(values["incident_wavelength"]) * 1e-10,
        pixel1=pixel1,
        pixel2=pixel2,
        shape=frame_shape,
        detector_name=name,
    )


def _filter_ids(dataset: h5py.Dataset) -> list[int]:
    plist = dataset.id.get_create_plist()
    return [plist.get_filter(k)[0] for k in range(plist.get_nfilters())]


def _missing_filters(dataset: h5py.Dataset) -> list[int]:
    """Ids of the dataset's HDF5 filters that are not registered in this process."""
    return [i for i in _filter_ids(dataset) if not h5py.h5z.filter_avail(i)]


def _filter_names(dataset: h5py.Dataset) -> list[str]:
    """Names of the dataset's HDF5 filters (``filter N`` for one not in `FILTER_NAMES`)."""
    return [FILTER_NAMES.get(i, f"filter {i}") for i in _filter_ids(dataset)]


class Scan:
    """An open Eiger scan; frames are read on demand. Use as a context manager.

    Attributes
    ----------
    geometry : xmodel.geometry.Geometry
        From the ``.poni`` if given, else from the NeXus metadata (untilted detector,
        distance, beam centre, pixel size, wavelength).
    mask : numpy.ndarray
        bool, True = masked: master ``pixel_mask`` nonzero | Eiger module gaps | user mask.
    n_frames : int
    frame_shape : tuple[int, int]
        (rows, cols).
    positions_um : numpy.ndarray or None
        (n_frames, 2) micrometres (slow, fast), None if the master has none.
    scan_shape : tuple[int, int] or None
        Raster (rows, cols), None if unknown.
    count_time : float or None
        Exposure per frame (s), ``detector/count_time``.
    count_cutoff : float or None
        ``detectorSpecific/countrate_correction_count_cutoff``: more counts are saturated.
    dummy_value : int or None
        The dtype's dummy (2**bits - 1 for unsigned integers), None for signed and float data.
    pixel_mask_applied : bool or None
        ``detectorSpecific/pixel_mask_applied``: masked pixels hold the dummy value.
    """

    def __init__(self, master: str | Path, poni=None, mask=None, mask_key: str | None = None):
        self.master = Path(master)
        self._file = None
        if not self.master.exists():
            raise ScanError(f"Master file {self.master} does not exist: pass the path of <name>_master.h5.")
        if self.master.is_dir():
            masters = sorted(p.name for p in self.master.glob("*_master.h5"))
            found = f"; it holds {', '.join(masters[:4])}" if masters else "; it holds no *_master.h5 file"
            raise ScanError(f"Master file {self.master} is a directory: pass the <name>_master.h5 file itself{found}.")
        try:
            self._file = h5py.File(self.master, "r")
        except OSError as err:
            raise ScanError(f"Master file {self.master} {open_error(self.master, err)}.") from err
        self._files: list[_DataFile] = []
        try:
            self._open(poni, mask, mask_key)
        except BaseException:
            self.close()
            raise

    #: a scan still being written (`xmodel.follow.LiveScan`): data files not there yet end the list
    partial = False

    def _open(self, poni, mask, mask_key) -> None:
        f = self._file
        self._files = _open_data_files(f, self.master, self.partial)
        if not self._files:
            raise ScanError(f"No data file of {self.master} can be read yet (the first is being written).")
        first = self._files[0]
        self.frame_shape = tuple(int(s) for s in first.dataset.shape[1:])
        sizes = [_number(f, f"{DETECTOR}/detectorSpecific/{k}_pixels_in_detector", self.master, integer=True,
                         positive=True, unit="pixels") for k in ("y", "x")]
        expected = tuple(int(v) if v is not None else s for v, s in zip(sizes, self.frame_shape))
        for data in self._files:
            shape = tuple(int(s) for s in data.dataset.shape[1:])
            if shape != expected:
                raise ScanError(
                    f"{data.path}:{data.dataset.name} (frames {data.first}-{data.first + data.n - 1}) "
                    f"holds frames of shape {shape}, expected {expected} (y_pixels_in_detector, "
                    f"x_pixels_in_detector of {self.master}); the file does not belong to this scan."
                )
            if data.dataset.dtype != first.dataset.dtype:
                raise ScanError(
                    f"{data.path}:{data.dataset.name} (frames from {data.first} on) holds {data.dataset.dtype} "
                    f"frames but {first.path}:{first.dataset.name} holds {first.dataset.dtype}: the data files do "
                    f"not belong to one acquisition."
                )
        self.n_frames = self._count_frames()
        if self.n_frames == 0:
            shapes = ", ".join(f"{d.path.name}:{d.dataset.name} {d.dataset.shape}" for d in self._files[:3])
            raise ScanError(
                f"{self.master} holds no frames: its data ({shapes}) have 0 frames. The acquisition stopped "
                f"before its first frame, or the data files were written incompletely; there is nothing to reduce."
            )
        self.dtype = first.dataset.dtype
        try:
            counts = [_number(f, f"{DETECTOR}/detectorSpecific/{k}", self.master, integer=True, unit="frames")
                      for k in ("nimages", "ntrigger")]
        except ScanError as err:             # only a cross-check: said, not fatal
            log.warning("%s", err)
            counts = [None, None]
        if counts[0] is not None:
            announced = counts[0] * (counts[1] or 1)
            if announced != self.n_frames:
                log.warning("%s announces %d frames (nimages x ntrigger) but its data files hold %d: the "
                            "acquisition was interrupted or a data file is incomplete; the %d frames there are "
                            "read", self.master, announced, self.n_frames, self.n_frames)

        if poni is not None:
            from xmodel.geometry import Geometry

            if Path(poni).is_dir():
                raise ScanError(f"The geometry (--poni) {poni} is a directory: expected a pyFAI .poni file.")
            self.geometry = Geometry.from_poni(poni)
            if tuple(self.geometry.shape) != self.frame_shape:
                raise ScanError(
                    f"The detector in {poni} has shape {tuple(self.geometry.shape)} but the frames "
                    f"in {self.master} have shape {self.frame_shape}: use the .poni of this detector."
                )
        else:
            self.geometry = _nexus_geometry(f, self.master, self.frame_shape)

        pixel_key = f"{DETECTOR}/detectorSpecific/pixel_mask"
        full = np.zeros(self.frame_shape, dtype=bool)
        if pixel_key in f:
            pixel_mask = f[pixel_key]
            if (not isinstance(pixel_mask, h5py.Dataset) or pixel_mask.shape != self.frame_shape
                    or pixel_mask.dtype.kind not in "uib"):
                what = ("a group" if not isinstance(pixel_mask, h5py.Dataset)
                        else f"an array of shape {pixel_mask.shape} ({pixel_mask.dtype})")
                raise ScanError(
                    f"{self.master}:{pixel_key} holds {what}; expected integer flags of the frames' shape "
                    f"{self.frame_shape} (nonzero = masked). Pass a mask of the detector's shape with --mask and "
                    f"remove the broken pixel_mask, or copy the master file again."
                )
            full |= np.asarray(pixel_mask[()]) != 0
        from xmodel import detector

        if self.geometry.detector_name:
            try:
                gaps = detector.module_gap_mask(self.geometry.detector_name)
            except ValueError:
                gaps = None
            if gaps is not None and gaps.shape == self.frame_shape:
                full |= gaps
        if mask is not None:
            if isinstance(mask, np.ndarray):
                user = mask.astype(bool)
                if user.shape != self.frame_shape:
                    raise ScanError(
                        f"The mask array has shape {user.shape} but the frames have shape "
                        f"{self.frame_shape}: pass a mask of the detector's shape (True = masked)."
                    )
            else:
                user = detector.load_mask(mask, key=mask_key, shape=self.frame_shape)
            full |= user
        self.mask = full

        self.count_time = _number(f, f"{DETECTOR}/count_time", self.master, positive=True, unit="s")
        self.count_cutoff = _number(f, f"{DETECTOR}/detectorSpecific/countrate_correction_count_cutoff",
                                    self.master, positive=True, unit="counts")
        applied = _number(f, f"{DETECTOR}/detectorSpecific/pixel_mask_applied", self.master, integer=True,
                          unit="0 or 1")
        self.pixel_mask_applied = None if applied is None else bool(applied)
        self.dummy_value = int(np.iinfo(self.dtype).max) if self.dtype.kind == "u" else None
        limits = [v for v in (self.count_cutoff, None if self.dummy_value is None else self.dummy_value - 1)
                  if v is not None]
        #: values above this are invalid (dummy or saturated); None: only the sign / finiteness test
        self.invalid_above = min(limits) if limits else None

        self.positions_um = None
        self.scan_shape = None
        if "/entry/sample/positions" in f:
            obj = f["/entry/sample/positions"]
            if not isinstance(obj, h5py.Dataset) or obj.dtype.kind not in "uif":
                raise ScanError(f"{self.master}:/entry/sample/positions holds "
                                f"{'a group' if not isinstance(obj, h5py.Dataset) else obj.dtype}; expected "
                                f"numbers ({self.n_frames}, 2) in um.")
            self.positions_um = np.asarray(obj[()], dtype=np.float64)
            if self.positions_um.shape != (self.n_frames, 2):
                raise ScanError(
                    f"{self.master}:/entry/sample/positions has shape {self.positions_um.shape}, "
                    f"expected ({self.n_frames}, 2) for {self.n_frames} frames."
                )
        if "/entry/sample/scan_shape" in f:
            obj = f["/entry/sample/scan_shape"]
            shape = np.asarray(obj[()]) if isinstance(obj, h5py.Dataset) else np.zeros(0)
            if shape.shape != (2,) or shape.dtype.kind not in "ui" or np.any(shape < 1):
                raise ScanError(f"{self.master}:/entry/sample/scan_shape holds "
                                f"{_shown(shape) if isinstance(obj, h5py.Dataset) else 'a group'}; expected two "
                                f"positive integers (rows, cols).")
            self.scan_shape = tuple(int(v) for v in shape)

    def _count_frames(self) -> int:
        """Frames of the scan: those of its data files (a live scan: those it will have)."""
        return sum(d.n for d in self._files)

    def identity(self) -> str:
        """SHA-256 of the master file's bytes (which hold the links to the data files by name).

        Two scans of one detector shape have different masters (start time, metadata), so a
        resumed reduction can tell them apart; a copied scan keeps its identity, and so does a
        scan whose data files are still being written (a live run, `xmodel.follow`, and a later
        run on the finished scan share it).
        """
        digest = hashlib.sha256()
        with open(self.master, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 22), b""):
                digest.update(block)
        return digest.hexdigest()

    def invalid_pixels(self, frames: np.ndarray) -> np.ndarray:
        """bool (same shape as ``frames``): True where a value is invalid in its frame.

        Invalid: above :attr:`invalid_above` (the dtype's dummy 2**bits - 1 of unsigned data,
        or above the master's count cutoff, i.e. saturated), or, for signed and float data,
        negative or not finite. Static masks (``pixel_mask``, gaps) are not applied here.
        """
        frames = np.asarray(frames)
        if frames.dtype.kind == "f":
            bad = ~(frames >= 0) | np.isinf(frames)
        elif frames.dtype.kind == "i":
            bad = frames < 0
        else:
            bad = np.zeros(frames.shape, dtype=bool)
        if self.invalid_above is not None:
            bad |= frames > self.invalid_above
        return bad

    # -- context manager ------------------------------------------------------------------
    def __enter__(self) -> Scan:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Close the master and all data files."""
        for data in self._files:
            if data.file is not None:
                data.file.close()
        self._files = []
        if self._file:
            self._file.close()

    def __len__(self) -> int:
        return self.n_frames

    # -- reading --------------------------------------------------------------------------
    def _locate(self, i: int) -> _DataFile:
        for data in self._files:
            if data.first <= i < data.first + data.n:
                return data
        raise IndexError(i)

    def _check_index(self, i: int) -> int:
        i = int(i)
        if not 0 <= i < self.n_frames:
            raise ScanError(
                f"Frame {i} does not exist: {self.master} holds frames 0 to {self.n_frames - 1}."
            )
        return i

    def _failure(self, data: _DataFile, i: int, err: Exception) -> ScanError:
        """The error of a frame that does not read: a missing filter (no frame of the file can be
        read: ScanError) or a damaged frame (FrameReadError: the other frames may be fine)."""
        text = str(err)
        where = (f"Cannot read frame {i} (frame {i - data.first} of {data.path}:{data.dataset.name}, "
                 f"expected {self.dtype} of shape {self.frame_shape}): {text}.")
        missing = _missing_filters(data.dataset)
        if missing:
            return ScanError(
                f"{where} The HDF5 compression filter {missing} (bitshuffle-LZ4 = 32008 on an Eiger) "
                f"is not available: install hdf5plugin (pip install hdf5plugin) and import it before reading."
            )
        filters = _filter_names(data.dataset)
        decoded = f" with the {', '.join(filters)} filter{'s' if len(filters) > 1 else ''} (installed)" if filters else ""
        return FrameReadError(
            f"{where} The frame's stored data do not decode{decoded}: its chunk is corrupt or cut short; "
            f"copy {data.path.name} again from the beamline.", i, data.path
        )

    def read_into(self, start: int, out: np.ndarray) -> np.ndarray:
        """Read frames ``start .. start + len(out) - 1`` into ``out`` (``(b, rows, cols)``).

        ``out`` must be C-contiguous with the stored dtype; returns ``out``.
        """
        start = self._check_index(start)
        stop = start + out.shape[0]
        if stop > self.n_frames:
            raise ScanError(
                f"Frames {start} to {stop - 1} requested but {self.master} holds {self.n_frames} frames."
            )
        i = start
        while i < stop:
            data = self._locate(i)
            n_here = min(stop, data.first + data.n) - i
            lo = i - data.first
            try:
                data.dataset.read_direct(
                    out, np.s_[lo:lo + n_here], np.s_[i - start:i - start + n_here]
                )
            except OSError:  # find the frame that failed
                for j in range(i, i + n_here):
                    try:
                        data.dataset.read_direct(out, np.s_[j - data.first], np.s_[j - start])
                    except OSError as err:
                        raise self._failure(data, j, err) from err
                raise self._failure(data, i, OSError("the batch read failed but every single frame "
                                                     "read succeeded"))
            i += n_here
        return out

    def frame(self, i: int) -> np.ndarray:
        """Frame ``i`` (0-based over the whole scan), as stored (uint32 on an Eiger).

        Raises
        ------
        ScanError
            If the frame does not exist or cannot be read; the message names the file.
        """
        i = self._check_index(i)
        out = np.empty((1, *self.frame_shape), dtype=self.dtype)
        return self.read_into(i, out)[0]

    def iter_batches(self, batch_size: int, start: int = 0) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(first_index, frames)`` with ``frames`` of shape ``(b, rows, cols)``.

        Batches hold ``batch_size`` frames (the last one fewer) and may span data files.
        """
        if int(batch_size) < 1:
            raise ScanError(f"batch_size={batch_size} must be a positive integer, e.g. 16.")
        if start == self.n_frames:
            return
        start = self._check_index(start)
        for first in range(start, self.n_frames, int(batch_size)):
            b = min(int(batch_size), self.n_frames - first)
            out = np.empty((b, *self.frame_shape), dtype=self.dtype)
            yield first, self.read_into(first, out)


def open_scan(master: str | Path, poni: str | Path | None = None, mask=None, mask_key: str | None = None) -> Scan:
    """Open an Eiger scan for streaming.

    Parameters
    ----------
    master
        ``<name>_master.h5``.
    poni
        pyFAI ``.poni`` file; default: geometry from the master's NeXus metadata.
    mask
        Mask file (``.npy``, HDF5, ``.edf``/``.tif``; nonzero = masked) or bool array; added
        to the master's pixel mask and the module gaps.
    mask_key
        HDF5 dataset inside ``mask`` (see :func:`xmodel.detector.load_mask`).

    Returns
    -------
    Scan

    Notes
    -----
    Dectris master-file layout: see :mod:`xmodel.dectris` (NXmx, doi:10.1107/S2052252520006818).

    Validation
    ----------
    Round trip with :func:`xmodel.dectris.write_scan` and a hand-made Dectris-style file
    (tests/xmodel/test_io.py).
    """
    return Scan(master, poni=poni, mask=mask, mask_key=mask_key)


def read_group(path: str | Path, group: str, hint: str) -> tuple[dict[str, np.ndarray], dict]:
    """Every dataset of ``group`` in the HDF5 file ``path`` (strings decoded; subgroups skipped) and
    the group's attributes.

    Parameters
    ----------
    path : HDF5 file.
    group : group path, e.g. ``/entry/fits`` or ``/truth``.
    hint : what writes the group (ends the error messages), e.g. "run xmodel fit first".

    Raises
    ------
    FileNotFoundError, ValueError
        If the file is missing or has no such group, naming both.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; {hint}.")
    with h5py.File(path, "r") as f:
        if group.strip("/") not in f:
            raise ValueError(f"{path} has no {group}; {hint}.")
        g = f[group]
        out = {}
        for k, ds in g.items():
            if not isinstance(ds, h5py.Dataset):      # NXdata/NXnote subgroups are not fields
                continue
            v = ds[()]
            if np.asarray(v).dtype.kind in "OSU":
                a = np.asarray(v)
                v = np.array([x.decode() if isinstance(x, bytes) else str(x) for x in a.reshape(-1)]).reshape(a.shape)
            out[k] = v
        return out, dict(g.attrs)
