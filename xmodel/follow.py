"""Live mode: reduce (and fit) a scan's frames while the detector writes them.

`LiveScan` opens an Eiger scan whose data files are still appearing and growing (Dectris layout,
`xmodel.dectris`): the master's ``nimages x ntrigger`` says how many frames the scan will have,
and `LiveScan.refresh` reopens the newest data file to see what has been written since. A data
file counts when it can be opened: files written with SWMR (HDF5 single-writer multiple-reader)
are read while they grow; a file written without it is locked by its writer and is read once
closed. Inside the newest file only the frames whose chunk is stored count (the writer adds a
chunk to the index after its data, HDF5's SWMR ordering), and a frame that does not decompress
yet is tried again at the next look: a half-written file never stops the run.

`follow_frames` is the loop of ``xmodel reduce MASTER --follow`` (`xmodel.reduction.reduce_scan`
with ``follow=``): it reduces the new frames batch by batch in acquisition order, writes and
checkpoints each batch, calls `FollowOptions.on_frames` (``xmodel fit --follow`` fits the new
frames there, `fits.scan.live`), refreshes the intensity map, and says how far behind
acquisition it is (`LagMeter`). It ends when the scan's last frame is in, when the stop file
appears (what is in is processed first), or, with an error, when nothing new arrives for
``idle_timeout_s``. Every batch is checkpointed, so a stopped or killed live run resumes.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from xmodel.io import DETECTOR, Scan, ScanError

log = logging.getLogger(__name__)

#: seconds between two lag reports and between two updates of the intensity map
REPORT_INTERVAL_S = 10.0


class FollowTimeout(ScanError):
    """Nothing new arrived for ``idle_timeout_s`` seconds before the scan's last frame."""


@dataclass(frozen=True)
class FollowOptions:
    """How a live run waits for the detector.

    Attributes
    ----------
    poll_s : seconds between two looks at the files when nothing new is there
    idle_timeout_s : give up (`FollowTimeout`) when no new frame arrives for this long (s)
    stop_file : the run ends cleanly when this file exists (after processing what is in);
        None: only at the scan's last frame
    on_frames : called as ``on_frames(frames_reduced)`` after each round of new reduced frames;
        returns how many frames the caller has processed further (e.g. fitted), for the lag report
    report_s : seconds between two lag reports (log lines) and two updates of the intensity map
    """

    poll_s: float = 1.0
    idle_timeout_s: float = 300.0
    stop_file: Path | None = None
    on_frames: Callable[[int], int] | None = None
    report_s: float = REPORT_INTERVAL_S

    def __post_init__(self):
        if not (self.poll_s > 0 and self.idle_timeout_s > 0):
            raise ValueError(f"--idle-timeout {self.idle_timeout_s} and the poll interval {self.poll_s} must be "
                             f"positive numbers of seconds.")

    def stopped(self) -> bool:
        """True when the stop file exists."""
        return self.stop_file is not None and Path(self.stop_file).exists()


class LiveScan(Scan):
    """An Eiger scan still being written: `n_frames` are the frames it will have (``nimages x
    ntrigger``), `frames_in` those readable now (`refresh`)."""

    partial = True

    def _count_frames(self) -> int:
        spec = f"{DETECTOR}/detectorSpecific"
        f = self._file
        if f"{spec}/nimages" not in f:
            raise ScanError(f"{self.master} lacks {spec}/nimages: a live run needs the master's nimages and "
                            f"ntrigger to know how many frames the scan will have.")
        n = int(f[f"{spec}/nimages"][()]) * (int(f[f"{spec}/ntrigger"][()]) if f"{spec}/ntrigger" in f else 1)
        self.frames_in = self._readable()
        return n

    def _readable(self) -> int:
        """Frames readable in the open data files: all of every file but the newest, and the
        frames of the newest whose chunk is stored, from its first frame on."""
        if not self._files:
            return 0
        *older, last = self._files
        ds = last.dataset
        n = int(ds.shape[0])
        if ds.chunks is not None and ds.chunks[0] == 1:
            k = 0
            while k < n and ds.id.get_chunk_info_by_coord((k,) + (0,) * (ds.ndim - 1)).byte_offset is not None:
                k += 1
            n = k
        return sum(d.n for d in older) + n

    def refresh(self) -> int:
        """Look again: reopen the newest data file, open new ones; returns `frames_in`.

        Files before the newest are complete (the detector writes them in order) and stay open.
        """
        from xmodel.io import _open_data_files

        keep = self._files[:-1]
        for d in self._files[-1:]:
            if d.file is not None:
                d.file.close()
        self._files = _open_data_files(self._file, self.master, partial=True, reuse=keep)
        self.frames_in = self._readable()
        return self.frames_in


