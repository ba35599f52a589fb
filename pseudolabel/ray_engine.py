"""The Ray engine (``engine: ray``, ``pip install 'pseudolabel[ray]'``): every Ray quirk lives here.

Scoring is batch inference over files: a callable class reads, decodes and scores each batch with a
model it loads once per actor (``map_batches`` on an actor pool of ``workers``); for URIs
(s3://...) ``ray.data.read_binary_files`` reads the bytes first. The actors decode and score with the very functions the local engine
uses, so the two give the same scores. Results stream back to this process, are written as shards
(one .npz per block) and merged, in the order of the paths asked for, into what the local engine
returns. (Ray's ``write_parquet`` cost more: its write tasks start fresh worker processes.)

Training (``retrain --engine ray``) runs FixMatch on Ray Train's ``TorchTrainer``: each worker holds
the model inside DistributedDataParallel (gloo on the CPU, nccl on GPUs), draws its own unlabeled
batches, and rank 0 reports the kept weights as a checkpoint.

Without an address a local Ray starts on this machine with one logical CPU per core. The scoring
actors reserve ``worker_cpus`` each and read tasks ``read_cpus``, so on two cores two actors
(0.75 each) still leave room for reading and writing tasks: two 1-CPU actors would starve them and hang.
"""
from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from .config import RayConfig


def _ray():
    try:
        import ray
    except ImportError:
        raise ValueError("engine ray needs Ray: pip install 'pseudolabel[ray]'") from None
    return ray


def init(rc: RayConfig):
    """Join ``rc.address``'s cluster, or start a local Ray (once per process). Returns the ray module."""
    ray = _ray()
    if not ray.is_initialized():
        os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
        kwargs = dict(include_dashboard=False, log_to_driver=False, logging_level="ERROR",
                      configure_logging=True)  # fmt: skip
        if rc.address:
            ray.init(address=rc.address, **kwargs)
        else:
            ray.init(num_cpus=os.cpu_count() or 1, **kwargs)
        from ray.data import DataContext

        DataContext.get_current().enable_progress_bars = False
    return ray


def _gpus(ray, rc: RayConfig) -> float:
    """GPUs per actor or worker: ``rc.worker_gpus`` when the cluster has any, else 0."""
    return rc.worker_gpus if ray.cluster_resources().get("GPU", 0) > 0 else 0.0


def module_bytes(module: torch.nn.Module) -> bytes:
    """A trained nn.Module, pickled from the CPU, for actors to load."""
    import copy

    buf = io.BytesIO()
    torch.save(copy.deepcopy(module).cpu().eval(), buf)
    return buf.getvalue()


class Scorer:
    """A Ray Data callable class: loads the model once, then scores batches of files.

    model: bytes of a pickled nn.Module (``kind="module"``: softmax of its logits, ``tta`` adds
    the flip) or of an exported model.ts with its preprocess.json as ``pre``, model.onnx's bytes as
    ``onnx`` and the Classifier's ``backend`` (``kind="torchscript"``).
    A batch {"path", "bytes"} becomes {"path", "error", "p0".."p{K-1}"}: error "" for a scored
    file, else the reason, with NaN scores."""

    def __init__(self, model: bytes, kind: str, hw: tuple[int, int], channels: int, tta: bool, k: int,
                 batch_size: int, threads: int, pre: dict | None = None, onnx: bytes | None = None,
                 backend: str = "auto"):
        import warnings

        from . import device as devices
        from .cache import decoder

        torch.set_num_threads(threads)
        self.device = devices.use("auto")  # a GPU when this actor was given one
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            buf = io.BytesIO(model)
            self.model = torch.jit.load(buf, map_location="cpu") if kind == "torchscript" else \
                torch.load(buf, map_location="cpu", weights_only=False)  # fmt: skip
        self.kind, self.tta, self.k, self.batch_size = kind, tta, k, batch_size
        if kind == "torchscript":  # scored as the local Classifier scores: ONNX Runtime on the CPU when shipped
            from .predict import Classifier

            self.model = Classifier(self.model, pre, onnx, backend)
        self.decode = decoder(tuple(hw), channels)

    def probs(self, images: np.ndarray) -> np.ndarray:
        """(n, C, H, W) uint8 -> (n, K) float32, as the local engine computes them."""
        if self.kind == "torchscript":
            return self.model.probs_array(images)  # in the local engine's passes
        from .fixmatch import predict_probs

        return predict_probs(self.model, images, self.batch_size, tta=self.tta).numpy()

    def __call__(self, batch: dict) -> dict:
        from .cache import read_file

        good, arrays, bad = [], [], []
        for i, path in enumerate(batch["path"]):
            try:
                data = bytes(batch["bytes"][i]) if "bytes" in batch else read_file(str(path))
                arrays.append(self.decode(str(path), data))
                good.append(str(path))
            except (OSError, ValueError) as exc:
                bad.append((str(path), f"{exc.__class__.__name__}: {exc}"))
        probs = self.probs(np.stack(arrays)) if arrays else np.zeros((0, self.k), np.float32)
        probs = np.concatenate([probs.astype(np.float32), np.full((len(bad), self.k), np.nan, np.float32)])
        out = {"path": np.array(good + [p for p, _ in bad], dtype=object),
               "error": np.array([""] * len(good) + [r for _, r in bad], dtype=object)}
        return out | {f"p{j}": probs[:, j] for j in range(self.k)}


