"""Benchmark: speed of the forward model (`xmodel.pattern.PatternModel`), issue 2.

Run from the repository root::

    .venv/bin/python benchmarks/forward.py [--quick] [--repeats 7] [--profile] [--wait-load 1.0]

For the yellow domain (``load_config(default_paths("yellow"))``) it prints, on the full Eiger
4M (2167 x 2070, float32), on the detector binned by 4 and on a 500 (q) x 360 (chi) polar grid
(q from 0.01 to 2.5 1/A, chi over the full circle):

* ``build_support`` time (numpy, once per parameter range; ``PatternModel`` set-up apart);
* forward time (median of ``--repeats`` calls after the first) and its compile time (first call
  minus the median);
* value + gradient time of a Poisson deviance against a Poisson sample of the pattern, with
  respect to every `ModelParams` leaf (`PatternModel.value_and_grad`), and its compile time;
* the dense reference (`xmodel.pattern.dense_pattern`, every valid pixel x every reflection)
  on the full detector (binned with ``--quick``), split into compile and evaluation by timing
  it also on exactly one of its chunks;
* sasmodels' ``fcc_paracrystal`` 2D kernel (C, single and double; double skipped with
  ``--quick``) on the 4.49 M (qx, qy) of the full detector with a = 150 A. It models a
  different thing (a paracrystal with no atomic lattice): a speed yardstick only;
* ratios, the machine (CPU model, cores, load average at start and end), the JAX version and
  the command line;
* on an accelerator (JAX's default backend not the CPU), the largest difference between the
  pattern computed there and the same model on JAX's CPU backend.

Every timed call is also timed in process CPU seconds: CPU / wall near the number of cores
means the call had the machine to itself; much below it, that other work was running (then
repeat when the load is low, e.g. with ``--wait-load 1.0``).

Validation: the forward pattern is compared with the dense reference (maximum difference
relative to the pattern's maximum is printed); the targets (DESIGN.md, "Figures to beat") are
a full-detector pattern in 0.1 s and its gradient in 3x that, on 2 CPU cores.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np

TARGET_FORWARD_S = 0.1       # full detector, float32, 2 cores (DESIGN.md)
TARGET_GRADIENT_RATIO = 3.0  # value + gradient / forward


def cpu_model() -> str:
    """CPU model name from /proc/cpuinfo (``platform.processor()`` where that is missing)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def wait_for_load(limit: float | None, max_wait_s: float = 600.0) -> None:
    """Wait (polling every 10 s, at most ``max_wait_s``) until the 1-minute load is below ``limit``."""
    if limit is None:
        return
    start = time.monotonic()
    while os.getloadavg()[0] >= limit and time.monotonic() - start < max_wait_s:
        print(f"  waiting: 1-min load {os.getloadavg()[0]:.2f} >= {limit}", flush=True)
        time.sleep(10.0)


@dataclass(frozen=True)
class Timing:
    """First call and steady state of a repeated call (seconds, wall and process CPU)."""

    first_s: float
    median_s: float
    cpu_median_s: float
    samples_s: tuple[float, ...]

    @property
    def compile_s(self) -> float:
        """First call minus the steady state: tracing + XLA compilation (+ first transfers)."""
        return self.first_s - self.median_s

    @property
    def parallelism(self) -> float:
        """Process CPU seconds per wall second in the steady state."""
        return self.cpu_median_s / self.median_s if self.median_s > 0 else float("nan")


def time_calls(fn: Callable[[], object], repeats: int, block: Callable[[object], object]) -> Timing:
    """Time ``fn()`` once (first call) and then ``repeats`` times; ``block`` waits for the result."""
    t = time.perf_counter()
    block(fn())
    first = time.perf_counter() - t
    wall, cpu = [], []
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        block(fn())
        wall.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return Timing(first, float(np.median(wall)), float(np.median(cpu)), tuple(wall))


def poisson_deviance(mu, params, counts, valid):
    """Poisson deviance ``2 sum(mu - k + k log(k / mu))`` over valid points (k = 0 terms: ``2 mu``).

    Notes
    -----
    McCullagh & Nelder, Generalized Linear Models (1989), doi:10.1201/9780203753736, Sec. 2.3.
    Masked points (``valid`` False, where the model gives 0) are replaced by mu = k = 1, which
    adds exactly 0 and keeps the logarithm and its gradient finite.
    """
    import jax.numpy as jnp

    mu = jnp.where(valid, mu, 1.0)
    k = jnp.where(valid, counts, 1.0)
    k_safe = jnp.where(k > 0, k, 1.0)
    return 2.0 * jnp.sum(mu - k + jnp.where(k > 0, k * jnp.log(k_safe / mu), 0.0))


