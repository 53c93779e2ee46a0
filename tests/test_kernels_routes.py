"""Routes: permutations, reversals, neighbour walks, named sets and schedules."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from medmamba.errors import KernelError
from medmamba.kernels.routes import (
    ROUTE_SETS,
    RouteSchedule,
    build_route,
    build_routes,
    inverse_route,
    route_names,
)

SHAPES = [(1, 1), (1, 7), (5, 7), (8, 8), (6, 4), (7, 7), (2, 3, 4), (4, 5, 6), (8, 8, 8), (3, 1, 5)]


def _steps(route: np.ndarray, shape) -> np.ndarray:
    coords = np.stack(np.unravel_index(route, shape), axis=1)
    return np.abs(np.diff(coords, axis=0)).sum(axis=1)


@pytest.mark.parametrize("shape", SHAPES)
def test_every_route_is_a_permutation_and_reverse_twice_is_identity(shape):
    length = int(np.prod(shape))
    for name in route_names(len(shape)):
        route = build_route(name, shape)
        assert route.dtype == np.int64 and route.shape == (length,)
        assert np.array_equal(np.sort(route), np.arange(length)), name
        rev = build_route(name + "_rev", shape)
        assert np.array_equal(rev, route[::-1])
        assert np.array_equal(build_route(name + "_rev_rev", shape), route)
        assert torch.equal(build_routes([name], shape)[0], torch.from_numpy(route.copy()))


@pytest.mark.parametrize("shape", [(5, 7), (8, 8), (6, 4), (7, 7), (1, 9), (2, 3, 4), (4, 5, 6), (3, 1, 5)])
def test_snake_routes_visit_neighbours(shape):
    axes = "hw" if len(shape) == 2 else "dhw"
    import itertools
    for order in ["".join(p) for p in itertools.permutations(axes)]:
        assert _steps(build_route(f"snake_{order}", shape), shape).max() == 1, order
    assert _steps(build_route("snake", shape), shape).max() == 1


@pytest.mark.parametrize("shape", [(8, 8), (16, 16), (5, 7), (6, 4), (7, 7), (12, 20), (3, 10)])
def test_hilbert_2d_visits_neighbours_for_any_size(shape):
    steps = _steps(build_route("hilbert", shape), shape)
    # generalised Hilbert: unit steps; odd×odd-parity cases may take one diagonal step
    assert steps.max() <= 2
    assert (steps > 1).sum() <= 1


@pytest.mark.parametrize("shape", [(2, 2, 2), (4, 4, 4), (8, 8, 8), (6, 4, 10), (12, 20, 8), (2, 6, 14)])
def test_hilbert_3d_visits_neighbours_on_even_sizes(shape):
    assert _steps(build_route("hilbert", shape), shape).max() == 1


@pytest.mark.parametrize("shape", [(5, 6, 7), (3, 9, 5), (1, 4, 7)])
def test_hilbert_3d_odd_sizes_are_permutations_with_mostly_unit_steps(shape):
    route = build_route("hilbert", shape)
    assert np.array_equal(np.sort(route), np.arange(int(np.prod(shape))))
    assert np.mean(_steps(route, shape) == 1) > 0.9


def test_known_small_routes():
    # VMamba cross2d on 2x3 (MzeroMiko/VMamba csm_triton.py CrossScan)
    r = build_routes("cross2d", (2, 3))
    assert r.tolist() == [[0, 1, 2, 3, 4, 5], [0, 3, 1, 4, 2, 5], [5, 4, 3, 2, 1, 0], [5, 2, 4, 1, 3, 0]]
    assert build_route("zigzag", (3, 4)).tolist() == [0, 1, 4, 8, 5, 2, 3, 6, 9, 10, 7, 11]
    assert build_route("spiral", (3, 4)).tolist() == [0, 1, 2, 3, 7, 11, 10, 9, 8, 4, 5, 6]
    assert build_route("morton", (2, 4)).tolist() == [0, 1, 4, 5, 2, 3, 6, 7]
    # SegMamba inter-slice: one in-plane position across all slices consecutively
    assert build_route("interslice", (2, 1, 3)).tolist() == [0, 3, 1, 4, 2, 5]
    assert build_route("snake_hw", (2, 3)).tolist() == [0, 1, 2, 5, 4, 3]


def test_route_sets_sizes_and_dtype():
    assert build_routes("cross2d", (4, 5)).shape == (4, 20)
    assert build_routes("cross3d", (2, 3, 4)).shape == (6, 24)
    assert build_routes("bidirectional", (3, 3)).shape == (2, 9)
    assert build_routes("mhs", (6, 6)).shape == (16, 36)
    assert build_routes("mhs", (2, 6, 6)).shape == (16, 72)
    tom = build_routes("tom", (2, 3, 4))
    assert tom.dtype == torch.long and tom.shape == (3, 24)
    for nd, sets in ROUTE_SETS.items():
        shape = (3, 4) if nd == 2 else (2, 3, 4)
        for name in sets:
            r = build_routes(name, shape)
            assert torch.equal(r.sort(dim=1).values, torch.arange(r.shape[1]).expand_as(r))
    assert build_routes(["hilbert", "spiral_rev"], (4, 4)).shape == (2, 16)


def test_inverse_route():
    r = build_routes("mhs", (5, 6))
    inv = inverse_route(r)
    ar = torch.arange(30).expand(16, 30)
    assert torch.equal(torch.gather(r, 1, inv), ar)
    assert torch.equal(torch.gather(inv, 1, r), ar)


def test_route_errors_are_kernel_errors():
    with pytest.raises(KernelError, match="unknown route"):
        build_routes("diagonalish", (4, 4))
    with pytest.raises(KernelError, match="spatial_shape"):
        build_routes("cross2d", (4,))
    with pytest.raises(KernelError, match="unknown route"):
        build_routes("raster_dhw", (4, 4))
    with pytest.raises(KernelError, match="defined for 2D grids"):
        build_routes("cross2d", (2, 4, 4))
    with pytest.raises(KernelError):
        RouteSchedule("cross2d", mode="sometimes")


def test_route_schedule_all_and_rotate():
    full = RouteSchedule("cross2d")
    assert full.num_routes(2) == 4
    assert torch.equal(full.routes_for_layer(3, (4, 4)), build_routes("cross2d", (4, 4)))
    rot = RouteSchedule("cross2d", mode="rotate", routes_per_layer=1)
    assert rot.num_routes(2) == 1
    names = [rot.route_names_for_layer(i, 2) for i in range(5)]
    assert names == [("row",), ("col",), ("row_rev",), ("col_rev",), ("row",)]
    rot2 = RouteSchedule("cross3d", mode="rotate", routes_per_layer=2)
    assert rot2.routes_for_layer(1, (2, 3, 4)).shape == (2, 24)
    assert rot2.route_names_for_layer(1, 3) == ("raster_wdh", "raster_dhw_rev")
    assert RouteSchedule(["raster", "hilbert"], mode="rotate").route_names_for_layer(1, 2) == ("hilbert",)


def test_cache_cannot_be_corrupted_through_returned_routes():
    a = build_route("hilbert", (9, 11))
    with pytest.raises(ValueError):
        a[0] = 5  # numpy views of the cache are read-only
    t = build_routes("hilbert", (9, 11))
    t[0, 0] = 7  # tensors are copies: mutating one leaves the cache intact
    assert build_route("hilbert", (9, 11))[0] == 0 and build_routes("hilbert", (9, 11))[0, 0] == 0
    assert np.array_equal(np.sort(build_route("hilbert", (9, 11))), np.arange(99))


def test_routes_module_needs_no_numpy():
    """medmamba.kernels must import on a bare torch(+triton) install: torch does not require numpy
    (build_route, the numpy-returning helper, imports numpy lazily)."""
    import ast
    import inspect

    import medmamba.kernels.ops as ops_mod
    import medmamba.kernels.reference as ref_mod
    import medmamba.kernels.routes as routes_mod
    import medmamba.kernels.torch_scan as scan_mod

    for mod in (routes_mod, ops_mod, ref_mod, scan_mod):
        top = ast.parse(inspect.getsource(mod)).body  # module-level imports (lazy ones inside functions are fine)
        imported = {a.name.split(".")[0] for n in top if isinstance(n, ast.Import) for a in n.names}
        imported |= {n.module.split(".")[0] for n in top if isinstance(n, ast.ImportFrom) and n.module}
        assert imported <= {"__future__", "functools", "itertools", "math", "dataclasses", "typing", "os",
                            "warnings", "torch", "medmamba"}, (mod.__name__, imported)


def test_route_cache_is_built_on_cpu_under_a_meta_default_device():
    """A build under ``torch.device("meta")`` must not leave data-less routes in the cache."""
    from medmamba.kernels.routes import _cached_route, build_route

    _cached_route.cache_clear()
    with torch.device("meta"):
        _cached_route("snake", (5, 7))
    assert _cached_route("snake", (5, 7)).device.type == "cpu"
    assert sorted(build_route("snake", (5, 7)).tolist()) == list(range(35))
