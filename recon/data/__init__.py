"""Orbit data: cameras, frames, masks, loaders and writers, and analytic (synthetic) orbits."""

from recon.data.cameras import Cameras, orbit_cameras, sv3d_azimuths
from recon.data.orbit import load_orbit, write_orbit

__all__ = ["Cameras", "load_orbit", "orbit_cameras", "sv3d_azimuths", "write_orbit"]
