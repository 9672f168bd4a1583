"""Benchmark: streaming reduction of Eiger 4M frames vs pyFAI and vs the read floor.

Run: ``.venv/bin/python benchmarks/reduce.py [--frames 32] [--batch 16]``. Writes a scan of
realistic sparse counts (Poisson, ~0.05 counts/pixel plus a brighter small-angle corner)
with :func:`xmodel.dectris.write_scan` to a temporary folder and prints medians.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from xmodel.dectris import write_scan
from xmodel.detector import EIGER4M_SHAPE
from xmodel.geometry import Geometry
from xmodel.io import open_scan
from xmodel.reduction import build_bin_map, default_bins, reduce_frames, reduce_scan


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def sparse_frames(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    rows, cols = np.indices(EIGER4M_SHAPE, dtype=np.float32)
    lam = 0.05 + 20.0 * np.exp(-((rows - 2100.0) ** 2 + (cols - 60.0) ** 2) / (2 * 150.0**2))
    for _ in range(n):
        yield rng.poisson(lam).astype(np.uint32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"command: {' '.join([os.path.basename(sys.executable)] + sys.argv)}")
    print(f"machine: {cpu_model()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at start")
    geo = Geometry.from_beam_center(0.41, (2100.0, 60.0), 13.8)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        master = write_scan(tmp, "bench", sparse_frames(args.frames), args.frames, geo,
                            positions_um=np.zeros((args.frames, 2)), pixel_mask=None, frames_per_file=100)
        size = sum(p.stat().st_size for p in tmp.glob("bench_data_*.h5")) / args.frames / 1e6
        print(f"scan: {args.frames} frames {EIGER4M_SHAPE} uint32, {size:.2f} MB/frame compressed")
        with open_scan(master, poni=tmp / "bench.poni") as scan:
            frames = np.empty((args.frames, *scan.frame_shape), dtype=scan.dtype)
            floors = []
            for _ in range(args.repeats):
                t = time.perf_counter()
                scan.read_into(0, frames)
                floors.append((time.perf_counter() - t) / args.frames)
            floor = float(np.median(floors))
            mask = scan.mask
        t = time.perf_counter()
        bins = default_bins(geo, mask, n_q=500, n_chi=360)
        bin_map = build_bin_map(geo.q(), geo.chi(), mask, bins)
        setup = time.perf_counter() - t

        def per_frame(batch: int) -> float:
            times = []
            for _ in range(args.repeats):
                t = time.perf_counter()
                for s in range(0, args.frames, batch):
                    reduce_frames(frames[s:s + batch], bin_map)
                times.append((time.perf_counter() - t) / args.frames)
            return float(np.median(times))

        ours_1, ours_b = per_frame(1), per_frame(args.batch)

        import pyFAI

        ai = pyFAI.load(str(tmp / "bench.poni"))
        kw = dict(unit="q_A^-1", radial_range=tuple(bins.q_edges[[0, -1]]), azimuth_range=(-180.0, 180.0),
                  mask=mask, correctSolidAngle=False, polarization_factor=None)
        t = time.perf_counter()
        ai.integrate2d(frames[0], 500, 360, **kw)
        pyfai_setup = time.perf_counter() - t
        times = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            for i in range(min(args.frames, 16)):
                ai.integrate2d(frames[i], 500, 360, **kw)
            times.append((time.perf_counter() - t) / min(args.frames, 16))
        pyfai = float(np.median(times))
        del frames

        stream = []
        for k in range(args.repeats):
            out = tmp / f"out{k}.h5"
            t = time.perf_counter()
            reduce_scan(master, out, poni=tmp / "bench.poni", bins=bin_map, batch_size=args.batch, workers=2,
                        progress=False)
            stream.append((time.perf_counter() - t) / args.frames)
            out.unlink()
        stream_t = float(np.median(stream))
    rows = [
        ("read + decompress (h5py, the floor)", floor),
        (f"xmodel reduce_frames, 1 frame at a time (set-up {setup:.2f} s)", ours_1),
        (f"xmodel reduce_frames, {args.batch} frames at a time", ours_b),
        (f"pyFAI integrate2d default method (set-up {pyfai_setup:.2f} s)", pyfai),
        ("xmodel reduce_scan, whole scan streamed (read + reduce + write)", stream_t),
    ]
    for name, value in rows:
        print(f"{name:70s} {value * 1e3:7.2f} ms/frame")
    print(f"load average at end: {os.getloadavg()[0]:.2f} (other processes inflate every figure)")
    print(f"pyFAI / xmodel (batched)      : {pyfai / ours_b:5.2f}x")
    print(f"reduce_scan / floor           : {stream_t / floor:5.2f}x  (bin map built once, {setup:.2f} s, "
          f"not included)")


if __name__ == "__main__":
    main()
