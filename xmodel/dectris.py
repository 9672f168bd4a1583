"""Write scans in the layout of a Dectris Eiger detector (master file + data files).

A scan is ``DIR/<name>_master.h5`` holding the NeXus metadata and, under ``/entry/data``,
external links ``data_000001``, ``data_000002``, ... to ``DIR/<name>_data_00000N.h5``, each
holding ``/entry/data/data`` of shape ``(frames, rows, cols)`` (1 to ``frames_per_file``
frames), uint32, one frame per chunk, compressed with bitshuffle-LZ4 (hdf5plugin), exactly as
an Eiger writes them. The master holds no scan positions (a real one never does): they go,
with the per-frame monitor, into the beamline-style scan file ``DIR/<name>.fio``
(:mod:`xmodel.fio`; columns ``x_um``, ``y_um``, ``monitor``). The geometry also goes to
``DIR/<name>.poni`` so that the scan opens in pyFAI. Frames are streamed: only one frame is in
memory at a time.

Layout (field names, units) follows the Dectris EIGER HDF5 master files as read by fabio's
``EigerImage`` / ``eiger2cbf`` and pyFAI's ``eiger-mask``:

=============================================================================  ========  =============================
path                                                                           unit      meaning
=============================================================================  ========  =============================
/entry/instrument/detector/detector_distance                                   m         sample-detector
/entry/instrument/detector/x_pixel_size, y_pixel_size                          m         pixel2, pixel1
/entry/instrument/detector/beam_center_x, beam_center_y                        pixel     direct beam (col, row)
/entry/instrument/detector/count_time, frame_time                              s
/entry/instrument/detector/bit_depth_image                                               32
/entry/instrument/detector/detectorSpecific/pixel_mask                         (uint32)  nonzero = masked
/entry/instrument/detector/detectorSpecific/pixel_mask_applied                           1: masked pixels hold 2**32-1
/entry/instrument/detector/detectorSpecific/countrate_correction_count_cutoff            more counts = saturated
/entry/instrument/detector/detectorSpecific/x_pixels_in_detector                         cols
/entry/instrument/detector/detectorSpecific/y_pixels_in_detector                         rows
/entry/instrument/detector/detectorSpecific/nimages, ntrigger                            frames
/entry/instrument/detector/detectorSpecific/data_collection_date                         ISO time
/entry/instrument/beam/incident_wavelength                                     angstrom
=============================================================================  ========  =============================

The beam centre is the direct-beam position in pixels from the detector's outer corner (the
centre of pixel ``(i, j)`` at ``(i + 0.5, j + 0.5)``), the convention pyFAI writes into NeXus
files (``pyFAI.io.nexus``: ``beam_center_x = poni2 / pixel2``) and Fit2D's centre, so that
``poni = centre * pixel`` for an untilted detector. The NeXus metadata describe an untilted
detector; a tilted geometry is stored exactly only in the ``.poni``.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Collection, Iterable
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
    """Direct-beam position (row, col) in pixels from the outer corner and distance along the beam (m).

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
    col = (geometry.poni2 + geometry.dist * tan_tilt * cos_tpr) / geometry.pixel2
    row = (geometry.poni1 + geometry.dist * tan_tilt * sin_tpr) / geometry.pixel1
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


def _nxdata_root(f: h5py.File) -> tuple[h5py.Group, h5py.Group]:
    """``/entry`` (NXentry) and ``/entry/data`` (NXdata) with the ``default`` chain from the root
    (NeXus attributes a viewer follows to the frames; readers of Eiger files ignore them)."""
    f.attrs["NX_class"] = "NXroot"
    f.attrs["default"] = "entry"
    entry = _group(f, "entry", "NXentry")
    entry.attrs["default"] = "data"
    return entry, _group(entry, "data", "NXdata")


