"""Exported models and scoring: ``pseudolabel predict`` and the Python API.

>>> from pseudolabel import EyeStateClassifier
>>> clf = EyeStateClassifier.load("runs/eyes")          # a run, its final/ folder, or a model.ts
>>> clf.predict("/full/path/to/eye.jpg")                # P(open) in [0, 1]
"""
from __future__ import annotations

import glob
import json
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from .config import Config
from .data import IMAGE_EXTS, load_image


class _Exported(nn.Module):
    """(N, C, H, W) float in [0, 1] -> (N, 2) softmax probabilities, column 1 = P(open)."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.module(x)
        return (out[1] if isinstance(out, (tuple, list)) else out).softmax(1)


def export_model(module: nn.Module, cfg: Config, out: Path) -> None:
    """Write model.ts (TorchScript), model.onnx and preprocess.json into ``out``."""
    import warnings

    net = _Exported(module).eval()
    x = torch.rand(2, cfg.channels, cfg.image_size, cfg.image_size)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.jit.trace(net, x).save(str(out / "model.ts"))
        torch.onnx.export(net, x, str(out / "model.onnx"), input_names=["images"], output_names=["probs"],
                          dynamic_axes={"images": {0: "n"}, "probs": {0: "n"}}, opset_version=17, dynamo=False)  # fmt: skip
    pre = {
        "image_size": cfg.image_size, "channels": cfg.channels, "classes": list(cfg.classes),
        "steps": [f"decode, convert to {'grayscale (L)' if cfg.channels == 1 else 'RGB'}",
                  f"resize to {cfg.image_size}x{cfg.image_size}, bilinear", "float32, divide by 255 (range [0, 1])",
                  "layout (N, C, H, W)"],
        "input": "images: (N, C, H, W) float32", "output": "probs: (N, 2) softmax; column 1 = P(open), label 1",
    }  # fmt: skip
    (out / "preprocess.json").write_text(json.dumps(pre, indent=2))


def _model_dir(path: str | Path) -> Path:
    p = Path(path)
    for cand in (p, p / "final"):
        if (cand / "model.ts").is_file() and (cand / "preprocess.json").is_file():
            return cand
    if p.suffix == ".ts" and p.is_file() and (p.parent / "preprocess.json").is_file():
        return p.parent
    raise ValueError(f"no exported model at {p} (expected model.ts and preprocess.json; run `pseudolabel retrain`)")


class EyeStateClassifier:
    """An exported final model. ``predict(path) -> float``: a full image path in, P(open) out."""

    def __init__(self, model: torch.jit.ScriptModule, preprocess: dict):
        self.model, self.pre = model.eval(), preprocess
        self.size, self.channels = int(preprocess["image_size"]), int(preprocess["channels"])

    @classmethod
    def load(cls, path: str | Path) -> EyeStateClassifier:
        """From a run folder, its ``final/`` folder, or a ``model.ts`` file."""
        import warnings

        d = _model_dir(path)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load's deprecation notice
            model = torch.jit.load(str(d / "model.ts"), map_location="cpu")
        return cls(model, json.loads((d / "preprocess.json").read_text()))

    def load_images(self, paths: list[str | Path]) -> np.ndarray:
        """(N, C, H, W) uint8, preprocessed as in training."""
        return np.stack([load_image(Path(p), self.size, self.channels) for p in paths])

    @torch.inference_mode()
    def predict_array(self, images: np.ndarray, batch_size: int = 512) -> np.ndarray:
        """(N, C, H, W) uint8 -> (N,) P(open)."""
        x = torch.from_numpy(images).float() / 255
        return torch.cat([self.model(x[i : i + batch_size])[:, 1] for i in range(0, len(x), batch_size)]).numpy()

    def predict(self, path: str | Path) -> float:
        """P(open) in [0, 1] for one image file."""
        return float(self.predict_array(self.load_images([path]))[0])

    def predict_many(self, paths: list[str | Path]) -> np.ndarray:
        return self.predict_array(self.load_images(paths))


def collect_paths(specs: list[str]) -> tuple[list[Path], list[str]]:
    """Files, folders (recursive) and globs -> (image paths, one-line problems)."""
    paths, problems = [], []
    for spec in specs:
        matches = [Path(m) for m in sorted(glob.glob(spec, recursive=True))] or ([Path(spec)] if os.path.exists(spec) else [])
        if not matches:
            problems.append(f"{spec}: no such file, folder or match")
        for m in matches:
            if m.is_dir():
                paths += sorted(p for p in m.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTS)
            elif m.suffix.lower() in IMAGE_EXTS:
                paths.append(m)
            else:
                problems.append(f"{m}: not an image file (.jpg, .jpeg, .png, .bmp, .webp); skipped")
    return paths, problems


def show(paths: list[Path], scores: np.ndarray, out_dir: Path, threshold: float) -> None:
    """Save each image, upscaled, with its score in the title, as out_dir/<name>.score.png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    out_dir.mkdir(parents=True, exist_ok=True)
    for p, s in zip(paths, scores):
        fig, ax = plt.subplots(figsize=(2.6, 2.9), dpi=100)
        ax.imshow(Image.open(p).convert("L"), cmap="gray", interpolation="nearest")
        ax.set_title(f"P(open) = {s:.3f}\n{'open' if s >= threshold else 'closed'}", fontsize=9)
        ax.axis("off")
        fig.savefig(out_dir / f"{p.stem}.score.png", bbox_inches="tight")
        plt.close(fig)
