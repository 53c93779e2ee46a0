"""Training across nodes: two torchrun "nodes" (one process each) on the loopback interface, joined by
the c10d rendezvous and training with gloo, as ``torchrun --nnodes 2 --nproc-per-node 1 --rdzv-backend
c10d --rdzv-endpoint HOST:PORT`` runs on two machines. A rank killed mid-run ends the job with one line
from the surviving rank (no hang), and ``--resume`` on both nodes continues from rank 0's checkpoint to
the end, final validation included.

Each worker's stdout/stderr goes to its own file (torchrun ``--log-dir ... --redirects 3``), so what
medmamba prints is checked apart from torchrun's own report.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

DATASET = "Dataset901_TrainTiny"  # what the make_preprocessed fixture (tests/conftest.py) writes
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
EPOCHS = 10


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _nodes(pre: Path, res: Path, logs: Path, *extra: str) -> list[subprocess.Popen]:
    """Two torchrun agents, one per "node", meeting at one c10d endpoint on the loopback interface."""
    port = _free_port()
    train = ["train", "-d", "901", "-c", "3d_fullres", "-f", "0", "--epochs", str(EPOCHS), "--iters-per-epoch", "4",
             "--val-iters", "2", "--num-workers", "0", "--no-progress", "--device", "cpu", "--preprocessed", str(pre),
             "--results", str(res), *extra]
    return [subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
         "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", f"job{port}",
         "--max-restarts", "0", "--log-dir", str(logs / f"node{node}"), "--redirects", "3",
         "-m", "medmamba.cli", *train], env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for node in (0, 1)]


def _finish(procs: list[subprocess.Popen], timeout: float = 300) -> list[tuple[int, str]]:
    return [(p.wait(timeout=timeout), p.stdout.read()) for p in procs]


def _fold(res: Path) -> Path:
    return res / DATASET / "plain_unet__medmambaPlans__3d_fullres" / "fold_0"


def _rank_pids(procs: list[subprocess.Popen]) -> dict[int, int]:
    """Global rank -> pid of the worker processes the two agents started (from their environment)."""
    agents = {str(p.pid) for p in procs}
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = (entry / "stat").read_text().rsplit(")", 1)[1].split()[1]
            if ppid not in agents:
                continue
            env = dict(item.split("=", 1) for item in (entry / "environ").read_text().split("\0") if "=" in item)
        except (OSError, IndexError):
            continue
        if "RANK" in env:
            found[int(env["RANK"])] = int(entry.name)
    return found


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, make_preprocessed):
    root = tmp_path_factory.mktemp("pre")
    assert make_preprocessed(root).name == DATASET
    return root


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds the ranks' processes through /proc")
def test_two_nodes_train_a_killed_rank_ends_the_job_in_one_line_and_resume_finishes(dataset, tmp_path):
    res = tmp_path / "res"
    fold = _fold(res)
    procs = _nodes(dataset, res, tmp_path / "logs1")
    deadline = time.time() + 240
    while time.time() < deadline and not (
            (fold / "training_log.json").is_file() and len(json.loads((fold / "training_log.json").read_text())
                                                          ["epochs"]) >= 2):
        assert all(p.poll() is None for p in procs), _finish(procs)
        time.sleep(0.1)
    pids = _rank_pids(procs)
    assert sorted(pids) == [0, 1], pids
    os.kill(pids[1], signal.SIGKILL)
    results = _finish(procs, timeout=120)  # the job ends (no hang) ...
    assert all(rc != 0 for rc, _ in results), results
    survivor = [t for t in (p.read_text() for p in (tmp_path / "logs1").rglob("stderr.log"))
                if "medmamba train: error:" in t]
    assert len(survivor) == 1, results
    lines = [line for line in survivor[0].splitlines() if "error" in line.lower() or "Traceback" in line]
    assert len(lines) == 1 and lines[0].startswith("medmamba train: error: rank 0 of 2 "), lines  # ... in one line
    assert not (fold / "checkpoint_final.pt").exists()
    epochs_before = len(json.loads((fold / "training_log.json").read_text())["epochs"])
    assert 2 <= epochs_before < EPOCHS

    # both nodes resume from rank 0's checkpoint and finish, final validation included
    results = _finish(_nodes(dataset, res, tmp_path / "logs2", "--resume"))
    assert all(rc == 0 for rc, _ in results), results
    log = json.loads((fold / "training_log.json").read_text())
    assert log["world_size"] == 2 and log["finished"]
    assert [e["epoch"] for e in log["epochs"]] == list(range(EPOCHS))  # no epoch lost or repeated
    assert all(e["ranks_stepped"] == 2 for e in log["epochs"])
    assert (fold / "checkpoint_final.pt").is_file() and (fold / "validation" / "summary.json").is_file()
    assert sorted(p.name for p in (res / DATASET).iterdir()) == ["plain_unet__medmambaPlans__3d_fullres"]
    for text in (p.read_text() for p in (tmp_path / "logs2").rglob("stderr.log")):
        assert "Traceback" not in text and "error" not in text.lower(), text


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds the ranks' processes through /proc")
def test_a_rank_stopped_by_sigterm_says_so_in_one_line(dataset, tmp_path):
    """torchrun stops the surviving ranks with SIGTERM; such a rank prints one line instead of vanishing
    (even while blocked in a collective) and the job ends."""
    res = tmp_path / "res"
    procs = _nodes(dataset, res, tmp_path / "logs")
    deadline = time.time() + 240
    while time.time() < deadline and not (_fold(res) / "checkpoint_latest.pt").is_file():
        assert all(p.poll() is None for p in procs), _finish(procs)
        time.sleep(0.1)
    pids = _rank_pids(procs)
    assert sorted(pids) == [0, 1], pids
    os.kill(pids[1], signal.SIGTERM)
    results = _finish(procs, timeout=120)
    assert all(rc != 0 for rc, _ in results), results
    texts = [p.read_text() for p in (tmp_path / "logs").rglob("stderr.log")]
    errors = sorted(line for t in texts for line in t.splitlines() if "error" in line.lower() or "Traceback" in line)
    assert len(errors) == 2, errors  # one line from each rank
    assert errors[1].startswith("medmamba train: error: rank 1 of 2 stopped by torchrun (SIGTERM)"), errors
    assert errors[0].startswith("medmamba train: error: rank 0 of 2 "), errors


@pytest.mark.slow
def test_two_nodes_end_a_time_budget_together(dataset, tmp_path):
    """--time-budget across nodes: every rank follows rank 0's clock and plan, so they stop at the same
    iteration (a rank that stopped alone would leave the other waiting in an all-reduce until the timeout)."""
    res = tmp_path / "res"
    t0 = time.perf_counter()
    results = _finish(_nodes(dataset, res, tmp_path / "logs", "--time-budget", "0.25", "--no-validation"))
    wall = time.perf_counter() - t0
    assert all(rc == 0 for rc, _ in results), results
    log = json.loads((_fold(res) / "training_log.json").read_text())
    assert log["world_size"] == 2 and log["finished"] and log["final_lr"] == 0.0
    assert all(e["ranks_stepped"] == 2 for e in log["epochs"])
    assert abs(log["training_seconds"] - 15) <= 0.2 * 15
    assert wall < 15 + 90  # + start-up of both nodes (rendezvous, data index, network build) on a shared machine
