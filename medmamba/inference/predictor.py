"""``Predictor``: trained fold checkpoints → predictions for a folder of raw images.

Per case: read → preprocess exactly as in training with the case's own
geometry (:func:`medmamba.preprocessing.case_transform.preprocess_case`) → sliding window with gaussian
weighting → mirror TTA over the checkpoint's ``mirror_axes`` → mean of the folds' probabilities
→ :func:`revert_preprocessing` → label map written with the input's spacing, origin, direction
and shape. Reading/preprocessing and export run in background threads so the network is kept
busy; a case that fails is reported with its reason and the others still finish.
"""
from __future__ import annotations

import logging
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from medmamba.atomic import atomic_write_json
from medmamba.devices import resolve_device
from medmamba.errors import CheckpointError, DatasetError, MedmambaError, WriteError
from medmamba.inference.model_folder import (
    build_network_from_checkpoint, check_checkpoints_match_model_folder, checkpoint_identity, fold_checkpoint_paths,
    load_inference_checkpoint)
from medmamba.formats.probabilities import save_probabilities
from medmamba.inference.label_maps import layout_from_dataset, probabilities_to_label_map, write_label_map
from medmamba.inference.input_folder import InputCase, gather_input_cases
from medmamba.inference.array_prediction import predict_preprocessed_case
from medmamba.inference.sliding_window import DEFAULT_BATCH_WINDOWS, DEFAULT_STEP
from medmamba.output_safety import OutputFolder, check_separate

logger = logging.getLogger("medmamba.inference")


@dataclass
class PredictionReport:
    """What a folder prediction did: case ids written / skipped (already there) / failed with reasons."""

    written: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)

    def summary_line(self) -> str:
        line = f"predicted {len(self.written)} case(s), skipped {len(self.skipped)} already present"
        line += f", {len(self.failed)} failed"
        if self.failed:
            line += ": " + "; ".join(f"{case} ({reason})" for case, reason in self.failed)
        return line


def _describe(err: BaseException) -> str:
    if isinstance(err, MedmambaError):
        return str(err)
    logger.error("unexpected error (a bug in medmamba, please report it)", exc_info=err)
    return f"unexpected {type(err).__name__}: {err} (a bug in medmamba; traceback above)"


