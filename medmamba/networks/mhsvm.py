"""MHS-VM: Multi-Head Scan Vision Mamba (Ji, arXiv 2406.05992), 2D as published and 3D.

The VM-UNet skeleton (vmunet.py) with each block's SS2D replaced by ``VSSGate`` + the
Multi-Head Scan module (MHS-VM, arXiv 2406.05992; PixDeep/MHS-VM mhsm.py, scanutils.py):

    x, z = in_proj(x) (C → 2C, no expansion); x = SiLU(dwconv3(x))
    heads = split(Linear(x), heads × S), S = C // heads
    head h scans its sub-map along its pattern's 4 routes (C snake, X zigzag, S spiral, Z raster;
    each [r0, r0_rev, r1, r1_rev] — the ``mhs`` route set), one S6 per route (own x_proj/dt/A/D)
    route outputs fused by Scan Route Attention: s ⊙ ReLU(cv − t),
        s = Σ_k y_k, cv = std_k(y_k) / (mean_k(y_k − min_j y_j) + 1e-5)
    y = LN(C)(y_proj(LN(cat heads))) ⊙ SiLU(z)

In 3D the patterns are the ``mhs`` routes of medmamba.kernels.routes (3D snakes and rasters,
per-slice zigzag/spiral). Any input size works (routes are built per size, no fixed tables).
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from medmamba.errors import NetworkError
from medmamba.kernels.ops import multi_route_scan
from medmamba.kernels.routes import build_routes
from medmamba.networks.blocks.conv import conv_class
from medmamba.networks.blocks.route_attention import scan_route_attention
from medmamba.networks.blocks.ssm import a_log_init, build_mixer, init_dt_bias, route_projections
from medmamba.networks.registry import NetworkCapabilities, SSMSettings, register_network
from medmamba.networks.vmunet import VMUNet

__all__ = ["MultiHeadScanMixer", "MHSVM"]

ROUTES_PER_HEAD = 4  # [r0, r0_rev, r1, r1_rev] (MHS-VM mhsm.py ``ScanHead``)


class MultiHeadScanMixer(nn.Module):
    """VSSGate with the Multi-Head Scan module. ``forward(x: (B, *S, C)) -> (B, *S, C)``.

    Args:
        d_model: C. spatial_dims: 2 or 3. heads: 3 or 4 (paper 4; heads use patterns C, X, S, Z
            in that order). d_state: N (16). dt_rank: ``"auto"`` = ceil(S/16).
        sra_threshold: t of the route attention (MHS-VM configs: 0.5 for ISIC18, 0.0 for ISIC17,
            config_setting.py). Default 0.0: at init the routes' outputs differ by ~1e-8..1e-5 (the D·u skip
            dominates), so cv = std/(m + 1e-5) is tiny — median 0.1-0.3 at embed_dim 96 and
            ~0.001 at embed_dim 8 (our measurement, MHS-VM 2D, 64² / 19×13 input) — and t = 0.5
            switches off most (small widths: all) route outputs and their gradients.
        backend: scan backend.
    """

    def __init__(self, d_model: int, spatial_dims: int = 2, heads: int = 4, d_state: int = 16,
                 dt_rank: int | str = "auto", sra_threshold: float = 0.0, backend: str = "auto",
                 **_unused: Any) -> None:
        super().__init__()
        conv_class(spatial_dims)
        if not 1 <= heads <= 4:
            raise NetworkError(f"MHS-VM supports 1 to 4 heads (patterns C, X, S, Z), got {heads}")
        sub = d_model // heads
        if sub < 1:
            raise NetworkError(f"MHS-VM: {d_model} channels cannot be split into {heads} heads")
        rank = math.ceil(sub / 16) if dt_rank == "auto" else int(dt_rank)
        self.spatial_dims, self.heads, self.sub, self.rank, self.d_state = spatial_dims, heads, sub, rank, d_state
        self.threshold, self.backend = sra_threshold, backend
        self.in_proj = nn.Linear(d_model, 2 * d_model, bias=False)
        self.conv = conv_class(spatial_dims)(d_model, d_model, 3, padding=1, groups=d_model, bias=True)
        self.head_proj = nn.Linear(d_model, heads * sub, bias=False)
        K = ROUTES_PER_HEAD
        bound = rank ** -0.5
        self.x_proj_weight = nn.Parameter(
            torch.empty(heads, K, rank + 2 * d_state, sub).uniform_(-sub ** -0.5, sub ** -0.5))
        self.dt_projs_weight = nn.Parameter(torch.empty(heads, K, sub, rank).uniform_(-bound, bound))
        self.dt_projs_bias = nn.Parameter(init_dt_bias(heads * K, sub).view(heads, K, sub))
        self.A_logs = nn.Parameter(a_log_init(heads * K, sub, d_state).view(heads, K, sub, d_state))
        self.Ds = nn.Parameter(torch.ones(heads, K, sub))
        for p in (self.A_logs, self.Ds):
            p._no_weight_decay = True  # type: ignore[attr-defined]
        self.head_norm = nn.LayerNorm(heads * sub)
        self.y_proj = nn.Linear(heads * sub, d_model, bias=False)
        self.out_norm = nn.LayerNorm(d_model)
        self._route_cache: dict[tuple, torch.Tensor] = {}

    def _routes(self, spatial: Sequence[int], device: torch.device) -> tuple[torch.Tensor, ...]:
        """Each head's 4 ``mhs`` routes on ``spatial`` as a (4, L) tensor, cached per shape/device
        (the scan checks a route tensor's indices once, not per call)."""
        key = (tuple(spatial), str(device))
        if key not in self._route_cache:
            routes = build_routes("mhs", spatial, device=device)  # (16, L)
            self._route_cache[key] = routes.split(ROUTES_PER_HEAD)
        return self._route_cache[key]

    def _head(self, h: int, u: torch.Tensor, routes: torch.Tensor) -> torch.Tensor:
        """Head h on raster tokens u (B, L, S): its 4 route scans in one call, each route's output
        kept (SRA weighs them), fused by SRA → (B, L, S)."""
        delta, b_ssm, c_ssm = route_projections(u, self.x_proj_weight[h], self.dt_projs_weight[h])
        ys = multi_route_scan(
            u, delta, -torch.exp(self.A_logs[h].float()), b_ssm, c_ssm, D=self.Ds[h], z=None,
            delta_bias=self.dt_projs_bias[h], routes=routes, delta_softplus=True, backend=self.backend,
            sum_routes=False)                                            # (B, 4, L, S)
        return scan_route_attention(ys, self.threshold, dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, *spatial, channels = x.shape
        length = math.prod(spatial)
        x, z = self.in_proj(x).chunk(2, dim=-1)
        x = F.silu(self.conv(x.movedim(-1, 1)).movedim(1, -1))
        heads = self.head_proj(x).reshape(batch, length, self.heads, self.sub)
        routes = self._routes(spatial, x.device)
        y = torch.cat([self._head(h, heads[:, :, h].contiguous(), routes[h]) for h in range(self.heads)], -1)
        y = self.out_norm(self.y_proj(self.head_norm(y)))
        return (y * F.silu(z.reshape(batch, length, channels))).reshape(batch, *spatial, channels)


class MHSVM(VMUNet):
    """MHS-VM: VM-UNet layout with multi-head-scan mixers.

    Same arguments as :class:`~medmamba.networks.vmunet.VMUNet` plus ``heads`` (4) and
    ``sra_threshold`` (0.0, see :class:`MultiHeadScanMixer`); ``mixer`` is ``"mhs"`` (default),
    ``"ssm"`` (plain SS2D) or
    ``"gated_cnn"`` (MambaOut ablation) or ``"none"`` (mixer removed, as VMUNet's). Input/output as VMUNet.
    """

    def __init__(self, spatial_dims: int = 2, in_channels: int = 3, num_classes: int = 1,
                 heads: int = 4, sra_threshold: float = 0.0, mixer: str = "mhs", d_state: int = 16,
                 backend: str = "auto", routes: Any = None, **kwargs: Any) -> None:
        if mixer == "mhs":
            def factory(dim: int, layer_index: int) -> nn.Module:
                return MultiHeadScanMixer(dim, spatial_dims, heads=heads, d_state=d_state,
                                          sra_threshold=sra_threshold, backend=backend)
        else:
            def factory(dim: int, layer_index: int) -> nn.Module:
                return build_mixer(mixer, dim, spatial_dims, layer_index=layer_index,
                                   d_state=d_state, backend=backend, routes=routes)
        super().__init__(spatial_dims=spatial_dims, in_channels=in_channels, num_classes=num_classes,
                         d_state=d_state, backend=backend, mixer_factory=factory, **kwargs)


register_network(
    "mhsvm",
    paper="MHS-VM: Multi-Head Scanning in Parallel Subspaces for Vision Mamba",
    arxiv="2406.05992",
    aliases=("MHS-VM",),
    capabilities=NetworkCapabilities(
        dims=(2, 3),
        # VM-UNet's network (MHS-VM models/vmunet/vmamba.py): PatchEmbed s4 x 3 PatchMergings = 32.
        topology="fixed", input_divisor=32,
        norm="layer",
        # multi-head scan patterns (scanutils.py), N = 16 (mhsm.py); the heads' routes are fixed per head.
        ssm=SSMSettings(routes={2: "mhs", 3: "mhs"}, d_state=16, rotatable=False),
        twin_mixers=("gated_cnn", "none")),
    default_config=dict(embed_dim=96, depths=[2, 2, 2, 2], depths_decoder=[2, 2, 2, 1], patch_size=4,
                        heads=4, sra_threshold=0.0, d_state=16, drop_path_rate=0.2, mixer="mhs"),
    reference_params={
        "value": 17.26e6,
        "config": "spatial_dims=2, in_channels=3, num_classes=1, embed_dim=96, heads=4, depths [2,2,2,2], "
                  "depths_decoder [2,2,2,1]",
        "source": "our analytic count of PixDeep/MHS-VM mhsm.py, 4 heads (paper table not retrieved)",
    },
    description="VM-UNet layout with multi-head scan (snake, zigzag, spiral, raster) and route attention",
)(MHSVM)
