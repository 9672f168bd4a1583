"""Write scans in the layout of a Dectris Eiger detector (master file + data files).

A scan is ``DIR/<name>_master.h5`` holding the NeXus metadata and, under ``/entry/data``,
external links ``data_000001``, ``data_000002``, ... to ``DIR/<name>_data_00000N.h5``, each
holding ``/entry/data/data`` of shape ``(frames, rows, cols)``, uint32, one frame per chunk,
compressed with bitshuffle-LZ4 (hdf5plugin), exactly as an Eiger writes them. The geometry
also goes to ``DIR/<name>.poni`` so that the scan opens in pyFAI. Frames are streamed: only
one frame is in memory at a time.

Layout (field names, units) follows the Dectris EIGER HDF5 master files as read by fabio's
``eiger2cbf`` / ``hdf2neggia`` and pyFAI's ``eiger-mask``:

=============================================================  ==========  ==================
path                                                           unit        meaning
=============================================================  ==========  ==================
/entry/instrument/detector/detector_distance                   m           sample-detector
/entry/instrument/detector/x_pixel_size, y_pixel_size          m           pixel2, pixel1
/entry/instrument/detector/beam_center_x, beam_center_y        pixel       direct beam (col, row)
/entry/instrument/detector/count_time, frame_time              s
/entry/instrument/detector/detectorSpecific/pixel_mask         (uint32)    nonzero = masked
/entry/instrument/detector/detectorSpecific/x_pixels_in_detector           cols
/entry/instrument/detector/detectorSpecific/y_pixels_in_detector           rows
/entry/instrument/detector/detectorSpecific/nimages                        frames
/entry/instrument/beam/incident_wavelength                     angstrom
/entry/sample/positions  (xmodel, not Dectris)                 um          (frames, 2)
/entry/sample/scan_shape (xmodel, not Dectris)                             (rows, cols)
=============================================================  ==========  ==================

The beam centre is the direct-beam position in pixel-index coordinates (the centre of pixel
``(i, j)`` at ``(i, j)``, as in :meth:`xmodel.geometry.Geometry.from_beam_center`), so that
``poni = (centre + 0.5) * pixel`` for an untilted detector. (pyFAI's Fit2D export measures
from the pixel corner instead: Fit2D centre = this centre + 0.5.) The NeXus metadata describe
an untilted detector; a tilted geometry is stored exactly only in the ``.poni``.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from pathlib import Path

import h5py
import hdf5plugin
import numpy as np

#: Value an Eiger writes into every pixel with a bit set in its pixel mask (uint32 images):
#: 2**bit_depth - 1 ("pixel_mask_applied", DECTRIS EIGER2 User Manual, section 11.1).
EIGER_MASKED_VALUE_UINT32 = 2**32 - 1
#: Bits of the Dectris pixel mask (NXdetector pixel_mask): 1 gap, 2 dead, 4 under-responding,
#: 8 over-responding, 16 noisy.
PIXEL_MASK_GAP = 1
PIXEL_MASK_DEAD = 2


def _fit2d_beam_centre(geometry) -> tuple[float, float, float]:
    """Direct-beam position (row, col) in pixel-index coordinates and distance along the beam (m).

    Notes
    -----
    pyFAI's ``convert_to_Fit2d`` (pyFAI/geometry/fit2d.py; Kieffer & Wright 2013,
    doi:10.1017/S0885715613000924): with ``cos_tilt = cos(rot1) cos(rot2)``, the tilt-plane
    rotation ``cos_tpr = -cos(rot2) sin(rot1) / sin_tilt``, ``sin_tpr = sin(rot2) / sin_tilt``,
    ``centre_x = (poni2 + dist tan_tilt cos_tpr) / pixel2``,
    ``centre_y = (poni1 + dist tan_tilt sin_tpr) / pixel1``, ``direct = dist / cos_tilt``;
    minus 0.5 to go from the pixel corner to pixel-index coordinates.
    """
    cos_tilt = math.cos(geometry.rot1) * math.cos(geometry.rot2)
    sin_tilt = math.sqrt(max(0.0, 1.0 - cos_tilt * cos_tilt))
    if sin_tilt < 1e-12:
        cos_tpr, sin_tpr, tan_tilt = 1.0, 0.0, 0.0
    else:
        cos_tpr = max(-1.0, min(1.0, -math.cos(geometry.rot2) * math.sin(geometry.rot1) / sin_tilt))
        sin_tpr = math.sin(geometry.rot2) / sin_tilt
        tan_tilt = sin_tilt / cos_tilt
    col = (geometry.poni2 + geometry.dist * tan_tilt * cos_tpr) / geometry.pixel2 - 0.5
    row = (geometry.poni1 + geometry.dist * tan_tilt * sin_tpr) / geometry.pixel1 - 0.5
    return row, col, geometry.dist / cos_tilt


def _gap_mask(geometry, shape: tuple[int, int]) -> np.ndarray:
    """Module gaps of the detector named in the geometry, or none for other shapes."""
    from xmodel import detector

    name = getattr(geometry, "detector_name", "")
    if not name:
        return np.zeros(shape, dtype=bool)
    try:
        gaps = np.asarray(detector.module_gap_mask(name), dtype=bool)
    except (ValueError, KeyError):
        return np.zeros(shape, dtype=bool)
    return gaps if gaps.shape == shape else np.zeros(shape, dtype=bool)


def _dataset(group: h5py.Group, name: str, value, units: str | None = None) -> h5py.Dataset:
    ds = group.create_dataset(name, data=value)
    if units is not None:
        ds.attrs["units"] = units
    return ds


def _group(parent: h5py.Group, name: str, nx_class: str) -> h5py.Group:
    grp = parent.create_group(name)
    grp.attrs["NX_class"] = nx_class
    return grp


def _scan_shape(positions_um: np.ndarray, n_frames: int) -> tuple[int, int] | None:
    """(rows, cols) of a raster: unique slow (column 0) and fast (column 1) positions."""
    n_slow = np.unique(positions_um[:, 0]).size
    n_fast = np.unique(positions_um[:, 1]).size
    return (n_slow, n_fast) if n_slow * n_fast == n_frames else None


def write_scan(
    out_dir: str | Path,
    name: str,
    frames: Iterable[np.ndarray],
    n_frames: int,
    geometry,
    *,
    positions_um: np.ndarray,
    pixel_mask: np.ndarray | None,
    frames_per_file: int = 100,
    count_time_s: float = 0.3,
    gap_value: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Write a scan as an Eiger would: master file, linked data files, and a ``.poni``.

    Parameters
    ----------
    out_dir
        Folder for the files (created if missing).
    name
        Scan name; files are ``<name>_master.h5``, ``<name>_data_00000N.h5``, ``<name>.poni``.
    frames
        Iterable of ``n_frames`` images, each of shape ``geometry.shape`` (rows = dim1 = slow,
        cols = dim2 = fast), counts; cast to uint32 (values are clipped to [0, 2**32 - 1]).
        Consumed one at a time.
    n_frames
        Number of frames ``frames`` yields.
    geometry
        :class:`xmodel.geometry.Geometry` (PONI: metres, radians).
    positions_um
        Scan positions, shape ``(n_frames, 2)``, micrometres; column 0 the slow motor,
        column 1 the fast one. ``/entry/sample/scan_shape`` is written when they form a
        full raster.
    pixel_mask
        Extra masked pixels, shape ``geometry.shape``: bool (True = masked, stored as the
        Dectris "dead" bit 2) or Dectris uint32 bits (nonzero = masked); None for none.
        Module gaps (bit 1) are added for an Eiger 4M.
    frames_per_file
        Frames per data file (an Eiger's ``nimages_per_file``).
    count_time_s
        Exposure time per frame, seconds.
    gap_value
        Value written into every pixel flagged in the pixel mask; None (default) writes
        2**32 - 1 like an Eiger with ``pixel_mask_applied`` (the default on the detector).
    progress
        Called as ``progress(frames_written, n_frames)`` after each frame.

    Returns
    -------
    Path
        The master file.

    Notes
    -----
    Dectris layout: DECTRIS EIGER2 User Manual v1.8 (pixel mask, section 11) and the NXmx
    application definition (doi:10.1107/S2052252520006818); the beam centre follows pyFAI's
    Fit2D conversion (see ``_fit2d_beam_centre``).

    Validation
    ----------
    Read back by :func:`xmodel.io.open_scan` and by fabio/pyFAI in tests/xmodel/test_io.py.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    shape = tuple(int(s) for s in geometry.shape)
    positions_um = np.asarray(positions_um, dtype=np.float64)
    if positions_um.shape != (n_frames, 2):
        raise ValueError(
            f"positions_um has shape {positions_um.shape}, but the scan has n_frames={n_frames} "
            f"frames: pass an array of shape ({n_frames}, 2) in micrometres (slow, fast)."
        )
    if frames_per_file < 1:
        raise ValueError(f"frames_per_file={frames_per_file} must be a positive integer, e.g. 100.")
    mask_bits = np.where(_gap_mask(geometry, shape), PIXEL_MASK_GAP, 0).astype(np.uint32)
    if pixel_mask is not None:
        pixel_mask = np.asarray(pixel_mask)
        if pixel_mask.shape != shape:
            raise ValueError(
                f"pixel_mask has shape {pixel_mask.shape}, but the detector in the geometry has "
                f"shape {shape}: pass a mask of the detector's shape (True = masked) or None."
            )
        extra = np.where(pixel_mask, PIXEL_MASK_DEAD, 0) if pixel_mask.dtype == bool else pixel_mask
        mask_bits |= extra.astype(np.uint32)
    flagged = mask_bits != 0
    fill = EIGER_MASKED_VALUE_UINT32 if gap_value is None else int(gap_value)

    master = out_dir / f"{name}_master.h5"
    geometry.to_poni(out_dir / f"{name}.poni")
    row_c, col_c, direct_dist = _fit2d_beam_centre(geometry)
    n_files = max(1, math.ceil(n_frames / frames_per_file))
    with h5py.File(master, "w") as f:
        f.attrs["default"] = "entry"
        entry = _group(f, "entry", "NXentry")
        data = _group(entry, "data", "NXdata")
        instrument = _group(entry, "instrument", "NXinstrument")
        det = _group(instrument, "detector", "NXdetector")
        _dataset(det, "description", f"{geometry.detector_name or 'detector'} (xmodel synthetic)")
        _dataset(det, "detector_distance", direct_dist, "m")
        _dataset(det, "x_pixel_size", float(geometry.pixel2), "m")
        _dataset(det, "y_pixel_size", float(geometry.pixel1), "m")
        _dataset(det, "beam_center_x", col_c, "pixel")
        _dataset(det, "beam_center_y", row_c, "pixel")
        _dataset(det, "count_time", float(count_time_s), "s")
        _dataset(det, "frame_time", float(count_time_s), "s")
        _dataset(det, "bit_depth_image", 32)
        _dataset(det, "sensor_material", "Si")
        _dataset(det, "sensor_thickness", 450e-6, "m")
        spec = _group(det, "detectorSpecific", "NXcollection")
        spec.create_dataset("pixel_mask", data=mask_bits, compression="gzip", compression_opts=1)
        _dataset(spec, "x_pixels_in_detector", shape[1])
        _dataset(spec, "y_pixels_in_detector", shape[0])
        _dataset(spec, "nimages", n_frames)
        _dataset(spec, "ntrigger", 1)
        _dataset(spec, "saturation_value", EIGER_MASKED_VALUE_UINT32 - 1)
        beam = _group(instrument, "beam", "NXbeam")
        _dataset(beam, "incident_wavelength", float(geometry.wavelength) * 1e10, "angstrom")
        sample = _group(entry, "sample", "NXsample")
        _dataset(sample, "positions", positions_um, "um")
        scan_shape = _scan_shape(positions_um, n_frames)
        if scan_shape is not None:
            _dataset(sample, "scan_shape", np.asarray(scan_shape, dtype=np.int64))
        for k in range(n_files):
            data[f"data_{k + 1:06d}"] = h5py.ExternalLink(f"{name}_data_{k + 1:06d}.h5", "/entry/data/data")

    frame_iter = iter(frames)
    written = 0
    for k in range(n_files):
        n_here = min(frames_per_file, n_frames - written) if n_frames else 0
        with h5py.File(out_dir / f"{name}_data_{k + 1:06d}.h5", "w") as f:
            entry = _group(f, "entry", "NXentry")
            grp = _group(entry, "data", "NXdata")
            ds = grp.create_dataset(
                "data", shape=(n_here, *shape), dtype=np.uint32, chunks=(1, *shape),
                **hdf5plugin.Bitshuffle(cname="lz4"),
            )
            ds.attrs["image_nr_low"] = written + 1
            ds.attrs["image_nr_high"] = written + n_here
            for j in range(n_here):
                try:
                    image = np.asarray(next(frame_iter))
                except StopIteration:
                    raise ValueError(
                        f"frames yielded only {written} images but n_frames={n_frames}: pass the "
                        f"number of frames the iterable really yields."
                    ) from None
                if image.shape != shape:
                    raise ValueError(
                        f"frame {written} has shape {image.shape}, but the geometry's detector has "
                        f"shape {shape}: simulate frames on geometry.shape."
                    )
                if image.dtype != np.uint32:
                    image = np.clip(image, 0, EIGER_MASKED_VALUE_UINT32).astype(np.uint32)
                else:
                    image = image.copy()
                image[flagged] = fill
                ds[j] = image
                written += 1
                if progress is not None:
                    progress(written, n_frames)
    return master