def score(model: bytes, kind: str, paths: list[Path], hw: tuple[int, int], channels: int, k: int, rc: RayConfig,
          tta: bool = False, workers: int | None = None, pre: dict | None = None, onnx: bytes | None = None,
          backend: str = "auto") -> tuple[list[Path], np.ndarray, list[tuple[Path, str]]]:
    """Score image files on Ray Data actors. Returns (the readable paths in the given order, their
    (n, K) float32 probabilities, [(unreadable path, reason)])."""
    ray = init(rc)
    if not paths:
        return [], np.zeros((0, k), np.float32), []
    workers = workers or rc.workers
    ds = _files(ray, [os.fspath(p) if "://" in os.fspath(p) else _where(p) for p in paths], rc)
    ds = ds.map_batches(Scorer, fn_constructor_kwargs=dict(model=model, kind=kind, hw=tuple(hw), channels=channels,
                                                           tta=tta, k=k, batch_size=rc.batch_size, threads=rc.threads,
                                                           pre=pre, onnx=onnx, backend=backend),
                        compute=ray.data.ActorPoolStrategy(size=workers), batch_size=rc.batch_size,
                        num_cpus=rc.worker_cpus,
                        num_gpus=_gpus(ray, rc), batch_format="numpy")  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="pseudolabel-ray-") as shards:
        for i, batch in enumerate(ds.iter_batches(batch_size=None, batch_format="numpy")):  # streamed back
            np.savez(Path(shards) / f"{i:06d}.npz", **{c: v.astype(str) if v.dtype == object else v for c, v in batch.items()})
        return merge(sorted(Path(shards).glob("*.npz")), paths, k)


def _where(path) -> str:
    """A path as the shards name it: absolute for a local file, a URI (s3://...) as given."""
    text = os.fspath(path)
    if text.startswith("file://"):
        return text[len("file://") :]  # what read_binary_files names a local file
    return text if "://" in text else os.path.abspath(text)


def _files(ray, paths: list[str], rc: RayConfig):
    """A dataset of the files to score. Local files: rows of paths that the actors read themselves
    (measured 15-19 k files/s here, where ``read_binary_files`` manages 2 k: its per-file cost, not
    the actors, would bound the speed); URIs (s3://, gs://, ...): ``read_binary_files`` tasks."""
    if any("://" in p for p in paths):
        return ray.data.read_binary_files(paths, include_paths=True, num_cpus=rc.read_cpus)
    import pyarrow as pa

    step = max(rc.batch_size, 4096)
    return ray.data.from_arrow([pa.table({"path": paths[i : i + step]}) for i in range(0, len(paths), step)])


def merge(shards: list[Path], paths: list[Path], k: int) -> tuple[list[Path], np.ndarray, list[tuple[Path, str]]]:
    """The shards' rows ({"path", "error", "p0"..}) put back in the order of ``paths``."""
    parts = [np.load(f) for f in shards]
    names = [str(p) for part in parts for p in part["path"]]
    errors = [str(e) for part in parts for e in part["error"]]
    probs = np.concatenate([np.stack([part[f"p{j}"] for j in range(k)], 1) for part in parts]) if parts else None
    by_path = {p: i for i, p in enumerate(names)}
    kept, rows, bad = [], [], []
    for p in paths:
        i = by_path.get(_where(p))
        if i is None:
            bad.append((p, "not returned by Ray"))
        elif errors[i]:
            bad.append((p, errors[i]))
        else:
            kept.append(p)
            rows.append(i)
    return kept, probs[rows].astype(np.float32) if rows else np.zeros((0, k), np.float32), bad


