"""Scan routes: index maps that say in which order the tokens of a 2D or 3D grid are visited.

A route over a grid of ``spatial_shape`` (``(H, W)`` or ``(D, H, W)``) is an int64 permutation
``perm`` of ``range(L)``, ``L = prod(spatial_shape)``: ``perm[t]`` is the raster (row-major, last
axis fastest) index of the ``t``-th visited token. ``build_routes`` stacks K of them into a
``(K, L)`` LongTensor for :func:`medmamba.kernels.ops.multi_route_scan`.

Route names (letters name grid axes, slowest first; 2D axes ``h w``, 3D axes ``d h w``):

- ``raster`` (natural order), ``raster_<axes>`` e.g. ``raster_wh`` (column-major) or any of the
  6 3D orders ``raster_dhw`` … ``raster_whd``; aliases ``row`` = ``raster_hw``, ``col`` = ``raster_wh``.
- ``snake`` / ``snake_<axes>``: boustrophedon; consecutive tokens are always grid neighbours.
- ``zigzag`` / ``zigzag_mirror``: JPEG-style anti-diagonal zigzag from (0, 0) (mirror: w → W−1−w);
  3D: the 2D route on each depth slice, slices in order.
- ``spiral`` / ``spiral_mirror``: clockwise spiral from the top-left corner inwards (mirror:
  h → H−1−h); 3D: per slice.
- ``hilbert``: generalised Hilbert curves for any size. 2D (any H×W): neighbour to neighbour
  (at most one diagonal step for some odd sizes). 3D: the classic curve on power-of-two cubes,
  the generalised ("gilbert3d") curve otherwise — neighbour to neighbour when all sizes are even,
  a few diagonal steps when some are odd.
- ``morton``: Z-order (bit interleaving of coordinates), any sizes.
- ``interslice``: SegMamba's inter-slice route (one in-plane position across all slices
  consecutively; = ``raster_hwd`` in 3D, ``raster_wh`` in 2D).
- any name + ``_rev``: the same route backwards (``x_rev_rev`` = ``x``).

Named sets (``ROUTE_SETS``): ``cross2d`` (VMamba's 4), ``cross3d`` (each axis fastest once, + reverses),
``bidirectional`` (Vim), ``mhs`` (MHS-VM heads C, X, S, Z, each ``[r0, r0_rev, r1, r1_rev]``),
``tom`` (SegMamba's tri-orientated routes).
"""
from __future__ import annotations

import functools
import itertools
import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from medmamba.errors import KernelError

__all__ = [
    "ROUTE_SETS",
    "RouteSchedule",
    "build_route",
    "build_routes",
    "inverse_route",
    "route_names",
]

# Route sets; order matters (per-route parameters are indexed by position in the set).
# cross2d: VMamba CrossScan order (MzeroMiko/VMamba csm_triton.py).
# mhs: MHS-VM head order C, X, S, Z, each [route0, reverse(route0), route1, reverse(route1)]
#      (PixDeep/MHS-VM mhsm.py, scanutils.py).
# tom: SegMamba ToM = forward raster, reversed raster, inter-slice (SegMamba, arXiv 2401.13560).
ROUTE_SETS_2D: dict[str, tuple[str, ...]] = {
    "cross2d": ("row", "col", "row_rev", "col_rev"),
    "bidirectional": ("raster", "raster_rev"),
    "mhs": (
        "snake_hw", "snake_hw_rev", "snake_wh", "snake_wh_rev",
        "zigzag", "zigzag_rev", "zigzag_mirror", "zigzag_mirror_rev",
        "spiral", "spiral_rev", "spiral_mirror", "spiral_mirror_rev",
        "raster_hw", "raster_hw_rev", "raster_wh", "raster_wh_rev",
    ),
    "tom": ("raster", "raster_rev", "interslice"),
}
ROUTE_SETS_3D: dict[str, tuple[str, ...]] = {
    # Each axis is the fastest-varying one in exactly one base route, plus the reverses.
    "cross3d": ("raster_dhw", "raster_hwd", "raster_wdh",
                "raster_dhw_rev", "raster_hwd_rev", "raster_wdh_rev"),
    "bidirectional": ("raster", "raster_rev"),
    "mhs": (
        "snake_dhw", "snake_dhw_rev", "snake_dwh", "snake_dwh_rev",
        "zigzag", "zigzag_rev", "zigzag_mirror", "zigzag_mirror_rev",
        "spiral", "spiral_rev", "spiral_mirror", "spiral_mirror_rev",
        "raster_dhw", "raster_dhw_rev", "raster_dwh", "raster_dwh_rev",
    ),
    "tom": ("raster", "raster_rev", "interslice"),
}
ROUTE_SETS: dict[int, dict[str, tuple[str, ...]]] = {2: ROUTE_SETS_2D, 3: ROUTE_SETS_3D}

