"""The cascade in training: the previous stage's segmentation as extra input channels (nnU-Net's
``3d_cascade_fullres``), and the files the previous stage hands over.

- ``3d_lowres`` final validation (:func:`write_next_stage_segmentation`): each validation case's
  probabilities are resampled (the stage's ``probabilities_order``, separate z as in preprocessing)
  onto the next stage's preprocessed grid and turned into labels, then written to
  ``<lowres model folder>/predicted_next_stage/<next stage>/<case>.npy`` (medmamba/formats/cascade.py).
  A ``fold all`` run validates on its own training cases, so it only fills in cases no
  cross-validation fold has written (an out-of-fold prediction is never replaced by an in-sample one).
- ``3d_cascade_fullres`` training (:func:`require_previous_stage`, :func:`attach_previous_stage`): every
  training and validation case needs that file. It travels as a second segmentation channel through
  cropping and the spatial transforms (rotation, scaling, mirroring: nearest, with the labels); then it
  becomes one binary channel per foreground label appended to the image, and for training patches it
  is perturbed as nnU-Net does (:func:`perturb_previous_stage`). Validation patches get the one-hot
  channels only.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from medmamba.errors import ConfigurationError, PlansError
from medmamba.formats.cascade import (
    load_next_stage_segmentation,
    next_stage_file,
    next_stage_folder,
    one_hot_foreground,
    save_next_stage_segmentation,
)
from medmamba.formats.label_layout import foreground_labels
from medmamba.formats.preprocessed_case import PreprocessedCase, read_array, read_properties
from medmamba.formats.splits import SPLITS_FILE, read_splits
from medmamba.inference.cascade import previous_stage_labels

logger = logging.getLogger("medmamba.training")

# nnU-Net v2 get_training_transforms, cascade part (batchgeneratorsv2 ApplyRandomBinaryOperatorTransform,
# RemoveRandomConnectedComponentFromOneHotEncodingTransform).
P_BINARY_OPERATOR = 0.4  # chance a patch's previous-stage channels get a morphological operator
P_BINARY_OPERATOR_PER_LABEL = 0.5
STRUCTURE_RADIUS = (1.0, 8.0)  # ball radius in voxels
P_REMOVE_COMPONENT = 0.2  # chance a patch loses connected components of the previous-stage segmentation
P_REMOVE_COMPONENT_PER_LABEL = 0.5
MAX_REMOVED_COMPONENT_FRACTION = 0.15  # only components at most this fraction of the patch


def previous_stage_channels(plans: Any, config: Any) -> int:
    """Extra network input channels of a configuration: one per foreground label for a cascade stage."""
    return len(foreground_labels(plans.labels)) if config.previous_stage else 0


def previous_stage_model_folder(setup: Any) -> Path:
    """``<results>/<Dataset>/<network>__<plans>__<previous stage>``: same network and plans (nnU-Net: same trainer)."""
    model_folder = setup.output_folder.parent
    network, plans_name, _ = model_folder.name.split("__")
    return model_folder.parent / f"{network}__{plans_name}__{setup.config.previous_stage}"


def _folds_holding_out(dataset_folder: Path, case_ids: Sequence[str]) -> list[str]:
    """The cross-validation folds whose validation sets hold ``case_ids`` (splits.json)."""

    path = dataset_folder / SPLITS_FILE
    splits = read_splits(path) if path.is_file() else []
    folds = {str(k) for k, split in enumerate(splits) for c in case_ids if c in split.get("val", [])}
    return sorted(folds, key=int) or ["all"]


def require_previous_stage(setup: Any) -> dict[str, Path]:
    """The previous-stage segmentation file of every training and validation case, checked against the
    case's preprocessed grid; one-line :class:`ConfigurationError` naming the missing folds otherwise."""
    config = setup.config
    previous = config.previous_stage
    if previous not in setup.plans.configurations:
        raise PlansError(f"configuration {setup.configuration!r} has previous_stage {previous!r}, which the "
                         "plans do not define", path=setup.dataset_folder / "plans.json")
    source = previous_stage_model_folder(setup)
    files = {c: next_stage_file(source, setup.configuration, c) for c in [*setup.train_ids, *setup.val_ids]}
    missing = sorted(c for c, path in files.items() if not path.is_file())
    if missing:
        folds = _folds_holding_out(setup.dataset_folder, missing)
        dataset = setup.dataset_folder.name
        commands = "; ".join(f"medmamba train -d {dataset} -c {previous} -f {f}" for f in folds)
        raise ConfigurationError(
            f"{setup.configuration} trains on the {previous} stage's validation predictions, but fold(s) "
            f"{', '.join(folds)} of {previous} have not written them ({len(missing)} case(s), e.g. {missing[0]}); "
            f"run `{commands}` (a fold already trained: add --resume to rerun only its validation)",
            path=next_stage_folder(source, setup.configuration))
    for case_id, path in files.items():
        shape = read_array(setup.data_folder / f"{case_id}.npy").shape[1:]
        load_next_stage_segmentation(path, shape)
    return files