def _array_ref(x: np.ndarray):
    """A memmap travels as its file (workers map it again); any other array (or None) as itself."""
    if x is None:
        return None
    if isinstance(x, np.memmap) and x.filename:
        return ("memmap", str(x.filename), x.offset, x.shape)
    return np.ascontiguousarray(x)


def _array(ref) -> np.ndarray:
    if isinstance(ref, tuple) and ref and ref[0] == "memmap":
        _, name, offset, shape = ref
        return np.memmap(name, dtype=np.uint8, mode="r", offset=offset, shape=tuple(shape))
    return ref


def _train_loop(config: dict) -> None:
    """One Ray Train worker: FixMatch on its own unlabeled draws, gradients averaged by DDP."""
    import json

    import ray.train
    import ray.train.torch
    from torch.nn.parallel import DistributedDataParallel

    from . import device as devices
    from .fixmatch import fit_fixmatch

    torch.set_num_threads(config["threads"])
    rank = ray.train.get_context().get_world_rank()
    device = devices.use(str(ray.train.torch.get_device()))
    module = torch.load(io.BytesIO(config["module"]), map_location="cpu", weights_only=False).to(device.torch)
    net = DistributedDataParallel(module, device_ids=[device.torch.index] if device.type == "cuda" else None)
    x_lb, y_lb, w_lb, x_ulb, x_val, y_val = (_array(a) for a in config["data"])
    fit = fit_fixmatch(module, x_lb, y_lb, x_ulb, x_val, y_val, config["fc"], config["seed"] + rank, progress=False,
                       w_lb=w_lb, device=device, net=net)  # fmt: skip
    summary = {"best_epoch": fit.best_epoch, "seconds": fit.seconds, "history": fit.history}
    if rank != 0:
        ray.train.report({"rank": rank})
        return
    with tempfile.TemporaryDirectory() as d:
        torch.save(module.state_dict(), Path(d) / "model.pt")
        (Path(d) / "fit.json").write_text(json.dumps(summary))
        ray.train.report({"rank": rank}, checkpoint=ray.train.Checkpoint.from_directory(d))


def fit_fixmatch(module: torch.nn.Module, x_lb: np.ndarray, y_lb: np.ndarray, x_ulb: np.ndarray, x_val: np.ndarray,
                 y_val: np.ndarray, fc, seed: int, rc: RayConfig, w_lb: np.ndarray | None = None, on_epoch=None,
                 workers: int | None = None):
    """:func:`fixmatch.fit_fixmatch` on ``workers`` Ray Train workers (TorchTrainer, DDP); the kept
    weights are loaded into ``module``. Each worker draws its own batches (seed + its rank), so a
    step sees ``workers`` x the batch. ``on_epoch(row, None)`` is called for each epoch afterwards.
    On a cluster the pool cache (a memmap) must be on storage every node sees."""
    import json

    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from .fixmatch import FitResult

    ray = init(rc)
    gpu = _gpus(ray, rc) > 0
    workers = workers or rc.train_workers
    config = {"module": module_bytes(module), "fc": fc, "seed": seed, "threads": rc.threads,
              "data": [_array_ref(a) for a in (x_lb, y_lb, w_lb, x_ulb, x_val, y_val)]}  # fmt: skip
    per_worker = {"CPU": 1} | ({"GPU": rc.worker_gpus} if gpu else {})
    with tempfile.TemporaryDirectory(prefix="pseudolabel-train-") as storage:
        trainer = TorchTrainer(_train_loop, train_loop_config=config,
                               torch_config=TorchConfig(backend="nccl" if gpu else "gloo"),
                               scaling_config=ScalingConfig(num_workers=workers, use_gpu=gpu,
                                                            resources_per_worker=per_worker),
                               run_config=RunConfig(storage_path=storage, name="fixmatch"))  # fmt: skip
        result = trainer.fit()
        with result.checkpoint.as_directory() as d:
            module.load_state_dict(torch.load(Path(d) / "model.pt", map_location="cpu"))
            summary = json.loads((Path(d) / "fit.json").read_text())
    res = FitResult(history=summary["history"], best_epoch=summary["best_epoch"], seconds=summary["seconds"])
    for row in res.history if on_epoch is not None else ():
        on_epoch(row, None)
    return res
