"""Pretrained-network speed on this machine: seconds per 1,000 images for the frozen embedding pass and
for fine-tuning (forward, backward and an SGD step on batches of 32), for each seed model at each input
size. The weights do not change the arithmetic, so none are needed: the networks are built as
`pretrained:` builds them (resized input, the weights' normalisation), randomly initialised.

    python benchmarks/pretrained.py                      # resnet50 and yolov8n-cls at 32 ... 224 px
    python benchmarks/pretrained.py --sizes 112 --models resnet50 --images 512
    python benchmarks/pretrained.py --cifar              # CIFAR-10 `run` + `retrain` wall time, pretrained

``--cifar`` times the whole CIFAR-10 pipeline with `pretrained: imagenet` (both seed models and the final
model frozen, as pipelines/cifar10.yaml shows), served from fabricated weights in a private HF_HOME and
ultralytics weights folder (random tensors: the point is the time, not the accuracy).

Prints a table and writes benchmarks/results/pretrained.json.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pseudolabel.core import device as devices  # noqa: E402
from pseudolabel.models.backbones import create_backbone  # noqa: E402
from pseudolabel.train.probe import embed  # noqa: E402


def build(name: str, px: int, channels: int = 3, k: int = 10) -> torch.nn.Module:
    arch = {"resnet50": ("resnet50", None), "yolov8n-cls": ("yolov8-cls", "n")}.get(name, (name, None))
    return create_backbone(arch[0], num_classes=k, in_chans=channels, image_size=32, input_size=px,
                           variant=arch[1] or "n", norm=((0.5,) * channels, (0.25,) * channels))  # fmt: skip


def embed_seconds(net: torch.nn.Module, x: np.ndarray) -> float:
    embed(net, x[:32])  # warm
    t = time.perf_counter()
    embed(net, x, batch_size=128)
    return (time.perf_counter() - t) / len(x) * 1000


def step_seconds(net: torch.nn.Module, x: np.ndarray, steps: int, batch: int = 32) -> float:
    dev = devices.current()
    net.to(dev.torch).train()
    opt = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9)
    xb = torch.from_numpy(x[:batch]).float().div(255).to(dev.torch)
    yb = torch.zeros(batch, dtype=torch.long, device=dev.torch)

    def one() -> None:
        out = net(xb)
        loss = torch.nn.functional.cross_entropy(out[1] if isinstance(out, tuple) else out, yb)
        opt.zero_grad()
        loss.backward()
        opt.step()

    one()  # warm
    t = time.perf_counter()
    for _ in range(steps):
        one()
    return (time.perf_counter() - t) / steps / batch * 1000


def cifar_times(out: Path) -> dict:
    """Wall seconds of `pseudolabel run` and `retrain` on CIFAR-10 with ImageNet weights (fabricated), frozen."""
    import os
    import subprocess
    import tempfile

    from tests.conftest import fabricate_timm, fabricate_yolo

    home = Path(tempfile.mkdtemp(prefix="pseudolabel-weights-"))
    fabricate_timm(home / "hf", "resnet50", "a1_in1k")
    fabricate_yolo(home / "xdg" / "pseudolabel" / "ultralytics" / "weights")
    env = {**os.environ, "HF_HOME": str(home / "hf"), "HF_HUB_OFFLINE": "1", "XDG_CACHE_HOME": str(home / "xdg"),
           "PSEUDOLABEL_OFFLINE": "1", "PSEUDOLABEL_CACHE": str(home / "pools")}  # a cold pool and embedding cache
    cmd = [sys.executable, "-m", "pseudolabel.cli"]
    times = {}
    for name, args in (("run", ["run", "cifar10", "--pretrained", "imagenet", "--train", "frozen", "--out", str(out),
                                "--overwrite", "--quiet"]),
                       ("retrain", ["retrain", str(out), "--backbone", "resnet50", "--pretrained", "imagenet",
                                    "--train", "frozen", "--overwrite", "--quiet"])):  # fmt: skip
        t = time.perf_counter()
        subprocess.run(cmd + args, cwd=ROOT, env=env, check=True)
        times[name] = round(time.perf_counter() - t, 1)
        print(f"{name}: {times[name]:.0f} s", flush=True)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["resnet50", "yolov8n-cls"])
    ap.add_argument("--sizes", nargs="+", type=int, default=[32, 64, 96, 112, 128, 160, 224])
    ap.add_argument("--images", type=int, default=256, help="images embedded per measurement")
    ap.add_argument("--steps", type=int, default=3, help="fine-tuning steps per measurement")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--cifar", action="store_true", help="time CIFAR-10 run + retrain with fabricated ImageNet weights")
    ap.add_argument("--out", type=Path, default=Path("/tmp/pseudolabel-cifar10-pretrained"), help="with --cifar: "
                    "the run folder")  # fmt: skip
    args = ap.parse_args()
    if args.cifar:
        times = cifar_times(args.out)
        out = ROOT / "benchmarks" / "results" / "pretrained_cifar10.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), **times}, indent=2))
        return
    dev = devices.use(args.device)
    x = np.random.default_rng(0).integers(0, 255, (args.images, 3, 32, 32), dtype=np.uint8)
    rows = []
    print(f"{'model':<14}{'px':>5}{'embed s/1k':>12}{'finetune s/1k':>15}   ({dev.torch}, {torch.get_num_threads()} "
          f"threads, {platform.processor() or platform.machine()})", flush=True)  # fmt: skip
    for name in args.models:
        for px in args.sizes:
            torch.manual_seed(0)
            net = build(name, px)
            e = embed_seconds(net, x)
            s = step_seconds(net, x, args.steps)
            rows.append({"model": name, "input_size": px, "embed_s_per_1000": round(e, 2),
                         "finetune_s_per_1000": round(s, 2)})  # fmt: skip
            print(f"{name:<14}{px:>5}{e:>12.2f}{s:>15.2f}", flush=True)
    out = ROOT / "benchmarks" / "results" / "pretrained.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "device": str(dev.torch),
                               "threads": torch.get_num_threads(), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
