"""Gradient-based parameter studies: Fisher information, Cramer-Rao bounds, sensitivity maps,
experiment design scans and their Monte Carlo validation (docs/studies.md)."""
