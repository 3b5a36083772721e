"""Geometry for the refinement stage: tetrahedral grids, marching tetrahedra, mesh regularisers."""
