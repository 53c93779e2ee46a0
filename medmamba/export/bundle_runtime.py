"""What a medmamba MONAI bundle's ``configs/inference.json`` names: the network (all folds), the inferer
(medmamba's own preprocessing, sliding window, mirror TTA, fold ensemble and resampling back, so the labels
are those of ``medmamba predict``), the label-map transform, the input list and the loop that runs them.

Imported by MONAI's config parser when a bundle runs (``python -m monai.bundle run``, MONAI Label); it
needs monai, which the rest of medmamba's networks and kernels do not import.
"""
from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any, Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.data import MetaTensor, decollate_batch
from monai.inferers import Inferer
from monai.transforms import MapTransform

from medmamba import option_ranges as R
from medmamba.datasets.image_io import file_ending
from medmamba.errors import ConfigurationError, FileFormatError
from medmamba.formats.bundle_layout import read_bundle_model, verify_bundle_files
from medmamba.formats.plans import plans_from_any
from medmamba.inference.input_folder import gather_input_cases
from medmamba.inference.label_maps import layout_from_dataset, probabilities_to_label_map
from medmamba.inference.predictor import Predictor
from medmamba.networks.registry import build_network

logger = logging.getLogger("medmamba.bundle")

OUTPUTS = ("probabilities", "labels")


class FoldEnsemble(torch.nn.Module):
    """One registry network per fold (``folds.<k>.*`` in the state dict).

    ``forward(image (B, C, *patch)) -> (B, K, *patch)``: the mean over folds of each fold's softmax
    (sigmoid for region models) of its full-resolution logits, for tools that run the network on
    patches themselves. The bundle's inferer does not call it: it runs each fold through medmamba's
    sliding window (logits averaged over windows and mirrors before the softmax, as ``predict`` does).
    """

    def __init__(self, network_name: str, network_kwargs: Mapping[str, Any], n_folds: int = 1,
                 regions: bool = False) -> None:
        super().__init__()

        self.regions = bool(regions)
        self.folds = torch.nn.ModuleList(build_network(network_name, **dict(network_kwargs))
                                         for _ in range(int(n_folds)))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        total = None
        for network in self.folds:
            out = network(image)
            logits = out[0] if isinstance(out, (list, tuple)) else out
            probs = torch.sigmoid(logits) if self.regions else torch.softmax(logits, dim=1)
            total = probs if total is None else total + probs
        assert total is not None
        return total / len(self.folds)


def _spacing_direction(affine_ras: np.ndarray, ndim: int) -> tuple[list[float], list[list[float]]]:
    """Voxel spacing and LPS direction matrix of the ``ndim`` spatial axes from a RAS affine (MONAI's
    MetaTensor ``affine``, 4x4 also for 2D images)."""
    d = ndim
    lps = np.diag([-1.0, -1.0] + [1.0] * (d - 2)) @ affine_ras[:d, :d] if d >= 2 else affine_ras[:d, :d]
    spacing = np.linalg.norm(lps, axis=0)
    return spacing.tolist(), (lps / spacing).tolist()


class MedmambaInferer(Inferer):
    """``inferer(image, network)``: image ``(B, C, *spatial)`` as MONAI loads it (file voxel order, its RAS
    affine in the MetaTensor) → ``(B, K, *spatial)`` probabilities on the same grid and with the same
    metadata, computed by :class:`medmamba.inference.Predictor` from ``network.folds``.

    Args:
        model_dir: the bundle's ``models/medmamba`` folder (plans, dataset.json, model.json).
        step, tta, batch_windows: as ``medmamba predict`` (``--step``, ``--no-tta``, ``--batch-windows``).
        device: where the networks run (the bundle's ``device``).
        output: ``"probabilities"`` (MONAI's convention; one float32 copy of classes × voxels, 14 GB for 22
            classes on a 512×512×600 CT) or ``"labels"``: the ``(B, 1, *spatial)`` label map, brought back onto
            the input grid slab by slab as ``medmamba predict`` does, an integer tensor that :class:`LabelMapd`
            passes through. Bundles medmamba writes use ``"labels"``.
    """

    def __init__(self, model_dir: str | Path, step: float = R.STEP.default, tta: bool = True,
                 batch_windows: int = R.BATCH_WINDOWS.default,
                 device: str | torch.device = "cpu", output: str = "probabilities") -> None:
        super().__init__()

        if output not in OUTPUTS:
            raise ConfigurationError(f"inferer output {output!r} is not one of {', '.join(OUTPUTS)}")
        self.model, self.plans, self.dataset_json = read_bundle_model(model_dir)
        self.step, self.tta, self.batch_windows = float(step), bool(tta), int(batch_windows)
        self.device = torch.device(device)
        self.output = output

    def predictor(self, network: torch.nn.Module):
        folds = getattr(network, "folds", None)
        if folds is None:
            raise ConfigurationError("the medmamba inferer needs the bundle's network_def (FoldEnsemble) with "
                                     "models/model.pt loaded; a TorchScript network returns probabilities per patch")
        return Predictor(list(folds), self.plans, self.model["configuration"], self.dataset_json,
                         mirror_axes=self.model["mirror_axes"], step=self.step, use_tta=self.tta,
                         batch_windows=self.batch_windows, device=self.device)

    def __call__(self, inputs: torch.Tensor, network: torch.nn.Module, *args: Any, **kwargs: Any) -> torch.Tensor:
        predictor = self.predictor(network)
        affines = inputs.affine if isinstance(inputs, MetaTensor) else None
        if affines is None:
            raise ValueError("the medmamba inferer needs images with their affine (load them with LoadImaged)")
        affines = affines.detach().cpu().double().numpy()
        if affines.ndim == 2:
            affines = affines[None].repeat(inputs.shape[0], 0)
        out = []
        for b in range(inputs.shape[0]):
            array = inputs[b].detach().cpu().float().numpy()
            spacing, direction = _spacing_direction(affines[b], array.ndim - 1)
            if self.output == "labels":
                out.append(_label_tensor(predictor.predict_array(array, spacing, direction))[None])
            else:
                out.append(torch.as_tensor(predictor.predict_array(array, spacing, direction,
                                                                   return_probabilities=True)[1]))
        # one case per batch (the bundle's loader): no stacked second copy of its probabilities
        pred = (out[0][None] if len(out) == 1 else torch.stack(out)).to(inputs.device)
        return MetaTensor(pred, meta=inputs.meta, applied_operations=inputs.applied_operations) \
            if isinstance(inputs, MetaTensor) else pred


