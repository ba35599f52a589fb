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
from typing import TYPE_CHECKING

import numpy as np

from pseudolabel.config.schema import RayConfig

if TYPE_CHECKING:  # torch is imported where it is used: a CPU scoring actor on ONNX Runtime never needs it
    import torch


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

        ctx = DataContext.get_current()
        ctx.enable_progress_bars = False
        ctx.memory_usage_poll_interval_s = None  # no thread per task polling its memory: stats we never read
    return ray


def _assigned_gpus() -> bool:
    """Whether this Ray actor was given a GPU."""
    import ray

    return bool(ray.get_gpu_ids())


def _gpus(ray, rc: RayConfig) -> float:
    """GPUs per actor or worker: ``rc.worker_gpus`` when the cluster has any, else 0."""
    return rc.worker_gpus if ray.cluster_resources().get("GPU", 0) > 0 else 0.0


def module_bytes(module: torch.nn.Module) -> bytes:
    """A trained network for actors and workers: its recipe (how :func:`backbones.create_backbone` built it)
    as JSON and its state dict as safetensors, in one blob. No pickle: :func:`module_from_bytes` builds the
    network anew from the recipe and fills it."""
    import json

    from safetensors.torch import save

    recipe = getattr(module, "recipe", None)
    if not isinstance(recipe, dict):
        raise ValueError("the Ray engine ships networks built by create_backbone (this one has no recipe)")
    head = json.dumps(recipe).encode()
    state = {k: v.detach().cpu().contiguous().clone() for k, v in module.state_dict().items()}
    return len(head).to_bytes(8, "little") + head + save(state)


def module_from_bytes(blob: bytes) -> torch.nn.Module:
    """The network :func:`module_bytes` shipped: built from its recipe, filled with its tensors (strict)."""
    import json

    from safetensors.torch import load

    from pseudolabel.models.backbones import rebuild
    from pseudolabel.train.vae import attach_latent

    n = int.from_bytes(blob[:8], "little")
    recipe = json.loads(blob[8 : 8 + n])
    recipe["image_size"] = tuple(recipe["image_size"])
    recipe["norm"] = tuple(tuple(x) for x in recipe["norm"]) if recipe.get("norm") else None
    module = rebuild(recipe)
    if recipe.get("latent"):
        attach_latent(module, recipe["latent"])
    module.load_state_dict(load(blob[8 + n :]), strict=True)
    return module.eval()


