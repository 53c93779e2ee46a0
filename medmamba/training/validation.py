"""Final validation: sliding-window prediction of the fold's validation cases -> ``validation/``.

Uses the inference package's ``predict_preprocessed_case`` (Gaussian tiles, step 0.5, mirror TTA
over the checkpoint's ``mirror_axes``, as nnU-Net's final validation).
Reads only the preprocessing stage's output: when preprocessing copied the case's label file to
``<preprocessed>/<dataset>/gt_segmentations/`` and the case's properties allow inverting
preprocessing, the prediction is resampled back (slab by slab, as ``medmamba predict`` does),
written with the input's geometry and scored in the original space; otherwise it is scored on the
preprocessed grid against ``<case>_seg.npy`` and the summary says so.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from medmamba.formats.preprocessed_case import ground_truth_path, load_preprocessed_case
from medmamba.evaluation.metrics import compute_metrics
from medmamba.evaluation.summary import build_summary
from medmamba.formats.checkpoint import read_checkpoint
from medmamba.formats.summary import write_summary
from medmamba.inference.array_prediction import predict_preprocessed_case
from medmamba.inference.label_maps import probabilities_to_label_map, reverted_label_map
from medmamba.training.cascade_inputs import previous_stage_input, write_next_stage_segmentation
from medmamba.training.checkpoint_store import unwrap
from medmamba.datasets.image_io import read_image
from medmamba.preprocessing.case_transform import export_segmentation
from medmamba.preprocessing.slab_revert import RevertedProbabilities

logger = logging.getLogger("medmamba.training")


def _reference_file(setup, case_id: str) -> Path | None:
    path = ground_truth_path(setup.dataset_folder, case_id, setup.plans.file_ending)
    return path if path.is_file() else None


def run_final_validation(setup, trainer, best: bool = False) -> Path:
    """Predict and score every validation case; returns the path of ``validation/summary.json``."""
    from tqdm import tqdm

    network = unwrap(trainer.network)
    if best and trainer.store.path("best").is_file():
        network.load_state_dict(read_checkpoint(trainer.store.path("best"), map_location=trainer.device).state_dict)
        logger.info("final validation with checkpoint_best.pt")
    network.eval()
    out = setup.output_folder / "validation"
    out.mkdir(parents=True, exist_ok=True)
    layout = setup.layout
    labels = layout.evaluation_labels  # region mode: one entry per region, scored on the painted map
    ignore = setup.plans.ignore_label  # scored on annotated voxels only, and not itself a label
    entries, spaces = [], set()
    for case_id in tqdm(setup.val_ids, desc="final validation", leave=False):
        data, seg, props = load_preprocessed_case(setup.data_folder, case_id)
        probs = predict_preprocessed_case(network, previous_stage_input(setup, case_id, np.array(data)),
                                          setup.patch_size, mirror_axes=trainer.mirror_axes, device=trainer.device,
                                          regions=layout.has_regions)
        write_next_stage_segmentation(setup, case_id, probs)  # 3d_lowres: what the cascade trains on
        reference = _reference_file(setup, case_id)
        entry: dict
        if reference is not None and "geometry" in props:
            # slab by slab and class by class, as `predict` does: a CT's classes x voxels never exist at once
            pred = reverted_label_map(RevertedProbabilities(probs, props, setup.plans, setup.configuration,
                                                            regions=layout.has_regions), layout)
            pred_file = out / f"{case_id}{setup.plans.file_ending}"
            export_segmentation(pred, props, pred_file)
            ref, geometry = read_image(reference)
            metrics = compute_metrics(ref, pred, labels, spacing=geometry.spacing, ignore_label=ignore)
            entry = {"case": case_id, "reference_file": str(reference), "prediction_file": str(pred_file),
                     "spacing": list(geometry.spacing), "metrics": metrics}
            spaces.add("original")
        else:
            seg = np.asarray(seg)[0]
            pred = probabilities_to_label_map(probs, layout)
            spacing = list(setup.config.spacing)
            if len(spacing) != seg.ndim:  # 2D configuration over a 3D stack: slice spacing unknown here
                spacing = [1.0] * (seg.ndim - len(spacing)) + spacing
            metrics = compute_metrics(np.where(seg < 0, 0, seg), pred, labels, spacing=spacing, ignore_label=ignore)
            entry = {"case": case_id, "reference_file": str(setup.data_folder / f"{case_id}_seg.npy"),
                     "prediction_file": None, "spacing": spacing, "metrics": metrics}
            spaces.add("preprocessed")
        entries.append(entry)
    summary = build_summary(entries, labels)
    summary["validation_space"] = sorted(spaces)
    summary["checkpoint"] = "best" if best else "final"
    path = out / "summary.json"
    write_summary(path, summary)
    logger.info("validation: mean foreground Dice %.4f -> %s", summary["foreground_mean"].get("Dice", float("nan")),
                path)
    return path
