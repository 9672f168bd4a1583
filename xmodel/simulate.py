"""Simulate a pattern from a config and write it as self-describing HDF5."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import h5py
import jax.numpy as jnp
import numpy as np

from xmodel import noise
from xmodel.experiment import Experiment, beam_center_px
from xmodel.parameters import ModelParams, Structure, params_from_config, structure_from_config
from xmodel.pattern import PatternModel
from xmodel.peaks import reflection_table

#: units of the ModelParams fields, for HDF5 attributes
PARAM_UNITS = {
    "lattice_constant": "angstrom", "sl_radial_width": "1/angstrom", "sl_mosaic": "rad",
    "sl_scale": "counts", "diffuse_scale": "counts", "radius": "angstrom",
    "radius_sigma": "angstrom", "al_scale": "counts", "al_radial_width": "1/angstrom",
    "disorder": "rad", "inplane": "rad", "tilt1": "rad", "tilt2": "rad",
    "misorientation": "rad", "background": "counts", "base_orientation": "",
    "relationship": "",
}


@dataclass(eq=False)
class Simulation:
    """Everything needed to simulate one sample on one detector."""

    config: object
    experiment: Experiment
    structure: Structure
    params: ModelParams
    model: PatternModel

    @classmethod
    def from_config(cls, cfg, binning: int | None = None, dtype=jnp.float32) -> "Simulation":
        """Geometry, mask, reflections, parameters and a jitted model from a loaded config."""
        experiment = Experiment.from_config(cfg, binning=binning)
        structure = structure_from_config(cfg)
        params = params_from_config(cfg, dtype=dtype)
        model = PatternModel(experiment.pixels(), structure, params, dtype=dtype)
        return cls(cfg, experiment, structure, params, model)

    def expected(self) -> np.ndarray:
        """Expected counts per pixel (float32 image; 0 where masked)."""
        return np.asarray(self.model.image(self.params))

    def reflections(self, **kwargs) -> list[dict]:
        """`xmodel.peaks.reflection_table` for this simulation."""
        return reflection_table(self.experiment, self.structure, self.params, **kwargs)


def simulate_counts(expected: np.ndarray, valid: np.ndarray, counts: float | None, seed: int | None) -> np.ndarray:
    """Poisson counts from ``expected``, first scaled to ``counts`` total when given."""
    if counts is not None:
        expected = noise.scale_to_total(expected, counts, valid)
    return noise.poisson_counts(np.where(valid, expected, 0.0), seed=seed)


def write_pattern(path: str | Path, image: np.ndarray, sim: Simulation, *, noisy: bool,
                  seed: int | None = None, counts: float | None = None,
                  reflections: list[dict] | None = None) -> Path:
    """Write a simulated pattern, its mask and the resolved parameters to HDF5.

    Layout: ``/entry/pattern/intensity`` (rows, cols), ``/entry/pattern/mask`` (1 = masked),
    ``/entry/parameters/<name>`` with ``units`` attributes, ``/entry/config`` (resolved
    TOML values as JSON), ``/entry/geometry`` (PONI values, metres and radians),
    ``/entry/reflections`` (JSON table of `reflection_table`).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    geom = sim.experiment.geometry
    with h5py.File(path, "w") as f:
        entry = f.create_group("entry")
        entry.attrs["NX_class"] = "NXentry"
        entry.attrs["program"] = "xmodel simulate"
        pat = entry.create_group("pattern")
        pat.attrs["NX_class"] = "NXdata"
        pat.attrs["signal"] = "intensity"
        ds = pat.create_dataset("intensity", data=image, compression="gzip", compression_opts=4,
                                chunks=True)
        ds.attrs["units"] = "counts"
        ds.attrs["description"] = ("Poisson counts" if noisy else "expected counts") + \
            " per pixel incl. solid angle and polarization; 0 where masked"
        if noisy:
            ds.attrs["seed"] = -1 if seed is None else int(seed)
            if counts is not None:
                ds.attrs["total_counts"] = float(counts)
        m = pat.create_dataset("mask", data=sim.experiment.mask.astype(np.uint8), compression="gzip")
        m.attrs["description"] = "1 = masked (module gaps, beamstop, holder, user masks)"
        g = entry.create_group("geometry")
        for key in ("dist", "poni1", "poni2", "rot1", "rot2", "rot3", "wavelength", "pixel1", "pixel2"):
            g.attrs[key] = float(getattr(geom, key))
        g.attrs["units"] = "m and rad (pyFAI PONI convention)"
        g.attrs["shape"] = np.asarray(geom.shape)
        g.attrs["detector"] = geom.detector_name
        g.attrs["binning"] = sim.experiment.binning
        g.attrs["polarization_factor"] = sim.experiment.polarization_factor
        g.attrs["beam_center_px"] = np.asarray(beam_center_px(geom))
        par = entry.create_group("parameters")
        for name, value in sim.params.to_dict().items():
            d = par.create_dataset(name, data=np.asarray(value, np.float64))
            d.attrs["units"] = PARAM_UNITS.get(name, "")
        entry.create_dataset("config", data=json.dumps(_jsonable(sim.config.to_dict()), indent=1))
        refl = reflections if reflections is not None else sim.reflections()
        entry.create_dataset("reflections", data=json.dumps(refl))
    return path


def _jsonable(obj):
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, np.generic):
        return obj.item()
    return obj