class Scorer:
    """A Ray Data callable class: loads the model once, then scores batches of files.

    model: a network from :func:`module_bytes` (``kind="module"``: softmax of its logits, ``tta`` adds
    the flip) or of an exported model.ts with its preprocess.json as ``pre``, model.onnx's bytes as
    ``onnx`` and the Classifier's ``backend`` (``kind="torchscript"``).
    A batch {"i", "path"} or {"path", "bytes"} becomes {"i" or "path", "error", "p0".."p{K-1}"}:
    error "" for a scored file, else the reason, with NaN scores."""

    def __init__(self, model: bytes, kind: str, hw: tuple[int, int], channels: int, tta: bool, k: int,
                 batch_size: int, threads: int, pre: dict | None = None, onnx: bytes | None = None,
                 backend: str = "auto", cwd: str = ""):
        from pseudolabel.data.cache import decoder

        self.kind, self.tta, self.k, self.batch_size, self.pre = kind, tta, k, batch_size, pre
        self.decode = decoder(tuple(hw), channels)
        self.cwd = cwd  # the driver's working folder: relative paths are read from there
        self.session = None
        if kind == "torchscript" and onnx is not None and backend != "torchscript" and not _assigned_gpus():
            from pseudolabel.serve import onnx as onnx_scoring

            self.session = onnx_scoring.session(onnx, threads)  # as the local Classifier scores on the CPU
            return
        import warnings

        import torch

        from pseudolabel.core import device as devices

        torch.set_num_threads(threads)
        self.device = devices.use("auto")  # a GPU when this actor was given one
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            buf = io.BytesIO(model)
            self.model = torch.jit.load(buf, map_location="cpu") if kind == "torchscript" else \
                module_from_bytes(model)  # fmt: skip
        if kind == "torchscript":  # scored as the local Classifier scores (TorchScript on a GPU)
            from pseudolabel.serve.predict import Classifier

            self.model = Classifier(self.model, pre, onnx, backend)

    def probs(self, images: np.ndarray) -> np.ndarray:
        """(n, C, H, W) uint8 -> (n, K) float32, as the local engine computes them."""
        if self.session is not None:
            from pseudolabel.serve import onnx as onnx_scoring

            batch = int((self.pre or {}).get("batch") or onnx_scoring.BATCH)  # as export chose for the network
            return onnx_scoring.probs(self.session, images, self.k, batch)  # in the local engine's passes
        if self.kind == "torchscript":
            return self.model.probs_array(images)
        from pseudolabel.train.fixmatch import predict_probs

        return predict_probs(self.model, images, self.batch_size, tta=self.tta).numpy()

    def __call__(self, batch: dict) -> dict:
        """{"i", "path"} (local files, read here; a relative path from the driver's folder ``cwd``) or
        {"path", "bytes"} (read_binary_files) -> {"i" or "path", "error", "p0".."p{K-1}"}."""
        from pseudolabel.data.cache import read_file
        from pseudolabel.data.images import one_line

        key = "i" if "i" in batch else "path"
        good, arrays, bad = [], [], []
        for j, path in enumerate(batch["path"]):
            try:
                data = bytes(batch["bytes"][j]) if "bytes" in batch else read_file(os.path.join(self.cwd, str(path)))
                arrays.append(self.decode(str(path), data))
                good.append(j)
            except Exception as exc:  # noqa: BLE001 -- any decoder fault: a bad file
                bad.append((j, one_line(f"{exc.__class__.__name__}: {exc}")))
        probs = self.probs(np.stack(arrays)) if arrays else np.zeros((0, self.k), np.float32)
        probs = np.concatenate([probs.astype(np.float32), np.full((len(bad), self.k), np.nan, np.float32)])
        rows = good + [j for j, _ in bad]
        ids = batch[key][rows] if key == "i" else np.array([str(batch["path"][j]) for j in rows], dtype=object)
        out = {key: ids, "error": np.array([""] * len(good) + [r for _, r in bad], dtype=object)}
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
    ds = _files(ray, [os.fspath(p) for p in paths], rc)
    ds = ds.map_batches(Scorer, fn_constructor_kwargs=dict(model=model, kind=kind, hw=tuple(hw), channels=channels,
                                                           tta=tta, k=k, batch_size=rc.batch_size, threads=rc.threads,
                                                           pre=pre, onnx=onnx, backend=backend, cwd=os.getcwd()),
                        compute=ray.data.ActorPoolStrategy(size=workers), batch_size=rc.batch_size,
                        num_cpus=rc.worker_cpus,
                        num_gpus=_gpus(ray, rc), batch_format="numpy")  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="pseudolabel-ray-") as shards:
        held, rows, n = [], 0, 0
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):  # streamed back
            held.append(batch)
            rows += len(batch["error"])
            if rows >= SHARD_ROWS:
                write_shard(Path(shards) / f"{n:06d}.npz", held, k)
                held, rows, n = [], 0, n + 1
        if held:
            write_shard(Path(shards) / f"{n:06d}.npz", held, k)
        return merge(sorted(Path(shards).glob("*.npz")), paths, k)


SHARD_ROWS = 65536  # results per shard file: few files to write and merge, little held in memory


def write_shard(path: Path, batches: list[dict], k: int) -> None:
    """Blocks of results as one .npz: "i" (rows of the paths asked for) or "path" (URIs), "p" (n, K)
    float32, and the unreadable rows' positions and reasons ("bad", "reason")."""
    errors = [e for b in batches for e in b["error"]]
    bad = np.flatnonzero(np.array([bool(e) for e in errors], dtype=bool))
    key = "i" if "i" in batches[0] else "path"
    ids = np.concatenate([b[key] for b in batches])
    np.savez(path, **{key: ids.astype(np.int64) if key == "i" else ids.astype(str)},
             p=np.concatenate([np.stack([b[f"p{j}"] for j in range(k)], 1) for b in batches]).astype(np.float32),
             bad=bad, reason=np.array([str(errors[j]) for j in bad], dtype=str))  # fmt: skip


def _where(path) -> str:
    """A URI as read_binary_files names its rows: a file:// one as its local path, any other as given."""
    text = os.fspath(path)
    return text[len("file://") :] if text.startswith("file://") else text