_AXES = {2: "hw", 3: "dhw"}


def _check_shape(spatial_shape: Sequence[int]) -> tuple[int, ...]:
    shape = tuple(int(s) for s in spatial_shape)
    if len(shape) not in (2, 3) or any(s < 1 for s in shape):
        raise KernelError(f"spatial_shape must be 2 or 3 positive sizes, got {tuple(spatial_shape)}")
    return shape


def _numel(shape: tuple[int, ...]) -> int:
    return int(math.prod(shape))


def _raster(shape: tuple[int, ...], order: str) -> torch.Tensor:
    """Raster over the axes in ``order`` (slowest first)."""
    axes = [_AXES[len(shape)].index(c) for c in order]
    grid = torch.arange(_numel(shape), dtype=torch.int64).reshape(shape)
    return grid.permute(axes).reshape(-1)


def _snake(shape: tuple[int, ...], order: str) -> torch.Tensor:
    """N-D boustrophedon over the axes in ``order``: the sub-route of every odd index of an
    axis is reversed, so the last token of one line is the neighbour of the first of the next."""
    axes = [_AXES[len(shape)].index(c) for c in order]
    grid = torch.arange(_numel(shape), dtype=torch.int64).reshape(shape).permute(axes)

    def walk(block: torch.Tensor) -> torch.Tensor:
        if block.dim() == 1:
            return block
        parts = [walk(block[i]) for i in range(block.shape[0])]
        return torch.cat([p if i % 2 == 0 else p.flip(0) for i, p in enumerate(parts)])

    return walk(grid)


def _zigzag2d(h: int, w: int) -> torch.Tensor:
    """JPEG zigzag: anti-diagonals s = i + j; odd s walked with i increasing, even s decreasing."""
    out: list[int] = []
    for s in range(h + w - 1):
        i_lo, i_hi = max(0, s - w + 1), min(h - 1, s)
        rows = range(i_lo, i_hi + 1) if s % 2 == 1 else range(i_hi, i_lo - 1, -1)
        out.extend(i * w + (s - i) for i in rows)
    return torch.tensor(out, dtype=torch.int64)


def _spiral2d(h: int, w: int) -> torch.Tensor:
    """Clockwise spiral from (0, 0) inwards: top row →, right column ↓, bottom row ←, left ↑."""
    out: list[int] = []
    top, bottom, left, right = 0, h - 1, 0, w - 1
    while top <= bottom and left <= right:
        out.extend(top * w + j for j in range(left, right + 1))
        out.extend(i * w + right for i in range(top + 1, bottom + 1))
        if top < bottom:
            out.extend(bottom * w + j for j in range(right - 1, left - 1, -1))
        if left < right:
            out.extend(i * w + left for i in range(bottom - 1, top, -1))
        top, bottom, left, right = top + 1, bottom - 1, left + 1, right - 1
    return torch.tensor(out, dtype=torch.int64)


