"""orbitmesh guidance: diffusion models (SV3D) for soft-masked SDS and image -> orbit generation."""

from recon import _env  # noqa: F401  (thread set-up before torch is imported)