def _files(ray, paths: list[str], rc: RayConfig):
    """A dataset of the files to score. Local files: rows {"i", "path"} that the actors read themselves
    (measured 15-19 k files/s here, where ``read_binary_files`` manages 2 k: its per-file cost, not
    the actors, would bound the speed), in blocks of 4,096 rows; URIs (s3://, gs://, ...):
    ``read_binary_files`` tasks."""
    if any("://" in p for p in paths):
        return ray.data.read_binary_files(paths, include_paths=True, num_cpus=rc.read_cpus)
    import pyarrow as pa

    step = max(rc.batch_size, 4096)
    blocks = [pa.table({"i": np.arange(i, min(i + step, len(paths)), dtype=np.int64), "path": paths[i : i + step]})
              for i in range(0, len(paths), step)]  # fmt: skip
    return ray.data.from_blocks(blocks)  # described here; from_arrow runs a remote task per block (~1 s at 400 k)


def merge(shards: list[Path], paths: list[Path], k: int) -> tuple[list[Path], np.ndarray, list[tuple[Path, str]]]:
    """The shards' rows put back in the order of ``paths``: (readable paths, their (n, K) probabilities,
    [(unreadable path, reason)])."""
    probs = np.zeros((len(paths), k), np.float32)
    state = np.zeros(len(paths), np.int8)  # 0 not returned, 1 scored, 2 unreadable
    reasons: dict[int, str] = {}
    by_path = None
    for f in shards:
        part = np.load(f)
        if "i" in part:
            rows = part["i"]
        else:  # URIs: matched by the name read_binary_files gives
            by_path = by_path if by_path is not None else {_where(p): j for j, p in enumerate(paths)}
            rows = np.array([by_path.get(str(p), -1) for p in part["path"]], dtype=np.int64)
        ok = rows >= 0
        probs[rows[ok]] = part["p"][ok]
        state[rows[ok]] = 1
        for j, reason in zip(part["bad"].tolist(), part["reason"].tolist()):
            if rows[j] >= 0:
                state[rows[j]] = 2
                reasons[int(rows[j])] = reason
    kept = [p for p, s in zip(paths, state.tolist()) if s == 1]
    bad = [(paths[j], reasons[j] if s == 2 else "not returned by Ray") for j, s in enumerate(state.tolist()) if s != 1]
    return kept, probs[state == 1], bad


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
    import torch
    from safetensors.torch import save_model
    from torch.nn.parallel import DistributedDataParallel

    from pseudolabel.core import device as devices
    from pseudolabel.train.fixmatch import fit_fixmatch

    torch.set_num_threads(config["threads"])
    rank = ray.train.get_context().get_world_rank()
    device = devices.use(str(ray.train.torch.get_device()))
    module = module_from_bytes(config["module"]).train().to(device.torch)
    net = DistributedDataParallel(module, device_ids=[device.torch.index] if device.type == "cuda" else None)
    x_lb, y_lb, w_lb, x_ulb, x_val, y_val = (_array(a) for a in config["data"])
    fit = fit_fixmatch(module, x_lb, y_lb, x_ulb, x_val, y_val, config["fc"], config["seed"] + rank, progress=False,
                       w_lb=w_lb, device=device, net=net)  # fmt: skip
    summary = {"best_epoch": fit.best_epoch, "seconds": fit.seconds, "history": fit.history}
    if rank != 0:
        ray.train.report({"rank": rank})
        return
    with tempfile.TemporaryDirectory() as d:
        save_model(module, str(Path(d) / "model.safetensors"))
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
    from safetensors.torch import load_model
    from ray.train.torch import TorchConfig, TorchTrainer

    from pseudolabel.train.fixmatch import FitResult

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
            load_model(module, str(Path(d) / "model.safetensors"))
            summary = json.loads((Path(d) / "fit.json").read_text())
    res = FitResult(history=summary["history"], best_epoch=summary["best_epoch"], seconds=summary["seconds"])
    for row in res.history if on_epoch is not None else ():
        on_epoch(row, None)
    return res


def score_classifier(clf, paths: list, rc: RayConfig, warn=None, chunk: int = 4096):
    """:meth:`Classifier.score_files` on Ray Data actors: yield (readable paths, (n, K) probabilities) a chunk
    at a time; unreadable files go to ``warn`` (one line) and are skipped."""
    if clf.file is None:
        raise ValueError("the Ray engine scores a model loaded from a file (Classifier.load)")
    kept, probs, bad = score(clf.file.read_bytes(), "torchscript", list(paths), clf.hw, clf.channels, len(clf.classes),
                             rc, pre=clf.pre, onnx=clf.onnx, backend=clf.backend)  # fmt: skip
    for p, reason in bad:
        if warn is not None:
            warn(f"{p}: cannot read image ({reason.split(':')[0]}); skipped")
    for i in range(0, len(kept), chunk):
        yield kept[i : i + chunk], probs[i : i + chunk]
