"""Attention processors of the StableAnimator UNet, all computed with torch's scaled_dot_product_attention.

Three kinds, installed by :meth:`animator_cli.models.unet.AnimatorUNet.install_processors`:

* :class:`SpatialAttnProcessor` - plain attention (spatial self-attention, ``attn1``).
* :class:`IDAttnProcessor` - the distribution-aware ID adapter (spatial cross-attention, ``attn2``). It is an
  ``nn.Module``, so diffusers registers it as the submodule ``processor`` and its weights have the released
  keys ``...attn2.processor.id_to_k.weight`` / ``id_to_v.weight``.
* :class:`TemporalAttnProcessor` - plain attention for the temporal blocks, whose cross-attention sees only the
  CLIP token (the context minus the trailing ID tokens), as the reference's modified transformer does.

Differences from the reference processors (``attention_processor*.py``), all bug fixes:
xformers is never needed; a call without context (self-attention) no longer crashes on
``encoder_hidden_states.to(...)`` before the None check; the ID branch always uses its own ``id_to_k``/``id_to_v``
(the non-xformers path of the reference's un-normalised twin used ``to_k``/``to_v``); the statistics of the
alignment are computed in float32 so half-precision runs do not lose them; a context without room for the ID
tokens raises instead of silently attending to an empty slice.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention
from torch import nn

# CUDA launches at most 65,535 blocks along a grid's y and z axes. The temporal attention has one sample per latent
# pixel (B·h·w of them, ~18k at 576×1024 with guidance, times the heads): batches whose samples × heads pass this
# are attended in slices, so no fused kernel is refused and none falls back to the math kernel (whose B·heads·N²
# score tensor is written to memory). Each sample is independent: slicing changes no value.
MAX_BATCH_HEADS = 65_535


def multihead_attention(heads: int, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                        max_batch_heads: int = MAX_BATCH_HEADS) -> torch.Tensor:
    """(B, N, C) projections → (B, N, C) attention output with ``heads`` heads, at most ``max_batch_heads``
    samples × heads per kernel call."""
    q, k, v = (t.unflatten(-1, (heads, -1)).transpose(1, 2) for t in (query, key, value))
    per_call = max(1, max_batch_heads // heads)
    if q.shape[0] <= per_call:
        return F.scaled_dot_product_attention(q, k, v).transpose(1, 2).flatten(2)
    out = torch.cat([F.scaled_dot_product_attention(*(t[i:i + per_call] for t in (q, k, v)))
                     for i in range(0, q.shape[0], per_call)])
    return out.transpose(1, 2).flatten(2)


def match_statistics(source: torch.Tensor, target: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Shift and scale each sample of ``source`` (B, N, C) to the mean and (unbiased) std of ``target``.

    Statistics are per sample over tokens × channels (dims 1 and 2), computed in float32; ``eps`` is added to
    the source std. ``target`` may be (B, 1, C) standing for that row repeated over the N tokens (the CLIP branch
    over one CLIP token), with no N-fold tensor. The result keeps
    ``source``'s dtype (no full-size float32 copy survives the call).
    """
    src_std, src_mean = torch.std_mean(source.float(), dim=(1, 2), keepdim=True)
    # a one-row target is reduced as a broadcast view: the same sums as the full tensor, with no N-fold copy
    tgt_std, tgt_mean = torch.std_mean(target.float().expand_as(source), dim=(1, 2), keepdim=True)
    gain = tgt_std / (src_std + eps)
    return (source - src_mean.to(source.dtype)) * gain.to(source.dtype) + tgt_mean.to(source.dtype)


