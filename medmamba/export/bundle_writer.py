"""``export_bundle``: one trained model as a MONAI bundle (layout: :mod:`medmamba.formats.bundle_layout`).

The bundle runs with ``python -m monai.bundle run --config_file <bundle>/configs/inference.json`` and loads in
MONAI Label's bundle app. Its pipeline is MONAI's loader and writer around medmamba's own predictor
(:mod:`medmamba.export.bundle_runtime`), so its labels are those of ``medmamba predict``.
"""
from __future__ import annotations

import datetime
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from medmamba import __version__
from medmamba.atomic import atomic_write_json, atomic_write_text
from medmamba.formats.label_layout import LabelLayout
from medmamba.errors import ConfigurationError, NetworkError
from medmamba.formats.bundle_layout import (BUNDLE_FORMAT_VERSION, BUNDLE_HASHES_KEY, MEDMAMBA_DIR,
                                           MONAI_METADATA_SCHEMA_URL, bundle_file_records)
from medmamba.export.bundle_runtime import FoldEnsemble
from medmamba.export.network_export import export_network
from medmamba.formats.checkpoint import CHECKPOINT_KINDS
from medmamba.formats.model_zip import open_model
from medmamba.formats.plans import plans_from_any
from medmamba.inference.label_maps import layout_from_dataset
from medmamba.inference.model_folder import fold_checkpoint_paths, load_inference_checkpoint
from medmamba.inference.predictor import Predictor
from medmamba.output_safety import check_separate

# JSON schema of configs/metadata.json written from the MONAI Bundle Specification's list of mandatory
# keys and tensor-format keys (checked by `python -m monai.bundle verify_metadata --filepath` offline).
METADATA_SCHEMA = Path(__file__).with_name("monai_bundle_schema.json")
NIFTI_ENDINGS = (".nii", ".nii.gz")


@dataclass(frozen=True)
class ExportedBundle:
    path: Path
    folds: list[str]
    torchscript: bool
    torchscript_note: str
    parity: list[Any]


def _channel_defs(plans, layout: LabelLayout) -> dict[str, str]:
    """Output channel -> name: the region names (region mode), else the label names by value."""
    if layout.has_regions:
        return {str(i): n for i, n in enumerate(layout.region_names)}
    by_value = {int(v): k for k, v in plans.labels.items() if k != "ignore" and not isinstance(v, list)}
    return {str(i): by_value[v] for i, v in enumerate(layout.label_values)}


def metadata(plans, configuration: str, dataset_json: dict[str, Any], layout: LabelLayout, network_name: str,
             folds: list[str], version: str, authors: str, copyright: str, license: str) -> dict[str, Any]:
    """``configs/metadata.json``: every key the MONAI Bundle Specification makes mandatory, plus name,
    license, intended use and the medmamba provenance."""
    import monai
    import nibabel

    config = plans.configuration(configuration)
    channels = {str(k): str(v) for k, v in sorted(plans.channel_names.items(), key=lambda kv: int(kv[0]))}
    ct = all(str(n) == "CTNormalization" for n in config.normalization_schemes)
    modality = next(iter(channels.values())) if len(set(channels.values())) == 1 else "n/a"
    labels_out = _channel_defs(plans, layout)
    task = f"segmentation of {plans.dataset_name}"
    if dataset_json.get("description"):
        task += f" ({dataset_json['description']})"
    return {
        "schema": MONAI_METADATA_SCHEMA_URL,
        "version": version,
        "changelog": {version: f"exported by medmamba {__version__} from the {configuration} {network_name} model "
                               f"(folds {', '.join(folds)})"},
        "monai_version": monai.__version__,
        "pytorch_version": torch.__version__.split("+")[0],
        "numpy_version": np.__version__,
        "required_packages_version": {"medmamba": __version__, "nibabel": nibabel.__version__},
        "name": f"medmamba {plans.dataset_name} {configuration} {network_name}",
        "task": task,
        "description": (f"medmamba {network_name} ({configuration}, {len(folds)} fold(s) ensembled) trained on "
                        f"{plans.dataset_name}: {dataset_json.get('numTraining', 'unknown')} training cases. The "
                        "inference config runs medmamba's own preprocessing (reorientation, cropping, resampling to "
                        f"{list(config.spacing)} mm, {', '.join(map(str, config.normalization_schemes))}), sliding "
                        "window with gaussian weighting, mirror test-time augmentation and resampling back, giving "
                        "the labels of `medmamba predict`."),
        "authors": authors,
        "copyright": copyright,
        "license": license,
        "intended_use": "research; not validated for clinical use",
        "data_source": plans.dataset_name,
        "data_type": "nibabel" if plans.file_ending in NIFTI_ENDINGS else plans.file_ending.lstrip("."),
        "image_classes": f"{len(channels)} channel(s): " + ", ".join(f"{k} = {v}" for k, v in channels.items()),
        "label_classes": ", ".join(f"{v} = {k}" for k, v in labels_out.items()),
        "network_data_format": {
            "inputs": {"image": {
                "type": "image", "format": "hounsfield" if ct else "magnitude", "modality": modality,
                "num_channels": len(channels), "spatial_shape": [int(s) for s in config.patch_size],
                "dtype": "float32", "value_range": [], "is_patch_data": True, "channel_def": channels}},
            "outputs": {"pred": {
                "type": "image", "format": "classes" if layout.has_regions else "labels", "modality": "n/a",
                "num_channels": len(labels_out), "spatial_shape": [int(s) for s in config.patch_size],
                "dtype": "float32", "value_range": [0, 1], "is_patch_data": True, "channel_def": labels_out}},
        },
    }


