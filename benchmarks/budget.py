"""Test Dice vs training minutes: medmamba's default Mamba network and plain_unet under ``--time-budget``.

For one raw dataset (nnU-Net format, with ``imagesTs``/``labelsTs``), every (system, budget) job
runs through the ``medmamba`` CLI as subprocesses, in its own results folder:

1. ``plan_and_preprocess --target cpu`` once (skipped when the preprocessed plans exist);
2. ``train -f all --time-budget MINUTES --no-validation`` (every training case trains; the test
   split is never seen, and nothing is chosen on it);
3. ``predict`` the test images (``--no-tta`` unless ``--tta``), ``evaluate`` against ``labelsTs``.

Systems: ``default`` is the plan's network (the CPU recipe of benchmarks/results/budget_recipe.md
included, through the plans); ``plain_unet`` is the conv U-Net baseline trained with the same plans,
recipe and budget. Jobs run ``--parallel`` at a time with ``--threads`` torch threads each, so two
1-thread jobs share a 2-core machine; the JSON records both, with the machine.

The output JSON holds per job: training seconds (the budget's clock), iterations, seconds per
iteration, the derived schedule, wall seconds of each command, and test Dice per class; the PNG
plots test mean foreground Dice against training minutes, one line per system.

``--nnunet-venv VENV`` (a side venv with nnunetv2 and a CPU torch) adds the system ``nnunet``: nnU-Net v2's stock 2d/3d_fullres plans and trainer, with its
epochs x iterations cut to the same budget by benchmarks/nnunet_budget_trainer.py (copied into
that venv's trainer folder), predicted without TTA and scored by the same ``medmamba evaluate``.
``--nnunet-informed`` (with ``--nnunet-venv``) adds the system ``nnunet_informed``: what a
knowledgeable user would run on a CPU. nnU-Net's own plans are copied to the plans name
``nnUNetPlans_medmambaCPU`` with only the configuration's ``patch_size`` and ``batch_size`` replaced by
our CPU plan's, and the U-Net topology re-derived for that patch by nnU-Net's rule (our
:func:`medmamba.plans.topology.pool_and_conv_props`, the same rule; features ``min(32 * 2**i, max)``);
spacing, normalisation and preprocessed data are nnU-Net's (same ``data_identifier``). Its trainer
also takes our short-budget optimizer (AdamW, lr and weight decay of the plan's CPU recipe) through
environment variables; nnU-Net's own augmentation is kept (our recipe's ``augmentation: none`` is not
replicated: nnU-Net's transform functions differ between versions). Both nnU-Net lines stay in the
report, labelled. Not yet measured on this project's machines.

Examples (the commands behind benchmarks/results/budget_*.json):

    python benchmarks/budget.py --demo --work WORK --budgets 15 5 --nnunet-venv NNUNET_VENV \\
        --nnunet-budgets 5 --name demo --parallel 1
    python benchmarks/budget.py --raw RAW -d 501 --work WORK --budgets 45 15 5 \\
        --nnunet-venv NNUNET_VENV --name mri --source-json RAW/SOURCE.json -c 2d
    python benchmarks/budget.py --table benchmarks/results/budget_mri.json   # the Markdown table
    python benchmarks/budget.py --raw RAW -d 501 --work WORK --budgets 45 15 --systems default \
        --nnunet-venv NNUNET_VENV --nnunet-informed --name mri_informed -c 2d     # + the informed nnU-Net

An interrupted run resumes: a job whose folder holds a finished ``row.json`` is not run again
(``--finished-only`` writes the report from those alone).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_helpers import machine_info  # noqa: E402
from pipeline import medmamba_cmd, run_timed  # noqa: E402

from medmamba.atomic import atomic_write_json  # noqa: E402

DEMO_ID = 999  # make_demo_dataset's default id (Dataset999_Demo)
NNUNET_TRAINER = "nnUNetTrainer_medmambaBudget"  # benchmarks/nnunet_budget_trainer.py
NNUNET_PLANS = "nnUNetPlans"  # nnU-Net's default plans name
NNUNET_INFORMED_PLANS = "nnUNetPlans_medmambaCPU"  # its plans with our CPU plan's patch and batch


@dataclass
class Job:
    """One training run + (optionally) its test prediction and evaluation."""

    name: str
    configuration: str
    budget_minutes: float
    network: str | None = None  # None: the plan's network
    fold: str = "all"
    train_args: list[str] = field(default_factory=list)
    predict_test: bool = True
    nnunet_venv: Path | None = None  # set: the job runs nnU-Net v2 from this venv instead of medmamba
    nnunet_plans: str = NNUNET_PLANS  # nnU-Net jobs: plans name (-p)
    nnunet_env: dict[str, str] = field(default_factory=dict)  # nnU-Net jobs: extra trainer settings


def dataset_folder_name(root: Path, dataset: str) -> str:
    from medmamba.datasets.raw_dataset import find_dataset_folder

    return find_dataset_folder(dataset, root, "raw", "--raw", "").name


def thread_env(threads: int) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    for var in ("MEDMAMBA_RAW", "MEDMAMBA_PREPROCESSED", "MEDMAMBA_RESULTS"):
        env.pop(var, None)  # explicit flags only
    return env


def prepare(work: Path, raw: Path, dataset: str, configurations: list[str], env: dict[str, str],
            plan_args: list[str]) -> dict[str, Any]:
    """plan_and_preprocess (CPU target) unless already done; returns the plans' summary."""
    pre = work / "preprocessed"
    name = dataset_folder_name(raw, dataset)
    plans_file = pre / name / "plans.json"
    seconds = None
    if not plans_file.is_file():
        seconds = run_timed(medmamba_cmd("plan_and_preprocess", "-d", dataset, "--raw", str(raw), "--preprocessed",
                                         str(pre), "--target", "cpu", "-c", *configurations, "--no-progress",
                                         *plan_args), env, work / "prepare.log")
    plans = json.loads(plans_file.read_text())
    return {"plan_and_preprocess_seconds": seconds,
            "configurations": {c: {k: plans["configurations"][c].get(k) for k in
                                   ("patch_size", "batch_size", "spacing", "network", "recipe", "optimizer")}
                               for c in configurations if c in plans["configurations"]}}


