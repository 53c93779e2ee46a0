"""Models that travel: export_model -> install_model -> predict -m gives the original labels bit for bit;
bad zips are one-line errors that leave the results folder untouched; Predictor.from_model and the README
snippet; predict --engine torchscript/onnx."""
from __future__ import annotations

import os
import re
import shutil
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medmamba.cli.main import main
from medmamba.formats.model_zip import MANIFEST_NAME

README = Path(__file__).resolve().parents[1] / "README.md"


def _labels(folder: Path) -> dict[str, np.ndarray]:
    return {p.name: np.asarray(nib.load(str(p)).dataobj) for p in sorted(folder.glob("*.nii.gz"))}


def _tree(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []


@pytest.fixture(scope="module")
def package(trained_tiny_model, tmp_path_factory):
    results, model, images = trained_tiny_model
    work = tmp_path_factory.mktemp("package")
    assert main(["export_model", "-d", "901", "-c", "2d", "-o", str(work / "model.zip"), "--results", str(results)]) == 0
    assert main(["predict", "-d", "901", "-c", "2d", "-i", str(images), "-o", str(work / "original"),
                 "--results", str(results), "--no-progress", "-np", "0"]) == 0
    return work / "model.zip", _labels(work / "original"), images


def test_export_install_predict_is_bit_identical(package, tmp_path):
    zip_path, original, images = package
    with zipfile.ZipFile(zip_path) as zf:
        names = set(zf.namelist())
        card = zf.read("Dataset901_TrainTiny/plain_unet__medmambaPlans__2d/MODEL_CARD.md").decode()
    prefix = "Dataset901_TrainTiny/plain_unet__medmambaPlans__2d/"
    assert {MANIFEST_NAME, prefix + "plans.json", prefix + "dataset.json", prefix + "fold_0/checkpoint_final.pt",
            prefix + "fold_0/training_log.json", prefix + "fold_0/validation/summary.json"} <= names
    for field in ("Labels", "background = 0, sphere = 1", "Input channels", "ZScoreNormalization", "5 training cases",
                  "Configuration", "Network", "parameters", "medmamba", "torch", "Exported", "| 0 |"):
        assert field in card, field
    fresh = tmp_path / "fresh_results"
    assert main(["install_model", str(zip_path), "--results", str(fresh)]) == 0
    installed = fresh / "Dataset901_TrainTiny" / "plain_unet__medmambaPlans__2d"
    assert (installed / "fold_0" / "checkpoint_final.pt").is_file()
    assert [p.name for p in fresh.iterdir()] == ["Dataset901_TrainTiny"]  # no staging folder left
    for source in (installed, zip_path):
        out = tmp_path / f"pred_{Path(source).suffix or 'folder'}"
        assert main(["predict", "-m", str(source), "-i", str(images), "-o", str(out), "--no-progress"]) == 0
        got = _labels(out)
        assert got.keys() == original.keys() and len(got) == 2
        for name in got:
            assert got[name].dtype == original[name].dtype and np.array_equal(got[name], original[name])


def _rewrite(src: Path, dst: Path, edit) -> Path:
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            edit(zout, info, zin.read(info.filename))
    return dst


def _copy(zout, info, data):
    zout.writestr(info, data)


def _bad_zips(zip_path: Path, folder: Path) -> dict[str, tuple[Path, str]]:
    def dotdot(zout, info, data):
        _copy(zout, info, data)
        if info.filename == MANIFEST_NAME:
            zout.writestr("Dataset901_TrainTiny/plain_unet__medmambaPlans__2d/../../../evil.txt", b"x")

    def absolute(zout, info, data):
        _copy(zout, info, data)
        if info.filename == MANIFEST_NAME:
            zout.writestr("/tmp/evil.txt", b"x")

    def symlink(zout, info, data):
        _copy(zout, info, data)
        if info.filename == MANIFEST_NAME:
            link = zipfile.ZipInfo("Dataset901_TrainTiny/plain_unet__medmambaPlans__2d/link")
            link.external_attr = (0o120777 << 16)
            zout.writestr(link, "/etc/passwd")

    def newer(zout, info, data):
        if info.filename == MANIFEST_NAME:
            data = data.replace(b'"min_medmamba_version": "0.1.0"', b'"min_medmamba_version": "99.0"')
        zout.writestr(info, data)

    truncated = folder / "truncated.zip"
    truncated.write_bytes(zip_path.read_bytes()[: zip_path.stat().st_size // 2])
    return {
        "dotdot": (_rewrite(zip_path, folder / "dotdot.zip", dotdot), "outside the model folder"),
        "absolute": (_rewrite(zip_path, folder / "absolute.zip", absolute), "absolute path"),
        "symlink": (_rewrite(zip_path, folder / "symlink.zip", symlink), "symbolic link"),
        "newer": (_rewrite(zip_path, folder / "newer.zip", newer), "needs medmamba >= 99.0"),
        "truncated": (truncated, "not a readable zip file"),
    }


def test_bad_zips_are_one_line_errors_and_write_nothing(package, tmp_path, capsys):
    zip_path, _, _ = package
    results = tmp_path / "results"
    results.mkdir()
    for name, (bad, message) in _bad_zips(zip_path, tmp_path).items():
        capsys.readouterr()
        assert main(["install_model", str(bad), "--results", str(results)]) == 1, name
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err and str(bad) in err, (name, err)
        assert _tree(results) == [], name
        assert not (tmp_path / "evil.txt").exists()
    # an installed model is kept unless --overwrite
    assert main(["install_model", str(zip_path), "--results", str(results)]) == 0
    before = _tree(results)
    capsys.readouterr()
    assert main(["install_model", str(zip_path), "--results", str(results)]) == 1
    assert "already installed" in capsys.readouterr().err
    assert main(["install_model", str(zip_path), "--results", str(results), "--overwrite"]) == 0
    assert _tree(results) == before


def test_predictor_from_model_case_and_array(package):
    from medmamba.datasets.image_io import read_image
    from medmamba.inference import Predictor

    zip_path, original, images = package
    predictor = Predictor.from_model(zip_path, device="cpu")
    for name, expected in original.items():
        files = [images / name.replace(".nii.gz", "_0000.nii.gz")]
        labels, probs = predictor.predict_case(files, return_probabilities=True)
        assert np.array_equal(labels, expected)
        assert probs.shape == (2, *expected.shape) and np.allclose(probs.sum(0), 1.0, atol=1e-5)
        array, geometry = read_image(files[0])
        from_array = predictor.predict_array(array, geometry.spacing, geometry.direction, geometry.origin)
        assert np.array_equal(from_array, expected)


def test_readme_model_sharing_snippet_runs(package, tmp_path):
    zip_path, original, images = package
    section = README.read_text(encoding="utf-8").split("## Sharing a model", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 1 and len(blocks[0].strip().splitlines()) <= 10
    shutil.copy(zip_path, tmp_path / "model.zip")
    shutil.copytree(images, tmp_path / "images")
    old = os.getcwd()
    os.chdir(tmp_path)
    try:
        namespace: dict = {}
        exec(compile(blocks[0], str(README), "exec"), namespace)
    finally:
        os.chdir(old)
    got = _labels(tmp_path / "predictions")
    assert got.keys() == original.keys() and all(np.array_equal(got[k], original[k]) for k in got)
    assert np.array_equal(namespace["labels"], original["case0.nii.gz"])
    assert namespace["probabilities"].shape == (2, *original["case0.nii.gz"].shape)


@pytest.mark.parametrize("engine", ["torchscript", "onnx"])
def test_predict_with_an_exported_engine_matches_eager(package, tmp_path, engine):
    from medmamba.export.network_export import onnxruntime_available

    if engine == "onnx" and not onnxruntime_available():
        pytest.skip("onnx/onnxruntime not installed (pip install 'medmamba[onnx]')")
    zip_path, original, images = package
    assert main(["predict", "-m", str(zip_path), "--engine", engine, "-i", str(images), "-o", str(tmp_path / "out"),
                 "--no-progress"]) == 0
    got = _labels(tmp_path / "out")
    assert got.keys() == original.keys()
    for name in got:  # logits agree within 1e-4, so at most a voxel on a tie could flip
        assert np.mean(got[name] == original[name]) >= 0.999
