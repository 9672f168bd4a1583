"""Model parameters: the differentiable pytree and the static structure of a sample.

`ModelParams` holds every continuous parameter of the forward model (internal units:
Angstrom, 1/Angstrom, radian, counts). It is a frozen dataclass registered as a JAX pytree,
so it can be differentiated, vmapped (stack the leaves) and jitted. `Structure` holds what
is fixed for a given experiment and sample: the reflection lists, the AL structure-factor
weights and the form-factor quadrature size; it is built once, outside `jit`.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np

from xmodel import lattice, orientation, structure_factor
from xmodel.config import (
    AL_PEAK_INTENSITIES,
    DEFAULT_MODEL_FORM_FACTOR_NSIGMA,
    DEFAULT_SL_PEAK_SHAPE,
    DEFAULT_SL_PEAK_WEIGHTING,
    SL_PEAK_SHAPES,
    SL_PEAK_WEIGHTINGS,
)

FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))  # 2.3548 for a Gaussian

#: names of the scalar (or vector) continuous parameters, in a fixed order
CONTINUOUS = (
    "lattice_constant", "sl_radial_width", "sl_mosaic", "sl_scale", "diffuse_scale",
    "radius", "radius_sigma", "al_scale", "al_radial_width", "disorder",
    "inplane", "tilt1", "tilt2", "misorientation", "background",
)


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class ModelParams:
    """Continuous parameters of one pattern (internal units).

    Attributes
    ----------
    lattice_constant : SL cubic lattice constant a (A).
    sl_radial_width : radial Gaussian sigma of SL peaks, sigma_r (1/A); with the "crystal" peak
        shape the isotropic (size) term at G -> 0 (`xmodel.pattern.sl_peak_widths`).
    sl_mosaic : SL mosaic spread (rad); tangential sigma is ``|G| * sl_mosaic`` ("mosaic" shape)
        or ``sqrt(sl_radial_width^2 + (|G| sl_mosaic)^2)`` ("crystal").
    sl_scale : SL peak height for P(q) = 1 (counts per pixel, before solid angle/polarization);
        with the "crystal" shape the height of a peak of sigmas `xmodel.pattern.SL_REFERENCE_SIGMA`
        (its integrated intensity over the reference volume).
    diffuse_scale : isotropic ``diffuse_scale * P(|q|)`` term of the disordered part (counts).
    radius, radius_sigma : mean NC core radius and its Gaussian standard deviation (A).
    al_scale : peak height of 200_AL (counts); other AL reflections scale by ``|F|^2 / |F_200|^2``
        times ``h_G`` (`xmodel.pattern.al_peak_height`).
    al_radial_width : Scherrer radial sigma of AL peaks, sigma_s (1/A).
    disorder : NC orientational disorder sigma_Phi (rad), Eq. 7 of the paper as a sigma.
    inplane, tilt1, tilt2 : SL in-plane angle (about e3) and out-of-plane tilts (about e1, e2),
        rad; see docs/conventions.md.
    misorientation : (3,) rotation vector of the NCs relative to the ideal relationship (rad).
    background : constant background (counts per pixel).
    base_orientation : (3, 3) SL crystal -> lab at zero angles (from the zone axis).
    relationship : (3, 3) AL crystal -> SL crystal (Conf1, Conf2 or custom).
    """

    lattice_constant: jax.Array
    sl_radial_width: jax.Array
    sl_mosaic: jax.Array
    sl_scale: jax.Array
    diffuse_scale: jax.Array
    radius: jax.Array
    radius_sigma: jax.Array
    al_scale: jax.Array
    al_radial_width: jax.Array
    disorder: jax.Array
    inplane: jax.Array
    tilt1: jax.Array
    tilt2: jax.Array
    misorientation: jax.Array
    background: jax.Array
    base_orientation: jax.Array
    relationship: jax.Array

    def replace(self, **changes) -> "ModelParams":
        """A copy with some fields replaced (values converted to arrays of this dtype).

        A JAX array (or a tracer, inside a jitted function) stays one; any other value becomes a
        numpy array, so that replacing fields on the host compiles no XLA conversion per shape.
        """
        dtype = jnp.result_type(self.lattice_constant)
        return dataclasses.replace(self, **{k: jnp.asarray(v, dtype) if isinstance(v, jax.Array)
                                            else np.asarray(v, dtype) for k, v in changes.items()})

    def astype(self, dtype) -> "ModelParams":
        """All leaves cast to ``dtype`` (float32 for images, float64 for gradient checks).

        float64 needs ``jax_enable_x64``; without it the leaves stay float32 (JAX's widest).
        """
        if jnp.dtype(dtype) == jnp.float64 and not jax.config.jax_enable_x64:
            dtype = jnp.float32
        return jax.tree_util.tree_map(lambda x: jnp.asarray(x, dtype), self)

    def sl_orientation(self) -> jax.Array:
        """SL crystal -> lab rotation, ``R_e1(tilt1) R_e2(tilt2) R_e3(inplane) R_base``."""
        return orientation.sl_orientation(self.base_orientation, self.inplane, self.tilt1, self.tilt2)

    def al_orientation(self) -> jax.Array:
        """NC (AL) crystal -> lab rotation, ``R_sl R_or R_mis``."""
        return orientation.al_orientation(self.sl_orientation(), self.relationship, self.misorientation)

    def to_dict(self) -> dict[str, np.ndarray]:
        """Leaves as numpy arrays, keyed by field name."""
        return {f.name: np.asarray(getattr(self, f.name)) for f in dataclasses.fields(self)}


@dataclass(frozen=True)
class Structure:
    """Static description of the reflections a sample can produce (built outside jit).

    Attributes
    ----------
    sl_hkl : (N_sl, 3) fcc SL reflections up to ``q_max_sl`` at the nominal a.
    al_hkl : (N_al, 3) rock-salt AL reflections up to ``q_max_al``.
    al_weight : (N_al,) ``|F_hkl|^2 / |F_200|^2`` at the beam energy (xraydb tables).
    al_lattice_constant : PbS lattice constant (A), fixed.
    form_factor_nodes : quadrature nodes of the polydisperse sphere average.
    form_factor_nsigma : truncation of the Gaussian radius distribution (standard deviations).
    sl_peak_weighting : size weighting of the SL Bragg peaks, "decoupling" (``|<F>|^2``) or
        "average" (``<|F|^2>``); see `xmodel.form_factor.sl_peak_factor`.
    sl_peak_shape : shape of the SL Bragg peaks, "mosaic", "crystal" or "grain"
        (`xmodel.pattern.sl_peak_widths`).
    sl_paracrystal : paracrystal growth s of the SL radial width with "crystal" or "grain" (A).
    sl_peak_tail : Lorentzian share of the SL peaks' profile across the Ewald sphere, 0 to 1
        (`xmodel.pattern.across_sphere_profile`).
    al_peak_intensity : what of an AL reflection follows ``|F|^2``, "integrated" or "height"
        (`xmodel.pattern.al_peak_height`).
    """

    sl_hkl: np.ndarray
    al_hkl: np.ndarray
    al_weight: np.ndarray
    al_lattice_constant: float = 5.936
    form_factor_nodes: int = 40
    form_factor_nsigma: float = DEFAULT_MODEL_FORM_FACTOR_NSIGMA
    sl_peak_weighting: str = DEFAULT_SL_PEAK_WEIGHTING
    sl_peak_shape: str = DEFAULT_SL_PEAK_SHAPE
    sl_paracrystal: float = 0.0
    sl_peak_tail: float = 0.0
    al_peak_intensity: str = "integrated"
    energy_kev: float = 13.8
    q_max_sl: float = 0.25
    q_max_al: float = 3.2
    band_nsigma: float = 4.0
    extra: dict = field(default_factory=dict, compare=False)

    @classmethod
    def build(cls, *, lattice_constant: float = 150.0, q_max_sl: float = 0.25,
              q_max_al: float = 3.2, energy_kev: float = 13.8, al_lattice_constant: float = 5.936,
              form_factor_nodes: int = 40, band_nsigma: float = 4.0,
              lattice_constant_range: tuple[float, float] | None = None,
              form_factor_nsigma: float = DEFAULT_MODEL_FORM_FACTOR_NSIGMA,
              sl_peak_weighting: str = DEFAULT_SL_PEAK_WEIGHTING, sl_peak_shape: str = DEFAULT_SL_PEAK_SHAPE,
              sl_paracrystal: float = 0.0, sl_peak_tail: float = 0.0,
              al_peak_intensity: str = "integrated") -> "Structure":
        """Reflection lists for an fcc SL of lattice constant ``lattice_constant`` (A).

        ``lattice_constant_range`` (A) widens the SL list so that fits letting ``a`` vary
        keep every reflection that can enter ``q < q_max_sl``.

        Raises
        ------
        ValueError
            If ``sl_peak_weighting`` is not one of `xmodel.config.SL_PEAK_WEIGHTINGS`, ``sl_peak_shape``
            not one of `xmodel.config.SL_PEAK_SHAPES`, or ``sl_paracrystal`` negative or set with
            the "mosaic" shape (which has no paracrystal term), ``sl_peak_tail`` outside [0, 1], or
            ``al_peak_intensity`` not one of `xmodel.config.AL_PEAK_INTENSITIES`.
        """
        if sl_peak_weighting not in SL_PEAK_WEIGHTINGS:
            raise ValueError(f"sl_peak_weighting {sl_peak_weighting!r} is unknown; use one of "
                             f"{list(SL_PEAK_WEIGHTINGS)} (model.sl_peak_weighting).")
        if sl_peak_shape not in SL_PEAK_SHAPES:
            raise ValueError(f"sl_peak_shape {sl_peak_shape!r} is unknown; use one of "
                             f"{list(SL_PEAK_SHAPES)} (model.sl_peak_shape).")
        if not sl_paracrystal >= 0 or (sl_paracrystal > 0 and sl_peak_shape == "mosaic"):
            raise ValueError(f"sl_paracrystal = {sl_paracrystal!r} A: expected a number >= 0, and 0 unless "
                             f"model.sl_peak_shape is \"crystal\" or \"grain\" (got {sl_peak_shape!r}).")
        if not 0.0 <= sl_peak_tail <= 1.0:
            raise ValueError(f"sl_peak_tail = {sl_peak_tail!r}: expected the Lorentzian share of the SL "
                             "profile across the Ewald sphere, a number from 0 to 1 (model.sl_peak_tail).")
        if sl_peak_tail and sl_peak_shape == "grain":
            raise ValueError(f"sl_peak_tail = {sl_peak_tail!r} with model.sl_peak_shape = \"grain\": that shape "
                             "derives its profile across the Ewald sphere from the grain's size and mosaic "
                             "(xmodel.pattern.grain_across); leave sl_peak_tail at 0, or use \"crystal\".")
        if al_peak_intensity not in AL_PEAK_INTENSITIES:
            raise ValueError(f"al_peak_intensity {al_peak_intensity!r} is unknown; use one of "
                             f"{list(AL_PEAK_INTENSITIES)} (model.al_peak_intensity).")
        # |G| = 2 pi sqrt(N) / a: the largest lattice constant brings the most reflections below
        # q_max_sl, so the list built there holds every one that enters at some a of the range
        a_max = max(lattice_constant_range) if lattice_constant_range else lattice_constant
        sl_hkl = lattice.fcc_reflections(a_max, q_max_sl)
        al_hkl = lattice.rock_salt_reflections(al_lattice_constant, q_max_al)
        f2 = structure_factor.pbs_intensity(al_hkl, energy_kev, al_lattice_constant)
        f200 = structure_factor.pbs_intensity(np.array([[2, 0, 0]]), energy_kev, al_lattice_constant)[0]
        return cls(sl_hkl=np.asarray(sl_hkl, dtype=np.int64), al_hkl=np.asarray(al_hkl, dtype=np.int64),
                   al_weight=np.asarray(f2 / f200, dtype=np.float64),
                   al_lattice_constant=al_lattice_constant, form_factor_nodes=form_factor_nodes,
                   form_factor_nsigma=float(form_factor_nsigma), sl_peak_weighting=sl_peak_weighting,
                   sl_peak_shape=sl_peak_shape, sl_paracrystal=float(sl_paracrystal),
                   sl_peak_tail=float(sl_peak_tail), al_peak_intensity=str(al_peak_intensity),
                   energy_kev=energy_kev, q_max_sl=q_max_sl, q_max_al=q_max_al,
                   band_nsigma=band_nsigma)


def make_params(*, lattice_constant=150.0, sl_radial_width=0.0015, sl_mosaic=np.radians(1.0),
                sl_scale=5.0e3, diffuse_scale=50.0, radius=34.0, radius_sigma=2.5,
                al_scale=20.0, al_radial_width=0.039, disorder=np.radians(15.0) / FWHM_PER_SIGMA,
                inplane=0.0, tilt1=0.0, tilt2=0.0, misorientation=(0.0, 0.0, 0.0),
                background=0.05, beam_direction=(0, 0, -1), inplane_reference=None,
                configuration: str = "conf1", custom_pairs=None,
                dtype=jnp.float32) -> ModelParams:
    """Build `ModelParams` from keyword values in internal units (radians, 1/A, A).

    ``beam_direction`` is the SL crystal direction along the incident beam; the
    orientation relationship is ``configuration`` ("conf1", "conf2" or "custom" with
    ``custom_pairs``).
    """
    base = orientation.base_orientation(beam_direction, inplane_reference)
    rel = orientation.orientation_relationship(configuration, custom_pairs)
    values = dict(lattice_constant=lattice_constant, sl_radial_width=sl_radial_width,
                  sl_mosaic=sl_mosaic, sl_scale=sl_scale, diffuse_scale=diffuse_scale,
                  radius=radius, radius_sigma=radius_sigma, al_scale=al_scale,
                  al_radial_width=al_radial_width, disorder=disorder, inplane=inplane,
                  tilt1=tilt1, tilt2=tilt2, misorientation=misorientation,
                  background=background, base_orientation=base, relationship=rel)
    return ModelParams(**{k: jnp.asarray(np.asarray(v, dtype=np.float64), dtype) for k, v in values.items()})


def params_from_config(cfg, dtype=jnp.float32) -> ModelParams:
    """`ModelParams` from a loaded `xmodel.config.Config` (degrees converted to radians).

    The disorder in the TOML is the FWHM dPhi of Eq. 7 (degrees); internally the model uses
    sigma_Phi = dPhi / 2.3548 (radians).
    """
    sl, nc, al, bg = cfg.superlattice, cfg.nanocrystal, cfg.atomic_lattice, cfg.background
    pairs = al.custom_pairs if al.configuration == "custom" else None
    return make_params(
        lattice_constant=sl.lattice_constant, sl_radial_width=sl.radial_width,
        sl_mosaic=np.radians(sl.mosaic_deg), sl_scale=sl.peak_scale,
        diffuse_scale=sl.diffuse_scale, radius=nc.radius, radius_sigma=nc.radius_sigma,
        al_scale=al.peak_scale, al_radial_width=al.radial_width,
        disorder=np.radians(al.disorder_fwhm_deg) / FWHM_PER_SIGMA,
        inplane=np.radians(sl.inplane_deg), tilt1=np.radians(sl.tilt1_deg),
        tilt2=np.radians(sl.tilt2_deg), misorientation=np.radians(np.asarray(al.misorientation_deg, float)),
        background=bg.constant, beam_direction=sl.beam_direction,
        inplane_reference=sl.inplane_reference, configuration=al.configuration,
        custom_pairs=pairs, dtype=dtype)


def structure_from_config(cfg, lattice_constant_range=None) -> Structure:
    """`Structure` from a loaded config (``[model]`` and ``[beam]`` tables)."""
    return Structure.build(lattice_constant=cfg.superlattice.lattice_constant,
                           q_max_sl=cfg.model.q_max_sl, q_max_al=cfg.model.q_max_al,
                           energy_kev=cfg.beam.energy_kev,
                           al_lattice_constant=cfg.atomic_lattice.lattice_constant,
                           form_factor_nodes=cfg.model.form_factor_nodes,
                           form_factor_nsigma=cfg.model.form_factor_nsigma,
                           sl_peak_weighting=cfg.model.sl_peak_weighting,
                           sl_peak_shape=cfg.model.sl_peak_shape,
                           sl_paracrystal=cfg.model.sl_paracrystal,
                           sl_peak_tail=cfg.model.sl_peak_tail,
                           al_peak_intensity=cfg.model.al_peak_intensity,
                           band_nsigma=cfg.model.band_nsigma,
                           lattice_constant_range=lattice_constant_range)