def nnunet_env(venv: Path, work: Path, raw: Path, results: Path, threads: int) -> dict[str, str]:
    return {**thread_env(threads), "nnUNet_raw": str(raw), "nnUNet_preprocessed": str(work / "nnunet_preprocessed"),
            "nnUNet_results": str(results), "nnUNet_n_proc_DA": "0",  # augment in the training process,
            # like medmamba's CPU default of 0 loader workers on 2 cores
            "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"}


def prepare_nnunet(venv: Path, work: Path, raw: Path, dataset: str, configuration: str) -> dict[str, Any]:
    """Install the budget trainer into the venv; nnU-Net's own plan_and_preprocess once."""
    import shutil
    import subprocess

    pkg = subprocess.run([str(venv / "bin" / "python"), "-c", "import nnunetv2, os; print(os.path.dirname("
                          "nnunetv2.__file__))"], capture_output=True, text=True, check=True).stdout.strip()
    shutil.copy2(Path(__file__).with_name("nnunet_budget_trainer.py"),
                 Path(pkg) / "training" / "nnUNetTrainer" / f"{NNUNET_TRAINER}.py")
    version = subprocess.run([str(venv / "bin" / "python"), "-c", "from importlib.metadata import version; "
                              "print(version('nnunetv2'))"], capture_output=True, text=True).stdout.strip()
    seconds = None
    if not (work / "nnunet_preprocessed").is_dir():
        # n_proc_DA only sets the planner's torch threads here (0 would be refused)
        env = {**nnunet_env(venv, work, raw, work / "nnunet_results_unused", 1), "nnUNet_n_proc_DA": "2"}
        seconds = run_timed([str(venv / "bin" / "nnUNetv2_plan_and_preprocess"), "-d", dataset, "-c", configuration,
                             "-np", "2", "-npfp", "2"], env, work / "prepare.log")
    name = dataset_folder_name(raw, dataset)
    plans = json.loads((work / "nnunet_preprocessed" / name / "nnUNetPlans.json").read_text())
    conf = plans["configurations"][configuration]
    return {"nnunetv2": version, "plan_and_preprocess_seconds": seconds,
            "patch_size": conf.get("patch_size"), "batch_size": conf.get("batch_size")}


