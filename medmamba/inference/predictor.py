"""``Predictor``: trained fold checkpoints → predictions for a folder of raw images.

Per case: read → preprocess exactly as in training with the case's own
geometry (:func:`medmamba.preprocessing.case_transform.preprocess_case`) → sliding window with gaussian
weighting → mirror TTA over the checkpoint's ``mirror_axes`` → mean of the folds' probabilities
→ back onto the original grid and argmax slab by slab (:class:`~medmamba.preprocessing.slab_revert.RevertedProbabilities`,
the values of :func:`revert_preprocessing` without its whole ``classes × voxels`` array) → label map written with
the input's spacing, origin, direction and shape. Reading/preprocessing and export run in background threads so the network is kept
busy; a case that fails is reported with its reason and the others still finish.

A cohort can be split between processes on any number of machines: ``num_parts``/``part_id`` give
each process a fixed share (case ``i`` of the sorted ids goes to part ``i % num_parts``, as in
nnU-Net), and independently of that every case is claimed (:mod:`medmamba.claims`, a lock file in
``OUTPUT/.medmamba_claims/``) before it is read, so processes started into one shared output folder
split the cases between them. A process that finds no unclaimed case left waits for the cases others
hold and takes over any whose process died, so the last one running finishes the cohort; no case is
written twice, and each is written exactly as a single process would write it.
"""
from __future__ import annotations

import logging
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from medmamba import claims
from medmamba.atomic import atomic_write_json
from medmamba.devices import resolve_device
from medmamba.errors import CheckpointError, DatasetError, MedmambaError, WriteError
from medmamba.inference.model_folder import (
    build_network_from_checkpoint, check_checkpoints_match_model_folder, checkpoint_identity, fold_checkpoint_paths,
    load_inference_checkpoint)
from medmamba.formats.probabilities import ProbabilitiesWriter
from medmamba.inference.label_maps import layout_from_dataset, reverted_label_map, write_label_map
from medmamba.inference.input_folder import InputCase, gather_input_cases, select_part
from medmamba.inference.array_prediction import mirror_subsets, predict_preprocessed_case
from medmamba.inference.sliding_window import DEFAULT_BATCH_WINDOWS, DEFAULT_STEP, count_tiles
from medmamba.preprocessing.slab_revert import RevertedProbabilities
from medmamba.output_safety import OutputFolder, check_separate
from medmamba import __version__
from medmamba.formats.checkpoint import CHECKPOINT_KINDS
from medmamba.formats.constants import LIFTED_AXIS_SPACING
from medmamba.formats.json_io import read_json
from medmamba.formats.model_zip import open_model
from medmamba.formats.plans import plans_from_any
from medmamba.preprocessing.case_transform import preprocess_arrays, preprocess_case

logger = logging.getLogger("medmamba.inference")

CLAIMS_FOLDER = ".medmamba_claims"  # one lock file per case in the output folder
PEER_WAIT_SECONDS = 5.0  # how often a process with nothing left re-checks the cases other processes hold


