"""Encoder files: an ``.onnx`` (ONNX Runtime) or ``.tflite`` (LiteRT) network used as a frozen feature extractor.

``pretrained: path/to/encoder.onnx`` (or ``.tflite``) with ``train: frozen`` makes that file the model's
encoder: every image is resized and laid out as the file's input signature says (size, NHWC or NCHW,
uint8 or float, a quantized input's scale and zero point), run through it, and its output (or the
intermediate tensor named by ``encoder_output``) is the (N, D) embedding, dequantized when quantized.
:class:`EncoderNet` wraps it as a torch module whose last linear layer is the head, so the frozen path
(embedding cache, scikit-learn head, label check, EDA) uses it like any pretrained network.

Preprocessing keys of a model section override what the signature implies: ``input_size`` (for a file
whose input size is dynamic; a fixed size is the file's),
``encoder_mean`` / ``encoder_std`` (float inputs; default ImageNet's), ``encoder_layout`` (NHWC or NCHW).
Every fault (no runtime, not an encoder, a wrong input rank, a tensor that does not exist) is one line.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

SUFFIXES = (".onnx", ".tflite")
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
LITERT = "pip install 'pseudolabel[tflite]' (LiteRT, ai-edge-litert)"


def is_encoder_file(spec: str) -> bool:
    return Path(str(spec)).suffix.lower() in SUFFIXES


@dataclass(frozen=True)
class Signature:
    """What an encoder file takes and gives: (height, width), layout NHWC or NCHW, input dtype name, the
    input's quantization (scale, zero point; (0, 0) when not quantized), mean and std of [0, 1] float
    inputs, and the embedding's length."""

    hw: tuple[int, int]
    layout: str
    dtype: str
    quant: tuple[float, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    dim: int

    def prepare(self, x: torch.Tensor) -> np.ndarray:
        """(n, 3, H, W) float in [0, 1] -> the file's input array."""
        if tuple(x.shape[-2:]) != self.hw:
            x = F.interpolate(x, size=self.hw, mode="bilinear", align_corners=False, antialias=True)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        a = x.clamp(0, 1).cpu().numpy()
        if self.dtype == "uint8":  # raw pixels (a quantized network's scale and zero point map them itself)
            a = np.rint(a * 255)
        else:
            m, s = np.array(self.mean, np.float32)[:, None, None], np.array(self.std, np.float32)[:, None, None]
            a = (a - m) / s
            if self.dtype == "int8" and self.quant[0]:
                a = np.clip(np.rint(a / self.quant[0] + self.quant[1]), -128, 127)
        a = a.astype({"uint8": np.uint8, "int8": np.int8}.get(self.dtype, np.float32))
        return np.ascontiguousarray(a.transpose(0, 2, 3, 1) if self.layout == "NHWC" else a)


def _fail(path: Path, why: str) -> ValueError:
    return ValueError(f"{path}: {why}")


class _Onnx:
    def __init__(self, path: Path, output: str, threads: int = 0):
        from pseudolabel.core.home import onnxruntime

        ort = onnxruntime()
        data = path.read_bytes()
        if output:
            data = _onnx_with_output(path, data, output)
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        try:
            self.sess = ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 -- ONNX Runtime's own errors: not an encoder
            raise _fail(path, f"not a readable ONNX model ({str(exc).splitlines()[0][:120]})") from None
        ins = self.sess.get_inputs()
        if len(ins) != 1:
            raise _fail(path, f"an encoder takes one input (images); this model takes {len(ins)}")
        self.input = ins[0]
        outs = [o.name for o in self.sess.get_outputs()]
        self.output = output or outs[0]
        self.shape = list(self.input.shape)
        self.dtype = {"tensor(uint8)": "uint8", "tensor(int8)": "int8"}.get(self.input.type, "float32")
        self.quant = (0.0, 0)
        self.fixed_batch = isinstance(self.shape[0], int) and self.shape[0] == 1

    def run(self, a: np.ndarray) -> np.ndarray:
        if self.fixed_batch and len(a) != 1:
            return np.concatenate([self.run(a[i : i + 1]) for i in range(len(a))])
        return np.asarray(self.sess.run([self.output], {self.input.name: a})[0], np.float32)


def _onnx_with_output(path: Path, data: bytes, output: str) -> bytes:
    """The model with the intermediate tensor ``output`` added to its graph outputs."""
    import onnx

    try:
        model = onnx.load_from_string(data)
    except Exception:  # noqa: BLE001
        raise _fail(path, "not a readable ONNX model") from None
    names = {o for n in model.graph.node for o in n.output}
    if output not in names:
        raise _fail(path, f"has no tensor named {output!r} (encoder_output)")
    if output not in {o.name for o in model.graph.output}:
        model.graph.output.append(onnx.helper.make_empty_tensor_value_info(output))
    return model.SerializeToString()


class _Lite:
    def __init__(self, path: Path, output: str, threads: int = 0):
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:
            raise _fail(path, f"a .tflite encoder needs LiteRT: {LITERT}") from None
        try:
            with _quiet():  # LiteRT's own "INFO: Created ... delegate" line and its debugging-option warning
                self.it = Interpreter(model_path=str(path), experimental_preserve_all_tensors=bool(output),
                                      num_threads=threads or None)  # fmt: skip
                self.it.allocate_tensors()
        except Exception as exc:  # noqa: BLE001 -- LiteRT raises ValueError and RuntimeError: not a model
            raise _fail(path, f"not a readable TensorFlow Lite model ({str(exc).splitlines()[0][:120]})") from None
        ins = self.it.get_input_details()
        if len(ins) != 1:
            raise _fail(path, f"an encoder takes one input (images); this model takes {len(ins)}")
        self.input = ins[0]
        if output:
            found = [t for t in self.it.get_tensor_details() if t["name"] == output]
            if not found:
                raise _fail(path, f"has no tensor named {output!r} (encoder_output)")
            self.out = found[0]
        else:
            self.out = self.it.get_output_details()[0]
        self.shape = [int(d) for d in self.input["shape"]]
        self.dtype = np.dtype(self.input["dtype"]).name
        scale, zero = self.input.get("quantization", (0.0, 0))
        self.quant = (float(scale), int(zero))
        self.first = True

    def run(self, a: np.ndarray) -> np.ndarray:
        rows = []
        for i in range(len(a)):  # the networks are built for one image at a time (1xHxWx3)
            self.it.set_tensor(self.input["index"], a[i : i + 1])
            if self.first:
                with _quiet():
                    self.it.invoke()
                self.first = False
            else:
                self.it.invoke()
            rows.append(self._dequantized(self.it.get_tensor(self.out["index"])))
        return np.concatenate(rows)

    def _dequantized(self, q: np.ndarray) -> np.ndarray:
        scale, zero = self.out.get("quantization", (0.0, 0))
        q = q.reshape(len(q), -1)
        return ((q.astype(np.float32) - zero) * scale) if scale else q.astype(np.float32)


@contextlib.contextmanager
def _quiet():
    """stderr (the file descriptor: the runtimes' C++ logging) and Python warnings silenced."""
    import os
    import warnings

    saved = os.dup(2)
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 2)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


