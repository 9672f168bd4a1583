"""Fault injection, files stage: every bad master, data, geometry, mask, positions or monitor file
is an error that names the file, the key or the frame and what was expected; bad pixels are
counted per frame, and a frame whose chunk does not decode is a `FrameReadError` for that frame.

Each row of the tables below is one distinct fault; the message is pinned with ``match=``. The
scans are a few frames of a 24 x 20 detector written by `xmodel.dectris.write_scan` (the layout
of a Dectris Eiger), so the whole module runs in a few seconds. tests/xmodel/test_io.py and
tests/xmodel/test_positions.py hold the behaviour of valid files.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
from collections.abc import Callable
from pathlib import Path
from unittest import mock

import h5py
import numpy as np
import pytest

from tests.faults.small_scans import SHAPE, fresh_copy, geometry, write_small_scan
from xmodel.dectris import write_scan
from xmodel.fio import FioError, write_fio
from xmodel.io import FrameReadError, ScanError, open_scan
from xmodel.positions import (
    PositionsError,
    grid_positions,
    read_monitor,
    read_positions,
)
from xmodel.reduced import open_reduced
from xmodel.reduction import reduce_scan

N_FRAMES = 6
DET = "entry/instrument/detector"
SPEC = f"{DET}/detectorSpecific"
GROUP = object()          # put(key, GROUP): a group where a dataset belongs


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    """A 6-frame scan in two data files (frames 0-2, 3-5) with its .poni and .fio."""
    folder = tmp_path_factory.mktemp("template")
    write_small_scan(folder, grid_positions((2, 3), 0.5), np.full(N_FRAMES, 100.0))
    return folder


@pytest.fixture
def master(template: Path, tmp_path: Path) -> Path:
    """A fresh copy of the template scan; its master file."""
    return fresh_copy(template, tmp_path)


# --- mutations of a scan ---------------------------------------------------------------------

Mutation = Callable[[Path, contextlib.ExitStack], None]


def put(key: str, value) -> Mutation:
    """Replace (or add) ``key`` of the master by ``value`` (a group for `GROUP`)."""
    def mutate(master: Path, stack: contextlib.ExitStack) -> None:
        with h5py.File(master, "r+") as f:
            if key in f or isinstance(f.get(key, getlink=True), h5py.SoftLink):
                del f[key]
            if value is GROUP:
                f.create_group(key)
            elif isinstance(value, (h5py.SoftLink, h5py.ExternalLink)):
                f[key] = value
            else:
                f.create_dataset(key, data=value)
    return mutate


def drop(key: str) -> Mutation:
    def mutate(master: Path, stack: contextlib.ExitStack) -> None:
        with h5py.File(master, "r+") as f:
            del f[key]
    return mutate


def with_units(key: str, units: str) -> Mutation:
    def mutate(master: Path, stack: contextlib.ExitStack) -> None:
        with h5py.File(master, "r+") as f:
            f[key].attrs["units"] = units
    return mutate


def data_file(k: int = 2) -> Callable[[Path], Path]:
    return lambda master: master.parent / f"s_data_{k:06d}.h5"


def replace_data(k: int, data=None, *, text: bytes | None = None, **kwargs) -> Mutation:
    """Data file ``k`` replaced by a dataset ``/entry/data/data`` (or by the bytes ``text``)."""
    def mutate(master: Path, stack: contextlib.ExitStack) -> None:
        path = data_file(k)(master)
        if text is not None:
            path.write_bytes(text)
            return
        with h5py.File(path, "w") as f:
            f.create_dataset("entry/data/data", data=data, **kwargs)
    return mutate


def remove_data(k: int, rename: bool = False) -> Mutation:
    def mutate(master: Path, stack: contextlib.ExitStack) -> None:
        path = data_file(k)(master)
        if rename:
            path.rename(path.with_name("s_data_000002_old.h5"))
        else:
            path.unlink()
    return mutate


def truncate(which: Callable[[Path], Path], fraction: float) -> Mutation:
    def mutate(master: Path, stack: contextlib.ExitStack) -> None:
        path = which(master)
        with open(path, "r+b") as fh:
            fh.truncate(int(path.stat().st_size * fraction))
    return mutate


def lock(which: Callable[[Path], Path]) -> Mutation:
    """Hold an exclusive lock on the file, as HDF5 does for a process that has it open for writing."""
    def mutate(master: Path, stack: contextlib.ExitStack) -> None:
        fd = os.open(which(master), os.O_RDWR)
        stack.callback(os.close, fd)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return mutate


def refuse(which: Callable[[Path], Path]) -> Mutation:
    """Opening the file fails with EACCES (as for a file without read permission; tests run as root)."""
    def mutate(master: Path, stack: contextlib.ExitStack) -> None:
        target = which(master)
        real = h5py.File

        def opener(name, *args, **kwargs):
            if Path(name) == target:
                raise PermissionError(errno.EACCES, "Unable to synchronously open file (file open failed: "
                                                    "errno = 13, error message = 'Permission denied')")
            return real(name, *args, **kwargs)

        stack.enter_context(mock.patch.object(h5py, "File", opener))
    return mutate


def external(filename: str, inner: str = "/entry/data/data") -> h5py.ExternalLink:
    return h5py.ExternalLink(filename, inner)


# --- the master file: keys missing or of the wrong type or shape ------------------------------

MASTER_FAULTS = [
    ("no distance", drop(f"{DET}/detector_distance"),
     (r"s_master\.h5 lacks /entry/instrument/detector/detector_distance, needed for the geometry: give the "
      r"geometry with --poni FILE\.poni")),
    ("no wavelength", drop("entry/instrument/beam/incident_wavelength"),
     r"lacks /entry/instrument/beam/incident_wavelength, needed for the geometry: give the geometry with --poni"),
    ("distance text", put(f"{DET}/detector_distance", "0.05 m"),
     (r"s_master\.h5:/entry/instrument/detector/detector_distance holds '0\.05 m'; expected a positive number "
      r"\(m\)\. Give the geometry with --poni FILE\.poni instead")),
    ("distance negative", put(f"{DET}/detector_distance", -0.05),
     r"detector_distance holds -0\.05; expected a positive number \(m\)"),
    ("distance array", put(f"{DET}/detector_distance", [0.05, 0.06]),
     r"detector_distance holds an array of shape \(2,\) \(float64\); expected a positive number"),
    ("distance group", put(f"{DET}/detector_distance", GROUP),
     r"detector_distance holds a group; expected a positive number \(m\)"),
    ("distance units", with_units(f"{DET}/detector_distance", "furlong"),
     r"detector_distance has units 'furlong'; expected one of \['m', 'meter'.*--poni FILE\.poni"),
    ("beam centre nan", put(f"{DET}/beam_center_x", np.nan),
     r"beam_center_x holds nan; expected a finite number \(pixels\)"),
    ("beam centre text", put(f"{DET}/beam_center_y", "centre"),
     r"beam_center_y holds 'centre'; expected a finite number \(pixels\)"),
    ("pixel size zero", put(f"{DET}/x_pixel_size", 0.0), r"x_pixel_size holds 0\.0; expected a positive number \(m\)"),
    ("pixel size inf", put(f"{DET}/y_pixel_size", np.inf), r"y_pixel_size holds inf; expected a positive number"),
    ("wavelength zero", put("entry/instrument/beam/incident_wavelength", 0.0),
     r"incident_wavelength holds 0\.0; expected a positive number \(angstrom\)"),
    ("detector width text", put(f"{SPEC}/x_pixels_in_detector", "wide"),
     r"x_pixels_in_detector holds 'wide'; expected a positive integer \(pixels\)\. The master file is damaged"),
    ("detector height zero", put(f"{SPEC}/y_pixels_in_detector", 0),
     r"y_pixels_in_detector holds 0; expected a positive integer \(pixels\)"),
    ("detector width fraction", put(f"{SPEC}/x_pixels_in_detector", 20.5),
     r"x_pixels_in_detector holds 20\.5; expected a positive integer"),
    ("detector of another size", put(f"{SPEC}/x_pixels_in_detector", 30),
     r"s_data_000001\.h5:/entry/data/data \(frames 0-2\) holds frames of shape \(24, 20\), expected \(24, 30\)"),
    ("pixel mask shape", put(f"{SPEC}/pixel_mask", np.zeros((3, 3), np.uint32)),
     (r"pixel_mask holds an array of shape \(3, 3\) \(uint32\); expected integer flags of the frames' shape "
      r"\(24, 20\)")),
    ("pixel mask float", put(f"{SPEC}/pixel_mask", np.zeros(SHAPE)),
     r"pixel_mask holds an array of shape \(24, 20\) \(float64\); expected integer flags"),
    ("pixel mask group", put(f"{SPEC}/pixel_mask", GROUP), r"pixel_mask holds a group; expected integer flags"),
    ("count time text", put(f"{DET}/count_time", "0.3 s"), r"count_time holds '0\.3 s'; expected a positive number \(s\)"),
    ("count time negative", put(f"{DET}/count_time", -0.3), r"count_time holds -0\.3; expected a positive number"),
    ("count cutoff text", put(f"{SPEC}/countrate_correction_count_cutoff", "high"),
     r"countrate_correction_count_cutoff holds 'high'; expected a positive number \(counts\)"),
    ("count cutoff zero", put(f"{SPEC}/countrate_correction_count_cutoff", 0),
     r"countrate_correction_count_cutoff holds 0; expected a positive number"),
    ("mask applied fraction", put(f"{SPEC}/pixel_mask_applied", 0.5),
     r"pixel_mask_applied holds 0\.5; expected a finite integer \(0 or 1\)"),
    ("positions shape", put("entry/sample/positions", np.zeros((4, 2))),
     r"/entry/sample/positions has shape \(4, 2\), expected \(6, 2\) for 6 frames"),
    ("positions text", put("entry/sample/positions", np.array([["a", "b"]] * 6, dtype="S1")),
     r"/entry/sample/positions holds \|S1; expected numbers \(6, 2\) in um"),
    ("scan shape of 3", put("entry/sample/scan_shape", [2, 3, 1]),
     r"/entry/sample/scan_shape holds an array of shape \(3,\) \(int64\); expected two positive integers"),
    ("scan shape zero", put("entry/sample/scan_shape", [0, 6]), r"scan_shape holds an array .*two positive integers"),
    # the links to the data
    ("no data group", drop("entry/data"), r"s_master\.h5 has no /entry/data group: is this a Dectris master file"),
    ("data group a dataset", put("entry/data", np.zeros(3)), r"has no /entry/data group"),
    ("data link a group", put("entry/data/data_000001", GROUP),
     r"s_master\.h5:/entry/data/data_000001 \(frames from 0 on\) is a group; expected a dataset of frames"),
    ("data link dangling", put("entry/data/data_000001", h5py.SoftLink("/entry/nowhere")),
     r"/entry/data/data_000001 \(frames from 0 on\) is a link to nothing"),
    ("data link to a missing dataset", put("entry/data/data_000002", external("s_data_000002.h5", "/entry/x")),
     (r"Data file .*s_data_000002\.h5 \(linked from .*s_master\.h5:/entry/data/data_000002, frames from 3 on\) has no "
      r"dataset /entry/x; it is not a data file of this scan")),
    ("data link to a group", put("entry/data/data_000002", external("s_data_000002.h5", "/entry/data")),
     r"s_data_000002\.h5 \(linked .*\) has no dataset /entry/data \(it is a group\)"),
    ("data link to a folder", put("entry/data/data_000002", external("..")),
     r"Data file .*scan/\.\. \(linked from .*frames from 3 on\) is a directory, not an HDF5 file"),
    ("no data links", lambda m, s: [drop("entry/data/data_000001")(m, s), drop("entry/data/data_000002")(m, s)],
     r"s_master\.h5:/entry/data holds no data_000001, data_000002, \.\.\. entries"),
]


@pytest.mark.parametrize("mutate, match", [r[1:] for r in MASTER_FAULTS], ids=[r[0] for r in MASTER_FAULTS])
def test_bad_master(master: Path, mutate: Mutation, match: str) -> None:
    with contextlib.ExitStack() as stack:
        mutate(master, stack)
        with pytest.raises(ScanError, match=match):
            open_scan(master)


# --- the files themselves: missing, renamed, truncated, locked, not HDF5 -----------------------

def frames(n: int, dtype=np.uint32) -> np.ndarray:
    return np.ones((n, *SHAPE), dtype=dtype)


FILE_FAULTS = [
    ("data file missing", remove_data(2),
     (r"Data file .*s_data_000002\.h5 \(linked from .*s_master\.h5:/entry/data/data_000002, frames from 3 on\) is "
      r"missing: copy all <name>_data_\*\.h5 files next to the master file\.$")),
    ("data file renamed", remove_data(2, rename=True),
     (r"s_data_000002\.h5 .* is missing: .*The folder holds data files no link names: s_data_000002_old\.h5 "
      r"\(renamed\?\)")),
    ("data file truncated", truncate(data_file(2), 0.5),
     (r"Data file .*s_data_000002\.h5 \(linked .*frames from 3 on\) is truncated: it holds \d+ of its \d+ bytes "
      r"\(an incomplete copy or an interrupted transfer\); copy it again")),
    ("data file cut by 1 byte", truncate(data_file(1), 0.999),
     r"s_data_000001\.h5 \(linked .*frames from 0 on\) is truncated"),
    ("data file not HDF5", replace_data(2, text=b"<html>404 Not Found</html>\n"),
     r"s_data_000002\.h5 \(linked .*\) is not an HDF5 file \(no HDF5 signature at its start\)"),
    ("data file empty", replace_data(1, text=b""), r"s_data_000001\.h5 \(linked .*\) is not an HDF5 file"),
    ("data file locked", lock(data_file(2)),
     r"s_data_000002\.h5 \(linked .*\) is locked: another process holds it open for writing \(HDF5 file lock\)"),
    ("data file unreadable", refuse(data_file(1)),
     r"s_data_000001\.h5 \(linked .*\) cannot be read: permission denied; check its permissions"),
    ("frames 2D", replace_data(2, np.ones(SHAPE, np.uint32)),
     r"s_data_000002\.h5:/entry/data/data \(frames from 3 on\) has shape \(24, 20\); expected \(frames, rows, cols\)"),
    ("frames complex", replace_data(2, frames(3, np.complex64)),
     (r"s_data_000002\.h5:/entry/data/data \(frames from 3 on\) holds complex64 values; expected counts as unsigned "
      r"or signed integers or floats")),
    ("frames boolean", replace_data(1, frames(3, bool)), r"s_data_000001\.h5:/entry/data/data .* holds bool values"),
    ("frames of another dtype", replace_data(2, frames(3, np.float32)),
     (r"s_data_000002\.h5:/entry/data/data \(frames from 3 on\) holds float32 frames but .*s_data_000001\.h5:"
      r"/entry/data/data holds uint32: the data files do not belong to one acquisition")),
    ("zero frames", lambda m, s: [replace_data(k, np.zeros((0, *SHAPE), np.uint32), maxshape=(None, *SHAPE),
                                               chunks=(1, *SHAPE))(m, s) for k in (1, 2)],
     (r"s_master\.h5 holds no frames: its data \(s_data_000001\.h5:/entry/data/data \(0, 24, 20\), "
      r"s_data_000002\.h5:/entry/data/data \(0, 24, 20\)\) have 0 frames\. The acquisition stopped before its first "
      r"frame")),
    ("master truncated", truncate(lambda m: m, 0.6),
     r"Master file .*s_master\.h5 is truncated: it holds \d+ of its \d+ bytes"),
    ("master not HDF5", lambda m, s: m.write_text("[beam]\nenergy_kev = 13.8\n"),
     r"Master file .*s_master\.h5 is not an HDF5 file \(no HDF5 signature at its start\)"),
    ("master locked", lock(lambda m: m), r"Master file .*s_master\.h5 is locked: another process holds it open"),
    ("master unreadable", refuse(lambda m: m), r"Master file .*s_master\.h5 cannot be read: permission denied"),
]


@pytest.mark.parametrize("mutate, match", [r[1:] for r in FILE_FAULTS], ids=[r[0] for r in FILE_FAULTS])
def test_bad_file(master: Path, mutate: Mutation, match: str) -> None:
    with contextlib.ExitStack() as stack:
        mutate(master, stack)
        with pytest.raises(ScanError, match=match):
            open_scan(master)


def test_directory_given_as_master(master: Path) -> None:
    with pytest.raises(ScanError, match=r"Master file .*scan is a directory: pass the <name>_master\.h5 file itself; "
                                        r"it holds s_master\.h5\."):
        open_scan(master.parent)


@pytest.mark.parametrize("n_frames", [0, -2, 2.5, True])
def test_a_scan_of_no_frames_is_not_written(tmp_path: Path, n_frames) -> None:
    """`write_scan` refuses a number of frames that is not a positive integer (no empty data files)."""
    with pytest.raises(ValueError, match=rf"n_frames={n_frames!r}: a scan holds at least one frame"):
        write_scan(tmp_path, "e", iter([]), n_frames, geometry(), positions_um=None, pixel_mask=None)
    assert not any(tmp_path.iterdir())


def test_fewer_frames_than_the_master_announces_is_said(master: Path, caplog) -> None:
    """An interrupted acquisition (nimages larger than the frames stored) opens, with a warning."""
    put(f"{SPEC}/nimages", 8)(master, contextlib.ExitStack())
    with caplog.at_level(logging.WARNING, logger="xmodel.io"), open_scan(master) as scan:
        assert scan.n_frames == 6
    assert "announces 8 frames (nimages x ntrigger) but its data files hold 6" in caplog.text


# --- geometry and mask files given with the scan ---------------------------------------------

def _poni_dir(master: Path) -> dict:
    (master.parent / "geometry").mkdir()
    return {"poni": master.parent / "geometry"}


def _mask_file(name: str, content) -> Callable[[Path], dict]:
    def make(master: Path) -> dict:
        path = master.parent / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        elif content is None:
            path.mkdir()
        else:
            np.save(path, content)
        return {"mask": path}
    return make


ARGUMENT_FAULTS = [
    ("poni a directory", _poni_dir, ScanError, (r"The geometry \(--poni\) .*geometry is a directory: expected a pyFAI "
                                                r"\.poni file")),
    ("poni of another detector", lambda m: {"poni": _other_poni(m)}, ScanError,
     r"The detector in .*other\.poni has shape \(10, 10\) but the frames in .*s_master\.h5 have shape \(24, 20\)"),
    ("mask a directory", _mask_file("masks", None), ValueError,
     r"Mask file '.*masks' is a directory: expected a mask file"),
    ("mask not npy", _mask_file("m.npy", b"P1 24 20\n0 0 1\n"), ValueError,
     r"Mask file '.*m\.npy' is not a readable \.npy array"),
    ("mask not HDF5", _mask_file("m.h5", b"not an hdf5 file"), ValueError,
     r"Mask file '.*m\.h5' is not an HDF5 file \(no HDF5 signature"),
    ("mask of text", _mask_file("t.npy", np.full(SHAPE, "x")), ValueError,
     r"Mask in '.*t\.npy' holds <U1 values; expected numbers or booleans"),
    ("mask array of another shape", lambda m: {"mask": np.zeros((2, 2), bool)}, ScanError,
     r"The mask array has shape \(2, 2\) but the frames have shape \(24, 20\)"),
]


def _other_poni(master: Path) -> Path:
    path = master.parent / "other.poni"
    geometry((10, 10)).to_poni(path)
    return path


@pytest.mark.parametrize("make, error, match", [r[1:] for r in ARGUMENT_FAULTS], ids=[r[0] for r in ARGUMENT_FAULTS])
def test_bad_geometry_or_mask(master: Path, make, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        open_scan(master, **make(master))


def test_missing_geometry_names_the_cli_option(master: Path, tmp_path: Path, capsys) -> None:
    """`xmodel reduce` on a master without geometry: exit 3 and the fix is the --poni option."""
    from xmodel.cli import main

    drop(f"{DET}/beam_center_x")(master, contextlib.ExitStack())
    assert main(["reduce", str(master), "--out", str(tmp_path / "r.h5"), "-q"]) == 3
    err = capsys.readouterr().err
    assert "lacks /entry/instrument/detector/beam_center_x, needed for the geometry: give the geometry with " \
           "--poni FILE.poni" in err
    assert main(["reduce", str(master), "--out", str(tmp_path / "r.h5"), "-q", "--poni",
                 str(master.parent / "s.poni"), "--q-bins", "8", "--chi-bins", "4"]) == 0


# --- frames whose stored data do not decode ----------------------------------------------------

def damage_chunk(master: Path, frame: int, offset: int, data: Callable[[int], bytes]) -> Path:
    """Overwrite bytes of the chunk of ``frame`` (in the second data file, frames 3-5)."""
    path = data_file(2)(master)
    with h5py.File(path, "r") as f:
        info = f["entry/data/data"].id.get_chunk_info(frame - 3)
    with open(path, "r+b") as fh:
        fh.seek(info.byte_offset + offset)
        fh.write(data(info.size - offset))
    return path


CHUNK_DAMAGE = [
    ("header overwritten", 0, lambda size: b"\xff" * 16),
    ("header zeroed", 0, lambda size: b"\x00" * 12),
    ("chunk zeroed", 0, lambda size: b"\x00" * size),
    ("blocks overwritten", 12, lambda size: np.random.default_rng(1).bytes(size)),
    ("second half lost", 150, lambda size: b"\x00" * size),
]


@pytest.mark.parametrize("offset, data", [r[1:] for r in CHUNK_DAMAGE], ids=[r[0] for r in CHUNK_DAMAGE])
def test_corrupt_chunk_is_not_blamed_on_a_missing_plugin(master: Path, offset: int, data) -> None:
    """hdf5plugin is importable, the filter is there: the message says the frame's chunk is
    corrupt (naming frame and file), never to install the plugin; the other frames still read."""
    damage_chunk(master, 4, offset, data)
    with open_scan(master) as scan:
        with pytest.raises(FrameReadError, match=r"Cannot read frame 4 \(frame 1 of .*s_data_000002\.h5:/entry/data/"
                                                 r"data, expected uint32 of shape \(24, 20\)\): .* The frame's stored "
                                                 r"data do not decode with the bitshuffle-LZ4 filter \(installed\): its "
                                                 r"chunk is corrupt or cut short; copy s_data_000002\.h5 again") as info:
            scan.frame(4)
        assert "hdf5plugin" not in str(info.value) and info.value.frame == 4
        assert info.value.path.name == "s_data_000002.h5"
        assert scan.frame(3).shape == scan.frame(5).shape == SHAPE


# --- pixels invalid in their own frame --------------------------------------------------------

def _hand_made_scan(folder: Path, data: np.ndarray, cutoff: int | None = None) -> tuple[Path, Path]:
    """A master linking one uncompressed data file of ``data`` (any dtype), and a .poni."""
    folder.mkdir()
    with h5py.File(folder / "h_data_000001.h5", "w") as f:
        f["entry/data/data"] = data
    with h5py.File(folder / "h_master.h5", "w") as f:
        f["entry/data/data_000001"] = h5py.ExternalLink("h_data_000001.h5", "/entry/data/data")
        if cutoff is not None:
            f[f"{SPEC}/countrate_correction_count_cutoff"] = cutoff
    geometry().to_poni(folder / "h.poni")
    return folder / "h_master.h5", folder / "h.poni"


PIXELS = [(3, 4), (10, 11), (20, 2)]   # three pixels of frame 1 made invalid

INVALID_PIXELS = [
    ("nan", np.float32, np.nan, None),
    ("+inf", np.float32, np.inf, None),
    ("-inf", np.float64, -np.inf, None),
    ("negative float", np.float32, -3.0, None),
    ("negative int", np.int32, -1, None),
    ("uint8 dummy 255", np.uint8, 255, None),
    ("uint16 dummy 65535", np.uint16, 65535, None),
    ("uint32 dummy", np.uint32, 2**32 - 1, None),
    ("saturated above the cutoff", np.uint32, 500, 400),
    ("int16 saturated", np.int16, 30000, 1000),
]


@pytest.mark.parametrize("dtype, value, cutoff", [r[1:] for r in INVALID_PIXELS], ids=[r[0] for r in INVALID_PIXELS])
def test_invalid_pixels_are_counted_in_their_own_frame(tmp_path: Path, dtype, value, cutoff) -> None:
    """NaN, inf, negative, dummy and saturated values leave their own frame's bins only, and are
    counted per frame in ``invalid_pixels``; the other frames keep every pixel."""
    data = np.full((4, *SHAPE), 7, dtype=dtype)
    for r, c in PIXELS:
        data[1, r, c] = value
    master, poni = _hand_made_scan(tmp_path / "h", data, cutoff)
    red = open_reduced(reduce_scan(master, tmp_path / "r.h5", poni=poni, q_bins=8, chi_bins=4, batch_size=3,
                                   progress=False))
    assert red.invalid_pixels.tolist() == [0, len(PIXELS), 0, 0]
    assert red.frame_pixel_counts(1).sum() == red.pixel_counts.sum() - 3
    polar = red.polar()
    filled = red.pixel_counts > 0
    np.testing.assert_allclose(polar[:, filled], 7.0)          # the invalid values are not averaged in
    assert not red.unreadable.any()


def test_frame_with_every_pixel_invalid_is_flagged_not_reduced_again(tmp_path: Path, caplog) -> None:
    """A frame whose every pixel holds the dummy value: NaN images, ``invalid_pixels`` = every binned
    pixel; a resumed run takes it as written (not as a batch that was never written)."""
    data = np.full((4, *SHAPE), 9, dtype=np.uint16)
    data[2] = 65535
    master, poni = _hand_made_scan(tmp_path / "h", data)
    out = reduce_scan(master, tmp_path / "r.h5", poni=poni, q_bins=8, chi_bins=4, batch_size=2, progress=False)
    red = open_reduced(out)
    assert red.invalid_pixels.tolist() == [0, 0, int(red.pixel_counts.sum()), 0]
    assert np.isnan(red.polar(2)).all() and np.isfinite(red.radial(3)[red.radial_counts > 0]).all()
    with caplog.at_level(logging.WARNING):
        reduce_scan(master, out, poni=poni, q_bins=8, chi_bins=4, batch_size=2, progress=False)
    assert "recorded as done but hold no data" not in caplog.text


# --- positions and monitor files ---------------------------------------------------------------

def _write(name: str, text: str | bytes | None) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        path = folder / name
        if text is None:
            path.mkdir()
        elif isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text)
        return path
    return make


def _npy(name: str, array) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        np.save(folder / name, np.asarray(array))
        return folder / name
    return make


def _h5(name: str, key: str, value, inner: str | None = None) -> Callable[[Path], str]:
    def make(folder: Path) -> str:
        with h5py.File(folder / name, "w") as f:
            if value is GROUP:
                f.create_group(key)
            else:
                f[key] = value
        return f"{folder / name}:{inner if inner is not None else key}"
    return make


def _fio(columns: dict, **parameters) -> Callable[[Path], Path]:
    return lambda folder: write_fio(folder / "scan.fio", columns, parameters=parameters)


GRID = grid_positions((2, 3), 0.5)
CSV = "x_um,y_um\n" + "".join(f"{x},{y}\n" for y, x in GRID)

POSITION_FAULTS = [
    ("csv wrong columns", _write("p.csv", "a,b\n" + CSV.split("\n", 1)[1]),
     r"p\.csv has no column 'x_um'; its columns are \['a', 'b'\]\. Name the columns with --position-columns"),
    ("csv text in a column", _write("p.csv", CSV.replace("0.5,0.0\n", "0.5,zero\n", 1)),
     r"p\.csv: column 'y_um' holds 'zero' in data row 2, not a number"),
    ("csv nan", _write("p.csv", CSV.replace("1.0,0.5", "nan,0.5")),
     r"Positions file .*p\.csv: frame 5 has a non-finite position \[0\.5, nan\] \(1 such frames\)"),
    ("csv too few rows", _write("p.csv", CSV.rsplit("\n", 2)[0] + "\n"),
     r"Positions file .*p\.csv has 5 rows but the scan has 6 frames: give one row per frame"),
    ("csv ragged row", _write("p.csv", CSV.replace("0.5,0.0\n", "0.5\n", 1)),
     r"p\.csv: data row 2 has 1 values but the header names 2 columns"),
    ("csv empty", _write("p.csv", "# nothing here\n"), r"p\.csv is empty: expected a header line and one row per frame"),
    ("a directory", _write("positions", None),
     r"Positions file .*positions \(from --positions '.*positions'\) is a directory: expected a file"),
    ("missing file", lambda folder: folder / "nope.csv", r"Positions file .*nope\.csv does not exist"),
    ("npy of 3 columns", _npy("p.npy", np.zeros((6, 3))),
     r"p\.npy holds an array of shape \(6, 3\); expected \(frames, 2\) as \(y, x\) in um"),
    ("npy of text", _npy("p.npy", np.full((6, 2), "a")), r"p\.npy \(from --positions\) holds <U1 values; expected numbers"),
    ("npy corrupt", _write("p.npy", b"\x93NUMPY garbage"), r"p\.npy \(from --positions\) is not a readable \.npy array"),
    ("h5 no dataset", _h5("p.h5", "entry/positions", GRID, inner="/entry/pos"),
     r"p\.h5 has no dataset '/entry/pos': pass --positions FILE\.h5:/path"),
    ("h5 a group", _h5("p.h5", "entry/positions", GROUP),
     r"p\.h5:entry/positions \(from --positions\) holds a group; expected a \(frames, 2\) dataset of numbers"),
    ("h5 no path", _h5("p.h5", "entry/positions", GRID, inner=""), r"Name the dataset inside .*p\.h5: --positions"),
    ("h5 not HDF5", lambda folder: _write("p.h5", "x_um,y_um\n")(folder).as_posix() + ":/entry/positions",
     r"p\.h5 \(from --positions\) is not an HDF5 file"),
    ("h5 wrong shape", _h5("p.h5", "entry/positions", np.zeros(6)),
     r"p\.h5:entry/positions has shape \(6,\); expected \(frames, 2\) as \(y, x\)"),
    ("fio truncated row", lambda folder: _truncated_fio(folder),
     r"scan\.fio, line \d+: 1 values but 2 columns \(\['x_um', 'y_um'\]\); the file is truncated"),
    ("fio unknown unit", _fio({"x_um": GRID[:, 1], "y_um": GRID[:, 0]}, x_um_unit="furlong"),
     r"scan\.fio columns 'x_um', 'y_um': unit 'furlong' is not one of"),
    ("fio text column", lambda folder: _text_fio(folder),
     r"scan\.fio: column 'x_um' holds 'left' in data row 1, not a number"),
]


def _truncated_fio(folder: Path) -> Path:
    path = _fio({"x_um": GRID[:, 1], "y_um": GRID[:, 0]})(folder)
    path.write_text(path.read_text().rstrip("\n").rsplit(" ", 1)[0] + "\n")
    return path


def _text_fio(folder: Path) -> Path:
    path = folder / "scan.fio"
    rows = "".join(f" left {y}\n" for y in GRID[:, 0])
    path.write_text(f"%d\n Col 1 x_um STRING\n Col 2 y_um DOUBLE\n{rows}")
    return path


@pytest.mark.parametrize("make, match", [r[1:] for r in POSITION_FAULTS], ids=[r[0] for r in POSITION_FAULTS])
def test_bad_positions_file(tmp_path: Path, make, match: str) -> None:
    with pytest.raises((PositionsError, FioError), match=match):
        read_positions(make(tmp_path), N_FRAMES)


MONITOR = "ion1\n" + "".join(f"{v}\n" for v in (100, 101, 99, 100, 102, 98))

MONITOR_FAULTS = [
    ("negative", _write("m.csv", MONITOR.replace("99", "-5")),
     r"Monitor .*m\.csv:ion1: frame 2 reads -5; a monitor of zero, below zero or not finite cannot normalise a frame"),
    ("nan", _write("m.csv", MONITOR.replace("102", "nan")), r"Monitor .*: frame 4 reads nan"),
    ("inf", _write("m.csv", MONITOR.replace("98", "inf")), r"Monitor .*: frame 5 reads inf"),
    ("zeros", _write("m.csv", "ion1\n" + "0\n" * 6), r"frame 0 reads 0; .* 6 such frames"),
    ("too many rows", _write("m.csv", MONITOR + "100\n"), r"Monitor .*m\.csv:ion1 has 7 rows but the scan has 6 frames"),
    ("missing column", _write("m.csv", MONITOR.replace("ion1", "ion2")), (r"m\.csv has no column 'ion1'; its columns are "
                                                                        r"\['ion2'\]")),
    ("text column", _write("m.csv", MONITOR.replace("101", "n/a")), r"column 'ion1' holds 'n/a' in data row 2"),
    ("npy of 2 columns", _npy("m.npy", np.ones((6, 2))),
     r"Monitor .*m\.npy holds an array of shape \(6, 2\); expected one value per frame"),
    ("npy of 3 values", _npy("m.npy", np.ones(3)), r"Monitor .*m\.npy has 3 rows but the scan has 6 frames"),
    ("h5 2D", _h5("m.h5", "entry/monitor", np.ones((2, 3))),
     r"Monitor .*m\.h5:entry/monitor holds an array of shape \(2, 3\); expected one value per frame"),
    ("h5 text", _h5("m.h5", "entry/monitor", np.array([b"a"] * 6)), (r"m\.h5:entry/monitor \(from --monitor\) holds \|S1 "
                                                                     r"values; expected a \(frames,\) dataset")),
    ("a directory", _write("mon", None), r"Monitor file .*mon \(from --monitor '.*mon:ion1'\) is a directory"),
]


def _monitor_spec(folder: Path, make) -> str:
    spec = str(make(folder))
    return spec if ":" in spec or spec.endswith(".npy") else f"{spec}:ion1"


@pytest.mark.parametrize("make, match", [r[1:] for r in MONITOR_FAULTS], ids=[r[0] for r in MONITOR_FAULTS])
def test_bad_monitor_file(tmp_path: Path, make, match: str) -> None:
    with pytest.raises(PositionsError, match=match):
        read_monitor(_monitor_spec(tmp_path, make), N_FRAMES)
