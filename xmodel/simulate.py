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
    """Write a simulated pattern, its mask and the resolved parameters as NeXus/HDF5.

    Layout (every group with its ``NX_class``; ``@default`` from the root to the pattern):

    - ``/entry`` NXentry; ``/entry/pattern`` NXdata: ``intensity`` (rows, cols) counts per
      pixel with axes ``row`` and ``column`` (pixel indices) and ``mask`` (1 = masked);
    - ``/entry/geometry`` NXcollection: PONI values as fields with units (m, rad) and,
      for readers of earlier files, the same values as attributes;
    - ``/entry/parameters`` NXparameters: `ModelParams` fields with units;
    - ``/entry/process`` NXprocess: program, version, date, command line, config files and
      ``--set`` overrides; ``/entry/config`` the resolved config (JSON);
    - ``/entry/reflections`` the JSON table of `reflection_table`.
    """
    from xmodel import nexus

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    geom = sim.experiment.geometry
    rows, cols = image.shape
    with h5py.File(path, "w") as f:
        entry = nexus.create_entry(f, title=f"xmodel simulate: {sim.config.name}")
        desc = ("Poisson counts" if noisy else "expected counts") + \
            " per pixel incl. solid angle and polarization; 0 where masked"
        pat = nexus.create_nxdata(
            entry, "pattern", "intensity", image, units="counts", long_name="intensity (counts per pixel)",
            axes=[("row", np.arange(rows), "pixel", "detector row"),
                  ("column", np.arange(cols), "pixel", "detector column")],
            title=f"{sim.config.name}: simulated pattern")
        ds = pat["intensity"]
        ds.attrs["description"] = desc
        if noisy:
            ds.attrs["seed"] = -1 if seed is None else int(seed)
            if counts is not None:
                ds.attrs["total_counts"] = float(counts)
        nexus.write_field(pat, "mask", sim.experiment.mask.astype(np.uint8), compress=True,
                          description="1 = masked (module gaps, beamstop, holder, user masks)")
        nexus.set_default(pat)
        g = nexus.require_group(entry, "geometry", "NXcollection")
        g.attrs["convention"] = "pyFAI PONI (distances in m, angles in rad)"
        for key in ("dist", "poni1", "poni2", "rot1", "rot2", "rot3", "wavelength", "pixel1", "pixel2"):
            value = float(getattr(geom, key))
            g.attrs[key] = value
            nexus.write_field(g, key, value, units="rad" if key.startswith("rot") else "m")
        g.attrs["shape"] = np.asarray(geom.shape)
        g.attrs["detector"] = geom.detector_name
        g.attrs["binning"] = sim.experiment.binning
        g.attrs["polarization_factor"] = sim.experiment.polarization_factor
        g.attrs["beam_center_px"] = np.asarray(beam_center_px(geom))
        nexus.write_field(g, "beam_center", np.asarray(beam_center_px(geom), float), units="pixel",
                          description="(row, column) of the direct beam")
        par = nexus.require_group(entry, "parameters", "NXparameters")
        for name, value in sim.params.to_dict().items():
            nexus.write_field(par, name, np.asarray(value, np.float64), units=PARAM_UNITS.get(name) or None)
        sources = list(getattr(sim.config, "sources", ()))
        files = [s for s in sources if Path(s).is_file()]
        nexus.write_process(entry, program="xmodel simulate", configs=files,
                            parameters={"overrides": [s for s in sources if s not in files], "noisy": noisy,
                                        "seed": seed, "counts": counts, "binning": sim.experiment.binning})
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
