"""Orbit data: cameras (recon.data.cameras), frames and masks (images), loaders and writers (orbit),
analytic orbits (synthetic), reports (report) and the demo assets (demo)."""