def informed_nnunet_plans(nnunet_plans: dict[str, Any], configuration: str, patch_size: list[int],
                          batch_size: int) -> dict[str, Any]:
    """nnU-Net's plans renamed :data:`NNUNET_INFORMED_PLANS`, ``configuration`` given our CPU plan's
    patch and batch and the topology nnU-Net's planner derives for that patch (its
    ``get_pool_and_conv_props`` rule, as medmamba.plans.topology implements it; features
    ``min(32 * 2**i, 320 in 3D / 512 in 2D)``; 2 convs per stage, as nnU-Net's PlainConvUNet)."""
    import copy

    from medmamba.networks.blocks.conv import BASE_FEATURES, MAX_FEATURES
    from medmamba.plans.topology import pool_and_conv_props

    plans = copy.deepcopy(nnunet_plans)
    plans["plans_name"] = NNUNET_INFORMED_PLANS
    conf = plans["configurations"][configuration]
    if "inherits_from" in conf:
        raise ValueError(f"nnU-Net configuration {configuration!r} inherits from another; edit it by hand")
    topo = pool_and_conv_props(conf["spacing"], patch_size)
    dims = len(patch_size)
    n = len(topo.strides)
    features = [min(BASE_FEATURES * 2 ** i, MAX_FEATURES[dims]) for i in range(n)]
    conf["patch_size"] = [int(p) for p in topo.patch_size]
    conf["batch_size"] = int(batch_size)
    topology = {"n_stages": n, "features_per_stage": features,
                "kernel_sizes": [list(k) for k in topo.kernel_sizes], "strides": [list(s) for s in topo.strides],
                "n_conv_per_stage": [2] * n, "n_conv_per_stage_decoder": [2] * (n - 1)}
    if "architecture" in conf:  # nnU-Net >= 2.4 plans
        conf["architecture"]["arch_kwargs"].update(topology)
    else:  # older plans spell the topology as separate keys
        conf.update(pool_op_kernel_sizes=topology["strides"], conv_kernel_sizes=topology["kernel_sizes"],
                    n_conv_per_stage_encoder=topology["n_conv_per_stage"],
                    n_conv_per_stage_decoder=topology["n_conv_per_stage_decoder"])
    return plans


def prepare_informed_nnunet(work: Path, raw: Path, dataset: str, configuration: str,
                            prepared: dict[str, Any]) -> dict[str, Any]:
    """Write the informed plans beside nnU-Net's (same preprocessed data); returns what was set."""
    ours = prepared["configurations"][configuration]
    name = dataset_folder_name(raw, dataset)
    folder = work / "nnunet_preprocessed" / name
    stock = json.loads((folder / f"{NNUNET_PLANS}.json").read_text())
    plans = informed_nnunet_plans(stock, configuration, ours["patch_size"], ours["batch_size"])
    atomic_write_json(folder / f"{NNUNET_INFORMED_PLANS}.json", plans)
    conf = plans["configurations"][configuration]
    optimizer = ours.get("optimizer") or {}
    trainer_env = {}
    if optimizer.get("name") == "adamw":
        trainer_env = {"MEDMAMBA_NNUNET_OPTIMIZER": "adamw", "MEDMAMBA_NNUNET_LR": str(optimizer["lr"]),
                       "MEDMAMBA_NNUNET_WEIGHT_DECAY": str(optimizer.get("weight_decay", 0.0))}
    return {"plans": NNUNET_INFORMED_PLANS, "patch_size": conf["patch_size"], "batch_size": conf["batch_size"],
            "stock_patch_size": stock["configurations"][configuration].get("patch_size"),
            "stock_batch_size": stock["configurations"][configuration].get("batch_size"),
            "trainer_env": trainer_env, "augmentation": "nnU-Net default (recipe's 'none' not replicated)",
            "measured": False}


