"""Scoring an exported model.onnx on the CPU with ONNX Runtime, without importing torch.

``predict`` and the Ray engine's scoring actors use this; an actor that never imports torch starts
~2.4 s of CPU sooner (torch's import), which on a small machine is time taken from the scoring.
Inputs stay uint8 until a batch is made float here (by numpy: the same values as torch's division).
"""
from __future__ import annotations

import numpy as np

from pseudolabel.data.memmap import uint8_batches

BATCH = 256  # images per ONNX Runtime pass: it warms up faster on 256 than on 512-1024 (measured)


def session(onnx: bytes, threads: int):
    """An ONNX Runtime CPU session on ``threads`` intra-op threads."""
    from pseudolabel.core.home import onnxruntime

    ort = onnxruntime()
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = max(1, threads), 1
    return ort.InferenceSession(onnx, so, providers=["CPUExecutionProvider"])


def probs(sess, images: np.ndarray, k: int, batch_size: int = BATCH) -> np.ndarray:
    """(N, C, H, W) uint8 -> (N, K) float32 probabilities from the exported model's "probs" output."""
    out, at = np.zeros((len(images), k), np.float32), 0  # filled in place, batch by batch
    for x in uint8_batches(images, batch_size):
        x = x.astype(np.float32)
        x /= np.float32(255)
        out[at : at + len(x)] = sess.run(None, {"images": x})[0]
        at += len(x)
    return out
