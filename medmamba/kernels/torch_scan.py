"""Vectorised chunked multi-route scan in plain torch (the CPU default; also runs on GPU).

All K routes run together. For each chunk of T route steps the backend gathers, for every
route, the T tokens it visits (``index_select`` of whole channel rows, so every gathered token
is one contiguous copy) into time-major chunk tensors ``(batch, T, K, channels[, N])``; computes the decays
exp(δA) and the inputs δ·u·B for the whole chunk at once (vectorised); runs the recurrence with
one in-place ``addcmul_`` per step over all (batch, route, channel, state) lanes; reads out
y = h·C per chunk and scatter-adds it (``index_add_``) straight into the ``(batch, L, channels)``
fp32 accumulator. Only chunk-sized temporaries exist: no permuted copy of u/δ/B/C is made.

Backward is hand-written (the recompute pattern of mamba's CUDA kernel,
selective_scan_bwd_kernel.cuh): the forward saves the state at the start of every chunk; the backward walks chunks last
to first, recomputes the chunk's states from the saved one, runs the adjoint recurrence
g_t = C_t·gy_t + a_{t+1}·g_{t+1} backwards, and forms every gradient from (h, g) per chunk.
Memory: O(chunk) + the saved chunk-start states ``(n_chunks, batch, K, channels, N)`` fp32.

Why chunked with vectorised exps: a fully per-step loop recomputing exp each step was several
times slower on CPU. The scan's measured speed and memory per backend: benchmarks/kernels.py
(results in benchmarks/results/kernels_cpu*.json and kernels_vs_compiled_*.json).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# Elements per (batch, T, K, channels, N) chunk temporary: big enough that the ~2 µs dispatch
# cost per step of the loop is amortised, small enough (4 MiB fp32) to stay in cache.
_CHUNK_ELEMENTS = 1 << 20
# Chunk length bounds: >= 16 keeps per-chunk gather/readout overhead low, <= 256 keeps the
# chunk temporaries cache-sized (the range that timed fastest on CPU; see the module docstring).
_MIN_CHUNK, _MAX_CHUNK = 16, 256
# exp(δA) = exp2(δ·A·log2 e): torch.exp2 is several times cheaper per element than torch.exp on
# CPU, and mamba's CUDA kernel uses the same trick (selective_scan_fwd_kernel.cuh).
_LOG2E = 1.4426950408889634


def chunk_length(length: int, lanes: int) -> int:
    """Steps per chunk for a scan of ``length`` steps over ``lanes`` = batch·K·channels·N lanes.

    A power of two in [16, 256], never more than ``length``. Pure function of shapes (the
    torch.compile fake implementation uses it to size the saved states).
    """
    t = _CHUNK_ELEMENTS // max(1, lanes)
    t = 1 << max(0, int(math.log2(max(1, t))))
    t = min(max(t, _MIN_CHUNK), _MAX_CHUNK)
    return max(1, min(t, length))


def saved_state_shape(batch: int, n_routes: int, length: int, channels: int, n_state: int) -> tuple[int, ...]:
    """Shape of the chunk-start states the forward saves for the backward."""
    T = chunk_length(length, batch * n_routes * channels * n_state)
    return ((length + T - 1) // T, batch, n_routes, channels, n_state)


class _RouteGather:
    """Gathers/scatters chunks of per-route tensors ``x (batch, K, L, F)`` by route positions.

    Uses ``index_select``/``index_copy_`` on the flat ``(batch, K·L, F)`` view when the layout
    allows one (≈10x faster than advanced indexing here), the route-0 slice when x is expanded
    over K (stride 0), and advanced indexing otherwise. Never copies x.
    """

    def __init__(self, x: torch.Tensor) -> None:
        self.x = x
        b, K, L, F_ = x.shape
        self.shape = (b, K, L, F_)
        self.flat = None
        self.shared = None
        if K == 1 or x.stride(1) == L * x.stride(2):
            self.flat = x.as_strided((b, K * L, F_), (x.stride(0), x.stride(2), x.stride(3)))
        elif x.stride(1) == 0:
            self.shared = x[:, 0]

    def gather(self, idx: torch.Tensor, flat: torch.Tensor, flat_off: torch.Tensor, kk: torch.Tensor) -> torch.Tensor:
        """idx (K, T) positions; flat = idx.t() flattened, flat_off = (idx + k·L).t() flattened;
        kk (K, 1) route ids -> (batch, T, K, F), time-major."""
        b, K, _, F_ = self.shape
        T = idx.shape[1]
        if self.flat is not None:
            return torch.index_select(self.flat, 1, flat_off).view(b, T, K, F_)
        if self.shared is not None:
            return torch.index_select(self.shared, 1, flat).view(b, T, K, F_)
        return self.x[:, kk.t(), idx.t()]


def _discretise(d_raw, delta_bias, delta_softplus, cd):
    """δ = softplus(delta + bias) for a chunk (b, T, K, c); returns (δ, pre-softplus or None)."""
    if delta_bias is not None:
        d_raw = d_raw + delta_bias.to(cd)[None, None]
    if not delta_softplus:
        return d_raw, None
    return F.softplus(d_raw), d_raw


def _chunk_states(d, u_g, b_g, A2, h0, decay, hs) -> None:
    """Fill ``decay`` = exp(δA) and ``hs`` = states h_t, both (b, T, K, c, N), for one chunk from
    the carried state ``h0`` (b, K, c, N): h_t = decay_t·h_{t-1} + δ_t·u_t·B_t, in place.
    ``A2`` = A·log2(e) as (1, 1, K, c, N)."""
    torch.mul(d[..., None], A2, out=decay)
    torch.exp2(decay, out=decay)
    torch.mul((d * u_g)[..., None], b_g[:, :, :, None, :], out=hs)
    # unbind once: per-step slicing (3 view ops per step) cost more than the step itself
    hs_t, decay_t = hs.unbind(1), decay.unbind(1)
    hs_t[0].addcmul_(decay_t[0], h0)
    for t in range(1, len(hs_t)):
        hs_t[t].addcmul_(decay_t[t], hs_t[t - 1])


class _Setup:
    """Shapes, dtypes, gatherers and chunk layout shared by forward and backward."""

    def __init__(self, u, delta, A, B, C, routes, chunk=None):
        self.cd = torch.float64 if u.dtype == torch.float64 else torch.float32
        self.batch, self.length, self.channels = u.shape
        self.K, self.N = A.shape[0], A.shape[-1]
        self.T = chunk or chunk_length(self.length, self.batch * self.K * self.channels * self.N)
        self.n_chunks = (self.length + self.T - 1) // self.T
        self.delta, self.B, self.C = _RouteGather(delta), _RouteGather(B), _RouteGather(C)
        self.kk = torch.arange(self.K, device=u.device)[:, None]
        self.offsets = self.kk * self.length
        self.A2 = (A.to(self.cd) * _LOG2E)[None, None]
        self.routes = routes

    def chunk(self, j):
        t0, t1 = j * self.T, min(self.length, (j + 1) * self.T)
        idx = self.routes[:, t0:t1]                                      # (K, T)
        # time-major order (t, k): a chunk's tokens land as (batch, T, K, ·), so the per-step
        # slab [:, t] is one contiguous block when batch = 1 (strided per-step slabs made each
        # addcmul_ slower)
        return idx, idx.t().reshape(-1), (idx + self.offsets).t().reshape(-1)

    def gather(self, u, idx, flat, flat_off):
        b, K, cd = self.batch, self.K, self.cd
        T = idx.shape[1]
        u_g = torch.index_select(u, 1, flat).view(b, T, K, self.channels).to(cd)
        d_g = self.delta.gather(idx, flat, flat_off, self.kk).to(cd)
        b_g = self.B.gather(idx, flat, flat_off, self.kk).to(cd)
        c_g = self.C.gather(idx, flat, flat_off, self.kk).to(cd)
        return u_g, d_g, b_g, c_g

    def buffers(self, count, device):
        shape = (self.batch, self.T, self.K, self.channels, self.N)
        return [torch.empty(shape, dtype=self.cd, device=device) for _ in range(count)]


def torch_scan_forward(u, delta, A, B, C, D, z, delta_bias, routes, delta_softplus, save_states=True,
                       chunk=None, sum_routes=True):
    """Forward. Shapes as ``multi_route_scan``.

    Returns (out (batch, L, channels) in u.dtype, y_pre (batch, L, channels) fp32 pre-gate sum,
    states (n_chunks, batch, K, channels, N) fp32); y_pre and states are empty tensors when
    ``save_states`` is False (no backward will follow) and y_pre is empty when z is None.
    ``chunk`` overrides the chunk length (to reproduce another backend's saved-state layout).
    ``sum_routes=False``: out is each route's output (batch, K, L, channels), z must be None.
    """
    s = _Setup(u, delta, A, B, C, routes, chunk)
    cd, dev = s.cd, u.device
    D_c = None if D is None else D.to(cd)[None, None]
    y = torch.zeros(s.batch, *(() if sum_routes else (s.K,)), s.length, s.channels, dtype=cd, device=dev)
    # per-route outputs: route k's rows are rows k·L + p of the flat (batch, K·L, channels) view
    y_flat = y if sum_routes else y.view(s.batch, s.K * s.length, s.channels)
    states = torch.empty((s.n_chunks, s.batch, s.K, s.channels, s.N) if save_states else (0,),
                         dtype=cd, device=dev)
    h = torch.zeros(s.batch, s.K, s.channels, s.N, dtype=cd, device=dev)
    # chunk buffers reused across chunks (fresh multi-MB allocations per chunk cost page faults)
    decay_buf, hs_buf = s.buffers(2, dev)
    for j in range(s.n_chunks):
        idx, flat, flat_off = s.chunk(j)
        steps = idx.shape[1]
        u_g, d_g, b_g, c_g = s.gather(u, idx, flat, flat_off)
        d, _ = _discretise(d_g, delta_bias, delta_softplus, cd)
        decay, hs = decay_buf[:, :steps], hs_buf[:, :steps]
        _chunk_states(d, u_g, b_g, s.A2, h, decay, hs)
        if save_states:
            states[j] = h
        h = hs[:, -1].clone()
        y_g = torch.einsum("btkcn,btkn->btkc", hs, c_g)                  # (b, T, K, c)
        if D_c is not None:
            y_g.addcmul_(D_c, u_g)
        y_flat.index_add_(1, flat if sum_routes else flat_off, y_g.reshape(s.batch, -1, s.channels))
    if z is not None:
        out = (y * F.silu(z.to(cd))).to(u.dtype)
        return out, (y if save_states else y.new_empty(0)), states
    return y.to(u.dtype), y.new_empty(0), states


def z_gate_backward(gout: torch.Tensor, z: torch.Tensor | None, y_pre: torch.Tensor,
                    cd: torch.dtype) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Through ``out = y * silu(z)``: the gradient for ``y`` (in ``cd``) and ``dz`` (z's dtype; None
    without a gate). ``gout`` is dL/dout in ``cd``, ``y_pre`` the saved ungated output."""
    if z is None:
        return gout, None
    zc = z.to(cd)
    sig = torch.sigmoid(zc)
    dz = (gout * y_pre * sig * (1 + zc * (1 - sig))).to(z.dtype)  # silu' = s(1 + z(1 - s))
    return gout * zc * sig, dz


def torch_scan_backward(grad_out, u, delta, A, B, C, D, z, delta_bias, routes, delta_softplus,
                        y_pre, states, chunk=None, sum_routes=True):
    """Backward. Returns (du, ddelta, dA, dB, dC, dD|None, dz|None, ddelta_bias|None), each in its
    input's dtype and shape; dA, dD, ddelta_bias are summed over batch and steps in fp32/fp64.
    ``grad_out`` is (batch, K, L, channels) when the forward ran with ``sum_routes=False``."""
    s = _Setup(u, delta, A, B, C, routes, chunk)
    cd, dev, b = s.cd, u.device, s.batch
    gout, dz = z_gate_backward(grad_out.to(cd), z, y_pre, cd)
    gout = gout.contiguous()
    if not sum_routes:
        gout = gout.view(b, s.K * s.length, s.channels)

    du = torch.zeros(b, s.length, s.channels, dtype=cd, device=dev)
    ddelta = torch.empty(delta.shape, dtype=delta.dtype, device=dev)
    dB = torch.empty(B.shape, dtype=B.dtype, device=dev)
    dC = torch.empty(C.shape, dtype=C.dtype, device=dev)
    ddelta_f = ddelta.view(b, -1, s.channels)
    dB_f, dC_f = dB.view(b, -1, s.N), dC.view(b, -1, s.N)
    dA = torch.zeros(A.shape, dtype=cd, device=dev)
    dD = None if D is None else torch.zeros(D.shape, dtype=cd, device=dev)
    dbias = None if delta_bias is None else torch.zeros(delta_bias.shape, dtype=cd, device=dev)
    D_c = None if D is None else D.to(cd)[None, None]
    A_c = A.to(cd)[None, None]
    g_carry = torch.zeros(b, s.K, s.channels, s.N, dtype=cd, device=dev)  # a_{t1}·g_{t1}
    decay_buf, hs_buf, g_buf, tmp_buf = s.buffers(4, dev)
    ones_n = torch.ones(s.N, dtype=cd, device=dev)

    for j in range(s.n_chunks - 1, -1, -1):
        idx, flat, flat_off = s.chunk(j)
        steps = idx.shape[1]
        u_g, d_g, b_g, c_g = s.gather(u, idx, flat, flat_off)
        d, d_pre = _discretise(d_g, delta_bias, delta_softplus, cd)
        decay, hs, g, tmp = (x[:, :steps] for x in (decay_buf, hs_buf, g_buf, tmp_buf))
        _chunk_states(d, u_g, b_g, s.A2, states[j], decay, hs)
        gy = torch.index_select(gout, 1, flat if sum_routes else flat_off).view(b, steps, s.K, s.channels)
        # adjoint of h: g_t = C_t·gy_t + a_{t+1}·g_{t+1}, carried in from the next chunk
        torch.mul(gy[..., None], c_g[:, :, :, None, :], out=g)
        g_t, decay_t = g.unbind(1), decay.unbind(1)
        g_t[-1].add_(g_carry)
        for t in range(steps - 2, -1, -1):
            g_t[t].addcmul_(decay_t[t + 1], g_t[t + 1])
        g_carry = decay[:, 0] * g[:, 0]
        # contractions: einsum for these layouts, mul+sum where einsum would permute-copy
        dC_g = torch.einsum("btkcn,btkc->btkn", hs, gy)                  # Σ_c gy·h
        du_scaled = d * u_g
        dB_g = torch.einsum("btkcn,btkc->btkn", g, du_scaled)            # Σ_c g·δu
        gB = torch.einsum("btkcn,btkn->btkc", g, b_g)                    # Σ_n g·B
        du_g = gB * d
        if D_c is not None:
            du_g.addcmul_(D_c, gy)
            dD += (gy * u_g).sum(dim=(0, 1))
        # decay path: ∂L/∂(δA)_t = g_t · h_{t-1} · a_t
        g.mul_(decay)
        g[:, 1:].mul_(hs[:, :-1])
        g[:, 0].mul_(states[j])
        # Σ_n as a matrix-vector product with ones: faster than .sum(-1) over a short last axis
        # (N = 16) on CPU
        dd = torch.mv(torch.mul(g, A_c, out=tmp).reshape(-1, s.N), ones_n).view(g.shape[:-1])
        dd.addcmul_(gB, u_g)                                             # ∂L/∂δ
        dA += torch.sum(torch.mul(g, d[..., None], out=tmp), dim=(0, 1))
        if d_pre is not None:
            dd.mul_(torch.sigmoid(d_pre))
        if dbias is not None:
            dbias += dd.sum(dim=(0, 1))
        du.index_add_(1, flat, du_g.reshape(b, -1, s.channels))
        ddelta_f.index_copy_(1, flat_off, dd.reshape(b, -1, s.channels).to(delta.dtype))
        dB_f.index_copy_(1, flat_off, dB_g.reshape(b, -1, s.N).to(B.dtype))
        dC_f.index_copy_(1, flat_off, dC_g.reshape(b, -1, s.N).to(C.dtype))
    return (du.to(u.dtype), ddelta, dA.to(A.dtype), dB, dC,
            None if dD is None else dD.to(D.dtype), dz,
            None if dbias is None else dbias.to(delta_bias.dtype))