def run_nnunet_job(job: Job, work: Path, raw: Path, dataset: str, threads: int, row: dict[str, Any]) -> None:
    venv = job.nnunet_venv
    assert venv is not None
    folder = work / "jobs" / job.name
    log = folder / "job.log"
    env = {**nnunet_env(venv, work, raw, folder / "results", threads), **job.nnunet_env,
           "MEDMAMBA_NNUNET_BUDGET_SECONDS": str(job.budget_minutes * 60), "MEDMAMBA_NNUNET_SKIP_VALIDATION": "1"}
    row["train_wall_seconds"] = run_timed([str(venv / "bin" / "nnUNetv2_train"), dataset, job.configuration, "all",
                                           "-tr", NNUNET_TRAINER, "-p", job.nnunet_plans, "-device", "cpu"], env, log)
    (budget_log,) = list((folder / "results").glob("*/*/fold_all/budget_log.json"))
    bl = json.loads(budget_log.read_text())
    informed = job.nnunet_plans != NNUNET_PLANS
    row.update({"network": "nnU-Net v2 PlainConvUNet" + (" (our CPU patch/batch)" if informed else " (stock plans)"),
                "nnunet_plans": job.nnunet_plans, "nnunet_trainer_env": job.nnunet_env,
                "training_seconds": bl["training_seconds"],
                "iterations": bl["iterations"], "epochs": bl["epochs"], "patch_size": bl["patch_size"],
                "batch_size": bl["batch_size"], "time_budget": bl})
    name = dataset_folder_name(raw, dataset)
    pred = folder / "test_predictions"
    row["predict_wall_seconds"] = run_timed([str(venv / "bin" / "nnUNetv2_predict"), "-i", str(raw / name / "imagesTs"),
                                             "-o", str(pred), "-d", dataset, "-c", job.configuration, "-f", "all",
                                             "-tr", NNUNET_TRAINER, "-p", job.nnunet_plans, "-device", "cpu",
                                             "--disable_tta", "-npp", "1",
                                             "-nps", "1"], env, log)
    evaluate_test(raw, dataset, pred, thread_env(threads), log)
    row["test"] = dice_table(pred / "summary.json")


def evaluate_test(raw: Path, dataset: str, pred: Path, env: dict[str, str], log: Path, labels: str = "labelsTs",
                  summary: Path | None = None) -> None:
    """``medmamba evaluate`` of the test predictions in ``pred`` against the dataset's ``labels`` folder, into
    ``summary`` (default ``pred/summary.json``)."""
    name = dataset_folder_name(raw, dataset)
    run_timed(medmamba_cmd("evaluate", "-r", str(raw / name / labels), "-p", str(pred), "-d", dataset,
                           "--raw", str(raw), "--no-per-case", *(["-o", str(summary)] if summary else [])), env, log)


def run_job(job: Job, work: Path, raw: Path, dataset: str, threads: int, tta: bool) -> dict[str, Any]:
    """Run ``job`` unless its folder already holds a finished ``row.json`` (an interrupted benchmark
    resumes without retraining what finished); the row is saved for the next run."""
    folder = work / "jobs" / job.name
    saved = folder / "row.json"
    if saved.is_file():
        row = json.loads(saved.read_text())
        if row.get("status") == "ok" and row.get("train_args") == job.train_args:
            print(f"[{job.name}] reused {saved}", flush=True)
            return row
    row = _run_job(job, folder, work, raw, dataset, threads, tta)
    if row["status"] == "ok":
        atomic_write_json(saved, row)
    return row


