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
complete, the master file last, so a killed run never leaves a master that looks complete. A
new run starts from scratch (it removes a stale ``.partial`` folder).
"""
from __future__ import annotations

import shutil
from collections.abc import Iterator, Sequence
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
        return jnp.tensordot(scales, t, axes=1), scales[0] * t[0]

    return jax.jit(both)


def expected_frames(sample: TwinSample, pixels: PixelSet, comps: Components, models: list,
                    batch_size: int = 8, sl_snr: np.ndarray | None = None) -> Iterator[np.ndarray]:
    """Yield the expected counts (P,) float64 of every scan point, in scan order.

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
    """
    weight = np.where(pixels.valid, pixels.weight, 0.0)
    background = background_counts(sample) * weight
    bases = [domain_params(sample, k) for k in range(len(sample.domains))]
    both = [frame_and_sl_peaks(m) for m in models] if sl_snr is not None else None
    for start in range(0, sample.n_points, batch_size):
        stop = min(start + batch_size, sample.n_points)
        acc = np.zeros((stop - start, pixels.size), np.float32)
        sl = np.zeros((stop - start, pixels.size), np.float32) if sl_snr is not None else None
        lab = comps.label[start:stop]
        pending = []  # dispatched first (JAX runs them asynchronously), collected after
        for r, c in zip(*np.nonzero(lab >= 0)):
            k = int(lab[r, c])
            i = start + r
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
        for j in range(stop - start):
            frame = background + acc[j]
            if sl is not None:
                # only the pixels the SL peaks reach contribute (s = 0 elsewhere)
                on = np.flatnonzero(sl[j])
                mu = frame[on].astype(np.float64)
                s2 = np.square(sl[j][on].astype(np.float64))
                sl_snr[start + j] = float(np.sum(np.where(mu > 0, s2 / np.where(mu > 0, mu, 1.0), 0.0)))
            yield frame


class _Progress:
    """A ``(done, total)`` callback showing progress of the synthesis (`xmodel.progress.progress_bar`)."""

    def __init__(self, label: str, enabled: bool):
        self.label, self.enabled, self.bar = label, enabled, None

    def __call__(self, done: int, total: int) -> None:
        if self.bar is None:
            from xmodel.progress import progress_bar

            self.bar = progress_bar(total, desc=self.label, unit="frames", enabled=self.enabled)
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
               position_jitter_um: float = 0.0) -> Path:
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

    Returns
    -------
    Path
        The master file.

    Notes
    -----
    Counts: Poisson(expected) per pixel (photon counting), drawn with
    ``numpy.random.default_rng(SeedSequence(seed, spawn_key=(i,)))`` for frame ``i``, so every
    frame is deterministic for a given seed. Full Eiger frames, uint32, masked pixels filled
    by `xmodel.dectris.write_scan`. A killed run leaves only ``DIR/.<name>.partial/``. The
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
    tmp = out_dir / f".{sample.name}.partial"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)

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
    dummy_pixels = np.zeros(n, np.int32)
    positions = truth["positions_um"] + (beamline.normal(0.0, position_jitter_um, (n, 2))
                                         if position_jitter_um > 0 else 0.0)
    beam = sample.domains[0].config.beam
    photons = flux * beam.flux_photons_per_s * beam.exposure_s

    expected_sums = np.zeros(n)
    sl_snr = np.zeros(n)

    def frames() -> Iterator[np.ndarray]:
        for i, expected in enumerate(expected_frames(sample, pixels, comps, models, batch_size, sl_snr)):
            expected = expected * flux[i]
            expected_sums[i] = float(expected.sum())
            rng = np.random.default_rng(np.random.SeedSequence(sample.seed, spawn_key=(i,)))
            frame = rng.poisson(expected).astype(np.uint32).reshape(-1)
            if i in dummy_frames:
                picks = beamline.choice(valid_pixels, size=3, replace=False)
                frame[picks] = dectris.EIGER_MASKED_VALUE_UINT32
                dummy_pixels[i] = picks.size
            yield frame.reshape(shape)

    master = dectris.write_scan(
        tmp, sample.name, frames(), n, experiment.geometry,
        positions_um=positions, monitor=photons, pixel_mask=experiment.mask,
        count_time_s=beam.exposure_s,
        progress=_Progress(f"synth {sample.name}", progress))
    with h5py.File(tmp / "truth.h5", "a") as f:
        f.attrs["scan_order"] = scan_order
        ds = f["truth"].create_dataset("relative_flux", data=flux)
        ds.attrs["units"], ds.attrs["description"] = "", "incident flux of the frame / nominal flux"
        ds = f["truth"].create_dataset("dummy_pixels", data=dummy_pixels)
        ds.attrs["units"], ds.attrs["description"] = "pixels", "dummy pixels (2**32 - 1) outside the pixel mask"
        ds = f["truth"].create_dataset("expected_counts", data=expected_sums)
        ds.attrs["units"], ds.attrs["description"] = TRUTH_UNITS["expected_counts"]
        ds = f["truth"].create_dataset("sl_snr", data=sl_snr)
        ds.attrs["units"], ds.attrs["description"] = TRUTH_UNITS["sl_snr"]
        ds = f["truth"].create_dataset("sl_visible", data=sl_snr >= SL_VISIBLE_SNR ** 2)
        ds.attrs["units"], ds.attrs["description"] = TRUTH_UNITS["sl_visible"]
    for item in sorted(tmp.iterdir(), key=lambda p: p == master):
        item.replace(out_dir / item.name)
    tmp.rmdir()
    return out_dir / master.name
