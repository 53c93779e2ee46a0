"""Bad inputs and faults on every command with an output: exit status 1, one error line naming the file,
folder or flag, no traceback, and every input file unchanged (checksums before and after).

Table-driven. Each row builds its faulty input under its own tmp folder from the shared ``tiny_model``
fixture (tests/conftest.py; never written to) and returns the argv, the text the error line must
name, and optionally a check of what must (not) exist afterwards. Rows run in-process through
``medmamba.cli.main.main``; a few representative ones also run as a subprocess (``python -m medmamba``)
to check the real stderr and exit status. Faults (disk full, permission denied, read-only) are
injected into the atomic writer, the one place every file is written: root ignores permission bits,
and a tiny full file system cannot be mounted in CI.
"""
from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Callable

import pytest

from medmamba.cli.main import main

REPO = Path(__file__).resolve().parents[1]

# ---------------------------------------------------------------------------------------------- helpers


def checksums(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def run_in_process(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        rc = main(argv)
    return rc, out.getvalue(), err.getvalue()


def assert_one_error_line(rc: int, err: str, must_name: str) -> str:
    """Exit 1; exactly one error line, the last one, naming ``must_name``; no traceback anywhere."""
    assert rc == 1, err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if ": error: " in line]
    assert len(errors) == 1 and lines[-1] == errors[0], err
    assert must_name in errors[0], f"{must_name!r} not named in {errors[0]!r}"
    return errors[0]


def predict_args(fx, inp, out, *extra) -> list[str]:
    return ["predict", "-i", str(inp), "-o", str(out), "-d", fx.dataset, "-c", "3d_fullres", "-f", "all",
            "--results", str(fx.res), "--device", "cpu", "--no-tta", "-np", "0", "--no-progress", *extra]


def train_args(fx, results, *extra) -> list[str]:
    return ["train", "-d", fx.dataset, "-c", "3d_fullres", "-f", "all", "--preprocessed", str(fx.pre),
            "--results", str(results), "--epochs", "1", "--iters-per-epoch", "1", "--val-iters", "1",
            "--device", "cpu", "--num-workers", "0", "--augmentation", "none", "--no-validation", "--no-progress",
            *extra]


def evaluate_args(fx, *extra, ref=None, pred=None) -> list[str]:
    return ["evaluate", "-r", str(ref or fx.labels), "-p", str(pred or fx.pred_a), "-np", "1", *extra]


def ensemble_args(a, b, out, *extra) -> list[str]:
    return ["ensemble", "-i", str(a), str(b), "-o", str(out), *extra]


def plan_args(fx, preprocessed, *extra) -> list[str]:
    return ["plan_and_preprocess", "-d", "998", "--raw", str(fx.raw_root), "--preprocessed", str(preprocessed),
            "-np", "1", "--target", "cpu", "--no-progress", *extra]


def copy_predictions(fx, tmp: Path) -> tuple[Path, Path]:
    a, b = tmp / "pred_a", tmp / "pred_b"
    shutil.copytree(fx.pred_a, a)
    shutil.copytree(fx.pred_b, b)
    return a, b


def absent(path: Path) -> Callable[[], None]:
    def check() -> None:
        assert not path.exists(), f"{path} was left behind"
    return check


def unchanged(path: Path) -> Callable[[], None]:
    before = path.read_bytes()

    def check() -> None:
        assert path.read_bytes() == before, f"{path} was modified"
    return check


def fault(monkeypatch, code: int, text: str) -> None:
    """Every atomic write fails as the file system would: after the bytes were written, before the rename."""
    from medmamba import atomic

    def fail(path):
        raise OSError(code, text, str(path))

    monkeypatch.setattr(atomic, "_fsync_file", fail)


def deny_create(monkeypatch, code: int, text: str) -> None:
    """The temporary file cannot even be created (permission denied, read-only file system)."""
    from medmamba import atomic

    def fail(final, suffix):
        raise OSError(code, text, str(final.parent / f".{final.name}.tmp"))

    monkeypatch.setattr(atomic, "_create_temporary", fail)


# ------------------------------------------------------------------------------------------------- rows
# Each row: (id, build(fx, tmp, monkeypatch) -> (argv, text the error line names, check or None)).

def _evaluate_output_is_reference_label(fx, tmp, mp):  # defect 1, exactly as reported
    target = fx.labels / "case_0.nii.gz"
    return evaluate_args(fx, "-l", "1", "-o", str(target)), str(target), None


def _evaluate_output_is_a_folder(fx, tmp, mp):  # defect 1: was IsADirectoryError
    (tmp / "somewhere").mkdir()
    return evaluate_args(fx, "-l", "1", "-o", str(tmp / "somewhere")), str(tmp / "somewhere"), None


def _evaluate_output_is_reference_folder(fx, tmp, mp):
    return evaluate_args(fx, "-l", "1", "-o", str(fx.labels)), str(fx.labels), None


def _evaluate_output_is_a_prediction(fx, tmp, mp):
    a, _ = copy_predictions(fx, tmp)
    target = a / "case_1.nii.gz"
    return evaluate_args(fx, "-l", "1", "-o", str(target), pred=a), str(target), unchanged(target)


def _evaluate_output_is_users_file(fx, tmp, mp):
    notes = tmp / "notes.json"
    notes.write_text('{"mine": true}\n')
    return evaluate_args(fx, "-l", "1", "-o", str(notes)), str(notes), unchanged(notes)


def _evaluate_default_summary_is_users_file(fx, tmp, mp):
    a, _ = copy_predictions(fx, tmp)
    (a / "summary.json").write_text('{"my": "own summary"}\n')
    return evaluate_args(fx, "-l", "1", pred=a), str(a / "summary.json"), unchanged(a / "summary.json")


def _evaluate_label_0(fx, tmp, mp):  # 14: -l 0 was accepted
    return evaluate_args(fx, "-l", "0", "-o", str(tmp / "s.json")), "-l 0", absent(tmp / "s.json")


def _evaluate_label_negative(fx, tmp, mp):  # 14: -l -1 was accepted
    return evaluate_args(fx, "-l=-1", "-o", str(tmp / "s.json")), "-l", absent(tmp / "s.json")


def _evaluate_label_absent(fx, tmp, mp):  # 14: -l 42 was accepted, a summary of NaN
    return evaluate_args(fx, "-l", "42", "-o", str(tmp / "s.json")), str(fx.labels), absent(tmp / "s.json")


def _evaluate_label_not_a_number(fx, tmp, mp):
    return evaluate_args(fx, "-l", "liver", "-o", str(tmp / "s.json")), "liver", absent(tmp / "s.json")


def _evaluate_nsd_negative(fx, tmp, mp):
    return evaluate_args(fx, "-l", "1", "--nsd-tolerance=-1", "-o", str(tmp / "s.json")), "--nsd-tolerance", None


def _evaluate_permission_denied(fx, tmp, mp):
    deny_create(mp, errno.EACCES, "Permission denied")
    return evaluate_args(fx, "-l", "1", "-o", str(tmp / "out" / "s.json")), str(tmp / "out"), None


def _predict_into_raw_dataset(fx, tmp, mp):  # defect 2, exactly as reported
    dataset = tmp / "Dataset123_Mine"
    shutil.copytree(fx.images, dataset / "imagesTs")
    (dataset / "dataset.json").write_text('{"mine": true}\n')
    return predict_args(fx, dataset / "imagesTs", dataset), str(dataset), unchanged(dataset / "dataset.json")


def _predict_into_input(fx, tmp, mp):
    return predict_args(fx, fx.images, fx.images), str(fx.images), None


def _predict_inside_input(fx, tmp, mp):
    return predict_args(fx, fx.images, fx.images / "out"), str(fx.images / "out"), absent(fx.images / "out")


def _predict_into_model_folder(fx, tmp, mp):
    out = fx.model / "predictions"
    return predict_args(fx, fx.images, out), str(out), absent(out)


def _predict_replaces_users_dataset_json(fx, tmp, mp):  # defect 2: a file it did not write
    out = tmp / "out"
    out.mkdir()
    (out / "dataset.json").write_text('{"mine": true}\n')
    return predict_args(fx, fx.images, out), str(out / "dataset.json"), unchanged(out / "dataset.json")


def _predict_over_another_models_predictions(fx, tmp, mp):  # defect 2: contradicting dataset.json
    out, _ = copy_predictions(fx, tmp)
    args = json.loads((out / "predict_args.json").read_text())
    args["checkpoints"] = ["/elsewhere/other_model/fold_0/checkpoint_final.pt"]
    (out / "predict_args.json").write_text(json.dumps(args))
    return predict_args(fx, fx.images, out), str(out), unchanged(out / "dataset.json")


def _predict_over_another_tools_label_maps(fx, tmp, mp):  # were "skipped 2 already present", rc 0
    out = tmp / "out"
    shutil.copytree(fx.labels, out)  # another tool's label maps, named like the cases
    before = checksums(out)

    def check():  # nothing written, nothing replaced
        assert checksums(out) == before and sorted(p.name for p in out.iterdir()) == ["case_0.nii.gz", "case_1.nii.gz"]
    return predict_args(fx, fx.images, out), str(out / "case_0.nii.gz"), check


def _predict_into_raw_labels(fx, tmp, mp):  # `-i imagesTr -o labelsTr` wrote dataset.json etc. there
    raw = tmp / "raw" / fx.raw.name
    shutil.copytree(fx.raw, raw)
    shutil.rmtree(raw / "imagesTr")
    shutil.copytree(fx.images, raw / "imagesTr")  # images the model can read, in the raw dataset's imagesTr
    before = checksums(raw)

    def check():
        assert checksums(raw) == before, "the raw dataset was written"
    return predict_args(fx, raw / "imagesTr", raw / "labelsTr"), str(raw / "labelsTr"), check


def _predict_into_new_folder_in_raw_dataset(fx, tmp, mp):  # not even a new folder inside a raw dataset
    raw = tmp / "raw" / fx.raw.name
    shutil.copytree(fx.raw, raw)
    out = raw / "predictions"
    return predict_args(fx, fx.images, out, "--overwrite"), str(out), absent(out)


def _predict_part_id_not_below_num_parts(fx, tmp, mp):
    return predict_args(fx, fx.images, tmp / "out", "--num-parts", "2", "--part-id", "2"), "--part-id", \
        absent(tmp / "out")


def _predict_num_parts_zero(fx, tmp, mp):
    return predict_args(fx, fx.images, tmp / "out", "--num-parts", "0"), "--num-parts", absent(tmp / "out")


def _predict_part_id_negative(fx, tmp, mp):
    return predict_args(fx, fx.images, tmp / "out", "--part-id", "-1"), "--part-id", absent(tmp / "out")


def _predict_output_is_a_file(fx, tmp, mp):
    (tmp / "out").write_text("not a folder\n")
    return predict_args(fx, fx.images, tmp / "out"), str(tmp / "out"), unchanged(tmp / "out")


def _predict_step_zero(fx, tmp, mp):
    return predict_args(fx, fx.images, tmp / "out", "--step", "0"), "--step", absent(tmp / "out")


def _predict_step_nan(fx, tmp, mp):
    return predict_args(fx, fx.images, tmp / "out", "--step", "nan"), "--step", absent(tmp / "out")


def _predict_batch_windows_zero(fx, tmp, mp):
    return predict_args(fx, fx.images, tmp / "out", "--batch-windows", "0"), "--batch-windows", absent(tmp / "out")


def _predict_disk_full(fx, tmp, mp):  # defect 8
    fault(mp, errno.ENOSPC, "No space left on device")
    return predict_args(fx, fx.images, tmp / "out"), str(tmp / "out"), absent(tmp / "out")


def _predict_disk_full_while_writing_cases(fx, tmp, mp):  # defect 8: stops at the first case, names the folder
    from medmamba import atomic

    real = atomic._fsync_file

    def fail_for_label_maps(path):
        if path.name.endswith(".nii.gz"):
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real(path)

    mp.setattr(atomic, "_fsync_file", fail_for_label_maps)

    def check():  # the run stopped: no label map, no temporary file left
        names = sorted(p.name for p in (tmp / "out").iterdir())
        assert names == [".medmamba_claims", ".medmamba_written.json", ".medmamba_written.lock", "dataset.json",
                         "plans.json", "predict_args.json"], names
    return predict_args(fx, fx.images, tmp / "out"), str(tmp / "out"), check


def _predict_read_only(fx, tmp, mp):
    deny_create(mp, errno.EROFS, "Read-only file system")
    return predict_args(fx, fx.images, tmp / "out"), str(tmp / "out"), absent(tmp / "out")


def compare_args(fx, output, *extra) -> list[str]:
    return ["compare", "-d", fx.dataset, "-c", "3d_fullres", "--networks", "plain_unet", "--preprocessed", str(fx.pre),
            "--raw", str(fx.raw_root), "-o", str(output), "--device", "cpu", *extra]


def _compare_jobs_zero(fx, tmp, mp):
    return compare_args(fx, tmp / "cmp", "--epochs", "1", "--iters-per-epoch", "1", "--jobs", "0"), "--jobs", \
        absent(tmp / "cmp")


def _compare_seeds_not_integer(fx, tmp, mp):
    return compare_args(fx, tmp / "cmp", "--epochs", "1", "--iters-per-epoch", "1", "--seeds", "2.5"), "--seeds", \
        absent(tmp / "cmp")


def _compare_time_budget_inf(fx, tmp, mp):
    return compare_args(fx, tmp / "cmp", "--time-budget", "inf"), "--time-budget", absent(tmp / "cmp")


def _compare_iters_without_epochs(fx, tmp, mp):
    return compare_args(fx, tmp / "cmp", "--time-budget", "1", "--iters-per-epoch", "5"), "--iters-per-epoch", \
        absent(tmp / "cmp")


def _compare_device_torch_cannot_use(fx, tmp, mp):  # sibling: CUDA calls failed after the folder was made
    args = compare_args(fx, tmp / "cmp", "--epochs", "1", "--iters-per-epoch", "1")
    args[args.index("--device") + 1] = "cuda:99"
    return args, "--device", absent(tmp / "cmp")


def _train_time_budget_nan(fx, tmp, mp):  # defect 3: trained for ever
    return train_args(fx, tmp / "res", "--time-budget", "nan"), "--time-budget", absent(tmp / "res")


def _train_time_budget_inf(fx, tmp, mp):  # defect 3: ValueError traceback
    return train_args(fx, tmp / "res", "--time-budget", "inf"), "--time-budget", absent(tmp / "res")


def _train_time_budget_huge(fx, tmp, mp):  # defect 3: planned 10^11 epochs
    return train_args(fx, tmp / "res", "--time-budget", "1e9"), "--time-budget", absent(tmp / "res")


def _train_time_budget_negative(fx, tmp, mp):
    return train_args(fx, tmp / "res", "--time-budget=-5"), "--time-budget", absent(tmp / "res")


def _train_lr_negative(fx, tmp, mp):  # defect 3: torch traceback
    return train_args(fx, tmp / "res", "--lr=-1"), "--lr", absent(tmp / "res")


def _train_lr_nan(fx, tmp, mp):  # defect 3
    return train_args(fx, tmp / "res", "--lr", "nan"), "--lr", absent(tmp / "res")


def _train_epochs_zero(fx, tmp, mp):
    return train_args(fx, tmp / "res", "--epochs", "0"), "--epochs", absent(tmp / "res")


def _train_epochs_not_integer(fx, tmp, mp):
    return train_args(fx, tmp / "res", "--epochs", "2.5"), "--epochs", absent(tmp / "res")


def _train_oversample_above_one(fx, tmp, mp):
    return train_args(fx, tmp / "res", "--oversample", "1.5"), "--oversample", absent(tmp / "res")


def _train_clean_finish_above_one(fx, tmp, mp):
    return train_args(fx, tmp / "res", "--clean-finish", "1.5"), "--clean-finish", absent(tmp / "res")


def _train_clean_finish_nan(fx, tmp, mp):
    return train_args(fx, tmp / "res", "--clean-finish", "nan"), "--clean-finish", absent(tmp / "res")


def _train_results_inside_preprocessed(fx, tmp, mp):  # sibling: output inside an input
    pre = tmp / "pre"
    shutil.copytree(fx.pre, pre)
    args = train_args(fx, pre)
    args[args.index("--preprocessed") + 1] = str(pre)
    return args, str(pre / fx.dataset), None


def _train_disk_full(fx, tmp, mp):  # defect 8: was RuntimeError "unexpected pos" from torch.save
    fault(mp, errno.ENOSPC, "No space left on device")
    return train_args(fx, tmp / "res"), str(tmp / "res" / fx.dataset), None


def _plan_memory_nan(fx, tmp, mp):  # defect 3: ValueError traceback
    return plan_args(fx, tmp / "pre", "--memory-target-gb", "nan"), "--memory-target-gb", absent(tmp / "pre")


def _plan_memory_inf(fx, tmp, mp):  # defect 3
    return plan_args(fx, tmp / "pre", "--memory-target-gb", "inf"), "--memory-target-gb", absent(tmp / "pre")


def _plan_processes_zero(fx, tmp, mp):
    args = plan_args(fx, tmp / "pre")
    args[args.index("-np") + 1] = "0"
    return args, "-np", absent(tmp / "pre")


def _plan_fingerprint_samples_zero(fx, tmp, mp):
    return plan_args(fx, tmp / "pre", "--fingerprint-samples", "0"), "--fingerprint-samples", absent(tmp / "pre")


def _plan_lowres_factor_not_coarser(fx, tmp, mp):  # a "lowres" stage at the fullres spacing is no cascade
    return (plan_args(fx, tmp / "pre", "--lowres-spacing-factor", "1"), "--lowres-spacing-factor",
            absent(tmp / "pre"))


def _plan_into_raw_folder(fx, tmp, mp):  # sibling: --preprocessed = --raw wrote into the raw dataset
    return plan_args(fx, fx.raw_root), str(fx.raw), None


def _plan_disk_full(fx, tmp, mp):  # defect 8: OSError traceback
    fault(mp, errno.ENOSPC, "No space left on device")
    return plan_args(fx, tmp / "pre"), str(tmp / "pre" / fx.raw.name), absent(tmp / "pre" / fx.raw.name)


def _ensemble_truncated_npz(fx, tmp, mp):  # defect 12, exactly as reported
    a, b = copy_predictions(fx, tmp)
    npz = b / "case_1.npz"
    npz.write_bytes(npz.read_bytes()[: npz.stat().st_size // 2])
    return ensemble_args(a, b, tmp / "ens"), str(npz), absent(tmp / "ens")


def _ensemble_npz_not_a_zip(fx, tmp, mp):
    a, b = copy_predictions(fx, tmp)
    (a / "case_0.npz").write_bytes(b"\x00" * 100)
    return ensemble_args(a, b, tmp / "ens"), str(a / "case_0.npz"), absent(tmp / "ens")


def _ensemble_npz_without_probabilities(fx, tmp, mp):
    import numpy as np

    a, b = copy_predictions(fx, tmp)
    with open(a / "case_0.npz", "wb") as fh:
        np.savez(fh, something_else=np.zeros(3))
    return ensemble_args(a, b, tmp / "ens"), str(a / "case_0.npz"), absent(tmp / "ens")


def _ensemble_properties_not_json(fx, tmp, mp):
    a, b = copy_predictions(fx, tmp)
    (b / "case_0.json").write_text("{not json")
    return ensemble_args(a, b, tmp / "ens"), str(b / "case_0.json"), absent(tmp / "ens")


def _ensemble_output_is_an_input(fx, tmp, mp):
    a, b = copy_predictions(fx, tmp)
    return ensemble_args(a, b, b), str(b), None


def _ensemble_output_inside_an_input(fx, tmp, mp):
    a, b = copy_predictions(fx, tmp)
    return ensemble_args(a, b, a / "ens"), str(a / "ens"), absent(a / "ens")


def _ensemble_output_contains_inputs(fx, tmp, mp):
    a, b = copy_predictions(fx, tmp)
    return ensemble_args(a, b, tmp), str(tmp), None


def _ensemble_users_dataset_json(fx, tmp, mp):
    a, b = copy_predictions(fx, tmp)
    (tmp / "ens").mkdir()
    (tmp / "ens" / "dataset.json").write_text('{"mine": true}\n')
    return ensemble_args(a, b, tmp / "ens"), str(tmp / "ens" / "dataset.json"), unchanged(tmp / "ens" / "dataset.json")


def _ensemble_disk_full(fx, tmp, mp):  # defect 8
    a, b = copy_predictions(fx, tmp)
    fault(mp, errno.ENOSPC, "No space left on device")
    return ensemble_args(a, b, tmp / "ens"), str(tmp / "ens"), absent(tmp / "ens")


def _make_demo_id_negative(fx, tmp, mp):  # 14: made a folder -d -1 cannot address
    return ["make_demo_dataset", "-id=-1", "--raw", str(tmp / "raw")], "-id", absent(tmp / "raw")


def _make_demo_size_zero(fx, tmp, mp):
    return ["make_demo_dataset", "--size", "0", "--raw", str(tmp / "raw")], "--size", absent(tmp / "raw")


def _make_demo_cases_nan(fx, tmp, mp):
    return ["make_demo_dataset", "--cases", "nan", "--raw", str(tmp / "raw")], "--cases", absent(tmp / "raw")


def _demo_minutes_inf(fx, tmp, mp):  # defect 3: ValueError traceback
    return ["demo", "--minutes", "inf", "--workdir", str(tmp / "w")], "--minutes", absent(tmp / "w")


def _demo_minutes_zero(fx, tmp, mp):
    return ["demo", "--minutes", "0", "--workdir", str(tmp / "w")], "--minutes", absent(tmp / "w")


def _demo_workdir_with_users_results(fx, tmp, mp):  # sibling: demo replaced files under a used folder
    (tmp / "w" / "results").mkdir(parents=True)
    (tmp / "w" / "results" / "mine.txt").write_text("my results\n")
    return (["demo", "--workdir", str(tmp / "w"), "--cases", "2", "--size", "8", "--no-progress"],
            str(tmp / "w" / "results"), unchanged(tmp / "w" / "results" / "mine.txt"))


def _convert_msd_id_too_large(fx, tmp, mp):
    return ["convert_msd", "-i", str(tmp / "Task04_X"), "-id", "1000", "--raw", str(tmp / "raw")], "-id", None


def _convert_msd_raw_inside_task(fx, tmp, mp):  # sibling: output inside the input
    task = tmp / "Task04_Hippo"
    for sub in ("imagesTr", "labelsTr"):
        (task / sub).mkdir(parents=True)
    (task / "dataset.json").write_text(json.dumps({"name": "Hippo", "modality": {"0": "MRI"},
                                                   "labels": {"0": "background", "1": "a"}, "training": [],
                                                   "numTraining": 0}))
    return (["convert_msd", "-i", str(task), "--raw", str(task / "raw"), "--no-progress"], str(task / "raw"),
            absent(task / "raw"))


def _catalog_plot_replaces_users_file(fx, tmp, mp):  # sibling: --plot replaced any file
    (tmp / "figure.png").write_bytes(b"my figure")
    return (["catalog", "stats", "--plot", str(tmp / "figure.png")], str(tmp / "figure.png"),
            unchanged(tmp / "figure.png"))


def _catalog_year_nan(fx, tmp, mp):
    return ["catalog", "list", "--year", "nan"], "--year", None


def _unknown_flag(fx, tmp, mp):  # 14: argparse errors exited 2
    return predict_args(fx, fx.images, tmp / "out", "--no-such-flag"), "--no-such-flag", absent(tmp / "out")


def _missing_required_flag(fx, tmp, mp):  # 14
    return ["evaluate", "-r", str(fx.labels)], "-p/--prediction", None


def _bug_is_reported_as_bug(fx, tmp, mp):  # an unexpected exception: one line saying it is a bug
    from medmamba import api

    def bug(**_kwargs):
        raise ZeroDivisionError("division by zero")

    mp.setattr(api, "ensemble", bug)
    mp.setenv("TMPDIR", str(tmp))
    mp.setattr("tempfile.tempdir", None)
    a, b = fx.pred_a, fx.pred_b
    return ensemble_args(a, b, tmp / "ens"), "a bug in medmamba", None


def _export_bundle_into_users_folder(fx, tmp, mp):
    (tmp / "bundle").mkdir()
    (tmp / "bundle" / "mine.txt").write_text("mine\n")
    return (["export_bundle", "-m", str(fx.model), "-o", str(tmp / "bundle"), "--no-torchscript"], str(tmp / "bundle"),
            unchanged(tmp / "bundle" / "mine.txt"))


def _export_bundle_inside_model_folder(fx, tmp, mp):
    return (["export_bundle", "-m", str(fx.model), "-o", str(fx.model / "bundle"), "--no-torchscript"],
            str(fx.model / "bundle"), absent(fx.model / "bundle"))


ROWS = [
    _export_bundle_into_users_folder, _export_bundle_inside_model_folder,
    _evaluate_output_is_reference_label, _evaluate_output_is_a_folder, _evaluate_output_is_reference_folder,
    _evaluate_output_is_a_prediction, _evaluate_output_is_users_file, _evaluate_default_summary_is_users_file,
    _evaluate_label_0, _evaluate_label_negative, _evaluate_label_absent, _evaluate_label_not_a_number,
    _evaluate_nsd_negative, _evaluate_permission_denied,
    _predict_into_raw_dataset, _predict_into_input, _predict_inside_input, _predict_into_model_folder,
    _predict_replaces_users_dataset_json, _predict_over_another_models_predictions, _predict_output_is_a_file,
    _predict_step_zero, _predict_step_nan, _predict_batch_windows_zero, _predict_disk_full, _predict_disk_full_while_writing_cases,
    _predict_read_only, _predict_over_another_tools_label_maps, _predict_into_raw_labels,
    _predict_into_new_folder_in_raw_dataset, _predict_part_id_not_below_num_parts, _predict_num_parts_zero,
    _predict_part_id_negative,
    _compare_jobs_zero, _compare_seeds_not_integer, _compare_time_budget_inf, _compare_iters_without_epochs,
    _compare_device_torch_cannot_use,
    _train_time_budget_nan, _train_time_budget_inf, _train_time_budget_huge, _train_time_budget_negative,
    _train_lr_negative, _train_lr_nan, _train_epochs_zero, _train_epochs_not_integer, _train_oversample_above_one,
    _train_clean_finish_above_one, _train_clean_finish_nan, _train_results_inside_preprocessed, _train_disk_full,
    _plan_memory_nan, _plan_memory_inf, _plan_processes_zero, _plan_fingerprint_samples_zero, _plan_lowres_factor_not_coarser,
    _plan_into_raw_folder,
    _plan_disk_full,
    _ensemble_truncated_npz, _ensemble_npz_not_a_zip, _ensemble_npz_without_probabilities,
    _ensemble_properties_not_json, _ensemble_output_is_an_input, _ensemble_output_inside_an_input,
    _ensemble_output_contains_inputs, _ensemble_users_dataset_json, _ensemble_disk_full,
    _make_demo_id_negative, _make_demo_size_zero, _make_demo_cases_nan, _demo_minutes_inf, _demo_minutes_zero,
    _demo_workdir_with_users_results, _convert_msd_id_too_large, _convert_msd_raw_inside_task,
    _catalog_plot_replaces_users_file, _catalog_year_nan, _unknown_flag, _missing_required_flag, _bug_is_reported_as_bug,
]


@pytest.mark.parametrize("row", ROWS, ids=[r.__name__.lstrip("_") for r in ROWS])
def test_bad_input_is_one_line_exit_1_and_inputs_unchanged(row, tiny_model, tmp_path, monkeypatch):
    before = checksums(tiny_model.root)
    argv, must_name, check = row(tiny_model, tmp_path, monkeypatch)
    rc, _, err = run_in_process(argv)
    line = assert_one_error_line(rc, err, must_name)
    if os.environ.get("SHOW_ERROR_LINES"):
        print("\nROWLINE", row.__name__, "|", line, file=sys.__stderr__)
    if check is not None:
        check()
    assert checksums(tiny_model.root) == before


# Representative rows as a user runs them: a real process, its real stderr and exit status.
SUBPROCESS_ROWS = [_evaluate_output_is_reference_label, _train_time_budget_nan, _ensemble_truncated_npz,
                   _unknown_flag, _predict_over_another_tools_label_maps, _predict_into_raw_labels]


@pytest.mark.parametrize("row", SUBPROCESS_ROWS, ids=[r.__name__.lstrip("_") for r in SUBPROCESS_ROWS])
def test_bad_input_as_a_subprocess(row, tiny_model, tmp_path, monkeypatch):
    before = checksums(tiny_model.root)
    argv, must_name, check = row(tiny_model, tmp_path, monkeypatch)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "medmamba", *argv], capture_output=True, text=True, env=env,
                          timeout=300)
    assert_one_error_line(proc.returncode, proc.stderr, must_name)
    if check is not None:
        check()
    assert checksums(tiny_model.root) == before


# ----------------------------------------------------------------------- what the rules still allow


def test_own_files_are_replaced_and_users_files_only_with_overwrite(tiny_model, tmp_path):
    fx = tiny_model
    a, b = copy_predictions(fx, tmp_path)
    # evaluate twice into the default summary: medmamba wrote it the first time, so it may replace it
    for _ in range(2):
        rc, _, err = run_in_process(evaluate_args(fx, "-l", "1", "--no-per-case", pred=a))
        assert rc == 0, err
    # predicting again into a folder this model filled skips what is there, replaces nothing else
    before = checksums(a)
    rc, _, err = run_in_process(predict_args(fx, fx.images, a))
    assert rc == 0, err
    assert {k: v for k, v in checksums(a).items() if k.endswith((".nii.gz", ".npz"))} == \
        {k: v for k, v in before.items() if k.endswith((".nii.gz", ".npz"))}
    # a user's file is replaced when --overwrite says so
    out = tmp_path / "ens"
    out.mkdir()
    (out / "dataset.json").write_text('{"mine": true}\n')
    rc, _, err = run_in_process(ensemble_args(a, b, out, "--overwrite"))
    assert rc == 0, err
    assert json.loads((out / "dataset.json").read_text()) != {"mine": True}
    assert "dataset.json" in json.loads((out / ".medmamba_written.json").read_text())["files"]


def test_numeric_ranges_are_shared_by_the_api():
    """Python callers get the same checks as the command line (one definition per range)."""
    from medmamba import api
    from medmamba.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="--time-budget"):
        api.train(dataset=1, configuration="2d", fold=0, time_budget_minutes=float("nan"))
    with pytest.raises(ConfigurationError, match="--lr"):
        api.train(dataset=1, configuration="2d", fold=0, lr=-1.0)
    with pytest.raises(ConfigurationError, match="--memory-target-gb"):
        api.plan_and_preprocess(dataset=1, memory_target_gb=float("inf"))
    with pytest.raises(ConfigurationError, match="--step"):
        api.predict(input_folder=".", output_folder="x", dataset=1, configuration="2d", step=float("nan"))
    with pytest.raises(ConfigurationError, match="-l"):
        api.evaluate(reference_folder=".", prediction_folder=".", labels=[-1])
    with pytest.raises(ConfigurationError, match="--minutes"):
        api.run_demo(minutes=float("inf"))