def open_live_scan(master: str | Path, options: FollowOptions, poni=None, mask=None) -> LiveScan:
    """Wait until ``master`` and its first frame can be read, then open it (`LiveScan`).

    Raises
    ------
    FollowTimeout
        When they are not readable within ``options.idle_timeout_s``, or the stop file appears
        first; the message carries the last reason.
    """
    start = time.monotonic()
    while True:
        try:
            scan = LiveScan(master, poni=poni, mask=mask)
            if scan.frames_in > 0:
                return scan
            scan.close()
            reason = "no frame written yet"
        except ScanError as err:
            reason = str(err)
        if options.stopped():
            raise FollowTimeout(f"{master}: the stop file {options.stop_file} appeared before the first frame "
                                f"could be read ({reason}).")
        if time.monotonic() - start > options.idle_timeout_s:
            raise FollowTimeout(f"{master}: no frame could be read within {options.idle_timeout_s:g} s "
                                f"(--idle-timeout): {reason}")
        time.sleep(options.poll_s)


class LagMeter:
    """How far a live run is behind acquisition: frames in and processed per stage, with rates.

    Rates are frames per second between the first and the latest change of each count; the lag
    is the frames in but not yet through the last stage, in frames and in seconds of acquisition
    at the incoming rate.
    """

    def __init__(self, n_frames: int, clock: Callable[[], float] = time.monotonic,
                 interval_s: float = REPORT_INTERVAL_S):
        self.n_frames = int(n_frames)
        self.clock = clock
        self.interval_s = float(interval_s)
        self.counts: dict[str, list[tuple[float, int]]] = {}
        self._last_report = clock()

    def note(self, stage: str, count: int) -> None:
        """Record ``count`` frames through ``stage`` ("in", "reduced", "fitted") now."""
        seen = self.counts.setdefault(stage, [])
        if not seen or count > seen[-1][1]:
            seen.append((self.clock(), int(count)))
            del seen[1:-1]                                 # the first and the latest change

    def rate(self, stage: str) -> float:
        """Frames per second through ``stage`` (NaN before two changes)."""
        seen = self.counts.get(stage, [])
        if len(seen) < 2 or seen[-1][0] <= seen[0][0]:
            return float("nan")
        return (seen[-1][1] - seen[0][1]) / (seen[-1][0] - seen[0][0])

    def count(self, stage: str) -> int:
        seen = self.counts.get(stage)
        return seen[-1][1] if seen else 0

    def text(self) -> str:
        """``"400/961 frames in (3.3 frames/s), 380 reduced (3.2 frames/s): 20 frames (6 s) behind"``."""
        def rate(stage: str) -> str:
            r = self.rate(stage)
            return f" ({r:.1f} frames/s)" if np.isfinite(r) else ""

        parts = [f"{self.count('in')}/{self.n_frames} frames in{rate('in')}"]
        stages = [s for s in self.counts if s != "in"]
        parts += [f"{self.count(s)} {s}{rate(s)}" for s in stages]
        behind = self.count("in") - (self.count(stages[-1]) if stages else 0)
        rate = self.rate("in")
        seconds = f" ({behind / rate:.0f} s)" if np.isfinite(rate) and rate > 0 else ""
        return ", ".join(parts) + f": {behind} frames{seconds} behind acquisition"

    def due(self) -> bool:
        """True when ``interval_s`` seconds have passed since the last report."""
        return self.clock() - self._last_report >= self.interval_s

    def report(self, force: bool = False) -> None:
        """Log `text` at most every ``interval_s`` seconds (always with ``force``)."""
        if force or self.due():
            self._last_report = self.clock()
            log.info("live: %s", self.text())


