"""Pretrained weights: one way to name them for every model, found and fetched by the libraries' own code.

A model's ``pretrained:`` value is one of:

- ``none``: from scratch;
- ``imagenet``: the library's own default ImageNet weights for the architecture: timm's default
  pretrained tag (``resnet50`` -> ``timm/resnet50.a1_in1k``), ultralytics' ``yolov8{n,s,m}-cls.pt``;
- ``timm/<model>.<tag>``: a timm model on the Hugging Face hub (its architecture is in the name);
- ``hf-hub:<org>/<repo>``: any timm-compatible hub repository (its architecture is in its config.json);
- a local file: a state dict (``.pt``, ``.pth``, ``.safetensors``) or an ultralytics checkpoint.

timm weights live in huggingface_hub's cache (``$HF_HOME/hub``, ``HF_HUB_OFFLINE`` honoured), ultralytics
weights in its weights folder (:func:`pseudolabel.models.yolo.weights_dirs`). :func:`resolve` finds them there,
or, where the hub can be reached, has the library download them; with no route it answers within
seconds with one line saying what to do. Nothing here downloads by itself.
"""
from __future__ import annotations

import functools
import hashlib
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path

from pseudolabel.config.values import is_none

NONE, IMAGENET = "none", "imagenet"
TIMM, YOLO = "timm", "yolo"  # the two families of weights: a timm architecture, or a YOLOv8-cls variant
HF_HOST, YOLO_HOST = "huggingface.co", "github.com"  # where each library downloads from
PROBE_SECONDS = 3.0  # how long the network is given to answer before we say there is no route
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")  # what timm reads from a hub repository, in its order


@dataclass(frozen=True)
class Weights:
    """Resolved weights of one model: ``name`` as a user would write it, ``family`` (timm or yolo),
    ``arch`` (a timm architecture with its tag, or a YOLO checkpoint name), ``path`` (the file that is
    loaded), ``source`` (where it was found) and its ``sha256``. ``mean``/``std``: the inputs it expects."""

    name: str
    family: str
    arch: str
    path: Path
    source: str
    sha256: str
    mean: tuple[float, ...] = (0.0, 0.0, 0.0)
    std: tuple[float, ...] = (1.0, 1.0, 1.0)

    def record(self) -> dict:
        """What run.json keeps of it."""
        return {"name": self.name, "arch": self.arch, "source": self.source, "file": str(self.path),
                "sha256": self.sha256, "mean": list(self.mean), "std": list(self.std)}  # fmt: skip


YOLO_NAME = re.compile(r"yolo(v8|11|26)[nsmlx]-cls\.pt")  # an ultralytics checkpoint by name (its own hub)


def is_file_spec(spec: str) -> bool:
    """A local file, not a name on a hub: anything that exists, and anything that is not ``imagenet``,
    ``timm/...``, ``hf-hub:...`` or an ultralytics name such as ``yolov8n-cls.pt``."""
    s = str(spec)
    if Path(s).expanduser().exists():
        return True
    return not (s.lower() == IMAGENET or s.startswith(("timm/", "hf-hub:")) or YOLO_NAME.fullmatch(s))


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


# ----------------------------------------------------------------------------- names


def timm_hub_id(spec: str, arch: str) -> str:
    """The hub repository of a timm value: ``imagenet`` -> timm's default tag of ``arch``
    (``timm/resnet50.a1_in1k``); ``timm/x.tag`` and ``hf-hub:org/repo`` as they are."""
    if spec.lower() == IMAGENET:
        from timm.models import get_pretrained_cfg

        cfg = get_pretrained_cfg(arch)
        if cfg is None or not cfg.hf_hub_id:
            raise ValueError(f"timm has no ImageNet weights for {arch!r} on the hub; set pretrained: none or a file")
        return cfg.hf_hub_id
    if spec.startswith("hf-hub:"):
        return spec.removeprefix("hf-hub:")
    if spec.startswith("timm/"):
        return spec
    raise ValueError(f"pretrained {spec!r}: expected none, imagenet, timm/<model>.<tag>, hf-hub:<org>/<repo> or a "
                     "weights file")


def yolo_file(spec: str, variant: str) -> str:
    """The ultralytics checkpoint name of a YOLO value: ``imagenet`` -> ``yolov8{variant}-cls.pt``."""
    if spec.lower() == IMAGENET:
        return f"yolov8{variant}-cls.pt"
    if YOLO_NAME.fullmatch(spec):
        return spec
    raise ValueError(f"pretrained {spec!r} for yolov8-cls: expected none, imagenet, an ultralytics name such as "
                     "yolov8n-cls.pt, or a checkpoint file")


def describe(spec: str, family: str, arch: str) -> str:
    """What a value names, without any I/O beyond timm's registry: ``timm/resnet50.a1_in1k``,
    ``yolov8n-cls.pt`` or the file's path."""
    if is_none(spec):
        return NONE
    if is_file_spec(spec):
        return str(Path(spec).expanduser())
    return timm_hub_id(spec, arch) if family == TIMM else yolo_file(spec, arch)


