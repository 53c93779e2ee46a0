"""Deformable sampling on CPU: the fused kernel (cpp_deform.cpp) vs its grid_sample reference.

At the shapes HRVMamba-Small's deformable SS2D runs on (its DCNv4 has d_inner = 2·C channels in
G = ceil(C/16) groups of 32, 3^d kernel points; 2D branches at 1/4…1/32 of a 128² input, 3D at
1/4…1/32 of 64³, batch 2), forward and forward+backward, interleaved repeats (torch, cpp, torch,
…) in one process, medians; the ratio is the number to compare. Writes
``benchmarks/results/deform_cpu_<N>threads.{json,png}``.

    OMP_NUM_THREADS=1 python benchmarks/deform.py --threads 1
"""
from __future__ import annotations

import functools
import itertools
import math
import sys
from datetime import datetime, timezone
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_helpers import machine_info  # noqa: E402
from kernels import interleaved_medians, save_figure, threads_and_repeats  # noqa: E402

from medmamba.atomic import atomic_write_json  # noqa: E402
from medmamba.kernels.deform_sampling import cpp_deform_status, deformable_sample  # noqa: E402

# HRVMamba-Small branch widths (hrvmamba.py SMALL_WIDTHS) at strides 4, 8, 16, 32
WIDTHS = (32, 64, 128, 256)
INPUT = {2: 128, 3: 64}


def shapes():
    for nd in (2, 3):
        for i, c in enumerate(WIDTHS):
            side = INPUT[nd] // (4 * 2 ** i)
            d_inner, groups = 2 * c, math.ceil(c / 16)
            yield nd, (side,) * nd, groups, d_inner // groups


def make(nd, spatial, groups, cg, seed=0):
    g = torch.Generator().manual_seed(seed)
    kernel = torch.tensor(list(itertools.product((-1, 0, 1), repeat=nd)), dtype=torch.float32)
    value = torch.randn(2, *spatial, groups, cg, generator=g)
    om = torch.randn(2, *spatial, groups, kernel.shape[0], nd + 1, generator=g) * 0.7
    return value, om, kernel


def run_once(backend, value, om, kernel, backward):
    v, o = value.detach().requires_grad_(backward), om.detach().requires_grad_(backward)
    with torch.set_grad_enabled(backward):
        out = deformable_sample(v, o, kernel, backend=backend)
        if backward:
            out.backward(torch.ones_like(out))


def main(argv=None) -> int:
    args = threads_and_repeats(__doc__, argv)
    reason = cpp_deform_status()
    if reason is not None:
        print(f"cpp deformable sampling unavailable: {reason}", file=sys.stderr)
        return 1
    rows = []
    for nd, spatial, groups, cg in shapes():
        inputs = make(nd, spatial, groups, cg)
        got, ref = (deformable_sample(*inputs, backend=b) for b in ("cpp", "torch"))
        agreement = float((got - ref).abs().max() / ref.abs().max())
        calls = {(b, "fwd+bwd" if backward else "fwd"): functools.partial(run_once, b, *inputs, backward)
                 for backward in (False, True) for b in ("torch", "cpp")}
        med = interleaved_medians(calls, args.repeats)
        row = {"dims": nd, "spatial": list(spatial), "batch": 2, "groups": groups, "channels_per_group": cg,
               "kernel_points": 3 ** nd, "max_rel_diff": agreement,
               "seconds": {f"{b} {m}": s for (b, m), s in med.items()},
               "speedup": {m: med[("torch", m)] / med[("cpp", m)] for m in ("fwd", "fwd+bwd")}}
        rows.append(row)
        print(f"{nd}D {'x'.join(map(str, spatial)):>8} G{groups} Cg{cg}: fwd {med[('torch', 'fwd')] * 1e3:7.2f} -> "
              f"{med[('cpp', 'fwd')] * 1e3:7.2f} ms ({row['speedup']['fwd']:.1f}x), fwd+bwd "
              f"{med[('torch', 'fwd+bwd')] * 1e3:7.2f} -> {med[('cpp', 'fwd+bwd')] * 1e3:7.2f} ms "
              f"({row['speedup']['fwd+bwd']:.1f}x), max rel diff {agreement:.1e}")
    report = {"created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "command": "benchmarks/deform.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "machine": machine_info(torch.device("cpu")),
              "method": (f"interleaved repeats (torch, cpp) x {args.repeats} in one process, medians, "
                         f"{args.threads} torch thread(s), float32; fwd+bwd = forward + backward of sum(out)"),
              "rows": rows}
    args.out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"deform_cpu_{args.threads}threads"
    atomic_write_json(args.out_dir / f"{stem}.json", report)
    plot(rows, args.out_dir / f"{stem}.png", report["machine"], args.threads)
    print(f"wrote {args.out_dir / (stem + '.json')} and .png")
    return 0


def plot(rows, path: Path, machine: dict, threads: int) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    labels = [f"{r['dims']}D {'x'.join(map(str, r['spatial']))}\nG{r['groups']}" for r in rows]
    for i, mode in enumerate(("fwd", "fwd+bwd")):
        bars = ax.bar([x + 0.4 * i for x in range(len(rows))], [r["speedup"][mode] for r in rows], width=0.4,
                      label=mode)
        ax.bar_label(bars, fmt="%.1f", fontsize=7)
    ax.axhline(1.0, color="grey", lw=0.8)
    ax.set_xticks([x + 0.2 for x in range(len(rows))], labels, fontsize=7)
    ax.set_ylabel("speed-up of the fused kernel over grid_sample")
    ax.set_title(f"HRVMamba-Small deformable sampling shapes, batch 2, {threads} thread(s)", fontsize=9)
    ax.legend()
    save_figure(fig, path, machine)


if __name__ == "__main__":
    sys.exit(main())
