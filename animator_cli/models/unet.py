"""The StableAnimator UNet: diffusers' SVD UNet plus PoseNet features and the ID-adapter processors.

Extended by subclassing, never copied: the diffusers module tree (and so every state-dict key of the released
``unet.pth``) stays exactly SVD-xt's, and the two behaviour changes of the reference are hooked in:

* ``pose_latents`` (PoseNet output) is added to the output of ``conv_in``: the features travel to it as extra
  channels of the sample and :class:`PoseConvIn` splits them off, so the forward has no hook and no state
  (torch.compile traces it as one graph);
* the 64 attention layers get the processors of :mod:`animator_cli.models.id_adapter`: 16 spatial
  self-attention, 16 ID adapters on the spatial cross-attention, 32 temporal. The temporal processors drop
  the trailing ID tokens from the context, which is the reference's ``time_context = E[:, :-4]`` change to
  ``TransformerSpatioTemporalModel`` done without re-implementing that transformer.
"""

from __future__ import annotations

from collections import Counter

import torch
from diffusers import UNetSpatioTemporalConditionModel
from diffusers.models.attention_processor import Attention
from torch import nn

from animator_cli.models.id_adapter import IDAttnProcessor, SpatialAttnProcessor, TemporalAttnProcessor

NUM_ID_TOKENS = 4

# stabilityai/stable-video-diffusion-img2vid-xt unet/config.json (diffusers' defaults plus the sample size).
SVD_XT_UNET_CONFIG: dict = {
    "sample_size": 96,
    "in_channels": 8,
    "out_channels": 4,
    "down_block_types": ["CrossAttnDownBlockSpatioTemporal"] * 3 + ["DownBlockSpatioTemporal"],
    "up_block_types": ["UpBlockSpatioTemporal"] + ["CrossAttnUpBlockSpatioTemporal"] * 3,
    "block_out_channels": [320, 640, 1280, 1280],
    "addition_time_embed_dim": 256,
    "projection_class_embeddings_input_dim": 768,
    "layers_per_block": 2,
    "cross_attention_dim": 1024,
    "transformer_layers_per_block": 1,
    "num_attention_heads": [5, 10, 20, 20],
    "num_frames": 25,
}


class AnimatorUNet(UNetSpatioTemporalConditionModel):
    """SVD UNet conditioned on pose features and on a context of [CLIP token; ID tokens].

    Build it from SVD's ``unet/config.json``, call :meth:`install_processors`, then load ``unet.pth``.
    """

    # torch.compile regions (diffusers' ``compile_repeated_blocks`` and animator_cli.models.compile)
    _repeated_blocks = ("CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal", "UNetMidBlockSpatioTemporal",
                        "UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal")

    def install_processors(self, num_id_tokens: int = NUM_ID_TOKENS) -> None:
        """Install the StableAnimator processors on every attention layer (adds the ``processor.id_to_*`` keys)
        and the pose input of ``conv_in`` (same parameters, same keys).

        The ID projections start as copies of the layer's ``to_k``/``to_v`` (IP-Adapter-style init, what
        training starts from); loading ``unet.pth`` overwrites them. On the meta device nothing is copied.
        """
        processors = {}
        for name, module in self.named_modules():
            if not isinstance(module, Attention):
                continue
            if ".temporal_transformer_blocks." in name:
                processors[f"{name}.processor"] = TemporalAttnProcessor(num_id_tokens)
            elif name.endswith(".attn1"):
                processors[f"{name}.processor"] = SpatialAttnProcessor()
            else:
                processors[f"{name}.processor"] = _id_processor(module, num_id_tokens)
        self.set_attn_processor(processors)
        self.conv_in = PoseConvIn.sharing(self.conv_in)

    def processor_counts(self) -> Counter:
        """How many attention layers use each processor class (16/16/32 on SVD-xt)."""
        return Counter(type(p).__name__ for p in self.attn_processors.values())

    def set_id_scale(self, scale: float) -> None:
        """Strength of the identity branch in every ID adapter (1.0 = the paper's setting)."""
        for processor in self.attn_processors.values():
            if isinstance(processor, IDAttnProcessor):
                processor.scale = scale

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor | float | int,
                encoder_hidden_states: torch.Tensor, added_time_ids: torch.Tensor,
                pose_latents: torch.Tensor | None = None) -> torch.Tensor:
        """Denoiser output (B, F, 4, h, w) for ``sample`` (B, F, 8, h, w).

        ``encoder_hidden_states`` (B, 1 + 4, C) is [CLIP image embedding; face tokens]; ``pose_latents`` is the
        PoseNet output, (B·F, C0, h, w) or (B, F, C0, h, w). Returns the tensor, not diffusers' output class.
        """
        if pose_latents is not None:
            pose = pose_latents.unflatten(0, sample.shape[:2]) if pose_latents.ndim == 4 else pose_latents
            sample = torch.cat([sample, pose.to(sample.dtype)], dim=2)
        return super().forward(sample, timestep, encoder_hidden_states, added_time_ids, return_dict=False)[0]


class PoseConvIn(nn.Conv2d):
    """``conv_in`` that adds the PoseNet features carried as input channels after its own ``in_channels``.

    A plain ``Conv2d`` in parameters and keys, so ``unet.pth`` loads unchanged.
    """

    @classmethod
    def sharing(cls, conv: nn.Conv2d) -> PoseConvIn:
        """A PoseConvIn with ``conv``'s hyper-parameters and its very parameters (nothing is copied)."""
        pose_conv = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                        conv.dilation, conv.groups, conv.bias is not None, conv.padding_mode, device="meta")
        pose_conv.weight, pose_conv.bias = conv.weight, conv.bias
        return pose_conv

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if input.shape[1] == self.in_channels:
            return super().forward(input)
        return super().forward(input[:, :self.in_channels]) + input[:, self.in_channels:]


def _id_processor(attn: Attention, num_id_tokens: int) -> IDAttnProcessor:
    to_k, to_v = attn.to_k, attn.to_v
    processor = IDAttnProcessor(to_k.out_features, to_k.in_features, num_id_tokens,
                                device=to_k.weight.device, dtype=to_k.weight.dtype)
    if to_k.weight.device.type != "meta":
        with torch.no_grad():
            processor.id_to_k.weight.copy_(to_k.weight)
            processor.id_to_v.weight.copy_(to_v.weight)
    return processor