class Predictor:
    """Networks of one configuration (one per fold) plus everything needed to use them on raw images.

    Args:
        networks: registry networks (eval mode, on ``device``), one per fold.
        plans: the plans dict (or :class:`~medmamba.formats.plans.Plans`) the networks were trained with.
        configuration: configuration name in ``plans``.
        dataset_json: the dataset's dataset.json (labels; regions_class_order for region models).
        mirror_axes: patch axes mirrored for TTA (the checkpoint's ``mirror_axes``).
        step, use_tta, use_gaussian, batch_windows, amp: see :func:`predict_preprocessed_case`.
    """

    def __init__(self, networks: Sequence[torch.nn.Module], plans: Any, configuration: str,
                 dataset_json: Mapping[str, Any], mirror_axes: Sequence[int] | None = None,
                 step: float = DEFAULT_STEP, use_tta: bool = True, use_gaussian: bool = True,
                 batch_windows: int = DEFAULT_BATCH_WINDOWS, device: torch.device | str = "cpu", amp: bool = True) -> None:
        from medmamba.formats.plans import plans_from_any

        self.networks = list(networks)
        self.plans = plans_from_any(plans)
        self.plans_dict = self.plans.to_dict()
        self.configuration = configuration
        self.config = self.plans.configuration(configuration)
        self.dataset_json = dict(dataset_json)
        self.mirror_axes = [int(a) for a in (mirror_axes or [])] if use_tta else []
        self.step = step
        self.use_gaussian = use_gaussian
        self.batch_windows = batch_windows
        self.device = torch.device(device)
        self.amp = amp
        self.layout = layout_from_dataset(self.plans.labels, self.dataset_json)
        self.checkpoint_paths: list[str] = []

    # ------------------------------------------------------------------------------ construction
    @classmethod
    def from_checkpoints(cls, paths: Sequence[str | Path], device: str = "auto",
                         model_folder: str | Path | None = None, **kwargs: Any) -> "Predictor":
        """Load fold checkpoints (all of one model: same network, plans and configuration; checked
        against ``model_folder``'s plans.json/dataset.json when given)."""
        if not paths:
            raise CheckpointError("no checkpoint given")
        dev = resolve_device(device) if isinstance(device, str) else torch.device(device)
        checkpoints = [load_inference_checkpoint(p) for p in paths]
        first = checkpoints[0]
        for ckpt in checkpoints[1:]:
            for key in ("network_name", "network_kwargs", "configuration"):
                if getattr(ckpt, key) != getattr(first, key):
                    raise CheckpointError(f"{key} differs from {first.path}; folds must come from one model",
                                          path=ckpt.path)
            if checkpoint_identity(ckpt)["hash"] != checkpoint_identity(first)["hash"]:
                raise CheckpointError(f"trained for other labels, channels or plans than {first.path}; folds "
                                      "must come from one model", path=ckpt.path)
        if model_folder is not None:
            check_checkpoints_match_model_folder(model_folder, checkpoints)
        networks = [build_network_from_checkpoint(c, dev) for c in checkpoints]
        predictor = cls(networks, first.plans, first.configuration, first.dataset_json,
                        mirror_axes=first.mirror_axes, device=dev, **kwargs)
        predictor.checkpoint_paths = [c.path for c in checkpoints]
        return predictor

    @classmethod
    def from_model_folder(cls, model_folder: str | Path, folds: Sequence[str | int] | None = None,
                          checkpoint: str = "final", device: str = "auto", **kwargs: Any) -> "Predictor":
        """Load ``<model_folder>/fold_<k>/checkpoint_<checkpoint>.pt`` for each fold (None = all present)."""
        return cls.from_checkpoints(fold_checkpoint_paths(Path(model_folder), folds, checkpoint), device,
                                    model_folder=model_folder, **kwargs)

    @classmethod
    def from_model(cls, path: str | Path, folds: Sequence[str | int] | None = None, checkpoint: str | None = None,
                   device: str = "auto", **kwargs: Any) -> "Predictor":
        """Load a model from its folder (``<results>/<Dataset>/<network>__<plans>__<configuration>``) or from a
        zip written by ``medmamba export_model``; needs no dataset id and no raw/preprocessed folders.

        ``checkpoint`` None picks ``final`` when present, else the one kind the model holds. The networks stay
        loaded: call :meth:`predict_folder`, :meth:`predict_case` or :meth:`predict_array` as often as needed.
        """
        from medmamba.formats.checkpoint import CHECKPOINT_KINDS
        from medmamba import __version__
        from medmamba.formats.model_package import open_model

        with open_model(path, __version__) as folder:
            if checkpoint is None:
                present = [k for k in CHECKPOINT_KINDS if any(folder.glob(f"fold_*/checkpoint_{k}.pt"))]
                checkpoint = present[0] if present else "final"
            predictor = cls.from_model_folder(folder, folds, checkpoint, device, **kwargs)
            if not Path(path).is_dir():  # the extracted files are gone after this block: name the zip
                predictor.checkpoint_paths = [f"{path}:{Path(p).relative_to(folder)}" for p in predictor.checkpoint_paths]
        return predictor

    def predict_case(self, image_files: Sequence[str | Path], return_probabilities: bool = False
                     ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Label map of one case (one file per channel) on the input's array grid (file voxel order);
        with ``return_probabilities`` also ``(K, *spatial)`` float32 probabilities on that grid."""
        data, properties = self.preprocess(image_files)
        return self._labels(self.predict_preprocessed(data), properties, return_probabilities)

    def predict_array(self, array: np.ndarray, spacing: Sequence[float],
                      direction: Sequence[Sequence[float]] | None = None, origin: Sequence[float] | None = None,
                      return_probabilities: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Like :meth:`predict_case` for an in-memory image: ``array`` ``(C, *spatial)`` (or ``(*spatial)`` for a
        one-channel model) in file voxel order as ``medmamba.datasets.image_io.read_image`` returns it,
        ``spacing`` in mm per axis, ``direction`` the LPS direction matrix (None: identity). ``origin`` does
        not change the labels (they are returned on the same grid) and is accepted for symmetry with files."""
        from medmamba.formats.constants import LIFTED_AXIS_SPACING
        from medmamba.preprocessing.case_transform import preprocess_arrays

        del origin
        image = np.asarray(array)
        n_channels = self.plans.num_input_channels
        trained_2d = LIFTED_AXIS_SPACING in [float(s) for s in self.plans.original_median_spacing_after_transp]
        spatial_ndim = 2 if trained_2d else 3
        if image.ndim == spatial_ndim and n_channels == 1:
            image = image[None]
        if image.ndim != spatial_ndim + 1 or image.shape[0] != n_channels:
            raise DatasetError(f"array of shape {image.shape} is not ({n_channels}, {spatial_ndim} spatial axes) "
                               f"for this {spatial_ndim}D model")
        if len(spacing) != spatial_ndim:
            raise DatasetError(f"spacing {list(spacing)} needs {spatial_ndim} values")
        if not np.isfinite(image).all():
            raise DatasetError("image array contains NaN or infinite values")
        data, _, properties = preprocess_arrays(image, None, [float(s) for s in spacing], self.plans,
                                                self.configuration, direction=direction)
        return self._labels(self.predict_preprocessed(data), properties, return_probabilities)

    def _labels(self, probabilities: torch.Tensor, properties: Mapping[str, Any], return_probabilities: bool
                ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        original = self.revert(probabilities, properties)
        labels = probabilities_to_label_map(original, self.layout)
        return (labels, original) if return_probabilities else labels

    # ---------------------------------------------------------------------------------- predict
    def predict_preprocessed(self, data: np.ndarray | torch.Tensor) -> torch.Tensor:
        """``(C, *spatial)`` preprocessed data → ``(K, *spatial)`` float32 probabilities (CPU)."""
        finite = torch.isfinite(data).all() if isinstance(data, torch.Tensor) else np.isfinite(data).all()
        if not finite:
            raise DatasetError("preprocessed image contains NaN or infinite values")
        return predict_preprocessed_case(
            self.networks, data, self.config.patch_size, self.mirror_axes, step=self.step,
            use_gaussian=self.use_gaussian, batch_windows=self.batch_windows, device=self.device,
            regions=self.layout.has_regions, amp=self.amp)

    def preprocess(self, image_files: Sequence[str | Path]) -> tuple[np.ndarray, dict[str, Any]]:
        """Read and preprocess one case as in training; checks the image dimensionality."""
        from medmamba.formats.constants import LIFTED_AXIS_SPACING
        from medmamba.preprocessing.case_transform import preprocess_case

        data, _, properties = preprocess_case(list(image_files), self.plans, self.configuration)
        trained_2d = LIFTED_AXIS_SPACING in [float(s) for s in self.plans.original_median_spacing_after_transp]
        ndim = int(properties["original_ndim"])
        if trained_2d and ndim != 2:
            raise DatasetError(f"{ndim}D image but the model was trained on 2D images", path=image_files[0])
        if not trained_2d and ndim != 3:
            raise DatasetError(f"{ndim}D image but the model was trained on 3D images", path=image_files[0])
        return data, properties

    def revert(self, probabilities: torch.Tensor | np.ndarray, properties: Mapping[str, Any]) -> np.ndarray:
        """Probabilities on the preprocessed grid → ``(K, *original array shape)`` float32."""
        from medmamba.preprocessing.case_transform import revert_preprocessing

        return revert_preprocessing(probabilities, properties, self.plans, self.configuration,
                                    regions=self.layout.has_regions)

    def _export(self, case: InputCase, probabilities: torch.Tensor, properties: dict[str, Any], target: Path,
                save_probs: bool) -> None:
        original = self.revert(probabilities, properties)
        write_label_map(probabilities_to_label_map(original, self.layout), properties, target)
        if save_probs:
            save_probabilities(target.parent, case.case_id, original, properties)

    def predict_folder(self, input_dir: str | Path, output_dir: str | Path, overwrite: bool = False,
                       save_probabilities: bool = False, num_workers: int = 2, progress: bool = True,
                       extra_args: Mapping[str, Any] | None = None) -> PredictionReport:
        """Predict every case of ``input_dir`` into ``output_dir`` (see module docstring).

        ``num_workers`` threads read/preprocess ahead and as many export behind (0 = in line).
        Never writes into ``input_dir``; files already in ``output_dir`` are kept unless ``overwrite``.
        """
        input_dir, output_dir = Path(input_dir), Path(output_dir)
        check_separate(output_dir, [input_dir], "output folder")
        cases, failures = gather_input_cases(input_dir, self.plans.num_input_channels)
        out = OutputFolder(output_dir, inputs=[input_dir], overwrite=overwrite, what="output folder")
        with out:
            self._check_same_model(out)
            return self._predict_into(out, input_dir, cases, failures, save_probabilities, num_workers, progress,
                                      extra_args)

    def _check_same_model(self, out: OutputFolder) -> None:
        """Predictions of two models in one folder would contradict its dataset.json/plans.json: refuse
        unless ``--overwrite`` (which predicts every case again)."""
        from medmamba.errors import WriteError
        from medmamba.formats.json_io import read_json

        previous = out.path / "predict_args.json"
        if out.overwrite or not previous.is_file() or "predict_args.json" not in out.recorded:
            return
        before = read_json(previous, dict, "prediction arguments", WriteError)
        if before.get("checkpoints") != self.checkpoint_paths or before.get("configuration") != self.configuration:
            raise WriteError("holds predictions of another model "
                             f"({', '.join(map(str, before.get('checkpoints') or [])) or 'unknown'}); choose another "
                             "output folder, or pass --overwrite to predict every case again with this model",
                             path=out.path)

    def _predict_into(self, out: OutputFolder, input_dir: Path, cases: list[InputCase],
                      failures: list[tuple[str, str]], save_probabilities: bool, num_workers: int, progress: bool,
                      extra_args: Mapping[str, Any] | None) -> PredictionReport:
        from tqdm import tqdm

        output_dir, overwrite = out.path, out.overwrite
        report = PredictionReport()

        def fail(case_id: str, reason: str) -> None:
            logger.warning("case %s failed: %s", case_id, reason)
            report.failed.append((case_id, reason))

        for case_id, reason in failures:
            fail(case_id, reason)
        todo: list[tuple[InputCase, Path]] = []
        for case in cases:
            target = output_dir / f"{case.case_id}{case.ending}"
            if target.exists() and not overwrite:
                report.skipped.append(case.case_id)
            else:
                todo.append((case, target))
        fixed = ["plans.json", "dataset.json", "predict_args.json"]
        per_case = [name for case, target in todo
                    for name in [target.name, *([f"{case.case_id}.npz", f"{case.case_id}.json"]
                                                if save_probabilities else [])]]
        out.claim(fixed + per_case)
        atomic_write_json(output_dir / "plans.json", self.plans_dict)
        atomic_write_json(output_dir / "dataset.json", self.dataset_json)
        atomic_write_json(output_dir / "predict_args.json", {
            "input_folder": str(input_dir), "configuration": self.configuration,
            "checkpoints": self.checkpoint_paths, "step": self.step, "mirror_axes": self.mirror_axes,
            "use_gaussian": self.use_gaussian, "save_probabilities": save_probabilities, **dict(extra_args or {})})

        workers = max(0, int(num_workers))
        readers = ThreadPoolExecutor(max_workers=workers) if workers else None
        writers = ThreadPoolExecutor(max_workers=workers) if workers else None
        reads: deque[Future | Callable[[], Any]] = deque()
        exports: deque[tuple[str, Future]] = deque()
        next_read = 0

        def submit_read() -> None:
            nonlocal next_read
            case = todo[next_read][0]
            next_read += 1
            if readers is None:
                reads.append(lambda c=case: self.preprocess(c.image_files))
            else:
                reads.append(readers.submit(self.preprocess, case.image_files))

        def finish_export(case_id: str, fut: Future) -> None:
            try:
                fut.result()
                report.written.append(case_id)
            except WriteError:  # a full disk or a read-only folder stops the run: no later case could be written
                raise
            except Exception as err:  # noqa: BLE001 - reported per case, others go on
                fail(case_id, _describe(err))

        try:
            for _ in range(min(len(todo), workers + 1)):
                submit_read()
            for case, target in tqdm(todo, desc="predict", unit="case", disable=not progress):
                pending = reads.popleft()
                if next_read < len(todo):
                    submit_read()
                try:
                    data, properties = pending() if callable(pending) else pending.result()
                    probabilities = self.predict_preprocessed(data)
                    del data
                except Exception as err:  # noqa: BLE001
                    fail(case.case_id, _describe(err))
                    continue
                if writers is None:
                    try:
                        self._export(case, probabilities, properties, target, save_probabilities)
                        report.written.append(case.case_id)
                    except WriteError:
                        raise
                    except Exception as err:  # noqa: BLE001
                        fail(case.case_id, _describe(err))
                    continue
                exports.append((case.case_id, writers.submit(self._export, case, probabilities, properties,
                                                             target, save_probabilities)))
                while len(exports) > workers + 1:  # bound the memory held by finished probabilities
                    finish_export(*exports.popleft())
            while exports:
                finish_export(*exports.popleft())
        finally:
            for pool in (readers, writers):
                if pool is not None:
                    pool.shutdown(wait=True, cancel_futures=True)
        report.written.sort()
        report.failed.sort()
        return report
