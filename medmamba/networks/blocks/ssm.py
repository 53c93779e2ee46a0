"""State-space mixers and the residual blocks built on them.

- :class:`MultiRouteSSM` — VMamba's SS2D generalised to N-D grids: one token sequence in raster
  order, K scan routes (a route-set name or a :class:`RouteSchedule`) run by one
  :func:`multi_route_scan` call, no permuted copies of the feature map.
- :class:`MambaMixer` — the plain Mamba block on token sequences (B, L, C), optionally the Vim
  "bimamba v2" bidirectional variant.
- :class:`VSSBlock` — pre-norm residual block ``x + DropPath(mixer(LN(x)))`` (+ optional MLP) whose
  mixer is chosen by name (``"ssm"`` or ``"gated_cnn"``, the MambaOut ablation).

All tensors are channel-last: spatial mixers take ``(B, *spatial, C)`` and return the same shape.
Facts and defaults: state-spaces/mamba mamba_simple.py (Mamba), MzeroMiko/VMamba
classification/models/vmamba.py (SS2D, VSSBlock), hustvl/Vim models_mamba.py (Vim).
Kernels: ``medmamba.kernels.ops.multi_route_scan``.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from medmamba.errors import NetworkError
from medmamba.kernels.ops import multi_route_scan
from medmamba.kernels.routes import RouteSchedule
from medmamba.networks.blocks.conv import conv_class
from medmamba.networks.blocks.residual import LN_EPS, DropPath
from medmamba.networks.blocks.deformable import DeformableConv
from medmamba.networks.blocks.gated_cnn import GatedCNNMixer

__all__ = [
    "Mlp",
    "MultiRouteSSM",
    "MambaMixer",
    "VSSBlock",
    "build_mixer",
    "default_routes",
    "as_route_schedule",
    "init_dt_bias",
    "a_log_init",
    "route_projections",
]

# Mamba defaults (state-spaces/mamba mamba_simple.py): dt sampled log-uniform in [0.001, 0.1],
# floored at 1e-4, dt_proj weight ~ U(±R^-1/2 · dt_scale).
DT_MIN, DT_MAX, DT_INIT_FLOOR = 1e-3, 1e-1, 1e-4
def default_routes(spatial_dims: int) -> str:
    """VMamba's cross scan: ``cross2d`` (4 routes) or its 3D generalisation ``cross3d`` (6)."""
    return "cross2d" if spatial_dims == 2 else "cross3d"


def as_route_schedule(routes: str | Sequence[str] | RouteSchedule | None,
                      spatial_dims: int) -> RouteSchedule:
    """Normalise a route-set name, a list of route names or a schedule to a RouteSchedule."""
    if routes is None:
        routes = default_routes(spatial_dims)
    if isinstance(routes, RouteSchedule):
        return routes
    if isinstance(routes, dict):  # from plans JSON: {"spec": ..., "mode": ..., "routes_per_layer": ...}
        return RouteSchedule(**routes)
    return RouteSchedule(routes if isinstance(routes, str) else tuple(routes))


def init_dt_bias(n_routes: int, channels: int, dt_min: float = DT_MIN, dt_max: float = DT_MAX,
                 floor: float = DT_INIT_FLOOR) -> torch.Tensor:
    """Mamba dt bias ``(n_routes, channels)`` float32: inverse softplus of dt ~ logU[dt_min, dt_max]
    (mamba_simple.py dt_proj init), so softplus(bias) starts inside [dt_min, dt_max]."""
    dt = torch.exp(torch.rand(n_routes, channels) * (math.log(dt_max) - math.log(dt_min))
                   + math.log(dt_min)).clamp(min=floor)
    return dt + torch.log(-torch.expm1(-dt))


def a_log_init(n_routes: int, channels: int, d_state: int) -> torch.Tensor:
    """S4D-real init: A_log[k, c, n] = log(n + 1) (mamba_simple.py, S4D-real), float32."""
    a = torch.arange(1, d_state + 1, dtype=torch.float32)
    return torch.log(a).expand(n_routes, channels, d_state).clone()


