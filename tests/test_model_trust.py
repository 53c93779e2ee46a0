"""A shared model never runs code: every checkpoint and weight file is loaded with weights_only=True, model
zips are verified against their manifest (entry list, sizes, sha256, bomb limits, pinned hash), bundles carry
the same hashes, and JSON from elsewhere is refused in one line when it is too deep, too large or out of range.

Every poisoned file holds a pickle whose unpickling would create a marker file: each row asserts exit 1, one
error line naming the file, and that the marker does not exist. The checkpoint written by the previous format
(tests/fixtures/checkpoint_v1_model, a real plain_unet trained for 30 iterations by medmamba before this
format change) still loads on the safe path and predicts.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from conftest import _case
from test_bad_inputs import assert_one_error_line, checksums, predict_args, run_in_process

from medmamba.datasets.geometry import ImageGeometry
from medmamba.datasets.image_io import write_image
from medmamba.errors import CheckpointError, FileFormatError
from medmamba.formats import model_zip
from medmamba.formats.checkpoint import read_checkpoint, restore_rng_state, write_checkpoint
from medmamba.formats.json_io import read_json
from medmamba.formats.model_zip import MANIFEST_NAME

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "checkpoint_v1_model"


class _Payload:
    """Unpickling this calls ``os.system`` with a command that creates ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def poisoned_bytes(marker: Path) -> bytes:
    """A torch.save file whose loading with weights_only=False would run the payload."""
    buffer = io.BytesIO()
    torch.save({"state_dict": {}, "network_name": _Payload(marker)}, buffer)
    return buffer.getvalue()


def test_the_payload_is_real(tmp_path):
    """The poisoned file does run code when loaded unsafely, so the refusals below mean something."""
    marker = tmp_path / "ran"
    (tmp_path / "evil.pt").write_bytes(poisoned_bytes(marker))
    torch.load(tmp_path / "evil.pt", weights_only=False)
    assert marker.exists()


def test_read_checkpoint_refuses_code(tmp_path):
    marker = tmp_path / "ran"
    (tmp_path / "evil.pt").write_bytes(poisoned_bytes(marker))
    with pytest.raises(CheckpointError, match="refused.*system") as err:
        read_checkpoint(tmp_path / "evil.pt")
    assert str(tmp_path / "evil.pt") in str(err.value) and len(str(err.value).splitlines()) == 1
    assert not marker.exists()


# ------------------------------------------------------------------------------- the previous format
def _sphere_image(folder: Path) -> np.ndarray:
    data, seg = _case(np.random.default_rng(7), 20)
    write_image(folder / "sphere_0000.nii.gz", data[0], ImageGeometry.identity((20, 20, 20), (1.0, 1.0, 1.0)))
    return seg[0]


def test_format_1_checkpoint_loads_safely_resumes_and_predicts(tmp_path):
    path = FIXTURE / "fold_0" / "checkpoint_final.pt"
    # the old file does hold numpy objects, which plain weights_only=True refuses
    with pytest.raises(Exception):
        torch.load(path, weights_only=True)
    ckpt = read_checkpoint(path)
    assert ckpt.network_name == "plain_unet" and ckpt.epoch == 3 and ckpt.iterations_done == 30
    assert ckpt.training is not None and ckpt.training.optimizer_state["state"]
    restore_rng_state(ckpt.training.rng_state)  # the numpy RNG state came through as plain data
    first = np.random.random()
    restore_rng_state(ckpt.training.rng_state)
    assert np.random.random() == first
    # written again in format 2, it round-trips through weights_only=True exactly
    again = read_checkpoint(write_checkpoint(tmp_path / "v2.pt", ckpt))
    torch.load(tmp_path / "v2.pt", weights_only=True)
    assert again.plans == ckpt.plans and again.training.scheduler_state == ckpt.training.scheduler_state
    assert all(torch.equal(again.state_dict[k], v) for k, v in ckpt.state_dict.items())
    # and it still predicts the sphere it was trained on
    images = tmp_path / "images"
    images.mkdir()
    truth = _sphere_image(images)
    rc, _, err = run_in_process(["predict", "-m", str(FIXTURE), "-i", str(images), "-o", str(tmp_path / "out"),
                                 "--device", "cpu", "--no-progress", "-np", "0"])
    assert rc == 0, err
    pred = np.asarray(nib.load(str(tmp_path / "out" / "sphere.nii.gz")).dataobj)
    dice = 2 * np.sum((pred == 1) & (truth == 1)) / (np.sum(pred == 1) + np.sum(truth == 1))
    # measured 0.77 on this case (fold validation 0.92); labelling all voxels sphere scores under 0.2
    assert dice > 0.6


