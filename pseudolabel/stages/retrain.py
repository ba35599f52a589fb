"""``pseudolabel retrain``: the final model, FixMatch on the merged set.

Labeled: every image now in a class folder (the folders are the truth): seed labels,
images a person reviewed (on the page or by hand) and images only machines placed,
which get ``vote_weight``. Unlabeled: by default the whole pool, so consistency is
learned everywhere; ``unlabeled: unclear`` uses ``unclear/`` only. Validation: the seed
validation split plus a share of the reviewed images, none of which is trained on.

Writes ``RUN/final/``: model.ts, model.onnx, preprocess.json, metrics.json, confusion.png,
hist.png, roc.png (two classes), curves.png, log.csv, TensorBoard events and the resolved config.
"""
from __future__ import annotations

import copy
import dataclasses
import csv
import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pseudolabel import report
from pseudolabel.config.schema import Config, RetrainConfig, SeedTrainConfig, dump_config, norm_stats
from pseudolabel.core import runstate
from pseudolabel.core.metrics import classification_metrics, model_metrics
from pseudolabel.data.cache import cache_dir, decode_cached, decoder
from pseudolabel.data.images import Problems
from pseudolabel.models.backbones import TTA, Ensemble, create_backbone
from pseudolabel.review.state import ReviewState, journal_path_for
from pseudolabel.train.finetune import fit_staged
from pseudolabel.train.fixmatch import FixMatchConfig, fit_fixmatch, predict_probs
from pseudolabel.train.pretrain import pretrain_cached
from pseudolabel.train.probe import fit_probe
from pseudolabel.train.supervised import fit_module
from pseudolabel.train.vae import attach_latent

CACHE = "cache"  # run sub-folder keeping SimCLR weights for the next retrain of the same pool


@dataclass
class MergedSet:
    """Arrays for training. x_*: (N, C, H, W) uint8; y_*: (N,) int; w_lb: (N,) float."""

    x_lb: np.ndarray
    y_lb: np.ndarray
    w_lb: np.ndarray
    x_ulb: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    counts: dict
    images: np.ndarray | None = None  # (M, C, H, W) uint8: every run image read, in ``folders``' order
    folders: list | None = None  # (M,) folder of each image now (a class folder or "unclear")
    seed_labels: np.ndarray | None = None  # (M,) class of each seed-labeled image, -1 for the others