@dataclass
class PredictionReport:
    """What a folder prediction did: case ids written / skipped (already there) / predicted by other
    processes sharing the output folder / failed with reasons."""

    written: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    by_others: list[str] = field(default_factory=list)

    def summary_line(self) -> str:
        line = f"predicted {len(self.written)} case(s), skipped {len(self.skipped)} already present"
        if self.by_others:
            line += f", {len(self.by_others)} predicted by other processes"
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

    ``previous`` is the predictor of a cascade's previous stage (None here; see ``CascadePredictor``).

    Args:
        networks: registry networks (eval mode, on ``device``), one per fold.
        plans: the plans dict (or :class:`~medmamba.formats.plans.Plans`) the networks were trained with.
        configuration: configuration name in ``plans``.
        dataset_json: the dataset's dataset.json (labels; regions_class_order for region models).
        mirror_axes: patch axes mirrored for TTA (the checkpoint's ``mirror_axes``).
        step, use_tta, use_gaussian, batch_windows, amp: see :func:`predict_preprocessed_case`.
    """

    previous: "Predictor | None" = None

    def __init__(self, networks: Sequence[torch.nn.Module], plans: Any, configuration: str,
                 dataset_json: Mapping[str, Any], mirror_axes: Sequence[int] | None = None,
                 step: float = DEFAULT_STEP, use_tta: bool = True, use_gaussian: bool = True,
                 batch_windows: int = DEFAULT_BATCH_WINDOWS, device: torch.device | str = "cpu", amp: bool = True) -> None:

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
                   device: str = "auto", sha256: str | None = None, **kwargs: Any) -> "Predictor":
        """Load a model from its folder (``<results>/<Dataset>/<network>__<plans>__<configuration>``) or from a
        zip written by ``medmamba export_model``; needs no dataset id and no raw/preprocessed folders.

        ``checkpoint`` None picks ``final`` when present, else the one kind the model holds. The networks stay
        loaded: call :meth:`predict_folder`, :meth:`predict_case` or :meth:`predict_array` as often as needed.
        A zip is verified against its manifest (entry sizes and sha256); ``sha256`` also pins the zip's own hash.
        """

        with open_model(path, __version__, sha256) as folder:
            if checkpoint is None:
                present = [k for k in CHECKPOINT_KINDS if any(folder.glob(f"fold_*/checkpoint_{k}.pt"))]
                checkpoint = present[0] if present else "final"
            predictor = cls.from_model_folder(folder, folds, checkpoint, device, **kwargs)
            if not Path(path).is_dir():  # the extracted files are gone after this block: name the zip
                predictor.checkpoint_paths = [f"{path}:{Path(p).relative_to(folder)}" for p in predictor.checkpoint_paths]
        return predictor

    def replace_networks(self, networks: Sequence[Any]) -> None:
        """Run these callables instead of the fold networks, one per fold: e.g. their exported, parity-checked
        TorchScript or ONNX engines (``(batch, C, *patch)`` images to logits)."""
        if len(networks) != len(self.networks):
            raise ValueError(f"{len(networks)} networks given for {len(self.networks)} folds")
        self.networks = list(networks)

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
        reverted = self._reverted(probabilities, properties)
        if not return_probabilities:
            return reverted_label_map(reverted, self.layout)
        original = np.empty((reverted.num_classes, *reverted.shape), dtype=np.float32)  # asked for: one copy

        def keep(k: int, start: int, stop: int, rows: np.ndarray) -> None:
            original[k, start:stop] = rows

        return reverted_label_map(reverted, self.layout, keep), original

    def _reverted(self, probabilities: torch.Tensor | np.ndarray, properties: Mapping[str, Any]
                  ) -> RevertedProbabilities:
        return RevertedProbabilities(probabilities, properties, self.plans, self.configuration,
                                     regions=self.layout.has_regions)

    # ---------------------------------------------------------------------------------- predict
    def predict_preprocessed(self, data: np.ndarray | torch.Tensor, progress: bool = False) -> torch.Tensor:
        """``(C, *spatial)`` preprocessed data → ``(K, *spatial)`` float32 probabilities (CPU); ``progress`` shows
        a bar of the case's tiles (tiles/s and the time left)."""
        from tqdm import tqdm

        finite = torch.isfinite(data).all() if isinstance(data, torch.Tensor) else np.isfinite(data).all()
        if not finite:
            raise DatasetError("preprocessed image contains NaN or infinite values")
        total = count_tiles(data.shape[1:], self.config.patch_size, self.step) * len(mirror_subsets(self.mirror_axes)) \
            * len(self.networks)
        with tqdm(total=total, desc="case", unit="tile", leave=False, disable=not progress) as bar:
            return predict_preprocessed_case(
                self.networks, data, self.config.patch_size, self.mirror_axes, step=self.step,
                use_gaussian=self.use_gaussian, batch_windows=self.batch_windows, device=self.device,
                regions=self.layout.has_regions, amp=self.amp, progress=bar.update)

    def preprocess(self, image_files: Sequence[str | Path]) -> tuple[np.ndarray, dict[str, Any]]:
        """Read and preprocess one case as in training; checks the image dimensionality."""

        data, _, properties = preprocess_case(list(image_files), self.plans, self.configuration)
        trained_2d = LIFTED_AXIS_SPACING in [float(s) for s in self.plans.original_median_spacing_after_transp]
        ndim = int(properties["original_ndim"])
        if trained_2d and ndim != 2:
            raise DatasetError(f"{ndim}D image but the model was trained on 2D images", path=image_files[0])
        if not trained_2d and ndim != 3:
            raise DatasetError(f"{ndim}D image but the model was trained on 3D images", path=image_files[0])
        return data, properties

    def revert(self, probabilities: torch.Tensor | np.ndarray, properties: Mapping[str, Any]) -> np.ndarray:
        """Probabilities on the preprocessed grid → ``(K, *original array shape)`` float32 (the one full-size
        array it returns; the label map alone never needs it, see :meth:`_labels`)."""
        reverted = self._reverted(probabilities, properties)
        original = np.empty((reverted.num_classes, *reverted.shape), dtype=np.float32)
        for start, stop in reverted.slabs():
            for k in range(reverted.num_classes):
                original[k, start:stop] = reverted.class_rows(k, start, stop)
        return original

    def _export(self, case: InputCase, probabilities: torch.Tensor, properties: dict[str, Any], target: Path,
                save_probs: bool) -> None:
        """Write the label map (and with ``save_probs`` the probabilities, streamed to disk slab by slab): memory
        is one slab of one class plus the label map, whatever the number of classes."""
        reverted = self._reverted(probabilities, properties)
        if not save_probs:
            write_label_map(reverted_label_map(reverted, self.layout), properties, target)
            return
        with ProbabilitiesWriter(target.parent, case.case_id, (reverted.num_classes, *reverted.shape),
                                 properties) as writer:
            write_label_map(reverted_label_map(reverted, self.layout, writer.write_rows), properties, target)
            writer.finish()

    def predict_folder(self, input_dir: str | Path, output_dir: str | Path, overwrite: bool = False,
                       save_probabilities: bool = False, num_workers: int = 2, progress: bool = True,
                       extra_args: Mapping[str, Any] | None = None, num_parts: int = 1, part_id: int = 0,
                       wait_seconds: float = PEER_WAIT_SECONDS) -> PredictionReport:
        """Predict every case of ``input_dir`` (or part ``part_id`` of ``num_parts``) into ``output_dir``
        (see module docstring).

        ``num_workers`` threads read/preprocess ahead and as many export behind (0 = in line).
        Never writes into ``input_dir``; case files this model already wrote into ``output_dir`` are kept
        unless ``overwrite``. An output folder inside a raw dataset, or one holding files medmamba did not
        write (unless ``overwrite``), is refused before anything is written.
        """
        input_dir, output_dir = Path(input_dir), Path(output_dir)
        check_separate(output_dir, [input_dir], "output folder")
        cases, failures = gather_input_cases(input_dir, self.plans.num_input_channels)
        cases, failures = select_part(cases, failures, num_parts, part_id)
        out = OutputFolder(output_dir, inputs=[input_dir], overwrite=overwrite, what="output folder",
                           whole_folder=True)
        with out:
            self._check_same_model(out)
            return self._predict_into(out, input_dir, cases, failures, save_probabilities, num_workers, progress,
                                      extra_args, wait_seconds)

    def _check_same_model(self, out: OutputFolder) -> None:
        """Predictions of two models in one folder would contradict its dataset.json/plans.json: refuse
        unless ``--overwrite`` (which predicts every case again)."""

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
                      extra_args: Mapping[str, Any] | None, wait_seconds: float = PEER_WAIT_SECONDS
                      ) -> PredictionReport:
        from tqdm import tqdm

        output_dir, overwrite = out.path, out.overwrite
        report = PredictionReport()
        started = time.time()

        def fail(case_id: str, reason: str) -> None:
            logger.warning("case %s failed: %s", case_id, reason)
            report.failed.append((case_id, reason))

        for case_id, reason in failures:
            fail(case_id, reason)
        todo: list[tuple[InputCase, Path]] = []
        for case in cases:
            target = output_dir / f"{case.case_id}{case.ending}"
            # only a file medmamba recorded writing (for this model: _check_same_model) counts as done
            if target.exists() and not overwrite and target.name in out.recorded:
                report.skipped.append(case.case_id)
            else:
                todo.append((case, target))
        fixed = ["plans.json", "dataset.json", "predict_args.json"]
        per_case = [name for case, target in todo
                    for name in [target.name, *([f"{case.case_id}.npz", f"{case.case_id}.json"]
                                                if save_probabilities else [])]]
        out.claim(fixed + per_case)  # a case file medmamba did not write is refused here unless overwrite
        # every process of a cohort writes the same three files, each atomically
        atomic_write_json(output_dir / "plans.json", self.plans_dict)
        atomic_write_json(output_dir / "dataset.json", self.dataset_json)
        atomic_write_json(output_dir / "predict_args.json", {
            "input_folder": str(input_dir), "configuration": self.configuration,
            "checkpoints": self.checkpoint_paths, "step": self.step, "mirror_axes": self.mirror_axes,
            "use_gaussian": self.use_gaussian, "save_probabilities": save_probabilities, **dict(extra_args or {})})

        claims_dir = output_dir / CLAIMS_FOLDER
        unclaimed: deque[tuple[InputCase, Path]] = deque(todo)
        held_elsewhere: list[tuple[InputCase, Path]] = []
        held: dict[str, claims.Claim] = {}

        def finished_elsewhere(case: InputCase, target: Path) -> bool:
            # under --overwrite a file from an earlier run is there too: the claim notes when a peer finished
            if overwrite:
                return claims.finished_since(claims_dir / f"{case.case_id}.lock", started)
            return target.exists()

        def next_case(wait: bool) -> tuple[InputCase, Path] | None:
            """The next case this process claims; with ``wait``, waits for cases other processes hold
            (taking over those whose process died) until none is left."""
            nonlocal unclaimed, held_elsewhere
            said = False
            while True:
                while unclaimed:
                    case, target = unclaimed.popleft()
                    if finished_elsewhere(case, target):
                        report.by_others.append(case.case_id)
                        bar.update()
                        continue
                    claim = claims.try_claim(claims_dir / f"{case.case_id}.lock")
                    if claim is None:
                        held_elsewhere.append((case, target))
                        continue
                    if finished_elsewhere(case, target):  # finished between the check and the claim
                        claim.release()
                        report.by_others.append(case.case_id)
                        bar.update()
                        continue
                    held[case.case_id] = claim
                    return case, target
                if not held_elsewhere or not wait:
                    return None
                if not said:
                    logger.info("waiting for %d case(s) other processes are predicting (%s)", len(held_elsewhere),
                                ", ".join(c.case_id for c, _ in held_elsewhere[:5]))
                    said = True
                time.sleep(wait_seconds)
                unclaimed, held_elsewhere = deque(held_elsewhere), []

        def release(case_id: str, done: bool) -> None:
            claim = held.pop(case_id, None)
            if claim is not None:
                if done:
                    claim.mark_done()
                claim.release()

        def export(case: InputCase, probabilities: torch.Tensor, properties: dict[str, Any], target: Path) -> None:
            try:
                self._export(case, probabilities, properties, target, save_probabilities)
                release(case.case_id, True)
            finally:
                release(case.case_id, False)

        workers = max(0, int(num_workers))
        readers = ThreadPoolExecutor(max_workers=workers) if workers else None
        writers = ThreadPoolExecutor(max_workers=workers) if workers else None
        reads: deque[tuple[InputCase, Path, Future | Callable[[], Any]]] = deque()
        exports: deque[tuple[str, Future]] = deque()
        bar = tqdm(total=len(todo), desc="predict", unit="case", disable=not progress)

        def submit_read(wait: bool = False) -> bool:
            claimed = next_case(wait)
            if claimed is None:
                return False
            case, target = claimed
            if readers is None:
                reads.append((case, target, lambda c=case: self.preprocess(c.image_files)))
            else:
                reads.append((case, target, readers.submit(self.preprocess, case.image_files)))
            return True

        def finish_export(case_id: str, fut: Future) -> None:
            try:
                fut.result()
                report.written.append(case_id)
            except WriteError:  # a full disk or a read-only folder stops the run: no later case could be written
                raise
            except Exception as err:  # noqa: BLE001 - reported per case, others go on
                fail(case_id, _describe(err))

        try:
            for _ in range(workers + 1):
                if not submit_read():
                    break
            while reads or submit_read(wait=True):
                case, target, pending = reads.popleft()
                submit_read()
                bar.update()
                try:
                    data, properties = pending() if callable(pending) else pending.result()
                    probabilities = self.predict_preprocessed(data, progress=progress)
                    del data
                except Exception as err:  # noqa: BLE001
                    release(case.case_id, False)
                    fail(case.case_id, _describe(err))
                    continue
                if writers is None:
                    try:
                        export(case, probabilities, properties, target)
                        report.written.append(case.case_id)
                    except WriteError:
                        raise
                    except Exception as err:  # noqa: BLE001
                        fail(case.case_id, _describe(err))
                    continue
                exports.append((case.case_id, writers.submit(export, case, probabilities, properties, target)))
                while len(exports) > workers + 1:  # bound the memory held by finished probabilities
                    finish_export(*exports.popleft())
            while exports:
                finish_export(*exports.popleft())
        finally:
            for pool in (readers, writers):
                if pool is not None:
                    pool.shutdown(wait=True, cancel_futures=True)
            for case_id in list(held):
                release(case_id, False)
            bar.close()
        report.written.sort()
        report.failed.sort()
        report.by_others.sort()
        return report
