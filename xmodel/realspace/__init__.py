"""An independent, real-space simulator of the nanodiffraction scan (the realistic twin).

It shares only the detector geometry (`xmodel.geometry`, `xmodel.detector`,
`xmodel.experiment`) and the twin's layout and truth (`xmodel.twin`) with the forward model;
it does not use `xmodel.pattern`, `xmodel.form_factor` or `xmodel.structure_factor`: the
superlattice is explicit NC positions and radii, the SAXS a coherent sum over spheres, the
WAXS a sum of finite-crystal shape transforms of sampled NC orientations. See
docs/realspace.md.

Modules: `particles` (sphere amplitude, sizes, fcc paracrystal grains), `saxs` (coherent
sum), `waxs` (rock-salt NCs), `nuisance` (membrane, air, shadows, streak, drift, bad pixels),
`settings` (the realistic-twin TOML), `engine` (frames and truth).
"""
from xmodel.realspace.engine import RealspaceScan, synthesize_realspace
from xmodel.realspace.settings import RealspaceError, load_settings

__all__ = ["RealspaceError", "RealspaceScan", "load_settings", "synthesize_realspace"]
