"""Face encoder (the reference's ``FusionFaceId``): ArcFace identity + CLIP image embedding → ID tokens.

IP-Adapter-FaceID-Plus style: an MLP lifts the 512-d ArcFace vector to ``num_tokens`` tokens, and a
Perceiver resampler lets those tokens attend to the CLIP embedding. Module names and state-dict keys are
those of the released ``face_encoder.pth``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class PerceiverAttention(nn.Module):
    """Latents attend to [context; latents] (keys and values from both), multi-head, no biases."""

    def __init__(self, dim: int, dim_head: int = 64, heads: int = 16) -> None:
        super().__init__()
        self.heads = heads
        inner = dim_head * heads
        self.norm1 = nn.LayerNorm(dim)  # context
        self.norm2 = nn.LayerNorm(dim)  # latents
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(dim, inner * 2, bias=False)
        self.to_out = nn.Linear(inner, dim, bias=False)

    def forward(self, context: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        context, latents = self.norm1(context), self.norm2(latents)
        query = self.to_q(latents)
        key, value = self.to_kv(torch.cat((context, latents), dim=-2)).chunk(2, dim=-1)
        q, k, v = (t.unflatten(-1, (self.heads, -1)).transpose(1, 2).float() for t in (query, key, value))
        # The reference scales q and k by dim_head^-1/4 each and does the softmax in float32: that is SDPA's
        # default 1/sqrt(dim_head) scaling, run in float32 (a handful of tokens, so the upcast costs nothing).
        out = F.scaled_dot_product_attention(q, k, v).to(query.dtype)
        return self.to_out(out.transpose(1, 2).flatten(2))


def _feed_forward(dim: int, mult: int) -> nn.Sequential:
    return nn.Sequential(
        nn.LayerNorm(dim), nn.Linear(dim, dim * mult, bias=False), nn.GELU(), nn.Linear(dim * mult, dim, bias=False))


class FacePerceiver(nn.Module):
    """Perceiver resampler: ``depth`` rounds of attention + feed-forward on the ID tokens."""

    def __init__(self, dim: int = 1024, depth: int = 4, dim_head: int = 64, heads: int = 16,
                 embedding_dim: int = 1024, output_dim: int = 1024, ff_mult: int = 4) -> None:
        super().__init__()
        self.proj_in = nn.Linear(embedding_dim, dim)
        self.proj_out = nn.Linear(dim, output_dim)
        self.norm_out = nn.LayerNorm(output_dim)
        self.layers = nn.ModuleList(
            nn.ModuleList([PerceiverAttention(dim, dim_head, heads), _feed_forward(dim, ff_mult)])
            for _ in range(depth))

    def forward(self, latents: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        context = self.proj_in(context)
        for attention, feed_forward in self.layers:
            latents = attention(context, latents) + latents
            latents = feed_forward(latents) + latents
        return self.norm_out(self.proj_out(latents))


class FaceEncoder(nn.Module):
    """``forward(id_embeds (B, 512), clip_embeds (B, 1, clip_dim)) -> (B, num_tokens, cross_attention_dim)``.

    ``id_embeds`` is insightface's raw (not L2-normalised) ``face.embedding``; ``clip_embeds`` is CLIP's
    projected ``image_embeds``. ``proj_out`` starts at zero, so an untrained encoder outputs exactly 0.
    """

    def __init__(self, cross_attention_dim: int = 1024, id_embeddings_dim: int = 512,
                 clip_embeddings_dim: int = 1024, num_tokens: int = 4) -> None:
        super().__init__()
        self.cross_attention_dim = cross_attention_dim
        self.num_tokens = num_tokens
        self.proj = nn.Sequential(
            nn.Linear(id_embeddings_dim, id_embeddings_dim * 2), nn.GELU(),
            nn.Linear(id_embeddings_dim * 2, cross_attention_dim * num_tokens))
        self.norm = nn.LayerNorm(cross_attention_dim)
        self.fusion_model = FacePerceiver(
            dim=cross_attention_dim, depth=4, dim_head=64, heads=cross_attention_dim // 64,
            embedding_dim=clip_embeddings_dim, output_dim=cross_attention_dim, ff_mult=4)
        nn.init.zeros_(self.fusion_model.proj_out.weight)
        nn.init.zeros_(self.fusion_model.proj_out.bias)

    def forward(self, id_embeds: torch.Tensor, clip_embeds: torch.Tensor) -> torch.Tensor:
        if clip_embeds.ndim == 2:
            clip_embeds = clip_embeds[:, None]
        tokens = self.proj(id_embeds).reshape(-1, self.num_tokens, self.cross_attention_dim)
        return self.fusion_model(self.norm(tokens), clip_embeds)