def _gilbert2d(h: int, w: int) -> torch.Tensor:
    """Generalised Hilbert curve on an arbitrary h×w rectangle (Červený's recursive splitting:
    halve the long side, or split into three so each part keeps an even side where possible)."""
    coords: list[tuple[int, int]] = []

    def sgn(v: int) -> int:
        return (v > 0) - (v < 0)

    def gen(x: int, y: int, ax: int, ay: int, bx: int, by: int) -> None:
        width, height = abs(ax + ay), abs(bx + by)
        dax, day, dbx, dby = sgn(ax), sgn(ay), sgn(bx), sgn(by)
        if height == 1:
            for _ in range(width):
                coords.append((x, y))
                x, y = x + dax, y + day
            return
        if width == 1:
            for _ in range(height):
                coords.append((x, y))
                x, y = x + dbx, y + dby
            return
        ax2, ay2, bx2, by2 = ax // 2, ay // 2, bx // 2, by // 2
        w2, h2 = abs(ax2 + ay2), abs(bx2 + by2)
        if 2 * width > 3 * height:
            if w2 % 2 and width > 2:
                ax2, ay2 = ax2 + dax, ay2 + day
            gen(x, y, ax2, ay2, bx, by)
            gen(x + ax2, y + ay2, ax - ax2, ay - ay2, bx, by)
        else:
            if h2 % 2 and height > 2:
                bx2, by2 = bx2 + dbx, by2 + dby
            gen(x, y, bx2, by2, ax2, ay2)
            gen(x + bx2, y + by2, ax, ay, bx - bx2, by - by2)
            gen(x + (ax - dax) + (bx2 - dbx), y + (ay - day) + (by2 - dby),
                -bx2, -by2, -(ax - ax2), -(ay - ay2))

    # x runs along w (columns), y along h (rows); start along the longer side.
    if w >= h:
        gen(0, 0, w, 0, 0, h)
    else:
        gen(0, 0, 0, h, w, 0)
    xy = torch.tensor(coords, dtype=torch.int64)
    return xy[:, 1] * w + xy[:, 0]


def _coords(shape: tuple[int, ...]) -> torch.Tensor:
    """Integer coordinates (L, ndim) of every raster position, row-major."""
    flat = torch.arange(_numel(shape), dtype=torch.int64)
    cols = []
    for size in reversed(shape):
        cols.append(flat % size)
        flat = flat // size
    return torch.stack(cols[::-1], dim=1)


def _hilbert_index(coords: torch.Tensor, bits: int) -> torch.Tensor:
    """Hilbert index of integer points ``coords`` (n_points, ndim) in a 2^bits cube, using
    Skilling's transpose algorithm ("Programming the Hilbert curve", AIP Conf. Proc. 707, 2004)."""
    x = [coords[:, i].clone() for i in range(coords.shape[1])]
    n = len(x)
    q = 1 << (bits - 1)
    while q > 1:  # undo excess work
        p = q - 1
        for i in range(n):
            hit = (x[i] & q) != 0
            x[0] = torch.where(hit, x[0] ^ p, x[0])
            t = torch.where(hit, torch.zeros_like(x[0]), (x[0] ^ x[i]) & p)
            x[0] = x[0] ^ t
            x[i] = x[i] ^ t
        q >>= 1
    for i in range(1, n):  # Gray encode
        x[i] = x[i] ^ x[i - 1]
    t = torch.zeros_like(x[0])
    q = 1 << (bits - 1)
    while q > 1:
        t = torch.where((x[n - 1] & q) != 0, t ^ (q - 1), t)
        q >>= 1
    x = [xi ^ t for xi in x]
    index = torch.zeros_like(x[0])
    for b in range(bits - 1, -1, -1):  # interleave the transposed bits, axis 0 most significant
        for i in range(n):
            index = (index << 1) | ((x[i] >> b) & 1)
    return index


def _bits(shape: tuple[int, ...]) -> int:
    return max(1, math.ceil(math.log2(max(shape))))


