"""Peak-memory measurement: the kernel's high-water mark (reset per block, nested) and the sampling
fallback agree with what was allocated."""

from __future__ import annotations

import mmap
import sys

import numpy as np
import pytest

from recon.eval import resources
from recon.eval.resources import peak_memory

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def _touch(mb: int) -> None:
    """Make ``mb`` MiB resident and release them. Fresh anonymous pages, not the allocator's: earlier
    tests can leave freed memory that a malloc would reuse without raising the resident size."""
    with mmap.mmap(-1, mb * 2**20) as pages:
        view = np.frombuffer(pages, dtype=np.uint8)
        view[:] = 1  # written, so resident
        del view


@pytest.mark.parametrize("resettable", [True, False])
def test_nested_blocks_see_their_own_peaks(monkeypatch, resettable):
    if resettable and not resources._can_reset_hwm():
        pytest.skip("this kernel does not let a process reset its high-water mark")
    monkeypatch.setattr(resources, "_hwm_resettable", resettable)
    with peak_memory() as outer:
        _touch(300)
        with peak_memory() as inner:
            _touch(60)
        with peak_memory() as idle:
            pass
    assert 280 < outer["peak_mb"] < 400
    assert 50 < inner["peak_mb"] < 120
    assert idle["peak_mb"] < 20
    assert outer["seconds"] >= inner["seconds"] > 0
