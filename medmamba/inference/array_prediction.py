"""Predict one preprocessed case: sliding window × mirror TTA × fold ensemble → probabilities.

This is the library entry point shared by ``medmamba predict`` and training's final validation
(docs/internals.md): it takes networks and a preprocessed array, never files.
"""
from __future__ import annotations

import itertools
from typing import Callable, Sequence

import numpy as np
import torch

from medmamba.errors import NetworkError
from medmamba.inference.sliding_window import DEFAULT_BATCH_WINDOWS, DEFAULT_STEP, sliding_window_logits


def mirror_subsets(mirror_axes: Sequence[int] | None) -> list[tuple[int, ...]]:
    """Every subset of ``mirror_axes`` (the empty one = no flip first): 3 axes → 8 passes (nnU-Net)."""
    axes = sorted({int(a) for a in (mirror_axes or ())})
    return [c for r in range(len(axes) + 1) for c in itertools.combinations(axes, r)]


def mirrored_logits(
    network: Callable[[torch.Tensor], torch.Tensor],
    data: torch.Tensor,
    patch_size: Sequence[int],
    mirror_axes: Sequence[int] | None,
    **window_kwargs,
) -> torch.Tensor:
    """Mean over mirror subsets of ``flip⁻¹(sliding_window(flip(data)))``.

    ``mirror_axes`` index the patch's spatial axes (0 = first spatial axis of the patch), as stored
    in the checkpoint's ``mirror_axes``; for a 2D patch on 3D data they refer to the last two axes.
    Returns ``(K, *spatial)`` float32 logits.
    """
    extra = data.ndim - 1 - len(patch_size)
    for a in mirror_axes or ():
        if not 0 <= int(a) < len(patch_size):
            raise NetworkError(f"mirror axis {a} is not a spatial axis of a {len(patch_size)}D patch")
    total: torch.Tensor | None = None
    subsets = mirror_subsets(mirror_axes)
    for subset in subsets:
        dims = [1 + extra + a for a in subset]
        flipped = torch.flip(data, dims) if dims else data
        logits = sliding_window_logits(network, flipped, patch_size, **window_kwargs)
        if dims:
            logits = torch.flip(logits, dims)
        total = logits if total is None else total.add_(logits.to(total.device))  # auto may pick another device per pass
    assert total is not None
    return total / len(subsets)


def logits_to_probabilities(logits: torch.Tensor, regions: bool = False) -> torch.Tensor:
    """Softmax over classes (axis 0), or an independent sigmoid per region when ``regions``."""
    return torch.sigmoid(logits) if regions else torch.softmax(logits, dim=0)


def predict_preprocessed_case(
    networks: torch.nn.Module | Sequence[torch.nn.Module],
    data: np.ndarray | torch.Tensor,
    patch_size: Sequence[int],
    mirror_axes: Sequence[int] | None = None,
    step: float = DEFAULT_STEP,
    use_gaussian: bool = True,
    batch_windows: int = DEFAULT_BATCH_WINDOWS,
    device: torch.device | str | None = None,
    regions: bool = False,
    amp: bool = True,
    progress: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """Class probabilities of one preprocessed case.

    Args:
        networks: one network or one per fold (already on ``device``; put in eval mode here).
        data: ``(C, *spatial)`` float32 preprocessed image in internal axis order.
        patch_size: tile size (voxels) of the configuration.
        mirror_axes: patch axes to mirror for TTA (the checkpoint's ``mirror_axes``); None/() = no TTA.
        step: tile step as a fraction of the patch (nnU-Net default 0.5).
        use_gaussian: gaussian importance weighting of tiles (nnU-Net default on).
        batch_windows: tiles per forward pass.
        device: where to run; defaults to the first network's parameters' device.
        regions: sigmoid per region instead of softmax over classes.
        amp: float16 autocast on CUDA.
        progress: called with the number of tiles done after each forward pass.

    Returns:
        ``(K, *spatial)`` float32 probabilities on the CPU: per network, logits averaged over the
        tiles and mirror passes (nnU-Net averages logits), converted to probabilities, then the
        probabilities of all networks (folds) averaged.

    On a GPU the tile sums stay on the device while they fit (:func:`accumulation_plan`); otherwise, and when
    the GPU runs out of memory anyway, the device sums a band of rows at a time and finished rows move to
    host memory (never a whole-image sum computed on the CPU).
    """
    if isinstance(networks, torch.nn.Module):
        networks = [networks]
    if not networks:
        raise NetworkError("no network to predict with")
    if device is None:
        first = next(iter(networks[0].parameters()), None)
        device = first.device if first is not None else torch.device("cpu")
    device = torch.device(device)
    tensor = torch.as_tensor(np.asarray(data) if not isinstance(data, torch.Tensor) else data)
    tensor = tensor.to(dtype=torch.float32)
    if tensor.ndim != len(patch_size) + 1 and tensor.ndim != len(patch_size) + 2:
        raise NetworkError(
            f"preprocessed data of shape {tuple(tensor.shape)} does not fit a {len(patch_size)}D patch {tuple(patch_size)}")
    kwargs = dict(step=step, use_gaussian=use_gaussian, batch_windows=batch_windows, device=device,
                  amp=amp, progress=progress)
    accumulate = "auto"
    if device.type == "cuda":
        tensor = tensor.to(device)
    probabilities: torch.Tensor | None = None
    for network in networks:
        network.eval()
        try:
            logits = mirrored_logits(network, tensor, patch_size, mirror_axes, accumulate=accumulate, **kwargs)
        except torch.cuda.OutOfMemoryError:
            if accumulate == "slabs":
                raise
            # The whole-image sums did not fit next to the network after all: sum a band of rows at a time.
            torch.cuda.empty_cache()
            accumulate = "slabs"
            logits = mirrored_logits(network, tensor, patch_size, mirror_axes, accumulate=accumulate, **kwargs)
        probs = logits_to_probabilities(logits, regions).cpu()
        probabilities = probs if probabilities is None else probabilities.add_(probs)
    assert probabilities is not None
    return probabilities / len(networks)


def probabilities_to_labels(
    probabilities: np.ndarray | torch.Tensor,
    regions: Sequence[Sequence[int]] | None = None,
    regions_class_order: Sequence[int] | None = None,
) -> np.ndarray:
    """Label map from ``(K, *spatial)`` probabilities.

    Label mode: argmax over classes (index = label value; nnU-Net requires consecutive labels).
    Region mode (``regions_class_order`` given): every region with probability > 0.5 paints its
    ``regions_class_order`` value, in order, so later regions win (nnU-Net's region export).
    Returns uint8 when every label fits, else uint16.
    """
    probs = torch.as_tensor(probabilities)
    if regions_class_order is None:
        labels = torch.argmax(probs, dim=0)
        top = probs.shape[0] - 1
    else:
        labels = torch.zeros(probs.shape[1:], dtype=torch.int64)
        for k, value in enumerate(regions_class_order):
            labels[probs[k] > 0.5] = int(value)
        top = max([int(v) for v in regions_class_order] + [0])
    dtype = np.uint8 if top <= np.iinfo(np.uint8).max else np.uint16
    return labels.numpy().astype(dtype)
