"""Matrix-product precision of the model's JAX programs on accelerators.

On NVIDIA GPUs since Ampere (A100, H100, H200) JAX's default precision for a float32 matrix
product is TensorFloat-32: each operand is rounded to a 10-bit mantissa (relative error up to
``2**-11``, about 5e-4) before the product. The model cannot take that: a rotation matrix
rounded so has rows of norm ``1 +- 5e-4``, so ``c = q . G_hat`` in `xmodel.pattern.shell_sum`
is off by that fraction of ``|q|``, and ``1 - c / |q|``, which is ``theta^2 / 2 ~ 1.5e-4`` at one
tangential sigma of a 1 deg mosaic, changes sign: the full-detector pattern was measured 51 %
of its maximum away from the dense reference on an H200 (benchmarks/forward.py, float32).
Every JAX matrix product of the model, its orientations and its fits therefore asks for
`EXACT` (``jax.lax.Precision.HIGHEST``: full float32, or float64, on any backend). On CPUs this
is what JAX computes anyway; the products concerned are small (3 x 3 rotations, ``(m, 3)``
reciprocal vectors, normal equations of a few parameters), so the cost is negligible.

Reference: JAX documentation, ``jax.default_matmul_precision`` and ``jax.lax.Precision``;
NVIDIA, "TensorFloat-32 in the A100 GPU" (2020).

Validation: tests/xmodel/test_precision.py walks the jaxprs of the forward model (its value,
gradient and components), the orientations, the scan fit's windowed model, the batch fit's normal
equations and the null deviance, and finds no matrix product left at the default precision. The
dense reference (`xmodel.pattern.dense_pattern`, not traceable as a whole) is checked on a GPU by
benchmarks/forward.py: 5.95e-4 of the maximum from the model on an H200.
"""
from __future__ import annotations

import jax

__all__ = ["EXACT"]

#: precision of every JAX matrix product of the model (`jnp.matmul(..., precision=EXACT)`)
EXACT = jax.lax.Precision.HIGHEST
