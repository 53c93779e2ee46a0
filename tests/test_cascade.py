"""The cascade (3d_lowres -> 3d_cascade_fullres) as nnU-Net trains and predicts it, on a tiny 3D demo
dataset whose low-resolution stage is forced (``--lowres-spacing-factor``) and whose cross-validation has
two folds (a user splits file), so both stages train in seconds."""
from __future__ import annotations

import io
import json
import shutil
from contextlib import redirect_stderr, redirect_stdout
from types import SimpleNamespace

import numpy as np
import pytest

from medmamba import api
from medmamba.errors import CheckpointError, ConfigurationError

DATASET_ID = 996
LABELS = {0, 1, 2, 3, 4}  # the demo dataset's background, liver, kidney, vessel, lesion


@pytest.fixture(scope="module")
def cascade(tmp_path_factory):
    root = tmp_path_factory.mktemp("cascade")
    raw = api.make_demo_dataset(dataset_id=DATASET_ID, cases=4, test_cases=1, size=16, raw=root / "raw",
                                progress=False)
    cases = [f"demo_{i:03d}" for i in range(4)]
    (raw / "splits_final.json").write_text(json.dumps([{"train": cases[:2], "val": cases[2:]},
                                                       {"train": cases[2:], "val": cases[:2]}]))
    planned = api.plan_and_preprocess(dataset=DATASET_ID, raw=root / "raw", preprocessed=root / "pre",
                                      networks=["plain_unet"], target="cpu", lowres_spacing_factor=2.0,
                                      num_processes=1, fingerprint_samples=3000, progress=False, echo=lambda _: None)
    train = dict(dataset=DATASET_ID, epochs=1, iterations_per_epoch=2, val_iterations=1, device="cpu", num_workers=0,
                 preprocessed=root / "pre", results=root / "res", progress=False)
    for fold in (0, 1):
        api.train(configuration="3d_lowres", fold=fold, **train)
    api.train(configuration="3d_cascade_fullres", fold=0, **train)
    models = root / "res" / raw.name
    return SimpleNamespace(root=root, raw=raw, pre=planned.dataset_folder, plans=planned.plans, cases=cases,
                           res=root / "res", lowres=models / "plain_unet__medmambaPlans__3d_lowres",
                           model=models / "plain_unet__medmambaPlans__3d_cascade_fullres")


def run_cli(argv: list[str]) -> tuple[int, str]:
    from medmamba.cli.main import main

    err = io.StringIO()
    with redirect_stdout(io.StringIO()), redirect_stderr(err):
        rc = main(argv)
    return rc, err.getvalue()


def test_plans_link_the_stages(cascade):
    low, full = cascade.plans.configuration("3d_lowres"), cascade.plans.configuration("3d_fullres")
    stage = cascade.plans.configuration("3d_cascade_fullres")
    assert low.next_stage == "3d_cascade_fullres" and stage.previous_stage == "3d_lowres"
    assert stage.data_identifier == full.data_identifier  # trains on the 3d_fullres data
    assert [round(a / b, 6) for a, b in zip(low.spacing, full.spacing)] == [2.0] * 3


def test_lowres_folds_hand_every_case_to_the_next_stage(cascade):
    from medmamba.formats.cascade import load_next_stage_segmentation, next_stage_file

    for case in cascade.cases:
        seg = np.load(cascade.pre / "medmambaPlans_3d_fullres" / f"{case}_seg.npy", mmap_mode="r")
        handed = load_next_stage_segmentation(next_stage_file(cascade.lowres, "3d_cascade_fullres", case),
                                              seg.shape[1:])
        assert set(np.unique(handed).tolist()) <= LABELS


def test_cascade_network_takes_the_one_hot_previous_stage(cascade):
    from medmamba.formats.checkpoint import read_checkpoint

    ckpt = read_checkpoint(cascade.model / "fold_0" / "checkpoint_final.pt")
    assert ckpt.network_kwargs["in_channels"] == 1 + 4  # image + one channel per foreground label
    summary = json.loads((cascade.model / "fold_0" / "validation" / "summary.json").read_text())
    assert sorted(summary["mean"]) == ["1", "2", "3", "4"]


def test_predict_runs_the_lowres_stage_first(cascade, tmp_path):
    from medmamba.datasets.image_io import read_image
    from medmamba.inference.cascade import CascadePredictor, load_cascade_predictor

    result = api.predict(input_folder=cascade.raw / "imagesTs", output_folder=tmp_path / "pred", dataset=DATASET_ID,
                         configuration="3d_cascade_fullres", device="cpu", num_workers=0, results=cascade.res,
                         progress=False, echo=lambda _: None)
    assert len(result.written) == 1 and not result.failed
    labels, geometry = read_image(result.written[0])
    image, image_geometry = read_image(next((cascade.raw / "imagesTs").iterdir()))
    assert labels.shape == image.shape and set(np.unique(labels).tolist()) <= LABELS
    args = json.loads((tmp_path / "pred" / "predict_args.json").read_text())
    assert args["previous_stage"]["configuration"] == "3d_lowres" and len(args["previous_stage"]["checkpoints"]) == 2
    # the in-memory entry point takes the same two-stage path
    predictor = load_cascade_predictor(cascade.model, None, "final", "cpu")
    assert isinstance(predictor, CascadePredictor)
    again = predictor.predict_array(image, image_geometry.spacing, image_geometry.direction)
    assert np.array_equal(again, labels)