def _gilbert3d(d: int, h: int, w: int) -> torch.Tensor:
    """Generalised 3D Hilbert curve on an arbitrary d×h×w box (Červený's gilbert3d splitting,
    re-implemented): every step is to a face neighbour when all sizes are even; odd sizes force a
    few diagonal steps. Pure Python recursion: ~1 s for 64³ on our CPU (cached per shape)."""
    pts: list[tuple[int, int, int]] = []

    def sgn(v: int) -> int:
        return (v > 0) - (v < 0)

    def add(*vs):
        return tuple(sum(c) for c in zip(*vs))

    def neg(a):
        return tuple(-c for c in a)

    def sub(a, b):
        return add(a, neg(b))

    def size(a) -> int:
        return abs(sum(a))

    def fill(p, step, n) -> None:
        for _ in range(n):
            pts.append(p)
            p = add(p, step)

    def gen(p, a, b, c) -> None:
        # a: major direction, b and c: the two orthogonal ones (vectors spanning the box)
        wa, hb, dc = size(a), size(b), size(c)
        ua, ub, uc = (tuple(sgn(v) for v in x) for x in (a, b, c))
        if hb == 1 and dc == 1:
            return fill(p, ua, wa)
        if wa == 1 and dc == 1:
            return fill(p, ub, hb)
        if wa == 1 and hb == 1:
            return fill(p, uc, dc)
        a2, b2, c2 = (tuple(v // 2 for v in x) for x in (a, b, c))
        # prefer even halves, so sub-boxes can be traversed end to end
        if size(a2) % 2 and wa > 2:
            a2 = add(a2, ua)
        if size(b2) % 2 and hb > 2:
            b2 = add(b2, ub)
        if size(c2) % 2 and dc > 2:
            c2 = add(c2, uc)
        if 2 * wa > 3 * hb and 2 * wa > 3 * dc:      # long box: split the major side only
            gen(p, a2, b, c)
            gen(add(p, a2), sub(a, a2), b, c)
        elif 3 * hb > 4 * dc:                         # flat in c: do not split c
            gen(p, b2, c, a2)
            gen(add(p, b2), a, sub(b, b2), c)
            gen(add(p, sub(a, ua), sub(b2, ub)), neg(b2), c, neg(sub(a, a2)))
        elif 3 * dc > 4 * hb:                         # flat in b: do not split b
            gen(p, c2, a2, b)
            gen(add(p, c2), a, b, sub(c, c2))
            gen(add(p, sub(a, ua), sub(c2, uc)), neg(c2), neg(sub(a, a2)), b)
        else:                                         # split all three sides
            gen(p, b2, c2, a2)
            gen(add(p, b2), c, a2, sub(b, b2))
            gen(add(p, sub(b2, ub), sub(c, uc)), a, neg(b2), neg(sub(c, c2)))
            gen(add(p, sub(a, ua), b2, sub(c, uc)), neg(c), neg(sub(a, a2)), sub(b, b2))
            gen(add(p, sub(a, ua), sub(b2, ub)), neg(b2), c2, neg(sub(a, a2)))

    # points are (x along w, y along h, z along d); start along the longest side
    origin = (0, 0, 0)
    if w >= h and w >= d:
        gen(origin, (w, 0, 0), (0, h, 0), (0, 0, d))
    elif h >= w and h >= d:
        gen(origin, (0, h, 0), (w, 0, 0), (0, 0, d))
    else:
        gen(origin, (0, 0, d), (w, 0, 0), (0, h, 0))
    xyz = torch.tensor(pts, dtype=torch.int64)
    return (xyz[:, 2] * h + xyz[:, 1]) * w + xyz[:, 0]


def _hilbert3d(shape: tuple[int, ...]) -> torch.Tensor:
    d, h, w = shape
    if d == h == w and d & (d - 1) == 0:
        # power-of-two cube: the classic curve, vectorised (fast at 128³)
        return torch.argsort(_hilbert_index(_coords(shape), _bits(shape)), stable=True)
    return _gilbert3d(d, h, w)


def _morton(shape: tuple[int, ...]) -> torch.Tensor:
    coords = _coords(shape)
    code = torch.zeros(coords.shape[0], dtype=torch.int64)
    for b in range(_bits(shape) - 1, -1, -1):
        for i in range(coords.shape[1]):
            code = (code << 1) | ((coords[:, i] >> b) & 1)
    return torch.argsort(code, stable=True)


def _per_slice(shape: tuple[int, ...], route2d: Callable[[int, int], torch.Tensor]) -> torch.Tensor:
    if len(shape) == 2:
        return route2d(*shape)
    d, h, w = shape
    base = route2d(h, w)
    return (torch.arange(d, dtype=torch.int64)[:, None] * (h * w) + base[None, :]).reshape(-1)


def _mirror_w(route2d):
    def build(h: int, w: int) -> torch.Tensor:
        r = route2d(h, w)
        return (r // w) * w + (w - 1 - r % w)
    return build


def _mirror_h(route2d):
    def build(h: int, w: int) -> torch.Tensor:
        r = route2d(h, w)
        return (h - 1 - r // w) * w + r % w
    return build


def _base_route(name: str, shape: tuple[int, ...]) -> torch.Tensor:
    ndim = len(shape)
    axes = _AXES[ndim]
    aliases = {"row": "raster_hw", "col": "raster_wh"} if ndim == 2 else {}
    name = aliases.get(name, name)
    if name == "raster":
        return torch.arange(_numel(shape), dtype=torch.int64)
    for kind, fn in (("raster_", _raster), ("snake_", _snake)):
        if name.startswith(kind):
            order = name[len(kind):]
            if sorted(order) != sorted(axes):
                break
            return fn(shape, order)
    if name == "snake":
        return _snake(shape, axes)
    if name == "interslice":
        return _raster(shape, "wh" if ndim == 2 else "hwd")
    if name == "zigzag":
        return _per_slice(shape, _zigzag2d)
    if name == "zigzag_mirror":
        return _per_slice(shape, _mirror_w(_zigzag2d))
    if name == "spiral":
        return _per_slice(shape, _spiral2d)
    if name == "spiral_mirror":
        return _per_slice(shape, _mirror_h(_spiral2d))
    if name == "hilbert":
        return _gilbert2d(*shape) if ndim == 2 else _hilbert3d(shape)
    if name == "morton":
        return _morton(shape)
    raise KernelError(f"unknown route {name!r} for a {ndim}D grid; known: {', '.join(route_names(ndim))}")


@functools.lru_cache(maxsize=256)
def _cached_route(name: str, shape: tuple[int, ...]) -> torch.Tensor:
    """Cached route; handed out only as copies (build_routes) or read-only arrays (build_route).
    Built on the CPU whatever the caller's default device (a ``torch.device("meta")`` context would
    otherwise leave data-less tensors in the cache for every later caller)."""
    with torch.device("cpu"):
        if name.endswith("_rev"):
            return _cached_route(name[: -len("_rev")], shape).flip(0)
        return _base_route(name, shape).contiguous()


def route_names(ndim: int) -> list[str]:
    """Base route names for a grid of ``ndim`` (2 or 3) axes; each also exists with ``_rev``."""
    axes = _AXES[ndim]
    perms = ["".join(p) for p in itertools.permutations(axes)]
    names = ["raster"] + [f"raster_{p}" for p in perms] + ["snake"] + [f"snake_{p}" for p in perms]
    names += ["zigzag", "zigzag_mirror", "spiral", "spiral_mirror", "hilbert", "morton", "interslice"]
    if ndim == 2:
        names += ["row", "col"]
    return names


def build_route(name: str, spatial_shape: Sequence[int]):
    """One route as a read-only int64 numpy array ``(L,)`` (computed once per (name, shape)).

    numpy is imported here, not at module import: ``build_routes`` (tensors) needs torch only.
    """
    import numpy as np

    array = np.asarray(_cached_route(str(name), _check_shape(spatial_shape)).numpy())
    array = array.view()
    array.flags.writeable = False  # a view of the cache: read-only so it cannot be corrupted
    return array


def _expand_spec(spec: str | Sequence[str], ndim: int) -> tuple[str, ...]:
    if isinstance(spec, str):
        sets = ROUTE_SETS[ndim]
        if spec in sets:
            return sets[spec]
        other = 5 - ndim
        if spec in ROUTE_SETS[other]:
            raise KernelError(f"route set {spec!r} is defined for {other}D grids, not {ndim}D; "
                              f"{ndim}D sets: {', '.join(sets)}")
        return (spec,)
    names = tuple(spec)
    if not names:
        raise KernelError("route spec is an empty list")
    return names


def build_routes(spec: str | Sequence[str], spatial_shape: Sequence[int],
                 device: torch.device | str | None = None) -> torch.Tensor:
    """Stack the routes named by ``spec`` (a set name from ``ROUTE_SETS`` or route names) for a
    grid ``spatial_shape`` ((H, W) or (D, H, W)) into an int64 tensor ``(K, L)``, L = prod(shape).

    Row k is a permutation of range(L): row[k, t] = raster index of the t-th token visited.
    """
    shape = _check_shape(spatial_shape)
    names = _expand_spec(spec, len(shape))
    stacked = torch.stack([_cached_route(str(n), shape) for n in names])  # a new tensor, never the cache
    return stacked if device is None else stacked.to(device)


def inverse_route(route: torch.Tensor) -> torch.Tensor:
    """Inverse permutation(s) of ``route`` ``(..., L)``: inv[..., route[..., t]] = t."""
    inv = torch.empty_like(route)
    ar = torch.arange(route.shape[-1], device=route.device).expand_as(route)
    inv.scatter_(-1, route, ar)
    return inv


@dataclass(frozen=True)
class RouteSchedule:
    """Which routes each layer scans.

    ``mode="all"``: every layer runs every route of ``spec`` (K per layer, VMamba style).
    ``mode="rotate"``: layer i runs ``routes_per_layer`` consecutive routes of the set starting
    at ``(i * routes_per_layer) mod K`` (LinGen's rotary-major idea: a deep stack still sees every
    route while each layer pays for only a few — the cheaper option at high resolution).
    """

    spec: str | tuple[str, ...]
    mode: str = "all"
    routes_per_layer: int = 1

    def __post_init__(self) -> None:
        if self.mode not in ("all", "rotate"):
            raise KernelError(f"RouteSchedule mode must be 'all' or 'rotate', got {self.mode!r}")
        if not isinstance(self.spec, str):
            object.__setattr__(self, "spec", tuple(self.spec))
        if self.routes_per_layer < 1:
            raise KernelError(f"routes_per_layer must be >= 1, got {self.routes_per_layer}")

    def num_routes(self, ndim: int) -> int:
        """K used by every layer (constant across layers so per-route parameters have one shape)."""
        total = len(_expand_spec(self.spec, ndim))
        return total if self.mode == "all" else min(self.routes_per_layer, total)

    def route_names_for_layer(self, layer: int, ndim: int) -> tuple[str, ...]:
        names = _expand_spec(self.spec, ndim)
        if self.mode == "all":
            return names
        k = self.num_routes(ndim)
        start = (layer * k) % len(names)
        return tuple(names[(start + j) % len(names)] for j in range(k))

    def routes_for_layer(self, layer: int, spatial_shape: Sequence[int],
                         device: torch.device | str | None = None) -> torch.Tensor:
        """``(K, L)`` int64 routes that layer ``layer`` scans on a grid ``spatial_shape``."""
        shape = _check_shape(spatial_shape)
        return build_routes(list(self.route_names_for_layer(layer, len(shape))), shape, device)
