"""Cases per hour when a cohort is split between prediction processes sharing one output folder.

A demo dataset is planned and preprocessed by medmamba (3d_fullres, plain_unet), a model is trained for
a few iterations (prediction cost does not depend on how well it is trained), and its test cases are
predicted by `medmamba predict` started 1 and then 2 times at once into one output folder (the
per-case claims split the cases). Wall time from the first start to the last exit, model loading
included, as a user sees it; the outputs of the two setups are compared byte for byte.
Run:  python benchmarks/predict_cohort.py   (defaults: --cases 8 --size 48 --repeats 2)
Writes benchmarks/results/predict_cohort_<date>.json.
"""
from __future__ import annotations

import argparse
import datetime
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_helpers import machine_info, write_result  # noqa: E402

DATASET_ID = 978


def predict_with(workers: int, threads: int, images: Path, out: Path, work: Path) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    argv = [sys.executable, "-m", "medmamba", "predict", "-i", str(images), "-o", str(out), "-d", str(DATASET_ID),
            "-c", "3d_fullres", "-f", "all", "--results", str(work / "res"), "--device", "cpu", "--no-progress"]
    t0 = time.perf_counter()
    procs = [subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(workers)]
    outs = [p.communicate() for p in procs]
    wall = time.perf_counter() - t0
    for p, (_, err) in zip(procs, outs):
        if p.returncode != 0:
            raise SystemExit(f"predict failed:\n{err[-3000:]}")
    return wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", type=int, default=8)
    parser.add_argument("--size", type=int, default=48, help="demo image size (voxels per axis)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args()

    from medmamba import api

    info = machine_info()
    with tempfile.TemporaryDirectory(prefix="predict_cohort_") as tmp:
        work = Path(tmp)
        raw = api.make_demo_dataset(dataset_id=DATASET_ID, cases=4, test_cases=args.cases, size=args.size,
                                    raw=work / "raw", progress=False)
        api.plan_and_preprocess(dataset=DATASET_ID, configurations=["3d_fullres"], networks=["plain_unet"],
                                target="cpu", num_processes=1, raw=work / "raw", preprocessed=work / "pre",
                                progress=False, echo=lambda line: None)
        api.train(dataset=DATASET_ID, configuration="3d_fullres", fold="all", epochs=1, iterations_per_epoch=2,
                  val_iterations=1, final_validation=False, device="cpu", num_workers=0,
                  preprocessed=work / "pre", results=work / "res", progress=False)
        images = raw / "imagesTs"
        setups = [("1 process x 2 threads", 1, 2), ("2 processes x 1 thread, one shared output folder", 2, 1)]
        runs, outputs = [], {}
        for repeat in range(args.repeats):
            for name, workers, threads in setups:
                out = work / f"pred_{workers}_{repeat}"
                wall = predict_with(workers, threads, images, out, work)
                cases = len(list(out.glob("*.nii.gz")))
                runs.append({"setup": name, "repeat": repeat, "wall_seconds": round(wall, 2), "cases": cases,
                             "cases_per_hour": round(cases * 3600 / wall, 1)})
                outputs[(workers, repeat)] = {p.name: p.read_bytes() for p in out.glob("*.nii.gz")}
                print(f"{name}: {cases} cases in {wall:.1f} s = {cases * 3600 / wall:.0f} cases/hour", flush=True)
        identical = all(outputs[(2, r)] == outputs[(1, r)] for r in range(args.repeats))
    result = {"date": datetime.date.today().isoformat(), "machine": info, "cases": args.cases, "size": args.size,
              "runs": runs, "outputs_identical_1_vs_2_processes": identical,
              "median_cases_per_hour": {name: statistics.median(r["cases_per_hour"] for r in runs
                                                                if r["setup"] == name) for name, _, _ in setups},
              "load_average_at_end": list(os.getloadavg())}
    write_result(args.out, "predict_cohort", result)


if __name__ == "__main__":
    main()
