"""Multi-route selective-scan kernels: route builders and the ``multi_route_scan`` operator.

Imports torch only (triton is imported lazily by the triton backend).
"""
from medmamba.kernels.ops import BACKENDS, multi_route_scan, resolve_backend
from medmamba.kernels.routes import ROUTE_SETS, RouteSchedule, build_route, build_routes, inverse_route

__all__ = [
    "BACKENDS",
    "ROUTE_SETS",
    "RouteSchedule",
    "build_route",
    "build_routes",
    "inverse_route",
    "multi_route_scan",
    "resolve_backend",
]