class StackedSeg:
    """The ground truth ``(1, *spatial)`` and the previous-stage segmentation ``(1, *spatial)`` read as one
    ``(2, *spatial)`` array, lazily: indexing reads only the indexed region of each memory map."""

    def __init__(self, seg: np.ndarray, previous: np.ndarray) -> None:
        self.seg, self.previous = seg, previous
        self.shape = (2, *seg.shape[1:])
        self.ndim = len(self.shape)
        self.dtype = np.dtype(np.int16)

    def __getitem__(self, index: Any) -> np.ndarray:
        index = index if isinstance(index, tuple) else (index,)
        channel, spatial = (index[0], index[1:]) if index else (slice(None), ())
        parts = [np.asarray(self.seg[(slice(None), *spatial)], np.int16),
                 np.asarray(self.previous[(slice(None), *spatial)], np.int16)]
        return np.concatenate(parts, axis=0)[channel]

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = self[:]
        return out if dtype is None else out.astype(dtype)


@dataclass
class CascadeCase(PreprocessedCase):
    """A training case whose ``seg()`` also carries the previous stage's segmentation (channel 1)."""

    previous_file: Path | None = None

    def seg(self) -> StackedSeg:  # type: ignore[override]
        return StackedSeg(read_array(self.seg_file), read_array(self.previous_file))


def _ball_operator(mask: np.ndarray, operator: str, radius: float) -> np.ndarray:
    """Binary dilation/erosion/opening/closing by a Euclidean ball of ``radius`` voxels, computed with
    distance transforms (the same result as a ball structuring element, without an O(r^3) kernel)."""
    from scipy.ndimage import distance_transform_edt

    def dilate(m: np.ndarray) -> np.ndarray:
        return distance_transform_edt(~m) <= radius if m.any() else m

    def erode(m: np.ndarray) -> np.ndarray:
        return distance_transform_edt(m) > radius if m.any() else m

    if operator == "dilation":
        return dilate(mask)
    if operator == "erosion":
        return erode(mask)
    if operator == "opening":
        return dilate(erode(mask))
    return erode(dilate(mask))  # closing


BINARY_OPERATORS = ("dilation", "erosion", "opening", "closing")