@dataclass
class GridResult:
    """Measured figures for one point set."""

    name: str
    n_points: int
    n_valid: int
    n_pairs: int
    support_s: float
    model_setup_s: float
    forward: Timing
    gradient: Timing


def bench_grid(name: str, pixels, structure, params, repeats: int, support=None) -> tuple[GridResult, object]:
    """Support, forward and value + gradient timings of the model on ``pixels``."""
    import jax
    import jax.numpy as jnp

    from xmodel.noise import poisson_counts
    from xmodel.pattern import PatternModel, build_support

    t = time.perf_counter()
    if support is None:
        support = build_support(pixels, structure, params)
    support_s = time.perf_counter() - t
    t = time.perf_counter()
    model = PatternModel(pixels, structure, params, support=support, dtype=jnp.float32)
    jax.block_until_ready(model.arrays)
    setup_s = time.perf_counter() - t
    forward = time_calls(lambda: model(params), repeats, jax.block_until_ready)
    expected = np.asarray(model(params), np.float64)
    counts = jnp.asarray(poisson_counts(expected, seed=0), jnp.float32)
    valid = jnp.asarray(pixels.valid)
    value_and_grad = model.value_and_grad(poisson_deviance)
    gradient = time_calls(lambda: value_and_grad(params, counts, valid), repeats, jax.block_until_ready)
    value, grads = value_and_grad(params, counts, valid)
    bad = [k for k, v in grads.__dict__.items() if not np.all(np.isfinite(np.asarray(v)))]
    if not np.isfinite(float(value)) or bad:
        raise RuntimeError(f"{name}: the deviance or its gradient is not finite (value {float(value)}, "
                           f"non-finite leaves {bad}); the timings would be meaningless")
    result = GridResult(name, pixels.size, int(pixels.valid.sum()), support.n_pairs, support_s,
                        setup_s, forward, gradient)
    return result, model