def _held_out(image: str, share: float) -> bool:
    """Deterministic split of reviewed images: the same image always falls on the same side."""
    return int(hashlib.sha1(image.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF < share


def label_sources(run_dir: Path, journal: Path, readonly: bool = False
                  ) -> tuple[dict[str, tuple[str, str]], ReviewState]:
    """{image: (folder now, kind)}: kind is :func:`runstate.provenance`'s, or "unclear" for any
    image now in unclear/ (unlabeled for the final model). ``readonly``: finish nothing, create no
    journal (a command that only reads the run, such as export)."""
    state = ReviewState(run_dir, journal, readonly=readonly)
    rows = {r["image"]: r for r in state.rows}
    decided = state.journal.last_decisions()
    out = {}
    for image, folder in state.where().items():
        kind = runstate.provenance(rows[image], folder, (decided.get(image) or {}).get("label"))
        out[image] = (folder, runstate.UNCLEAR if folder == runstate.UNCLEAR else kind)
    return out, state


def gather(cfg: Config, run_dir: Path, journal: Path, problems: Problems, progress: bool = False) -> MergedSet:
    """Read the run's folders and journal into training, unlabeled and validation arrays. The run's
    images are decoded once into the pool cache (keyed by image name and file stats, so review moves
    keep it valid); with ``unlabeled: pool`` the unlabeled set is that memmap itself, not a copy."""
    rc = cfg.retrain
    sources, state = label_sources(run_dir, journal)
    files = [(image, run_dir / folder / state.items[image].file) for image, (folder, _) in sorted(sources.items())]
    images, meta = decode_cached(files, cfg.hw, cfg.channels, cache_dir(cfg.pool_cache), decoder(cfg.hw, cfg.channels, cfg.max_pixels),
                                 progress, "reading the run")  # fmt: skip
    for image, reason in meta["skipped"]:
        problems.add(f"{run_dir / sources[image][0] / state.items[image].file}: cannot read image ({reason}); skipped")
    lb, ulb, val = [], [], []  # row indices into images, with labels and weights
    for row, image in enumerate(meta["names"]):
        folder, kind = sources[image]
        if rc.unlabeled == "pool" or folder == runstate.UNCLEAR:
            ulb.append(row)
        if folder == runstate.UNCLEAR:
            continue
        y = state.info.decision_of(folder)
        person = kind in (runstate.REVIEWED, runstate.HAND)
        if kind == runstate.SEED_VAL or (person and _held_out(image, rc.review_val_share)):
            val.append((row, y))
        else:
            lb.append((row, y, 1.0 if runstate.human(kind) else rc.vote_weight))
    if len({y for _, y, _ in lb}) < 2:
        raise ValueError(f"{run_dir}: need labeled images of at least two classes in the class folders")
    if not val:
        raise ValueError(f"{run_dir}: no validation images (split.csv seed-val or reviewed images)")
    kinds = [k for _, k in sources.values()]
    counts = {k: kinds.count(k) for k in ("seed-train", "seed-val", "reviewed", "hand", "vote", "final", "unclear")}
    counts["reviewed"] += counts.pop("hand")
    counts["vote"] += counts.pop("final")
    counts.update(labeled=len(lb), unlabeled=len(ulb), validation=len(val))
    rows = np.array([r for r, _, _ in lb])  # ascending: read in file order
    return MergedSet(
        x_lb=images[rows], y_lb=np.array([y for _, y, _ in lb]),
        w_lb=np.array([w for _, _, w in lb], dtype=np.float32),
        x_ulb=images if len(ulb) == len(images) else images[np.array(ulb, dtype=np.int64)],
        x_val=images[np.array([r for r, _ in val])], y_val=np.array([y for _, y in val]), counts=counts,
        images=images, folders=[sources[n][0] for n in meta["names"]],
        seed_labels=np.array([state.info.decision_of(sources[n][0]) if sources[n][1] in (runstate.SEED_TRAIN,
                              runstate.SEED_VAL) else -1 for n in meta["names"]]),
    )  # fmt: skip


class RunLog:
    """Per-epoch CSV log and TensorBoard events, written as training goes."""

    def __init__(self, out: Path):
        from torch.utils.tensorboard import SummaryWriter

        self.csv_path = out / "log.csv"
        self.tb = SummaryWriter(str(out / "tensorboard"))
        self.header = False
        self.member = 0  # which ensemble member is training: a column in the CSV, a tag prefix in TensorBoard

    def __call__(self, row: dict, _module) -> None:
        row = {"member": self.member, **row}
        with open(self.csv_path, "a", newline="") as f:
            w = csv.DictWriter(f, list(row))
            if not self.header:
                w.writeheader()
                self.header = True
            w.writerow(row)
        for k, v in row.items():
            if k not in ("epoch", "member"):
                self.tb.add_scalar(f"member{self.member}/{k}", v, row["epoch"])
        self.tb.flush()

    def close(self) -> None:
        self.tb.close()


def fixmatch_config(rc: RetrainConfig) -> FixMatchConfig:
    return FixMatchConfig(epochs=rc.epochs, batch_size=rc.batch_size, mu=rc.mu, tau=rc.tau, lambda_u=rc.lambda_u,
                          lr=rc.lr, weight_decay=rc.weight_decay, ema=rc.ema, patience=rc.patience,
                          threshold="flexmatch" if rc.threshold == "dynamic" else "fixed", monitor=rc.monitor,
                          ema_buffers="average", weak_shift=rc.weak_shift, epoch_steps=rc.epoch_steps,
                          workers=rc.workers)  # fmt: skip


def train_member(cfg: Config, data: MergedSet, seed: int, progress: bool = True, on_epoch=None,
                 cache: Path | None = None, snapshot: list | None = None):
    """One network, start to end: SimCLR on the unlabeled set (or its weights from ``cache``, when
    an earlier retrain made them from the same pool), a supervised warm-up, then FixMatch (on Ray
    Train's workers with ``engine: ray``).

    Returns (module with the kept EMA weights, FitResult, SimCLR history rows ([] when cached),
    whether SimCLR's weights came from ``cache``)."""
    from pseudolabel.config.values import input_px, is_none

    rc = cfg.retrain
    torch.manual_seed(seed)
    module = create_backbone(rc.backbone, num_classes=cfg.num_classes, in_chans=cfg.channels, image_size=cfg.hw,
                             input_size=rc.input_size, variant=rc.variant, width=rc.width, norm=norm_stats(cfg),
                             pretrained=rc.pretrained)  # fmt: skip
    if rc.train == "frozen":  # the pretrained encoder plus a logistic regression, folded into its last layer
        from pseudolabel.train.frozen import fit_frozen_final

        if snapshot is not None:  # the latent study looks at the pretrained encoder
            snapshot.append(copy.deepcopy(module))
        return module, fit_frozen_final(module, data, cfg.num_classes, rc.head_c, seed, progress), [], False
    staged = rc.train == "staged"
    network = {"backbone": rc.backbone, "variant": rc.variant, "input_size": input_px(rc.input_size, rc.pretrained),
               "channels": cfg.channels, "image_size": cfg.image_size}  # fmt: skip
    if cfg.num_classes != 2 or rc.width != 16 or cfg.normalize != "none":  # keys of earlier runs stay valid
        network.update(classes=cfg.num_classes, width=rc.width, mean=cfg.mean, std=cfg.std)
    extra = {} if (rc.pretrain_batch_size, rc.pretrain_lr) == (256, 2e-3) else {"batch_size": rc.pretrain_batch_size,
                                                                              "lr": rc.pretrain_lr}  # fmt: skip
    if rc.pretrain_epoch_steps != 15:  # keys of earlier runs stay valid
        extra["epoch_steps"] = rc.pretrain_epoch_steps
    # pretrained weights are the pretraining: no SimCLR or VAE on top of them
    method = rc.pretrain if rc.pretrain_epochs and is_none(rc.pretrained) else "none"
    if method == "vae":
        attach_latent(module, rc.vae_latent)
        network.update(latent=rc.vae_latent)
        extra = {"beta": rc.vae_beta, "batch_size": rc.pretrain_batch_size, "lr": rc.pretrain_lr,
                 "epoch_steps": rc.pretrain_epoch_steps}  # fmt: skip
    elif method == "simclr":
        extra["temperature"] = rc.pretrain_temperature
    pre, cached = ([], False) if method == "none" else pretrain_cached(
        module, data.x_ulb, cache=cache, settings=network, method=method, epochs=rc.pretrain_epochs, seed=seed,
        progress=progress, **extra)
    if snapshot is not None:  # the network as pretraining left it, before any label: for the latent study
        snapshot.append(copy.deepcopy(module))
    if rc.probe:  # the frozen encoder plus one linear layer: seed 000's stage II
        fit = fit_probe(module, data.x_lb, data.y_lb, data.x_val, data.y_val, num_classes=cfg.num_classes,
                        epochs=rc.probe_steps, lr=rc.probe_lr, weight_decay=rc.probe_weight_decay, seed=seed,
                        w_lb=data.w_lb, progress=progress)  # fmt: skip
        return module, fit, pre, cached
    warm = SeedTrainConfig(epochs=rc.warmup_epochs, batch_size=rc.warmup_batch_size, lr=rc.warmup_lr,
                           patience=rc.warmup_epochs)
    if staged:  # seed 003's recipe instead of the warm-up; FixMatch then starts from it
        fit_staged(module, data.x_lb, data.y_lb, data.x_val, data.y_val, cfg.staged, seed, progress=progress)
    elif rc.warmup_epochs:
        fit_module(module, data.x_lb, data.y_lb, data.x_val, data.y_val, warm, seed, "warm-up", progress)
    args = (module, data.x_lb, data.y_lb, data.x_ulb, data.x_val, data.y_val, fixmatch_config(rc), seed)
    if cfg.engine == "ray":  # FixMatch, most of the time, on Ray Train workers (DDP)
        from pseudolabel.engines import ray as ray_engine

        fit = ray_engine.fit_fixmatch(*args, cfg.ray, w_lb=data.w_lb, on_epoch=on_epoch)
    else:
        fit = fit_fixmatch(*args, f"retrain {rc.backbone} (seed {seed})", progress, w_lb=data.w_lb, on_epoch=on_epoch)
    return module, fit, pre, cached


def member_seed(seed: int, k: int) -> int:
    """Member k of an ensemble trains with its own seed; member 0 keeps the run's seed."""
    return seed + 1000 * k


def train_members(cfg: Config, data: MergedSet, out: Path, progress: bool = True, cache: Path | None = None,
                  snapshot: list | None = None):
    """``retrain.members`` networks (frozen: one per ``member_weights`` value), each trained apart with
    :func:`train_member` and its own seed,
    logged to ``out``, SimCLR weights kept in ``cache``. Returns (the network or their
    :class:`Ensemble`, inside :class:`TTA` unless ``retrain.tta`` is "none"; per-member summaries;
    per-member FixMatch histories)."""
    log, modules, members, histories, held = RunLog(out), [], [], [], []
    rc = cfg.retrain
    # frozen members of the same weights would be equal: one, or one per `member_weights` value
    plans = [dataclasses.replace(cfg, retrain=dataclasses.replace(rc, pretrained=w)) for w in rc.member_weights] \
        if rc.train == "frozen" and rc.member_weights else [cfg] * (1 if rc.train == "frozen" else rc.members)
    for k, member_cfg in enumerate(plans):
        log.member, seed = k, member_seed(cfg.seed, k)
        module, fit, pre, cached = train_member(member_cfg, data, seed, progress, on_epoch=log, cache=cache,
                                                snapshot=snapshot if k == 0 else None)
        modules.append(module)
        held.append(fit.val_probs)
        histories.append(fit.history)
        members.append({"seed": seed, "best_epoch": fit.best_epoch, "pretrained": member_cfg.retrain.pretrained,
                        "train_seconds": round(fit.seconds, 1),
                        "pretrain_seconds": round(pre[-1]["seconds"], 1) if pre else 0,
                        "pretrain_cached": cached,
                        "pretrain_loss": [round(h["loss"], 4) for h in pre]})  # fmt: skip
    log.close()
    module = with_tta(modules[0] if len(modules) == 1 else Ensemble(modules), cfg.retrain.tta)
    if all(h is not None for h in held):  # members that also learned the validation set: their held-out view
        module.val_probs = np.mean(held, 0)
    return module, members, histories


def study_latent(cfg: Config, module: torch.nn.Module, data: MergedSet, out: Path) -> dict:
    """The latent study (:mod:`pseudolabel.report.study`) on at most ``retrain.study_max`` of the run's
    images, drawn at random, in ``module``'s embedding (the first member as pretraining left it,
    before any label); writes ``out/latent.*``."""
    from pseudolabel.report.study import write_latent
    from pseudolabel.train.probe import embed

    n = len(data.images)
    rows = np.sort(np.random.default_rng(cfg.seed).choice(n, min(n, cfg.retrain.study_max), replace=False))
    emb = embed(module, np.asarray(data.images[rows])).numpy()
    method = cfg.retrain.pretrain if cfg.retrain.pretrain_epochs else "none"
    return write_latent(out, emb, [data.folders[i] for i in rows], data.seed_labels[rows], list(cfg.classes),
                        list(cfg.folders), method, cfg.seed)


def with_tta(module: torch.nn.Module, mode: str) -> torch.nn.Module:
    """The final model as it is evaluated and exported: ``module`` inside :class:`TTA` unless ``mode`` is "none"."""
    return module if mode == "none" else TTA(module, mode)


def evaluate_final(y: np.ndarray, probs: np.ndarray, classes: tuple[str, ...], user_threshold: float) -> dict:
    """(N,) true classes, (N, K) probabilities -> :func:`metrics.model_metrics`, and for K = 2 also the
    figures at 0.5, at the EER threshold and at the user's threshold on P(class 1), with confusion matrices."""
    out = model_metrics(y, probs, classes)
    if probs.shape[1] != 2:
        return out
    score = probs[:, 1]
    for name, t in (("at_0.5", 0.5), ("at_eer_threshold", out["eer_threshold"]), ("at_user_threshold", user_threshold)):
        m = classification_metrics(y, score, t)
        pred = (score >= t).astype(int)
        cm = [[int(((y == a) & (pred == b)).sum()) for b in (0, 1)] for a in (0, 1)]
        out[name] = {k: m[k] for k in ("threshold", "accuracy", "precision", "recall", "f1")} | {"confusion": cm}
    return out


def retrain(cfg: Config, run_dir: Path, journal: Path | None = None, overwrite: bool = False,
            progress: bool = True) -> dict:
    """Train, evaluate and export the final model into ``run_dir/final``. Returns metrics.json's content.

    Holds ``run_dir/.final.lock`` throughout: a second retrain of the same run is refused."""
    from pseudolabel.core.runstate import output_lock
    from pseudolabel.models.weights import resolve_all

    resolve_all(cfg, "retrain")  # missing weights: one line, before anything is written
    with output_lock(Path(run_dir) / "final", what="retrain"):
        return _retrain_locked(cfg, Path(run_dir), journal, overwrite, progress)


def _retrain_locked(cfg: Config, run_dir: Path, journal: Path | None, overwrite: bool, progress: bool) -> dict:
    from pseudolabel.core.runstate import publish, write_manifest
    from pseudolabel.serve.predict import export_model

    t0 = time.perf_counter()
    out = run_dir / "final"
    if os.path.lexists(out) and not overwrite:
        raise ValueError(f"{out} already exists; use --overwrite to replace it")
    runstate.check_replaceable(out)
    problems = Problems()
    data = gather(cfg, run_dir, Path(journal) if journal else journal_path_for(run_dir), problems)
    partial = runstate.prepare_output(out, "final")
    try:
        rc = cfg.retrain
        pretrained: list = []  # the first member right after pretraining (the latent study looks at it)
        module, members, histories = train_members(cfg, data, partial, progress, cache=run_dir / CACHE,
                                                   snapshot=pretrained)  # fmt: skip
        held = module.__dict__.pop("val_probs", None)  # a frozen head refits with the validation labels once measured
        probs = np.asarray(held, np.float64) if held is not None else \
            predict_probs(module, data.x_val).numpy().astype(np.float64)  # fmt: skip
        metrics = evaluate_final(data.y_val, probs, cfg.classes, rc.threshold_user)
        from pseudolabel.config.values import is_none
        from pseudolabel.models.weights import resolve_all

        final = resolve_all(cfg, "retrain").get("final model")  # resolved before training: remembered
        metrics.update(backbone=rc.backbone, tta=rc.tta, train=rc.train, finetune=rc.train,
                       weights=final.record() if final else None,
                       pretrain=rc.pretrain if rc.pretrain_epochs and is_none(rc.pretrained) else "none",
                       probe=rc.probe, parameters=sum(p.numel() for p in module.parameters()),
                       train_seconds=round(sum(m["train_seconds"] for m in members), 1),
                       pretrain_seconds=round(sum(m["pretrain_seconds"] for m in members), 1), members=members,
                       counts=data.counts, problems=problems.lines)  # fmt: skip
        if rc.study:
            metrics["latent"] = study_latent(cfg, pretrained[0], data, partial)
        export_model(module, cfg, partial)
        report.final_plots(data.y_val, probs, list(cfg.classes), metrics["confusion"], histories, partial)
        dump_config(cfg, partial / "config.yaml")
        metrics["seconds"] = round(time.perf_counter() - t0, 1)
        (partial / "metrics.json").write_text(json.dumps(metrics, indent=2))
        write_manifest(partial)
        publish(partial, out)
    except BaseException as exc:
        shutil.rmtree(partial, ignore_errors=True)
        failed = runstate.write_error(exc, out)
        if failed is not None:
            raise failed from None
        raise
    if metrics.get("weights") and (run_dir / runstate.RUN_JSON).is_file():  # run.json keeps every model's weights
        info = runstate.RunInfo.load(run_dir)
        dataclasses.replace(info, weights={**(info.weights or {}), "final model": metrics["weights"]}).save(run_dir)
    if (run_dir / report.RUN_SUMMARY).is_file():
        report.render(run_dir)
    write_manifest(run_dir)  # the run's report changed
    return metrics
