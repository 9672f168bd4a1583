"""Small-angle scattering of explicit NC grains: the coherent sum over spheres.

``I(q) = |sum_j V_j Phi(|q| R_j) exp(i q . r_j)|^2 / V0^2`` for the NCs j of one grain
(positions r_j, radii R_j; `xmodel.realspace.particles.Grain`), with V0 the volume of a
reference sphere: the kinematic (Born) scattering of homogeneous spheres of equal contrast,
in units of one reference NC's forward scattering. Grains are summed incoherently.

Cost. The phase matrix ``exp(i q . r_j)`` (points x NCs) is the whole cost (about 8 ns per
pair on one core, numpy float32: the phase, its cosine and sine, one add each). The sphere
amplitude is not evaluated per pair: radii are multiples of a small step
(`xmodel.realspace.particles.fcc_grain`), NCs are grouped by radius, and
``A(q) = sum_k V_k Phi(|q| R_k) S_k(q)`` with ``S_k(q) = sum_{j in k} exp(i q . r_j)`` (a
segment sum over NCs sorted by radius). The amplitudes ``V_k Phi(|q| R_k)`` of the points
are computed once per radius and kept (`SaxsPoints`), so a scan pays for them once. Points are
processed in chunks that stay in cache.
"""
from __future__ import annotations

import numpy as np

from xmodel.realspace.particles import Grain, sphere_amplitude

__all__ = ["SaxsPoints", "grain_intensity"]

#: points per chunk (the chunk's phase matrix is CHUNK x NCs float32)
CHUNK = 256


class SaxsPoints:
    """Scattering vectors of the SAXS points and a cache of sphere amplitudes per radius.

    Parameters
    ----------
    q_lab
        (P, 3) scattering vectors (lab frame, 1/A).
    r0
        Reference radius (A): amplitudes are ``(R / r0)^3 Phi(|q| R)``.
    """

    def __init__(self, q_lab: np.ndarray, r0: float):
        self.q_lab = np.asarray(q_lab, float)
        self.q32 = self.q_lab.astype(np.float32)
        self.qabs = np.linalg.norm(self.q_lab, axis=1)
        self.r0 = float(r0)
        self._amp: dict[float, np.ndarray] = {}

    @property
    def size(self) -> int:
        return int(self.qabs.size)

    def amplitudes(self, radii: np.ndarray) -> np.ndarray:
        """(P, K) float32 ``(R_k / r0)^3 Phi(|q| R_k)`` for the radii ``R_k`` (A)."""
        cols = []
        for r in np.asarray(radii, float):
            key = float(r)
            if key not in self._amp:
                self._amp[key] = ((key / self.r0) ** 3 * sphere_amplitude(self.qabs * key)).astype(np.float32)
            cols.append(self._amp[key])
        return np.stack(cols, axis=1)

    def incoherent(self, radii: np.ndarray) -> np.ndarray:
        """(P,) ``sum_j (R_j / r0)^6 Phi(|q| R_j)^2``: the NCs' scattering without interference."""
        classes, counts = np.unique(np.asarray(radii, float), return_counts=True)
        out = np.zeros(self.size)
        for r, n in zip(classes, counts):
            col = self.amplitudes([r])[:, 0].astype(np.float64)
            out += n * col * col
        return out


def grain_intensity(q_lab, grain: Grain, r0: float | None = None, *, chunk: int = CHUNK) -> np.ndarray:
    """Coherent SAXS of one grain at scattering vectors ``q_lab`` (lab frame, 1/A).

    Parameters
    ----------
    q_lab
        (P, 3) scattering vectors on the Ewald sphere (or anywhere), 1/A, or a `SaxsPoints`
        (reuses its amplitudes; its ``r0`` applies).
    grain
        NC positions (A, lab frame) and radii (A).
    r0
        Reference radius (A): the result is in units of ``V(r0)^2`` (with an array ``q_lab``).
    chunk
        Points per block.

    Returns
    -------
    numpy.ndarray
        (P,) float64 ``|sum_j V_j Phi(|q| R_j) exp(i q . r_j)|^2 / V(r0)^2``.

    Notes
    -----
    Born approximation for homogeneous spheres (Guinier & Fournet (1955), ch. 2); phases in
    float32: for ``|q| <= 0.5`` 1/A and grains below 0.5 um the phase error is below 1e-4
    rad.

    Validation
    ----------
    Against the direct double sum over NCs in float64 (``tests/xmodel/test_realspace.py``).
    """
    points = q_lab if isinstance(q_lab, SaxsPoints) else SaxsPoints(q_lab, r0)
    n_points = points.size
    out = np.zeros(n_points)
    if n_points == 0 or grain.n == 0:
        return out
    classes, inverse = np.unique(grain.radii, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    starts = np.searchsorted(inverse[order], np.arange(classes.size))
    pos = np.ascontiguousarray(grain.positions[order].T, dtype=np.float32)       # (3, N)
    amplitudes = points.amplitudes(classes)                                      # (P, K)
    q32 = points.q32
    n = grain.n
    phase = np.empty((chunk, n), np.float32)
    tmp = np.empty((chunk, n), np.float32)
    for start in range(0, n_points, chunk):
        m = min(chunk, n_points - start)
        ph, tm = phase[:m], tmp[:m]
        q = q32[start:start + m]
        np.multiply(q[:, 0:1], pos[0], out=ph)
        np.multiply(q[:, 1:2], pos[1], out=tm)
        ph += tm
        np.multiply(q[:, 2:3], pos[2], out=tm)
        ph += tm
        amp = amplitudes[start:start + m]
        np.cos(ph, out=tm)
        re = np.sum(amp * np.add.reduceat(tm, starts, axis=1), axis=1, dtype=np.float64)
        np.sin(ph, out=tm)
        im = np.sum(amp * np.add.reduceat(tm, starts, axis=1), axis=1, dtype=np.float64)
        out[start:start + m] = re * re + im * im
    return out
