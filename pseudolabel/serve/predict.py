"""Exported models and scoring: ``pseudolabel predict`` and the Python API.

>>> from pseudolabel import Classifier
>>> clf = Classifier.load("runs/cifar10")              # a run, its final/ folder, or a model.ts
>>> clf.predict("/full/path/to/image.jpg")             # "cat": the top class's name
>>> clf.predict_proba("/full/path/to/image.jpg")       # {"airplane": 0.01, ..., "truck": 0.02}
>>> clf.predict_array(images)                          # (N, C, H, W) uint8 -> (N, K) probabilities

``EyeStateClassifier`` is the two-class convenience: ``predict(path) -> P(class 1)``, for the eyes P(open).
"""
from __future__ import annotations

import copy
import glob
import io
import json
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from pseudolabel.config.schema import Config
from pseudolabel.core.device import current
from pseudolabel.data.images import IMAGE_EXTS, one_line
from pseudolabel.data.stream import batches
from pseudolabel.serve import onnx as onnx_scoring
from pseudolabel.serve.onnx import BATCH


class _Exported(nn.Module):
    """(N, C, H, W) float in [0, 1] -> (N, K) softmax probabilities, column k = P(classes[k])."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.module(x)
        return (out[1] if isinstance(out, (tuple, list)) else out).softmax(1)


def export_model(module: nn.Module, cfg: Config, out: Path) -> None:
    """Write model.ts (TorchScript), model.onnx and preprocess.json into ``out``."""
    import warnings

    net = _Exported(copy.deepcopy(module).cpu()).eval()  # saved from the CPU: the files load on any device
    h, w = cfg.hw
    x = torch.rand(2, cfg.channels, h, w)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        # into memory, then written by Python: torch's own file writer aborts the process when a write fails
        # (a full disk, a file-size limit) instead of raising
        ts, onnx = io.BytesIO(), io.BytesIO()
        torch.jit.save(torch.jit.trace(net, x), ts)
        torch.onnx.export(net, x, onnx, input_names=["images"], output_names=["probs"],
                          dynamic_axes={"images": {0: "n"}, "probs": {0: "n"}}, opset_version=17, dynamo=False)  # fmt: skip
    (out / "model.ts").write_bytes(ts.getvalue())
    (out / "model.onnx").write_bytes(onnx.getvalue())
    from pseudolabel.config.schema import norm_stats

    norm = norm_stats(cfg)
    pre = {
        "batch": _batch_for(net, x),
        "image_size": [h, w], "channels": cfg.channels, "classes": list(cfg.classes), "folders": list(cfg.folders),
        "mean": list(norm[0]) if norm else None, "std": list(norm[1]) if norm else None,
        "steps": [f"decode, convert to {'grayscale (L)' if cfg.channels == 1 else 'RGB'}",
                  f"resize to {w}x{h} (width x height), bilinear", "float32, divide by 255 (range [0, 1])",
                  "layout (N, C, H, W)",
                  "the model subtracts mean and divides by std per channel itself" if norm else "no normalisation"],
        "input": "images: (N, C, H, W) float32",
        "output": f"probs: (N, {cfg.num_classes}) softmax; column k = P(classes[k])",
    }  # fmt: skip
    (out / "preprocess.json").write_text(json.dumps(pre, indent=2))


PICKLES = (".pt", ".pth", ".pkl", ".pickle", ".bin", ".ckpt")  # files predict never unpickles: they can run code


def _batch_for(net: nn.Module, x: torch.Tensor) -> int:
    """Images per scoring pass: :data:`BATCH` for a network that sees images at about their own size; fewer in
    proportion when it upsamples them first (a pretrained encoder at 224 px: ONNX Runtime's memory grows with
    batch x inner pixels, 21 GB for 256 CIFAR images at 224 px)."""
    seen: list[int] = []
    conv = next((m for m in net.modules() if isinstance(m, nn.Conv2d)), None)
    if conv is None:
        return BATCH
    hook = conv.register_forward_pre_hook(lambda _m, args: seen.append(int(args[0].shape[-2] * args[0].shape[-1])))
    try:
        with torch.no_grad():
            net(x[:1])
    finally:
        hook.remove()
    return max(8, min(BATCH, BATCH * 64 * 64 // max(seen[0], 1))) if seen else BATCH


def _model_dir(path: str | Path) -> Path:
    p = Path(path)
    if p.suffix.lower() in PICKLES and not p.is_dir():
        raise ValueError(f"{p}: predict never loads a pickled {p.suffix} file (a pickle can run code); give a run "
                         "folder, its final/ folder or its model.ts (TorchScript), as `pseudolabel retrain` writes")
    for cand in (p, p / "final"):
        if (cand / "model.ts").is_file() and (cand / "preprocess.json").is_file():
            return cand
    if p.suffix == ".ts" and p.is_file() and (p.parent / "preprocess.json").is_file():
        return p.parent
    raise ValueError(f"no exported model at {p} (expected model.ts and preprocess.json; run `pseudolabel retrain`)")


def _why(exc: BaseException) -> str:
    return one_line(f"{exc.__class__.__name__}: {exc}", 160)


BACKENDS = ("auto", "torchscript", "onnx")  # auto: ONNX Runtime on the CPU when model.onnx is there, else TorchScript


class Classifier:
    """An exported final model over K classes: a full image path in, its class out.

    ``onnx`` (model.onnx's bytes) and ``backend``: on the CPU, ``auto`` scores with ONNX Runtime,
    about 1.7x TorchScript's speed for the small networks `retrain` exports; on a GPU, and with
    ``torchscript``, the TorchScript module runs on the device."""

    def __init__(self, model: torch.jit.ScriptModule, preprocess: dict, onnx: bytes | None = None,
                 backend: str = "auto"):
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        if backend == "onnx" and onnx is None:
            raise ValueError("backend onnx needs model.onnx beside model.ts")
        self.model, self.pre, self.onnx, self.backend = model.eval(), preprocess, onnx, backend
        size = preprocess["image_size"]
        self.hw = (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))
        self.size = self.hw[0]
        self.channels = int(preprocess["channels"])
        self.batch = int(preprocess.get("batch") or BATCH)  # images per pass; small when the network upsamples
        self.classes: list[str] = list(preprocess["classes"])
        self.file: Path | None = None  # the model.ts it was loaded from (the Ray engine ships its bytes)
        self._session = None

    @classmethod
    def load(cls, path: str | Path, backend: str = "auto"):
        """From a run folder, its ``final/`` folder, or a ``model.ts`` file."""
        import warnings

        d = _model_dir(path)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load's deprecation notice
            try:
                model = torch.jit.load(str(d / "model.ts"), map_location="cpu")
            except Exception as exc:  # noqa: BLE001 -- a damaged or foreign file: one line naming it
                raise ValueError(f"{d / 'model.ts'}: not a readable TorchScript model ({_why(exc)}); run "
                                 "`pseudolabel retrain` again") from None
        onnx = (d / "model.onnx").read_bytes() if (d / "model.onnx").is_file() and backend != "torchscript" else None
        try:
            pre = json.loads((d / "preprocess.json").read_text())
            clf = cls(model, pre, onnx, backend)
        except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
            raise ValueError(f"{d / 'preprocess.json'}: not a readable preprocess record ({_why(exc)})") from None
        clf.file = d / "model.ts"
        return clf

    def load_images(self, paths: list[str | Path]) -> np.ndarray:
        """(N, C, H, W) uint8, preprocessed as in training."""
        from pseudolabel.data.cache import decoder, read_file

        decode = decoder(self.hw, self.channels)
        return np.stack([decode(os.fspath(p), read_file(p)) for p in paths])

    def session(self, device):
        """The ONNX Runtime session to score with on ``device``, or None for TorchScript."""
        if self.onnx is None or self.backend == "torchscript" or (device.type != "cpu" and self.backend == "auto"):
            return None
        if self._session is None:
            try:
                self._session = onnx_scoring.session(self.onnx, torch.get_num_threads())  # as torch would use
            except Exception as exc:  # noqa: BLE001 -- ONNX Runtime's own exceptions: a damaged file
                where = self.file.with_name("model.onnx") if self.file is not None else "model.onnx"
                raise ValueError(f"{where}: not a readable ONNX model ({_why(exc)}); run `pseudolabel retrain` "
                                 "again, or score with --backend torchscript") from None
        return self._session

    @torch.inference_mode()
    def probs_array(self, images: np.ndarray, batch_size: int | None = None) -> np.ndarray:
        """(N, C, H, W) uint8 -> (N, K) probabilities, column k = P(classes[k]). ``batch_size``: images per
        pass (None: what export chose for the network's inner size, see :func:`export_model`)."""
        batch_size = batch_size or self.batch
        device = current()  # the model file is device-free; it runs where this process runs
        session = self.session(device)
        if session is not None:  # made float by numpy: torch's threads would contend with ONNX Runtime's
            return onnx_scoring.probs(session, images, len(self.classes), batch_size)
        model = self.model.to(device.torch)
        out, at = np.zeros((len(images), len(self.classes)), np.float32), 0  # filled in place, batch by batch
        for x in batches(images, batch_size, device=device):  # uint8 until the device
            out[at : at + len(x)] = model(x).float().cpu()
            at += len(x)
        return out

    def predict_array(self, images: np.ndarray, batch_size: int | None = None) -> np.ndarray:
        """(N, C, H, W) uint8 -> (N, K) probabilities."""
        return self.probs_array(images, batch_size)

    def score_files(self, paths: list[Path], chunk: int = 4096, batch_size: int | None = None, warn=None,
                    cache: Path | None = None):
        """Yield (readable paths, (n, K) probabilities) a chunk of ``chunk`` files at a time: memory stays
        that of one chunk, whatever the number of files. Unreadable files go to ``warn`` (one line) and are
        skipped. With ``cache``, the files are decoded once into the pool cache and scored from it (on Ray
        Data actors instead: :func:`pseudolabel.engines.ray.score_classifier`)."""
        if cache is not None:
            from pseudolabel.data.cache import decode_cached, decoder

            files = [(os.fspath(p), p) for p in paths]
            images, meta = decode_cached(files, self.hw, self.channels, cache, decoder(self.hw, self.channels), False)
            given = dict(files)  # the kept paths go back as the caller gave them (str or Path)
            for name, reason in meta["skipped"]:
                if warn is not None:
                    warn(f"{name}: cannot read image ({reason.split(':')[0]}); skipped")
            probs, kept = self.probs_array(images, batch_size), [given[n] for n in meta["names"]]
            for i in range(0, len(kept), chunk):
                yield kept[i : i + chunk], probs[i : i + chunk]
            return
        from pseudolabel.data.cache import decoder, read_file

        decode = decoder(self.hw, self.channels)
        for i in range(0, len(paths), chunk):
            good, arrays = [], []
            for p in paths[i : i + chunk]:
                try:
                    arrays.append(decode(os.fspath(p), read_file(p)))
                    good.append(p)
                except Exception as exc:  # noqa: BLE001 -- any decoder fault: a bad file, skipped
                    if warn is not None:
                        warn(f"{p}: cannot read image ({exc.__class__.__name__}); skipped")
            if good:
                yield good, self.probs_array(np.stack(arrays), batch_size)

    def predict_proba(self, path: str | Path) -> dict[str, float]:
        """{class name: probability} for one image file."""
        return {c: float(p) for c, p in zip(self.classes, self.probs_array(self.load_images([path]))[0])}

    def predict(self, path: str | Path) -> str:
        """The top class's name for one image file."""
        from pseudolabel.core.vote import top_class

        return self.classes[int(top_class(self.probs_array(self.load_images([path])))[0])]


class EyeStateClassifier(Classifier):
    """A two-class exported model. ``predict(path) -> float``: a full image path in, P(class 1) out
    (for the eyes, P(open)); ``predict_array`` gives (N,) P(class 1)."""

    def __init__(self, model: torch.jit.ScriptModule, preprocess: dict, onnx: bytes | None = None,
                 backend: str = "auto"):
        super().__init__(model, preprocess, onnx, backend)
        if len(self.classes) != 2:
            raise ValueError(f"EyeStateClassifier needs a two-class model, this one has {len(self.classes)} classes "
                             f"({', '.join(self.classes)}); use Classifier")  # fmt: skip

    def predict_array(self, images: np.ndarray, batch_size: int | None = None) -> np.ndarray:
        """(N, C, H, W) uint8 -> (N,) P(class 1)."""
        return self.probs_array(images, batch_size)[:, 1]

    def predict(self, path: str | Path) -> float:  # type: ignore[override]
        """P(class 1) in [0, 1] for one image file."""
        return float(self.predict_array(self.load_images([path]))[0])

    def predict_many(self, paths: list[str | Path]) -> np.ndarray:
        return self.predict_array(self.load_images(paths))


def collect_paths(specs: list[str]) -> tuple[list[str], list[str]]:
    """Files, folders (recursive, symlinked folders not followed) and globs -> (image paths, one-line
    problems). Paths stay strings: a million Path objects would cost far more memory and time."""
    paths, problems = [], []
    for spec in specs:
        matches = [str(Path(m)) for m in sorted(glob.glob(spec, recursive=True))] or \
            ([str(Path(spec))] if os.path.exists(spec) else [])  # fmt: skip
        if not matches:
            problems.append(f"{spec}: no such file, folder or match")
        for m in matches:
            if os.path.isdir(m):
                paths += _images_below(m)
            elif os.path.splitext(m)[1].lower() in IMAGE_EXTS:
                paths.append(m)
            else:
                problems.append(f"{m}: not an image file (.jpg, .jpeg, .png, .bmp, .webp); skipped")
    return paths, problems


def _images_below(folder: str) -> list[str]:
    """Image files below ``folder`` in the order Path sorting gives (component by component), each
    folder's entries sorted by name; symlinked folders are not followed."""
    out, entries = [], sorted(os.scandir(folder), key=lambda e: e.name)
    for e in entries:
        if e.is_dir(follow_symlinks=False):
            out += _images_below(e.path)
        elif not e.is_dir() and os.path.splitext(e.name)[1].lower() in IMAGE_EXTS:
            out.append(e.path)
    return out


def csv_rows(paths: list, labels: list[str], scores: np.ndarray, probs: np.ndarray) -> str:
    """predict's CSV lines, "image,label,score,p_<class>..." each, numbers with six decimals as
    ``"%.6f"`` writes them. (N,) scores and (N, K) probabilities that are float32, finite and not
    negative (as scoring gives) are formatted by numpy's string functions: 0.4 s for 400 k rows where
    a format per row takes 0.9 s; any other numbers take the per-row format."""
    numbers = [np.asarray(scores)] + [np.asarray(probs)[:, j] for j in range(np.shape(probs)[1])]
    fields = {lab: _csv_field(lab) for lab in set(labels)}
    if not len(paths) or not all(_fixed6_exact(x) for x in numbers):
        row = "%s,%s,%.6f" + ",%.6f" * np.shape(probs)[1] + "\n"
        rows = zip(paths, labels, np.asarray(scores).tolist(), np.asarray(probs).tolist())
        return "".join(row % (_csv_field(str(p)), fields[lab], s, *ps) for p, lab, s, ps in rows)
    text = np.array(list(map(str, paths)), dtype=np.dtypes.StringDType())
    special = np.zeros(len(text), bool)
    for c in ',"\r\n':
        special |= np.strings.find(text, c) >= 0
    for j in np.flatnonzero(special).tolist():  # the few names that need quotes, quoted one by one
        text[j] = _csv_field(str(text[j]))
    for col in [np.array([fields[lab] for lab in labels], dtype=text.dtype)] + [_fixed6(x) for x in numbers]:
        text = np.strings.add(np.strings.add(text, ","), col)
    return "\n".join(text.tolist()) + "\n"


def _fixed6_exact(x: np.ndarray) -> bool:
    """Whether :func:`_fixed6` writes ``x`` exactly as "%.6f" does: float32 (times 1e6 it is exact in
    float64, so rounding it to an integer rounds as "%.6f" does), finite, no sign bit."""
    return x.dtype == np.float32 and bool(np.isfinite(x).all()) and not np.signbit(x).any() and bool((x < 1e12).all())


def _fixed6(x: np.ndarray) -> np.ndarray:
    """(N,) float32 -> (N,) numpy strings with six decimals, e.g. 0.5 -> "0.500000"."""
    v = np.rint(x.astype(np.float64) * 1e6).astype(np.int64)
    text = np.dtypes.StringDType()
    whole = np.strings.add((v // 1_000_000).astype(text), ".")
    return np.strings.add(whole, np.strings.zfill((v % 1_000_000).astype(text), 6))


def _csv_field(text: str) -> str:
    """A CSV field, quoted when it holds a comma, a quote or a line break."""
    return '"' + text.replace('"', '""') + '"' if any(c in text for c in ',"\n\r') else text


def show(paths: list[str | Path], labels: list[str], scores: np.ndarray, out_dir: Path, what: str) -> None:
    """Save each image, upscaled, with its label and score in the title, as out_dir/<name>.score.png.
    ``what`` names the score, e.g. "P(open)" or "top probability"."""
    from PIL import Image

    from pseudolabel.core.home import pyplot

    plt = pyplot()

    out_dir.mkdir(parents=True, exist_ok=True)
    for p, label, s in zip(paths, labels, scores):
        fig, ax = plt.subplots(figsize=(2.6, 2.9), dpi=100)
        with Image.open(p) as im:
            gray = im.mode in ("L", "1", "I;16", "I")
            ax.imshow(im.convert("L" if gray else "RGB"), cmap="gray" if gray else None, interpolation="nearest")
        ax.set_title(f"{what} = {s:.3f}\n{label}", fontsize=9)
        ax.axis("off")
        with _exclusive(out_dir, Path(p)) as f:  # a new file per image: never onto an existing name
            fig.savefig(f, format="png", bbox_inches="tight")
        plt.close(fig)


def _exclusive(out_dir: Path, image: Path):
    """A new file ``<stem>.score.png`` in ``out_dir`` opened for writing, created exclusively; when that name
    is taken (a file of yours, or another image with the same stem) ``<stem>~<hash of its path>[-n].score.png``."""
    import hashlib

    tag = hashlib.sha1(os.fsencode(os.path.abspath(image))).hexdigest()[:8]
    for n in range(1000):
        name = f"{image.stem}.score.png" if n == 0 else f"{image.stem}~{tag}{'' if n == 1 else f'-{n}'}.score.png"
        try:
            return os.fdopen(os.open(out_dir / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644), "wb")
        except FileExistsError:
            continue
    raise ValueError(f"{out_dir}: no free name for {image.name}'s picture")