class LabelMapd(MapTransform):
    """``(K, *spatial)`` probabilities → ``(1, *spatial)`` label map with medmamba's rule (argmax and the
    label values; regions painted in ``regions_class_order``), keeping the MetaTensor's metadata. An integer
    tensor is already a label map (the inferer's ``output="labels"``) and is left as it is."""

    def __init__(self, keys: Any, model_dir: str | Path, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)

        _, plans, dataset_json = read_bundle_model(model_dir)
        self.layout = layout_from_dataset(plans_from_any(plans).labels, dataset_json)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            probs = d[key]
            if not torch.is_floating_point(probs):
                continue  # an integer label map: the inferer made it already (slab-wise)
            labels = probabilities_to_label_map(np.asarray(probs.detach().cpu().numpy(), dtype=np.float32),
                                                self.layout)
            tensor = _label_tensor(labels)[None]
            d[key] = MetaTensor(tensor, meta=probs.meta) if isinstance(probs, MetaTensor) else tensor
        return d


def _label_tensor(labels: np.ndarray) -> torch.Tensor:
    """A uint8/uint16 label map as a tensor torch supports everywhere (uint16 → int32)."""
    return torch.as_tensor(labels.astype(np.int32) if labels.dtype == np.uint16 else labels)


def bundle_datalist(input_dir: str | Path, n_channels: int) -> list[dict[str, Any]]:
    """The cases of ``input_dir`` in raw naming (``CASE_0000.nii.gz`` …, as ``medmamba predict`` reads them):
    ``[{"image": [channel files], "case": id}]``; a case with a missing channel file is logged and left out."""

    cases, failures = gather_input_cases(input_dir, int(n_channels))
    for case, reason in failures:
        logger.error("%s: %s (not predicted)", case, reason)
    return [{"image": [str(f) for f in c.image_files], "case": c.case_id} for c in cases]


_CHANNEL_SUFFIX = re.compile(r"_\d{4}$")


def case_name(metadict: Mapping[str, Any], saver: Any) -> dict[str, Any]:
    """``SaveImaged``'s ``output_name_formatter``: ``<case>`` (the first channel file's name without its
    ``_0000`` channel suffix), so outputs are named as ``medmamba predict`` names them."""

    source = metadict.get("filename_or_obj", "")
    if isinstance(source, (list, tuple)):
        source = source[0]
    name = Path(str(source)).name
    ending = file_ending(Path(name)) or Path(name).suffix
    stem = name[: len(name) - len(ending)] if ending else name
    return {"subject": _CHANNEL_SUFFIX.sub("", stem), "idx": None}


class BundleEvaluator:
    """The bundle's ``evaluator``: for every batch, ``pred = inferer(image, network)``, then the
    postprocessing (label map, writer) per case. Plain PyTorch, so running the bundle needs no ignite."""

    def __init__(self, dataloader: Any, network: torch.nn.Module, inferer: Inferer, postprocessing: Any,
                 device: str | torch.device = "cpu") -> None:
        self.dataloader, self.network, self.inferer = dataloader, network, inferer
        self.postprocessing, self.device = postprocessing, torch.device(device)

    def run(self) -> int:
        self.network.eval()
        n = 0
        with torch.no_grad():
            for batch in self.dataloader:
                batch["pred"] = self.inferer(batch["image"].to(self.device), self.network)
                for item in decollate_batch(batch):
                    self.postprocessing(item)
                    n += 1
                    logger.info("predicted %s", item.get("case", n))
        return n


def load_weights(network: torch.nn.Module, path: str | Path) -> torch.nn.Module:
    """Load ``models/model.pt`` (a plain state dict, checked against the metadata's sha256, read with
    ``weights_only=True``) into ``network_def``; the bundle's ``initialize``."""

    path = Path(path)
    verify_bundle_files(path.parent.parent, only=path.relative_to(path.parent.parent).as_posix())
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:  # a foreign pickle is refused by weights_only, never run
        raise FileFormatError(f"refused: not a plain tensor file ({type(err).__name__})", path=path) from None
    network.load_state_dict(state)
    return network.eval()


__all__: Sequence[str] = ("FoldEnsemble", "MedmambaInferer", "LabelMapd", "bundle_datalist", "case_name",
                          "BundleEvaluator", "load_weights")