def route_projections(u: torch.Tensor, x_proj_weight: torch.Tensor, dt_projs_weight: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-route (delta, B, C) of VMamba's x_proj → (dt, B, C), dt_proj → delta (vmamba.py SS2D),
    for K routes at once: u ``(batch, L, D)``, x_proj_weight ``(K, R + 2N, D)``, dt_projs_weight
    ``(K, D, R)`` → delta ``(batch, K, L, D)``, B and C ``(batch, K, L, N)``.

    One GEMM for all routes' x_proj and one batched GEMM over the routes for their dt projections;
    the results are returned as strided views (token-major B and C, route-major delta, unit channel
    stride), which the scan reads without a copy. (The dt projection was one GEMM with a
    block-diagonal (K·D, K·R) weight before: K times the FLOPs, and with inner dimension K·R its
    GEMMs ran at a few GFLOP/s; the batched form made VM-UNet's training and prediction steps
    faster, and einsum + contiguous copies cost more per block than strided views. Per-network step times: benchmarks/networks.py, results in
    benchmarks/results/networks_twins*.json.)"""
    K, RN2, D = x_proj_weight.shape
    R = dt_projs_weight.shape[2]
    N = (RN2 - R) // 2
    batch, length, _ = u.shape
    x_dbl = F.linear(u, x_proj_weight.reshape(K * RN2, D)).view(batch, length, K, RN2)
    dt, b_ssm, c_ssm = torch.split(x_dbl, [R, N, N], dim=-1)
    delta = torch.bmm(dt.reshape(batch * length, K, R).transpose(0, 1), dt_projs_weight.transpose(1, 2))
    return delta.view(K, batch, length, D).transpose(0, 1), b_ssm.transpose(1, 2), c_ssm.transpose(1, 2)


class Mlp(nn.Module):
    """Linear → GELU → Linear on the last (channel) axis; hidden = ``hidden`` channels."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class MultiRouteSSM(nn.Module):
    """VMamba SS2D generalised to 2D/3D grids with K routes scanned in one kernel call.

    in_proj → (depthwise or deformable) conv → SiLU → per-route x_proj to (dt, B, C) computed
    once on raster-order tokens → multi_route_scan (sum over routes) → out_norm → ⊙ SiLU(z)
    → out_proj (VMamba vmamba.py ``SS2D``).

    Args:
        d_model: channels C of the input/output.
        spatial_dims: 2 or 3.
        routes: route-set name (``"cross2d"``, ``"cross3d"``, ``"mhs"``…), list of route names,
            or a RouteSchedule; ``None`` = cross2d/cross3d.
        layer_index: position of this layer in its network (picks the routes of a rotating schedule).
        d_state: N. ssm_ratio: d_inner / d_model. dt_rank: R, ``"auto"`` = ceil(C / 16).
        d_conv: kernel of the depthwise conv (VMamba 3); 0 or 1 disables it.
        conv: ``"depthwise"`` or ``"deformable"`` (HRVMamba's DSS2D, hrvmamba.py).
        deform_pointwise: value/output projections inside the deformable conv (see DeformableConv).
        gate: keep the z branch (``False`` = VMamba ``_noz``).
        backend: scan backend passed to ``multi_route_scan``.

    Shapes: ``forward(x: (B, *spatial, C)) -> (B, *spatial, C)``, any float dtype; the scan
    state is float32 inside the kernel.
    """

    def __init__(
        self,
        d_model: int,
        spatial_dims: int = 2,
        routes: str | Sequence[str] | RouteSchedule | None = None,
        layer_index: int = 0,
        d_state: int = 16,
        ssm_ratio: float = 2.0,
        dt_rank: int | str = "auto",
        d_conv: int = 3,
        conv_bias: bool = True,
        conv: str = "depthwise",
        deform_pointwise: bool = True,
        gate: bool = True,
        bias: bool = False,
        dt_min: float = DT_MIN,
        dt_max: float = DT_MAX,
        dt_scale: float = 1.0,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        conv_class(spatial_dims)
        self.spatial_dims = spatial_dims
        self.schedule = as_route_schedule(routes, spatial_dims)
        self.layer_index = int(layer_index)
        self.backend = backend
        self.gate = gate
        n_routes = self.schedule.num_routes(spatial_dims)
        d_inner = int(ssm_ratio * d_model)
        rank = math.ceil(d_model / 16) if dt_rank == "auto" else int(dt_rank)
        self.d_inner, self.d_state, self.dt_rank, self.n_routes = d_inner, d_state, rank, n_routes

        self.in_proj = nn.Linear(d_model, 2 * d_inner if gate else d_inner, bias=bias)
        if conv == "deformable":
            # HRVMamba: DCNv4 on d_inner channels with group = dt_rank, kernel 3; its offset
            # generator gets a depthwise 3×3 only when C % 80 == 0 (HRVMamba hrvmamba.py).
            self.conv: nn.Module | None = DeformableConv(
                d_inner, spatial_dims, groups=rank, kernel_size=3, output_bias=False,
                dw_kernel_size=3 if d_model % 80 == 0 else None, pointwise=deform_pointwise)
            self.conv_channels_last = True
        elif conv == "depthwise":
            self.conv = (conv_class(spatial_dims)(d_inner, d_inner, d_conv, padding=d_conv // 2,
                                               groups=d_inner, bias=conv_bias)
                         if d_conv > 1 else None)
            self.conv_channels_last = False
        else:
            raise NetworkError(f"conv must be 'depthwise' or 'deformable', got {conv!r}")

        # Per-route parameters, raw Parameters as in VMamba (vmamba.py mamba_init) so a model-wide Linear re-init
        # leaves them alone.
        bound = rank ** -0.5
        self.x_proj_weight = nn.Parameter(
            torch.empty(n_routes, rank + 2 * d_state, d_inner).uniform_(-d_inner ** -0.5, d_inner ** -0.5))
        self.dt_projs_weight = nn.Parameter(
            torch.empty(n_routes, d_inner, rank).uniform_(-bound * dt_scale, bound * dt_scale))
        self.dt_projs_bias = nn.Parameter(init_dt_bias(n_routes, d_inner, dt_min, dt_max))
        self.A_logs = nn.Parameter(a_log_init(n_routes, d_inner, d_state))
        self.Ds = nn.Parameter(torch.ones(n_routes, d_inner))
        for p in (self.A_logs, self.Ds):
            p._no_weight_decay = True  # type: ignore[attr-defined]  # Mamba: no decay (mamba_simple.py)
        self.out_norm = nn.LayerNorm(d_inner)
        self.out_proj = nn.Linear(d_inner, d_model, bias=bias)
        self._route_cache: dict[tuple, torch.Tensor] = {}

    def routes_for(self, spatial_shape: Sequence[int], device: torch.device) -> torch.Tensor:
        """``(K, L)`` int64 routes for this layer on ``spatial_shape``, cached per shape/device."""
        key = (tuple(spatial_shape), str(device))
        routes = self._route_cache.get(key)
        if routes is None:
            routes = self.schedule.routes_for_layer(self.layer_index, spatial_shape, device)
            self._route_cache[key] = routes
        return routes

    def _conv(self, x: torch.Tensor) -> torch.Tensor:
        """(B, *spatial, d_inner) → same, through the conv (if any) and SiLU."""
        if self.conv is not None:
            if self.conv_channels_last:
                x = self.conv(x)
            else:
                x = self.conv(x.movedim(-1, 1)).movedim(1, -1)
        return F.silu(x)

    def scan_inputs(self, u: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Per-route (delta, B, C) from raster tokens u ``(B, L, d_inner)``:
        delta ``(B, K, L, d_inner)``, B and C ``(B, K, L, N)``, A ``(K, d_inner, N)`` float32.

        delta, B and C are strided views of two token-major GEMM outputs (``(B, L, K, ·)``); the
        scan reads any strides with unit channel stride, so nothing is copied."""
        return route_projections(u, self.x_proj_weight, self.dt_projs_weight) + (-torch.exp(self.A_logs.float()),)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, *spatial, _ = x.shape
        if len(spatial) != self.spatial_dims:
            raise NetworkError(f"MultiRouteSSM({self.spatial_dims}D) got input of shape {tuple(x.shape)}")
        length = math.prod(spatial)
        xz = self.in_proj(x)
        if self.gate:
            x, z = xz.chunk(2, dim=-1)
        else:
            x, z = xz, None
        u = self._conv(x).reshape(batch, length, self.d_inner)
        delta, b_ssm, c_ssm, a = self.scan_inputs(u)
        y = multi_route_scan(u, delta, a, b_ssm, c_ssm, D=self.Ds, z=None,
                             delta_bias=self.dt_projs_bias, routes=self.routes_for(spatial, x.device),
                             delta_softplus=True, backend=self.backend)
        y = self.out_norm(y)
        if z is not None:
            y = y * F.silu(z.reshape(batch, length, self.d_inner))
        return self.out_proj(y).reshape(batch, *spatial, -1)


class MambaMixer(nn.Module):
    """Mamba (S6) mixer on token sequences; ``bidirectional=True`` = Vim "bimamba v2".

    in_proj → x, z; per direction: causal depthwise conv1d (kernel ``d_conv``) → SiLU → x_proj →
    dt_proj → scan with gate z; the backward direction has its own conv/x_proj/dt/A/D and scans
    the reversed sequence; the two are summed (halved when ``divide_out``) → out_proj
    (mamba_simple.py; hustvl/Vim models_mamba.py).

    Shapes: ``forward(x: (B, L, C)) -> (B, L, C)``.
    """

    def __init__(self, d_model: int, d_state: int = 16, d_conv: int = 4, expand: float = 2.0,
                 dt_rank: int | str = "auto", bidirectional: bool = False, divide_out: bool = True,
                 conv_bias: bool = True, bias: bool = False, backend: str = "auto") -> None:
        super().__init__()
        d_inner = int(expand * d_model)
        rank = math.ceil(d_model / 16) if dt_rank == "auto" else int(dt_rank)
        self.d_inner, self.d_state, self.dt_rank, self.d_conv = d_inner, d_state, rank, d_conv
        self.backend, self.divide_out = backend, divide_out
        self.in_proj = nn.Linear(d_model, 2 * d_inner, bias=bias)
        n_dir = 2 if bidirectional else 1
        self.convs = nn.ModuleList(
            nn.Conv1d(d_inner, d_inner, d_conv, padding=d_conv - 1, groups=d_inner, bias=conv_bias)
            for _ in range(n_dir))
        self.x_projs = nn.ModuleList(nn.Linear(d_inner, rank + 2 * d_state, bias=False) for _ in range(n_dir))
        self.dt_projs = nn.ModuleList(nn.Linear(rank, d_inner, bias=True) for _ in range(n_dir))
        for dt_proj in self.dt_projs:
            nn.init.uniform_(dt_proj.weight, -rank ** -0.5, rank ** -0.5)
            with torch.no_grad():
                dt_proj.bias.copy_(init_dt_bias(1, d_inner)[0])
        self.A_logs = nn.Parameter(a_log_init(n_dir, d_inner, d_state))
        self.Ds = nn.Parameter(torch.ones(n_dir, d_inner))
        for p in (self.A_logs, self.Ds):
            p._no_weight_decay = True  # type: ignore[attr-defined]
        self.out_proj = nn.Linear(d_inner, d_model, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, _ = x.shape
        xs, z = self.in_proj(x).chunk(2, dim=-1)
        xs_cf = xs.transpose(1, 2)  # (B, d_inner, L) for conv1d
        out = None
        for k, (conv, x_proj, dt_proj) in enumerate(zip(self.convs, self.x_projs, self.dt_projs)):
            if k == 0:  # causal: keep the first L outputs of the left-padded conv
                u = conv(xs_cf)[..., :length]
                order = torch.arange(length, device=x.device)
            else:  # causal on the reversed sequence = anti-causal here; kept in raster order
                u = conv(xs_cf.flip(-1))[..., :length].flip(-1)
                order = torch.arange(length - 1, -1, -1, device=x.device)
            u = F.silu(u).transpose(1, 2).contiguous()  # (B, L, d_inner)
            dt, b_ssm, c_ssm = torch.split(x_proj(u), [self.dt_rank, self.d_state, self.d_state], dim=-1)
            delta = F.linear(dt, dt_proj.weight)  # bias goes in as delta_bias (mamba_simple.py)
            y = multi_route_scan(
                u, delta[:, None].contiguous(), -torch.exp(self.A_logs[k:k + 1].float()),
                b_ssm[:, None].contiguous(), c_ssm[:, None].contiguous(), D=self.Ds[k:k + 1], z=z,
                delta_bias=dt_proj.bias[None], routes=order[None], delta_softplus=True,
                backend=self.backend)
            out = y if out is None else out + y
        if len(self.convs) == 2 and self.divide_out:
            out = out / 2
        return self.out_proj(out)


# Keyword arguments that only the SSM mixer understands; a gated-CNN swap drops them.
_SSM_ONLY = {"routes", "layer_index", "d_state", "ssm_ratio", "dt_rank", "d_conv", "conv_bias",
             "conv", "deform_pointwise", "gate", "bias", "dt_min", "dt_max", "dt_scale", "backend"}


def build_mixer(kind: str, d_model: int, spatial_dims: int, **kwargs: Any) -> nn.Module:
    """A token mixer ``(B, *spatial, C) -> (B, *spatial, C)`` by name.

    ``"ssm"``: :class:`MultiRouteSSM` with ``kwargs``; ``"gated_cnn"``: MambaOut's gated CNN
    (:class:`~medmamba.networks.blocks.gated_cnn.GatedCNNMixer`), SSM-only kwargs ignored, so
    the same network config runs as its no-SSM ablation; ``"none"``: identity (the mixer removed,
    the "No-Mamba" control), every kwarg ignored.
    """
    if kind == "ssm":
        return MultiRouteSSM(d_model, spatial_dims, **kwargs)
    if kind == "gated_cnn":
        return GatedCNNMixer(d_model, spatial_dims,
                             **{k: v for k, v in kwargs.items() if k not in _SSM_ONLY})
    if kind == "none":
        return nn.Identity()
    raise NetworkError(f"mixer must be 'ssm', 'gated_cnn' or 'none', got {kind!r}")


class VSSBlock(nn.Module):
    """VMamba VSS block (pre-norm, vmamba.py ``VSSBlock``):
    ``x ← x + DropPath(mixer(LN(x)))``; if ``mlp_ratio > 0``: ``x ← x + DropPath(MLP(LN(x)))``.

    ``mixer`` is ``"ssm"`` (MultiRouteSSM), ``"gated_cnn"`` (MambaOut ablation) or an already
    built module with the same interface. Shapes: ``(B, *spatial, C) -> (B, *spatial, C)``.
    """

    def __init__(self, dim: int, spatial_dims: int = 2, mixer: str | nn.Module = "ssm",
                 mlp_ratio: float = 0.0, drop_path: float = 0.0, **mixer_kwargs: Any) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=LN_EPS)
        self.mixer = (mixer if isinstance(mixer, nn.Module)
                      else build_mixer(mixer, dim, spatial_dims, **mixer_kwargs))
        self.drop_path = DropPath(drop_path)
        if mlp_ratio > 0:
            self.norm2: nn.Module | None = nn.LayerNorm(dim, eps=LN_EPS)
            self.mlp: nn.Module | None = Mlp(dim, int(dim * mlp_ratio))
        else:
            self.norm2 = self.mlp = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.mixer(self.norm(x)))
        if self.mlp is not None:
            x = x + self.drop_path(self.mlp(self.norm2(x)))
        return x
