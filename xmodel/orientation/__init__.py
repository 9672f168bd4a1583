"""Orientations of the superlattice (SL) and the nanocrystals' atomic lattice (AL).

Contract (docs/conventions.md, "Crystal frames and orientation matrices"):

* matrices act on column vectors, batches are ``(..., 3, 3)``;
* ``R_sl`` maps SL crystal coordinates to lab coordinates,
  ``R_sl = R_e1(tilt1) @ R_e2(tilt2) @ R_e3(inplane) @ R_base``;
* ``R_or`` maps AL crystal coordinates to SL crystal coordinates (Conf1, Conf2, custom);
* ``R_al = R_sl @ R_or @ R_mis`` with ``R_mis = exp([w]_x)``, ``w`` a rotation vector (rad).

The modules, one job each:

* `rotations`: rotation matrices from rotation vectors and quaternions and back, elementary
  rotations about the lab axes;
* `angles`: ``R_base`` from the zone axis, ``R_sl`` from the in-plane angle and tilts, and
  the angles back from a fitted orientation (`decompose_orientation`);
* `symmetry`: the 24 cubic operators, misorientation and disorientation, the fundamental-zone
  grid and the mean of orientations under cubic symmetry;
* `relationship`: the SL-AL orientation relationships, ``R_al`` and the NC orientations one
  relationship allows (`relationship_variants`);
* `checks`: argument checks the others share.

Everything that takes angles (`rotation_matrix`, `rotation_about_axis`,
`matrix_from_quaternion`, `sl_orientation`, `al_orientation`) is pure JAX: jit-able,
vmap-able and differentiable, with the dtype of its inputs. Constructors from crystal
directions and the analysis functions are numpy, float64. The public names of the modules are
re-exported here: ``from xmodel import orientation; orientation.rotation_matrix(w)``.
"""
from xmodel.orientation.angles import base_orientation, decompose_orientation, sl_orientation
from xmodel.orientation.relationship import (
    RELATIONSHIPS,
    al_orientation,
    orientation_relationship,
    relationship_variants,
)
from xmodel.orientation.rotations import (
    matrix_from_quaternion,
    quaternion_from_matrix,
    rotation_about_axis,
    rotation_about_beam,
    rotation_matrix,
    rotation_vector,
)
from xmodel.orientation.symmetry import (
    cubic_symmetry_operators,
    disorientation,
    fundamental_zone_grid,
    mean_orientation,
    misorientation_angle,
)

__all__ = [
    "RELATIONSHIPS",
    "al_orientation",
    "base_orientation",
    "cubic_symmetry_operators",
    "decompose_orientation",
    "disorientation",
    "fundamental_zone_grid",
    "matrix_from_quaternion",
    "mean_orientation",
    "misorientation_angle",
    "orientation_relationship",
    "quaternion_from_matrix",
    "relationship_variants",
    "rotation_about_axis",
    "rotation_about_beam",
    "rotation_matrix",
    "rotation_vector",
    "sl_orientation",
]
