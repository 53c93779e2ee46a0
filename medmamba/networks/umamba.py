"""U-Mamba (Ma, Li, Wang 2024): nnU-Net residual U-Nets with Mamba layers, Bot and Enc variants.

Facts from U-Mamba (arXiv 2401.04722) and its code (bowang-lab/U-Mamba ``UMamba{Bot,Enc}_{2d,3d}.py``):

- Encoder: a stem (projected residual block in -> f0 at full resolution + ``n - 1`` identity blocks),
  then per stage one projected residual block carrying the stride + ``n_blocks - 1`` identity blocks.
  U-Mamba thins the deep half: stages ``s >= ceil(n_stages / 2)`` get 1 block, and decoder levels
  ``j >= ceil((n_stages - 1) / 2 + 0.5)`` (j = 0 deepest) get 1 block.
- Decoder: nearest upsampling x stride then 1x1 conv, concat skip, residual stage (2C -> C),
  1x1 heads per level (deep supervision).
- MambaLayer: flatten to raster tokens ``(B, L, C)`` -> LayerNorm -> Mamba (d_state 16, d_conv 4,
  expand 2) -> reshape; the output REPLACES the feature (no residual); run in fp32 with autocast off
  (U-Mamba's fix for NaN losses, bowang-lab/U-Mamba#8).
- Bot: one MambaLayer on the bottleneck feature. Enc: a MambaLayer after every encoder stage in 3D;
  in 2D on alternating stages chosen so that the last stage always has one.

Deviations (documented on purpose): U-Mamba's "channel-token" mode (tokens = channels when a
stage's spatial size is at most its channel count) depends on a patch size fixed at construction;
we always use spatial tokens so any input size divisible by the strides works. UMambaEnc_2d's last
decoder level skips the full-resolution skip connection (a code quirk); ours concatenates it like
every other level. ``routes`` generalises the single raster route: ``"raster"`` (U-Mamba) and
``"bidirectional"`` (+ the reversed route, Vim's bimamba v2) use the Mamba mixer of
:mod:`medmamba.networks.blocks.ssm`; any other route set or list of route names (e.g. ``"tom"``,
``"cross2d"``, ``["raster", "snake"]``) uses :class:`~medmamba.networks.blocks.mamba_tokens.RouteMamba`,
the same Mamba block with one causal conv + projections per route (proved equal to the former for
raster / bidirectional in tests/test_networks_conv.py).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from medmamba.errors import NetworkError
from medmamba.networks.blocks.conv import (
    BASE_FEATURES,
    IntOrSeq,
    ResidualStage,
    UNetDecoder,
    check_input_size,
    he_init_,
    per_stage,
    resolve_topology,
    select_output,
)
from medmamba.networks.registry import NetworkCapabilities, SSMSettings, register_network
from medmamba.networks.blocks.mamba_tokens import RouteMamba
from medmamba.networks.blocks.ssm import MambaMixer, build_mixer

# nnU-Net topology from the planner, InstanceNorm (U-Mamba UMambaBot_3d.py); one raster Mamba route,
# d_state 16, d_conv 4, expand 2 (UMambaBot_3d.py); RouteMamba/MambaMixer take route names only.
_CAPABILITIES = NetworkCapabilities(
    dims=(2, 3), topology="adaptive", norm="instance",
    ssm=SSMSettings(routes={2: "raster", 3: "raster"}, d_state=16, rotatable=False,
                    kwargs=("routes", "d_state", "d_conv", "expand")),
    twin_mixers=("gated_cnn", "none"))


class UMambaLayer(nn.Module):
    """U-Mamba's MambaLayer: ``(B, C, *S) -> (B, C, *S)``, output replaces the input feature.

    ``mixer="ssm"``: LayerNorm then a Mamba mixer on raster tokens (``routes="raster"``: plain Mamba,
    one causal route, as U-Mamba; ``"bidirectional"``: + the reversed route with its own conv and
    projections, Vim's bimamba v2; any other route spec: one Mamba route per route name).
    ``mixer="gated_cnn"``: LayerNorm then MambaOut's gated-CNN mixer (the no-SSM ablation).
    ``mixer="none"``: the Mamba removed, the LayerNorm kept: since U-Mamba's layer has no residual,
    the layer then passes on LN(x) (the residual conv stages around it are untouched).
    Runs in float32 with autocast disabled, returns the input dtype.
    """

    def __init__(self, spatial_dims: int, channels: int, routes: str | Sequence[str] = "raster",
                 mixer: str = "ssm", d_state: int = 16, d_conv: int = 4, expand: int = 2,
                 backend: str = "auto") -> None:
        super().__init__()
        # U-Mamba uses nn.LayerNorm's default eps (1e-5), not VMamba's 1e-6.
        self.norm = nn.LayerNorm(channels)
        self.mixer_kind = mixer
        self.needs_shape = False  # RouteMamba takes the grid shape, MambaMixer does not
        if mixer == "ssm":
            self.mixer: nn.Module
            if routes in ("raster", "bidirectional"):
                self.mixer = MambaMixer(channels, d_state=d_state, d_conv=d_conv, expand=expand,
                                        bidirectional=routes == "bidirectional", backend=backend)
            else:
                self.mixer = RouteMamba(channels, spatial_dims, routes, d_state, d_conv, expand, backend=backend)
                self.needs_shape = True
        elif mixer in ("gated_cnn", "none"):
            self.mixer = build_mixer(mixer, channels, spatial_dims)
        else:
            raise NetworkError(f"mixer must be 'ssm', 'gated_cnn' or 'none', got {mixer!r}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        with torch.autocast(device_type=x.device.type, enabled=False):
            h = x.float().movedim(1, -1)                 # (B, *S, C) channel-last
            h = self.norm(h)
            if self.mixer_kind == "ssm":
                spatial = h.shape[1:-1]
                tokens = h.reshape(h.shape[0], -1, h.shape[-1])
                tokens = self.mixer(tokens, spatial) if self.needs_shape else self.mixer(tokens)
                h = tokens.reshape(h.shape)
            else:
                h = self.mixer(h)
            out = h.movedim(-1, 1).contiguous()
        return out.to(dtype)


def _enc_mamba_stages(spatial_dims: int, n_stages: int) -> tuple[int, ...]:
    """UMambaEnc placement: every stage in 3D; in 2D stages with ``(s % 2) xor (n % 2)`` (UMambaEnc_2d.py)."""
    if spatial_dims == 3:
        return tuple(range(n_stages))
    return tuple(s for s in range(n_stages) if bool(s % 2) ^ bool(n_stages % 2))


class UMamba(nn.Module):
    """U-Mamba on an nnU-Net residual U-Net; ``variant`` ``"bot"`` or ``"enc"``.

    Args:
        spatial_dims, in_channels, num_classes, n_stages, features_per_stage, kernel_sizes,
        strides, n_conv_per_stage, n_conv_per_stage_decoder, base_features, max_features,
        deep_supervision: as :class:`medmamba.networks.plain_unet.PlainConvUNet`
            (``n_conv_per_stage`` counts residual blocks, as in U-Mamba).
        mamba_stages: encoder stages followed by a MambaLayer; default per variant (see module doc).
        routes: ``"raster"`` (U-Mamba), ``"bidirectional"``, or any route set / list of route names
            of :mod:`medmamba.kernels.routes` (one Mamba route each).
        mixer: ``"ssm"``, ``"gated_cnn"`` (MambaOut ablation: the Mamba layers become gated CNNs) or
            ``"none"`` (each Mamba layer reduced to its LayerNorm, see :class:`UMambaLayer`).
        d_state, d_conv, expand: Mamba hyper-parameters (16, 4, 2).
        backend: scan backend (``auto``/``reference``/``torch``/``triton``).

    forward: ``x (B, in_channels, *S)``, each axis a multiple of the stride product ->
    logits ``(B, num_classes, *S)`` (a list of ``n_stages - 1`` maps, full resolution first,
    while training with deep supervision).
    """

    variant = "bot"

    def __init__(self, spatial_dims: int = 3, in_channels: int = 1, num_classes: int = 2,
                 n_stages: int | None = None, features_per_stage: Sequence[int] | int | None = None,
                 kernel_sizes: Sequence[IntOrSeq] | int | None = None,
                 strides: Sequence[IntOrSeq] | int | None = None,
                 n_conv_per_stage: int | Sequence[int] = 2,
                 n_conv_per_stage_decoder: int | Sequence[int] = 2,
                 base_features: int = BASE_FEATURES, max_features: int | None = None,
                 deep_supervision: bool = True, mamba_stages: Sequence[int] | None = None,
                 routes: str | Sequence[str] = "raster", mixer: str = "ssm", d_state: int = 16, d_conv: int = 4,
                 expand: int = 2, backend: str = "auto") -> None:
        super().__init__()
        self.spatial_dims = spatial_dims
        self.deep_supervision = deep_supervision
        self.topology = t = resolve_topology(spatial_dims, n_stages, features_per_stage, kernel_sizes,
                                             strides, base_features, max_features)
        n = t.n_stages
        # every input axis must be a multiple of this (product of the strides)
        self.input_divisor = t.divisor()
        blocks = list(per_stage(n_conv_per_stage, n, "n_conv_per_stage"))
        dec_blocks = list(per_stage(n_conv_per_stage_decoder, n - 1, "n_conv_per_stage_decoder"))
        for s in range(math.ceil(n / 2), n):            # U-Mamba thins the deep encoder half
            blocks[s] = 1
        for j in range(math.ceil((n - 1) / 2 + 0.5), n - 1):  # ... and the high-res decoder levels
            dec_blocks[j] = 1
        f, k = t.features_per_stage, t.kernel_sizes
        self.stem = ResidualStage(spatial_dims, in_channels, f[0], blocks[0], k[0], 1)
        self.encoder = nn.ModuleList(
            ResidualStage(spatial_dims, f[max(s - 1, 0)], f[s], blocks[s], k[s], t.strides[s]) for s in range(n))
        if mamba_stages is None:
            mamba_stages = (n - 1,) if self.variant == "bot" else _enc_mamba_stages(spatial_dims, n)
        self.mamba_stages = tuple(sorted({int(s) % n for s in mamba_stages}))
        self.mamba_layers = nn.ModuleDict({
            str(s): UMambaLayer(spatial_dims, f[s], routes, mixer, d_state, d_conv, expand, backend)
            for s in self.mamba_stages})
        self.decoder = UNetDecoder(t, num_classes, dec_blocks, block="residual", upsample="nearest")
        he_init_(self)

    def deep_supervision_scales(self) -> list[tuple[float, ...]]:
        """Per-axis scale of each deep-supervision output vs the input, highest resolution first."""
        return self.topology.deep_supervision_scales()

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        check_input_size(x, self.spatial_dims, self.input_divisor, f"umamba_{self.variant}")
        x = self.stem(x)
        skips = []
        for s, stage in enumerate(self.encoder):
            x = stage(x)
            if str(s) in self.mamba_layers:
                x = self.mamba_layers[str(s)](x)
            skips.append(x)
        want_all = self.deep_supervision and self.training
        return select_output(self.decoder(skips, all_levels=want_all), self.deep_supervision, self.training)


_DEFAULTS = {"spatial_dims": 3, "in_channels": 1, "num_classes": 2, "deep_supervision": True,
             "routes": "raster", "mixer": "ssm"}


@register_network(
    "umamba_bot",
    paper="U-Mamba: Enhancing Long-range Dependency for Biomedical Image Segmentation (U-Mamba_Bot)",
    arxiv="2401.04722",
    aliases=("U-Mamba", "U-Mamba_Bot"),
    capabilities=_CAPABILITIES,
    default_config=dict(_DEFAULTS),
    description="nnU-Net residual U-Net with one Mamba layer (raster scan) at the bottleneck.",
)
class UMambaBot(UMamba):
    variant = "bot"


@register_network(
    "umamba_enc",
    paper="U-Mamba: Enhancing Long-range Dependency for Biomedical Image Segmentation (U-Mamba_Enc)",
    arxiv="2401.04722",
    aliases=("U-Mamba_Enc",),
    capabilities=_CAPABILITIES,
    default_config=dict(_DEFAULTS),
    description="nnU-Net residual U-Net with a Mamba layer after every encoder stage "
                "(alternate stages in 2D).",
)
class UMambaEnc(UMamba):
    variant = "enc"
