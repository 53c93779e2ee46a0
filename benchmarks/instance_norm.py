"""Instance norm on CPU: torch's ``nn.InstanceNorm`` vs ours (``F.group_norm``, one group per channel).

Two measurements, interleaved repeats in one process, medians:
* the op alone at U-Mamba Bot's / plain_unet's full-resolution 2D feature (4, 32, 112, 128),
  forward and forward+backward;
* the whole network (U-Mamba Bot and plain_unet, the lobes 2D plan's topology: 5 stages, 32…512
  features, patch 112×128): train step (AdamW, batch 2) and predict (4 tiles, no_grad), with the
  same weights, switching only the class of every instance-norm module.
Writes ``benchmarks/results/instance_norm_cpu_<N>threads.{json,png}``.

    OMP_NUM_THREADS=1 python benchmarks/instance_norm.py --threads 1
"""
from __future__ import annotations

import sys
from datetime import datetime, timezone
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_helpers import machine_info  # noqa: E402
from kernels import interleaved_medians, save_figure, threads_and_repeats  # noqa: E402

from medmamba.atomic import atomic_write_json  # noqa: E402
from medmamba.networks.blocks.conv import InstanceNorm2d  # noqa: E402
from medmamba.networks.registry import build_network  # noqa: E402

# the lobes benchmark's 2D plan (benchmarks/results/budget_mri_20261129.json "prepared")
TOPOLOGY = dict(spatial_dims=2, in_channels=1, num_classes=9, deep_supervision=True, n_stages=5,
                features_per_stage=[32, 64, 128, 256, 512], kernel_sizes=[[3, 3]] * 5,
                strides=[[1, 1]] + [[2, 2]] * 4)
PATCH = (112, 128)


def op_rows(repeats: int) -> list[dict]:
    x = torch.randn(4, 32, *PATCH)
    weight, bias = torch.randn(32), torch.randn(32)
    xg = x.clone().requires_grad_(True)
    ours, theirs = InstanceNorm2d(32, affine=True), nn.InstanceNorm2d(32, affine=True)
    with torch.no_grad():
        for m in (ours, theirs):
            m.weight.copy_(weight)
            m.bias.copy_(bias)
    rows = []
    with torch.no_grad():
        med = interleaved_medians({"ours": lambda: ours(x), "torch": lambda: theirs(x)}, repeats)
    rows.append({"what": "op forward (4, 32, 112, 128)", "ours_s": med["ours"], "torch_s": med["torch"]})
    med = interleaved_medians({"ours": lambda: ours(xg).sum().backward(), "torch": lambda: theirs(xg).sum().backward()},
                       repeats)
    rows.append({"what": "op forward+backward (4, 32, 112, 128)", "ours_s": med["ours"], "torch_s": med["torch"]})
    return rows


def network_rows(repeats: int) -> list[dict]:
    rows = []
    for name in ("umamba_bot", "plain_unet"):
        torch.manual_seed(0)
        net = build_network(name, **TOPOLOGY)
        norms = [m for m in net.modules() if isinstance(m, InstanceNorm2d)]
        opt = torch.optim.AdamW(net.parameters(), 1e-4)
        x, y = torch.randn(2, 1, *PATCH), torch.randint(0, 9, (2, *PATCH))
        tiles = torch.randn(4, 1, *PATCH)

        def use(cls, fn):
            def run():
                for m in norms:
                    m.__class__ = cls
                fn()
            return run

        def train():
            net.train()
            out = net(x)
            loss = F.cross_entropy(out[0] if isinstance(out, (list, tuple)) else out, y)
            opt.zero_grad()
            loss.backward()
            opt.step()

        def predict():
            net.eval()
            with torch.no_grad():
                net(tiles)

        for mode, fn in (("train step", train), ("predict", predict)):
            med = interleaved_medians({"ours": use(InstanceNorm2d, fn), "torch": use(nn.InstanceNorm2d, fn)}, repeats)
            rows.append({"what": f"{name} {mode}", "ours_s": med["ours"], "torch_s": med["torch"]})
        for m in norms:
            m.__class__ = InstanceNorm2d
    return rows


def main(argv=None) -> int:
    args = threads_and_repeats(__doc__, argv)
    rows = op_rows(args.repeats) + network_rows(max(1, args.repeats // 2))
    for r in rows:
        r["ours_over_torch"] = r["ours_s"] / r["torch_s"]
        print(f"{r['what']:<40} ours {r['ours_s'] * 1e3:9.2f} ms  torch {r['torch_s'] * 1e3:9.2f} ms  "
              f"ratio {r['ours_over_torch']:.3f}")
    report = {"created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "command": "benchmarks/instance_norm.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "machine": machine_info(torch.device("cpu")),
              "method": (f"interleaved repeats (ours, torch) in one process, medians; {args.threads} torch "
                         "thread(s), float32; networks: same weights, only the norm modules' class switched"),
              "rows": rows}
    args.out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"instance_norm_cpu_{args.threads}threads"
    atomic_write_json(args.out_dir / f"{stem}.json", report)
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.5))
    bars = ax.barh([r["what"] for r in rows], [r["ours_over_torch"] for r in rows])
    ax.bar_label(bars, fmt="%.2f", fontsize=7)
    ax.axvline(1.0, color="grey", lw=0.8)
    ax.set_xlabel("time with group_norm / time with torch's instance_norm")
    ax.tick_params(axis="y", labelsize=7)
    ax.set_title(f"InstanceNorm on F.group_norm, {args.threads} thread(s)", fontsize=9)
    save_figure(fig, args.out_dir / f"{stem}.png", report["machine"])
    print(f"wrote {args.out_dir / (stem + '.json')} and .png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
