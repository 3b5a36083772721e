"""orbitmesh reconstruction: cameras, orbit data, rendering and the stages from orbit views to a mesh."""

from recon import _env  # noqa: F401  (must run before torch or numba is imported)

__version__ = "0.1.0"
