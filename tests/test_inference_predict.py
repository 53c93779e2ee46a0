"""`medmamba predict` end to end with a real (tiny, briefly trained) registry network.

Geometry: RAS, LPS, axis-permuted, oblique, anisotropic and SimpleITK-format inputs come back with
exactly their own geometry, and flipped / permuted copies give the flipped / permuted segmentation.
Bad inputs: each failing case is named with its reason, the others still finish, inputs untouched.
"""
import gzip
import hashlib
import json
import math
import shutil

import numpy as np
import pytest
import torch

from medmamba.cli.main import main
from medmamba.datasets.geometry import ImageGeometry, geometry_differences
from medmamba.datasets.image_io import read_image, write_image

DATASET = "Dataset991_TinyPredict"
MODEL = "plain_unet__medmambaPlans__3d_fullres"
PATCH = [8, 8, 8]
NET_KWARGS = {"spatial_dims": 3, "in_channels": 2, "num_classes": 2, "n_stages": 2,
              "features_per_stage": [4, 8], "deep_supervision": False}


def tiny_plans() -> dict:
    """A valid plans dict (medmamba/formats/plans.py) for 2-channel 3D images at 1 mm."""
    config = {
        "data_identifier": "medmambaPlans_3d_fullres", "spatial_dims": 3, "spacing": [1.0, 1.0, 1.0],
        "patch_size": PATCH, "batch_size": 2, "median_image_size_in_voxels": [14, 12, 10],
        "transpose_forward": [0, 1, 2], "transpose_backward": [0, 1, 2],
        "normalization_schemes": ["ZScoreNormalization", "ZScoreNormalization"], "use_mask_for_norm": [False, False],
        "resampling": {}, "network": {"name": "plain_unet", "kwargs": NET_KWARGS}, "mirror_axes": [0, 1, 2],
    }
    stats = {"mean": 0.3, "median": 0.1, "std": 0.4, "min": 0.0, "max": 1.2, "percentile_00_5": 0.0,
             "percentile_99_5": 1.1}
    return {
        "format_version": 1, "dataset_name": DATASET, "plans_name": "medmambaPlans",
        "transpose_forward": [0, 1, 2], "transpose_backward": [0, 1, 2],
        "original_median_spacing_after_transp": [1.0, 1.0, 1.0], "original_median_shape_after_transp": [14, 12, 10],
        "foreground_intensity_properties_per_channel": {"0": stats, "1": stats},
        "channel_names": {"0": "MRI", "1": "MRI2"}, "labels": {"background": 0, "blob": 1},
        "file_ending": ".nii.gz", "configurations": {"3d_fullres": config},
    }


def blob_volume(rng, shape=(14, 12, 10)):
    """(image channels (2, *shape) float32, truth (*shape) uint8): an off-centre ellipsoid plus a bar."""
    idx = np.indices(shape).astype(np.float32)
    c = [rng.uniform(0.3, 0.7) * (n - 1) for n in shape]
    r = [rng.uniform(0.15, 0.3) * n for n in shape]
    truth = (sum(((idx[a] - c[a]) / r[a]) ** 2 for a in range(3)) <= 1.0)
    truth[1:3, 1:int(shape[1] * 0.6), 2:4] = True  # asymmetric bar: catches flips and transposes
    image = 0.1 + 1.0 * truth + rng.normal(0, 0.05, shape)
    second = 0.5 + rng.normal(0, 0.05, shape)
    return np.stack([image, second]).astype(np.float32), truth.astype(np.uint8)


def _zscore(x):
    return (x - x.mean()) / max(float(x.std()), 1e-8)


