"""Render a digital-twin scan (`xmodel.twin`) to Dectris Eiger files and a ground-truth file.

``synthesize`` evaluates the forward model (`xmodel.pattern.PatternModel`, one per domain,
dispatched for batches of scan points), adds the background, draws Poisson counts and streams
the frames to `xmodel.dectris.write_scan`; the ground truth of every point goes to
``truth.h5``. Only one batch of expected frames is in memory at a time.

Beamline realism. As a scan reaches a user at P10: the master holds no positions (they go with
the per-frame monitor into ``<name>.fio``), frames may come in snake order
(``scan_order="snake"``, the truth follows the frames), the incident flux may vary from frame
to frame (``monitor_variation``: frame counts and the monitor column scale together), a few
frames may hold dummy pixels (2**32 - 1) outside the pixel mask (``dummy_fraction``), and the
encoder positions may jitter (``position_jitter_um``).

Interruption. Everything is written into ``DIR/.<name>.partial/`` and moved into ``DIR`` when
complete, the master file last, so a killed run never leaves a master that looks complete. The
same command resumes a killed run from its last complete data file (100 frames); a run with
other settings refuses the folder unless told to restart (`open_partial`).
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import h5py
import jax
import jax.numpy as jnp
import numpy as np

from xmodel import dectris, nexus
from xmodel.experiment import Experiment
from xmodel.parameters import structure_from_config
from xmodel.pattern import TERMS, PatternModel
from xmodel.pixels import PixelSet
from xmodel.positions import acquisition_order, derive_grid
from xmodel.precision import EXACT
from xmodel.twin import (
    TRUTH_UNITS,
    Components,
    TwinError,
    TwinSample,
    background_counts,
    components,
    domain_params,
    load_twin,
    point_truth,
)

log = logging.getLogger(__name__)

#: SL peaks count as visible at a point when their expected signal to noise (sqrt of
#: `expected_frames`' ``sl_snr``) reaches this many standard deviations
SL_VISIBLE_SNR = 10.0

#: the orientation margin (deg) added to a domain's largest edge rotation for its model support
SUPPORT_MARGIN_DEG = 3.0


def domain_models(sample: TwinSample, pixels: PixelSet, comps: Components) -> list:
    """One `PatternModel` per domain: ``model(ModelParams) -> (P,)`` expected counts.

    The support of domain ``k`` covers the lattice constants and tilts its points take
    (plus `SUPPORT_MARGIN_DEG`), so one compiled model serves every point of the domain.
    """
    out = []
    for k, d in enumerate(sample.domains):
        params = domain_params(sample, k)
        a0 = float(np.asarray(params.lattice_constant))
        sel = comps.label == k
        a_vals = comps.lattice_constant[sel]
        a_range = (min(a0, float(a_vals.min())) - 0.5, a0 + 0.5) if a_vals.size else (a0 - 0.5, a0 + 0.5)
        # how far the points' tilts move from the domain's own (bulk) tilt in `params`
        tilt = np.degrees(np.hypot(comps.tilt1[sel] - float(params.tilt1), comps.tilt2[sel] - float(params.tilt2)))
        margin = float(tilt.max() if tilt.size else 0.0) + SUPPORT_MARGIN_DEG
        structure = structure_from_config(d.config, lattice_constant_range=a_range)
        model = PatternModel(pixels, structure, params, lattice_constant_range=a_range,
                             orientation_margin_deg=margin)
        out.append(model)
    return out


def frame_and_sl_peaks(model: PatternModel):
    """Jitted ``(arrays, params) -> (expected counts, their SL peak part)`` from one evaluation.

    The model is linear in its scales (`xmodel.pattern.TERMS`): the unit-scale terms are
    computed once and give both the whole frame ``sum_t scale_t term_t`` and the SL peaks alone
    ``sl_scale * term_sl``, which `expected_frames` needs for the SL signal-to-noise, at the
    cost of one model evaluation instead of two.
    """
    terms = model.components(TERMS)

    def both(arrays, params):
        t = terms(arrays, params)
        scales = jnp.stack([jnp.asarray(getattr(params, name), t.dtype) for name in TERMS])
        return jnp.tensordot(scales, t, axes=1, precision=EXACT), scales[0] * t[0]

    return jax.jit(both)


def expected_frames(sample: TwinSample, pixels: PixelSet, comps: Components, models: list,
                    batch_size: int = 8, sl_snr: np.ndarray | None = None,
                    points: np.ndarray | None = None) -> Iterator[np.ndarray]:
    """Yield the expected counts (P,) float64 of every scan point (or of ``points``), in order.

    ``background_counts * weight + sum_c weight_c * model_c(params_c)`` (see
    `xmodel.twin.point_params`), 0 where masked. The components of ``batch_size`` points
    are dispatched together (JAX evaluates them asynchronously) and collected after. One call
    per component rather than `jax.vmap` over a batch: a batch of consecutive points spans
    several domains (several models), so vmapped calls would need padding to one model (not
    measured here).

    If ``sl_snr`` (N,) is given, it is filled with the expected detectability of the SL peaks of
    each point, ``sum_p s_p^2 / mu_p`` over valid pixels, where ``s`` is the SL peak part alone
    (diffuse, AL and background scales 0) and ``mu`` the whole expected frame: the expected
    Pearson chi^2 (deviance) gain of the SL peak term, so ``sqrt(sl_snr)`` is the signal to noise
    of the SL peaks in standard deviations (Cash 1979, doi:10.1086/156922, for the Poisson
    likelihood-ratio form). Points without SL peaks on the Ewald sphere (tilted far from a
    zone) get small values.

    ``points`` (M,) are the scan points to render (indices into ``comps``, in the order given;
    None: all); ``sl_snr`` is indexed by point.
    """
    weight = np.where(pixels.valid, pixels.weight, 0.0)
    background = background_counts(sample) * weight
    bases = [domain_params(sample, k) for k in range(len(sample.domains))]
    both = [frame_and_sl_peaks(m) for m in models] if sl_snr is not None else None
    points = np.arange(sample.n_points) if points is None else np.asarray(points, np.int64).reshape(-1)
    for start in range(0, points.size, batch_size):
        batch = points[start:start + batch_size]
        acc = np.zeros((batch.size, pixels.size), np.float32)
        sl = np.zeros((batch.size, pixels.size), np.float32) if sl_snr is not None else None
        lab = comps.label[batch]
        pending = []  # dispatched first (JAX runs them asynchronously), collected after
        for r, c in zip(*np.nonzero(lab >= 0)):
            k = int(lab[r, c])
            i = int(batch[r])
            p = bases[k].replace(lattice_constant=comps.lattice_constant[i, c],
                                 tilt1=comps.tilt1[i, c], tilt2=comps.tilt2[i, c])
            if sl is not None:
                out, peaks_only = both[k](models[k].arrays, p)
            else:
                out, peaks_only = models[k](p), None
            pending.append((r, comps.weight[i, c], out, peaks_only))
        for r, w, out, peaks_only in pending:
            acc[r] += np.float32(w) * np.asarray(out)
            if sl is not None:
                sl[r] += np.float32(w) * np.asarray(peaks_only)
        for j in range(batch.size):
            frame = background + acc[j]
            if sl is not None:
                # only the pixels the SL peaks reach contribute (s = 0 elsewhere)
                on = np.flatnonzero(sl[j])
                mu = frame[on].astype(np.float64)
                s2 = np.square(sl[j][on].astype(np.float64))
                sl_snr[batch[j]] = float(np.sum(np.where(mu > 0, s2 / np.where(mu > 0, mu, 1.0), 0.0)))
            yield frame


#: frames per data file of a synthetic scan (an Eiger's ``nimages_per_file``); also the unit of
#: a resumed synthesis (`render_scan`)
FRAMES_PER_FILE = 100

#: the record of a synthesis' settings in its work folder (`open_partial`)
SETTINGS_RECORD = "synth_settings.json"


def code_fingerprint() -> str:
    """SHA-256 of the xmodel package's Python sources (their paths and contents): the code that
    renders the frames. A resumed synthesis must have been started by the same code."""
    root = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def synthesis_settings(sample: TwinSample, **options) -> dict:
    """What decides the frames of a synthesis, as JSON: the twin's and its configs' texts, the
    overrides, ``options`` (engine, scan order, beamline draws) and the code (`code_fingerprint`).
    A resumed synthesis must have the same (`open_partial`)."""
    sources = [str(sample.path)] + [str(p) for d in sample.domains for p in d.config.sources]
    texts = {}
    for src in dict.fromkeys(sources):
        path = Path(src)
        texts[path.name] = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None
    return json.loads(json.dumps({"files_sha256": texts, "seed": sample.seed, "shape": list(sample.shape),
                                  "xmodel_sha256": code_fingerprint(), **options}, default=str))


def open_partial(out_dir: Path, name: str, settings: dict, restart: bool = False) -> Path:
    """The work folder ``DIR/.<name>.partial`` of a synthesis: resumed, or new.

    A folder left by a synthesis with the same ``settings`` (`synthesis_settings`, recorded in
    `SETTINGS_RECORD`) is resumed; one with other settings is refused (`TwinError` naming the
    differing keys) unless ``restart``, which discards it.
    """
    tmp = out_dir / f".{name}.partial"
    record = tmp / SETTINGS_RECORD
    if tmp.exists() and not restart:
        old = json.loads(record.read_text()) if record.is_file() else None
        if old == settings:
            log.info("resuming the unfinished synthesis in %s", tmp)
            return tmp
        differing = ("its settings were not recorded" if old is None else "differing: " + ", ".join(
            sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))))
        raise TwinError(f"{tmp} holds an unfinished synthesis with other settings ({differing}): run the "
                        f"command that started it again to resume it, or pass --restart (restart=True) to "
                        f"discard it and start over.")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    record.write_text(json.dumps(settings, indent=1, sort_keys=True))
    return tmp


def render_scan(tmp: Path, name: str, n: int, frames_at: Callable[[np.ndarray], Iterator[tuple[np.ndarray, dict]]],
                facts: dict[str, type], *, progress: Callable[[int, int], None] | None,
                **scan_kwargs) -> tuple[Path, dict[str, np.ndarray]]:
    """Write the ``n`` frames of a scan into ``tmp`` data file by data file, resuming a stopped run.

    Parameters
    ----------
    tmp
        The work folder (`open_partial`).
    name
        Scan name (`xmodel.dectris.write_scan`).
    n
        Number of frames.
    frames_at
        ``frames_at(indices)`` yields ``(frame, values)`` for the frame indices given, in that
        order: the counts (detector shape) and a dict with a value for each key of ``facts``.
    facts
        Name -> dtype of the per-frame values to collect (e.g. the expected counts).
    progress
        ``progress(frames_done, n)`` (frames of earlier runs count as done).
    **scan_kwargs
        The other arguments of `xmodel.dectris.write_scan` (geometry, positions, monitor, ...).

    Returns
    -------
    master, values
        The master file in ``tmp`` and the collected values (N,) per key of ``facts``.

    Notes
    -----
    Checkpoint: when a data file is complete and closed, the values of its frames are saved
    beside it (``<name>_data_00000k.facts.npz``, written to a temporary name and renamed); a
    resumed run reads them, leaves those data files as they are and renders only the frames
    of the others. Every frame depends only on its index and the settings, so a resumed scan
    equals an uninterrupted one (tests/xmodel/test_synth.py).
    """
    n_files = max(1, math.ceil(n / FRAMES_PER_FILE))
    values = {key: np.zeros(n, dtype) for key, dtype in facts.items()}

    def checkpoint(k: int) -> Path:
        return tmp / f"{name}_data_{k + 1:06d}.facts.npz"

    done = set()
    for k in range(n_files):
        if checkpoint(k).is_file():
            with np.load(checkpoint(k)) as saved:
                for key, v in values.items():
                    v[k * FRAMES_PER_FILE:(k + 1) * FRAMES_PER_FILE] = saved[key]
            done.add(k)
    if done:
        log.info("%d of %d data files were written by an earlier run: rendering the other %d",
                 len(done), n_files, n_files - len(done))
    todo = np.array([i for i in range(n) if i // FRAMES_PER_FILE not in done], np.int64)

    def frames() -> Iterator[np.ndarray]:
        for i, (frame, vals) in zip(todo, frames_at(todo)):
            for key, v in values.items():
                v[i] = vals[key]
            yield frame

    def file_done(k: int) -> None:
        part = slice(k * FRAMES_PER_FILE, (k + 1) * FRAMES_PER_FILE)
        partial = checkpoint(k).with_name(checkpoint(k).name + ".tmp")
        with open(partial, "wb") as fh:
            np.savez(fh, **{key: v[part] for key, v in values.items()})
        partial.replace(checkpoint(k))

    master = dectris.write_scan(tmp, name, frames(), n, frames_per_file=FRAMES_PER_FILE, skip_files=done,
                                file_done=file_done, progress=progress, **scan_kwargs)
    return master, values


def finish_partial(tmp: Path, out_dir: Path, master: Path) -> Path:
    """Move the finished scan from ``tmp`` into ``out_dir`` (the master last), drop the checkpoints."""
    for item in list(tmp.iterdir()):
        if item.name == SETTINGS_RECORD or item.name.endswith((".facts.npz", ".facts.npz.tmp")):
            item.unlink()
    for item in sorted(tmp.iterdir(), key=lambda p: p == master):
        item.replace(out_dir / item.name)
    tmp.rmdir()
    return out_dir / master.name


class _Progress:
    """A ``(done, total)`` callback showing progress of the synthesis (`xmodel.progress.progress_bar`)."""

    def __init__(self, label: str, enabled: bool):
        self.label, self.enabled, self.bar = label, enabled, None

    def __call__(self, done: int, total: int) -> None:
        if self.bar is None:
            from xmodel.progress import progress_bar

            # the frames of an earlier run (a resumed synthesis) are the bar's start, not its rate
            self.bar = progress_bar(total, desc=self.label, unit="frames", enabled=self.enabled, initial=done)
        if done > self.bar.n:
            self.bar.update(done - self.bar.n)
        if done >= total:
            self.bar.close()


def write_truth(path: str | Path, sample: TwinSample, truth: dict[str, np.ndarray]) -> Path:
    """Write the ground truth to HDF5: ``/truth/<key>`` with ``units`` and ``description``.

    Root attributes: ``label_names`` (also the dataset ``/truth/label_names``), ``seed``,
    ``scan_shape``, ``step_um``, ``twin_file`` and its text ``twin_toml``; ``/domains/<name>``
    attributes hold each domain's boundary width (um), shrink, edge tilt (deg) and in-plane angle.
    """
    path = Path(path)
    with h5py.File(path, "w") as f:
        f.attrs["description"] = ("Ground truth of the xmodel digital-twin scan: one entry per frame, in "
                                  "the frames' (acquisition) order; see the scan_order attribute.")
        f.attrs["label_names"] = np.array(sample.label_names, dtype=h5py.string_dtype())
        f.attrs["seed"] = sample.seed
        f.attrs["scan_shape"] = np.asarray(sample.shape)
        f.attrs["step_um"] = sample.step_um
        f.attrs["twin_file"] = str(sample.path)
        f.attrs["twin_toml"] = sample.path.read_text()
        g = nexus.require_group(f, "truth", "NXcollection")
        for key, value in truth.items():
            if value.dtype.kind == "U":
                ds = g.create_dataset(key, data=value.astype(object), dtype=h5py.string_dtype())
            else:
                ds = g.create_dataset(key, data=value)
            units, desc = TRUTH_UNITS.get(key, ("", "domain names, index = label"))
            if units:
                ds.attrs["units"] = units
            ds.attrs["description"] = desc
        dom = nexus.require_group(f, "domains", "NXcollection")
        for d in sample.domains:
            h = nexus.require_group(dom, d.name, "NXcollection")
            h.attrs["config"] = str(d.config.sources[-1] if d.config.sources else "")
            h.attrs["boundary_width_um"] = d.width_um
            h.attrs["shrink"] = d.shrink
            h.attrs["edge_tilt_deg"] = d.tilt_deg if d.edge_tilt_deg is None else np.hypot(*d.edge_tilt_deg)
            h.attrs["inplane_deg"] = d.inplane_deg
        _truth_map(f, truth, sample)
    return path


def _truth_map(f: h5py.File, truth: dict[str, np.ndarray], sample: TwinSample) -> None:
    """``/entry/label_map`` (NXdata, the file's default plot): the true domain labels over the
    scan positions (um), with the material fraction and lattice constant as auxiliary signals."""
    entry = nexus.create_entry(f, title=f"ground truth of the twin {sample.name}")
    layout = nexus.GridLayout(derive_grid(truth["positions_um"]) if "positions_um" in truth else None)
    aux = {k: (truth[k], TRUTH_UNITS[k][0] or None, k.replace("_", " "))
           for k in ("material_fraction", "lattice_constant") if k in truth}
    m = nexus.create_scan_map(entry, "label_map", "label", truth["label"], layout, title="true domain labels",
                              long_name="domain label (index into label_names, -1 empty)", auxiliary=aux)
    m.attrs["label_names"] = f.attrs["label_names"]
    nexus.set_default(m)


def synthesize(config_paths: Sequence[str | Path], out_dir: str | Path, *, overrides: Sequence[str] = (),
               progress: bool = True, batch_size: int = 8, scan_order: str = "raster",
               monitor_variation: float = 0.0, dummy_fraction: float = 0.0,
               position_jitter_um: float = 0.0, restart: bool = False) -> Path:
    """Render a twin scan: ``DIR/<name>_master.h5`` + data files, ``<name>.poni``, ``truth.h5``.

    Parameters
    ----------
    config_paths
        One twin TOML (e.g. ``["configs/twin.toml"]``).
    out_dir
        Output folder (created if missing).
    overrides
        ``--set`` strings for the twin (``scan.shape=[4,4]``, ``seed=3``) or the experiment
        (``beam.flux_photons_per_s=1e9``); see `xmodel.twin.load_twin`.
    progress
        Print frames done / total, rate and ETA on stderr.
    batch_size
        Scan points whose model calls are dispatched together (bounds memory:
        ``batch_size`` expected frames in float32).
    scan_order
        "raster" or "snake" (every other row reversed): the order frames are acquired and
        written; ``truth.h5`` follows the frames.
    monitor_variation
        Relative flux of frame i drawn uniformly in ``1 +- monitor_variation`` (0.2: +-20 %);
        its expected counts scale with it and the ``monitor`` column of ``<name>.fio`` holds
        the incident photons of the frame (truth: ``relative_flux``).
    dummy_fraction
        Fraction of frames given 3 dummy pixels (2**32 - 1) outside the pixel mask
        (truth: ``dummy_pixels``).
    position_jitter_um
        Standard deviation (um) of Gaussian encoder noise added to the positions in ``<name>.fio``
        (truth keeps the nominal ``positions_um``).
    restart
        Discard an unfinished synthesis of this scan in ``out_dir`` and start over; without it one
        with the same settings is resumed and one with other settings refused (`open_partial`).

    Returns
    -------
    Path
        The master file.

    Notes
    -----
    Counts: Poisson(expected) per pixel (photon counting), drawn with
    ``numpy.random.default_rng(SeedSequence(seed, spawn_key=(i,)))`` for frame ``i``, so every
    frame is deterministic for a given seed. Full Eiger frames, uint32, masked pixels filled
    by `xmodel.dectris.write_scan`. A killed run leaves only ``DIR/.<name>.partial/``, and the
    same call resumes it from its last complete data file (`render_scan`). The
    beamline-realism draws (flux, dummy pixels, jitter) use their own stream of the seed, so the
    counts of a frame at unit flux do not depend on them.

    Validation
    ----------
    tests/xmodel/test_synth.py: determinism, read back with `xmodel.io.open_scan`, frame sums
    against the expected counts.
    """
    paths = [config_paths] if isinstance(config_paths, (str, Path)) else list(config_paths)
    if len(paths) != 1:
        raise TwinError(f"synthesize takes one twin TOML, got {len(paths)} paths {[str(p) for p in paths]}: "
                        f"pass e.g. configs/twin.toml (it names its experiment file in its 'experiment' key).")
    if int(batch_size) < 1:
        raise ValueError(f"batch_size={batch_size} must be a positive integer, e.g. 8.")
    sample = load_twin(paths[0], overrides)
    out_dir = Path(out_dir)
    settings = synthesis_settings(sample, engine="model", overrides=list(overrides), scan_order=scan_order,
                                  monitor_variation=float(monitor_variation), dummy_fraction=float(dummy_fraction),
                                  position_jitter_um=float(position_jitter_um))
    tmp = open_partial(out_dir, sample.name, settings, restart)

    experiment = Experiment.from_config(sample.domains[0].config)  # [detector] binning applies
    pixels = experiment.pixels()
    n = sample.n_points
    order = acquisition_order(sample.shape, scan_order)
    comps = components(sample)
    truth = point_truth(sample, comps)
    comps = Components(**{k: getattr(comps, k)[order] for k in comps.__dataclass_fields__})
    truth = {k: (v[order] if k != "label_names" and np.ndim(v) and len(v) == n else v) for k, v in truth.items()}
    write_truth(tmp / "truth.h5", sample, truth)
    models = domain_models(sample, pixels, comps)
    shape = tuple(pixels.shape)

    beamline = np.random.default_rng(np.random.SeedSequence(sample.seed, spawn_key=(2**31 - 1,)))
    flux = 1.0 + float(monitor_variation) * beamline.uniform(-1.0, 1.0, n)
    valid_pixels = np.flatnonzero(np.asarray(pixels.valid).reshape(-1))
    n_dummy = int(round(float(dummy_fraction) * n))
    dummy_frames = set(beamline.choice(n, size=n_dummy, replace=False).tolist()) if n_dummy else set()
    positions = truth["positions_um"] + (beamline.normal(0.0, position_jitter_um, (n, 2))
                                         if position_jitter_um > 0 else 0.0)
    # the dummy pixels of each such frame, drawn in frame order (so a resumed run draws the same)
    dummy_picks = {i: beamline.choice(valid_pixels, size=3, replace=False) for i in sorted(dummy_frames)}
    beam = sample.domains[0].config.beam
    photons = flux * beam.flux_photons_per_s * beam.exposure_s
    sl_snr = np.zeros(n)

    def frames_at(points: np.ndarray) -> Iterator[tuple[np.ndarray, dict]]:
        for i, expected in zip(points, expected_frames(sample, pixels, comps, models, batch_size, sl_snr, points)):
            expected = expected * flux[i]
            rng = np.random.default_rng(np.random.SeedSequence(sample.seed, spawn_key=(int(i),)))
            frame = rng.poisson(expected).astype(np.uint32).reshape(-1)
            picks = dummy_picks.get(int(i))
            if picks is not None:
                frame[picks] = dectris.EIGER_MASKED_VALUE_UINT32
            yield frame.reshape(shape), {"expected_counts": float(expected.sum()), "sl_snr": sl_snr[i],
                                         "dummy_pixels": 0 if picks is None else picks.size}

    master, values = render_scan(
        tmp, sample.name, n, frames_at, {"expected_counts": np.float64, "sl_snr": np.float64,
                                         "dummy_pixels": np.int32},
        geometry=experiment.geometry, positions_um=positions, monitor=photons, pixel_mask=experiment.mask,
        count_time_s=beam.exposure_s, progress=_Progress(f"synth {sample.name}", progress))
    sl_snr = values["sl_snr"]
    with h5py.File(tmp / "truth.h5", "a") as f:
        f.attrs["scan_order"] = scan_order
        ds = f["truth"].create_dataset("relative_flux", data=flux)
        ds.attrs["units"], ds.attrs["description"] = "", "incident flux of the frame / nominal flux"
        ds = f["truth"].create_dataset("dummy_pixels", data=values["dummy_pixels"])
        ds.attrs["units"], ds.attrs["description"] = "pixels", "dummy pixels (2**32 - 1) outside the pixel mask"
        ds = f["truth"].create_dataset("expected_counts", data=values["expected_counts"])
        ds.attrs["units"], ds.attrs["description"] = TRUTH_UNITS["expected_counts"]
        ds = f["truth"].create_dataset("sl_snr", data=sl_snr)
        ds.attrs["units"], ds.attrs["description"] = TRUTH_UNITS["sl_snr"]
        ds = f["truth"].create_dataset("sl_visible", data=sl_snr >= SL_VISIBLE_SNR ** 2)
        ds.attrs["units"], ds.attrs["description"] = TRUTH_UNITS["sl_visible"]
    return finish_partial(tmp, out_dir, master)
