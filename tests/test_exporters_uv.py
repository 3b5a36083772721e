"""UV unwrapping runs xatlas in a child process: results are usable, crashes are contained."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import trimesh

from exporters.bake import bake_texture, fill_gutters
from exporters.uv import UnwrapError, unwrap_xatlas


def test_unwrap_gives_uvs_in_unit_square_for_every_face():
    m = trimesh.creation.torus(0.3, 0.1, major_sections=24, minor_sections=12)
    u = unwrap_xatlas(np.asarray(m.vertices), np.asarray(m.faces), resolution=256)
    assert u.faces.shape == m.faces.shape
    assert (u.uvs >= 0).all() and (u.uvs <= 1).all()
    np.testing.assert_allclose(u.verts, np.asarray(m.vertices, np.float32)[u.vmapping])


def test_crash_of_the_child_is_reported_not_fatal(monkeypatch):
    import subprocess

    real_run = subprocess.run

    def crashing(cmd, **kw):  # the child dies from SIGSEGV, as xatlas does on an icosphere(6)
        return real_run([cmd[0], "-c", "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)"], **kw)

    monkeypatch.setattr(subprocess, "run", crashing)
    with pytest.raises(UnwrapError, match="signal 11"):
        unwrap_xatlas(np.zeros((3, 3)), np.array([[0, 1, 2]]))


def test_bake_reproduces_a_colour_field_and_fills_gutters():
    m = trimesh.creation.icosphere(2, radius=0.5)
    u = unwrap_xatlas(np.asarray(m.vertices), np.asarray(m.faces), resolution=128)
    tex, covered = bake_texture(torch.from_numpy(u.verts), torch.from_numpy(u.faces), torch.from_numpy(u.uvs),
                                lambda p: (p + 0.5).clamp(0, 1), size=128)
    assert 0.3 < covered.mean() < 1.0
    assert (tex[~covered] != 0).any()  # gutters were filled, not left black
    img = np.zeros((4, 4, 3), np.float32)
    img[1, 1] = 1
    mask = np.zeros((4, 4), bool)
    mask[1, 1] = True
    assert (fill_gutters(img, mask) == 1).all()