def train_tiny_network(seed=0, steps=500):
    """plain_unet trained for a few Adam steps to segment the bright blobs (deterministic)."""
    import medmamba.networks.plain_unet  # noqa: F401
    from medmamba.networks.registry import build_network

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    net = build_network("plain_unet", **NET_KWARGS)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    volumes = [blob_volume(rng, (16, 16, 16)) for _ in range(6)]
    xs = torch.from_numpy(np.stack([np.stack([_zscore(c) for c in v[0]]) for v in volumes]))
    ys = torch.from_numpy(np.stack([v[1] for v in volumes])).long()
    net.train()
    for step in range(steps):
        i = step % len(volumes)
        o = [int(v) for v in rng.integers(0, 9, 3)]
        x = xs[i:i + 1, :, o[0]:o[0] + 8, o[1]:o[1] + 8, o[2]:o[2] + 8]
        y = ys[i:i + 1, o[0]:o[0] + 8, o[1]:o[1] + 8, o[2]:o[2] + 8]
        # axis-permutation augmentation, so the net is close to permutation-equivariant
        p = [int(a) for a in rng.permutation(3)]
        x, y = x.permute(0, 1, *[a + 2 for a in p]), y.permute(0, *[a + 1 for a in p])
        loss = torch.nn.functional.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net.eval()


def write_checkpoint(folder, net, fold=0):
    ckpt = {
        "format_version": 1, "network_name": "plain_unet", "network_kwargs": NET_KWARGS,
        "state_dict": net.state_dict(), "plans": tiny_plans(), "configuration": "3d_fullres",
        "dataset_json": {"channel_names": {"0": "MRI", "1": "MRI2"}, "labels": {"background": 0, "blob": 1},
                         "numTraining": 6, "file_ending": ".nii.gz"},
        "fold": fold, "epoch": 60, "optimizer_state": {}, "scheduler_state": {}, "grad_scaler_state": None,
        "best_metric": 0.9, "training_seconds": 1.0, "mirror_axes": [0, 1, 2], "rng_state": {},
    }
    path = folder / MODEL / f"fold_{fold}" / "checkpoint_final.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, path)
    return path


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    root = tmp_path_factory.mktemp("results")
    write_checkpoint(root / DATASET, train_tiny_network())
    return root


def _geometry(spacing, origin=(0.0, 0.0, 0.0), direction=np.eye(3), shape=(14, 12, 10)):
    return ImageGeometry(spacing=tuple(spacing), origin=tuple(origin), direction=tuple(map(tuple, direction)),
                         shape=tuple(shape), dtype="float32")


def write_case(folder, case_id, channels, geometry, ending=".nii.gz"):
    for c, array in enumerate(channels):
        write_image(folder / f"{case_id}_{c:04d}{ending}", array, geometry.replace(shape=array.shape))


def _dice(a, b):
    a, b = a > 0, b > 0
    denom = a.sum() + b.sum()
    return 1.0 if denom == 0 else 2.0 * (a & b).sum() / denom


