"""Model core: the architecture matches the release (keys, shapes, counts) and the spec's numeric facts."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import pytest
import torch
from diffusers.models.attention_processor import Attention

from animator_cli.models.face_encoder import FaceEncoder, PerceiverAttention
from animator_cli.models.id_adapter import (
    IDAttnProcessor,
    SpatialAttnProcessor,
    TemporalAttnProcessor,
    match_statistics,
)
from animator_cli.models.manifest import full_size_modules
from animator_cli.models.pose_net import PoseNet
from animator_cli.models.unet import AnimatorUNet
from animator_cli.weights.tiny.svd import UNET_CONFIG

SPEC_KEYS = Path(__file__).parent / "data" / "checkpoint-keys.tsv"  # copy of the spec's list




def _rows(text: str) -> set[tuple[str, ...]]:
    return {tuple(line.split("\t")) for line in text.splitlines() if line and not line.startswith("#")}


def test_manifest_command_equals_the_released_checkpoint_keys(cli) -> None:
    result = cli("weights", "manifest")
    assert result.exit_code == 0, result.stderr
    expected = SPEC_KEYS.read_text()
    assert _rows(result.stdout) == _rows(expected)
    assert len(_rows(result.stdout)) == 19 + 56 + 1460
    assert result.stdout.splitlines()[0] == [line for line in expected.splitlines() if "columns" in line][0]


def test_full_size_parameter_counts_and_processor_split() -> None:
    modules = full_size_modules()
    counts = {name: sum(t.numel() for t in m.state_dict().values()) for name, m in modules.items()}
    assert counts == {"pose_net.pth": 205_557, "face_encoder.pth": 57_183_232, "unet.pth": 1_550_182_122}
    unet = modules["unet.pth"]
    assert unet.processor_counts() == Counter(
        SpatialAttnProcessor=16, IDAttnProcessor=16, TemporalAttnProcessor=32)
    id_processors = {name: p for name, p in unet.attn_processors.items() if isinstance(p, IDAttnProcessor)}
    assert all(".transformer_blocks.0.attn2" in name for name in id_processors)
    assert Counter(p.id_to_k.out_features for p in id_processors.values()) == Counter({320: 5, 640: 5, 1280: 6})
    adapter = sum(t.numel() for k, t in unet.state_dict().items() if ".processor.id_to_" in k)
    assert adapter == 25_559_040


def test_pose_net_is_zero_at_init_and_downsamples_by_8() -> None:
    torch.manual_seed(0)
    pose_net = PoseNet()
    assert len(pose_net.state_dict()) == 19 and pose_net.scale.item() == 2.0
    with torch.no_grad():
        out = pose_net(torch.rand(1, 2, 3, 1024, 576) * 2 - 1)  # (B, F, 3, H, W), W576×H1024
        assert out.shape == (2, 320, 128, 72)
        assert torch.count_nonzero(out) == 0
        torch.nn.init.normal_(pose_net.final_proj.weight)
        out = pose_net(torch.rand(2, 3, 64, 64) * 2 - 1)
    assert out.shape == (2, 320, 8, 8) and out.abs().sum() > 0


def test_face_encoder_gives_four_tokens_and_is_zero_at_init() -> None:
    torch.manual_seed(0)
    encoder = FaceEncoder()
    id_embeds, clip = torch.randn(2, 512) * 20, torch.randn(2, 1, 1024)
    with torch.no_grad():
        tokens = encoder(id_embeds, clip)
        assert tokens.shape == (2, 4, 1024)
        assert torch.count_nonzero(tokens) == 0  # proj_out is zero, norm_out(0) = 0
        torch.nn.init.normal_(encoder.fusion_model.proj_out.weight, std=0.02)
        tokens = encoder(id_embeds, clip)
        assert torch.equal(tokens, encoder(id_embeds, clip[:, 0]))  # (B, 1024) clip embeds accepted too
    assert tokens.abs().sum() > 0
    assert not torch.allclose(tokens[0], tokens[1])


def test_perceiver_attention_matches_the_reference_formula() -> None:
    torch.manual_seed(0)
    attention = PerceiverAttention(dim=128, dim_head=64, heads=2)
    context, latents = torch.randn(3, 1, 128), torch.randn(3, 4, 128)
    with torch.no_grad():
        # reference: q and k each scaled by dim_head^-1/4, softmax in float32, keys = [context; latents]
        x, lat = attention.norm1(context), attention.norm2(latents)
        q = attention.to_q(lat).view(3, 4, 2, 64).transpose(1, 2)
        k, v = attention.to_kv(torch.cat([x, lat], 1)).chunk(2, -1)
        k, v = (t.view(3, 5, 2, 64).transpose(1, 2) for t in (k, v))
        scale = 1 / math.sqrt(math.sqrt(64))
        weights = ((q * scale) @ (k * scale).transpose(-2, -1)).float().softmax(-1)
        expected = attention.to_out((weights @ v).transpose(1, 2).reshape(3, 4, 128))
        assert torch.allclose(attention(context, latents), expected, atol=1e-5)


def _attention(query_dim: int = 8, context_dim: int = 6) -> Attention:
    torch.manual_seed(0)
    attn = Attention(query_dim=query_dim, cross_attention_dim=context_dim, heads=2, dim_head=4, out_bias=True)
    torch.nn.init.normal_(attn.to_out[0].bias)
    return attn


def test_match_statistics_on_hand_computed_tensors() -> None:
    source = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])  # mean 2.5, unbiased std sqrt(5/3)
    target = torch.tensor([[[10.0, 10.0], [14.0, 14.0]]])  # mean 12, unbiased std sqrt(16/3)
    aligned = match_statistics(source, target, eps=0.0)
    expected = (source - 2.5) * math.sqrt(16 / 3) / math.sqrt(5 / 3) + 12
    assert torch.allclose(aligned, expected)
    assert torch.allclose(aligned.mean(), torch.tensor(12.0)) and torch.allclose(aligned.std(), target.std())
    # statistics are per sample: a second sample with other statistics does not change the first one
    both = match_statistics(torch.cat([source, source * 7]), torch.cat([target, -target]), eps=0.0)
    assert torch.allclose(both[0], expected)


def test_id_processor_aligns_the_identity_branch_to_the_clip_branch() -> None:
    attn = _attention()
    processor = IDAttnProcessor(hidden_size=8, cross_attention_dim=6, num_tokens=4)
    attn.set_processor(processor)
    assert "processor.id_to_k.weight" in attn.state_dict()  # registered as a submodule: released key names
    x, clip, ids = torch.randn(3, 5, 8), torch.randn(3, 1, 6), torch.randn(3, 4, 6)
    with torch.no_grad():
        out = attn(x, encoder_hidden_states=torch.cat([clip, ids], 1))
        # hand computation: one CLIP key, so the CLIP branch is to_v(clip) at every query
        h = attn.to_v(clip).expand(3, 5, 8)
        q = attn.to_q(x).view(3, 5, 2, 4).transpose(1, 2)
        k = processor.id_to_k(ids).view(3, 4, 2, 4).transpose(1, 2)
        v = processor.id_to_v(ids).view(3, 4, 2, 4).transpose(1, 2)
        i = ((q @ k.transpose(-2, -1)) / 2).softmax(-1).matmul(v).transpose(1, 2).reshape(3, 5, 8)
        mu_h, sd_h = h.mean((1, 2), keepdim=True), h.std((1, 2), keepdim=True)
        mu_i, sd_i = i.mean((1, 2), keepdim=True), i.std((1, 2), keepdim=True)
        expected = attn.to_out[0](h + (i - mu_i) * sd_h / (sd_i + 1e-5) + mu_h)
        assert torch.allclose(out, expected, atol=1e-5)

        processor.scale = 0.0  # identity strength 0: plain CLIP cross-attention
        assert torch.allclose(attn(x, encoder_hidden_states=torch.cat([clip, ids], 1)), attn.to_out[0](h), atol=1e-6)
        processor.scale = 1.0

        # a zero CLIP token zeroes h, so its statistics are 0 and the output is the to_out bias, whatever the ids
        zero = attn(x, encoder_hidden_states=torch.cat([torch.zeros_like(clip), ids * 100], 1))
        assert torch.allclose(zero, attn.to_out[0].bias.expand(3, 5, 8), atol=1e-5)


def test_id_processor_without_context_is_self_attention_and_rejects_a_short_context() -> None:
    """Reference bug fixed: a call without context crashed before the None check."""
    attn = _attention(query_dim=8, context_dim=8)
    attn.set_processor(IDAttnProcessor(hidden_size=8, cross_attention_dim=8))
    x = torch.randn(2, 5, 8)
    with torch.no_grad():
        own = attn(x)
        attn.set_processor(SpatialAttnProcessor())
        assert torch.allclose(own, attn(x))
        q, k, v = (layer(x).view(2, 5, 2, 4).transpose(1, 2) for layer in (attn.to_q, attn.to_k, attn.to_v))
        plain = ((q @ k.transpose(-2, -1)) / 2).softmax(-1).matmul(v).transpose(1, 2).reshape(2, 5, 8)
        assert torch.allclose(own, attn.to_out[0](plain), atol=1e-5)
        attn.set_processor(IDAttnProcessor(hidden_size=8, cross_attention_dim=8))
        with pytest.raises(ValueError, match="CLIP token"):
            attn(x, encoder_hidden_states=torch.randn(2, 4, 8))


def test_temporal_processor_attends_to_the_clip_token_only() -> None:
    attn = _attention()
    x, clip, ids = torch.randn(3, 5, 8), torch.randn(3, 1, 6), torch.randn(3, 4, 6)
    with torch.no_grad():
        attn.set_processor(TemporalAttnProcessor(num_id_tokens=4))
        temporal = attn(x, encoder_hidden_states=torch.cat([clip, ids], 1))
        assert torch.allclose(temporal, attn(x, encoder_hidden_states=torch.cat([clip, -ids], 1)))
        attn.set_processor(SpatialAttnProcessor())
        assert torch.allclose(temporal, attn(x, encoder_hidden_states=clip))


@pytest.fixture(scope="module")
def tiny_unet() -> AnimatorUNet:
    torch.manual_seed(0)
    unet = AnimatorUNet(**UNET_CONFIG)
    unet.install_processors()
    with torch.no_grad():
        for name, param in unet.named_parameters():
            if ".processor.id_to_" in name:
                param.add_(torch.randn_like(param) * 0.1)
    return unet.eval()


def _unet_inputs(seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    sample = torch.randn(2, 3, 8, 8, 8, generator=g)
    context = torch.randn(2, 5, UNET_CONFIG["cross_attention_dim"], generator=g)
    return sample, torch.tensor(0.5), context, torch.tensor([[6.0, 127.0, 0.02]] * 2)


def test_id_processors_start_as_copies_of_the_clip_projections() -> None:
    torch.manual_seed(0)
    unet = AnimatorUNet(**UNET_CONFIG)
    unet.install_processors()
    attn = unet.down_blocks[0].attentions[0].transformer_blocks[0].attn2
    assert torch.equal(attn.processor.id_to_k.weight, attn.to_k.weight)
    assert torch.equal(attn.processor.id_to_v.weight, attn.to_v.weight)


def test_unet_adds_pose_latents_after_conv_in(tiny_unet: AnimatorUNet) -> None:
    sample, t, context, time_ids = _unet_inputs()
    offset = torch.randn(UNET_CONFIG["block_out_channels"][0])
    pose = offset.view(1, -1, 1, 1).expand(2 * 3, -1, 8, 8)  # (B·F, C0, h, w), constant per channel
    with torch.no_grad():
        plain = tiny_unet(sample, t, context, time_ids)
        posed = tiny_unet(sample, t, context, time_ids, pose_latents=pose)
        posed_5d = tiny_unet(sample, t, context, time_ids, pose_latents=pose.reshape(2, 3, -1, 8, 8))
        assert torch.equal(tiny_unet(sample, t, context, time_ids), plain)  # the hook is gone after the call
        bias = tiny_unet.conv_in.bias.clone()
        tiny_unet.conv_in.bias += offset  # the same shift folded into conv_in's bias
        try:
            folded = tiny_unet(sample, t, context, time_ids)
        finally:
            tiny_unet.conv_in.bias.copy_(bias)
    assert plain.shape == (2, 3, 4, 8, 8)
    assert not torch.allclose(plain, posed)
    assert torch.allclose(posed, folded, atol=1e-4) and torch.equal(posed, posed_5d)


def test_face_tokens_reach_the_unet_only_through_the_id_adapters(tiny_unet: AnimatorUNet) -> None:
    sample, t, context, time_ids = _unet_inputs()
    other = context.clone()
    other[:, 1:] = torch.randn_like(other[:, 1:])
    with torch.no_grad():
        assert not torch.allclose(tiny_unet(sample, t, context, time_ids), tiny_unet(sample, t, other, time_ids))
        tiny_unet.set_id_scale(0.0)
        try:  # identity strength 0: the temporal layers must not see the face tokens either
            assert torch.equal(tiny_unet(sample, t, context, time_ids), tiny_unet(sample, t, other, time_ids))
        finally:
            tiny_unet.set_id_scale(1.0)


def test_training_path_with_gradient_checkpointing_reaches_adapters_and_pose() -> None:
    torch.manual_seed(0)
    unet = AnimatorUNet(**UNET_CONFIG)
    unet.install_processors()
    unet.train()
    unet.enable_gradient_checkpointing()
    sample, t, context, time_ids = _unet_inputs()
    pose = torch.randn(2 * 3, UNET_CONFIG["block_out_channels"][0], 8, 8, requires_grad=True)
    unet(sample, t, context, time_ids, pose_latents=pose).square().mean().backward()
    adapter = unet.up_blocks[3].attentions[2].transformer_blocks[0].attn2.processor
    assert adapter.id_to_k.weight.grad.abs().sum() > 0 and adapter.id_to_v.weight.grad.abs().sum() > 0
    assert pose.grad.abs().sum() > 0