def training_fields(res: Path) -> dict[str, Any]:
    """What a finished run's ``training_log.json`` says about its schedule and recipe."""
    (tl_path,) = list(res.glob("*/*/fold_*/training_log.json"))
    tl = json.loads(tl_path.read_text())
    epochs = tl.get("epochs", [])
    return {"network": tl.get("network"), "training_seconds": tl.get("training_seconds"),
            "iterations": epochs[-1]["iterations_done"] if epochs else 0, "epochs": len(epochs),
            "final_lr": tl.get("final_lr"), "time_budget": tl.get("time_budget"), "recipe": tl.get("recipe"),
            "optimizer": tl.get("optimizer"), "optimizer_kwargs": tl.get("optimizer_kwargs"),
            "patch_size": tl.get("patch_size"), "batch_size": tl.get("batch_size"),
            "last_ema_pseudo_dice": epochs[-1].get("ema_fg_dice") if epochs else None}


def _run_job(job: Job, folder: Path, work: Path, raw: Path, dataset: str, threads: int, tta: bool
             ) -> dict[str, Any]:
    env = thread_env(threads)
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / "job.log"
    res = folder / "results"
    net = ["--network", job.network] if job.network else []
    row: dict[str, Any] = {"job": job.name, "configuration": job.configuration, "budget_minutes": job.budget_minutes,
                           "network_override": job.network, "fold": job.fold, "train_args": job.train_args,
                           "threads": threads}
    try:
        if job.nnunet_venv is not None:
            run_nnunet_job(job, work, raw, dataset, threads, row)
            row["status"] = "ok"
            print(f"[{job.name}] ok: {json.dumps(row.get('test'))}", flush=True)
            return row
        row["train_wall_seconds"] = run_timed(medmamba_cmd(
            "train", "-d", dataset, "-c", job.configuration, "-f", job.fold, *net, "--time-budget",
            f"{job.budget_minutes:g}", "--preprocessed", str(work / "preprocessed"), "--results", str(res),
            "--no-progress", *(["--no-validation"] if job.predict_test else []), *job.train_args), env, log)
        row.update(training_fields(res))
        if job.predict_test:
            name = dataset_folder_name(raw, dataset)
            pred = folder / "test_predictions"
            row["predict_wall_seconds"] = run_timed(medmamba_cmd(
                "predict", "-i", str(raw / name / "imagesTs"), "-o", str(pred), "-d", dataset, "-c",
                job.configuration, "-f", job.fold, *net, "--results", str(res), "--no-progress",
                *([] if tta else ["--no-tta"])), env, log)
            evaluate_test(raw, dataset, pred, env, log)
            row["test"] = dice_table(pred / "summary.json")
        else:
            (summary,) = list(res.glob("*/*/fold_*/validation/summary.json"))
            row["validation"] = dice_table(summary)
        row["status"] = "ok"
    except (RuntimeError, ValueError) as err:
        row.update({"status": "error", "error": str(err)[-1500:]})
    result = row.get("test") or row.get("validation") or row.get("error", "")[-300:]
    print(f"[{job.name}] {row['status']}: {json.dumps(result)}", flush=True)
    return row


def dice_table(summary_file: Path) -> dict[str, Any]:
    """Mean foreground Dice and Dice per class from an evaluate/validation ``summary.json``."""
    from medmamba.formats.summary import load_summary

    summary = load_summary(summary_file)
    per_class = {str(k): v.get("Dice") for k, v in summary["mean"].items()}
    return {"mean_dice": summary["foreground_mean"].get("Dice"), "dice_per_class": per_class,
            "cases": len(summary["metric_per_case"])}