def bench_dense(pixels, structure, params, ours: np.ndarray) -> dict:
    """Dense reference on ``pixels``: total, compile and evaluation time, and its deviation from ours.

    `dense_pattern` jits a new chunk kernel on every call, so each call compiles once. Timing it
    also on exactly one chunk of valid points (t1 = compile + c) besides the whole set
    (tN = compile + N c) separates the two: c = (tN - t1) / (N - 1).
    """
    from xmodel.pattern import dense_pattern

    chunk = 262_144
    idx = np.flatnonzero(pixels.valid)
    n_chunks = -(-idx.size // chunk)
    t = time.perf_counter()
    dense = dense_pattern(pixels, structure, params, chunk=chunk)
    total = time.perf_counter() - t
    out = {"total_s": total, "n_chunks": n_chunks,
           "max_rel_diff": float(np.max(np.abs(dense - ours)) / np.max(np.abs(dense)))}
    if n_chunks > 1:
        one = pixels.subset(idx[:chunk])
        t = time.perf_counter()
        dense_pattern(one, structure, params, chunk=chunk)
        t1 = time.perf_counter() - t
        per_chunk = max(total - t1, 0.0) / (n_chunks - 1)
        out.update(eval_s=per_chunk * n_chunks, compile_s=max(t1 - per_chunk, 0.0))
    else:
        out.update(eval_s=float("nan"), compile_s=float("nan"))
    return out


def cpu_agreement(pixels, structure, params, ours: np.ndarray) -> float:
    """Largest difference, relative to the maximum, between ``ours`` (the model evaluated on the
    default device, an accelerator) and the same model built and evaluated on JAX's CPU backend."""
    import jax
    import jax.numpy as jnp

    from xmodel.pattern import PatternModel

    cpu = jax.devices("cpu")[0]
    with jax.default_device(cpu):
        p = jax.device_put(params, cpu)
        on_cpu = np.asarray(PatternModel(pixels, structure, p, dtype=jnp.float32)(p))
    return float(np.max(np.abs(ours - on_cpu)) / np.max(np.abs(on_cpu)))


def bench_sasmodels(q_lab: np.ndarray, dtype: str, repeats: int) -> dict:
    """sasmodels ``fcc_paracrystal`` 2D on the (qx, qy) of ``q_lab`` (1/A), a = 150 A."""
    os.environ.setdefault("SAS_OPENCL", "none")   # the C (DLL) kernel, as in DESIGN.md's figure
    try:
        from sasmodels.core import load_model
        from sasmodels.direct_model import call_kernel
    except ImportError as err:
        raise SystemExit("sasmodels is needed for the yardstick (it is a test-only dependency); "
                         "install it in .venv or pass --no-sasmodels") from err
    np_dtype = np.float32 if dtype == "single" else np.float64
    model = load_model("fcc_paracrystal", dtype=dtype)
    qx = np.ascontiguousarray(q_lab[:, 1], np_dtype)   # horizontal (dim2)
    qy = np.ascontiguousarray(q_lab[:, 0], np_dtype)   # vertical (dim1)
    kernel = model.make_kernel([qx, qy])
    a = 150.0
    pars = dict(dnn=a / np.sqrt(2.0), d_factor=0.06, radius=34.0, sld=4.0, sld_solvent=1.0,
                theta=0.0, phi=0.0, psi=0.0, scale=1.0, background=0.0)
    timing = time_calls(lambda: call_kernel(kernel, pars), repeats, lambda r: r)
    kernel.release()
    return {"dtype": dtype, "n": qx.size, "timing": timing,
            "openmp": "SAS_OPENMP" in os.environ}


def profile_pieces(pixels, structure, params, support, repeats: int) -> list[tuple[str, Timing, Timing]]:
    """Forward and gradient times with parts of the support removed (SL shells, AL shells).

    The model skips a lattice whose shell list is empty, so the differences locate the cost
    without touching `xmodel.pattern`.
    """
    variants = [
        ("form factor + diffuse only", replace(support, sl_shells=(), al_shells=())),
        ("+ SL shells (no AL)", replace(support, al_shells=())),
        ("+ AL shells (no SL)", replace(support, sl_shells=())),
    ]
    rows = []
    for name, sup in variants:
        res, _ = bench_grid(name, pixels, structure, params, repeats, support=sup)
        rows.append((name, res.forward, res.gradient))
    return rows


def fmt_ms(seconds: float) -> str:
    return f"{1e3 * seconds:.1f} ms" if seconds < 10 else f"{seconds:.1f} s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="dense reference on the binned detector, no sasmodels double")
    parser.add_argument("--repeats", type=int, default=7, help="steady-state calls per figure (>= 5)")
    parser.add_argument("--profile", action="store_true",
                        help="also time the full detector without the SL / AL shells")
    parser.add_argument("--no-sasmodels", action="store_true", help="skip the sasmodels yardstick")
    parser.add_argument("--domain", default="yellow", help="shipped domain config (default yellow)")
    parser.add_argument("--wait-load", type=float, default=None, metavar="L",
                        help="wait (at most 10 min) until the 1-min load average is below L")
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}; the figures are medians of >= 5 calls")

    wait_for_load(args.wait_load)
    load_start = os.getloadavg()

    import jax
    import jax.numpy as jnp

    jax.config.update("jax_enable_x64", True)   # as in the tests and fits; arrays stay float32

    from xmodel.config import default_paths, load_config
    from xmodel.experiment import Experiment
    from xmodel.parameters import params_from_config, structure_from_config

    print(f"command: {' '.join(getattr(sys, 'orig_argv', [sys.executable] + sys.argv))}")
    print(f"machine: {cpu_model()}, {os.cpu_count()} cores "
          f"({len(os.sched_getaffinity(0))} usable), load average "
          f"{load_start[0]:.2f} {load_start[1]:.2f} {load_start[2]:.2f} at start")
    print(f"python {platform.python_version()}, jax {jax.__version__}, numpy {np.__version__}, "
          f"devices {jax.devices()}, x64 enabled, persistent compilation cache "
          f"{jax.config.jax_compilation_cache_dir or 'off'}")

    cfg = load_config(default_paths(args.domain))
    structure = structure_from_config(cfg)
    params = params_from_config(cfg, dtype=jnp.float32)
    print(f"domain {args.domain}: {len(structure.sl_hkl)} SL + {len(structure.al_hkl)} AL reflections, "
          f"repeats {args.repeats}")

    t = time.perf_counter()
    full_exp = Experiment.from_config(cfg, binning=1)
    full_px = full_exp.pixels()
    full_px_s = time.perf_counter() - t
    binned_px = Experiment.from_config(cfg, binning=4).pixels()
    q = np.linspace(0.01, 2.5, 500)
    chi = np.linspace(-180.0, 180.0, 360, endpoint=False) + 0.5
    polar_px = full_exp.polar_pixels(q, chi)
    print(f"full-detector PixelSet (geometry, mask, weights): {fmt_ms(full_px_s)}")

    grids = []
    models = {}
    for name, px in [("full 2167x2070", full_px), ("binned 4", binned_px), ("polar 500x360", polar_px)]:
        res, model = bench_grid(name, px, structure, params, args.repeats)
        grids.append(res)
        models[name] = model
        f, g = res.forward, res.gradient
        print(f"[{name}] points {res.n_points} (valid {res.n_valid}), Gaussians {res.n_pairs}: "
              f"support {fmt_ms(res.support_s)}, set-up {fmt_ms(res.model_setup_s)}; "
              f"forward {fmt_ms(f.median_s)} (compile {fmt_ms(f.compile_s)}, CPU/wall {f.parallelism:.2f}); "
              f"value+grad {fmt_ms(g.median_s)} (compile {fmt_ms(g.compile_s)}, CPU/wall {g.parallelism:.2f}); "
              f"grad/forward {g.median_s / f.median_s:.2f}", flush=True)
        print(f"    forward samples (ms): {' '.join(f'{1e3 * s:.1f}' for s in f.samples_s)}")

    full = grids[0]
    dense_name, dense_px = ("binned 4", binned_px) if args.quick else ("full 2167x2070", full_px)
    ours_img = np.asarray(models[dense_name](params))
    dense = bench_dense(dense_px, structure, params, ours_img)
    ours_fwd = grids[0 if dense_name.startswith("full") else 1].forward.median_s
    print(f"[dense reference, {dense_name}] one call {fmt_ms(dense['total_s'])} = compile "
          f"{fmt_ms(dense['compile_s'])} + evaluation {fmt_ms(dense['eval_s'])} ({dense['n_chunks']} chunks); "
          f"dense / ours {dense['eval_s'] / ours_fwd:.1f}x; max |ours - dense| / max = {dense['max_rel_diff']:.2e}",
          flush=True)

    if jax.default_backend() != "cpu":
        print(f"[{dense_name}, {jax.default_backend()} vs cpu] max |{jax.default_backend()} - cpu| / max = "
              f"{cpu_agreement(dense_px, structure, params, ours_img):.2e}", flush=True)

    sas = []
    if not args.no_sasmodels:
        for dtype in (["single"] if args.quick else ["single", "double"]):
            r = bench_sasmodels(full_px.q_lab, dtype, args.repeats)
            sas.append(r)
            tm = r["timing"]
            print(f"[sasmodels fcc_paracrystal 2D, {dtype}, {r['n']} points, OpenMP "
                  f"{'on' if r['openmp'] else 'off'}] {fmt_ms(tm.median_s)} (first {fmt_ms(tm.first_s)}, "
                  f"CPU/wall {tm.parallelism:.2f}); sasmodels / ours {tm.median_s / full.forward.median_s:.2f}x",
                  flush=True)

    if args.profile:
        print("[profile, full detector]")
        for name, f, g in profile_pieces(full_px, structure, params, models[full.name].support, args.repeats):
            print(f"    {name}: forward {fmt_ms(f.median_s)}, value+grad {fmt_ms(g.median_s)}")

    load_end = os.getloadavg()
    print(f"load average {load_end[0]:.2f} {load_end[1]:.2f} {load_end[2]:.2f} at end")
    fwd, grad = full.forward.median_s, full.gradient.median_s
    print(f"targets (2 cores): full-detector forward {fmt_ms(fwd)} <= 100 ms: "
          f"{'met' if fwd <= TARGET_FORWARD_S else 'MISSED'}; value+grad / forward "
          f"{grad / fwd:.2f} <= {TARGET_GRADIENT_RATIO}: "
          f"{'met' if grad / fwd <= TARGET_GRADIENT_RATIO else 'MISSED'}")

    print("\n| point set | points (valid) | Gaussians | support | forward | compile | value+grad | compile | grad/fwd |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in grids:
        f, g = r.forward, r.gradient
        print(f"| {r.name} | {r.n_points:,} ({r.n_valid:,}) | {r.n_pairs:,} | {fmt_ms(r.support_s)} | "
              f"{fmt_ms(f.median_s)} | {fmt_ms(f.compile_s)} | {fmt_ms(g.median_s)} | {fmt_ms(g.compile_s)} | "
              f"{g.median_s / f.median_s:.2f} |")
    print(f"| dense reference, {dense_name} | | | | {fmt_ms(dense['eval_s'])} | {fmt_ms(dense['compile_s'])} "
          f"| | | |")
    for r in sas:
        print(f"| sasmodels fcc_paracrystal, {r['dtype']} | {r['n']:,} | | | {fmt_ms(r['timing'].median_s)} "
              f"| | | | |")


if __name__ == "__main__":
    main()
