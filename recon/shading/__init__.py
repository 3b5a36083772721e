"""Appearance for refinement: spherical-Gaussian lighting and the albedo field."""
