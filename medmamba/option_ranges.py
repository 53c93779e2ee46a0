"""Every option with a default, a range or a fixed set of choices, declared once.

An :class:`Option` is the command line's flag(s), the api keyword (``name``), the default, the help text and,
for numbers, the allowed range. The command line adds each with :func:`medmamba.cli.arg_types.add_option`
(so a bad value stops before any work starts), the api functions take ``Option.default`` as their keyword
default and check the same ranges for Python callers (:func:`check`), and the library reads its defaults from
here; a new option is one declaration. NaN and infinity are never allowed. Upper bounds are sanity limits
that no real run comes near; each says why it is where it is.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

from medmamba.errors import ConfigurationError


@dataclass(frozen=True)
class Option:
    """``flag`` (the command line's spelling named in messages; ``aliases`` are further spellings), ``kind``
    (int or float: range-checked; bool: a switch; str), bounds (None: unbounded), and, for options the
    command line and the api share, ``name`` (the api keyword), ``default``, ``help``, ``choices``."""

    flag: str
    kind: type
    low: float | None = None
    high: float | None = None
    low_inclusive: bool = True
    high_inclusive: bool = True
    name: str = ""
    aliases: tuple[str, ...] = ()
    default: Any = None
    help: str = ""
    choices: tuple[Any, ...] | None = None
    metavar: str | None = None

    def help_text(self) -> str:
        """The help with the default appended (argparse's ``%`` escaped)."""
        text = self.help.replace("%", "%%")
        if self.kind is not bool and self.default is not None and "default" not in self.help:
            shown = " ".join(map(str, self.default)) if isinstance(self.default, (list, tuple)) else self.default
            text += f" (default {shown})"
        return text

    def describe(self) -> str:
        noun = "an integer" if self.kind is int else "a finite number"
        if self.low is not None and self.high is not None:
            left = "[" if self.low_inclusive else "("
            right = "]" if self.high_inclusive else ")"
            return f"{noun} in {left}{_fmt(self.low)}, {_fmt(self.high)}{right}"
        if self.low is not None:
            return f"{noun} {'>=' if self.low_inclusive else '>'} {_fmt(self.low)}"
        if self.high is not None:
            return f"{noun} {'<=' if self.high_inclusive else '<'} {_fmt(self.high)}"
        return noun

    def problem(self, value: object) -> str | None:
        """None when ``value`` is allowed, else the one-line reason."""
        if self.choices is not None:
            if value in self.choices:
                return None
            return f"{self.flag} must be one of {', '.join(map(str, self.choices))}, got {value!r}"
        if self.kind not in (int, float):
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"{self.flag} must be {self.describe()}, got {value!r}"
        if self.kind is int and not float(value).is_integer():
            return f"{self.flag} must be {self.describe()}, got {value!r}"
        if not math.isfinite(value):
            return f"{self.flag} must be {self.describe()}, got {value!r}"
        too_low = self.low is not None and (value < self.low if self.low_inclusive else value <= self.low)
        too_high = self.high is not None and (value > self.high if self.high_inclusive else value >= self.high)
        if too_low or too_high:
            return f"{self.flag} must be {self.describe()}, got {_fmt(value)}"
        return None


def command_line(command: str, values: Sequence[tuple[Option, Any]], positional: Sequence[str] = ()) -> list[str]:
    """``[command, *positional, flags...]``: each ``(option, value)`` as typed on the command line; a switch
    appears when its value differs from its default, a value equal to the default of a valued option and
    None are left out."""
    argv = [command, *positional]
    for option, value in values:
        if option.kind is bool:
            if bool(value) != bool(option.default):
                argv.append(option.flag)
            continue
        if value is None or (option.default is not None and value == option.default):
            continue
        items = list(value) if isinstance(value, (list, tuple)) else [value]
        argv += [option.flag, *(str(v) for v in items)]
    return argv


def _fmt(value: float) -> str:
    return str(int(value)) if float(value).is_integer() and abs(value) < 1e15 else f"{value:g}"


# The name the ranges had before they declared whole options.
OptionRange = Option


def check(option: Option, value: object, allow_none: bool = True) -> None:
    """Raise :class:`ConfigurationError` (one line) unless ``value`` is in ``option``'s range."""
    if value is None and allow_none:
        return
    reason = option.problem(value)
    if reason is not None:
        raise ConfigurationError(reason)


# Limits shared by several commands.
THREADS = 256  # more worker threads/processes than any single machine we know of offers cores
WEEK_MINUTES = 7 * 24 * 60  # a time budget longer than a week is a typo (nnU-Net's 1000 epochs take ~1-2 days on a GPU)
CHECKPOINT_KINDS = ("final", "best", "latest")
SEED = Option("--seed", int, 0, 2**32 - 1, name="seed", default=12345,  # numpy's legacy seed range; any fixed value
              help="seed for weights and sampling")
DEVICE = Option("--device", str, name="device", default="auto", help="auto (CUDA if available), cpu, cuda or cuda:N")
CHECKPOINT = Option("--checkpoint", str, name="checkpoint", default="final", choices=CHECKPOINT_KINDS,
                    help="which checkpoint of each fold")
# export, export_bundle: None picks final when present, else the one kind the model holds
CHECKPOINT_PRESENT = Option("--checkpoint", str, name="checkpoint", default=None, choices=CHECKPOINT_KINDS,
                            help="checkpoint kind (default: final when present)")
TTA = Option("--no-tta", bool, name="tta", default=True, help="predict without mirror test-time augmentation")
PROGRESS = Option("--no-progress", bool, name="progress", default=True, help="hide progress bars")
RAW_ROOT = Option("--raw", str, name="raw", help="raw dataset root (else $MEDMAMBA_RAW, $nnUNet_raw, ./medmamba_data/raw)")
PREPROCESSED_ROOT = Option("--preprocessed", str, name="preprocessed",
                           help="preprocessed root (else $MEDMAMBA_PREPROCESSED, $nnUNet_preprocessed, "
                                "./medmamba_data/preprocessed)")
RESULTS_ROOT = Option("--results", str, name="results",
                      help="results root (else $MEDMAMBA_RESULTS, $nnUNet_results, ./medmamba_data/results)")

# What a command works on (no default: given by the user).
DATASET = Option("-d", str, name="dataset", aliases=("--dataset",), help="dataset id or name: 5, 005 or Dataset005_Prostate")
CONFIGURATION = Option("-c", str, name="configuration", aliases=("--configuration",),
                       help="configuration, e.g. 2d or 3d_fullres")
FOLD = Option("-f", str, name="fold", aliases=("--fold",), help="fold 0-4 (splits.json), a higher index, or 'all'")
FOLDS = Option("-f", str, name="folds", aliases=("--folds",),
               help="folds to ensemble, e.g. `-f 0 1 2 3 4` or `-f all` (default: every trained fold)")
CONFIGURATIONS = Option("-c", str, name="configurations", aliases=("--configurations",), metavar="CONFIG",
                        help="configurations to preprocess (default: every planned one; 2d, 3d_fullres, 3d_lowres when "
                             "they apply, plus network variants; 3d_cascade_fullres uses the 3d_fullres data)")
NETWORKS = Option("--network", str, name="networks", metavar="NAME",
                  help="registry network(s): the first is used by 2d/3d_fullres/3d_lowres; each further NAME adds "
                       "configurations <config>_NAME; CONFIG=NAME sets one configuration's network (default: umamba_bot)")
NETWORK = Option("--network", str, name="network",
                 help="registry network, e.g. plain_unet or umamba_bot (default: the plan's)")
INPUT_FOLDER = Option("-i", str, name="input_folder", aliases=("--input",),
                      help="folder of images in raw naming (CASE_0000.ext ... per channel); never written to")
OUTPUT_FOLDER = Option("-o", str, name="output_folder", aliases=("--output",),
                       help="output folder (not the input folder or inside it)")
REFERENCE_FOLDER = Option("-r", str, name="reference_folder", aliases=("--reference",),
                          help="folder of reference label maps")
PREDICTION_FOLDER = Option("-p", str, name="prediction_folder", aliases=("--prediction",),
                           help="folder of predicted label maps")
OVERWRITE = Option("--overwrite", bool, name="overwrite", default=False,
                   help="replace outputs medmamba did not write (else refused)")
FINAL_VALIDATION = Option("--no-validation", bool, name="final_validation", default=True,
                          help="skip the final sliding-window validation")
PER_CASE = Option("--no-per-case", bool, default=True, help="print only the means")  # display only: no api keyword

# Datasets. nnU-Net names datasets DatasetXXX: three-digit ids.
DATASET_ID = Option("-id", int, 1, 999, name="dataset_id", aliases=("--dataset-id",), default=999,
                    help="dataset id (999 -> Dataset999_Demo)")
DEMO_CASES = Option("--cases", int, 1, 1000, name="cases", default=12, help="training cases to generate")
DEMO_TEST_CASES = Option("--test-cases", int, 0, 1000, name="test_cases", default=4,
                         help="held-out cases in imagesTs/labelsTs")
DEMO_SEED = Option("--seed", int, 0, 2**32 - 1, name="seed", default=0, help="random seed; same seed, same bytes")
DEMO_SIZE = Option("--size", int, 8, 512, name="size", default=56,  # below 8 voxels the organs vanish; 512^3 is a CT
                   help="nominal voxels per axis at 1.75 mm (56: ~48-64 voxels per axis)")
DEMO_CHANNELS = Option("--channels", int, name="channels", default=1, choices=(1, 2), help="image channels")
# 2d, because within the 10-minute CPU budget it reached a higher test Dice than 3d_fullres, whose
# iterations are many times slower on CPU (benchmarks/results/demo_choice.json).
DEMO_CONFIGURATION = Option("-c", str, name="configuration", aliases=("--configuration",), default="2d",
                            choices=("2d", "3d_fullres"), help="configuration to train, chosen by measurement")
DEMO_MINUTES = Option("--minutes", float, 0, WEEK_MINUTES, low_inclusive=False, name="minutes", default=10.0,
                      help="wall-time budget for the whole demo in minutes")
DEMO_WORKDIR = Option("--workdir", str, name="workdir", default="medmamba_demo",
                      help="folder for raw/, preprocessed/, results/, predictions/")

# Planning and preprocessing. 1024 GB is beyond any accelerator sold today (H200: 141 GB).
MEMORY_TARGET_GB = Option("--memory-target-gb", float, 0, 1024, low_inclusive=False, name="memory_target_gb",
                          help="GPU memory to plan patch x batch for (default 8, nnU-Net's; ResEnc L: 24)")
NUM_PROCESSES = Option("-np", int, 1, THREADS, name="num_processes", aliases=("--num-processes",),
                       help="worker processes (default min(4, CPU cores); fewer when the RAM model says they "
                            "would not fit)")
FINGERPRINT_SAMPLES = Option("--fingerprint-samples", int, 1, 10**10, name="fingerprint_samples",
                             help="foreground intensity samples for the whole dataset (default 1e8, nnU-Net's)")
# Coarser than the fullres spacing (> 1); nnU-Net's own rule stops once the lowres image has at least
# 2x fewer voxels, i.e. about 1.26x per axis; beyond 8x per axis (512x fewer voxels) nothing is left to segment.
LOWRES_SPACING_FACTOR = Option("--lowres-spacing-factor", float, 1, 8, low_inclusive=False,
                               name="lowres_spacing_factor",
                               help="plan 3d_lowres and 3d_cascade_fullres at this multiple (> 1) of the 3d_fullres "
                                    "spacing even where nnU-Net's rule would not (default: nnU-Net's rule decides)")
PLAN_TARGET = Option("--target", str, name="target", choices=("cpu", "gpu"),
                     help="plan for CPU throughput or GPU memory (default: gpu when CUDA is available)")

# Training. nnU-Net: 1000 epochs x 250 iterations, 50 validation batches.
EPOCHS = Option("--epochs", int, 1, 100_000, name="epochs", default=1000, help="epochs")
ITERATIONS_PER_EPOCH = Option("--iters-per-epoch", int, 1, 100_000, name="iterations_per_epoch", default=250,
                              help="training iterations per epoch")
VAL_ITERATIONS = Option("--val-iters", int, 1, 100_000, name="val_iterations", default=50,
                        help="validation iterations per epoch")
# "default" is nnU-Net v2's pipeline (nnUNetTrainer.get_training_transforms); "light" keeps mirroring and the
# spatial transform; "spatial" is "light" without mirroring (so no mirror TTA either); "intensity" keeps nnU-Net's
# intensity transforms and adds an MR bias field, moving no voxel; "none" trains on plain random crops
# (benchmarks/results/budget_recipe.md compares them)
AUGMENTATION = Option("--augmentation", str, name="augmentation",
                      choices=("default", "light", "spatial", "intensity", "none"),
                      help="augmentation strength: 'default' nnU-Net's full pipeline; 'light' spatial (rotation, "
                           "scaling) + mirroring; 'spatial' rotation and scaling, no mirroring; 'intensity' "
                           "nnU-Net's intensity transforms + an MR bias field, no spatial change; 'none' plain "
                           "random crops (default: plan's recipe, else 'default')")
TIME_BUDGET_MINUTES = Option("--time-budget", float, 0, WEEK_MINUTES, low_inclusive=False,
                             name="time_budget_minutes", metavar="MINUTES")
LEARNING_RATE = Option("--lr", float, 0, 10, low_inclusive=False, name="lr",  # nnU-Net SGD uses 1e-2
                       help="initial learning rate (default: the optimizer's)")
TRAIN_WORKERS = Option("--num-workers", int, 0, THREADS, name="num_workers", help="data augmentation worker processes")
OVERSAMPLE = Option("--oversample", float, 0, 1, name="oversample", metavar="FRACTION")
# YOLOX (Ge et al. 2021, arXiv:2107.08430) turns its strong augmentation off for the last epochs so the network
# ends on the data it will meet; 0 (augment to the end) is nnU-Net's behaviour
CLEAN_FINISH = Option("--clean-finish", float, 0, 1, name="clean_finish", metavar="FRACTION",
                      help="train the last FRACTION of the run (its iterations, or its time under --time-budget) "
                           "without augmentation (default: plan's recipe, else 0: augment to the end)")

# Comparison. Papers report 3-5 seeds; a thousand per system is a typo.
COMPARE_SEEDS = Option("--seeds", int, 1, 1000, name="seeds", default=3, help="seeds per system")
COMPARE_JOBS = Option("--jobs", int, 1, THREADS, name="jobs", default=1,
                      help="pairs trained at once, each in its own process with the threads split between them")

# Prediction and evaluation.
STEP = Option("--step", float, 0, 1, low_inclusive=False, name="step", default=0.5,  # nnU-Net's default
              help="tile step as a fraction of the patch")
# 4: on CPU one tile per forward costs ~6x more per tile than four (benchmarks/results/predict_cpu_benchmark.json)
BATCH_WINDOWS = Option("--batch-windows", int, 1, 4096, name="batch_windows", default=4, help="tiles per forward pass")
PREDICT_WORKERS = Option("-np", int, 0, THREADS, name="num_workers", aliases=("--num-workers",), default=2,
                         help="background threads reading and exporting cases (0 = sequential)")
ENGINE = Option("--engine", str, name="engine", default="torch", choices=("torch", "torchscript", "onnx"),
                help="run the networks eagerly, as TorchScript or through onnxruntime (CPU)")
# a cohort split into more parts than a million (SLURM's largest array size is 4 million) is a typo
PREDICT_PARTS = Option("--num-parts", int, 1, 1_000_000, name="num_parts", default=1,
                       help="split the cases into this many parts (sorted case ids, case i in part i % N), e.g. one per "
                            "SLURM array task; processes sharing -o also split the cases by themselves")
PREDICT_PART_ID = Option("--part-id", int, 0, 1_000_000 - 1, name="part_id", default=0,
                         help="which part this process predicts, 0 ... --num-parts - 1")
EVALUATE_WORKERS = Option("-np", int, 1, THREADS, name="num_workers", aliases=("--num-workers",), default=2,
                          help="threads")
# Nikolov et al. (arXiv:1809.04430) use organ-specific tolerances of 1-3 mm; 1 mm is the MSD/MONAI tutorial
# default and does not assume a particular organ. Up to a metre: larger than any body.
NSD_TOLERANCE_MM = Option("--nsd-tolerance", float, 0, 1000, name="nsd_tolerance_mm", default=1.0, metavar="MM",
                          help="surface Dice tolerance in mm")
LABEL_VALUE = Option("-l", int, 1, 65535)  # 0 is background; label maps are at most uint16
BEST_METRIC = Option("--metric", str, name="metric", default="Dice", choices=("Dice", "IoU", "NSD"),
                     help="foreground-mean metric to maximise")
BEST_FOLDS = Option("-f", str, name="folds", aliases=("--folds",), default=("0", "1", "2", "3", "4"),
                    help="folds whose validation summaries are pooled")

OUTPUT_FORMAT = Option("--output-format", str, name="output_format", default="nifti",
                       choices=("nifti", "dicom-seg", "both"),
                       help="for a folder of DICOM series (-i): label maps <case>.nii.gz, DICOM SEG <case>.dcm "
                            "referencing each series, or both")
SAVE_PROBABILITIES = Option("--save-probabilities", bool, name="save_probabilities", default=False,
                            help="also write CASE.npz (probabilities) + CASE.json, needed by `medmamba ensemble`")

# Sharing. A bundle's metadata keys (MONAI Bundle Specification); "not stated" rather than a guessed licence.
BUNDLE_VERSION = Option("--version", str, name="version", default="0.1.0", help="bundle version")
BUNDLE_AUTHORS = Option("--authors", str, name="authors", default="not stated", help="metadata `authors`")
BUNDLE_COPYRIGHT = Option("--copyright", str, name="copyright", default="not stated", help="metadata `copyright`")
BUNDLE_LICENSE = Option("--license", str, name="license", default="not stated; ask the model's authors",
                        help="licence of the model weights (metadata `license` and LICENSE)")
COMPARE_FOLD = Option("-f", int, name="fold", aliases=("--fold",), default=0, choices=None,
                      help="cross-validation fold")

# Catalog.
CATALOG_YEAR = Option("--year", int, 1900, 2100)
CATALOG_LIMIT = Option("--limit", int, 0, 100_000)
