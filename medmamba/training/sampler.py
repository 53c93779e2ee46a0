"""Patch sampling with foreground oversampling, and the batch stream fed to DataLoader workers.

Every sample is a pure function of ``(seed, iteration, global sample index)``: its generator is
``numpy.random.default_rng([seed, iteration, j])``. Consequences we rely on:
- any number of loader workers yields the same batches in the same order (worker ``w`` makes
  iterations ``w, w + W, ...``; DataLoader returns them round-robin in order);
- DDP rank ``r`` makes only its slice of the global batch, so the ranks together make exactly the
  single-process global batch;
- resuming at iteration ``i`` restarts the stream at ``i`` with no RNG state to restore.

With an ignore label (partial annotations) no patch is made of ignore voxels only: cases without an
annotated voxel are never drawn, a patch that is not forced to foreground is centred on a random
annotated voxel (nnU-Net), and a patch that augmentation turned into ignore only is drawn again, at
most ``MAX_PATCH_ATTEMPTS`` times, then made without the spatial transform around its annotated centre.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from itertools import count
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from medmamba.training.augmentation import AugmentationPipeline
from medmamba.formats.preprocessed_case import PreprocessedCase
from medmamba.errors import ConfigurationError, PlansError, TrainingError
from medmamba.preprocessing.foreground import sample_annotated_locations

FOREGROUND_OVERSAMPLING = 0.33  # nnU-Net ``oversample_foreground_percent``
# Draws of a patch before its fallback (ignore label only). A centred annotated voxel leaves the
# patch only under rotation/scaling/elastic deformation near its border, so retries are rare.
MAX_PATCH_ATTEMPTS = 5


def forced_foreground(batch_size: int, index: int, percent: float = FOREGROUND_OVERSAMPLING) -> bool:
    """nnU-Net rule: sample ``index`` of a global batch is forced fg iff index >= round(bs * (1 - p))."""
    return index >= round(batch_size * (1 - percent))


def rank_slice(batch_size: int, rank: int, world_size: int) -> range:
    """Global sample indices made by ``rank``: the batch split as evenly as possible (nnU-Net v2 run_training.py)."""
    if batch_size < world_size:
        raise ConfigurationError(f"batch size {batch_size} is smaller than the {world_size} DDP processes")
    base, extra = divmod(batch_size, world_size)
    start = rank * base + min(rank, extra)
    return range(start, start + base + (1 if rank < extra else 0))


def crop_padded(array: np.ndarray, lower: np.ndarray, size: tuple[int, ...], pad_value: float) -> np.ndarray:
    """``array[:, lower:lower+size]`` (spatial axes), padding with ``pad_value`` outside the array.

    ``array`` ``(C, *spatial)`` (may be a memmap: only the overlapping region is read).
    """
    shape = np.asarray(array.shape[1:])
    lower = np.asarray(lower, dtype=np.int64)
    upper = lower + np.asarray(size)
    valid_lo, valid_hi = np.maximum(lower, 0), np.minimum(upper, shape)
    region = array[(slice(None),) + tuple(slice(int(a), int(b)) for a, b in zip(valid_lo, valid_hi))]
    pad = [(0, 0)] + [(int(a - lo), int(hi - b)) for a, b, lo, hi in zip(valid_lo, valid_hi, lower, upper)]
    if any(p != (0, 0) for p in pad):
        return np.pad(region, pad, constant_values=pad_value)
    return np.array(region)


@dataclass
class PatchSampler:
    """Chooses a case and a patch centre (voxel indices, internal order).

    ``patch_size`` has the network's spatial dims; when the arrays have one more spatial axis
    (2D configuration over 3D volumes) a single slice along axis 0 is taken, as nnU-Net does.
    ``ignore_label``: the dataset's ignore value (None: fully annotated).
    """

    cases: list[PreprocessedCase]
    patch_size: tuple[int, ...]
    ignore_label: int | None = None
    _with_annotation: list[PreprocessedCase] | None = field(default=None, init=False, repr=False, compare=False)

    def annotated(self, seg: np.ndarray) -> bool:
        """Whether a patch's labels hold at least one voxel that is not ``ignore``."""
        return self.ignore_label is None or bool((np.asarray(seg) != self.ignore_label).any())

    def _annotated_cases(self) -> list[PreprocessedCase]:
        if self._with_annotation is None:
            for case in self.cases:
                if case.annotated_locations is None:  # properties written without them
                    locs = sample_annotated_locations(case.seg(), self.ignore_label)
                    case.annotated_locations = np.asarray(locs, dtype=np.int64).reshape(-1, case.seg().ndim - 1)
            self._with_annotation = [c for c in self.cases if len(c.annotated_locations)]
            if not self._with_annotation:
                raise TrainingError(f"no case has an annotated voxel: every label voxel is 'ignore' "
                                    f"({self.ignore_label})")
        return self._with_annotation

    def force_foreground(self, batch_size: int, index: int, percent: float, rng: np.random.Generator) -> bool:
        """Whether sample ``index`` of a global batch must contain foreground (nnU-Net's fixed
        positions, no draw); a sampler variant may decide otherwise, drawing from ``rng``."""
        return forced_foreground(batch_size, index, percent)

    def pick(self, rng: np.random.Generator, force_fg: bool) -> tuple[PreprocessedCase, np.ndarray]:
        pool = self.cases if self.ignore_label is None else self._annotated_cases()
        case = pool[int(rng.integers(len(pool)))]  # uniform with replacement (nnU-Net v2 data_loader.py)
        shape = np.asarray(case.seg().shape[1:])
        patch = self._full_patch(len(shape))
        # nnU-Net get_bbox: the patch may extend past the image by half the missing size
        need = np.maximum(patch - shape, 0)
        lb = -(need // 2)
        ub = shape + need // 2 + need % 2 - patch
        present = [k for k, v in case.class_locations.items() if len(v)]
        if force_fg and present:
            label = present[int(rng.integers(len(present)))]
            locs = case.class_locations[label]
            loc = locs[int(rng.integers(len(locs)))]
            lower = np.clip(loc - patch // 2, lb, ub)
        elif self.ignore_label is not None:  # the clipped patch still holds the annotated voxel
            loc = case.annotated_locations[int(rng.integers(len(case.annotated_locations)))]
            lower = np.clip(loc - patch // 2, lb, ub)
        else:
            lower = np.array([int(rng.integers(lo, hi + 1)) for lo, hi in zip(lb, ub)])
        return case, lower + patch // 2

    def _full_patch(self, data_ndim: int) -> np.ndarray:
        patch = tuple(self.patch_size)
        if data_ndim == len(patch) + 1:
            patch = (1,) + patch
        elif data_ndim != len(patch):
            raise PlansError(f"patch size {patch} does not fit {data_ndim}-D preprocessed arrays")
        return np.asarray(patch)

    def crop(self, case: PreprocessedCase, centre: np.ndarray, size: tuple[int, ...]
             ) -> tuple[np.ndarray, np.ndarray]:
        """Crop ``size`` (network dims) around ``centre``: data ``(C, *size)`` float32, seg ``(1, *size)`` int16."""
        data, seg = case.data(), case.seg()
        full = tuple(size)
        squeeze = seg.ndim - 1 == len(full) + 1
        if squeeze:
            full = (1,) + full
        lower = centre - np.asarray(full) // 2
        img = crop_padded(data, lower, full, 0.0).astype(np.float32, copy=False)
        sg = crop_padded(seg, lower, full, -1).astype(np.int16, copy=False)
        if squeeze:
            img, sg = img[:, 0], sg[:, 0]
        return img, sg


class BatchSource:
    """Makes this rank's part of global batch ``iteration``: image ``(b, C, *patch)`` float32,
    seg ``(b, 1, *patch)`` int64, where ``b = len(rank_slice(...))``.

    ``finish`` (optional) replaces ``augment`` from iteration ``finish_from`` on (set by the trainer when the
    run reaches its clean finish); a batch stays a function of its iteration, so loader workers started
    after that agree with the main process.
    """

    def __init__(self, sampler: PatchSampler, augment: AugmentationPipeline | None, batch_size: int,
                 seed: int, rank: int = 0, world_size: int = 1,
                 oversample: float = FOREGROUND_OVERSAMPLING, finish: AugmentationPipeline | None = None) -> None:
        self.sampler, self.augment, self.finish = sampler, augment, finish
        self.finish_from: int | None = None
        self.batch_size, self.seed, self.oversample = batch_size, seed, oversample
        self.indices = rank_slice(batch_size, rank, world_size)

    def augment_at(self, iteration: int) -> AugmentationPipeline | None:
        """The patch transform of batch ``iteration``."""
        if self.finish_from is not None and iteration >= self.finish_from:
            return self.finish
        return self.augment

    def make_batch(self, iteration: int) -> tuple[torch.Tensor, torch.Tensor]:
        images, segs = [], []
        augment = self.augment_at(iteration)
        for j in self.indices:
            rng = np.random.default_rng([self.seed, iteration, j])
            force = self.sampler.force_foreground(self.batch_size, j, self.oversample, rng)
            for _ in range(MAX_PATCH_ATTEMPTS):
                case, centre = self.sampler.pick(rng, force)
                img, sg = self._patch(case, centre, rng, augment, spatial=True)
                if self.sampler.annotated(sg):
                    break
            else:  # the centre is annotated: a crop around it without the spatial transform keeps it
                img, sg = self._patch(case, centre, rng, augment, spatial=False)
            images.append(img)
            segs.append(sg)
        return torch.from_numpy(np.stack(images)), torch.from_numpy(np.stack(segs).astype(np.int64))

    def _patch(self, case: PreprocessedCase, centre: np.ndarray, rng: np.random.Generator,
               augment: AugmentationPipeline | None, spatial: bool) -> tuple[np.ndarray, np.ndarray]:
        if augment is None:
            img, sg = self.sampler.crop(case, centre, self.sampler.patch_size)
            return img, np.where(sg < 0, 0, sg)
        drawn = augment.draw_spatial(rng) if spatial else None
        size = augment.crop_size if drawn is not None else augment.patch_size
        img, sg = self.sampler.crop(case, centre, size)
        return augment(img, sg, rng, drawn)


class BatchStream(IterableDataset):
    """Infinite stream of batches starting at ``start_iteration``; use with ``batch_size=None``."""

    def __init__(self, source: BatchSource, start_iteration: int = 0) -> None:
        super().__init__()
        self.source, self.start = source, start_iteration

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        info = get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        if info is not None:
            torch.set_num_threads(1)  # workers share the cores with the main process
        for iteration in count(self.start + worker, workers):
            yield self.source.make_batch(iteration)


def make_loader(source: BatchSource, start_iteration: int, num_workers: int) -> Iterator:
    """An iterator over batches; ``num_workers`` background processes (0 = in this process)."""
    stream = BatchStream(source, start_iteration)
    if num_workers <= 0:
        return iter(stream)
    loader = torch.utils.data.DataLoader(
        stream, batch_size=None, num_workers=num_workers, pin_memory=torch.cuda.is_available(),
        prefetch_factor=2, persistent_workers=False,
    )
    return iter(loader)
