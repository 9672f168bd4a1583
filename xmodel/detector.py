"""Detector layouts and pixel masks (True = masked/invalid, the pyFAI convention).

Contract
--------
* Pixel index coordinates: array index ``(row, col)`` = ``(dim1, dim2)``; the centre of
  pixel ``(i, j)`` sits at ``(i, j)``.
* Masks are ``bool`` arrays of the detector shape, ``True`` where a pixel must not be used
  (module gaps, beamstop, bad pixels). Combine them with :func:`combine_masks`.
* Only numpy and h5py at runtime; fabio is imported lazily for ``.edf``/``.tif`` masks.

The Eiger (v1) family is described by a table (:data:`DETECTOR_SPECS`) with the same
numbers as pyFAI's ``pyFAI.detectors.Eiger*`` classes (module 514 x 1030 pixels, gaps
37 x 10 pixels, 75 um pixels); it works without pyFAI. Every other detector (Eiger2 4M/9M/16M,
Pilatus, ...) comes from pyFAI's detector registry when pyFAI is installed (the ``beamline``
extra): shape, pixel size and pyFAI's module-gap mask.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import h5py
import numpy as np

EIGER4M_SHAPE: tuple[int, int] = (2167, 2070)
EIGER_PIXEL: float = 75e-6
EIGER_MODULE_SIZE: tuple[int, int] = (514, 1030)
EIGER_MODULE_GAP: tuple[int, int] = (37, 10)
DECTRIS_PIXEL_MASK_KEY = "/entry/instrument/detector/detectorSpecific/pixel_mask"


@dataclass(frozen=True)
class DetectorSpec:
    """Static description of a modular pixel detector.

    Attributes
    ----------
    name : str
        Canonical name, as pyFAI's detector class name (``"Eiger4M"``).
    shape : tuple[int, int]
        Full (unbinned) shape ``(rows, cols)`` = pyFAI's ``MAX_SHAPE``.
    pixel : tuple[float, float]
        Pixel sizes ``(pixel1, pixel2)`` in metres along rows and columns.
    module_size : tuple[int, int]
        Sensitive module size in pixels ``(rows, cols)``.
    module_gap : tuple[int, int]
        Insensitive gap between modules in pixels ``(rows, cols)``.
    """

    name: str
    shape: tuple[int, int]
    pixel: tuple[float, float]
    module_size: tuple[int, int]
    module_gap: tuple[int, int]


def _eiger(name: str, shape: tuple[int, int]) -> DetectorSpec:
    return DetectorSpec(name, shape, (EIGER_PIXEL, EIGER_PIXEL), EIGER_MODULE_SIZE, EIGER_MODULE_GAP)


DETECTOR_SPECS: dict[str, DetectorSpec] = {
    spec.name: spec
    for spec in (
        _eiger("Eiger500k", (514, 1030)),
        _eiger("Eiger1M", (1065, 1030)),
        _eiger("Eiger4M", EIGER4M_SHAPE),
        _eiger("Eiger9M", (3269, 3110)),
        _eiger("Eiger16M", (4371, 4150)),
    )
}


def _normalized(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch not in " _-")


def get_detector_spec(name: str) -> DetectorSpec:
    """Look up a detector by name (case, spaces, ``_`` and ``-`` ignored: "Eiger 4M" works).

    The built-in table (:data:`DETECTOR_SPECS`, the Eiger v1 family) needs nothing else; any
    other name is looked up in pyFAI's detector registry (``pyFAI.detector_factory``: Eiger2
    4M/9M/16M, Pilatus, ...) when pyFAI is installed (the ``beamline`` extra).

    Parameters
    ----------
    name : str
        Detector name, e.g. ``"Eiger4M"``, ``"Eiger2_4M"``, ``"Pilatus 1M"``.

    Returns
    -------
    DetectorSpec
        The table entry, or one built from pyFAI's class (``MAX_SHAPE``, pixel sizes,
        ``MODULE_SIZE`` and ``MODULE_GAP``; module size and gap 0 for a detector without modules).

    Raises
    ------
    ValueError
        If neither the table nor pyFAI knows the name; the message lists the built-in names and
        says which extra to install when pyFAI is missing.
    """
    wanted = _normalized(str(name))
    for spec in DETECTOR_SPECS.values():
        if _normalized(spec.name) == wanted:
            return spec
    return _pyfai_spec(str(name))


def _pyfai_detector(name: str):
    """pyFAI's detector object of that name (tried as given, then normalised), or a clear ValueError."""
    try:
        from pyFAI.detectors import ALL_DETECTORS, detector_factory
    except ImportError:
        raise ValueError(
            f"Detector {name!r} is not built in (built in: {', '.join(DETECTOR_SPECS)}); other detectors "
            f"come from pyFAI's registry: install the beamline extra, pip install 'xmodel[beamline]' "
            f"(pyFAI and fabio)."
        ) from None
    for candidate in (name.lower(), name.lower().replace(" ", "_"), _normalized(name)):
        if candidate in ALL_DETECTORS:
            return detector_factory(candidate)
    raise ValueError(
        f"Unknown detector {name!r}: neither built in ({', '.join(DETECTOR_SPECS)}) nor in pyFAI's "
        f"registry (e.g. Eiger2_4M, Eiger2_9M, Eiger2_16M, Pilatus1M; see pyFAI.detectors.ALL_DETECTORS). "
        f"For another detector build a Geometry with explicit pixel1, pixel2 and shape (detector_name='')."
    )


