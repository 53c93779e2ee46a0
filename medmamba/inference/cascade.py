"""Predicting with a cascade (``-c 3d_cascade_fullres``): the previous stage first, then the full resolution.

Per case: preprocess for the previous stage (``3d_lowres``) and predict with its folds (sliding window,
mirror TTA, fold average) → resample its probabilities straight onto the full-resolution preprocessed
grid (the previous stage's ``probabilities_order``, separate z as in preprocessing) → labels → one binary
channel per foreground label appended to the full-resolution image → the cascade's folds.

This is the path training took: the cascade trained on the low-resolution validation predictions
resampled the same way (medmamba/training/cascade_inputs.py). nnU-Net instead runs two commands and
feeds the exported low-resolution label map through preprocessing again
(``-prev_stage_predictions``), a train/test difference we avoid. Both grids are the same crop of the
image (cropping happens before resampling), so only the resampling differs between them.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from medmamba.errors import CheckpointError, ConfigurationError
from medmamba.formats.cascade import one_hot_foreground
from medmamba.formats.label_layout import foreground_labels
from medmamba.inference.label_maps import ClassByClassLabels, label_map_dtype, layout_from_dataset
from medmamba.inference.predictor import Predictor
from medmamba.preprocessing.case_transform import preprocess_arrays
from medmamba.preprocessing.resampling import separate_z_axis
from medmamba.preprocessing.slab_resampling import resampled_rows, slab_ranges


def previous_stage_labels(probabilities: Any, previous_config: Any, next_config: Any, shape: Sequence[int],
                          labels: Mapping[str, Any], dataset_json: Mapping[str, Any]) -> np.ndarray:
    """The previous stage's ``(K, *its grid)`` probabilities as a label map on the next stage's grid ``shape``.

    Used by training (the hand-over files) and by prediction alike.
    The resampling (``resample_data_or_seg``'s arithmetic) and the argmax run a slab of rows at a time and one
    class at a time, so no ``classes × next-grid voxels`` array is made.
    """

    if hasattr(probabilities, "detach"):
        probabilities = probabilities.detach().float().cpu().numpy()
    probabilities = np.asarray(probabilities, np.float32)
    rs = previous_config.resampling
    shape = [int(s) for s in shape]
    z_axis = separate_z_axis(previous_config.spacing, next_config.spacing, rs.anisotropy_threshold,
                             rs.force_separate_z)
    layout = layout_from_dataset(labels, dataset_json)
    out = np.empty(shape, dtype=label_map_dtype(layout, probabilities.shape[0]))
    for start, stop in slab_ranges(shape):
        slab = ClassByClassLabels(layout, probabilities.shape[0], (stop - start, *shape[1:]))
        for k in range(probabilities.shape[0]):
            slab.add(k, resampled_rows(probabilities[k], shape, 0, start, stop, rs.probabilities_order, rs.order_z,
                                       z_axis))
        out[start:stop] = slab.labels()
    return out


class CascadePredictor(Predictor):
    """A :class:`Predictor` for a configuration with a ``previous_stage``; ``previous`` predicts that stage."""

    previous: Predictor

    def attach_previous(self, previous: Predictor) -> "CascadePredictor":
        if previous.configuration != self.config.previous_stage:
            raise CheckpointError(f"the previous-stage model is configuration {previous.configuration!r}, "
                                  f"{self.configuration} needs {self.config.previous_stage!r}")
        if foreground_labels(previous.plans.labels) != foreground_labels(self.plans.labels):
            raise CheckpointError(f"the {previous.configuration} model was trained for other labels than the "
                                  f"{self.configuration} model")
        self.previous = previous
        return self

    def _with_previous_stage(self, data: np.ndarray, previous_data: np.ndarray) -> np.ndarray:
        probabilities = self.previous.predict_preprocessed(previous_data)
        labels = previous_stage_labels(probabilities, self.previous.config, self.config, data.shape[1:],
                                       self.plans.labels, self.dataset_json)
        one_hot = one_hot_foreground(labels, foreground_labels(self.plans.labels))
        return np.concatenate([np.asarray(data, np.float32), one_hot])

    def preprocess(self, image_files: Sequence[str | Path]) -> tuple[np.ndarray, dict[str, Any]]:
        """Preprocess for both stages and predict the previous one: the cascade's input and properties."""
        data, properties = super().preprocess(image_files)
        previous_data, _ = self.previous.preprocess(image_files)
        return self._with_previous_stage(data, previous_data), properties

    def predict_array(self, array: np.ndarray, spacing: Sequence[float],
                      direction: Sequence[Sequence[float]] | None = None, origin: Sequence[float] | None = None,
                      return_probabilities: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:

        image = np.asarray(array)
        if image.ndim == 3 and self.plans.num_input_channels == 1:
            image = image[None]
        if image.ndim != 4 or image.shape[0] != self.plans.num_input_channels or len(spacing) != 3:
            return super().predict_array(array, spacing, direction, origin, return_probabilities)  # its errors
        spacing = [float(s) for s in spacing]
        data, _, properties = preprocess_arrays(image, None, spacing, self.plans, self.configuration,
                                                direction=direction)
        previous_data, _, _ = preprocess_arrays(image, None, spacing, self.previous.plans,
                                                self.previous.configuration, direction=direction)
        data = self._with_previous_stage(data, previous_data)
        return self._labels(self.predict_preprocessed(data), properties, return_probabilities)


def previous_stage_folder(model_folder: Path, previous_stage: str) -> Path:
    """``<network>__<plans>__<previous stage>`` beside the cascade's model folder (same network and plans)."""
    if model_folder.name.count("__") != 2:
        raise CheckpointError(f"a cascade model folder is named <network>__<plans>__<configuration>, so that its "
                              f"{previous_stage} model can be found beside it", path=model_folder)
    network, plans_name, _ = model_folder.name.split("__")
    return model_folder.parent / f"{network}__{plans_name}__{previous_stage}"


def load_cascade_predictor(model: str | Path, folds: Sequence[str] | None, checkpoint: str, device: str,
                           sha256: str | None = None, **options: Any) -> Predictor:
    """:meth:`Predictor.from_model` (a model folder or zip); for a cascade stage's folder with its previous
    stage attached (every trained fold of ``<network>__<plans>__<previous stage>``, same checkpoint kind)."""
    predictor = Predictor.from_model(model, folds=folds, checkpoint=checkpoint, device=device, sha256=sha256,
                                     **options)
    previous = predictor.config.previous_stage
    if not previous:
        return predictor
    if not Path(model).is_dir():
        refuse_cascade(predictor, "a model zip")
    folder = previous_stage_folder(Path(model), previous)
    if not folder.is_dir():
        raise CheckpointError(f"{predictor.configuration} needs the trained {previous} model first (predict runs it "
                              f"before the full resolution); no model folder {folder.name}", path=folder.parent)
    cascade = CascadePredictor(predictor.networks, predictor.plans, predictor.configuration, predictor.dataset_json,
                               mirror_axes=predictor.mirror_axes, device=predictor.device, **options)
    cascade.checkpoint_paths = predictor.checkpoint_paths
    stage = Predictor.from_model_folder(folder, folds=None, checkpoint=checkpoint, device=str(predictor.device),
                                        **options)
    return cascade.attach_previous(stage)


def refuse_cascade(predictor: Predictor, what: str) -> None:
    """One-line :class:`ConfigurationError` when ``predictor`` is a cascade stage and ``what`` handles one stage only."""
    if predictor.config.previous_stage:
        raise ConfigurationError(f"{what} holds one stage, and {predictor.configuration} also runs its "
                                 f"{predictor.config.previous_stage} stage; predict it from its model folder with the "
                                 f"torch engine (`medmamba predict -d DATASET -c {predictor.configuration}`)")
