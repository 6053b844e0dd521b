"""Diff2Lip's audio-conditioned UNet as a diffusers model.

The network is a guided-diffusion UNet (Dhariwal & Nichol, 2021) working on 128x128 face crops, with
an audio encoder over one 80x16 mel window whose pooled output is added to the timestep embedding
(Mukhopadhyay et al., "Diff2Lip", WACV 2024). Module names follow the original checkpoint's key
layout (``input_blocks.3.0.in_layers.2.weight`` ...), so converting the released weights is a checked
one-to-one copy (see ``lipsync.convert``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils import BaseOutput
from torch import nn


@dataclass
class Diff2LipUNetOutput(BaseOutput):
    """``sample``: (N, 6, H, W); channels 0:3 are the noise prediction, 3:6 the learned-variance logits.
    ``deep_features``: with ``deepcache_depth`` set on a full call, the decoder features that enter the
    last ``deepcache_depth`` output blocks (reused by the next cached calls); else None."""

    sample: torch.Tensor
    deep_features: Optional[torch.Tensor] = None


# ----------------------------------------------------------------------------------------------------
# Building blocks
# ----------------------------------------------------------------------------------------------------


class GroupNorm32(nn.GroupNorm):
    """GroupNorm with float32 statistics for every input dtype.

    fp32 input: the plain fp32 kernel (paper-exact). fp16 input: the original's round trip through an
    fp32 copy. bf16 input: the native kernel, which already accumulates mean and variance in fp32, so
    no fp32 copy of the whole activation is made (bf16 has fp32's exponent range, nothing overflows).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.bfloat16:  # the kernel takes fp32 or bf16 affine parameters
            return F.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)
        out = F.group_norm(x.float(), self.num_groups, self.weight.float(), self.bias.float(), self.eps)
        return out.to(x.dtype)


def norm32(channels: int) -> GroupNorm32:
    return GroupNorm32(32, channels)


def timestep_embedding(timesteps: torch.Tensor, dim: int, max_period: int = 10000) -> torch.Tensor:
    """Sinusoidal embedding ``[cos(t f), sin(t f)]`` (cos first), f = exp(-ln(max_period) k / half).

    timesteps: (N,) int or float; returns (N, dim) float32.
    """
    half = dim // 2
    freqs = torch.exp(
        -math.log(max_period) * torch.arange(0, half, dtype=torch.float32, device=timesteps.device) / half
    )
    args = timesteps[:, None].float() * freqs[None]
    embedding = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        embedding = torch.cat([embedding, torch.zeros_like(embedding[:, :1])], dim=-1)
    return embedding