def write_scan(
    out_dir: str | Path,
    name: str,
    frames: Iterable[np.ndarray],
    n_frames: int,
    geometry,
    *,
    positions_um: np.ndarray | None,
    pixel_mask: np.ndarray | None,
    monitor: np.ndarray | None = None,
    frames_per_file: int = 100,
    count_time_s: float = 0.3,
    count_cutoff: int | None = None,
    pixel_mask_applied: bool = True,
    gap_value: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    skip_files: Collection[int] = (),
    file_done: Callable[[int], None] | None = None,
) -> Path:
    """Write a scan as an Eiger would: master file, linked data files, a ``.poni`` and a ``.fio``.

    Parameters
    ----------
    out_dir
        Folder for the files (created if missing).
    name
        Scan name; files are ``<name>_master.h5``, ``<name>_data_00000N.h5``, ``<name>.poni``
        and ``<name>.fio`` (when there are positions or a monitor).
    frames
        Iterable of ``n_frames`` images, each of shape ``geometry.shape`` (rows = dim1 = slow,
        cols = dim2 = fast), counts; cast to uint32 (values are clipped to [0, 2**32 - 1]).
        Consumed one at a time.
    n_frames
        Number of frames ``frames`` yields, at least 1.
    geometry
        :class:`xmodel.geometry.Geometry` (PONI: metres, radians).
    positions_um
        Scan positions in acquisition order, shape ``(n_frames, 2)``, micrometres; column 0 the
        slow motor (y), column 1 the fast one (x). Written to the scan file ``<name>.fio``
        (columns ``y_um``, ``x_um``), not to the master; None for none.
    pixel_mask
        Extra masked pixels, shape ``geometry.shape``: bool (True = masked, stored as the
        Dectris "dead" bit 2) or Dectris uint32 bits (nonzero = masked); None for none.
        Module gaps (bit 1) are added for a known detector.
    monitor
        Per-frame incident-flux monitor (e.g. ion-chamber counts), ``(n_frames,)``; written as
        the ``monitor`` column of ``<name>.fio``.
    frames_per_file
        Frames per data file (an Eiger's ``nimages_per_file``); the last file holds the rest.
    count_time_s
        Exposure time per frame, seconds.
    count_cutoff
        ``countrate_correction_count_cutoff`` (counts above it are saturated); None omits it.
    pixel_mask_applied
        True (the Eiger default): every pixel flagged in the pixel mask holds ``gap_value``;
        False: flagged pixels keep their counts (the reader masks them from ``pixel_mask``).
    gap_value
        Value written into flagged pixels; None (default) writes 2**32 - 1 as an Eiger does.
    progress
        Called as ``progress(frames_written, n_frames)`` after each frame.
    skip_files
        Data files (0-based: file ``k`` is ``<name>_data_{k + 1:06d}.h5``) written completely by an
        earlier call with the same arguments: they are left as they are and ``frames`` yields
        only the frames of the other files (a resumed synthesis, `xmodel.synth.render_scan`).
    file_done
        Called as ``file_done(k)`` when data file ``k`` is complete and closed.

    Returns
    -------
    Path
        The master file.

    Notes
    -----
    Dectris layout: DECTRIS EIGER2 User Manual v1.8 (pixel mask, section 11) and the NXmx
    application definition (doi:10.1107/S2052252520006818); the beam centre follows pyFAI's
    NeXus / Fit2D convention (see ``_fit2d_beam_centre``).

    Validation
    ----------
    Read back by :func:`xmodel.io.open_scan` and by fabio (``EigerImage``, every frame) and
    pyFAI in tests/xmodel/test_io.py.
    """
    import datetime

    from xmodel.fio import write_fio

    if isinstance(n_frames, bool) or int(n_frames) != n_frames or n_frames < 1:
        raise ValueError(f"n_frames={n_frames!r}: a scan holds at least one frame; pass the number of frames "
                         f"the iterable yields (an integer >= 1).")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    shape = tuple(int(s) for s in geometry.shape)
    if positions_um is not None:
        positions_um = np.asarray(positions_um, dtype=np.float64)
        if positions_um.shape != (n_frames, 2):
            raise ValueError(
                f"positions_um has shape {positions_um.shape}, but the scan has n_frames={n_frames} "
                f"frames: pass an array of shape ({n_frames}, 2) in micrometres (slow, fast)."
            )
    if monitor is not None:
        monitor = np.asarray(monitor, dtype=np.float64).reshape(-1)
        if monitor.shape != (n_frames,):
            raise ValueError(f"monitor has {monitor.size} values but the scan has n_frames={n_frames} frames.")
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
    flagged = mask_bits != 0 if pixel_mask_applied else np.zeros(shape, dtype=bool)
    fill = EIGER_MASKED_VALUE_UINT32 if gap_value is None else int(gap_value)

    master = out_dir / f"{name}_master.h5"
    geometry.to_poni(out_dir / f"{name}.poni")
    if positions_um is not None or monitor is not None:
        columns = {}
        if positions_um is not None:
            columns.update(x_um=positions_um[:, 1], y_um=positions_um[:, 0])
        if monitor is not None:
            columns["monitor"] = monitor
        write_fio(out_dir / f"{name}.fio", {"point_nb": np.arange(n_frames), **columns},
                  comments=[f"xmodel synthetic scan {name}: {n_frames} points, detector {name}_master.h5"],
                  parameters={"count_time": float(count_time_s)})
    row_c, col_c, direct_dist = _fit2d_beam_centre(geometry)
    n_files = max(1, math.ceil(n_frames / frames_per_file))
    with h5py.File(master, "w") as f:
        entry, data = _nxdata_root(f)
        instrument = _group(entry, "instrument", "NXinstrument")
        det = _group(instrument, "detector", "NXdetector")
        _dataset(det, "description", f"Dectris {geometry.detector_name or 'detector'} (xmodel synthetic)")
        _dataset(det, "detector_distance", direct_dist, "m")
        _dataset(det, "x_pixel_size", float(geometry.pixel2), "m")
        _dataset(det, "y_pixel_size", float(geometry.pixel1), "m")
        _dataset(det, "beam_center_x", col_c, "pixel")
        _dataset(det, "beam_center_y", row_c, "pixel")
        _dataset(det, "count_time", float(count_time_s), "s")
        _dataset(det, "frame_time", float(count_time_s), "s")
        _dataset(det, "bit_depth_image", 32)
        _dataset(det, "bit_depth_readout", 32)
        _dataset(det, "sensor_material", "Si")
        _dataset(det, "sensor_thickness", 450e-6, "m")
        spec = _group(det, "detectorSpecific", "NXcollection")
        spec.create_dataset("pixel_mask", data=mask_bits, compression="gzip", compression_opts=1)
        _dataset(spec, "pixel_mask_applied", int(bool(pixel_mask_applied)))
        _dataset(spec, "x_pixels_in_detector", shape[1])
        _dataset(spec, "y_pixels_in_detector", shape[0])
        _dataset(spec, "nimages", n_frames)
        _dataset(spec, "ntrigger", 1)
        _dataset(spec, "nframes_sum", 1)
        _dataset(spec, "saturation_value", EIGER_MASKED_VALUE_UINT32 - 1)
        if count_cutoff is not None:
            _dataset(spec, "countrate_correction_count_cutoff", int(count_cutoff))
        _dataset(spec, "data_collection_date", datetime.datetime.now(datetime.timezone.utc).isoformat())
        beam = _group(instrument, "beam", "NXbeam")
        _dataset(beam, "incident_wavelength", float(geometry.wavelength) * 1e10, "angstrom")
        for k in range(n_files):
            data[f"data_{k + 1:06d}"] = h5py.ExternalLink(f"{name}_data_{k + 1:06d}.h5", "/entry/data/data")
        data.attrs["signal"] = "data_000001"          # viewers show the frames of the first data file

    frame_iter = iter(frames)
    written = 0
    skip_files = {int(k) for k in skip_files}
    for k in range(n_files):
        n_here = min(frames_per_file, n_frames - written)
        if k in skip_files:
            written += n_here
            if progress is not None:
                progress(written, n_frames)
            continue
        with h5py.File(out_dir / f"{name}_data_{k + 1:06d}.h5", "w") as f:
            entry, grp = _nxdata_root(f)
            grp.attrs["signal"] = "data"
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
        if file_done is not None:
            file_done(k)
    return master