def test_a_missing_lowres_fold_is_one_line(cascade):
    from medmamba.formats.cascade import next_stage_file

    handed = next_stage_file(cascade.lowres, "3d_cascade_fullres", cascade.cases[0])  # validated by fold 1
    aside = handed.with_name("aside.bin")
    handed.rename(aside)
    try:
        rc, err = run_cli(["train", "-d", str(DATASET_ID), "-c", "3d_cascade_fullres", "-f", "1", "--preprocessed",
                           str(cascade.root / "pre"), "--results", str(cascade.res), "--device", "cpu", "--epochs",
                           "1", "--iters-per-epoch", "1", "--no-progress"])
    finally:
        aside.rename(handed)
    errors = [line for line in err.splitlines() if ": error: " in line]
    assert rc == 1 and "Traceback" not in err and len(errors) == 1, err
    assert "fold(s) 1 of 3d_lowres" in errors[0] and "-c 3d_lowres -f 1" in errors[0]
    assert not (cascade.model / "fold_1").exists()  # nothing written before the check


def test_predict_without_the_lowres_model_is_an_error(cascade, tmp_path):
    alone = tmp_path / "res" / cascade.model.parent.name / cascade.model.name
    shutil.copytree(cascade.model, alone)
    with pytest.raises(CheckpointError, match="needs the trained 3d_lowres model"):
        api.predict(input_folder=cascade.raw / "imagesTs", output_folder=tmp_path / "pred", dataset=DATASET_ID,
                    configuration="3d_cascade_fullres", device="cpu", num_workers=0, results=tmp_path / "res",
                    progress=False)
    assert not (tmp_path / "pred").exists()


def test_exported_engines_refuse_a_cascade(cascade, tmp_path):
    with pytest.raises(ConfigurationError, match="also runs its 3d_lowres stage"):
        api.predict(input_folder=cascade.raw / "imagesTs", output_folder=tmp_path / "pred", dataset=DATASET_ID,
                    configuration="3d_cascade_fullres", engine="torchscript", num_workers=0, results=cascade.res,
                    progress=False)
    assert not (tmp_path / "pred").exists()


def test_find_best_configuration_ranks_the_cascade(cascade):
    best = api.find_best_configuration(dataset=DATASET_ID, folds=[0], results=cascade.res)
    ranked = {r.folder.name: r for r in best.ranking}
    assert ranked[cascade.model.name].summary is not None and ranked[cascade.lowres.name].summary is not None
    if best.best.configuration == "3d_cascade_fullres":
        instructions = (cascade.res / cascade.raw.name / "inference_instructions.txt").read_text()
        assert cascade.lowres.name in instructions


def test_model_package_refuses_a_cascade(cascade, tmp_path):
    from medmamba.api.export import export_model

    with pytest.raises(ConfigurationError, match="also needs its 3d_lowres stage"):
        export_model(dataset=DATASET_ID, configuration="3d_cascade_fullres", output=tmp_path / "m.zip",
                         results=cascade.res)
    assert not (tmp_path / "m.zip").exists()


# ------------------------------------------------------------------------------- units, no training


def test_previous_stage_moves_with_the_labels():
    """Rotation, scaling and mirroring move the previous-stage channel exactly as the ground truth."""
    from medmamba.training.augmentation import AugmentationPipeline, configure_augmentation
    from dataclasses import replace
    from medmamba.training.cascade_inputs import CascadeAugmentation

    patch = (12, 12, 12)
    params = replace(configure_augmentation(patch, level="light"), p_rotation=1.0, p_scale=1.0)
    wrapped = CascadeAugmentation(AugmentationPipeline(patch, params), patch, [1, 2], perturb=False)
    rng = np.random.default_rng(5)
    spatial = wrapped.draw_spatial(rng)
    labels = np.zeros(wrapped.crop_size, np.int16)
    labels[4:14, 5:12, 3:15] = 1
    labels[8:11, 8:11, 8:11] = 2
    image = np.random.default_rng(0).normal(size=(1, *wrapped.crop_size)).astype(np.float32)
    out, seg = wrapped(image, np.stack([labels, labels]), rng, spatial)
    assert out.shape == (3, *patch) and seg.shape == (1, *patch)
    assert np.array_equal(out[1], seg[0] == 1) and np.array_equal(out[2], seg[0] == 2)
    assert out[1].any() and out[2].any()


def test_perturbation_keeps_one_label_per_voxel_and_sometimes_acts():
    from medmamba.formats.cascade import one_hot_foreground
    from medmamba.training.cascade_inputs import perturb_previous_stage

    labels = np.zeros((16, 16, 16), np.int16)
    labels[2:12, 2:12, 2:12] = 1
    labels[5:9, 5:9, 5:9] = 2
    labels[13:15, 13:15, 13:15] = 2
    one_hot = one_hot_foreground(labels, [1, 2])
    changed = 0
    for seed in range(30):
        out = perturb_previous_stage(one_hot, np.random.default_rng(seed))
        assert out.dtype == np.float32 and set(np.unique(out).tolist()) <= {0.0, 1.0}
        assert out.sum(0).max() <= 1.0  # a voxel a label gains is taken from the others
        changed += not np.array_equal(out, one_hot)
    assert 3 <= changed <= 27  # nnU-Net's p 0.4 operator / p 0.2 component removal, per label p 0.5


def test_stacked_seg_reads_like_the_concatenation():
    from medmamba.training.cascade_inputs import StackedSeg

    seg = np.arange(2 * 3 * 4).reshape(1, 2, 3, 4).astype(np.int16)
    prev = (seg + 100).astype(np.uint8)
    full = np.concatenate([seg, prev.astype(np.int16)])
    stacked = StackedSeg(seg, prev)
    assert stacked.shape == full.shape
    index = (slice(None), slice(0, 1), slice(1, 3), slice(None))
    assert np.array_equal(stacked[index], full[index])
    assert np.array_equal(stacked[1], full[1]) and np.array_equal(np.asarray(stacked), full)