# --------------------------------------------------------------------------- poisoned files, as a user meets them
def _results_with_poisoned_checkpoint(fx, tmp: Path, marker: Path) -> Path:
    results = tmp / "res"
    shutil.copytree(fx.res, results)
    ckpt = next((results / fx.dataset).rglob("checkpoint_final.pt"))
    ckpt.write_bytes(poisoned_bytes(marker))
    return ckpt


def test_poisoned_checkpoint_in_results_folder(tiny_model, tmp_path):
    marker = tmp_path / "ran"
    ckpt = _results_with_poisoned_checkpoint(tiny_model, tmp_path, marker)
    argv = predict_args(tiny_model, tiny_model.images, tmp_path / "out")
    argv[argv.index("--results") + 1] = str(tmp_path / "res")
    rc, _, err = run_in_process(argv)
    assert_one_error_line(rc, err, str(ckpt))
    assert "refused" in err and not marker.exists() and not (tmp_path / "out").exists()


def test_poisoned_pretrained_checkpoint(tiny_model, tmp_path):
    marker = tmp_path / "ran"
    evil = tmp_path / "pretrained.pt"
    evil.write_bytes(poisoned_bytes(marker))
    rc, _, err = run_in_process(["train", "-d", tiny_model.dataset, "-c", "3d_fullres", "-f", "all", "--preprocessed",
                                 str(tiny_model.pre), "--results", str(tmp_path / "res"), "--epochs", "1",
                                 "--iters-per-epoch", "1", "--val-iters", "1", "--device", "cpu", "--num-workers", "0",
                                 "--no-validation", "--no-progress", "--pretrained", str(evil)])
    assert_one_error_line(rc, err, str(evil))
    assert not marker.exists()


def test_poisoned_resume_checkpoint(tiny_model, tmp_path):
    marker = tmp_path / "ran"
    ckpt = _results_with_poisoned_checkpoint(tiny_model, tmp_path, marker)
    for other in ckpt.parent.glob("checkpoint_*.pt"):
        other.write_bytes(poisoned_bytes(marker))
    rc, _, err = run_in_process(["train", "-d", tiny_model.dataset, "-c", "3d_fullres", "-f", "all",
                                 "--preprocessed", str(tiny_model.pre), "--results", str(tmp_path / "res"),
                                 "--epochs", "2", "--iters-per-epoch", "1", "--val-iters", "1", "--device", "cpu",
                                 "--num-workers", "0", "--no-validation", "--no-progress", "--resume"])
    assert_one_error_line(rc, err, str(ckpt.parent))
    assert not marker.exists()