def inference_config(network_name: str, network_kwargs: dict[str, Any], n_folds: int, regions: bool,
                     n_channels: int, file_ending: str, max_label: int) -> dict[str, Any]:
    """``configs/inference.json``: MONAI's loader and writer around medmamba's predictor. ``input_dir`` and
    ``output_dir`` (and ``bundle_root``, ``device``, ``inferer#tta`` ...) are overridable config ids."""
    runtime = "medmamba.export.bundle_runtime"
    load = {"_target_": "LoadImaged", "keys": "image", "image_only": True}
    if file_ending in NIFTI_ENDINGS:
        load["reader"] = "NibabelReader"
    return {
        # "$import a.b" binds the name "a.b": "$import medmamba" binds the package, the second loads the module
        "imports": ["$import numpy", "$import torch", "$import medmamba", f"$import {runtime}"],
        "bundle_root": ".",
        "input_dir": "$@bundle_root + '/input'",
        "output_dir": "$@bundle_root + '/eval'",
        "device": "$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')",
        "ckpt_path": "$@bundle_root + '/models/model.pt'",
        "medmamba_dir": f"$@bundle_root + '/{MEDMAMBA_DIR}'",
        "num_channels": n_channels,
        "network_def": {"_target_": f"{runtime}.FoldEnsemble", "network_name": network_name,
                        "network_kwargs": network_kwargs, "n_folds": n_folds, "regions": regions},
        "network": "$@network_def.to(@device)",
        "datalist": f"${runtime}.bundle_datalist(@input_dir, @num_channels)",
        "preprocessing": {"_target_": "Compose", "transforms": [
            load,
            {"_target_": "EnsureChannelFirstd", "keys": "image"},
            {"_target_": "EnsureTyped", "keys": "image", "dtype": "$torch.float32"},
        ]},
        "dataset": {"_target_": "Dataset", "data": "@datalist", "transform": "@preprocessing"},
        "dataloader": {"_target_": "DataLoader", "dataset": "@dataset", "batch_size": 1, "shuffle": False,
                       "num_workers": 0},
        "inferer": {"_target_": f"{runtime}.MedmambaInferer", "model_dir": "@medmamba_dir", "step": 0.5,
                    "tta": True, "batch_windows": 4, "device": "@device",
                    "output": "labels"},  # slab-wise label map: no classes x voxels array of a whole CT
        "postprocessing": {"_target_": "Compose", "transforms": [
            {"_target_": f"{runtime}.LabelMapd", "keys": "pred", "model_dir": "@medmamba_dir"},
            {"_target_": "SaveImaged", "keys": "pred", "output_dir": "@output_dir", "output_postfix": "",
             "output_ext": ".nii.gz", "separate_folder": False, "resample": False, "writer": "NibabelWriter",
             "output_dtype": "$numpy.uint8" if max_label <= 255 else "$numpy.uint16",
             "output_name_formatter": f"${runtime}.case_name", "print_log": False},
        ]},
        "evaluator": {"_target_": f"{runtime}.BundleEvaluator", "dataloader": "@dataloader", "network": "@network",
                      "inferer": "@inferer", "postprocessing": "@postprocessing", "device": "@device"},
        "initialize": [f"${runtime}.load_weights(@network, @ckpt_path)"],
        "run": ["$@evaluator.run()"],
    }


