"""First contact with a GPU: scan kernels, AMP training and memory on one accelerator, in one command.

On a machine with an NVIDIA GPU, from a checkout of this repository::

    pip install -e .                               # medmamba and its dependencies (torch, triton, monai, ...)
    python -m benchmarks.gpu_check                 # about 7 minutes on an H200

and without a GPU, a dry run of the same code paths at tiny sizes (about 2 CPU-minutes)::

    python -m benchmarks.gpu_check --device cpu --tiny

It writes ``benchmarks/results/gpu_<device>.json`` and ``.png`` (device name slugified:
``gpu_nvidia-h200.json``; the CPU dry run writes ``gpu_cpu-dryrun.json``; ``--out`` picks another
folder). The JSON is rewritten atomically after every section, so a run stopped early keeps what it
measured. Re-run only some sections with e.g. ``--sections parity kernels --budget 200``.

Sections (one module each; a failing section records its error text and the next one runs):

1. ``parity`` (parity.py): the triton backend vs the reference oracle (evaluated in float64 on the
   same, already-rounded inputs) and vs the torch backend, forward and every gradient, for 2D and 3D
   route sets, odd lengths, K = 1, 2, 4, 6, 8, D per route and shared across routes, z gate on
   and off; fp32 inputs (max relative error <= 1e-4) and bf16 activations with fp32 parameters
   (<= 1e-2). Relative error = max |x - ref| / max |ref|. Also which backend ``auto`` resolves
   to and whether the triton self-test (run once per device before ``auto`` trusts triton)
   passed. On CPU the triton kernels run in the Triton interpreter (TRITON_INTERPRET=1 is set
   before anything imports triton).
2. ``kernels`` (kernel_speed.py): forward and forward+backward time of 2D 64x64 x 4 routes and 3D
   64^3 x 6 routes (batch 2, channels 96, N 16, bf16 activations), triton vs torch backend, CUDA
   events after a warm-up, against the roofline floor (bytes and exp2/FP32 ops per lane-step) for
   this device (see ``DEVICE_LIMITS``); peak memory above the inputs of the fused-gather scan vs an
   unfused baseline that first materialises the K permuted copies (as a separate cross-scan would).
3. ``networks`` (networks.py): every registered network, 2D 256^2 and 3D 128^3 (96^3 when 128^3
   runs out of memory; recorded), batch 2, the training step of ``medmamba train`` (``TrainStep``:
   autocast bf16 on CUDA, deep-supervision Dice+CE, GradScaler, clipping, the non-finite guard; SGD
   as nnU-Net), topology as the planner builds it for that patch: seconds per step, peak memory
   (``torch.cuda.max_memory_allocated``), skipped (non-finite) steps, and peak / the planner's
   memory-model prediction (medmamba/plans/memory_model.py; fitted on CPU in fp32, so the ratio
   is what the planner's GPU target gets wrong under AMP). The default 3D network at 128^3 batch
   2 is compared with nnU-Net's 8 GB planning target.
4. ``training`` (training.py): ``medmamba make_demo_dataset / plan_and_preprocess / train /
   predict / evaluate`` in subprocesses (the whole CLI path): 300 iterations on CUDA with AMP (30
   epochs x 10), then a short run of the same plan on the CPU for the iterations-per-second ratio.
   Needs nibabel, SimpleITK and monai (installed with medmamba); without them the section is
   recorded as skipped with the reason.
5. ``ddp`` (ddp.py): the number of GPUs; with one GPU, NCCL multi-GPU training stays untested.

Sections 1-3 and 5 need only torch and triton (``SECTION_MODULES`` lists what they import;
tests/test_gpu_check.py checks that). Time: ``--budget`` seconds in all (default 450 on CUDA);
each section has a share of it (unused time carries over) and records what it cut. The command
exits non-zero only when it cannot write its JSON (or when CUDA is asked for and absent).
"""
import sys
from pathlib import Path

# the shared benchmark helpers (bench_helpers.py) live in the folder above, which the other
# benchmark scripts put on sys.path the same way
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from .kernel_speed import DEVICE_LIMITS, roofline_floor  # noqa: E402
from .run import main  # noqa: E402
from .settings import SECTION_MODULES  # noqa: E402

__all__ = ["DEVICE_LIMITS", "SECTION_MODULES", "main", "roofline_floor"]
