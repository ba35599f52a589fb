"""Shared fixtures: real eye crops from ../shared/data/eyes (never copied into the repo)."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# decoded pools go to one cache per test session (CLI subprocesses inherit it), never to the user's ~/.cache
os.environ.setdefault("PSEUDOLABEL_CACHE", tempfile.mkdtemp(prefix="pseudolabel-cache-"))
EYES = Path(os.environ.get("PSEUDOLABEL_EYES", ROOT.parent / "shared" / "data" / "eyes"))


@pytest.fixture(scope="session")
def eyes() -> Path:
    """The real eyes data folder. Missing data is an error, not a skip."""
    if not (EYES / "images").is_dir():
        pytest.fail(f"real test data not found at {EYES} (set PSEUDOLABEL_EYES)")
    return EYES


def copy_crops(eyes: Path, dst: Path, n: int = 300) -> Path:
    """A private copy of the first ``n`` real crops in ``dst`` (all seed-labeled images are among the first 300)."""
    dst.mkdir()
    for name in sorted(os.listdir(eyes / "images"))[:n]:
        shutil.copy2(eyes / "images" / name, dst / name)
    return dst


@pytest.fixture
def small_pool(eyes: Path, tmp_path: Path) -> Path:
    """A private copy of the first 300 real crops."""
    return copy_crops(eyes, tmp_path / "images")


def tree_digest(root: Path) -> dict[str, tuple[str, int]]:
    """{relative path: (sha256, mtime_ns)} of every file below root."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            out[p.relative_to(root).as_posix()] = (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
    return out


def make_run(tmp_path: Path, eyes_dir: Path, n: int = 60, seed: int = 0) -> Path:
    """A run folder over n real crops with fixed fake scores (no training): the real vote and
    sort code place the files; predictions.csv, scores/, run.json and config.yaml look like
    `pseudolabel run`'s."""
    import numpy as np
    import yaml

    from pseudolabel.core.vote import binary_probs

    images = tmp_path / "images"
    images.mkdir()
    names = sorted(os.listdir(eyes_dir / "images"))[:n]
    for name in names:
        shutil.copy2(eyes_dir / "images" / name, images / name)
    rng = np.random.default_rng(seed)
    a, b = binary_probs(rng.random(n)), binary_probs(rng.random(n))
    run = tmp_path / "run"
    place_fake_run(run, images, names, (a, b), 0.8, ("closed", "open"), ("0", "1"))
    (run / "config.yaml").write_text(yaml.safe_dump({"name": "eyes-test", "classes": ["closed", "open"]}))
    return run


def place_fake_run(run: Path, images: Path, names: list[str], scores: tuple, threshold: float,
                   classes: tuple[str, ...], folders: tuple[str, ...]) -> None:
    """What `pseudolabel run` writes after its seed models, from the given (N, K) ``scores`` of the
    two models: the real vote and sort code place the files; predictions.csv, scores/, run.json and
    run_summary.json follow."""
    from pseudolabel.core import runstate, sort
    from pseudolabel.core.vote import vote

    v = vote(*scores, threshold=threshold)
    placements = sort.plan(names, v.decision, v.rank, folders)
    sort.materialize(placements, images, run, folders)
    rows = [{"image": p.image, "file": f"{p.folder}/{p.file}", "decision": p.folder,
             "queue_rank": v.rank[i] if p.folder == "unclear" else "", "source": "vote", "issue": ""}
            for i, p in enumerate(placements)]  # fmt: skip
    (run / "predictions.csv").write_text(runstate.predictions_text(rows))
    for model, probs in zip(("yolov8-cls", "resnet50"), scores):
        runstate.save_scores(run, model, probs)
    runstate.RunInfo("fake" + run.name, classes, folders, ("yolov8-cls", "resnet50")).save(run)
    write_summary(run, v.decision, folders, classes)


def write_summary(run: Path, decision, folders: tuple[str, ...], classes=("closed", "open")) -> None:
    """The run_summary.json `pseudolabel run` would write, for a run made by hand (the report renders from it)."""
    from pseudolabel.core import runstate

    summary = {"pipeline": "test", "rule": "a fake vote", "counts": runstate.folder_counts(decision, folders),
               "classes": list(classes), "folders": list(folders), "models": ["yolov8-cls", "resnet50"],
               "n_student": 0, "n_seed": 0, "n_train": 0, "n_val": 0, "agreement": 0.5, "disagree": 0, "seconds": {},
               "issues": {}, "metrics": {}, "problems": []}  # fmt: skip
    (run / "run_summary.json").write_text(json.dumps(summary))