def follow_frames(scan: LiveScan, out: Path, bin_map, done: int, batch_size: int,
                  report: Callable[[int, int], None] | None, options: FollowOptions) -> bool:
    """Reduce the frames of ``scan`` into ``out`` as they arrive; True when the last one is in.

    Parameters
    ----------
    scan : the live scan (`open_live_scan`)
    out : the reduction file, prepared for ``scan.n_frames`` frames (`xmodel.reduction.reduce_scan`)
    bin_map : `xmodel.reduction.BinMap` of the scan
    done : frames already reduced (a resumed run)
    batch_size : at most this many frames per reduction and checkpoint
    report : ``report(frames_done, n_frames)`` after each batch
    options : `FollowOptions`

    Returns
    -------
    bool
        True when every frame is reduced; False when the stop file ended the run first.

    Raises
    ------
    FollowTimeout
        When no new frame arrives for ``options.idle_timeout_s`` seconds.
    ScanError
        When a frame still cannot be read ``options.idle_timeout_s`` seconds after it arrived.
    """
    from xmodel import reduced
    from xmodel.reduction import reduce_scan_frames

    n = scan.n_frames
    lag = LagMeter(n, interval_s=options.report_s)
    clock = time.monotonic
    failing_since, last_map = None, clock()
    last_new = [clock()]
    lag.note("in", scan.frames_in)
    lag.note("reduced", done)

    def look() -> None:
        """Refresh the files; note the frames in and when the last new one came."""
        if scan.refresh() > lag.count("in"):
            last_new[0] = clock()
        lag.note("in", scan.frames_in)

    stopping = False
    while done < n:
        look()
        new = done
        while done < scan.frames_in:
            stop = min(done + batch_size, scan.frames_in)
            try:
                polar, radial, invalid, lost = reduce_scan_frames(scan, bin_map, np.arange(done, stop))
            except ScanError as err:                       # a chunk not complete yet: next look
                failing_since = failing_since or clock()
                if clock() - failing_since > options.idle_timeout_s:
                    raise
                log.debug("live: frames %d-%d not readable yet: %s", done, stop - 1, err)
                break
            failing_since = None
            with h5py.File(out, "r+") as f:
                reduced.write_batch(f, done, polar, radial, invalid, lost)
                f.flush()
                reduced.set_frames_done(f, stop)
                f.flush()
            done = stop
            lag.note("reduced", done)
            if report is not None:
                report(done, n)
        if done > new and options.on_frames is not None:
            lag.note("fitted", options.on_frames(done))
        if clock() - last_map >= options.report_s:
            reduced.write_intensity_map(out)
            last_map = clock()
        if done < n and lag.due():
            look()                                         # what arrived while this round worked
            lag.report()
        if done >= n or done > new:
            continue
        if stopping:
            log.warning("live: the stop file %s ended the run after %d of %d frames; the results are "
                        "resumable (run again once the scan is complete)", options.stop_file, done, n)
            break
        if options.stopped():
            stopping = True                                # one more look: what was written before it
            continue
        if clock() - last_new[0] > options.idle_timeout_s:
            raise FollowTimeout(f"{scan.master}: no new frame for {options.idle_timeout_s:g} s (--idle-timeout) "
                                f"after {scan.frames_in} of {n} frames; frames 0 to {done - 1} are reduced and "
                                f"checkpointed: run the same command again to go on.")
        time.sleep(options.poll_s)
    lag.report(force=True)
    return done >= n


def replay_scan(master: str | Path, out_dir: str | Path, *, frame_interval_s: float = 0.3, swmr: bool = True,
                stop_after: int | None = None) -> Path:
    """Write a finished scan again, frame by frame, as a detector writes it during acquisition.

    To rehearse live mode (``xmodel reduce --follow``) before a beamtime, and for the tests: the
    master (and the ``.poni`` beside it) is copied first, then each data file is created and its
    frames appended one every ``frame_interval_s`` seconds, the scan file ``.fio`` last.

    Parameters
    ----------
    master : a complete Eiger master file (e.g. written by `xmodel.synth.synthesize`)
    out_dir : folder of the copy (created)
    frame_interval_s : seconds between two frames (the exposure of the scan: 0.3 s in the paper)
    swmr : True: data files grow frame by frame with HDF5 SWMR (each frame can be read as soon
        as it is written); False: each file is written whole and closed, as a writer without
        SWMR does (its frames can be read once it is closed)
    stop_after : write only this many frames (a scan that stops early); None: all

    Returns
    -------
    Path
        The master file of the copy.
    """
    import shutil

    import hdf5plugin

    from xmodel.io import DATA_GROUP

    master = Path(master)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for side in master.parent.glob(master.name.replace("_master.h5", ".poni")):
        shutil.copy2(side, out_dir / side.name)
    shutil.copy2(master, out_dir / master.name)
    written = 0
    with h5py.File(master, "r") as f:
        links = [(name, f[DATA_GROUP].get(name, getlink=True)) for name in sorted(f[DATA_GROUP])
                 if name.startswith("data_")]
    for _, link in links:
        if stop_after is not None and written >= stop_after:
            break
        with h5py.File(master.parent / link.filename, "r") as src:
            data = src[link.path]
            n_here = int(data.shape[0]) if stop_after is None else min(int(data.shape[0]), stop_after - written)
            shape = data.shape[1:]
            with h5py.File(out_dir / link.filename, "w", libver="latest" if swmr else "earliest") as dst:
                grp = dst.require_group(str(Path(link.path).parent))
                ds = grp.create_dataset(Path(link.path).name, shape=(0 if swmr else n_here, *shape),
                                        maxshape=(None, *shape), dtype=data.dtype, chunks=(1, *shape),
                                        **hdf5plugin.Bitshuffle(cname="lz4"))
                for key, value in data.attrs.items():
                    ds.attrs[key] = value
                if swmr:
                    dst.swmr_mode = True
                for k in range(n_here):
                    if swmr:
                        ds.resize(k + 1, axis=0)
                    ds[k] = data[k]
                    dst.flush()
                    written += 1
                    time.sleep(frame_interval_s)
    for side in master.parent.glob(master.name.replace("_master.h5", ".fio")):
        shutil.copy2(side, out_dir / side.name)
    return out_dir / master.name
