"""A cohort split between processes: ``--num-parts/--part-id``, and workers sharing one output folder
through per-case claims (medmamba.claims), including a killed worker whose cases are taken over.

Workers run as real processes (``python -m``-like, through ``medmamba.cli.main.main``). To make the
interleaving deterministic, a worker can be started with a gate around ``predict_preprocessed`` (the
network pass of one case, which runs after the case is claimed): ``wait`` holds each of its cases until
a flag file exists, ``signal`` creates the flag when it reaches its first case, ``hang`` creates the flag
and then never finishes (to be killed). The prediction itself is the real one.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medmamba.cli.main import main

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
       "OMP_NUM_THREADS": "1"}
N_CASES = 6

GATED_WORKER = """
import sys, time
from pathlib import Path
from medmamba.inference import predictor as P

mode, flag = sys.argv[1], Path(sys.argv[2])
real = P.Predictor.predict_preprocessed

def gated(self, *args, **kwargs):
    if mode == "wait":
        while not flag.exists():
            time.sleep(0.05)
    elif mode == "signal":
        flag.touch()
    elif mode == "hang":
        flag.touch()
        time.sleep(3600)
    return real(self, *args, **kwargs)

P.Predictor.predict_preprocessed = gated
from medmamba.cli.main import main
sys.exit(main(sys.argv[3:]))
"""


def _predict_args(fx, images: Path, out: Path, *extra: str) -> list[str]:
    return ["predict", "-i", str(images), "-o", str(out), "-d", fx.dataset, "-c", "3d_fullres", "-f", "all",
            "--results", str(fx.res), "--device", "cpu", "--no-tta", "-np", "0", "--no-progress", *extra]


def _worker(mode: str, flag: Path, argv: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", GATED_WORKER, mode, str(flag), *argv], env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _visible(folder: Path) -> dict[str, bytes]:
    """Every non-hidden file of an output folder with its bytes."""
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if not p.name.startswith(".")}


def _predicted(summary: str) -> int:
    return int(summary.split("predicted ")[1].split(" case")[0])


@pytest.fixture(scope="module")
def cohort(tiny_model, tmp_path_factory):
    """``N_CASES`` distinct images and a single process's predictions of them (the reference)."""
    root = tmp_path_factory.mktemp("cohort")
    rng = np.random.default_rng(7)
    (root / "images").mkdir()
    for i in range(N_CASES):
        image = rng.normal(0, 1, (18, 17, 16)).astype(np.float32)
        image[4:12, 5:13, 3:11] += 3.0
        nib.save(nib.Nifti1Image(image, np.diag([1.1, 1.0, 0.9, 1.0])), str(root / "images" / f"p{i:02d}_0000.nii.gz"))
    single = root / "single"
    assert main(_predict_args(tiny_model, root / "images", single)) == 0
    assert len([p for p in single.iterdir() if p.name.endswith(".nii.gz")]) == N_CASES
    return root / "images", _visible(single)


def test_parts_cover_the_cohort_once_as_nnunet_splits_it(tiny_model, cohort, tmp_path, capsys):
    images, reference = cohort
    out = tmp_path / "out"
    written = []
    for part in range(3):
        capsys.readouterr()
        assert main(_predict_args(tiny_model, images, out, "--num-parts", "3", "--part-id", str(part))) == 0
        now = sorted(p.name for p in out.glob("*.nii.gz"))
        new = [n for n in now if n not in written]
        ids = sorted(f"p{i:02d}" for i in range(N_CASES))
        assert new == [f"{c}.nii.gz" for c in ids[part::3]]  # case i belongs to part i % N
        assert _predicted(capsys.readouterr().out) == len(new)
        written = now
    assert _visible(out) == reference


@pytest.mark.slow
def test_two_workers_share_one_folder_each_case_once_same_bytes(tiny_model, cohort, tmp_path):
    images, reference = cohort
    out, flag = tmp_path / "shared", tmp_path / "second_started"
    argv = _predict_args(tiny_model, images, out)
    first = _worker("wait", flag, argv)  # claims its first case(s), then waits for the second worker
    deadline = time.time() + 120
    while time.time() < deadline and not (out / ".medmamba_claims").is_dir():
        time.sleep(0.05)
    second = _worker("signal", flag, argv)
    outs = [p.communicate(timeout=300) for p in (first, second)]
    for proc, (stdout, stderr) in zip((first, second), outs):
        assert proc.returncode == 0, stderr[-3000:]
        assert "Traceback" not in stderr
    counts = [_predicted(stdout) for stdout, _ in outs]
    assert sum(counts) == N_CASES and min(counts) >= 1, counts  # split, and no case predicted twice
    assert "predicted by other processes" in outs[0][0] + outs[1][0]
    assert _visible(out) == reference  # byte for byte what one process writes
    record = json.loads((out / ".medmamba_written.json").read_text())["files"]
    assert set(_visible(out)) <= set(record)  # both workers' names survived in the shared record
    notes = [p.read_text().split() for p in (out / ".medmamba_claims").iterdir()]
    assert len(notes) == N_CASES and all(len(n) == 4 for n in notes)  # every case claimed and marked done


@pytest.mark.slow
def test_killed_workers_cases_are_taken_over(tiny_model, cohort, tmp_path):
    images, reference = cohort
    out, flag = tmp_path / "shared", tmp_path / "holding"
    argv = _predict_args(tiny_model, images, out)
    doomed = _worker("hang", flag, argv)  # claims a case (and reads the next ahead), then hangs
    deadline = time.time() + 120
    while time.time() < deadline and not flag.exists():
        time.sleep(0.05)
    assert flag.exists(), doomed.communicate(timeout=5)
    held = sorted(p.stem for p in (out / ".medmamba_claims").iterdir())
    assert held  # the cases the hanging worker holds
    survivor = _worker("none", flag, argv)
    # the survivor predicts every other case, then waits for the held ones while their holder lives
    deadline = time.time() + 180
    while time.time() < deadline and len(list(out.glob("*.nii.gz"))) < N_CASES - len(held):
        time.sleep(0.1)
    time.sleep(2.0)
    assert survivor.poll() is None, survivor.communicate()
    assert sorted(p.name[:-7] for p in out.glob("*.nii.gz")) == sorted(
        f"p{i:02d}" for i in range(N_CASES) if f"p{i:02d}" not in held)
    os.kill(doomed.pid, signal.SIGKILL)  # its claims go with it
    doomed.communicate(timeout=30)
    stdout, stderr = survivor.communicate(timeout=300)
    assert survivor.returncode == 0, stderr[-3000:]
    assert _predicted(stdout) == N_CASES  # the survivor wrote every case, the held ones included
    assert _visible(out) == reference
    assert not list(out.glob(".*.nii.gz"))  # no temporary file of the killed worker's write is left to adopt


def test_overwrite_with_claims_from_an_earlier_run_predicts_again(tiny_model, cohort, tmp_path, capsys):
    """Claim files stay in the folder; under --overwrite only a case finished during this run counts as done."""
    images, reference = cohort
    out = tmp_path / "out"
    assert main(_predict_args(tiny_model, images, out)) == 0
    capsys.readouterr()
    assert main(_predict_args(tiny_model, images, out, "--overwrite")) == 0
    assert _predicted(capsys.readouterr().out) == N_CASES
    assert _visible(out) == reference
