"""Refinement: DMTet from the coarse mesh with spherical-Gaussian lighting and an albedo field."""