class _Processor(nn.Module):
    """The diffusers ``Attention`` flow around :meth:`attend` (norms, 4-D inputs, output proj, residual)."""

    def forward(self, attn: Attention, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None) -> torch.Tensor:
        if attention_mask is not None:
            raise ValueError("StableAnimator attention processors do not take an attention mask")
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        image_shape = hidden_states.shape if hidden_states.ndim == 4 else None
        if image_shape is not None:
            hidden_states = hidden_states.flatten(2).transpose(1, 2)
        tokens_shape = hidden_states.shape[:2]
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        if encoder_hidden_states is not None and attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)

        hidden_states = attn.to_out[1](attn.to_out[0](self.attend(attn, hidden_states, encoder_hidden_states)))
        hidden_states = hidden_states.expand(*tokens_shape, -1)  # a one-row output (one CLIP token) is a view

        if image_shape is not None:
            hidden_states = hidden_states.transpose(1, 2).reshape(image_shape)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        if attn.rescale_output_factor != 1:  # skipped at 1: dividing would copy a broadcast view
            hidden_states = hidden_states / attn.rescale_output_factor
        return hidden_states

    def attend(self, attn: Attention, hidden_states: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        """Attention of ``hidden_states`` over ``context`` (itself when None), before ``to_out``. Over one token
        the softmax is 1 and every query gets ``to_v`` of it: without gradients that row (B, 1, C) is returned.
        Training keeps the full attention, so ``to_q``/``to_k`` still get their (zero) gradients and weight
        decay, and DDP sees every parameter used."""
        context = hidden_states if context is None else context
        if context.shape[1] == 1 and not torch.is_grad_enabled():
            return attn.to_v(context)
        return multihead_attention(attn.heads, attn.to_q(hidden_states), attn.to_k(context), attn.to_v(context))


class SpatialAttnProcessor(_Processor):
    """Plain attention; the reference's ``AnimationAttnProcessor`` (no parameters)."""


class TemporalAttnProcessor(_Processor):
    """Plain attention whose context, when given, is cut to the tokens before the ``num_id_tokens`` ID tokens.

    The temporal cross-attention of SVD must see only the CLIP token; the UNet context carries the ID tokens
    at its end for the spatial ID adapter.
    """

    def __init__(self, num_id_tokens: int = 4) -> None:
        super().__init__()
        self.num_id_tokens = num_id_tokens

    def attend(self, attn: Attention, hidden_states: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        if context is not None and self.num_id_tokens:
            context = _split_context(context, self.num_id_tokens)[0]
        return super().attend(attn, hidden_states, context)


class IDAttnProcessor(_Processor):
    """Distribution-aware ID adapter; the reference's ``AnimationIDAttnNormalizedProcessor``.

    With context ``E = [CLIP tokens; ID tokens]``: ``h`` attends over the CLIP tokens with the layer's own
    ``to_k``/``to_v``, ``i`` over the ID tokens with ``id_to_k``/``id_to_v``; ``i`` is aligned to ``h``'s
    per-sample mean and std and the layer outputs ``to_out(h + scale * aligned(i))``. Without context it is
    plain self-attention (the reference crashed there). ``scale`` is the identity strength (1.0 in the paper).
    """

    def __init__(self, hidden_size: int, cross_attention_dim: int = 1024, num_tokens: int = 4, scale: float = 1.0,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.num_tokens = num_tokens
        self.scale = scale
        self.id_to_k = nn.Linear(cross_attention_dim, hidden_size, bias=False, device=device, dtype=dtype)
        self.id_to_v = nn.Linear(cross_attention_dim, hidden_size, bias=False, device=device, dtype=dtype)

    def attend(self, attn: Attention, hidden_states: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        if context is None:
            return super().attend(attn, hidden_states, None)
        clip, ids = _split_context(context, self.num_tokens)
        h = super().attend(attn, hidden_states, clip)  # (B, 1, C) over one CLIP token
        i = multihead_attention(attn.heads, attn.to_q(hidden_states), self.id_to_k(ids), self.id_to_v(ids))
        return h + self.scale * match_statistics(i, h)


def _split_context(context: torch.Tensor, num_id_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(CLIP tokens, ID tokens) of a context whose last ``num_id_tokens`` tokens are the ID tokens."""
    if context.shape[1] <= num_id_tokens:
        raise ValueError(f"the UNet context needs at least one CLIP token before the {num_id_tokens} ID tokens, "
                         f"got {context.shape[1]} tokens")
    return context[:, :-num_id_tokens], context[:, -num_id_tokens:]