def mark_issue(run: Path, note: str) -> str:
    """Give the first queue image of ``run`` the label check's ``note`` (an ``issue`` in
    predictions.csv, as `pseudolabel run` writes it). Returns that image's name."""
    from pseudolabel.core import runstate

    rows = runstate.read_predictions(run)
    first = min((r for r in rows if r["queue_rank"]), key=lambda r: int(r["queue_rank"]))["image"]
    rows = [{**r, "issue": note if r["image"] == first else ""} for r in rows]
    (run / "predictions.csv").write_text(runstate.predictions_text(rows))
    return first


# ----------------------------------------------------------------------------- the CLI and tiny pipelines

FAST = {"retrain.epochs": 12, "retrain.ema": 0.9, "retrain.mu": 2, "retrain.patience": 12, "retrain.pretrain_epochs": 3,
        "retrain.epoch_steps": 5, "retrain.pretrain_epoch_steps": 1}  # a pass over a 300-image pool each


def write_pipeline(tmp_path: Path, images: Path, labels: Path) -> Path:
    """A copy of eyes.yaml over ``images`` and ``labels`` with few epochs."""
    import yaml

    cfg = yaml.safe_load((ROOT / "pipelines" / "eyes.yaml").read_text())
    cfg.update(images=str(images), labels=str(labels), student_max=200)
    cfg["yolo"].update(epochs=8, fixmatch_epochs=1, fixmatch_epoch_steps=3)
    cfg.setdefault("retrain", {}).update(epoch_steps=3, pretrain_epoch_steps=1)  # a pass over 300 images each
    cfg["resnet50"].update(epochs=1)
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def run_cli(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    """`pseudolabel ARGS` in a fresh interpreter (``env``: variables to add to this process's)."""

    return subprocess.run([sys.executable, "-m", "pseudolabel.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600, env={**os.environ, **(env or {})})  # fmt: skip


def make_seed_run(tmp, eyes, n=300, **overrides):
    """Run folder over n real crops: seed-labeled images in 0/ and 1/, the rest in unclear/, with a
    pipeline of few epochs (``FAST``, then ``overrides``)."""
    import numpy as np

    from pseudolabel.config.schema import dump_config, load_config, with_overrides
    from pseudolabel.core import runstate, sort
    from pseudolabel.data.images import Problems, list_images
    from pseudolabel.data.labels import clean_seed_labels, read_seed_labels, split_seeds

    images = tmp / "images"
    images.mkdir()
    names = sorted(list_images(eyes / "images")[0])[:n]
    for name in names:
        shutil.copy2(eyes / "images" / name, images / name)
    pr = Problems(quiet=True)
    classes = ("closed", "open")
    labels = clean_seed_labels(read_seed_labels(eyes / "targets.json", classes, pr), names, classes, pr, "t")
    train, val = split_seeds(labels, 80, 0)
    decision = np.array([labels.get(x, -1) for x in names])
    rank = np.where(decision < 0, np.cumsum(decision < 0), 0)
    run = tmp / "run"
    cfg = with_overrides(load_config(ROOT / "pipelines" / "eyes.yaml"), images=str(images), **{**FAST, **overrides})
    placements = sort.plan(names, decision, rank, cfg.folders)
    sort.materialize(placements, images, run, cfg.folders)
    source = {x: "seed-train" for x in train} | {x: "seed-val" for x in val}
    rows = [{"image": p.image, "file": f"{p.folder}/{p.file}", "decision": p.folder, "queue_rank": r or "",
             "source": source.get(p.image, "vote"), "issue": ""} for p, r in zip(placements, rank)]  # fmt: skip
    (run / "predictions.csv").write_text(runstate.predictions_text(rows))
    for m in cfg.models:
        runstate.save_scores(run, m, np.full((len(names), 2), 0.5))
    runstate.RunInfo.new(cfg).save(run)
    runstate.mark(run, "run")  # as `pseudolabel run` marks the folders it makes
    dump_config(cfg, run / "config.yaml")
    write_summary(run, decision, cfg.folders)
    return run, images, val, labels


def dev_subset(eyes: Path, n: int):
    """(N, 1, 24, 24) uint8 crops and (N,) true labels of the first ``n`` dev-labeled eyes images."""
    import csv

    import numpy as np

    from pseudolabel.data.images import load_image

    with open(eyes / "dev_labels.csv") as f:
        rows = sorted(csv.DictReader(f), key=lambda r: r["image"])[:n]
    x = np.stack([load_image(eyes / "images" / r["image"], 24, 1) for r in rows])
    return x, np.array([int(r["label"]) for r in rows])


@pytest.fixture
def fake_run(eyes: Path, tmp_path: Path) -> Path:
    return make_run(tmp_path, eyes)


# ----------------------------------------------------------------------------- a generated K = 3 colour set

COLORS = {"red": (200, 40, 40), "green": (40, 170, 60), "blue": (40, 60, 200)}


def make_color_data(root: Path, n_per_class: int = 30, size: tuple[int, int] = (40, 32), seed: int = 0
                    ) -> dict[str, str]:
    """cleanlab's make_data habit: a small generated data set with a known truth. Three classes of
    non-square (height x width) colour JPEGs: a noisy background of the class's colour with a random
    grey bar across it. Writes ``root/<name>.jpg``; returns {name: class}."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    truth = {}
    h, w = size
    for k in range(n_per_class * len(COLORS)):
        cls = list(COLORS)[k % len(COLORS)]
        img = np.clip(np.array(COLORS[cls])[None, None] + rng.normal(0, 35, (h, w, 3)), 0, 255)
        y0 = rng.integers(0, h - 6)
        img[y0 : y0 + 6] = rng.integers(60, 200)
        name = f"img{k:03d}.jpg"
        Image.fromarray(img.astype(np.uint8)).save(root / name, quality=92)
        truth[name] = cls
    return truth


def write_color_pipeline(tmp: Path, images: Path, labels: Path) -> Path:
    """A pipeline for the generated colour set, with as few steps as still run every stage."""
    import yaml

    cfg = {"name": "colors", "images": str(images), "labels": str(labels), "classes": list(COLORS),
           "folder_names": "name", "image_size": [40, 32], "channels": 3, "normalize": "pool", "n_train": 15,
           "threshold": [0.4, 0.34], "student_max": 50,
           "yolo": {"epochs": 3, "fixmatch_epochs": 1, "fixmatch_epoch_steps": 1, "batch_size": 8},
           "resnet50": {"epochs": 1, "batch_size": 16}, "label_check": {"folds": 2, "epochs": 1},
           "retrain": {"members": 1, "pretrain_epochs": 1, "pretrain_epoch_steps": 1, "pretrain_batch_size": 32,
                       "warmup_epochs": 2, "epochs": 2, "epoch_steps": 1, "tta": "flip"},
           "resort": {"accept": 0.5, "keep_agreed": 0.9}}  # fmt: skip
    path = tmp / "colors.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def make_color_run(tmp_path: Path, n: int = 45, seed: int = 0) -> Path:
    """A run folder over the generated colour set with fixed fake (N, 3) scores (no training), as
    :func:`make_run` makes for the eyes: folders red/, green/, blue/ and unclear/."""
    import numpy as np
    import yaml

    images = tmp_path / "cimages"
    make_color_data(images, n_per_class=n // 3, seed=seed)
    names = sorted(p.name for p in images.iterdir())
    rng = np.random.default_rng(seed)
    a, b = rng.dirichlet(np.ones(3) * 0.5, len(names)), rng.dirichlet(np.ones(3) * 0.5, len(names))
    folders = tuple(COLORS)
    run = tmp_path / "crun"
    place_fake_run(run, images, names, (a, b), 0.6, folders, folders)
    (run / "config.yaml").write_text(yaml.safe_dump({"name": "colors-test", "classes": list(folders),
                                                     "folder_names": "name", "channels": 3, "image_size": [40, 32]}))
    return run


# ----------------------------------------------------------------------------- the review server over plain HTTP


def page_token(url: str) -> str:
    """The session token the review server wrote into its page (what only a same-origin reader sees)."""
    import re
    import urllib.request

    html = urllib.request.urlopen(url).read().decode()
    return re.search(r'name="pseudolabel-token" content="([^"]+)"', html).group(1)


def post(url: str, path: str, body, token: str | None, origin: str | None = "same",
         ctype: str | None = "application/json", raw: bytes | None = None) -> tuple[int, dict]:
    """POST to the review server; returns (status, JSON answer). ``origin="same"``: the server's own."""
    import urllib.error
    import urllib.request

    headers = {}
    if ctype:
        headers["Content-Type"] = ctype
    if token:
        headers["X-Pseudolabel-Token"] = token
    if origin:
        headers["Origin"] = url.rstrip("/") if origin == "same" else origin
    data = raw if raw is not None else json.dumps(body).encode()
    req = urllib.request.Request(url.rstrip("/") + path, data=data, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


# ----------------------------------------------------------------------------- Chromium and review servers

CHROMIUM = os.environ.get("PSEUDOLABEL_CHROMIUM", "/usr/bin/chromium")
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run", "--disable-quic"]  # fmt: skip


@pytest.fixture(scope="module")
def browser():
    """Debian's headless Chromium, driven by playwright."""
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"Chromium not found at {CHROMIUM} (apt-get install -y chromium)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        yield b
        b.close()


def serve_state(state, mode: str = "review"):
    """Serve a ReviewState in a thread: yields (url, state) and stops the server after."""
    import threading

    from pseudolabel.review.server import make_server

    server = make_server(state, 0, mode=mode)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/", state
    server.shutdown()
    server.server_close()


def start_review_server(run: Path, journal: Path, *extra: str):
    """`pseudolabel review RUN` as a real process: (process, URL)."""
    proc = subprocess.Popen([sys.executable, "-m", "pseudolabel.cli", "review", str(run), "--no-browser", "--journal",
                             str(journal), *extra], stdout=subprocess.PIPE, text=True, cwd=ROOT)  # fmt: skip
    for line in proc.stdout:
        if line.startswith("open "):
            return proc, line.split()[1]
    raise AssertionError("review server did not print its URL")


# ----------------------------------------------------------------------------- damaged and hostile image files


def image_bytes(fmt: str, size: tuple[int, int] = (24, 24), seed: int = 0, **save) -> bytes:
    """A small noisy RGB image encoded by Pillow as ``fmt`` (PNG, JPEG, TIFF, GIF ...)."""
    import io

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(buf, fmt, **save)
    return buf.getvalue()


def png_with_short_idat(seed: int = 0) -> bytes:
    """A PNG whose IDAT chunk claims 100 bytes less than it holds: Pillow's loader then reads a chunk
    header from the middle of the data and raises SyntaxError ("broken PNG file"), not OSError."""
    import struct

    data = bytearray(image_bytes("PNG", seed=seed))
    at = data.index(b"IDAT") - 4
    (n,) = struct.unpack(">I", data[at : at + 4])
    data[at : at + 4] = struct.pack(">I", n - 100)
    return bytes(data)


def tiff_with_tag_type(tag: int, new_type: int, seed: int = 0) -> bytes:
    """An uncompressed little-endian TIFF whose ``tag`` entry (273 = StripOffsets) is re-typed to
    ``new_type`` (11 = FLOAT, 5 = RATIONAL): Pillow then seeks to a float and raises TypeError."""
    import struct

    data = bytearray(image_bytes("TIFF", seed=seed))
    (ifd,) = struct.unpack_from("<I", data, 4)
    (count,) = struct.unpack_from("<H", data, ifd)
    for k in range(count):
        at = ifd + 2 + 12 * k
        if struct.unpack_from("<H", data, at)[0] == tag:
            struct.pack_into("<H", data, at + 2, new_type)
            return bytes(data)
    raise AssertionError(f"tag {tag} not in the TIFF")


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that states ``width`` x ``height`` in its header and holds no pixels: opening it costs
    nothing, decoding it fails (a stand-in for a huge image, or a decompression bomb over Pillow's limit)."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def _structured(data: bytes, rng) -> bytes | None:
    """A mutation that knows the format: a TIFF tag's type, count or value, a PNG chunk's length, type or
    CRC, a JPEG segment's length. These reach deep into a decoder, where a byte flip rarely does."""
    import struct

    d = bytearray(data)
    if d[:4] == b"II*\x00":
        (ifd,) = struct.unpack_from("<I", d, 4)
        (count,) = struct.unpack_from("<H", d, ifd)
        at = ifd + 2 + 12 * rng.randrange(count)
        field, value = rng.choice([(2, "<H"), (4, "<I"), (8, "<I")])
        choice = rng.choice([0, 1, 2, 3, 5, 11, 12, 16, 255, 0xFFFF, 0x7FFFFFFF, rng.randrange(1 << 16)])
        struct.pack_into(value, d, at + field, choice & (0xFFFF if value == "<H" else 0xFFFFFFFF))
        return bytes(d)
    if d[:8] == b"\x89PNG\r\n\x1a\n":
        chunks, at = [], 8
        while at + 8 <= len(d):
            (n,) = struct.unpack_from(">I", d, at)
            chunks.append(at)
            at += 12 + n
        at = rng.choice(chunks)
        (n,) = struct.unpack_from(">I", d, at)
        part = rng.randrange(3)
        if part == 0:
            struct.pack_into(">I", d, at, max(0, n + rng.choice([-100, -13, -1, 1, 7, 1 << 20])))
        elif part == 1:
            d[at + 4 + rng.randrange(4)] = rng.randrange(256)
        else:
            d[at + 8 + n - 4 + rng.randrange(4) if at + 12 + n <= len(d) else at] ^= 0xFF
        return bytes(d)
    if d[:2] == b"\xff\xd8":
        marks = [i for i in range(2, min(len(d) - 4, 2000)) if d[i] == 0xFF and 0xC0 <= d[i + 1] <= 0xFE]
        if marks:
            at = rng.choice(marks)
            d[at + 2 + rng.randrange(2)] = rng.randrange(256)
            return bytes(d)
    return None


def mutate(data: bytes, rng) -> bytes:
    """A seeded random mutation of ``data``: half the time one that knows the format (:func:`_structured`),
    else flipped, cut, inserted or zeroed bytes, 1-6 of them."""
    if rng.random() < 0.5:
        done = _structured(data, rng)
        if done is not None:
            return done
    d = bytearray(data)
    for _ in range(rng.randint(1, 6)):
        op = rng.random()
        if op < 0.5 and d:
            d[rng.randrange(len(d))] = rng.randrange(256)
        elif op < 0.65 and d:
            d[rng.randrange(min(len(d), 300))] = rng.choice([0, 1, 5, 11, 255])  # headers: types, counts, sizes
        elif op < 0.8:
            d = d[: rng.randrange(len(d) + 1)]
        else:
            p = rng.randrange(len(d) + 1)
            d[p:p] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
    return bytes(d)


# ----------------------------------------------------------------------------- fabricated pretrained weights

TIMM_ARCH, TIMM_TAG = "resnet10t", "c3_in1k"  # a small timm model, to stay fast


def fabricate_timm(hf_home: Path, arch: str = TIMM_ARCH, tag: str = TIMM_TAG, seed: int = 0) -> Path:
    """Randomly initialised timm weights written exactly where huggingface_hub's cache keeps a hub
    download: ``HF_HOME/hub/models--timm--<arch>.<tag>/snapshots/<rev>/model.safetensors`` with
    ``refs/main`` naming the revision and timm's ``config.json`` beside it. Returns the weights file."""
    import safetensors.torch
    import timm
    import torch

    torch.manual_seed(seed)
    net = timm.create_model(arch, num_classes=1000)
    cfg = timm.models.get_pretrained_cfg(f"{arch}.{tag}")
    repo = hf_home / "hub" / f"models--timm--{arch}.{tag}"
    rev = hashlib.sha1(f"{arch}.{tag}.{seed}".encode()).hexdigest()
    snap = repo / "snapshots" / rev
    snap.mkdir(parents=True, exist_ok=True)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(rev)
    safetensors.torch.save_file({k: v.contiguous() for k, v in net.state_dict().items()}, snap / "model.safetensors")
    (snap / "config.json").write_text(json.dumps({
        "architecture": arch, "num_classes": 1000, "num_features": net.num_features,
        "pretrained_cfg": {"tag": tag, "mean": list(cfg.mean), "std": list(cfg.std), "input_size": list(cfg.input_size),
                           "classifier": cfg.classifier, "first_conv": cfg.first_conv}}))  # fmt: skip
    return snap / "model.safetensors"


def fabricate_yolo(weights_dir: Path, variant: str = "n") -> Path:
    """A randomly initialised ``yolov8<variant>-cls.pt`` in ultralytics' own checkpoint format (its
    ``Model.save``), in its weights folder."""
    from pseudolabel.models.yolo import _import_ultralytics

    _import_ultralytics()
    from ultralytics import YOLO

    weights_dir.mkdir(parents=True, exist_ok=True)
    path = weights_dir / f"yolov8{variant}-cls.pt"
    YOLO(f"yolov8{variant}-cls.yaml", task="classify").save(path)
    return path


@pytest.fixture
def hub(tmp_path, monkeypatch) -> dict[str, Path]:
    """Fabricated weights in a private HF_HOME and ultralytics weights folder, with the hubs off:
    {"hf_home", "timm", "yolo", "env"} (env: what a CLI subprocess needs to see them)."""
    hf_home, cache = tmp_path / "hf", tmp_path / "xdg-cache"
    env = {"HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1", "XDG_CACHE_HOME": str(cache), "PSEUDOLABEL_OFFLINE": "1"}
    timm_file = fabricate_timm(hf_home)
    yolo_dir = cache / "pseudolabel" / "ultralytics" / "weights"
    yolo_file = fabricate_yolo(yolo_dir)
    return {"hf_home": hf_home, "timm": timm_file, "yolo": yolo_file, "env": env}
