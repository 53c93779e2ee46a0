"""Fused Triton forward and backward kernels for the multi-route selective scan.

Layout (as mamba's CUDA forward kernel, selective_scan_fwd_kernel.cuh, plus the route gather
fused into the loads): one program per
(batch × route, block of BD channels). The program walks its route in tiles of BL steps; for each
tile it loads the route's positions, gathers u / δ (BD contiguous channels per token, channel-
last) and B / C straight from the raster-order inputs through that index map, forms the pairs
(exp2(δ·A·log2 e), δ·u·B) on a (BL, BD, N) tile, runs ``tl.associative_scan`` along the tile with
the first-order-recurrence combine, folds in the fp32 carry from the previous tile, reads out
y = Σ_n C·h (+ D·u), and scatter-adds y into the fp32 (batch, L, channels) accumulator with
atomics (K routes add into the same positions). The state at the start of every tile is saved
for the backward, which walks tiles last to first, recomputes each tile's states from its saved
start state, and runs the adjoint with a reverse ``associative_scan``. All offsets are int64
(the 32-bit overflows of state-spaces/mamba#880 and #884 cannot happen).

The z gate and dtype casts are elementwise torch ops around the kernels.
Untuned: BL/BD/num_warps below were chosen for register budget, not measured on a GPU.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

# Tile sizes. BL·BD·N fp32 values per live (BL, BD, N) tensor; 32·8·16 = 4096 over 4 warps is
# 32 registers per thread per tensor (register budget; not yet tuned on a GPU).
_BL = 32
_BD = 8
TILE_LENGTH = _BL  # steps per tile = steps between saved states (the torch fallback reuses it)
_LOG2E = 1.4426950408889634  # exp(x) = exp2(x·log2 e), as mamba's selective_scan_fwd_kernel.cuh


def triton_state_shape(batch: int, n_routes: int, length: int, channels: int, n_state: int) -> tuple[int, ...]:
    """Shape of the tile-start states saved by the forward: (n_tiles, batch, K, channels, N)."""
    return (triton.cdiv(length, _BL), batch, n_routes, channels, n_state)


@triton.jit
def _combine(a1, b1, a2, b2):
    return a1 * a2, a2 * b1 + b2


@triton.jit
def _softplus(x):
    # log1p(exp(x)) for x <= 20, x otherwise (torch's softplus threshold 20)
    return tl.where(x > 20.0, x, tl.log(1.0 + tl.exp(tl.minimum(x, 20.0))))


@triton.jit
def _fwd_kernel(
    u_ptr, d_ptr, A_ptr, B_ptr, C_ptr, D_ptr, bias_ptr, r_ptr, y_ptr, st_ptr,
    L, CH, K,
    su_b, su_l, su_c, sd_b, sd_k, sd_l, sd_c, sb_b, sb_k, sb_l, sb_n, sc_b, sc_k, sc_l, sc_n, sy_b, sy_k,
    N: tl.constexpr, NP: tl.constexpr, BL: tl.constexpr, BD: tl.constexpr,
    HAS_D: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, SAVE_STATES: tl.constexpr,
):
    pid_bk = tl.program_id(0).to(tl.int64)
    pid_d = tl.program_id(1).to(tl.int64)
    b = pid_bk // K
    k = pid_bk % K
    offs_d = pid_d * BD + tl.arange(0, BD).to(tl.int64)
    offs_n = tl.arange(0, NP).to(tl.int64)
    mask_d = offs_d < CH
    mask_n = offs_n < N
    mask_dn = mask_d[:, None] & mask_n[None, :]
    A2 = tl.load(A_ptr + (k * CH + offs_d[:, None]) * N + offs_n[None, :], mask=mask_dn, other=0.0).to(tl.float32) * 1.4426950408889634
    if HAS_D:
        Dk = tl.load(D_ptr + k * CH + offs_d, mask=mask_d, other=0.0).to(tl.float32)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + k * CH + offs_d, mask=mask_d, other=0.0).to(tl.float32)
    h = tl.zeros((BD, NP), dtype=tl.float32)
    n_tiles = tl.cdiv(L, BL)
    st_tile = tl.num_programs(0).to(tl.int64) * CH * N  # elements per tile slab (batch·K·CH·N)
    for j in range(0, n_tiles):
        # saved state at the start of tile j: states[j, b, k, d, n]
        if SAVE_STATES:
            st_off = j * st_tile + (pid_bk * CH + offs_d[:, None]) * N + offs_n[None, :]
            tl.store(st_ptr + st_off, h, mask=mask_dn)
        offs_t = j * BL + tl.arange(0, BL).to(tl.int64)
        mask_t = offs_t < L
        pos = tl.load(r_ptr + k * L + offs_t, mask=mask_t, other=0)
        m_td = mask_t[:, None] & mask_d[None, :]
        u = tl.load(u_ptr + b * su_b + pos[:, None] * su_l + offs_d[None, :] * su_c, mask=m_td, other=0.0).to(tl.float32)
        dl = tl.load(d_ptr + b * sd_b + k * sd_k + pos[:, None] * sd_l + offs_d[None, :] * sd_c, mask=m_td, other=0.0).to(tl.float32)
        if HAS_BIAS:
            dl = dl + bias[None, :]
        if SOFTPLUS:
            dl = _softplus(dl)
        dl = tl.where(m_td, dl, 0.0)
        m_tn = mask_t[:, None] & mask_n[None, :]
        Bt = tl.load(B_ptr + b * sb_b + k * sb_k + pos[:, None] * sb_l + offs_n[None, :] * sb_n, mask=m_tn, other=0.0).to(tl.float32)
        Ct = tl.load(C_ptr + b * sc_b + k * sc_k + pos[:, None] * sc_l + offs_n[None, :] * sc_n, mask=m_tn, other=0.0).to(tl.float32)
        a = tl.exp2(dl[:, :, None] * A2[None, :, :])                     # (BL, BD, NP); 1 where masked
        x = (dl * u)[:, :, None] * Bt[:, None, :]
        a_cum, h_loc = tl.associative_scan((a, x), 0, _combine)
        hs = h_loc + a_cum * h[None, :, :]
        y = tl.sum(hs * Ct[:, None, :], axis=2)                          # (BL, BD)
        if HAS_D:
            y += Dk[None, :] * u
        tl.atomic_add(y_ptr + b * sy_b + k * sy_k + pos[:, None] * CH + offs_d[None, :], y, mask=m_td)
        last = tl.arange(0, BL)[:, None, None] == (BL - 1)
        h = tl.sum(tl.where(last, hs, 0.0), axis=0)


@triton.jit
def _bwd_kernel(
    u_ptr, d_ptr, A_ptr, B_ptr, C_ptr, D_ptr, bias_ptr, r_ptr, st_ptr, gy_ptr,
    du_ptr, dd_ptr, dA_ptr, dB_ptr, dC_ptr, dD_ptr, dbias_ptr,
    L, CH, K,
    su_b, su_l, su_c, sd_b, sd_k, sd_l, sd_c, sb_b, sb_k, sb_l, sb_n, sc_b, sc_k, sc_l, sc_n, sy_b, sy_k,
    N: tl.constexpr, NP: tl.constexpr, BL: tl.constexpr, BD: tl.constexpr,
    HAS_D: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
):
    pid_bk = tl.program_id(0).to(tl.int64)
    pid_d = tl.program_id(1).to(tl.int64)
    b = pid_bk // K
    k = pid_bk % K
    offs_d = pid_d * BD + tl.arange(0, BD).to(tl.int64)
    offs_n = tl.arange(0, NP).to(tl.int64)
    mask_d = offs_d < CH
    mask_n = offs_n < N
    mask_dn = mask_d[:, None] & mask_n[None, :]
    A = tl.load(A_ptr + (k * CH + offs_d[:, None]) * N + offs_n[None, :], mask=mask_dn, other=0.0).to(tl.float32)
    A2 = A * 1.4426950408889634
    if HAS_D:
        Dk = tl.load(D_ptr + k * CH + offs_d, mask=mask_d, other=0.0).to(tl.float32)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + k * CH + offs_d, mask=mask_d, other=0.0).to(tl.float32)
    g_next = tl.zeros((BD, NP), dtype=tl.float32)      # g at the first step of the later tile
    dA_acc = tl.zeros((BD, NP), dtype=tl.float32)
    dD_acc = tl.zeros((BD,), dtype=tl.float32)
    dbias_acc = tl.zeros((BD,), dtype=tl.float32)
    n_tiles = tl.cdiv(L, BL)
    st_tile = tl.num_programs(0).to(tl.int64) * CH * N
    for jj in range(0, n_tiles):
        j = n_tiles - 1 - jj
        st_off = j * st_tile + (pid_bk * CH + offs_d[:, None]) * N + offs_n[None, :]
        h0 = tl.load(st_ptr + st_off, mask=mask_dn, other=0.0)
        offs_t = j * BL + tl.arange(0, BL).to(tl.int64)
        mask_t = offs_t < L
        pos = tl.load(r_ptr + k * L + offs_t, mask=mask_t, other=0)
        m_td = mask_t[:, None] & mask_d[None, :]
        m_tn = mask_t[:, None] & mask_n[None, :]
        u = tl.load(u_ptr + b * su_b + pos[:, None] * su_l + offs_d[None, :] * su_c, mask=m_td, other=0.0).to(tl.float32)
        draw = tl.load(d_ptr + b * sd_b + k * sd_k + pos[:, None] * sd_l + offs_d[None, :] * sd_c, mask=m_td, other=0.0).to(tl.float32)
        if HAS_BIAS:
            draw = draw + bias[None, :]
        dl = draw
        if SOFTPLUS:
            dl = _softplus(draw)
        dl = tl.where(m_td, dl, 0.0)
        Bt = tl.load(B_ptr + b * sb_b + k * sb_k + pos[:, None] * sb_l + offs_n[None, :] * sb_n, mask=m_tn, other=0.0).to(tl.float32)
        Ct = tl.load(C_ptr + b * sc_b + k * sc_k + pos[:, None] * sc_l + offs_n[None, :] * sc_n, mask=m_tn, other=0.0).to(tl.float32)
        a = tl.exp2(dl[:, :, None] * A2[None, :, :])
        x = (dl * u)[:, :, None] * Bt[:, None, :]
        a_cum, h_loc = tl.associative_scan((a, x), 0, _combine)
        hs = h_loc + a_cum * h0[None, :, :]                              # h_t
        # decay of the NEXT step (a_{t+1}) for the adjoint recurrence g_t = C_t·gy_t + a_{t+1}·g_{t+1}
        offs_t1 = offs_t + 1
        mask_t1 = offs_t1 < L
        pos1 = tl.load(r_ptr + k * L + offs_t1, mask=mask_t1, other=0)
        m_td1 = mask_t1[:, None] & mask_d[None, :]
        d1 = tl.load(d_ptr + b * sd_b + k * sd_k + pos1[:, None] * sd_l + offs_d[None, :] * sd_c, mask=m_td1, other=0.0).to(tl.float32)
        if HAS_BIAS:
            d1 = d1 + bias[None, :]
        if SOFTPLUS:
            d1 = _softplus(d1)
        d1 = tl.where(m_td1, d1, 0.0)
        a1 = tl.exp2(d1[:, :, None] * A2[None, :, :])
        gy = tl.load(gy_ptr + b * sy_b + k * sy_k + pos[:, None] * CH + offs_d[None, :], mask=m_td, other=0.0)
        beta = gy[:, :, None] * Ct[:, None, :]
        a_rev, g_loc = tl.associative_scan((a1, beta), 0, _combine, reverse=True)
        g = g_loc + a_rev * g_next[None, :, :]
        first = tl.arange(0, BL)[:, None, None] == 0
        g_next = tl.sum(tl.where(first, g, 0.0), axis=0)
        # gradients
        dC = tl.sum(gy[:, :, None] * hs, axis=1)                          # (BL, NP) partial over BD
        dB = tl.sum(g * (dl * u)[:, :, None], axis=1)
        gB = tl.sum(g * Bt[:, None, :], axis=2)                           # (BL, BD)
        du = gB * dl
        if HAS_D:
            du += Dk[None, :] * gy
            dD_acc += tl.sum(gy * u, axis=0)
        gdecay = g * (hs - x)                                             # ∂L/∂(δA) = g_t·a_t·h_{t-1}
        dA_acc += tl.sum(gdecay * dl[:, :, None], axis=0)
        ddl = gB * u + tl.sum(gdecay * A[None, :, :], axis=2)
        if SOFTPLUS:
            ddl = ddl * tl.sigmoid(draw)
        ddl = tl.where(m_td, ddl, 0.0)
        if HAS_BIAS:
            dbias_acc += tl.sum(ddl, axis=0)
        tl.atomic_add(du_ptr + b * L * CH + pos[:, None] * CH + offs_d[None, :], du, mask=m_td)
        tl.store(dd_ptr + ((b * K + k) * L + pos[:, None]) * CH + offs_d[None, :], ddl, mask=m_td)
        bkln = ((b * K + k) * L + pos[:, None]) * N + offs_n[None, :]
        tl.atomic_add(dB_ptr + bkln, dB, mask=m_tn)
        tl.atomic_add(dC_ptr + bkln, dC, mask=m_tn)
    tl.atomic_add(dA_ptr + (k * CH + offs_d[:, None]) * N + offs_n[None, :], dA_acc, mask=mask_dn)
    if HAS_D:
        tl.atomic_add(dD_ptr + k * CH + offs_d, dD_acc, mask=mask_d)
    if HAS_BIAS:
        tl.atomic_add(dbias_ptr + k * CH + offs_d, dbias_acc, mask=mask_d)


def _strides(*tensors):
    return [s for t in tensors for s in t.stride()]


def _output_strides(length, channels, K, sum_routes):
    """Batch and route strides of y / grad_out: (batch, L, C) summed or (batch, K, L, C) per route."""
    return (length * channels, 0) if sum_routes else (K * length * channels, length * channels)


def _launch_args(u, delta, A, B, C, routes):
    batch, length, channels = u.shape
    K, _, N = A.shape
    grid = (batch * K, triton.cdiv(channels, _BD))
    meta = dict(N=N, NP=max(2, triton.next_power_of_2(N)), BL=_BL, BD=_BD)
    return batch, length, channels, K, N, grid, meta


def triton_scan_forward(u, delta, A, B, C, D, z, delta_bias, routes, delta_softplus, save_states=True,
                        sum_routes=True):
    """Forward on CUDA (or TRITON_INTERPRET=1). Same contract as ``torch_scan_forward``."""
    batch, length, channels, K, N, grid, meta = _launch_args(u, delta, A, B, C, routes)
    routes = routes.contiguous()
    A_c = A.float().contiguous()
    D_c = A_c if D is None else D.float().contiguous()
    bias_c = A_c if delta_bias is None else delta_bias.float().contiguous()
    y = torch.zeros(batch, *(() if sum_routes else (K,)), length, channels, dtype=torch.float32, device=u.device)
    states = torch.empty(triton_state_shape(batch, K, length, channels, N) if save_states else (0,),
                         dtype=torch.float32, device=u.device)
    _fwd_kernel[grid](
        u, delta, A_c, B, C, D_c, bias_c, routes, y, states, length, channels, K,
        *_strides(u, delta, B, C), *_output_strides(length, channels, K, sum_routes),
        HAS_D=D is not None, HAS_BIAS=delta_bias is not None, SOFTPLUS=bool(delta_softplus),
        SAVE_STATES=bool(save_states), **meta,
    )
    if z is not None:
        out = (y * torch.nn.functional.silu(z.float())).to(u.dtype)
        return out, (y if save_states else y.new_empty(0)), states
    return y.to(u.dtype), y.new_empty(0), states


def triton_scan_backward(grad_out, u, delta, A, B, C, D, z, delta_bias, routes, delta_softplus,
                         y_pre, states, sum_routes=True):
    """Backward on CUDA (or TRITON_INTERPRET=1). Same contract as ``torch_scan_backward``."""
    batch, length, channels, K, N, grid, meta = _launch_args(u, delta, A, B, C, routes)
    routes = routes.contiguous()
    gout = grad_out.float()
    dz = None
    if z is not None:
        zf = z.float()
        sig = torch.sigmoid(zf)
        dz = (gout * y_pre * sig * (1 + zf * (1 - sig))).to(z.dtype)
        gout = gout * zf * sig
    gout = gout.contiguous()
    A_c = A.float().contiguous()
    D_c = A_c if D is None else D.float().contiguous()
    bias_c = A_c if delta_bias is None else delta_bias.float().contiguous()
    f32 = dict(dtype=torch.float32, device=u.device)
    du = torch.zeros(batch, length, channels, **f32)
    ddelta = torch.empty(batch, K, length, channels, **f32)
    dA = torch.zeros(K, channels, N, **f32)
    dB = torch.zeros(batch, K, length, N, **f32)
    dC = torch.zeros(batch, K, length, N, **f32)
    dD = torch.zeros(K, channels, **f32)
    dbias = torch.zeros(K, channels, **f32)
    _bwd_kernel[grid](
        u, delta, A_c, B, C, D_c, bias_c, routes, states, gout,
        du, ddelta, dA, dB, dC, dD, dbias, length, channels, K,
        *_strides(u, delta, B, C), *_output_strides(length, channels, K, sum_routes),
        HAS_D=D is not None, HAS_BIAS=delta_bias is not None, SOFTPLUS=bool(delta_softplus), **meta,
    )
    return (du.to(u.dtype), ddelta.to(delta.dtype), dA.to(A.dtype), dB.to(B.dtype), dC.to(C.dtype),
            None if D is None else dD.to(D.dtype), dz,
            None if delta_bias is None else dbias.to(delta_bias.dtype))
