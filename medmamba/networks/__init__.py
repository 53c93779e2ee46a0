"""Segmentation networks (2D and 3D) built from shared blocks; construct them by registry name."""
from medmamba.networks.registry import build_network, get_network_entry, list_networks, register_network

__all__ = ["build_network", "get_network_entry", "list_networks", "register_network"]