def _readme(meta: dict[str, Any], ts_note: str, n_channels: int) -> str:
    channels = meta["network_data_format"]["inputs"]["image"]["channel_def"]
    naming = ("`CASE_0000.nii.gz`" if n_channels == 1 else
              ", ".join(f"`CASE_{int(k):04d}.nii.gz` ({v})" for k, v in channels.items()))
    return f"""# {meta['name']}

{meta['description']}

- Labels: {meta['label_classes']}
- Input: {meta['image_classes']}; files named {naming} per case, as `medmamba predict` reads them.
- Version {meta['version']}; exported with medmamba {meta['required_packages_version']['medmamba']}, \
MONAI {meta['monai_version']}, PyTorch {meta['pytorch_version']}. Intended use: {meta['intended_use']}.
- Authors: {meta['authors']}. {meta['copyright']}. Licence: {meta['license']} (see LICENSE).

## Files

- `models/model.pt`: state dict of `network_def` (`medmamba.export.bundle_runtime.FoldEnsemble`, one registry
  network per fold). `models/medmamba/`: plans, dataset.json and model.json the inferer needs.
- `models/model.ts`: {ts_note}

## Run

Needs medmamba installed in the same Python environment as MONAI (its `bundle` extra adds `fire`, which
MONAI's command line needs):

    python -m monai.bundle run --config_file configs/inference.json --bundle_root . \\
        --input_dir /path/to/images --output_dir /path/to/predictions

writes `<output_dir>/CASE.nii.gz` label maps on each input's grid, equal to `medmamba predict -m MODEL`.
Override `--inferer#tta False` for 8x faster 3D prediction without mirroring, `--device "$torch.device('cpu')"`.
The inferer returns the label map (`output` "labels": probabilities brought back onto the image slab by slab, as
`medmamba predict` does); `--inferer#output probabilities` returns MONAI's per-class probabilities instead, one
float32 array of classes × voxels (14 GB for 22 classes on a 512×512×600 CT).

## MONAI Label and 3D Slicer

MONAI Label's `monaibundle` sample app serves bundles from its `model/` folder: copy this folder to
`apps/monaibundle/model/<name>` (a folder of that name is used as it is, not downloaded from the model zoo)
and start the server with it, e.g.

    monailabel apps --download --name monaibundle --output apps
    cp -r THIS_BUNDLE apps/monaibundle/model/medmamba_segmentation
    monailabel start_server --app apps/monaibundle --studies /path/to/images \\
        --conf models medmamba_segmentation

Install medmamba in the same environment as MONAI Label. In 3D Slicer, install the MONAILabel extension,
connect it to the server (default http://127.0.0.1:8000), pick `medmamba_segmentation` under Auto Segmentation and
run it on the loaded volume: the server runs this bundle's preprocessing, inferer and postprocessing (its own
writer replaces SaveImaged). The network's patch size in metadata.json is the training patch; the inferer
takes whole images of any size.
"""


def _license(license: str, copyright: str) -> str:
    return f"""Model weights and configuration
-------------------------------
{copyright}
Licence: {license}

Code
----
The inference code this bundle runs is medmamba ({__version__}), Apache License 2.0
(https://www.apache.org/licenses/LICENSE-2.0), and MONAI, Apache License 2.0.
"""