def open_encoder(path: Path, *, output: str = "", input_size: int | None = None, mean=None, std=None,
                 layout: str = "auto", threads: int = 0):
    """(runtime, Signature) of an encoder file; any fault is a ValueError of one line naming it."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"encoder file not found: {path}")
    rt = _Lite(path, output, threads) if path.suffix.lower() == ".tflite" else _Onnx(path, output, threads)
    shape = rt.shape
    if len(shape) != 4:
        raise _fail(path, f"an image encoder takes a 4-D input (N, H, W, C or N, C, H, W); this one takes "
                          f"{len(shape)}-D {shape}")  # fmt: skip
    lay = layout.upper() if layout and layout != "auto" else ("NHWC" if shape[3] in (1, 3) else "NCHW")
    if lay not in ("NHWC", "NCHW"):
        raise ValueError(f"encoder_layout must be auto, NHWC or NCHW, got {layout!r}")
    h, w = (shape[1], shape[2]) if lay == "NHWC" else (shape[2], shape[3])
    if not (isinstance(h, int) and isinstance(w, int) and h > 0 and w > 0):  # a dynamic size: input_size, or 224
        h = w = int(input_size or 224)
    m, s = (tuple(mean), tuple(std)) if mean is not None and std is not None else IMAGENET
    sig = Signature((int(h), int(w)), lay, rt.dtype, rt.quant, m, s, 0)
    probe = rt.run(sig.prepare(torch.full((1, 3, int(h), int(w)), 0.5)))
    if probe.ndim < 2 or probe.reshape(1, -1).shape[1] < 2:
        raise _fail(path, f"its output {getattr(rt, 'output', '')} is not an embedding (shape {list(probe.shape)})")
    return rt, Signature(sig.hw, sig.layout, sig.dtype, sig.quant, m, s, int(probe.reshape(1, -1).shape[1]))


class EncoderNet(nn.Module):
    """An encoder file plus a linear head: (N, C, H, W) in [0, 1] -> (N, K) logits. The encoder is not
    torch's (it never trains); ``fc`` is the head the frozen path fits."""

    def __init__(self, path: Path, num_classes: int, **options):
        super().__init__()
        self.path = str(path)
        self.runtime, self.signature = open_encoder(Path(path), **options)
        self.fc = nn.Linear(self.signature.dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            h = self.runtime.run(self.signature.prepare(x.float())).reshape(len(x), -1)
        return self.fc(torch.from_numpy(h).to(self.fc.weight.device))

    def extra_repr(self) -> str:
        s = self.signature
        return f"{Path(self.path).name}: {s.layout} {s.hw[0]}x{s.hw[1]} {s.dtype} -> {s.dim}"
