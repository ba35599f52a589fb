"""Pipeline configuration: a frozen dataclass loaded from ``pipelines/<name>.yaml``.

Unknown keys are an error (no silent typos). CLI flags override the file through
:func:`with_overrides`. The resolved config is written into the run folder.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .vote import check_margin


@dataclass(frozen=True)
class SeedTrainConfig:
    """How one seed model is trained on the ~80 seed labels."""

    epochs: int = 60  # maximum passes over the seed training split
    batch_size: int = 16  # images per optimisation step
    lr: float = 1e-3  # peak learning rate (AdamW for resnet50, ultralytics' AdamW for yolo)
    weight_decay: float = 5e-4  # L2 penalty on the weights
    patience: int = 15  # stop after this many epochs without a better validation loss
    variant: str = "n"  # yolov8-cls size: n, s or m (ignored by resnet50)
    stem: str = "upsample"  # resnet50 input adaptation: "upsample" (stock stem) or "stride1" (3x3 stem, no maxpool)
    input_size: int = 32  # resnet50 with stem=upsample: the input is resized to this many pixels
    tta: bool = True  # average the prediction over the image and its horizontal flip
    fixmatch_epochs: int = 0  # after supervised training: FixMatch epochs over the pool (0 = off)
    fixmatch_lr: float = 0.01  # FixMatch SGD learning rate (cosine-decayed)


@dataclass(frozen=True)
class RetrainConfig:
    """The final model: FixMatch on the merged set (USB/semilearn defaults, adapted to tiny crops)."""

    backbone: str = "tinycnn"  # "tinycnn" (72 k params, at 24 px), "yolov8-cls" or any timm model name
    variant: str = "n"  # yolov8-cls size: n, s or m
    input_size: int = 32  # the network sees images resized to this many pixels
    members: int = 2  # networks trained apart (own seed, own pretraining) and averaged into one exported model;
    # each member adds one full training to the retrain time. 2 lowered the dev EER on all three seed runs
    pretrain_epochs: int = 60  # SimCLR passes over the pool before any label is seen (0 = none); 2-5 min here
    pretrain_temperature: float = 0.2  # SimCLR softmax temperature
    warmup_epochs: int = 8  # supervised passes over the labeled set first (AdamW); FixMatch starts from there
    epochs: int = 100  # FixMatch passes over the unlabeled set; dev accuracy still climbs at 100 (measured)
    batch_size: int = 32  # labeled images per step
    mu: int = 4  # unlabeled images per labeled image in a step
    tau: float = 0.9  # confidence threshold on the weak view; USB's 0.95 measured 0.1-0.2 points lower, 0.8 no better
    threshold: str = "fixed"  # "fixed" (tau) or "dynamic" (FlexMatch class-wise thresholds); dynamic lifted one
    # network 0.1-0.2 points but not the two-member average (measured), so fixed
    lambda_u: float = 1.0  # weight of the unlabeled loss
    weak_shift: str = "crop"  # the weak view's shift: whole-pixel pad-and-crop (USB's) or sub-pixel "bilinear"
    # resampling, which blurs the view a little; crop + tta scored 0.1-0.3 points higher on each of three seed runs
    lr: float = 0.01  # SGD (momentum 0.9, Nesterov), cosine-decayed; 0.02 and USB's 0.03 measured level with it
    # on three seed runs for the final model (0.03 knocked the warmed-up seed teacher back), so 0.01
    weight_decay: float = 5e-4  # L2 penalty
    ema: float = 0.999  # EMA decay; the EMA weights are evaluated and exported
    patience: int = 15  # with monitor loss or accuracy: stop after this many epochs without a better one
    monitor: str = "last"  # the kept epoch: the "last" (no early stop), lowest validation "loss" or top "accuracy"
    vote_weight: float = 0.5  # weight of images labeled only by the vote (human labels weigh 1)
    unlabeled: str = "pool"  # "pool": every image is also unlabeled data; "unclear": only unclear/
    review_val_share: float = 0.5  # share of reviewed images held out for validation
    threshold_user: float = 0.5  # an extra decision threshold to report figures at
    tta: str = "flip+shift"  # test-time augmentation in the exported model: "none", "flip" (2 views) or
    # "flip+shift" (10 views: the image and its mirror, each also moved 1 px four ways)


MONITORS = ("last", "loss", "accuracy")  # which FixMatch epoch is kept (see fixmatch.improved)
TTA_MODES = ("none", "flip", "flip+shift")  # what retrain.tta accepts (see augment.tta_views)
WEAK_SHIFTS = ("bilinear", "crop")  # the weak view's shift: sub-pixel resampling or whole-pixel pad-and-crop
BACKBONE_HELP = "'tinycnn', 'yolov8-cls' or any timm model name"  # what retrain.backbone accepts


@dataclass(frozen=True)
class LabelCheckConfig:
    """Likely-wrong labels in ``pseudolabel run``: cleanlab on out-of-fold probabilities."""

    enabled: bool = True  # flag likely-wrong seed labels and vote decisions, and queue them first for review
    folds: int = 4  # out-of-fold probabilities from this many small CNNs, each trained without one fold
    epochs: int = 6  # supervised passes of each fold's CNN (yolov8n-cls)
    max_train: int = 1000  # each fold's CNN trains on at most this many labeled images (all seed labels included)
    max_share: float = 0.03  # flag at most this share of the labeled images, least trustworthy first


@dataclass(frozen=True)
class ResortConfig:
    """``pseudolabel resort``: the final model re-decides every image only a machine has placed."""

    closed_below: float = 0.05  # to 0/ when the final model's P(open) <= this; with the settings below it left
    # 10.6 % of the pool unclear at 99.03 % (0/) and 99.08 % (1/) precision, mean of three seed runs, and 11.5 %
    # at 99.04 / 99.06 % on three seeds that chose nothing (measured)
    open_above: float = 0.998  # to 1/ when P(open) >= this; stricter than closed_below because the final
    # model's few confident mistakes are nearly all closed eyes called open (measured)
    keep_agreed: float = 0.9  # an image still where the seed models' vote put it stays when the final model
    # agrees at >= this (P(open) >= 0.9 in 1/, <= 0.1 in 0/); 1.0 = off. 43-62 images per seed run stayed
    # out of unclear/ this way, 39 of their 40 dev-labeled ones right (measured)
    settle_flagged: bool = True  # the final model also re-decides vote decisions the label check flagged (it never
    # trained on their labels); False leaves them all for a person. Seed labels it flagged always stay for a person


@dataclass(frozen=True)
class Config:
    """Everything one pipeline needs. Paths are relative to the working directory."""

    name: str = "eyes"  # pipeline name; the default run folder is runs/<name>/
    images: str = "data/eyes/images"  # folder of unlabeled images, read recursively
    labels: str = "data/eyes/targets.json"  # seed labels: JSON, CSV or a folder of class folders
    classes: tuple[str, ...] = ("closed", "open")  # class names for label 0 and label 1
    image_size: int = 24  # every image is resized to image_size x image_size
    channels: int = 1  # 1 = grayscale, 3 = RGB
    n_train: int = 80  # seed labels used to train; the rest validate (stratified split)
    seed: int = 0  # random seed for the split, the augmentations and the models
    margin: float | tuple[float, float] = 0.3  # decided when each score is >= 0.5 + margin (open) or <= 0.5 - margin
    # (closed); one number for both models or one per model, in the order of `models`
    teacher_conf: float = 0.8  # the second model also learns from pool images the first scores this confidently
    student_max: int = 1500  # at most this many such pool images (random, seeded); 0 = seeds only
    review_curve: str | None = None  # a measured review-effort curve (JSON by benchmarks/review_curve.py) that the
    # run report shows, so users see what reviewing buys; None = no such section
    limit: int | None = None  # use only the first N pool images (quick trials); None = all
    models: tuple[str, ...] = ("yolov8-cls", "resnet50")  # the two voters; the first also teaches the second
    pretrained: str | None = None  # local weights file for resnet50 (no model hub); None = from scratch
    resnet50: SeedTrainConfig = field(default_factory=SeedTrainConfig)  # resnet50 training settings
    yolo: SeedTrainConfig = field(default_factory=SeedTrainConfig)  # yolov8-cls training settings
    retrain: RetrainConfig = field(default_factory=RetrainConfig)  # the final model (pseudolabel retrain)
    label_check: LabelCheckConfig = field(default_factory=LabelCheckConfig)  # find likely-wrong labels (cleanlab)
    resort: ResortConfig = field(default_factory=ResortConfig)  # re-sorting with the final model (pseudolabel resort)

    def __post_init__(self) -> None:
        _validate(self)


_NESTED = {"resnet50": SeedTrainConfig, "yolo": SeedTrainConfig, "retrain": RetrainConfig,
           "label_check": LabelCheckConfig, "resort": ResortConfig}


def _validate(cfg: Config) -> None:
    if len(cfg.classes) != 2 or len(set(cfg.classes)) != 2:
        raise ValueError(f"classes must be two distinct names, got {list(cfg.classes)!r}")
    check_margin(cfg.margin)
    if cfg.image_size < 4:
        raise ValueError(f"image_size must be at least 4, got {cfg.image_size!r}")
    if cfg.channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {cfg.channels!r}")
    if cfg.n_train < 2:
        raise ValueError(f"n_train must be at least 2, got {cfg.n_train!r}")
    if not 0.5 <= cfg.teacher_conf <= 1.0:
        raise ValueError(f"teacher_conf must be in [0.5, 1], got {cfg.teacher_conf!r}")
    if cfg.student_max < 0:
        raise ValueError(f"student_max must be 0 or more, got {cfg.student_max!r}")
    if cfg.limit is not None and cfg.limit < 1:
        raise ValueError(f"limit must be positive, got {cfg.limit!r}")
    if len(cfg.models) != 2:
        raise ValueError(f"models must name exactly two seed models, got {list(cfg.models)!r}")
    r = cfg.retrain
    for key, allowed in (("threshold", ("fixed", "dynamic")), ("monitor", MONITORS),
                         ("unlabeled", ("pool", "unclear")), ("tta", TTA_MODES),
                         ("weak_shift", WEAK_SHIFTS)):  # fmt: skip
        if getattr(r, key) not in allowed:
            raise ValueError(f"retrain {key} must be one of {allowed}, got {getattr(r, key)!r}")
    if not (0.0 <= r.vote_weight <= 1.0 and 0.0 <= r.review_val_share <= 1.0 and 0.0 < r.tau <= 1.0):
        raise ValueError(f"retrain: vote_weight, review_val_share and tau must lie in [0, 1], got {r!r}")
    if not isinstance(r.members, int) or r.members < 1:
        raise ValueError(f"retrain members must be a whole number >= 1, got {r.members!r}")
    if r.pretrain_epochs < 0 or r.pretrain_temperature <= 0:
        raise ValueError(f"retrain: pretrain_epochs >= 0 and pretrain_temperature > 0, got "
                         f"{r.pretrain_epochs!r} and {r.pretrain_temperature!r}")  # fmt: skip
    rs = cfg.resort
    if not 0.0 <= rs.closed_below < 0.5 < rs.open_above <= 1.0:
        raise ValueError(f"resort: need 0 <= closed_below < 0.5 < open_above <= 1, got closed_below="
                         f"{rs.closed_below!r}, open_above={rs.open_above!r}")  # fmt: skip
    if not 0.5 < rs.keep_agreed <= 1.0:
        raise ValueError(f"resort: keep_agreed must be in (0.5, 1], got {rs.keep_agreed!r}")
    if not isinstance(rs.settle_flagged, bool):
        raise ValueError(f"resort: settle_flagged must be true or false, got {rs.settle_flagged!r}")
    lc = cfg.label_check
    if lc.folds < 2 or lc.epochs < 1 or lc.max_train < 2 or not 0.0 <= lc.max_share <= 1.0:
        raise ValueError(f"label_check: folds >= 2, epochs >= 1, max_train >= 2, max_share in [0, 1]; got {lc!r}")
    for sub in (cfg.resnet50, cfg.yolo):
        if sub.variant not in ("n", "s", "m"):
            raise ValueError(f"yolo variant must be n, s or m, got {sub.variant!r}")
        if sub.stem not in ("stride1", "upsample"):
            raise ValueError(f"resnet50 stem must be 'stride1' or 'upsample', got {sub.stem!r}")
        if sub.epochs < 1 or sub.batch_size < 1:
            raise ValueError(f"epochs and batch_size must be positive, got {sub.epochs!r}, {sub.batch_size!r}")


def _build(cls: type, data: dict[str, Any], where: str) -> Any:
    """Build dataclass ``cls`` from ``data``; unknown keys raise ValueError naming them."""
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected a mapping, got {type(data).__name__}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    kwargs = {}
    for key, value in data.items():
        if cls is Config and key in _NESTED:
            value = _build(_NESTED[key], value or {}, f"{where}:{key}")
        elif isinstance(value, list):
            value = tuple(value)
        kwargs[key] = value
    return cls(**kwargs)


def load_config(path: str | Path) -> Config:
    """Load a pipeline YAML file with ``yaml.safe_load``; unknown keys are an error."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"pipeline file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML ({exc})") from None
    return _build(Config, data, str(path))


def with_overrides(cfg: Config, **overrides: Any) -> Config:
    """Return ``cfg`` with the non-None ``overrides`` applied (CLI flags win over the file).

    Nested keys use a dot: ``{"yolo.epochs": 5}``.
    """
    top: dict[str, Any] = {}
    nested: dict[str, dict[str, Any]] = {}
    for key, value in overrides.items():
        if value is None:
            continue
        if "." in key:
            section, sub = key.split(".", 1)
            nested.setdefault(section, {})[sub] = value
        else:
            top[key] = value
    for section, values in nested.items():
        top[section] = dataclasses.replace(getattr(cfg, section), **values)
    return dataclasses.replace(cfg, **top)


def to_dict(cfg: Config) -> dict[str, Any]:
    """Plain-Python view of ``cfg`` (tuples become lists) for writing as YAML."""

    def plain(v: Any) -> Any:
        if isinstance(v, (tuple, list)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(dataclasses.asdict(cfg))


def dump_config(cfg: Config, path: str | Path) -> None:
    """Write the resolved config as YAML (it loads back with :func:`load_config`)."""
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