# ----------------------------------------------------------------------------- where they are


def offline() -> bool:
    """``PSEUDOLABEL_OFFLINE=1``: never try a hub, for any library (HF_HUB_OFFLINE does so for timm's)."""
    return os.environ.get("PSEUDOLABEL_OFFLINE", "").lower() in ("1", "true", "yes")


def hf_cache() -> Path:
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def hf_offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE) or os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")


def hf_cached(repo: str, filename: str) -> Path | None:
    """The cached file of a hub repository (huggingface_hub's own lookup), or None."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo, filename)
    return Path(found) if isinstance(found, str) else None


def reachable(host: str, port: int = 443, seconds: float = PROBE_SECONDS) -> bool:
    """Whether a TCP connection to ``host`` opens within ``seconds`` (name lookup included: it runs in a
    thread, so a resolver that never answers cannot hold us longer)."""
    import socket

    ok: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=seconds):
                ok.append(True)
        except OSError:
            ok.append(False)

    t = threading.Thread(target=probe, daemon=True)
    t.start()
    t.join(seconds)
    return bool(ok and ok[0])


class NotHere(ValueError):
    """Weights neither cached nor reachable: one line saying what to do; ``places`` where they were looked for."""

    def __init__(self, message: str, places: list[str]):
        super().__init__(message)
        self.places = places


def _missing(name: str, model: str, places: list[str], host: str, why: str) -> NotHere:
    return NotHere(f"pretrained weights {name} for {model} are not here (looked in {'; '.join(places)}) and "
                   f"{why}: run `pseudolabel weights fetch {name}` where there is network and copy "
                   f"{places[0]} to this machine, or set pretrained: none", places)  # fmt: skip


def _timm(spec: str, arch: str, model: str, fetch: bool) -> Weights:
    repo = timm_hub_id(spec, arch)
    name = repo if spec.lower() == IMAGENET or spec.startswith("timm/") else spec
    path = next((p for p in (hf_cached(repo, f) for f in WEIGHT_FILES) if p is not None), None)
    config = hf_cached(repo, "config.json")
    need_config = spec.startswith("hf-hub:")
    if path is None or (need_config and config is None):
        places = [str(hf_cache() / f"models--{repo.replace('/', '--')}")]
        if hf_offline() or offline():
            raise _missing(name, model, places, HF_HOST, "HF_HUB_OFFLINE is set" if hf_offline() else
                           "PSEUDOLABEL_OFFLINE is set")
        if not fetch or not reachable(HF_HOST):
            raise _missing(name, model, places, HF_HOST, f"{HF_HOST} cannot be reached")
        download(name)
        return _timm(spec, arch, model, fetch=False)
    mean, std, timm_arch = _timm_norm(repo, config, arch)
    return Weights(name, TIMM, timm_arch, path, "huggingface_hub cache", sha256_of(path), mean, std)


def _timm_norm(repo: str, config: Path | None, arch: str) -> tuple[tuple, tuple, str]:
    """(mean, std, timm architecture with tag) of a hub repository: from its config.json when cached,
    else from timm's registry entry for the repository's name."""
    import json

    from timm.models import get_pretrained_cfg

    if config is not None:
        try:
            c = json.loads(config.read_text())
            pc = c.get("pretrained_cfg", {})
            if "mean" in pc and "std" in pc:
                return tuple(pc["mean"]), tuple(pc["std"]), c.get("architecture", arch) + (
                    f".{pc['tag']}" if pc.get("tag") else "")
        except (ValueError, OSError, AttributeError, TypeError):
            pass
    tagged = repo.split("/", 1)[1] if repo.startswith("timm/") else arch
    cfg = get_pretrained_cfg(tagged) or get_pretrained_cfg(arch)
    return tuple(cfg.mean), tuple(cfg.std), tagged


def _yolo(spec: str, variant: str, model: str, fetch: bool) -> Weights:
    from pseudolabel.models import yolo

    name = yolo_file(spec, variant)
    dirs = yolo.weights_dirs()
    path = next((d / name for d in dirs if (d / name).is_file()), None)
    if path is None:
        places = [str(d) for d in dirs]
        if offline():
            raise _missing(name, model, places, YOLO_HOST, "PSEUDOLABEL_OFFLINE is set")
        if not fetch or not reachable(YOLO_HOST):
            raise _missing(name, model, places, YOLO_HOST, f"{YOLO_HOST} cannot be reached")
        download(name)
        return _yolo(spec, variant, model, fetch=False)
    return Weights(name, YOLO, name, path, "ultralytics weights folder", sha256_of(path))


def _file(spec: str, family: str, arch: str) -> Weights:
    path = Path(spec).expanduser()
    if not path.is_file():
        raise ValueError(f"pretrained weights file not found: {spec}")
    if family == YOLO:
        return Weights(str(path), YOLO, path.name, path, "file", sha256_of(path))
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(arch)
    mean, std = (tuple(cfg.mean), tuple(cfg.std)) if cfg else ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    return Weights(str(path), TIMM, arch, path, "file", sha256_of(path), mean, std)


@functools.lru_cache(maxsize=64)
def resolve(spec: str, family: str, arch: str, model: str = "the model", fetch: bool = True) -> Weights | None:
    """The weights ``spec`` names for a model of ``family`` (timm: ``arch`` is its architecture; yolo:
    ``arch`` is its variant n, s or m), found in the library's cache or a file; None for ``none``.
    Not cached: downloaded by the library when its hub answers (``fetch``), else a ValueError of one line
    naming the weights, the places looked in and the two fixes, within :data:`PROBE_SECONDS`.
    Remembered per process: a command resolves every model's weights before any work, once."""
    if is_none(spec):
        return None
    spec = str(spec).strip()
    if is_file_spec(spec):
        return _file(spec, family, arch)
    return _timm(spec, arch, model, fetch) if family == TIMM else _yolo(spec, arch, model, fetch)