def fmt_dice(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def markdown_table(report: dict[str, Any]) -> str:
    """Test Dice vs training minutes, one row per (system, budget), per class included."""
    rows = sorted((r for r in report["runs"] if r.get("status") == "ok"),
                  key=lambda r: (r["system"], r["budget_minutes"]))
    classes = sorted({k for r in rows for k in r["test"]["dice_per_class"]}, key=lambda k: int(k) if k.isdigit() else k)
    head = ["system", "minutes", "network", "iterations", "train s", "test mean Dice",
            *[f"class {c}" for c in classes]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        t = r["test"]
        cells = [r["system"], f"{r['budget_minutes']:g}", str(r.get("network")), str(r.get("iterations")),
                 f"{r.get('training_seconds') or 0:.0f}", f"**{t['mean_dice']:.3f}**",
                 *[fmt_dice(t["dice_per_class"].get(c)) for c in classes]]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [f"| {r['system']} | {r['budget_minutes']:g} | error: {r.get('error', '')[-80:].strip()} |"
              for r in report["runs"] if r.get("status") != "ok"]
    lines += [f"| {name} | not run |" for name in report.get("not_run", [])]
    return "\n".join(lines)


def run_jobs(jobs: list[Job], work: Path, raw: Path, dataset: str, threads: int, parallel: int,
             tta: bool = False) -> list[dict[str, Any]]:
    with ThreadPoolExecutor(max_workers=parallel) as pool:
        futures = [pool.submit(run_job, job, work, raw, dataset, threads, tta) for job in jobs]
        return [f.result() for f in futures]


def plot(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for system in dict.fromkeys(r["system"] for r in rows):
        pts = sorted((r["budget_minutes"], r["test"]["mean_dice"]) for r in rows
                     if r["system"] == system and r.get("status") == "ok" and r["test"]["mean_dice"] is not None)
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=system)
    ax.set_xlabel("training budget (minutes)")
    ax.set_ylabel("test mean foreground Dice")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--demo", action="store_true", help="generate the demo dataset (Dataset999_Demo) in WORK/raw")
    src.add_argument("--raw", type=Path, help="raw root holding the dataset (with imagesTs/labelsTs)")
    ap.add_argument("-d", "--dataset", default=str(DEMO_ID), help="dataset id or name (default: the demo's)")
    ap.add_argument("--work", type=Path, help="work folder (preprocessed data, models, predictions)")
    ap.add_argument("--name", help="result name: writes benchmarks/results/budget_NAME.{json,png}")
    ap.add_argument("-c", "--configuration", default=None, help="configuration (default: 2d, the CPU default)")
    ap.add_argument("--budgets", type=float, nargs="+", default=[5, 15, 45], help="minutes (default 5 15 45)")
    ap.add_argument("--systems", nargs="*", default=["default", "plain_unet"],
                    help="'default' (the plan's network) and/or registry names; none with --nnunet-venv runs "
                         "nnU-Net alone")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per job (default 1)")
    ap.add_argument("--parallel", type=int, default=2, help="jobs at a time (default 2)")
    ap.add_argument("--tta", action="store_true", help="predict with mirror TTA")
    ap.add_argument("--source-json", type=Path, help="JSON describing the dataset's source and licence")
    ap.add_argument("--nnunet-venv", type=Path, help="side venv with nnunetv2: adds the system 'nnunet'")
    ap.add_argument("--nnunet-budgets", type=float, nargs="+", help="budgets for nnunet (default: --budgets)")
    ap.add_argument("--nnunet-informed", action="store_true",
                    help="with --nnunet-venv: also run nnunet_informed (nnU-Net with our CPU plan's patch and batch)")
    ap.add_argument("--table", type=Path, help="print the Markdown table of an existing result JSON and exit")
    ap.add_argument("--finished-only", action="store_true",
                    help="write the report from the jobs an earlier run finished (WORK/jobs/*/row.json); "
                         "list the others under not_run")
    args = ap.parse_args(argv)
    if args.table:
        print(markdown_table(json.loads(args.table.read_text())))
        return 0
    if not (args.demo or args.raw) or args.work is None or args.name is None:
        ap.error("--demo or --raw, --work and --name are required to run the benchmark")
    if args.nnunet_informed and args.nnunet_venv is None:
        ap.error("--nnunet-informed needs --nnunet-venv")

    started = datetime.now(timezone.utc)
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    raw = (work / "raw") if args.demo else args.raw.resolve()
    configuration = args.configuration or "2d"
    env = thread_env(args.threads)
    if args.demo and not (raw / "Dataset999_Demo").is_dir():
        run_timed(medmamba_cmd("make_demo_dataset", "--raw", str(raw), "--no-progress"), env, work / "prepare.log")
    prepared = prepare(work, raw, args.dataset, [configuration], env, []) if args.systems else {}
    jobs = [Job(f"{system}_{budget:g}min", configuration, budget, None if system == "default" else system)
            for budget in args.budgets for system in args.systems]
    nnunet: dict[str, Any] = {"status": "not run", "reason": "no --nnunet-venv given"}
    if args.nnunet_venv is not None:
        venv = args.nnunet_venv.resolve()
        nnunet = {"status": "run", "venv": str(venv), **prepare_nnunet(venv, work, raw, args.dataset, configuration)}
        jobs += [Job(f"nnunet_{budget:g}min", configuration, budget, "nnunet", nnunet_venv=venv)
                 for budget in (args.nnunet_budgets or args.budgets)]
        if args.nnunet_informed:
            if not prepared:
                prepared = prepare(work, raw, args.dataset, [configuration], env, [])
            nnunet["informed"] = prepare_informed_nnunet(work, raw, args.dataset, configuration, prepared)
            jobs += [Job(f"nnunet_informed_{budget:g}min", configuration, budget, "nnunet_informed",
                         nnunet_venv=venv, nnunet_plans=NNUNET_INFORMED_PLANS,
                         nnunet_env=nnunet["informed"]["trainer_env"])
                     for budget in (args.nnunet_budgets or args.budgets)]
    jobs.sort(key=lambda j: -j.budget_minutes)  # longest first: the pool finishes sooner
    not_run = []
    if args.finished_only:  # report what earlier (interrupted) runs finished; train nothing
        not_run = [j.name for j in jobs if not (work / "jobs" / j.name / "row.json").is_file()]
        jobs = [j for j in jobs if j.name not in not_run]
    rows = run_jobs(jobs, work, raw, args.dataset, args.threads, args.parallel, args.tta)
    for row, job in zip(rows, jobs):
        row["system"] = "default" if job.network is None else job.network
    source = json.loads(args.source_json.read_text()) if args.source_json else {
        "dataset": "Dataset999_Demo, generated by `medmamba make_demo_dataset` (synthetic)", "licence": "n/a"}
    report = {
        "created": started.isoformat(timespec="seconds"),
        "command": " ".join(["python benchmarks/budget.py", *(argv if argv is not None else sys.argv[1:])]),
        "machine": machine_info(), "threads_per_job": args.threads, "parallel_jobs": args.parallel,
        "dataset": {"id": args.dataset, "folder": dataset_folder_name(raw, args.dataset), **source},
        "configuration": configuration, "prepared": prepared, "tta": args.tta, "runs": rows,
        "nnunet": nnunet, "not_run": not_run,
        "load_average_at_end": list(os.getloadavg()),
    }
    out = RESULTS / f"budget_{args.name}.json"
    atomic_write_json(out, report)
    ok = [r for r in rows if r.get("status") == "ok"]
    if ok:
        plot(ok, out.with_suffix(".png"), f"{report['dataset']['folder']} {configuration}: test Dice vs budget "
                                          f"({args.parallel} jobs x {args.threads} thread on {os.cpu_count()} cores)")
    print(f"wrote {out}")
    for r in rows:
        t = r.get("test") or {}
        print(f"{r['system']:>12} {r['budget_minutes']:>5g} min  {r.get('status')}  mean Dice {t.get('mean_dice')}")
    return 0 if len(ok) == len(rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
