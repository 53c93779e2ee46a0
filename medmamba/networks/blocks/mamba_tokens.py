"""Mamba block on flattened tokens, one or several scan routes each with its own causal conv.

This is the Mamba block of Gu & Dao 2023 (arXiv 2312.00752; state-spaces/mamba mamba_simple.py):
in_proj -> causal depthwise conv1d -> SiLU -> x_proj -> selective scan -> gate -> out_proj,
generalised to K routes the way SegMamba's ToM block (segmamba.py, ``bimamba_type="v3"``)
does it: in_proj/out_proj are shared, and every route k has
its own conv1d, x_proj, dt_proj, A_log and D. Route k's causal conv runs along route k's visiting
order; the scan of every route is :func:`medmamba.kernels.ops.multi_route_scan`, whose gather and
scatter happen inside the kernel. The per-route outputs are summed, then gated by SiLU(z) (gating
each route and summing, as SegMamba does, is the same thing because z is shared).

With ``routes="raster"`` (K = 1) this is exactly ``mamba_ssm.Mamba`` on a raster-flattened
volume — U-Mamba's layer (UMambaBot_3d.py MambaLayer). With ``routes="tom"`` it is SegMamba's ToM.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from medmamba.errors import NetworkError
from medmamba.kernels.ops import multi_route_scan
from medmamba.kernels.routes import ROUTE_SETS, build_routes, inverse_route

# Mamba defaults (Gu & Dao 2023, state-spaces/mamba mamba_simple.py).
D_STATE = 16
D_CONV = 4
EXPAND = 2
DT_MIN, DT_MAX, DT_INIT_FLOOR = 1e-3, 1e-1, 1e-4


def _is_identity(route: torch.Tensor) -> bool:
    return bool(torch.equal(route, torch.arange(route.numel(), device=route.device)))


class RouteMamba(nn.Module):
    """Mamba mixer over tokens of a 2D/3D grid, K routes with per-route conv/projections.

    Args:
        d_model: token channels.
        spatial_dims: 2 or 3, the grid the tokens come from (fixes how many routes a set has).
        routes: a route set or route name (see :mod:`medmamba.kernels.routes`) or a list of names;
            ``"raster"`` = plain Mamba, ``"tom"`` = SegMamba's tri-orientated set.
        d_state, d_conv, expand, dt_rank: Mamba hyper-parameters (defaults 16, 4, 2, ceil(d_model/16)).
        backend: scan backend passed to ``multi_route_scan`` (``auto``/``reference``/``torch``/``triton``).

    forward(x (B, L, d_model), spatial_shape (H, W) or (D, H, W) with prod = L) -> (B, L, d_model),
    tokens in raster order (last axis fastest).
    """

    def __init__(self, d_model: int, spatial_dims: int = 3, routes: str | Sequence[str] = "raster",
                 d_state: int = D_STATE, d_conv: int = D_CONV, expand: int = EXPAND, dt_rank: int | str = "auto",
                 backend: str = "auto") -> None:
        super().__init__()
        if d_model < 1 or d_state < 1 or d_conv < 1 or expand < 1:
            raise NetworkError(f"RouteMamba needs positive sizes, got d_model={d_model}, d_state={d_state}, "
                               f"d_conv={d_conv}, expand={expand}")
        self.d_model, self.d_state, self.d_conv = d_model, d_state, d_conv
        self.d_inner = di = expand * d_model
        self.dt_rank = r = math.ceil(d_model / 16) if dt_rank == "auto" else int(dt_rank)
        if not (isinstance(routes, str) or (isinstance(routes, (list, tuple)) and routes
                                             and all(isinstance(name, str) for name in routes))):
            raise NetworkError(f"routes must be a route-set name or a list of route names, got {routes!r}")
        self.routes = routes if isinstance(routes, str) else tuple(routes)
        self.backend = backend
        if spatial_dims not in ROUTE_SETS:
            raise NetworkError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}")
        self.spatial_dims = spatial_dims
        # Building the routes on a tiny grid validates the names now (KernelError names the bad one)
        # and gives K, which does not depend on the grid size.
        self.n_routes = k = int(build_routes(self.routes, (2,) * spatial_dims).shape[0])
        self.in_proj = nn.Linear(d_model, 2 * di, bias=False)
        self.conv_weight = nn.Parameter(torch.empty(k, di, d_conv))
        self.conv_bias = nn.Parameter(torch.empty(k, di))
        self.x_proj_weight = nn.Parameter(torch.empty(k, r + 2 * d_state, di))
        self.dt_proj_weight = nn.Parameter(torch.empty(k, di, r))
        self.dt_proj_bias = nn.Parameter(torch.empty(k, di))
        self.A_log = nn.Parameter(torch.empty(k, di, d_state))
        self.D = nn.Parameter(torch.empty(k, di))
        self.out_proj = nn.Linear(di, d_model, bias=False)
        for p in (self.A_log, self.D):
            p._no_weight_decay = True  # type: ignore[attr-defined]  # Mamba: no weight decay (mamba_simple.py)
        self._route_cache: dict[tuple, tuple[torch.Tensor, list[torch.Tensor | None]]] = {}
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Mamba's init (state-spaces/mamba mamba_simple.py ``Mamba.__init__``)."""
        # conv1d / x_proj: PyTorch's default (Kaiming-uniform a=sqrt(5)) bounds for their fan-in.
        bound = 1.0 / math.sqrt(self.d_conv)
        self.conv_weight.uniform_(-bound, bound)
        self.conv_bias.uniform_(-bound, bound)
        bound = 1.0 / math.sqrt(self.d_inner)
        self.x_proj_weight.uniform_(-bound, bound)
        std = self.dt_rank ** -0.5  # dt_init "random", dt_scale 1
        self.dt_proj_weight.uniform_(-std, std)
        dt = torch.exp(torch.rand_like(self.dt_proj_bias) * (math.log(DT_MAX) - math.log(DT_MIN))
                       + math.log(DT_MIN)).clamp(min=DT_INIT_FLOOR)
        self.dt_proj_bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # inverse softplus
        n = torch.arange(1, self.d_state + 1, dtype=torch.float32)
        self.A_log.copy_(torch.log(n).expand_as(self.A_log))
        self.D.fill_(1.0)

    def _routes(self, spatial_shape: tuple[int, ...], device: torch.device):
        key = (spatial_shape, str(device))
        if key not in self._route_cache:
            routes = build_routes(self.routes, spatial_shape, device=device)
            if len(spatial_shape) != self.spatial_dims or routes.shape[0] != self.n_routes:
                raise NetworkError(f"route spec {self.routes!r} gives {routes.shape[0]} routes on a "
                                   f"{len(spatial_shape)}D grid; this layer was built for {self.n_routes} "
                                   f"routes on a {self.spatial_dims}D grid")
            inverses = [None if _is_identity(r) else inverse_route(r) for r in routes]
            self._route_cache[key] = (routes, inverses)
        return self._route_cache[key]

    def forward(self, x: torch.Tensor, spatial_shape: Sequence[int]) -> torch.Tensor:
        batch, length, _ = x.shape
        shape = tuple(int(s) for s in spatial_shape)
        if math.prod(shape) != length:
            raise NetworkError(f"RouteMamba: {length} tokens do not fill a grid of shape {shape}")
        routes, inverses = self._routes(shape, x.device)
        xz = self.in_proj(x)
        xs, z = xz.chunk(2, dim=-1)                     # (B, L, d_inner) each, raster order
        r, n = self.dt_rank, self.d_state
        A = -torch.exp(self.A_log.float())              # (K, d_inner, N), fp32 (mamba_simple.py)
        y = None
        for k in range(self.n_routes):
            inv = inverses[k]
            seq = xs if inv is None else xs.index_select(1, routes[k])   # route order
            # causal depthwise conv along the route: left-pad d_conv - 1, keep L outputs (mamba_simple.py)
            u = F.conv1d(F.pad(seq.transpose(1, 2), (self.d_conv - 1, 0)),
                         self.conv_weight[k].unsqueeze(1), self.conv_bias[k], groups=self.d_inner)
            u = F.silu(u).transpose(1, 2)
            if inv is not None:
                u = u.index_select(1, inv)              # back to raster order for the kernel
            dbc = F.linear(u, self.x_proj_weight[k])    # (B, L, R + 2N)
            dt_low, b_, c_ = dbc.split([r, n, n], dim=-1)
            delta = F.linear(dt_low, self.dt_proj_weight[k])   # bias goes in as delta_bias (mamba_simple.py)
            # multi_route_scan turns autocast off inside and keeps fp32 state itself (AMP NaNs: state-spaces/mamba#6)
            y_k = multi_route_scan(
                u.contiguous(), delta.unsqueeze(1).contiguous(), A[k:k + 1],
                b_.unsqueeze(1).contiguous(), c_.unsqueeze(1).contiguous(),
                D=self.D[k:k + 1].float(), z=z.contiguous(),
                delta_bias=self.dt_proj_bias[k:k + 1].float(), routes=routes[k:k + 1],
                delta_softplus=True, backend=self.backend)
            y = y_k if y is None else y + y_k
        return self.out_proj(y)
