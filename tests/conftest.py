"""Shared fixtures: small analytic orbits rendered once per session, and the shared convention fixture."""

from __future__ import annotations

from pathlib import Path

import pytest

from recon.data.orbit import write_orbit
from recon.data.synthetic import make_scene, render_orbit, sv3d_orbit_angles
from recon.types import Orbit

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
AXES_ORBIT = SHARED / "fixtures" / "axes_orbit"


@pytest.fixture(scope="session")
def axes_orbit_dir() -> Path:
    if not AXES_ORBIT.is_dir():
        pytest.skip(f"shared fixture {AXES_ORBIT} not present beside the checkout")
    return AXES_ORBIT


@pytest.fixture(scope="session")
def sphere_orbit() -> Orbit:
    """The analytic sphere (radius 0.5) seen by SV3D's 21 static cameras at 48x48."""
    elev, azim = sv3d_orbit_angles()
    return render_orbit(make_scene("sphere"), elev, azim, size=48, supersample=2)


@pytest.fixture(scope="session")
def toy_orbit() -> Orbit:
    """The analytic toy on a dynamic orbit (elevation 10 ± 20°), 48x48."""
    elev, azim = sv3d_orbit_angles(dynamic_amplitude_deg=20.0)
    return render_orbit(make_scene("toy"), elev, azim, size=48, supersample=2)


@pytest.fixture()
def sphere_dir(tmp_path: Path, sphere_orbit: Orbit) -> Path:
    """The sphere orbit written as an orbit folder (frames + orbit.json, no transforms.json)."""
    return write_orbit(sphere_orbit, tmp_path / "sphere", transforms=False)
