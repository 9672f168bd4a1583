"""Benchmark: kill ``xmodel reduce`` with SIGKILL at random points, resume, compare.

Run: ``.venv/bin/python benchmarks/kill_resume_reduce.py [--kills 24] [--rounds 4] [--frames 120]``.

Writes an Eiger scan (:func:`xmodel.dectris.write_scan`: Poisson frames of 256 x 240 pixels, dummy
pixels in every fifth frame, saturated pixels in every seventh, one frame whose chunk does not
decode) to a temporary folder and reduces it once without interruption. Then, per round, on a
fresh output: start ``xmodel reduce`` in a subprocess, wait until it has imported its modules,
kill it with SIGKILL after a random delay (set-up, creation of the output, first batches),
start it again and kill it when its output reaches a random size (uniform over what is left,
increasing; the size is polled, the file is never opened while the run lives), start it
again, ... ``kills / rounds`` kills per round (fewer when a resumed run finishes first); let the
last run finish and compare every dataset of ``/entry/reduction`` with the uninterrupted run,
NaN-aware (`numpy.testing.assert_array_equal` treats NaN as equal to NaN). Rounds go on until
``kills`` kills are done. Prints one line per round (each kill and the checkpoint it left) and
a result line.
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

from xmodel.dectris import write_scan
from xmodel.geometry import Geometry

SHAPE = (256, 240)
#: datasets whose every value must equal the uninterrupted run's
COMPARED = ("polar", "radial", "invalid_pixels", "invalid_bins", "unreadable", "counts", "radial_counts", "mask",
            "q_edges", "chi_edges", "positions", "grid_index", "monitor")
#: the subprocess: import first (about 2 s, pyFAI's detector registry), say so, then run the command
LAUNCHER = ("import sys; import xmodel.cli, xmodel.commands.reduce, xmodel.io, xmodel.reduction, xmodel.positions, "
            "xmodel.detector, pyFAI.detectors; print('ready', flush=True); sys.exit(xmodel.cli.main(sys.argv[1:]))")


def make_scan(folder: Path, n_frames: int, seed: int) -> Path:
    """A scan with dummy and saturated pixels in some frames and one chunk that does not decode."""
    geo = Geometry(dist=0.08, poni1=130.3 * 75e-6, poni2=120.7 * 75e-6, rot1=0.01, rot2=0.0, rot3=0.0,
                   wavelength=0.898e-10, pixel1=75e-6, pixel2=75e-6, shape=SHAPE, detector_name="")
    rng = np.random.default_rng(seed)

    def frames():
        for i in range(n_frames):
            frame = rng.poisson(8.0, SHAPE).astype(np.uint32)
            if i % 5 == 2:
                frame[rng.integers(0, SHAPE[0], 4), rng.integers(0, SHAPE[1], 4)] = 2**32 - 1
            if i % 7 == 3:
                frame[10:12, 200] = 5000          # above the count cutoff: saturated
            yield frame

    cols = 12
    pos = np.stack(np.divmod(np.arange(n_frames), cols), axis=1).astype(float) * 0.5
    master = write_scan(folder, "k", frames(), n_frames, geo, positions_um=pos, pixel_mask=None,
                        monitor=1000.0 + rng.normal(0, 20, n_frames), frames_per_file=10, count_cutoff=1000)
    data = folder / "k_data_000002.h5"                 # frame 13: a chunk that does not decode
    with h5py.File(data, "r") as f:
        offset = f["entry/data/data"].id.get_chunk_info(3).byte_offset
    with open(data, "r+b") as fh:
        fh.seek(offset)
        fh.write(b"\xff" * 64)
    return master


def command(master: Path, out: Path) -> list[str]:
    fio = master.with_name("k.fio")
    return [sys.executable, "-c", LAUNCHER, "-q", "reduce", str(master), "--out", str(out), "--positions", str(fio),
            "--monitor", f"{fio}:monitor", "--q-bins", "300", "--chi-bins", "180", "--batch-size", "2"]


def start(master: Path, out: Path, env: dict) -> subprocess.Popen:
    """The command, once it has imported its modules (it printed 'ready')."""
    proc = subprocess.Popen(command(master, out), env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True)
    line = proc.stdout.readline().strip()
    if line != "ready":
        raise RuntimeError(f"the reduce subprocess did not start: {line!r}")
    return proc


def kill_after(proc: subprocess.Popen, delay: float) -> bool:
    """SIGKILL ``proc`` after ``delay`` seconds; False when it finished before."""
    try:
        proc.wait(timeout=delay)
        return False
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        return True


def kill_when(proc: subprocess.Popen, out: Path, size: float) -> bool:
    """SIGKILL ``proc`` as soon as ``out`` holds ``size`` bytes (polled every 2 ms, no file opened);
    False when it finished before."""
    while proc.poll() is None:
        try:
            if out.stat().st_size >= size:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                return True
        except FileNotFoundError:
            pass
        time.sleep(0.002)
    return False


def compare(a: Path, b: Path) -> None:
    with h5py.File(a, "r") as f, h5py.File(b, "r") as g:
        fa, fb = f["entry/reduction"], g["entry/reduction"]
        assert fa.attrs["frames_done"] == fb.attrs["frames_done"], "frames_done"
        for name in COMPARED:
            assert (name in fa) == (name in fb), name
            if name in fa:
                np.testing.assert_array_equal(fa[name][()], fb[name][()], err_msg=name, strict=True)


def frames_done(out: Path) -> int:
    """The checkpoint of a killed run's output (0 when it was not created yet)."""
    if not out.exists():
        return 0
    try:
        with h5py.File(out, "r") as f:
            return int(f["entry/reduction"].attrs["frames_done"])
    except (OSError, KeyError) as err:       # would be a finding: the resume then says why
        print(f"  {out.name} cannot be read after the kill: {err}")
        return -1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=24, help="SIGKILLs in all (default 24)")
    parser.add_argument("--rounds", type=int, default=4,
                        help="fresh outputs the kills are spread over, at least (default 4)")
    parser.add_argument("--frames", type=int, default=120, help="frames of the scan (default 120)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    print(f"command: {' '.join([os.path.basename(sys.executable)] + sys.argv)}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        master = make_scan(tmp / "scan", args.frames, args.seed)
        reference = tmp / "reference.h5"
        proc = start(master, reference, env)
        t = time.perf_counter()
        if proc.wait() != 0:
            raise RuntimeError("the uninterrupted run failed")
        full = time.perf_counter() - t
        final = reference.stat().st_size
        print(f"scan: {args.frames} frames {SHAPE}, batch 2, 300 x 180 bins, one unreadable frame; an "
              f"uninterrupted run takes {full:.1f} s after its imports and writes {final / 1e6:.1f} MB", flush=True)
        per_round = -(-args.kills // args.rounds)
        kills, rounds, identical, points = 0, 0, 0, []
        while kills < args.kills or rounds < args.rounds:
            out = tmp / f"run{rounds}.h5"
            seen = []
            targets = []
            for k in range(per_round):
                proc = start(master, out, env)
                if k == 0:                           # at a random moment: set-up, creation, the first batches
                    delay = float(rng.uniform(0.0, 0.5 * full))
                    how = f"{delay:.2f}s"
                    killed = kill_after(proc, delay)
                else:                                # at random sizes of the output, increasing
                    if not targets:
                        size = out.stat().st_size if out.exists() else 0
                        targets = sorted(rng.uniform(size, final, per_round - 1), reverse=True)
                    target = targets.pop()
                    how = f"{target / final:.0%} of the size"
                    killed = kill_when(proc, out, target)
                if not killed:                       # this resume finished the scan before its kill
                    seen.append(f"{how}: finished first")
                    break
                kills += 1
                points.append(frames_done(out))
                seen.append(f"{how}->{points[-1]}")
            last = subprocess.run(command(master, out), env=env, capture_output=True, text=True, check=False)
            try:
                if last.returncode != 0:
                    raise AssertionError(f"the resumed run failed (rc {last.returncode}): {last.stderr.strip()}")
                compare(out, reference)
                verdict = "identical"
                identical += 1
            except AssertionError as err:
                verdict = f"DIFFERENT: {err}"
            rounds += 1
            print(f"round {rounds}: kills (when -> frames_done): {', '.join(seen)}; resumed: {verdict}", flush=True)
        print(f"result: {kills} SIGKILLs at checkpoints {min(points)} to {max(points)} of {args.frames} frames "
              f"({len(set(points))} distinct) over {rounds} runs to the end; {identical}/{rounds} resumed outputs "
              f"identical to the uninterrupted run (every dataset of /entry/reduction, NaN-aware)")
        if identical < rounds:
            sys.exit(1)


if __name__ == "__main__":
    main()