class EmbedSequential(nn.Sequential):
    """A sequential container that hands the embedding only to the layers that take one (ResBlocks)."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        for layer in self:
            x = layer(x, emb) if isinstance(layer, ResBlock) else layer(x)
        return x


class Resample(nn.Module):
    """Nearest-neighbour x2 upsampling, or average-pool downsampling with a (possibly anisotropic) stride."""

    def __init__(self, mode: str, stride: Union[int, Tuple[int, int]] = 2):
        super().__init__()
        self.mode = mode
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "up":
            return F.interpolate(x, scale_factor=2, mode="nearest")
        return F.avg_pool2d(x, kernel_size=self.stride, stride=self.stride)


class ResBlock(nn.Module):
    """Residual block: GN-SiLU-conv, + Linear(SiLU(emb)), GN-SiLU-Dropout-conv, skip (identity or 1x1).

    With ``resample`` ("up"/"down") both branches are resampled between the first norm and conv.
    """

    def __init__(
        self,
        channels: int,
        emb_channels: int,
        out_channels: int,
        dropout: float = 0.0,
        use_scale_shift_norm: bool = False,
        resample: Optional[str] = None,
        stride: Union[int, Tuple[int, int]] = 2,
    ):
        super().__init__()
        self.use_scale_shift_norm = use_scale_shift_norm
        self.in_layers = nn.Sequential(norm32(channels), nn.SiLU(), nn.Conv2d(channels, out_channels, 3, padding=1))
        self.resample = Resample(resample, stride) if resample else None
        self.emb_layers = nn.Sequential(
            nn.SiLU(), nn.Linear(emb_channels, 2 * out_channels if use_scale_shift_norm else out_channels)
        )
        self.out_layers = nn.Sequential(
            norm32(out_channels),
            nn.SiLU(),
            nn.Dropout(p=dropout),
            nn.Conv2d(out_channels, out_channels, 3, padding=1),
        )
        if out_channels == channels:
            self.skip_connection = nn.Identity()
        else:
            self.skip_connection = nn.Conv2d(channels, out_channels, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        if self.resample is not None:
            h = self.in_layers[:-1](x)
            h = self.resample(h)
            x = self.resample(x)
            h = self.in_layers[-1](h)
        else:
            h = self.in_layers(x)
        emb_out = self.emb_layers(emb).to(h.dtype)[..., None, None]  # (N, C or 2C, 1, 1)
        if self.use_scale_shift_norm:
            out_norm, out_rest = self.out_layers[0], self.out_layers[1:]
            scale, shift = emb_out.chunk(2, dim=1)
            h = out_rest(out_norm(h) * (1 + scale) + shift)
        else:
            h = self.out_layers(h + emb_out)
        return self.skip_connection(x) + h


class AttentionBlock(nn.Module):
    """Spatial self-attention with guided-diffusion's legacy head layout (heads split before q/k/v).

    qkv and proj_out are 1x1 Conv1d layers over the flattened (N, C, H*W) feature map (their weights are
    applied as linear maps over (N, T, C) tokens; the output keeps the input's memory layout).
    """

    def __init__(self, channels: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.norm = norm32(channels)
        self.qkv = nn.Conv1d(channels, channels * 3, 1)
        self.proj_out = nn.Conv1d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, height, width = x.shape
        # work on tokens (N, T, C): a free view of a channels_last map, and 4-D q/k/v reach the fused kernel
        tokens = self.norm(x).permute(0, 2, 3, 1).reshape(n, height * width, c)  # (N, T, C)
        qkv = F.linear(tokens, self.qkv.weight[:, :, 0], self.qkv.bias)  # (N, T, 3C), the 1x1 Conv1d
        ch = c // self.num_heads
        # legacy order: channels are [head][q|k|v][ch]; q, k, v each (N, heads, T, ch)
        q, k, v = qkv.reshape(n, height * width, self.num_heads, 3 * ch).transpose(1, 2).split(ch, dim=-1)
        # scaled_dot_product_attention scales q.k by 1/sqrt(ch), the same as the original's ch^-1/4 on each
        h = F.scaled_dot_product_attention(q, k, v)  # (N, heads, T, ch)
        h = F.linear(h.transpose(1, 2).reshape(n, height * width, c), self.proj_out.weight[:, :, 0], self.proj_out.bias)
        out = x.permute(0, 2, 3, 1).reshape(n, height * width, c) + h  # (N, T, C)
        out = out.reshape(n, height, width, c).permute(0, 3, 1, 2)  # (N, C, H, W), channels_last strides
        channels_last = x.is_contiguous(memory_format=torch.channels_last)
        return out.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


class AudioEncoder(nn.Module):
    """Encodes one mel window (N, 80, 16) into a (N, out_channels, 8, 8) feature map.

    Conv1d over time (mel bins are channels) -> GN -> SiLU; the 64 conv channels become a spatial height
    axis, giving (N, 1, 64, 16); then a small residual encoder whose down-sampling blocks use the
    strides in ``down_strides``. Its ResBlocks receive a constant t = 0 embedding through their own MLP.
    """

    def __init__(
        self,
        audio_dim: int = 80,
        init_spatial_dim: int = 64,
        model_channels: int = 32,
        channel_mult: Sequence[int] = (1, 2, 3, 4),
        num_res_blocks: int = 2,
        out_channels: int = 128,
        time_embed_dim: int = 32,
        down_strides: Sequence[Sequence[int]] = ((2, 1), (2, 1), (2, 2)),
        dropout: float = 0.0,
    ):
        super().__init__()
        self.time_embed_dim = time_embed_dim
        self.time_embed = nn.Sequential(
            nn.Linear(time_embed_dim, time_embed_dim), nn.SiLU(), nn.Linear(time_embed_dim, time_embed_dim)
        )
        self.input_block = nn.Sequential(
            nn.Conv1d(audio_dim, init_spatial_dim, 3, padding=1), norm32(init_spatial_dim), nn.SiLU()
        )
        blocks = [nn.Conv2d(1, model_channels, 3, padding=1)]
        ch = model_channels
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                blocks.append(EmbedSequential(ResBlock(ch, time_embed_dim, mult * model_channels, dropout)))
                ch = mult * model_channels
            if level != len(channel_mult) - 1:
                stride = tuple(down_strides[level])
                blocks.append(EmbedSequential(ResBlock(ch, time_embed_dim, ch, dropout, resample="down", stride=stride)))
        # the first block is a plain conv: wrap it so that every element takes (x, emb)
        self.encoder_blocks = nn.ModuleList([EmbedSequential(blocks[0]), *blocks[1:]])
        self.middle_block = EmbedSequential(ResBlock(ch, time_embed_dim, out_channels, dropout))

    def forward(self, mels: torch.Tensor) -> torch.Tensor:
        # mels: (N, 80, 16) -> (N, 64, 16) -> (N, 1, 64, 16)
        h = self.input_block(mels).unsqueeze(1)
        t0 = torch.zeros(mels.shape[0], device=mels.device)
        emb = self.time_embed(timestep_embedding(t0, self.time_embed_dim).to(self.time_embed[0].weight.dtype))
        for block in self.encoder_blocks:
            h = block(h, emb)
        return self.middle_block(h, emb)  # (N, 128, 8, 8)


# ----------------------------------------------------------------------------------------------------
# The UNet
# ----------------------------------------------------------------------------------------------------

# The null audio condition of audio dropout (training) and audio guidance (sampling): the mel window of silence.
# The mel front end (lipsync.media.audio) clips every window to [-4, 4]; digital silence is -4 in every bin.
# Silence, not zeros: it is an input every model already sees in real pauses, so guidance runs on any model
# (the paper's too), and "without the audio" reads as "a closed, resting mouth" that the guided sample is
# pushed away from, towards the speech.
NULL_AUDIO_VALUE = -4.0


def null_audio(n: int, device=None, dtype=None) -> torch.Tensor:
    """(n, 80, 16) mel windows of silence: the null condition of audio dropout and audio guidance."""
    return torch.full((n, 80, 16), NULL_AUDIO_VALUE, device=device, dtype=dtype)



class Diff2LipUNetModel(ModelMixin, ConfigMixin):
    """Diff2Lip's UNet: predicts noise (and variance logits) for the lower half of a face crop.

    Inputs at call time (all NCHW, images in [-1, 1]):
        sample:      (N, 3, H, W) noisy frame x_t
        timestep:    int / float, or (N,) tensor of original (un-respaced) timesteps
        cond_image:  (N, 3, H, W) masked frame: top half the image, bottom half noise
        mask:        (N, 1, H, W) 1 where the model generates (lower half), 0 elsewhere
        reference:   (N, 3, H, W) reference frame of the same person
        audio:       (N, 80, 16) mel window
    Output: ``Diff2LipUNetOutput.sample`` (N, 6, H, W).
    """

    _supports_gradient_checkpointing = False

    @register_to_config
    def __init__(
        self,
        image_size: int = 128,
        in_channels: int = 3,
        model_channels: int = 128,
        out_channels: int = 6,
        num_res_blocks: int = 2,
        attention_resolutions: Sequence[int] = (32, 16, 8),
        channel_mult: Sequence[int] = (1, 1, 2, 3, 4),
        dropout: float = 0.0,
        num_heads: int = 4,
        num_head_channels: int = 64,
        use_scale_shift_norm: bool = False,
        resblock_updown: bool = True,
        audio_dim: int = 80,
        audio_init_spatial_dim: int = 64,
        audio_model_channels: int = 32,
        audio_channel_mult: Sequence[int] = (1, 2, 3, 4),
        audio_num_res_blocks: int = 2,
        audio_out_channels: int = 128,
        audio_time_embed_dim: int = 32,
        audio_down_strides: Sequence[Sequence[int]] = ((2, 1), (2, 1), (2, 2)),
        audio_dropout: float = 0.0,
    ):
        super().__init__()
        # audio_dropout: the fraction of training samples whose audio was replaced by null_audio (recorded by the
        # trainer; the network ignores it). Above 0, audio guidance (Diff2LipPipeline audio_guidance_scale) has
        # a null condition the model was trained on.
        if not resblock_updown:
            raise ValueError("only resblock_updown=True (Diff2Lip's setting) is implemented")
        time_embed_dim = model_channels * 4
        attention_ds = {image_size // res for res in attention_resolutions}

        def heads(ch: int) -> int:
            return ch // num_head_channels if num_head_channels != -1 else num_heads

        def res(ch_in: int, ch_out: int, resample: Optional[str] = None) -> ResBlock:
            return ResBlock(ch_in, time_embed_dim, ch_out, dropout, use_scale_shift_norm, resample)

        # 1. timestep embedding
        self.time_embed = nn.Sequential(
            nn.Linear(model_channels, time_embed_dim), nn.SiLU(), nn.Linear(time_embed_dim, time_embed_dim)
        )

        # 2. encoder: noisy frame + masked frame + reference = 3 images
        ch = model_channels
        self.input_blocks = nn.ModuleList([EmbedSequential(nn.Conv2d(in_channels * 3, ch, 3, padding=1))])
        skip_channels = [ch]
        ds = 1
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                layers = [res(ch, mult * model_channels)]
                ch = mult * model_channels
                if ds in attention_ds:
                    layers.append(AttentionBlock(ch, heads(ch)))
                self.input_blocks.append(EmbedSequential(*layers))
                skip_channels.append(ch)
            if level != len(channel_mult) - 1:
                self.input_blocks.append(EmbedSequential(res(ch, ch, "down")))
                skip_channels.append(ch)
                ds *= 2

        # 3. middle
        self.middle_block = EmbedSequential(res(ch, ch), AttentionBlock(ch, heads(ch)), res(ch, ch))

        # 4. decoder: each block takes [h, skip] concatenated (h first)
        self.output_blocks = nn.ModuleList([])
        for level, mult in list(enumerate(channel_mult))[::-1]:
            for i in range(num_res_blocks + 1):
                layers = [res(ch + skip_channels.pop(), model_channels * mult)]
                ch = model_channels * mult
                if ds in attention_ds:
                    layers.append(AttentionBlock(ch, heads(ch)))
                if level and i == num_res_blocks:
                    layers.append(res(ch, ch, "up"))
                    ds //= 2
                self.output_blocks.append(EmbedSequential(*layers))

        # 5. head
        self.out = nn.Sequential(norm32(ch), nn.SiLU(), nn.Conv2d(ch, out_channels, 3, padding=1))

        # 6. audio conditioning, pooled and added to the timestep embedding
        self.audio_encoder = AudioEncoder(
            audio_dim,
            audio_init_spatial_dim,
            audio_model_channels,
            audio_channel_mult,
            audio_num_res_blocks,
            audio_out_channels,
            audio_time_embed_dim,
            audio_down_strides,
            dropout,
        )
        self.audio_encoder_to_style = nn.Sequential(
            norm32(audio_out_channels),
            nn.SiLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(audio_out_channels, time_embed_dim, 1),
        )

    def audio_style(self, audio: torch.Tensor) -> torch.Tensor:
        """The audio style vector added to the timestep embedding; it does not depend on t.

        audio: (N, 80, 16) mel windows. Returns (N, 4 * model_channels) in the model's dtype. Compute it
        once per frame batch and pass it as ``style=`` to every step (identical results to ``audio=``).
        """
        audio_features = self.audio_encoder(audio.to(self.dtype))  # (N, 128, 8, 8)
        return self.audio_encoder_to_style(audio_features).flatten(1)  # (N, 4C)

    def forward(
        self,
        sample: torch.Tensor,
        timestep: Union[torch.Tensor, float, int],
        cond_image: torch.Tensor,
        mask: torch.Tensor,
        reference: torch.Tensor,
        audio: Optional[torch.Tensor] = None,
        return_dict: bool = True,
        style: Optional[torch.Tensor] = None,
        deepcache_depth: Optional[int] = None,
        deep_features: Optional[torch.Tensor] = None,
    ) -> Union[Diff2LipUNetOutput, Tuple[torch.Tensor]]:
        """Predict noise and variance logits (see the class docstring for the inputs).

        style: (N, 4C) from ``audio_style`` instead of ``audio`` (the t-independent conditioning, computed once).
        deepcache_depth: DeepCache branch depth k (1..len(output_blocks)). With ``deep_features`` None:
            a full call that also returns the features entering the last k output blocks. With
            ``deep_features`` given: a cached call that runs only the first k input blocks and the last k
            output blocks, reusing the deep features of an earlier step (Ma et al., "DeepCache", 2023).
        """
        n = sample.shape[0]
        dtype = self.dtype

        # 1. timesteps -> (N,) embedding, plus the audio style vector
        timesteps = torch.as_tensor(timestep, device=sample.device)
        if timesteps.ndim == 0:
            timesteps = timesteps[None]
        timesteps = timesteps.expand(n)
        emb = self.time_embed(timestep_embedding(timesteps, self.config.model_channels).to(self.time_embed[0].weight.dtype))
        if style is None:
            if audio is None:
                raise ValueError("pass audio (N, 80, 16) mel windows or style from audio_style()")
            style = self.audio_style(audio)
        emb = emb + style.to(emb.dtype)

        # 2. the known upper half replaces x_t's, then [x_in, cond, ref] -> (N, 9, H, W)
        x_in = sample * mask + (1 - mask) * cond_image
        h = torch.cat([x_in, cond_image, reference], dim=1).to(dtype)
        if self.device.type == "cpu" and dtype == torch.bfloat16:
            h = h.contiguous(memory_format=torch.channels_last)  # oneDNN's fast layout for bf16 convs

        # 3. UNet (a cached DeepCache call skips the deep blocks)
        depth = len(self.output_blocks) if deepcache_depth is None else int(deepcache_depth)
        if not 1 <= depth <= len(self.output_blocks):
            raise ValueError(f"deepcache_depth must be 1..{len(self.output_blocks)}, got {deepcache_depth}")
        cached = deep_features is not None
        skips = []
        for block in self.input_blocks[:depth] if cached else self.input_blocks:
            h = block(h, emb)
            skips.append(h)
        if cached:
            h = deep_features
            skips = skips[:depth]
        else:
            h = self.middle_block(h, emb)
        first_shallow = len(self.output_blocks) - depth
        keep = None
        for i, block in enumerate(self.output_blocks):
            if i < first_shallow and cached:
                continue
            if i == first_shallow and deepcache_depth is not None and not cached:
                keep = h
            h = block(torch.cat([h, skips.pop()], dim=1), emb)
        out = self.out(h)  # (N, 6, H, W)

        if not return_dict:
            return (out,)
        return Diff2LipUNetOutput(sample=out, deep_features=keep)

    # ------------------------------------------------------------------------------------------------
    @classmethod
    def from_original_checkpoint(cls, path_or_state_dict, **config_overrides) -> "Diff2LipUNetModel":
        """Build a model from the original guided-diffusion-layout checkpoint (a ``.pt`` path or a dict).

        Every key and shape is checked; ``CheckpointMismatchError`` lists what is missing or unexpected.
        ``config_overrides`` set non-paper sizes, e.g. ``model_channels=32, num_res_blocks=1``.
        """
        from lipsync.checkpoints import load_checked_state_dict
        from lipsync.model.original import HINT, WHAT, original_state_dict

        state_dict = original_state_dict(path_or_state_dict)
        model = cls(**config_overrides)
        load_checked_state_dict(model, {k: v.float() for k, v in state_dict.items()}, what=WHAT, hint=HINT)
        return model.eval()