def _checksums(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def _predict(results, inp, out, *extra):
    return main(["predict", "-i", str(inp), "-o", str(out), "-d", "991", "-c", "3d_fullres", "--results",
                 str(results), "--device", "cpu", "-np", "1", "--no-progress", *extra])


def test_geometry_is_preserved_and_segmentation_follows_the_axes(results, tmp_path):
    rng = np.random.default_rng(7)
    image, truth = blob_volume(rng)
    inp, out = tmp_path / "in", tmp_path / "out"
    inp.mkdir()
    lps = _geometry((1.0, 1.0, 1.0), origin=(5.0, -3.0, 2.0))
    write_case(inp, "lps", image, lps)
    # RAS-oriented copy of the same voxels: axes 0 and 1 flipped, origin moved so the world is the same.
    d = np.diag([-1.0, -1.0, 1.0])
    ras_origin = np.array(lps.origin) + np.array([13.0, 11.0, 0.0])
    write_case(inp, "ras", image[:, ::-1, ::-1].copy(), _geometry((1, 1, 1), ras_origin, d))
    # axis-permuted copy: file axes (k, i, j)
    perm = np.eye(3)[:, [2, 0, 1]]
    write_case(inp, "perm", image.transpose(0, 3, 1, 2).copy(), _geometry((1, 1, 1), lps.origin, perm, (10, 14, 12)))
    # oblique: rotated 30 degrees about z
    t = math.radians(30)
    rot = np.array([[math.cos(t), -math.sin(t), 0], [math.sin(t), math.cos(t), 0], [0, 0, 1]])
    write_case(inp, "oblique", image, _geometry((1, 1, 1), (1.5, 2.5, -7.0), rot))
    # anisotropic spacing (resampled to the plans' 1 mm and back) and a SimpleITK format
    write_case(inp, "aniso", image, _geometry((0.8, 1.0, 1.5), (0.0, 0.0, 0.0)))
    write_case(inp, "sitk", image, lps, ending=".nrrd")
    before = _checksums(inp)

    assert _predict(results, inp, out) == 0
    assert _checksums(inp) == before  # inputs untouched, nothing written into IN
    segs = {}
    for case in ("lps", "ras", "perm", "oblique", "aniso", "sitk"):
        ending = ".nrrd" if case == "sitk" else ".nii.gz"
        seg, geo = read_image(out / f"{case}{ending}")
        _, geo_in = read_image(inp / f"{case}_0000{ending}")
        assert geo.shape == geo_in.shape
        assert geometry_differences(geo_in, geo, spacing_rtol=1e-5, origin_atol_mm=1e-5, direction_atol=1e-5) == []
        assert seg.dtype == np.uint8
        segs[case] = seg
    assert _dice(segs["lps"], truth) >= 0.9  # the tiny model really segments
    assert _dice(segs["aniso"], truth) >= 0.8
    assert _dice(segs["ras"], segs["lps"][::-1, ::-1]) >= 0.98
    assert _dice(segs["perm"], segs["lps"].transpose(2, 0, 1)) >= 0.98
    assert np.array_equal(segs["oblique"], segs["lps"])
    assert np.array_equal(segs["sitk"], segs["lps"])
    args = json.loads((out / "predict_args.json").read_text())
    assert args["mirror_axes"] == [0, 1, 2]


def test_bad_inputs_are_reported_and_others_finish(results, tmp_path, capsys):
    rng = np.random.default_rng(3)
    image, _ = blob_volume(rng)
    geo = _geometry((1, 1, 1))
    inp, out = tmp_path / "in", tmp_path / "out"
    inp.mkdir()
    write_case(inp, "good", image, geo)
    write_image(inp / "missing_0000.nii.gz", image[0], geo)                      # no _0001
    write_case(inp, "three", np.concatenate([image, image[:1]]), geo)           # 3 channels for a 2-channel model
    write_case(inp, "fourd", image, geo)
    four = np.repeat(image[0][..., None], 2, axis=-1)
    import nibabel as nib
    nib.save(nib.Nifti1Image(four, np.eye(4)), str(inp / "fourd_0000.nii.gz"))  # replace channel 0 by a 4D file
    write_case(inp, "corrupt", image, geo)
    (inp / "corrupt_0000.nii.gz").write_bytes(gzip.compress(b"not a nifti")[:20])  # truncated gzip
    write_case(inp, "nan", np.full_like(image, np.nan), geo)
    flat = image[:, :, :, 0]
    write_case(inp, "flat", flat, ImageGeometry.identity(flat.shape[1:]))       # 2D image, 3D model
    write_image(inp / "nosuffix.nii.gz", image[0], geo)                          # no channel suffix
    (inp / "notes.txt").write_text("not an image")
    before = _checksums(inp)

    assert _predict(results, inp, out) == 1
    captured = capsys.readouterr()
    line = captured.out.strip().splitlines()[-1]
    assert line.startswith("predicted 1 case(s)") and "7 failed" in line
    expected = {
        "missing": "missing_0001",
        "three": "expects 2 channel",
        "fourd": "4D image",
        "corrupt": "cannot read image",
        "nan": "NaN",
        "flat": "2D image but the model was trained on 3D images",
        "nosuffix": "no _0000 channel suffix",
    }
    for case, reason in expected.items():
        assert f"{case} (" in line and reason in line, (case, line)
    assert "Traceback" not in captured.err
    assert (out / "good.nii.gz").is_file()
    assert sorted(p.name for p in out.glob("*.nii.gz")) == ["good.nii.gz"]
    assert _checksums(inp) == before


def test_folder_errors_and_skipping(results, tmp_path, capsys):
    rng = np.random.default_rng(5)
    image, _ = blob_volume(rng)
    inp = tmp_path / "in"
    inp.mkdir()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert _predict(results, empty, tmp_path / "o1") == 1
    assert "no image files" in capsys.readouterr().err
    write_case(inp, "a", image, _geometry((1, 1, 1)))
    before = _checksums(inp)
    assert _predict(results, inp, inp / "sub") == 1
    assert "is inside the input" in capsys.readouterr().err
    assert _predict(results, inp, inp) == 1
    assert "output folder is the input" in capsys.readouterr().err
    assert _checksums(inp) == before and not (inp / "sub").exists()

    out = tmp_path / "out"
    assert _predict(results, inp, out, "--no-tta", "--save-probabilities") == 0
    first = (out / "a.nii.gz").stat().st_mtime_ns
    assert _predict(results, inp, out, "--no-tta") == 0
    assert "skipped 1 already present" in capsys.readouterr().out
    assert (out / "a.nii.gz").stat().st_mtime_ns == first
    assert _predict(results, inp, out, "--no-tta", "--overwrite", "-f", "0", "--checkpoint", "final", "-np", "0") == 0
    assert "predicted 1 case(s)" in capsys.readouterr().out
    assert _predict(results, inp, tmp_path / "o2", "--checkpoint", "best") == 1
    assert "no fold has a checkpoint_best.pt (pick --checkpoint final)" in capsys.readouterr().err
    assert _predict(results, inp, tmp_path / "o3", "-f", "3") == 1
    assert "fold_3" in capsys.readouterr().err


def test_save_probabilities_and_ensemble(results, tmp_path, capsys):
    from medmamba.formats.probabilities import load_probabilities

    rng = np.random.default_rng(11)
    image, _ = blob_volume(rng)
    inp = tmp_path / "in"
    inp.mkdir()
    geo = _geometry((1.0, 1.0, 1.2), (3.0, 1.0, 0.0))
    write_case(inp, "c1", image, geo)
    a, b = tmp_path / "a", tmp_path / "b"
    assert _predict(results, inp, a, "--save-probabilities", "--no-tta") == 0
    assert _predict(results, inp, b, "--save-probabilities") == 0
    pa, props = load_probabilities(a, "c1")
    pb, _ = load_probabilities(b, "c1")
    assert pa.shape == (2, 14, 12, 10) and np.allclose(pa.sum(0), 1.0, atol=1e-4)
    seg_a, _ = read_image(a / "c1.nii.gz")
    assert np.array_equal(seg_a, pa.argmax(0))
    out = tmp_path / "ens"
    assert main(["ensemble", "-i", str(a), str(b), "-o", str(out)]) == 0
    seg, geo_out = read_image(out / "c1.nii.gz")
    assert geometry_differences(read_image(inp / "c1_0000.nii.gz")[1], geo_out) == []
    assert np.array_equal(seg, ((pa + pb) / 2).argmax(0))
    assert main(["ensemble", "-i", str(a), "-o", str(out)]) == 1
    assert "at least two" in capsys.readouterr().err
    other = tmp_path / "other"
    shutil.copytree(a, other)
    for suffix in (".npz", ".json"):
        (other / f"c1{suffix}").rename(other / f"c2{suffix}")
    assert main(["ensemble", "-i", str(a), str(other), "-o", str(tmp_path / "ens2")]) == 1
    assert "holds different cases" in capsys.readouterr().err


def test_predictor_library_entry_point(results):
    from medmamba.inference import Predictor

    predictor = Predictor.from_model_folder(results / DATASET / MODEL, folds=[0], device="cpu", use_tta=False)
    assert len(predictor.networks) == 1 and predictor.mirror_axes == []
    rng = np.random.default_rng(2)
    image, truth = blob_volume(rng)
    data = np.stack([_zscore(c) for c in image])
    probs = predictor.predict_preprocessed(data)
    assert probs.shape == (2, 14, 12, 10)
    assert _dice(probs.argmax(0).numpy(), truth) >= 0.9
