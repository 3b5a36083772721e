"""orbitmesh exporters: face budget, UV unwrap, texture baking and GLB/OBJ/PLY writers."""

from recon import _env  # noqa: F401  (thread set-up before torch is imported)