def download(name: str) -> Path:
    """Fetch weights by name through the library that owns them (``pseudolabel weights fetch``):
    ``timm/<model>.<tag>``, ``hf-hub:<org>/<repo>`` or a timm architecture (its default tag) through
    huggingface_hub into its cache; ``yolov8{n,s,m}-cls.pt`` through ultralytics' download helper into
    its weights folder. Returns the file."""
    from pseudolabel.models import yolo

    if name.endswith("-cls.pt"):
        return yolo.download(name)
    from huggingface_hub import hf_hub_download
    from huggingface_hub.utils import EntryNotFoundError

    if not name.startswith(("timm/", "hf-hub:")):
        name = timm_hub_id(IMAGENET, name)  # a bare architecture: its default ImageNet tag
    repo = name.removeprefix("hf-hub:")
    try:
        hf_hub_download(repo, "config.json")
    except EntryNotFoundError:
        pass
    for filename in WEIGHT_FILES:
        try:
            return Path(hf_hub_download(repo, filename))
        except EntryNotFoundError:
            continue
    raise ValueError(f"{name}: the hub repository has none of {', '.join(WEIGHT_FILES)}")


# ----------------------------------------------------------------------------- a pipeline's models


def pipeline_models(cfg, command: str = "all") -> list[tuple[str, str, str, str, str]]:
    """(model, backbone, pretrained value, family, arch) of every model ``command`` (run, retrain, compare or
    all) builds from ``cfg``, skipping those from scratch."""
    out = []

    def add(model: str, backbone: str, spec: str, arch: str | None = None, variant: str = "n") -> None:
        if is_none(spec) or backbone == "tinycnn":
            return
        if backbone == "yolov8-cls":
            out.append((model, backbone, spec, YOLO, variant))
        else:
            out.append((model, backbone, spec, TIMM, arch or backbone))

    if command in ("run", "all"):
        for m in cfg.models:
            sec = cfg.section(m)
            add(m, m, sec.pretrained, sec.arch if m == "resnet50" else None, sec.variant)
        lc = cfg.label_check
        first = cfg.section(cfg.models[0])
        if first.train != "frozen":
            spec = checker_weights(cfg)
            add("label check", lc.backbone, spec, None, first.variant if lc.backbone == cfg.models[0] else "n")
    if command in ("retrain", "all"):
        r = cfg.retrain
        add("final model", r.backbone, r.pretrained, None, r.variant)
    if command in ("compare", "all"):
        import re as _re

        for b in cfg.compare.backbones:
            m = _re.match(r"^yolov8([nsmlx])-cls$", b)
            add(f"compare {b}", "yolov8-cls" if m else b, cfg.compare.pretrained, None, m.group(1) if m else "n")
    return out


def checker_weights(cfg) -> str:
    """The label check's weights: its own ``pretrained``, or with ``auto`` the first seed model's when the
    checker is that model's kind (its ImageNet weights otherwise, when the first seed model has weights)."""
    lc = cfg.label_check
    if lc.pretrained != "auto":
        return lc.pretrained
    first = cfg.section(cfg.models[0])
    if is_none(first.pretrained):
        return NONE
    return first.pretrained if lc.backbone == cfg.models[0] else IMAGENET


def resolve_all(cfg, command: str, fetch: bool = True) -> dict[str, Weights]:
    """Every pretrained model ``command`` will build, resolved now, before any work: {model: Weights}.
    A missing one is the ValueError of :func:`resolve` (one line, within seconds)."""
    return {m: resolve(spec, fam, arch, m, fetch) for m, _, spec, fam, arch in pipeline_models(cfg, command)}