def perturb_previous_stage(one_hot: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """nnU-Net's perturbation of the previous-stage one-hot channels ``(L, *patch)`` of a training patch,
    so the network learns to correct the first stage rather than copy it:

    1. p 0.4: channels in random order, each with p 0.5: dilation, erosion, opening or closing with a ball
       of radius U(1, 8) voxels; voxels a channel gains are removed from the other channels;
    2. p 0.2: per channel with p 0.5, one random connected component no larger than 15% of the patch is
       removed (left as background).
    """
    from scipy.ndimage import label as connected_components

    out = one_hot > 0.5
    if rng.random() < P_BINARY_OPERATOR:
        for k in rng.permutation(out.shape[0]):
            if rng.random() >= P_BINARY_OPERATOR_PER_LABEL:
                continue
            operator = BINARY_OPERATORS[int(rng.integers(len(BINARY_OPERATORS)))]
            radius = float(rng.uniform(*STRUCTURE_RADIUS))
            changed = _ball_operator(out[k], operator, radius)
            gained = changed & ~out[k]
            out[k] = changed
            for other in range(out.shape[0]):
                if other != k:
                    out[other] &= ~gained
    if rng.random() < P_REMOVE_COMPONENT:
        limit = MAX_REMOVED_COMPONENT_FRACTION * out[0].size if out.shape[0] else 0
        for k in range(out.shape[0]):
            if rng.random() >= P_REMOVE_COMPONENT_PER_LABEL or not out[k].any():
                continue
            labelled, n = connected_components(out[k])
            sizes = np.bincount(labelled.ravel())[1:]
            small = [i + 1 for i in range(n) if sizes[i] <= limit]
            if small:
                out[k][labelled == small[int(rng.integers(len(small)))]] = False
    return out.astype(np.float32)


class CascadeAugmentation:
    """Wraps the training augmentation (or none, for validation patches) for a cascade stage: the
    pipeline moves both segmentation channels; then channel 1 (the previous stage) becomes one-hot
    image channels, perturbed when ``perturb``. Returns image ``(C + L, *patch)``, seg ``(1, *patch)``."""

    def __init__(self, inner: Any, patch_size: Sequence[int], labels: Sequence[int], perturb: bool) -> None:
        self.inner, self.labels, self.perturb = inner, list(labels), perturb
        self.patch_size = tuple(inner.patch_size) if inner is not None else tuple(int(p) for p in patch_size)
        self.crop_size = inner.crop_size if inner is not None else self.patch_size

    def draw_spatial(self, rng: np.random.Generator) -> dict | None:
        return self.inner.draw_spatial(rng) if self.inner is not None else None

    def __call__(self, crop: np.ndarray, seg: np.ndarray, rng: np.random.Generator, spatial: dict | None
                 ) -> tuple[np.ndarray, np.ndarray]:
        if self.inner is not None:
            img, sg = self.inner(crop, seg, rng, spatial)
        else:
            img = np.array(crop, dtype=np.float32)
            sg = np.where(np.asarray(seg) < 0, 0, seg).astype(np.int16)
        previous = one_hot_foreground(sg[1], self.labels)
        if self.perturb:
            previous = perturb_previous_stage(previous, rng)
        return np.ascontiguousarray(np.concatenate([img, previous]), dtype=np.float32), np.ascontiguousarray(sg[:1])


def attach_previous_stage(setup: Any, train_cases: dict[str, PreprocessedCase], val_cases: dict[str, PreprocessedCase],
                          augment: Any) -> tuple[dict, dict, CascadeAugmentation, CascadeAugmentation]:
    """Cases that carry their previous-stage segmentation, and the training / validation patch
    transforms that turn it into input channels (see module docstring)."""
    files = require_previous_stage(setup)

    def wrap(cases: dict[str, PreprocessedCase]) -> dict[str, CascadeCase]:
        return {cid: CascadeCase(c.case_id, c.data_file, c.seg_file, c.properties, c.class_locations,
                                 previous_file=files[cid]) for cid, c in cases.items()}

    labels = foreground_labels(setup.plans.labels)
    return (wrap(train_cases), wrap(val_cases), CascadeAugmentation(augment, setup.patch_size, labels, True),
            CascadeAugmentation(None, setup.patch_size, labels, False))


def previous_stage_input(setup: Any, case_id: str, data: np.ndarray) -> np.ndarray:
    """A preprocessed case's image with the previous-stage one-hot channels appended (cascade stages;
    other configurations: ``data`` unchanged). Used by the final validation."""
    if not setup.config.previous_stage:
        return data
    path = next_stage_file(previous_stage_model_folder(setup), setup.configuration, case_id)
    previous = load_next_stage_segmentation(path, data.shape[1:], mmap=False)[0]
    return np.concatenate([np.asarray(data, np.float32),
                           one_hot_foreground(previous, foreground_labels(setup.plans.labels))])


def write_next_stage_segmentation(setup: Any, case_id: str, probabilities: Any) -> Path | None:
    """At a stage with a ``next_stage`` (3d_lowres): resample a validation case's probabilities (this
    stage's preprocessed grid) onto the next stage's preprocessed grid, convert to labels and write the
    hand-over file; None (logged) when there is nothing to write."""

    config = setup.config
    if not config.next_stage:
        return None
    if config.next_stage not in setup.plans.configurations:
        logger.warning("next stage %r is not in the plans: no segmentation handed over", config.next_stage)
        return None
    nxt = setup.plans.configuration(config.next_stage)
    target = next_stage_file(setup.output_folder.parent, config.next_stage, case_id)
    if setup.fold == "all" and target.is_file():
        return None  # keep the cross-validation fold's out-of-fold prediction
    props_file = setup.dataset_folder / nxt.data_identifier / f"{case_id}.json"
    if not props_file.is_file():
        logger.warning("%s: not preprocessed for %s, so its segmentation for that stage is not written; run "
                       "`medmamba plan_and_preprocess -d %s -c %s` and this validation again", case_id,
                       config.next_stage, setup.dataset_folder.name, config.next_stage)
        return None
    shape = read_properties(props_file)["shape_after_resampling"]
    labels = previous_stage_labels(probabilities, config, nxt, shape, setup.plans.labels, setup.dataset_json)
    save_next_stage_segmentation(target, labels)
    return target