def export_bundle(model: str | os.PathLike, output: str | os.PathLike, folds: Sequence[str | int] | None = None,
                  checkpoint: str | None = None, version: str = "0.1.0", authors: str = "not stated",
                  copyright: str = "not stated", license: str = "not stated; ask the model's authors",
                  torchscript: bool = True, overwrite: bool = False,
                  echo: Callable[[str], None] | None = None) -> ExportedBundle:
    """Write the bundle folder ``output`` from a model folder or zip (``export_model``).

    Every fold of the model (or ``folds``) goes into ``network_def``; ``models/model.ts`` is written when
    the TorchScript export of that ensemble matches eager within 1e-4 (``torchscript`` False: skipped).
    The folder is assembled next to ``output`` and renamed into place when complete.
    """

    say = echo or (lambda line: None)
    output = Path(output)
    check_separate(output, [model], "bundle folder")
    if output.exists() and not overwrite:
        raise ConfigurationError("bundle folder exists (give --overwrite to replace it)", path=output)
    if output.exists() and not output.is_dir():
        raise ConfigurationError("bundle output exists and is not a folder", path=output)
    with open_model(model, __version__) as folder:
        if checkpoint is None:
            present = [k for k in CHECKPOINT_KINDS if any(folder.glob(f"fold_*/checkpoint_{k}.pt"))]
            checkpoint = present[0] if present else "final"
        fold_names = None if folds is None else [str(f) for f in folds]
        # the predictor's loader checks that the folds belong to this model folder and to each other
        Predictor.from_model_folder(folder, fold_names, checkpoint, device="cpu")
        paths = fold_checkpoint_paths(folder, fold_names, checkpoint)
        ckpts = [load_inference_checkpoint(p) for p in paths]
    names = [p.parent.name[len("fold_"):] for p in paths]
    first = ckpts[0]
    plans = plans_from_any(first.plans)
    configuration = first.configuration
    layout = layout_from_dataset(plans.labels, first.dataset_json)
    ensemble = FoldEnsemble(first.network_name, first.network_kwargs, len(ckpts), layout.has_regions)
    for net, ckpt in zip(ensemble.folds, ckpts):
        net.load_state_dict(ckpt.state_dict)
    ensemble.eval()
    config = plans.configuration(configuration)
    n_channels = plans.num_input_channels
    max_label = max(layout.regions_class_order if layout.has_regions else layout.label_values or (1,))

    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))
    try:
        (staging / "configs").mkdir()
        (staging / "docs").mkdir()
        (staging / MEDMAMBA_DIR).mkdir(parents=True)
        torch.save(ensemble.state_dict(), staging / "models" / "model.pt")
        atomic_write_json(staging / MEDMAMBA_DIR / "plans.json", first.plans)
        atomic_write_json(staging / MEDMAMBA_DIR / "dataset.json", first.dataset_json)
        atomic_write_json(staging / MEDMAMBA_DIR / "model.json", {
            "format_version": BUNDLE_FORMAT_VERSION, "configuration": configuration,
            "network_name": first.network_name, "network_kwargs": first.network_kwargs, "folds": names,
            "checkpoint": checkpoint, "mirror_axes": list(first.mirror_axes or []),
            "medmamba_version": __version__,
            "created": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")})
        parity: list[Any] = []
        ts_note = "not written (export_bundle was run without TorchScript)"
        if torchscript:
            try:
                parity = export_network(ensemble, list(config.patch_size), n_channels,
                                        staging / "models" / "model.ts", "torchscript")
                worst = max(c.max_abs_diff for c in parity)
                ts_note = (f"TorchScript of `network_def` (mean fold probabilities per patch of "
                           f"{list(config.patch_size)}, dynamic batch); max |eager - TorchScript| = {worst:.2e} "
                           "on random input at export")
                for c in parity:
                    say(f"model.ts: {c.line()}")
            except NetworkError as err:
                ts_note = f"not written: the TorchScript export did not pass its parity check ({err.problem})"
                say(f"model.ts {ts_note}")
        meta = metadata(plans, configuration, first.dataset_json, layout, first.network_name, names, version,
                        authors, copyright, license)
        atomic_write_json(staging / "configs" / "inference.json", inference_config(
            first.network_name, first.network_kwargs, len(ckpts), layout.has_regions, n_channels,
            plans.file_ending, max_label))
        # the model files' sizes and hashes, checked by the bundle's inferer before it loads them
        meta[BUNDLE_HASHES_KEY] = bundle_file_records(staging)
        atomic_write_json(staging / "configs" / "metadata.json", meta)
        atomic_write_text(staging / "docs" / "README.md", _readme(meta, ts_note, n_channels))
        atomic_write_text(staging / "LICENSE", _license(license, copyright))
        if output.exists():
            old = staging / ".previous"
            os.replace(output, old)
        os.replace(staging, output)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    shutil.rmtree(output / ".previous", ignore_errors=True)
    return ExportedBundle(output.absolute(), names, (output / "models" / "model.ts").is_file(), ts_note, parity)
