"""Speed-up of the dask-distributed reduction and fit from 1 to 2 local workers, and a cost model for N nodes.

Usage: python benchmarks/distributed.py RESULTS.h5 [--master MASTER.h5] [--block 8x8] [--at 12,12]
       [--tile 4x4] [--domain red] [--frames 14641] [--cores-per-node 32]

The fit: a block of ``--block`` scan points at grid position ``--at`` of a reduced scan is copied
into a small reduced file (frames, bins, positions) and fitted whole (main pass and neighbour
passes, `fits.scan.tiles.fit_tiles`) on a `distributed.LocalCluster` of 1 and then 2
single-threaded worker processes, each warmed up first (its `FitSetup` built and one frame
fitted, so that compiling is not timed). The reduction (with ``--master``, the scan's Eiger
master): the frames of the same block are read and reduced tile by tile on the same clusters
(`xmodel.distributed`, without writing). Separately, in this process: the writer's throughput
(rows of fits and polar images written per second), the fixed cost of one neighbour-pass task
(its scratch file and the neighbour search over the whole scan, which the halo needs), the
halo's size for the tile shape, and the latency of one task on the cluster.

It prints the machine and its load before and after, the wall times and speed-ups, and a cost
model for a scan of ``--frames`` frames on N nodes of ``--cores-per-node`` workers:

    main pass   T = F t_frame / K + (F / S) t_task / K,   at least F / writer_rate
    passes      T = passes x (tiles_doubtful t_halo + doubtful t_refit) / K

with F frames, S frames per tile, K = N x cores workers, t_frame and t_refit the compute per
frame of the main pass and per doubtful frame of the passes (measured on the block with one
worker), t_task the per-task overhead (latency, the client reading a tile's images and writing
its rows) and t_halo the fixed cost of a pass task. Figures: docs/performance.md.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

_HERE = Path(__file__).resolve().parent
# this file's name would hide the dask package `distributed`: not from this folder
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

from xmodel.cli import enable_compilation_cache

enable_compilation_cache()                 # before JAX: the worker processes share the compiled code

import h5py
import numpy as np

_spec = importlib.util.spec_from_file_location("benchmark_fit", _HERE / "fit.py")
_fit = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_fit)
machine = _fit.machine                      # benchmarks/fit.py: cores, CPU, load, versions

from fits.scan import results as store
from fits.scan.neighbours import neighbours
from fits.scan.settings import FitSettings
from fits.scan.tiles import _write_main, fit_tiles, jax_options, pass_tile
from xmodel.config import default_paths, load_config
from xmodel.distributed import parse_tile, plan_tiles, run_tasks
from xmodel.positions import derive_grid
from xmodel.reduced import GROUP, open_reduced


def block_file(src: str, dst: Path, block: tuple[int, int], at: tuple[int, int]) -> np.ndarray:
    """Copy the frames of a block of the scan grid into a small reduced file; returns their indices."""
    scan = open_reduced(src)
    grid = scan.grid
    sel = np.flatnonzero((grid.row >= at[0]) & (grid.row < at[0] + block[0]) &
                         (grid.col >= at[1]) & (grid.col < at[1] + block[1]))
    with h5py.File(src, "r") as f, h5py.File(dst, "w") as g:
        r = g.create_group(GROUP)
        s = f[GROUP]
        r.create_dataset("polar", data=s["polar"][sel.tolist()], chunks=(1,) + s["polar"].shape[1:])
        for key in ("q", "chi", "q_edges", "chi_edges", "counts", "radial_counts", "mask"):
            if key in s:
                r[key] = s[key][()]
        r["positions"] = scan.positions_um[sel]
        r["invalid_pixels"] = np.zeros(sel.size, np.int32)
    return sel


def warm(dask_worker=None, scan=None, cfg=None, settings=None, options=None) -> float:
    """On every worker: build the fit setup and fit one frame (compiling), so that it is not timed."""
    from fits.scan.frames import fit_frames
    from fits.scan.tiles import _setup

    t = time.perf_counter()
    setup = _setup(scan, cfg, settings, options)
    fit_frames(scan.polar([0]), setup, settings)
    return time.perf_counter() - t


def timed_reduce(master: str, poni, frames, bin_map) -> tuple[int, float]:
    """Task: read and reduce frames of the master; (frames, seconds)."""
    from xmodel.distributed import _reduce_tile

    t = time.perf_counter()
    _reduce_tile(master, poni, frames, bin_map)
    return len(frames), time.perf_counter() - t


def noop(payload) -> int:
    return len(payload)


def cpu_seconds(dask_worker=None) -> float:
    """CPU seconds the worker process has used (all its threads)."""
    return time.process_time()


def cluster_run(workers: int, args, block_path: Path, tmp: Path, cfg, settings, tile, master_frames) -> dict:
    """Fit the block (and reduce its frames) on a local cluster of ``workers`` processes."""
    from distributed import Client, LocalCluster

    out = {}
    scan = open_reduced(block_path)
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        t = time.perf_counter()
        client.run(warm, scan=scan, cfg=cfg, settings=settings, options=jax_options())
        out["warm_s"] = time.perf_counter() - t
        payload = np.zeros(scan.polar([0]).size * tile[0] * tile[1], np.float32)
        t = time.perf_counter()
        for _ in range(5):
            client.submit(noop, payload, pure=False).result()
        out["latency_s"] = (time.perf_counter() - t) / 5
        fits = tmp / f"fits_{workers}.h5"
        store.prepare(fits, scan.n_frames, block_path, cfg, settings)
        cpu0 = client.run(cpu_seconds)
        report = fit_tiles(fits, scan, cfg, settings, client, progress=False, tile=tile)
        cpu1 = client.run(cpu_seconds)
        out.update(main_s=report.main_s, passes_s=report.passes_s, pass_tiles=sum(report.pass_tiles.values()),
                   fits=fits, cpu_s=sum(cpu1[w] - cpu0[w] for w in cpu1))
        if master_frames is not None:
            from xmodel.io import open_scan
            from xmodel.reduction import build_bin_map, default_bins

            with open_scan(args.master) as s:
                bin_map = build_bin_map(s.geometry.q(), s.geometry.chi(), s.mask,
                                        default_bins(s.geometry, s.mask, n_q=500, n_chi=360, q_spacing="log"))
            shared = client.scatter(bin_map, broadcast=True)
            jobs = [(k, (str(args.master), None, t_, shared)) for k, t_ in enumerate(master_frames)]
            seconds = []
            t = time.perf_counter()
            run_tasks(client, timed_reduce, jobs, lambda _, r: seconds.append(r[1]))
            out["reduce_s"] = time.perf_counter() - t
            out["reduce_task_s"] = float(np.sum(seconds))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results")
    ap.add_argument("--master", help="the scan's Eiger master (also time the reduction)")
    ap.add_argument("--block", default="8x8", help="scan points fitted, ROWSxCOLS")
    ap.add_argument("--at", default="12,12", help="grid row,col of the block's first point")
    ap.add_argument("--tile", default="4x4", help="scan points per task")
    ap.add_argument("--domain", default="red", help="config of the starting values")
    ap.add_argument("--frames", type=int, default=121 * 121, help="frames of the scan the model is for")
    ap.add_argument("--cores-per-node", type=int, default=32)
    a = ap.parse_args()
    block, tile = parse_tile(a.block), parse_tile(a.tile)
    at = tuple(int(v) for v in a.at.split(","))
    print("command:", shlex.join([os.path.basename(sys.executable)] + sys.argv))
    print("machine:", machine())
    cfg = load_config(default_paths(a.domain))
    settings = FitSettings.of(cache_dir=os.path.expanduser("~/.cache/xmodel"))
    with tempfile.TemporaryDirectory(prefix="xmodel-bench-") as tmp:
        tmp = Path(tmp)
        block_path = tmp / "block.h5"
        sel = block_file(a.results, block_path, block, at)
        scan = open_reduced(block_path)
        master_frames = None
        if a.master:
            full = open_reduced(a.results)
            master_frames = [sel[np.isin(sel, t)] for t in plan_tiles(full.n_frames, full.grid, tile)]
            master_frames = [t for t in master_frames if t.size]
        print(f"block: {sel.size} frames ({block[0]}x{block[1]} at {at}) of {a.results}; tiles {tile[0]}x{tile[1]}")
        runs = {w: cluster_run(w, a, block_path, tmp, cfg, settings, tile, master_frames) for w in (1, 2)}
        for w, r in runs.items():
            wall = r["main_s"] + r["passes_s"]
            line = (f"{w} worker(s): warm-up {r['warm_s']:.1f} s; fit main pass {r['main_s']:.1f} s "
                    f"({r['main_s'] / sel.size:.3f} s per frame), neighbour passes {r['passes_s']:.1f} s "
                    f"({r['pass_tiles']} pass tasks); the workers used {r['cpu_s']:.0f} CPU-s "
                    f"({r['cpu_s'] / wall:.2f} cores on average); task latency {r['latency_s'] * 1e3:.0f} ms")
            if "reduce_s" in r:
                line += f"; reduce {sel.size / r['reduce_s']:.1f} frames/s"
            print(line)
        one, two = runs[1], runs[2]
        print(f"speed-up 1 -> 2 workers: fit main pass {one['main_s'] / two['main_s']:.2f}x, passes "
              f"{one['passes_s'] / max(two['passes_s'], 1e-9):.2f}x"
              + (f", reduce {one['reduce_s'] / two['reduce_s']:.2f}x" if "reduce_s" in one else ""))
        r1 = store.read_fits(one["fits"])
        r2 = store.read_fits(two["fits"])
        same = bool(np.array_equal(r1["status"], r2["status"]))
        print(f"1 and 2 workers give the same statuses: {same}")
        # --- the parts of the cost model measured in this process
        t_frame = one["main_s"] / sel.size
        n_tasks = len(plan_tiles(scan.n_frames, scan.grid, tile))
        t0 = time.perf_counter()
        for t in plan_tiles(scan.n_frames, scan.grid, tile):
            scan.polar(t)
        t_read = (time.perf_counter() - t0) / n_tasks
        # the writer on a results file of --frames frames: rows of one tile written 20 times
        from fits.scan.tiles import _state

        per_tile = tile[0] * tile[1]
        first = plan_tiles(scan.n_frames, scan.grid, tile)[0]
        rows = {k: np.resize(v[first], (per_tile,) + v.shape[1:]) for k, v in r1.items() if k in store.ALL_DATASETS}
        scratch = tmp / "writer.h5"
        store.prepare(scratch, a.frames, block_path, cfg, settings)
        done = _state(scratch, a.frames)
        t0 = time.perf_counter()
        for k in range(20):
            _write_main(scratch, np.arange(k * per_tile, (k + 1) * per_tile), rows, done)
        writer_rate = 20 * per_tile / (time.perf_counter() - t0)
        t_task = one["latency_s"] + t_read + sel.size / writer_rate / n_tasks
        # a pass task's fixed cost on a scan of --frames frames (the neighbour search runs over all)
        side = int(np.sqrt(a.frames))
        from xmodel.positions import grid_positions

        pos = grid_positions((side, side), (0.25, 0.25), "raster")
        big = open_reduced(block_path)
        import dataclasses

        big = dataclasses.replace(big, n_frames=pos.shape[0], positions_um=pos, grid=derive_grid(pos))
        nbs = neighbours(pos, settings.neighbours.neighbour_radius_steps)
        own = plan_tiles(pos.shape[0], big.grid, tile)[len(plan_tiles(pos.shape[0], big.grid, tile)) // 2]
        sub = np.union1d(own, np.concatenate([nbs[i] for i in own]))
        empty = store.empty_results(sub.size)
        for _ in range(2):                                   # the first builds the fit setup
            t0 = time.perf_counter()
            pass_tile(big, sub, np.isin(sub, own), empty, {}, None, True, cfg, settings, jax_options())
            t_halo = time.perf_counter() - t0
        halo = (sub.size - own.size) / own.size
        t_refit = one["passes_s"] / max(1, one["pass_tiles"])
        print(f"cost model inputs: t_frame {t_frame:.3f} s (one worker), t_task {t_task * 1e3:.0f} ms "
              f"(latency {one['latency_s'] * 1e3:.0f} ms, reading a tile {t_read * 1e3:.0f} ms, writing its rows), "
              f"writer {writer_rate:.0f} frames/s, pass task fixed cost t_halo {t_halo:.2f} s on {pos.shape[0]} "
              f"frames (halo {halo:.0%} of a tile's frames), pass tasks {t_refit:.1f} s each on the block")
        cores = a.cores_per_node
        n_pass_tasks = one["pass_tiles"] / max(1, n_tasks) * (a.frames / per_tile)
        print(f"model for {a.frames} frames, {cores} workers per node, tiles of {per_tile} frames "
              f"(pass tasks scaled from the block: {n_pass_tasks:.0f}):")
        print("  nodes  main pass (min)  writer floor (min)  passes (min)  total (min)  frames/s")
        for nodes in (1, 2, 4, 8, 16, 32):
            k = nodes * cores
            main_s = max(a.frames * t_frame / k + a.frames / per_tile * t_task / k, a.frames / writer_rate)
            passes_s = n_pass_tasks * (t_halo + t_refit) / k
            print(f"  {nodes:5d}  {main_s / 60:15.1f}  {a.frames / writer_rate / 60:18.2f}  {passes_s / 60:12.1f}  "
                  f"{(main_s + passes_s) / 60:11.1f}  {a.frames / (main_s + passes_s):8.1f}")
    print("machine at the end:", machine())


if __name__ == "__main__":
    main()