@lru_cache(maxsize=16)
def _pyfai_spec(name: str) -> DetectorSpec:
    det = _pyfai_detector(name)
    if det.max_shape is None:
        raise ValueError(f"pyFAI's detector {name!r} has no fixed shape; build a Geometry with explicit "
                         f"pixel1, pixel2 and shape (detector_name='').")
    size = tuple(getattr(det, "MODULE_SIZE", None) or det.max_shape)
    gap = tuple(getattr(det, "MODULE_GAP", None) or (0, 0))
    return DetectorSpec(type(det).__name__, tuple(int(s) for s in det.max_shape),
                        (float(det.pixel1), float(det.pixel2)), size, gap)


def find_detector(shape: tuple[int, int], pixel: tuple[float, float]) -> str:
    """Name of a known detector with this full frame shape and pixel size, or "" if none.

    The built-in table first, then pyFAI's Dectris Eiger and Eiger2 detectors when pyFAI is
    installed; the master files of Dectris detectors name the model only in free text, so the
    frame shape and pixel size identify it.
    """
    shape = tuple(int(s) for s in shape)
    for spec in DETECTOR_SPECS.values():
        if spec.shape == shape and np.allclose(spec.pixel, pixel, rtol=1e-6):
            return spec.name
    for name in _REGISTRY_CANDIDATES:
        try:
            spec = _pyfai_spec(name)
        except ValueError:
            return ""
        if spec.shape == shape and np.allclose(spec.pixel, pixel, rtol=1e-6):
            return spec.name
    return ""


#: pyFAI detectors tried by :func:`find_detector` (Dectris hybrid pixel detectors at beamlines)
_REGISTRY_CANDIDATES = ("Eiger2_1M", "Eiger2_4M", "Eiger2_9M", "Eiger2_16M", "Eiger2CdTe_1M",
                        "Eiger2CdTe_4M", "Eiger2CdTe_9M", "Eiger2CdTe_16M", "Pilatus1M", "Pilatus2M",
                        "Pilatus6M")


def detector_spec(name: str) -> tuple[tuple[int, int], tuple[float, float]]:
    """Shape and pixel sizes of a known detector.

    Parameters
    ----------
    name : str
        Detector name, e.g. ``"Eiger4M"`` (case, spaces, ``_`` and ``-`` ignored).

    Returns
    -------
    shape : tuple[int, int]
        ``(rows, cols)`` of the unbinned detector.
    pixel : tuple[float, float]
        ``(pixel1, pixel2)`` in metres.

    Notes
    -----
    Numbers from the Dectris Eiger specifications as tabulated by pyFAI
    (Ashiotis et al. 2015, doi:10.1107/S1600576715004306).

    Validation: equal to ``pyFAI.detector_factory(name).max_shape`` and pixel sizes
    (tests/xmodel/test_detector.py).
    """
    spec = get_detector_spec(name)
    return spec.shape, spec.pixel


