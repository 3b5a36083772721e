"""Small tensor helpers shared by the stages."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor


def phase_index(step: int, steps: int, phase_ends: Sequence[float]) -> int:
    """Index of the coarse-to-fine phase that ``step`` of ``steps`` falls in (phases end at these fractions)."""
    frac = step / max(steps, 1)
    for i, end in enumerate(phase_ends):
        if frac < end:
            return i
    return len(phase_ends) - 1


def take_rows(x: Tensor, index: Tensor) -> Tensor:
    """``x[index]`` along dim 0 with a deterministic backward: [*index.shape, *x.shape[1:]].

    Advanced indexing's backward accumulates with atomics on multi-threaded CPUs, so repeated indices
    sum in a varying order and a seeded run stops being repeatable (measured: 1e-11 differences that
    grow into different meshes). ``index_select``'s backward (``index_add``) is deterministic.
    """
    return x.index_select(0, index.reshape(-1)).reshape(*index.shape, *x.shape[1:])


def numpy_of(t: Tensor) -> np.ndarray:
    """A CPU tensor's values as a C-contiguous numpy array (shares memory when it already is contiguous)."""
    return t.detach().contiguous().numpy()


def cpu_float32(*tensors: Tensor) -> bool:
    """Whether numba kernels written for float32 apply: every tensor is on the CPU and the floating ones
    are float32 (integer index tensors pass)."""
    return all(t.device.type == "cpu" and (not t.is_floating_point() or t.dtype == torch.float32) for t in tensors)
