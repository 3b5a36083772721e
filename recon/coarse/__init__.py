"""The coarse stage: a radiance field fitted to the orbit, with visual-hull empty-space skipping."""
