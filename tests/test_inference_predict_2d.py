"""2D prediction: 2D images with a 2d model, and a 3D volume predicted slice by slice with a 2d configuration.

Untrained registry networks suffice here: with mirror TTA over every patch axis, the symmetric
tile grid makes prediction exactly flip-equivariant, so a flipped copy must give the flipped labels.
"""
import numpy as np
import torch

from medmamba.cli.main import main
from medmamba.datasets.geometry import ImageGeometry, geometry_differences
from medmamba.datasets.image_io import read_image, write_image

STATS = {"mean": 0.5, "median": 0.5, "std": 0.3, "min": 0.0, "max": 1.0, "percentile_00_5": 0.0,
         "percentile_99_5": 1.0}


def _config(name, patch, spacing, kwargs):
    return {
        "data_identifier": f"medmambaPlans_{name}", "spatial_dims": 2, "spacing": spacing, "patch_size": patch,
        "batch_size": 2, "median_image_size_in_voxels": [16, 16], "transpose_forward": [0, 1, 2],
        "transpose_backward": [0, 1, 2], "normalization_schemes": ["ZScoreNormalization"],
        "use_mask_for_norm": [False], "resampling": {}, "network": {"name": "plain_unet", "kwargs": kwargs},
        "mirror_axes": [0, 1],
    }


def _save_model(results, dataset, median_spacing, seed):
    import medmamba.networks.plain_unet  # noqa: F401
    from medmamba.networks.registry import build_network

    kwargs = {"spatial_dims": 2, "in_channels": 1, "num_classes": 3, "n_stages": 2, "features_per_stage": [4, 8],
              "deep_supervision": False}
    torch.manual_seed(seed)
    net = build_network("plain_unet", **kwargs)
    labels = {"background": 0, "a": 1, "b": 2}
    plans = {
        "format_version": 1, "dataset_name": dataset, "plans_name": "medmambaPlans",
        "transpose_forward": [0, 1, 2], "transpose_backward": [0, 1, 2],
        "original_median_spacing_after_transp": median_spacing, "original_median_shape_after_transp": [1, 16, 16],
        "foreground_intensity_properties_per_channel": {"0": STATS}, "channel_names": {"0": "MRI"},
        "labels": labels, "file_ending": ".nii.gz", "configurations": {"2d": _config("2d", [8, 8], [1.0, 1.0], kwargs)},
    }
    ckpt = {
        "format_version": 1, "network_name": "plain_unet", "network_kwargs": kwargs, "state_dict": net.state_dict(),
        "plans": plans, "configuration": "2d",
        "dataset_json": {"channel_names": {"0": "MRI"}, "labels": labels, "numTraining": 2, "file_ending": ".nii.gz"},
        "fold": 0, "epoch": 0, "optimizer_state": {}, "scheduler_state": {}, "grad_scaler_state": None,
        "best_metric": None, "training_seconds": 0.0, "mirror_axes": [0, 1], "rng_state": {},
    }
    path = results / dataset / "plain_unet__medmambaPlans__2d" / "fold_0" / "checkpoint_final.pt"
    path.parent.mkdir(parents=True)
    torch.save(ckpt, path)


def _predict(results, dataset, inp, out):
    return main(["predict", "-i", str(inp), "-o", str(out), "-d", dataset, "-c", "2d", "--results", str(results),
                 "--device", "cpu", "--no-progress", "--batch-windows", "3"])


def test_2d_images_with_2d_model(tmp_path):
    results = tmp_path / "results"
    _save_model(results, "Dataset992_Tiny2D", [999.0, 1.0, 1.0], seed=0)
    rng = np.random.default_rng(0)
    image = (rng.random((13, 11)) + np.linspace(0, 1, 11)[None]).astype(np.float32)
    inp, out = tmp_path / "in", tmp_path / "out"
    inp.mkdir()
    geo = ImageGeometry(spacing=(0.7, 1.3), origin=(4.0, -2.0), direction=((1.0, 0.0), (0.0, 1.0)), shape=(13, 11))
    write_image(inp / "plain.nii.gz", image, geo)  # one-channel model: no _0000 suffix needed
    flipped = ImageGeometry(spacing=(0.7, 1.3), origin=(4.0 + 12 * 0.7, -2.0), direction=((-1.0, 0.0), (0.0, 1.0)),
                            shape=(13, 11))
    write_image(inp / "flip_0000.nrrd", image[::-1].copy(), flipped)
    assert _predict(results, "992", inp, out) == 0
    seg, g = read_image(out / "plain.nii.gz")
    seg_f, g_f = read_image(out / "flip.nrrd")
    assert seg.shape == (13, 11) and seg.dtype == np.uint8
    assert geometry_differences(geo, g) == [] and geometry_differences(flipped, g_f) == []
    assert np.array_equal(seg_f, seg[::-1])
    assert len(np.unique(seg)) > 1  # an untrained net still gives a non-trivial map to compare


def test_3d_volume_with_2d_configuration_is_slice_by_slice(tmp_path):
    results = tmp_path / "results"
    _save_model(results, "Dataset993_Stack", [2.0, 1.0, 1.0], seed=1)
    rng = np.random.default_rng(1)
    volume = rng.random((5, 10, 9)).astype(np.float32)
    inp, out = tmp_path / "in", tmp_path / "out"
    inp.mkdir()
    geo = ImageGeometry.identity((5, 10, 9), (2.0, 1.0, 1.0))
    write_image(inp / "vol_0000.nii.gz", volume, geo)
    # flipped along axes 0 (slice order) and 1 (in-plane), same world position
    ras = ImageGeometry(spacing=(2.0, 1.0, 1.0), origin=(8.0, 9.0, 0.0),
                        direction=((-1.0, 0.0, 0.0), (0.0, -1.0, 0.0), (0.0, 0.0, 1.0)), shape=(5, 10, 9))
    write_image(inp / "ras_0000.nii.gz", volume[::-1, ::-1].copy(), ras)
    assert _predict(results, "993", inp, out) == 0
    seg, g = read_image(out / "vol.nii.gz")
    seg_r, g_r = read_image(out / "ras.nii.gz")
    assert geometry_differences(geo, g) == [] and geometry_differences(ras, g_r) == []
    assert np.array_equal(seg_r, seg[::-1, ::-1])
