"""SV3D_p's UNet: diffusers' ``UNetSpatioTemporalConditionModel`` with a per-frame added-time embedding.

SVD embeds three scalars per *clip* (fps, motion bucket, noise augmentation) and adds one vector to every
frame. SV3D_p instead conditions each frame on its own camera: per frame the noise augmentation
(``cond_aug``), the polar angle and the azimuth (radians) are embedded sinusoidally (256 + 512 + 512 = 1280
inputs for SV3D; ``addition_time_embed_dim`` for the first, the rest split evenly between the two angles)
and passed through the same ``add_embedding`` MLP. The parameters are exactly the base class's, so the
published diffusers conversions of SV3D_p (``projection_class_embeddings_input_dim = 1280``) load as they
are; only the forward pass differs.
"""

from __future__ import annotations

import torch
from diffusers import UNetSpatioTemporalConditionModel
from diffusers.models.embeddings import get_timestep_embedding
from diffusers.models.unets.unet_spatio_temporal_condition import UNetSpatioTemporalConditionOutput


class SV3DUNet(UNetSpatioTemporalConditionModel):
    """``forward(sample [B, F, C, H, W], timestep, encoder_hidden_states [B, 1, D], added_time_ids [B, F, 3])``
    with ``added_time_ids[..., 0]`` = cond_aug, ``[..., 1]`` = polar angle (radians, 0 = straight down from
    above, pi/2 = level), ``[..., 2]`` = azimuth (radians, relative to the input view)."""

    @property
    def angle_embed_dim(self) -> int:
        """Sinusoid width of each camera angle (512 for SV3D)."""
        cfg = self.config
        return (cfg.projection_class_embeddings_input_dim - cfg.addition_time_embed_dim) // 2

    def camera_embedding(self, added_time_ids: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """[B * F, time_embed_dim] per-frame embedding of (cond_aug, polar, azimuth) [B, F, 3]."""
        ids = added_time_ids.reshape(-1, 3).float()
        parts = [
            self.add_time_proj(ids[:, 0]),
            get_timestep_embedding(ids[:, 1], self.angle_embed_dim, flip_sin_to_cos=True, downscale_freq_shift=0),
            get_timestep_embedding(ids[:, 2], self.angle_embed_dim, flip_sin_to_cos=True, downscale_freq_shift=0),
        ]
        return self.add_embedding(torch.cat(parts, dim=-1).to(dtype))

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor | float | int,
                encoder_hidden_states: torch.Tensor, added_time_ids: torch.Tensor,
                return_dict: bool = True) -> UNetSpatioTemporalConditionOutput | tuple:
        batch, frames = sample.shape[:2]
        if added_time_ids.shape[:2] != (batch, frames) or added_time_ids.shape[-1] != 3:
            raise ValueError(f"added_time_ids must be [batch, frames, 3] = [{batch}, {frames}, 3], "
                             f"got {list(added_time_ids.shape)}")
        t = torch.as_tensor(timestep, device=sample.device)
        t = t.reshape(-1).expand(batch) if t.numel() in (1, batch) else t
        emb = self.time_embedding(self.time_proj(t).to(sample.dtype))  # [B, D]
        emb = emb.repeat_interleave(frames, dim=0) + self.camera_embedding(added_time_ids, emb.dtype)
        hidden = encoder_hidden_states.repeat_interleave(frames, dim=0)
        x = self.conv_in(sample.flatten(0, 1))
        only_images = torch.zeros(batch, frames, dtype=x.dtype, device=x.device)

        up_factor = 2 ** self.num_upsamplers
        force_size = any(s % up_factor != 0 for s in sample.shape[-2:])
        skips = (x,)
        for block in self.down_blocks:
            kwargs = {"encoder_hidden_states": hidden} if getattr(block, "has_cross_attention", False) else {}
            x, res = block(hidden_states=x, temb=emb, image_only_indicator=only_images, **kwargs)
            skips += res
        x = self.mid_block(hidden_states=x, temb=emb, encoder_hidden_states=hidden, image_only_indicator=only_images)
        for i, block in enumerate(self.up_blocks):
            res = skips[-len(block.resnets):]
            skips = skips[:-len(block.resnets)]
            size = skips[-1].shape[2:] if force_size and i < len(self.up_blocks) - 1 else None
            kwargs = {"encoder_hidden_states": hidden} if getattr(block, "has_cross_attention", False) else {}
            x = block(hidden_states=x, temb=emb, res_hidden_states_tuple=res, upsample_size=size,
                      image_only_indicator=only_images, **kwargs)
        x = self.conv_out(self.conv_act(self.conv_norm_out(x)))
        x = x.reshape(batch, frames, *x.shape[1:])
        return UNetSpatioTemporalConditionOutput(sample=x) if return_dict else (x,)
