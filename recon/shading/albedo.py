"""The albedo field: a multiresolution hash encoding and a small MLP, queried at surface points."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from recon.coarse.fields import HashEncoding


class AlbedoField(nn.Module):
    """Maps world points [P, 3] to sRGB albedo [P, 3] in [0, 1] (sigmoid of the MLP's output)."""

    def __init__(self, bound: float = 0.6, levels: int = 12, features: int = 2, log2_size: int = 16,
                 base_res: int = 16, max_res: int = 1024, hidden: int = 32):
        super().__init__()
        self.encoding = HashEncoding(levels, features, log2_size, base_res, max_res, bound)
        self.mlp = nn.Sequential(nn.Linear(self.encoding.out_dim, hidden), nn.ReLU(), nn.Linear(hidden, 3))

    def forward(self, x: Tensor) -> Tensor:
        return torch.sigmoid(self.mlp(self.encoding(x)))

    @torch.no_grad()
    def query(self, x: Tensor, chunk: int = 65536) -> Tensor:
        """[P, 3] albedo without gradients, in memory-bounded chunks."""
        if x.shape[0] == 0:
            return torch.zeros(0, 3, device=x.device)
        return torch.cat([self(x[i:i + chunk]) for i in range(0, x.shape[0], chunk)])
