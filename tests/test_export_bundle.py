"""The MONAI bundle: `medmamba export_bundle` writes the specification's layout; MONAI's own command line
verifies its metadata (against the schema medmamba ships, written from the specification: the schema URL
needs network access) and runs it, and the labels it writes equal `medmamba predict`'s voxel for voxel."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from medmamba.cli.main import main
from medmamba.formats.checkpoint import read_checkpoint, write_checkpoint

REPO = Path(__file__).resolve().parents[1]


def _labels(folder: Path) -> dict[str, np.ndarray]:
    return {p.name: np.asarray(nib.load(str(p)).dataobj) for p in sorted(folder.glob("*.nii.gz"))}


def _monai_bundle(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, "-m", "monai.bundle", *args], capture_output=True, text=True, env=env,
                          timeout=600)


@pytest.fixture(scope="module")
def mixed_model(trained_tiny_model, tmp_path_factory):
    """The tiny trained model with its output bias shifted so that its labels are about half sphere, half
    background (after one training iteration it labels everything background, and equal all-zero maps
    would prove little)."""
    from medmamba.inference import Predictor

    _, model, images = trained_tiny_model
    folder = tmp_path_factory.mktemp("mixed") / model.name
    shutil.copytree(model, folder)
    probs = Predictor.from_model(folder, device="cpu").predict_case(
        [sorted(images.iterdir())[0]], return_probabilities=True)[1]
    shift = -float(np.median(np.log(probs[1] + 1e-12) - np.log(probs[0] + 1e-12)))
    path = folder / "fold_0" / "checkpoint_final.pt"
    ckpt = read_checkpoint(path)
    heads = [k for k in ckpt.state_dict if k.startswith("decoder.heads.") and k.endswith(".bias")]
    assert heads
    for key in heads:  # a constant added to one class's logits shifts the windows' weighted mean by it
        ckpt.state_dict[key][1] += shift
    write_checkpoint(path, ckpt)
    return folder, images


@pytest.mark.slow
def test_bundle_runs_in_monai_and_gives_predicts_labels(mixed_model, tmp_path, capsys):
    pytest.importorskip("fire", reason="`python -m monai.bundle` needs fire (in the test extra)")
    pytest.importorskip("jsonschema", reason="monai.bundle verify_metadata needs jsonschema (in the test extra)")
    model, images = mixed_model
    bundle = tmp_path / "medmamba_bundle"
    assert main(["predict", "-m", str(model), "-i", str(images), "-o", str(tmp_path / "predict"), "--no-progress",
                 "-np", "0"]) == 0
    assert main(["export_bundle", "-m", str(model), "-o", str(bundle), "--authors", "Test Author"]) == 0
    assert "model.ts: random input (2, 1, 16, 16)" in capsys.readouterr().err
    for rel in ("configs/metadata.json", "configs/inference.json", "models/model.pt", "models/model.ts",
                "docs/README.md", "LICENSE", "models/medmamba/plans.json", "models/medmamba/model.json"):
        assert (bundle / rel).is_file(), rel
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    image, pred = meta["network_data_format"]["inputs"]["image"], meta["network_data_format"]["outputs"]["pred"]
    assert (image["num_channels"], image["spatial_shape"], image["channel_def"]) == (1, [16, 16], {"0": "MR"})
    assert pred["channel_def"] == {"0": "background", "1": "sphere"} and pred["num_channels"] == 2
    assert meta["authors"] == "Test Author"

    from medmamba.export.bundle_writer import METADATA_SCHEMA

    verified = _monai_bundle("verify_metadata", "--meta_file", str(bundle / "configs" / "metadata.json"),
                             "--filepath", str(METADATA_SCHEMA))
    assert verified.returncode == 0, verified.stderr[-3000:]
    assert "metadata is verified with no error" in verified.stdout + verified.stderr

    out = tmp_path / "bundle_out"
    ran = _monai_bundle("run", "--config_file", str(bundle / "configs" / "inference.json"), "--bundle_root",
                        str(bundle), "--input_dir", str(images), "--output_dir", str(out))
    assert ran.returncode == 0, ran.stderr[-3000:]
    expected, got = _labels(tmp_path / "predict"), _labels(out)
    assert got.keys() == expected.keys() and len(got) == 2
    for name in got:
        agreement = float(np.mean(got[name] == expected[name]))
        print(f"{name}: monai.bundle run vs medmamba predict, {agreement:.6f} of voxels equal")
        assert np.array_equal(got[name], expected[name]), (name, agreement)
        assert 0.1 < float(np.mean(expected[name] == 1)) < 0.9  # both labels present: the comparison means something


def test_metadata_verification_rejects_a_missing_key(mixed_model, tmp_path):
    pytest.importorskip("jsonschema", reason="monai.bundle verify_metadata needs jsonschema (in the test extra)")
    from monai.bundle import verify_metadata

    from medmamba.export.bundle_writer import METADATA_SCHEMA, metadata
    from medmamba.formats.plans import plans_from_any
    from medmamba.inference import Predictor

    model, _ = mixed_model
    predictor = Predictor.from_model(model, device="cpu")
    meta = metadata(predictor.plans, predictor.configuration, predictor.dataset_json, predictor.layout, "plain_unet",
                    ["0"], "0.1.0", "a", "b", "c")
    assert plans_from_any(predictor.plans_dict).labels == {"background": 0, "sphere": 1}
    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    good.write_text(json.dumps(meta))
    verify_metadata(meta_file=str(good), filepath=str(METADATA_SCHEMA))
    del meta["network_data_format"]["outputs"]["pred"]["channel_def"]
    bad.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="channel_def"):
        verify_metadata(meta_file=str(bad), filepath=str(METADATA_SCHEMA))


def test_bundle_inferer_labels_equal_the_probabilities_path(mixed_model, tmp_path):
    """The bundle's inference.json asks its inferer for the label map (brought back slab by slab, as `predict`
    does); the probabilities output + LabelMapd gives the same labels, and bundles written before (no
    ``output``) still get probabilities."""
    from monai.bundle import ConfigParser

    from medmamba.errors import ConfigurationError
    from medmamba.export.bundle_runtime import LabelMapd, MedmambaInferer
    from medmamba.inference import Predictor

    model, images = mixed_model
    bundle = tmp_path / "bundle"
    assert main(["export_bundle", "-m", str(model), "-o", str(bundle), "--authors", "Test Author"]) == 0
    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.json"))
    parser["bundle_root"], parser["input_dir"], parser["device"] = str(bundle), str(images), "$torch.device('cpu')"
    assert parser.get("inferer")["output"] == "labels"
    network, inferer = parser.get_parsed_content("network"), parser.get_parsed_content("inferer")
    parser.get_parsed_content("initialize")  # loads models/model.pt into the network
    dataset = parser.get_parsed_content("dataset")
    old = MedmambaInferer(bundle / "models" / "medmamba", device="cpu")
    label_map = LabelMapd("pred", bundle / "models" / "medmamba")
    predictor = Predictor.from_model(model, device="cpu")
    assert len(dataset) == 2
    for item in dataset:
        image = item["image"][None]
        with torch.no_grad():
            labels, probs = inferer(image, network), old(image, network)
        assert labels.shape == (1, 1, *image.shape[2:]) and not torch.is_floating_point(labels)
        assert probs.shape == (1, 2, *image.shape[2:]) and torch.is_floating_point(probs)
        from_probs = label_map({"pred": probs[0]})["pred"]
        assert torch.equal(label_map({"pred": labels[0]})["pred"], labels[0])  # passed through unchanged
        assert torch.equal(torch.as_tensor(from_probs), torch.as_tensor(labels[0]))
        expected = predictor.predict_case([images / f"{item['case']}_0000.nii.gz"])
        assert np.array_equal(labels[0, 0].numpy(), expected)
        assert 0.1 < float((labels == 1).float().mean()) < 0.9
    with pytest.raises(ConfigurationError, match="'logits' is not one of probabilities, labels"):
        MedmambaInferer(bundle / "models" / "medmamba", output="logits")