def module_gap_mask(name: str = "Eiger4M") -> np.ndarray:
    """Mask of the insensitive gaps between detector modules.

    Parameters
    ----------
    name : str
        Detector name from :data:`DETECTOR_SPECS` or pyFAI's registry (then pyFAI's mask).

    Returns
    -------
    numpy.ndarray
        ``bool`` array of the full detector shape, True in the gaps.

    Notes
    -----
    Modules of ``module_size`` pixels are separated by ``module_gap`` pixels along each
    dimension, starting with a module at index 0 (pyFAI's ``_Dectris.calc_mask``).

    Validation: identical to ``pyFAI.detector_factory(name).mask`` for every detector
    in the table (tests/xmodel/test_detector.py).
    """
    spec = get_detector_spec(name)
    if spec.name not in DETECTOR_SPECS:  # from pyFAI's registry: its own mask (gaps, chip borders)
        mask = _pyfai_detector(spec.name).mask
        return np.zeros(spec.shape, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    mask = np.zeros(spec.shape, dtype=bool)
    for axis in (0, 1):
        period = spec.module_size[axis] + spec.module_gap[axis]
        index = np.arange(spec.shape[axis])
        in_gap = (index % period) >= spec.module_size[axis]
        if axis == 0:
            mask |= in_gap[:, None]
        else:
            mask |= in_gap[None, :]
    return mask


def beamstop_mask(
    shape: tuple[int, int],
    center_px: tuple[float, float],
    radius_px: float,
    holder_width_px: float = 0.0,
    holder_angle_deg: float = 0.0,
) -> np.ndarray:
    """Mask of a round beamstop and the strip of its holder.

    Parameters
    ----------
    shape : tuple[int, int]
        Detector shape ``(rows, cols)``.
    center_px : tuple[float, float]
        Beamstop centre ``(row, col)`` in pixel-index coordinates (centre of pixel
        ``(i, j)`` at ``(i, j)``); may lie outside the detector.
    radius_px : float
        Disc radius in pixels; a pixel is masked when its centre is within the radius.
    holder_width_px : float
        Full width of the holder strip in pixels (0: no holder).
    holder_angle_deg : float
        Direction of the holder from the centre towards the detector edge, in degrees,
        measured like pyFAI's chi for an untilted detector: 0 = +col, 90 = +row.

    Returns
    -------
    numpy.ndarray
        ``bool`` array of ``shape``, True on the beamstop and its holder.

    Notes
    -----
    With ``v = (row - row0, col - col0)`` and the unit direction
    ``d = (sin a, cos a)``, the holder covers ``v . d >= 0`` and ``|v x d| <= w / 2``.

    Validation: hand-checked pixels (centre, far corner, along and against the holder)
    in tests/xmodel/test_detector.py.
    """
    rows, cols = _checked_shape(shape, "beamstop_mask shape")
    if not np.isfinite(radius_px) or radius_px < 0:
        raise ValueError(f"beamstop radius_px={radius_px!r} must be a finite number >= 0 (pixels).")
    if not np.isfinite(holder_width_px) or holder_width_px < 0:
        raise ValueError(
            f"beamstop holder_width_px={holder_width_px!r} must be a finite number >= 0 "
            "(pixels; 0 for no holder)."
        )
    row0, col0 = (float(c) for c in center_px)
    dr = np.arange(rows, dtype=np.float64)[:, None] - row0
    dc = np.arange(cols, dtype=np.float64)[None, :] - col0
    mask = dr * dr + dc * dc <= float(radius_px) ** 2
    if holder_width_px > 0:
        angle = np.deg2rad(holder_angle_deg)
        d_row, d_col = np.sin(angle), np.cos(angle)
        along = dr * d_row + dc * d_col
        across = np.abs(dr * d_col - dc * d_row)
        mask |= (along >= 0) & (across <= 0.5 * float(holder_width_px))
    return mask


def _checked_shape(shape, what: str) -> tuple[int, int]:
    try:
        rows, cols = (int(n) for n in shape)
    except (TypeError, ValueError):
        raise ValueError(f"{what}={shape!r} must be a pair of positive integers (rows, cols).") from None
    if rows <= 0 or cols <= 0:
        raise ValueError(f"{what}={shape!r} must be a pair of positive integers (rows, cols).")
    return rows, cols


def _datasets_2d(h5file: h5py.File) -> list[str]:
    found: list[str] = []

    def visit(name: str, obj) -> None:
        if isinstance(obj, h5py.Dataset) and obj.ndim == 2:
            found.append("/" + name)

    h5file.visititems(visit)
    return found


def _read_h5_mask(path: Path, key: str | None) -> np.ndarray:
    with h5py.File(path, "r") as h5file:
        if key is None:
            if DECTRIS_PIXEL_MASK_KEY in h5file:
                key = DECTRIS_PIXEL_MASK_KEY
            else:
                candidates = _datasets_2d(h5file)
                if len(candidates) != 1:
                    raise ValueError(
                        f"Mask file {str(path)!r} holds {len(candidates)} 2D datasets "
                        f"({', '.join(candidates) or 'none'}); pass key= to choose one."
                    )
                key = candidates[0]
        if key not in h5file or not isinstance(h5file[key], h5py.Dataset):
            available = _datasets_2d(h5file)
            raise KeyError(
                f"Mask file {str(path)!r} has no dataset {key!r}. Available 2D datasets: "
                f"{', '.join(available) or 'none'}. Pass one of them as key=."
            )
        return np.asarray(h5file[key][()])


def _read_fabio_mask(path: Path) -> np.ndarray:
    try:
        import fabio
    except ImportError:
        raise ImportError(
            f"Reading the mask {str(path)!r} needs the optional package fabio "
            "(pip install fabio); or convert the mask to .npy or .h5."
        ) from None
    return np.asarray(fabio.open(str(path)).data)


def load_mask(path: str | Path, key: str | None = None, shape: tuple[int, int] | None = None) -> np.ndarray:
    """Read a mask file; nonzero values are masked.

    Parameters
    ----------
    path : str or Path
        ``.npy``, ``.h5``/``.hdf5``/``.nxs`` (HDF5), or ``.edf``/``.tif``/``.tiff`` (via
        fabio, optional).
    key : str, optional
        HDF5 dataset path. Default: the Dectris NeXus pixel mask
        (``/entry/instrument/detector/detectorSpecific/pixel_mask``, bit flags, nonzero =
        bad) if present, else the only 2D dataset in the file.
    shape : tuple[int, int], optional
        Expected ``(rows, cols)``; checked if given.

    Returns
    -------
    numpy.ndarray
        ``bool`` mask, True = masked.

    Raises
    ------
    FileNotFoundError, KeyError, ValueError, ImportError
        Missing file, a directory, a file that is not a readable array or HDF5 file, missing
        key (lists the available 2D datasets), wrong shape, dimension or dtype, unknown
        extension, fabio missing for .edf/.tif.

    Notes
    -----
    Convention as pyFAI's ``mask`` argument: nonzero = invalid (Ashiotis et al. 2015,
    doi:10.1107/S1600576715004306).

    Validation: round trips through npy and HDF5 files in tests/xmodel/test_detector.py.
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"Mask file {str(path)!r} is a directory: expected a mask file (.npy, .h5, .edf, .tif).")
    if not path.is_file():
        raise FileNotFoundError(f"Mask file {str(path)!r} does not exist; check the path.")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        try:
            data = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as err:
            raise ValueError(f"Mask file {str(path)!r} is not a readable .npy array: {err}.") from err
    elif suffix in (".h5", ".hdf5", ".nxs", ".hdf"):
        from xmodel.io import open_error

        try:
            data = _read_h5_mask(path, key)
        except OSError as err:
            raise ValueError(f"Mask file {str(path)!r} {open_error(path, err)}.") from err
    elif suffix in (".edf", ".tif", ".tiff"):
        data = _read_fabio_mask(path)
    else:
        raise ValueError(
            f"Mask file {str(path)!r} has the unknown extension {suffix!r}; valid are "
            ".npy, .h5, .hdf5, .nxs, .edf, .tif, .tiff."
        )
    if data.ndim != 2:
        raise ValueError(
            f"Mask in {str(path)!r} has {data.ndim} dimensions (shape {data.shape}); a mask "
            "must be 2D (rows, cols)."
        )
    if data.dtype.kind not in "uifb":
        raise ValueError(f"Mask in {str(path)!r} holds {data.dtype} values; expected numbers or booleans "
                         "(nonzero = masked).")
    if shape is not None and tuple(data.shape) != tuple(int(n) for n in shape):
        raise ValueError(
            f"Mask in {str(path)!r} has shape {tuple(data.shape)} but the detector has shape "
            f"{tuple(int(n) for n in shape)}; use the mask made for this detector (or bin it "
            "with bin_mask)."
        )
    return data != 0


def _checked_factor(factor: int) -> int:
    if isinstance(factor, bool) or int(factor) != factor or factor < 1:
        raise ValueError(f"Binning factor {factor!r} must be a positive integer (1, 2, 4, ...).")
    return int(factor)


def _blocks(array: np.ndarray, factor: int) -> np.ndarray:
    """View (..., R, C) cropped to multiples of factor as (..., R/f, f, C/f, f)."""
    if array.ndim < 2:
        raise ValueError(f"Binning needs an array with at least 2 dimensions (rows, cols); got shape {array.shape}.")
    rows, cols = array.shape[-2] // factor, array.shape[-1] // factor
    if rows == 0 or cols == 0:
        raise ValueError(
            f"Binning factor {factor} is larger than the array shape {array.shape[-2:]}; "
            "use a smaller factor."
        )
    cropped = array[..., : rows * factor, : cols * factor]
    return cropped.reshape(array.shape[:-2] + (rows, factor, cols, factor))


def bin_mask(mask: np.ndarray, factor: int) -> np.ndarray:
    """Bin a mask: a binned pixel is masked if any of its pixels is masked.

    Parameters
    ----------
    mask : numpy.ndarray
        ``(..., rows, cols)``, nonzero = masked.
    factor : int
        Block size; rows and columns are cropped to a multiple of it (as pyFAI's binned
        detectors: shape // factor).

    Returns
    -------
    numpy.ndarray
        ``bool`` array ``(..., rows // factor, cols // factor)``.

    Notes
    -----
    Conservative binning: one invalid pixel spoils the binned pixel.

    Validation: hand-built block masks in tests/xmodel/test_detector.py.
    """
    factor = _checked_factor(factor)
    return _blocks(np.asarray(mask) != 0, factor).any(axis=(-3, -1))


def bin_image(image: np.ndarray, factor: int, reduce: str = "sum") -> np.ndarray:
    """Sum or average ``factor x factor`` pixel blocks.

    Parameters
    ----------
    image : numpy.ndarray
        ``(..., rows, cols)`` counts or intensities (leading axes are frames).
    factor : int
        Block size; rows and columns are cropped to a multiple of it.
    reduce : {"sum", "mean"}
        Sum (counts) or mean (intensity per pixel).

    Returns
    -------
    numpy.ndarray
        ``(..., rows // factor, cols // factor)``; numpy's reduction dtype (float32 stays
        float32 for "sum", integers sum in int64/uint64).

    Notes
    -----
    Block reduction via reshape (no copy beyond the crop).

    Validation: against explicit loops in tests/xmodel/test_detector.py.
    """
    factor = _checked_factor(factor)
    if reduce not in ("sum", "mean"):
        raise ValueError(f"bin_image reduce={reduce!r} is not valid; use 'sum' or 'mean'.")
    blocks = _blocks(np.asarray(image), factor)
    return blocks.sum(axis=(-3, -1)) if reduce == "sum" else blocks.mean(axis=(-3, -1))


def combine_masks(*masks: np.ndarray) -> np.ndarray:
    """Union of masks (a pixel is masked if any mask masks it).

    Parameters
    ----------
    *masks : numpy.ndarray
        Arrays of one shape, nonzero = masked.

    Returns
    -------
    numpy.ndarray
        ``bool`` array of that shape.

    Notes
    -----
    Logical OR, the pyFAI convention (True = invalid).

    Validation: tests/xmodel/test_detector.py.
    """
    if not masks:
        raise ValueError("combine_masks needs at least one mask.")
    arrays = [np.asarray(m) != 0 for m in masks]
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1:
        raise ValueError(
            f"combine_masks got masks of different shapes {[a.shape for a in arrays]}; "
            "all masks must have the detector shape (bin them first with bin_mask)."
        )
    return np.logical_or.reduce(arrays)