# ------------------------------------------------------------------------------------------ model zips
@pytest.fixture(scope="module")
def model_zip_file(tiny_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("zip") / "model.zip"
    rc, stdout, err = run_in_process(["export_model", "-d", tiny_model.dataset, "-c", "3d_fullres", "-o", str(out),
                                      "--results", str(tiny_model.res)])
    assert rc == 0, err
    digest = hashlib.sha256(out.read_bytes()).hexdigest()
    assert f"sha256 {digest}" in stdout  # export_model prints the hash to pin
    return out, digest


def _rebuild(source: Path, target: Path, replace: dict[str, bytes] | None = None, add: dict[str, bytes] | None = None,
             update_manifest: bool = False) -> Path:
    """A copy of the zip with entries replaced or added (valid CRCs); with ``update_manifest`` the attacker also
    rewrites the manifest's sizes and hashes to match."""
    replace, add = replace or {}, add or {}
    with zipfile.ZipFile(source) as zin:
        entries = {name: zin.read(name) for name in zin.namelist()}
    entries.update(replace)
    entries.update(add)
    if update_manifest:
        manifest = json.loads(entries[MANIFEST_NAME])
        for name in {**replace, **add}:
            manifest["entries"][name] = model_zip.entry_record(entries[name])
        entries[MANIFEST_NAME] = json.dumps(manifest).encode()
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as zout:
        for name, data in entries.items():
            zout.writestr(name, data)
    return target


def _checkpoint_entry(zip_path: Path) -> str:
    with zipfile.ZipFile(zip_path) as zf:
        return next(n for n in zf.namelist() if n.endswith("checkpoint_final.pt"))


def _predict_m(fx, model: Path, out: Path, *extra: str) -> list[str]:
    return ["predict", "-m", str(model), "-i", str(fx.images), "-o", str(out), "--device", "cpu", "--no-tta",
            "-np", "0", "--no-progress", *extra]


def test_poisoned_zip_with_matching_manifest_is_refused_by_the_loader(tiny_model, model_zip_file, tmp_path):
    marker = tmp_path / "ran"
    source, _ = model_zip_file
    evil = _rebuild(source, tmp_path / "evil.zip", replace={_checkpoint_entry(source): poisoned_bytes(marker)},
                    update_manifest=True)
    rc, _, err = run_in_process(_predict_m(tiny_model, evil, tmp_path / "out"))
    assert_one_error_line(rc, err, "checkpoint_final.pt")
    assert "refused" in err and not marker.exists()
    results = tmp_path / "results"
    rc, _, err = run_in_process(["install_model", str(evil), "--results", str(results)])
    assert rc == 0, err  # the entries match the manifest, so it installs; loading it is what is refused
    installed = next(results.rglob("checkpoint_final.pt"))
    rc, _, err = run_in_process(["predict", "-d", tiny_model.dataset, "-c", "3d_fullres", "-i", str(tiny_model.images),
                                 "-o", str(tmp_path / "out2"), "--results", str(results), "--device", "cpu",
                                 "--no-progress", "-np", "0"])
    assert_one_error_line(rc, err, str(installed))
    assert not marker.exists()


@pytest.mark.parametrize("kind", ["replaced_checkpoint", "unlisted_entry", "wrong_size_listed", "missing_entry"])
def test_zip_entries_must_match_the_manifest(tiny_model, model_zip_file, tmp_path, kind):
    marker = tmp_path / "ran"
    source, _ = model_zip_file
    entry = _checkpoint_entry(source)
    prefix = entry.split("/fold_")[0]
    if kind == "replaced_checkpoint":
        bad, named = _rebuild(source, tmp_path / "bad.zip", replace={entry: poisoned_bytes(marker)}), entry
    elif kind == "unlisted_entry":
        bad = _rebuild(source, tmp_path / "bad.zip", add={f"{prefix}/extra.bin": b"\0" * 1000})
        named = f"{prefix}/extra.bin"
    elif kind == "wrong_size_listed":
        bad = _rebuild(source, tmp_path / "bad.zip", replace={f"{prefix}/plans.json": b"{}"})
        named = f"{prefix}/plans.json"
    else:
        with zipfile.ZipFile(source) as zin, zipfile.ZipFile(tmp_path / "bad.zip", "w") as zout:
            for name in zin.namelist():
                if not name.endswith("MODEL_CARD.md"):
                    zout.writestr(name, zin.read(name))
        bad, named = tmp_path / "bad.zip", "MODEL_CARD.md"
    results = tmp_path / "results"
    rc, _, err = run_in_process(["install_model", str(bad), "--results", str(results)])
    line = assert_one_error_line(rc, err, str(bad))
    assert named in line
    assert not marker.exists() and not any(results.rglob("*.pt"))
    rc, _, err = run_in_process(_predict_m(tiny_model, bad, tmp_path / "out"))
    assert_one_error_line(rc, err, str(bad))
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_same_size_tampering_is_caught_by_the_hash(model_zip_file, tmp_path):
    source, _ = model_zip_file
    with zipfile.ZipFile(source) as zf:
        name = next(n for n in zf.namelist() if n.endswith("plans.json"))
        data = bytearray(zf.read(name))
    data[data.index(b"patch_size")] = ord("P")  # same size, valid CRC for the new bytes
    bad = _rebuild(source, tmp_path / "bad.zip", replace={name: bytes(data)})
    rc, _, err = run_in_process(["install_model", str(bad), "--results", str(tmp_path / "results")])
    line = assert_one_error_line(rc, err, str(bad))
    assert "sha256" in line and name in line
    assert not any((tmp_path / "results").rglob("*.json"))  # the staging folder is gone too


def test_compression_bomb_is_refused_before_extraction(model_zip_file, tmp_path, monkeypatch):
    source, _ = model_zip_file
    prefix = _checkpoint_entry(source).split("/fold_")[0]
    bomb = tmp_path / "bomb.zip"
    shutil.copy(source, bomb)
    with zipfile.ZipFile(bomb, "a", zipfile.ZIP_DEFLATED) as zf, zf.open(f"{prefix}/fold_0/blob.bin", "w",
                                                                          force_zip64=True) as fh:
        block = b"\0" * (1 << 20)
        for _ in range(model_zip.BOMB_MIN_BYTES // len(block) * 4):
            fh.write(block)
    assert bomb.stat().st_size < 1 << 20  # 64 MiB inflated from well under 1 MiB
    from medmamba.export import model_sharing

    extracted: list[str] = []
    monkeypatch.setattr(model_sharing, "extract_package", lambda *a: extracted.append("called"))
    rc, _, err = run_in_process(["install_model", str(bomb), "--results", str(tmp_path / "results")])
    line = assert_one_error_line(rc, err, str(bomb))
    assert "compression bomb" in line and not extracted
    # and the total limit, independent of the ratio
    monkeypatch.setattr(model_zip, "MAX_TOTAL_BYTES", 1000)
    rc, _, err = run_in_process(["install_model", str(source), "--results", str(tmp_path / "results")])
    assert "limit" in assert_one_error_line(rc, err, str(source))


def test_pinned_sha256(tiny_model, model_zip_file, tmp_path):
    source, digest = model_zip_file
    wrong = "0" * 64
    rc, _, err = run_in_process(["install_model", str(source), "--results", str(tmp_path / "r1"), "--sha256", wrong])
    assert "pinned" in assert_one_error_line(rc, err, str(source))
    assert not (tmp_path / "r1").exists()
    rc, _, err = run_in_process(_predict_m(tiny_model, source, tmp_path / "out", "--sha256", wrong))
    assert "pinned" in assert_one_error_line(rc, err, str(source))
    assert not (tmp_path / "out").exists()
    rc, _, err = run_in_process(["install_model", str(source), "--results", str(tmp_path / "r2"), "--sha256", "xyz"])
    assert_one_error_line(rc, err, "--sha256")
    rc, _, err = run_in_process(["install_model", str(source), "--results", str(tmp_path / "r3"),
                                 "--sha256", digest.upper()])
    assert rc == 0, err
    rc, _, err = run_in_process(_predict_m(tiny_model, source, tmp_path / "out", "--sha256", digest))
    assert rc == 0, err


def test_manifest_json_from_elsewhere(model_zip_file, tmp_path):
    source, _ = model_zip_file
    for i, text in enumerate([b"[" * 100000 + b"]" * 100000, b'{"format_version": 1e999}']):
        bad = _rebuild(source, tmp_path / f"bad{i}.zip", replace={MANIFEST_NAME: text})
        rc, _, err = run_in_process(["install_model", str(bad), "--results", str(tmp_path / "results")])
        assert MANIFEST_NAME in assert_one_error_line(rc, err, str(bad))


# ------------------------------------------------------------------------------------------- MONAI bundle
def test_bundle_model_files_are_hash_checked_and_loaded_safely(tiny_model, tmp_path):
    from medmamba.export.bundle_runtime import load_weights
    from medmamba.formats.bundle_layout import BUNDLE_HASHES_KEY, read_bundle_model

    bundle = tmp_path / "bundle"
    rc, _, err = run_in_process(["export_bundle", "-m", str(tiny_model.model), "-o", str(bundle), "--no-torchscript"])
    assert rc == 0, err
    meta_path = bundle / "configs" / "metadata.json"
    meta = json.loads(meta_path.read_text())
    assert {"models/model.pt", "models/medmamba/plans.json", "models/medmamba/model.json",
            "configs/inference.json"} <= set(meta[BUNDLE_HASHES_KEY])
    read_bundle_model(bundle / "models" / "medmamba")  # intact: accepted
    marker = tmp_path / "ran"
    (bundle / "models" / "model.pt").write_bytes(poisoned_bytes(marker))
    with pytest.raises(FileFormatError, match="sha256"):
        load_weights(torch.nn.Linear(1, 1), bundle / "models" / "model.pt")
    with pytest.raises(FileFormatError, match="sha256"):
        read_bundle_model(bundle / "models" / "medmamba")
    # an attacker who also rewrites the metadata's hash meets weights_only=True
    meta[BUNDLE_HASHES_KEY]["models/model.pt"] = model_zip.entry_record((bundle / "models" / "model.pt").read_bytes())
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(FileFormatError, match="refused"):
        load_weights(torch.nn.Linear(1, 1), bundle / "models" / "model.pt")
    assert not marker.exists()
    (bundle / "models" / "extra.pt").write_bytes(b"x")
    with pytest.raises(FileFormatError, match="not listed"):
        read_bundle_model(bundle / "models" / "medmamba")


# -------------------------------------------------------------------------------------- JSON from elsewhere
@pytest.mark.parametrize("text, words", [
    ("[" * 50000 + "]" * 50000, "nested deeper"),
    ('{"labels": {"background": 0, "a": 1}, "numTraining": 1e999}', "out of range"),
    ('{"numTraining": ' + "9" * 5000 + "}", "digits"),
    ('{"numTraining": NaN}', "NaN"),
    ('{"a": ' + "[" * 70 + "]" * 70 + "}", "nested deeper"),
])
def test_json_from_elsewhere_is_one_line(tmp_path, text, words):
    path = tmp_path / "dataset.json"
    path.write_text(text)
    with pytest.raises(FileFormatError, match=words) as err:
        read_json(path, what="dataset.json")
    assert str(path) in str(err.value) and len(str(err.value).splitlines()) == 1


def test_deep_dataset_json_through_the_cli(tiny_model, tmp_path):
    raw = tmp_path / "raw" / tiny_model.raw.name
    shutil.copytree(tiny_model.raw, raw)
    before = checksums(raw.parent)
    good = json.loads((raw / "dataset.json").read_text())
    for text in ("[" * 100000 + "]" * 100000, json.dumps(good)[:-1] + ', "extra": 1e400}'):
        (raw / "dataset.json").write_text(text)
        rc, out, err = run_in_process(["verify", "-d", "998", "--raw", str(tmp_path / "raw"), "--no-progress"])
        lines = [line for line in (out + err).splitlines() if str(raw / "dataset.json") in line]
        assert rc == 1 and "Traceback" not in err and len(lines) == 1, out + err  # verify lists every problem
    assert set(checksums(raw.parent)) == set(before)


# ----------------------------------------------------------------------------------- summary region keys
def test_region_keys_follow_nnunet(tmp_path):
    """nnU-Net turns a list region into a tuple and keys it ``str(region)``: ``"lesion": [2]`` is ``"(2,)"``; a
    scalar region stays ``"2"``."""
    from medmamba.cli.main import main
    from medmamba.formats.summary import load_summary

    raw = tmp_path / "raw" / "Dataset007_Keys"
    raw.mkdir(parents=True)
    (raw / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "MRI"}, "numTraining": 0, "file_ending": ".nii.gz",
        "labels": {"background": 0, "whole": [1, 2], "lesion": [2], "core": 2}, "regions_class_order": [1, 2, 2]}))
    ref = np.zeros((6, 6, 2), dtype=np.uint8)
    ref[1:3, 1:3, 0], ref[3:5, 3:5, 0] = 1, 2
    for folder in ("ref", "pred"):
        (tmp_path / folder).mkdir()
        nib.save(nib.Nifti1Image(ref, np.eye(4)), str(tmp_path / folder / "r.nii.gz"))
    assert main(["evaluate", "-r", str(tmp_path / "ref"), "-p", str(tmp_path / "pred"), "-d", "7",
                 "--raw", str(tmp_path / "raw")]) == 0
    summary = load_summary(tmp_path / "pred" / "summary.json")
    assert summary["labels"] == ["(1, 2)", "(2,)", "2"]
    assert summary["mean"]["(2,)"]["Dice"] == 1.0 and summary["mean"]["2"]["Dice"] == 1.0


@pytest.mark.parametrize("metadata, words", [
    ("[1, 2]", "not a JSON object"),
    ('{"network_name": "x", "network_kwargs": {}, "plans": {}, "configuration": "2d", "dataset_json": {}, '
     '"epoch": "abc"}', "epoch"),
    ('{"network_name": "x", "network_kwargs": {}, "plans": {}, "configuration": "2d", "dataset_json": {}, '
     '"training": [1]}', "training state"),
    ('{"network_name": "x", "plans": {}}', "missing"),
    ("not json", "metadata"),
])
def test_malformed_checkpoint_metadata_is_one_line(tmp_path, metadata, words):
    """A format-2 file from someone else with metadata of the wrong shape is refused, not a crash."""
    path = tmp_path / "ckpt.pt"
    torch.save({"format_version": 2, "metadata": metadata, "state_dict": {}}, path)
    with pytest.raises(CheckpointError, match=words) as err:
        read_checkpoint(path)
    assert str(path) in str(err.value) and len(str(err.value).splitlines()) == 1
