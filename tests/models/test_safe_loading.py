"""A weights file never runs code (issue 52): a pickle whose ``__reduce__`` writes a marker file, given
through every entry that loads weights, is refused in one line with exit 2 and the marker never appears;
files of the wrong kind are one line; the user's ultralytics settings and home stay as they were."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from tests.conftest import TIMM_ARCH, fabricate_yolo, make_color_run, tree_digest
from tests.models.test_pretrained import colour_job

EVIL = """
import os, sys, torch
class Evil:
    def __reduce__(self):
        return (os.system, ("touch " + sys.argv[2],))
kind = sys.argv[3]
if kind == "zip":
    torch.save({"model": Evil(), "conv1.weight": torch.zeros(1)}, sys.argv[1])
elif kind == "legacy":
    torch.save({"model": Evil()}, sys.argv[1], _use_new_zipfile_serialization=False)
else:  # ultralytics' layout: a dict whose "model" is the payload
    torch.save({"model": Evil(), "ema": None, "date": "2026", "version": "8.4"}, sys.argv[1])
"""


def make_evil(path: Path, marker: Path, kind: str = "zip") -> Path:
    """A torch pickle that, unpickled the unsafe way, creates ``marker``: made in a child process so that
    no class of this test is what it names."""
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-c", EVIL, str(path), str(marker), kind], check=True)
    assert path.is_file() and not marker.exists()
    return path


def cli(env: dict, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pseudolabel.cli", *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=600)  # fmt: skip


def refused(res: subprocess.CompletedProcess, marker: Path, *words: str) -> None:
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2, (res.returncode, res.stderr[-2000:])
    assert len(lines) == 1, lines
    assert not marker.exists(), "the pickle ran its code"
    for w in words:
        assert w in lines[0], lines[0]


@pytest.fixture
def env(tmp_path_factory) -> dict:
    """Private caches (ours to write, outside the folder a test watches) with the hubs off, and a
    fabricated yolov8n-cls.pt in our ultralytics weights folder."""
    caches = tmp_path_factory.mktemp("caches")
    cache = caches / "xdg-cache"
    fabricate_yolo(cache / "pseudolabel" / "ultralytics" / "weights")
    return {"HF_HOME": str(caches / "hf"), "HF_HUB_OFFLINE": "1", "XDG_CACHE_HOME": str(cache),
            "PSEUDOLABEL_OFFLINE": "1"}  # fmt: skip


# every entry that loads a weights file: (CLI arguments after the pipeline or run, pipeline sections)
ENTRIES = {
    "run --pretrained, frozen": (["--pretrained", "{evil}", "--train", "frozen"], {}),
    "run --pretrained, finetune": (["--pretrained", "{evil}", "--train", "finetune"], {}),
    "resnet50.pretrained": ([], {"resnet50": {"pretrained": "{evil}", "arch": TIMM_ARCH}, "yolo": {"pretrained": "none"}}),
    "yolo.pretrained": ([], {"yolo": {"pretrained": "{evil}", "train": "frozen"}, "resnet50": {"pretrained": "none"}}),
    "label_check.pretrained": ([], {"yolo": {"pretrained": "none", "train": "finetune"},
                                    "resnet50": {"pretrained": "none", "train": "finetune"},
                                    "label_check": {"pretrained": "{evil}", "folds": 2}}),
}


@pytest.mark.slow
@pytest.mark.parametrize("entry", list(ENTRIES))
def test_a_pickle_that_runs_code_is_refused_by_run(entry, tmp_path, env):
    marker = tmp_path / "MARKER"
    evil = make_evil(tmp_path / "evil.pt", marker)
    args, sections = ENTRIES[entry]
    filled = json.loads(json.dumps(sections).replace("{evil}", str(evil)))
    pipe = colour_job(tmp_path, **filled)
    before = tree_digest(tmp_path)
    res = cli(env, "run", str(pipe), "--out", "run", *[a.replace("{evil}", str(evil)) for a in args], cwd=tmp_path)
    refused(res, marker, str(evil))
    assert tree_digest(tmp_path) == before and not (tmp_path / "run").exists()


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["zip", "legacy"])
def test_retrain_and_predict_refuse_it(kind, tmp_path, env):
    marker = tmp_path / "MARKER"
    evil = make_evil(tmp_path / "evil.pt", marker, kind)
    run = make_color_run(tmp_path)
    for backbone in (TIMM_ARCH, "yolov8-cls"):
        res = cli(env, "retrain", str(run), "--pretrained", str(evil), "--train", "frozen", "--backbone", backbone,
                  cwd=tmp_path)  # fmt: skip
        refused(res, marker, str(evil))
    assert not (run / "final").exists()
    res = cli(env, "predict", str(next((tmp_path / "cimages").iterdir())), "--model", str(evil), cwd=tmp_path)
    refused(res, marker, str(evil), "never loads a pickled")


@pytest.mark.slow
def test_a_poisoned_checkpoint_in_the_weights_folder_is_refused_by_run_and_compare(tmp_path, env):
    """The file ultralytics' own name points to (``yolov8n-cls.pt`` in its weights folder) is a pickle too."""
    marker = tmp_path / "MARKER"
    weights = Path(env["XDG_CACHE_HOME"]) / "pseudolabel" / "ultralytics" / "weights" / "yolov8n-cls.pt"
    weights.unlink()
    make_evil(weights, marker, "ultralytics")
    pipe = colour_job(tmp_path, resnet50={"pretrained": "none"})
    res = cli(env, "run", str(pipe), "--out", "run", cwd=tmp_path)
    refused(res, marker, "yolov8n-cls.pt", "posix.system")
    run = make_color_run(tmp_path)
    res = cli(env, "compare", str(run), "--pretrained", "imagenet", "--backbones", "yolov8n-cls", "--epochs", "1",
              cwd=tmp_path)  # fmt: skip
    refused(res, marker, "yolov8n-cls.pt")


def test_the_loaders_refuse_before_anything_is_built(tmp_path):
    """In this process: the checkpoint loader lists the file's globals first; the state-dict loader
    uses weights_only. Neither runs the payload."""
    from pseudolabel.models import safeload
    from pseudolabel.models.yolo import load_cls_checkpoint

    marker = tmp_path / "MARKER"
    for kind in ("zip", "legacy", "ultralytics"):
        evil = make_evil(tmp_path / f"{kind}.pt", marker, kind)
        with pytest.raises(safeload.BadWeights, match="refused|not a torch checkpoint"):
            load_cls_checkpoint(evil)
        with pytest.raises(safeload.BadWeights, match="refused"):
            safeload.state_dict(evil)
        assert not marker.exists()


def test_a_real_ultralytics_checkpoint_loads_the_same_tensors(tmp_path):
    """Model.save's file, read with weights_only and the allow-list, equals the unrestricted load
    (done here, on a file this test made)."""
    from pseudolabel.models.yolo import load_cls_checkpoint

    path = fabricate_yolo(tmp_path / "w")
    ours = load_cls_checkpoint(path).state_dict()
    theirs = torch.load(path, weights_only=False)["model"].float().state_dict()
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)


def _resnet10t_state(**extra) -> dict:
    import timm

    return {**timm.create_model(TIMM_ARCH, num_classes=1000).state_dict(), **extra}


def _write(path: Path, what: str) -> Path:
    import safetensors.torch

    if what == "text":
        path.write_text("these are not weights\n" * 10)
    elif what == "truncated-pt":
        torch.save(_resnet10t_state(), path)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif what == "truncated-safetensors":
        safetensors.torch.save_file({k: v.contiguous() for k, v in _resnet10t_state().items()}, path)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif what == "foreign-safetensors":  # valid, but its names match nothing of the network
        safetensors.torch.save_file({f"x{i}": torch.zeros(3) for i in range(20)}, path)
    elif what == "half-matched":
        state = _resnet10t_state()
        safetensors.torch.save_file({k: v.contiguous() for i, (k, v) in enumerate(state.items()) if i % 2}, path)
    return path


BAD_WEIGHTS = [("text", "w.pt", "not a readable weights file"),
               ("truncated-pt", "w.pt", "not a readable weights file"),
               ("truncated-safetensors", "w.safetensors", "not a readable .safetensors file"),
               ("foreign-safetensors", "w.safetensors", "only 0 of the"),
               ("half-matched", "w.safetensors", f"tensors of {TIMM_ARCH} match it")]  # fmt: skip


@pytest.mark.parametrize("what,name,says", BAD_WEIGHTS)
def test_weights_of_the_wrong_kind_are_one_line_before_any_work(what, name, says, tmp_path):
    path = _write(tmp_path / name, what)
    pipe = colour_job(tmp_path, resnet50={"pretrained": str(path), "train": "frozen", "arch": TIMM_ARCH},
                      yolo={"pretrained": "none"})
    before = tree_digest(tmp_path)
    res = cli({"PSEUDOLABEL_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}, "run", str(pipe), "--out", "run", cwd=tmp_path)
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2 and len(lines) == 1, res.stderr[-2000:]
    assert says in lines[0] and str(path) in lines[0]
    assert tree_digest(tmp_path) == before


def test_a_matching_state_dict_in_a_checkpoint_wrapper_loads_exactly(tmp_path):
    """The common shapes of a training script's file load: {"state_dict": ...} with DataParallel's prefix."""
    from pseudolabel.models.backbones import timm_net
    from pseudolabel.models.weights import resolve

    state = _resnet10t_state()
    path = tmp_path / "ckpt.pth"
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    net = timm_net(TIMM_ARCH, num_classes=3, in_chans=3, weights=resolve(str(path), "timm", TIMM_ARCH))
    got = net.state_dict()
    assert all(torch.equal(got[k], state[k]) for k in got if not k.startswith("fc."))


def test_a_changed_hub_file_is_refused(tmp_path, monkeypatch):
    """A cached hub file whose bytes no longer match the blob's sha256 name is refused before loading."""
    from tests.conftest import TIMM_TAG, fabricate_timm

    from pseudolabel.models import weights

    hf = tmp_path / "hf"
    snap_file = fabricate_timm(hf)
    blobs = snap_file.parents[2] / "blobs"
    blobs.mkdir()
    digest = weights.sha256_of(snap_file)
    blob = blobs / digest
    os.replace(snap_file, blob)
    snap_file.symlink_to(blob)
    monkeypatch.setenv("HF_HOME", str(hf))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_CACHE", str(hf / "hub"))
    weights.resolve.cache_clear()
    assert weights.resolve(f"timm/{TIMM_ARCH}.{TIMM_TAG}", "timm", TIMM_ARCH).sha256 == digest
    data = bytearray(blob.read_bytes())
    data[-1] ^= 1
    blob.write_bytes(bytes(data))
    weights.resolve.cache_clear()
    with pytest.raises(ValueError, match="not the hub's"):
        weights.resolve(f"timm/{TIMM_ARCH}.{TIMM_TAG}", "timm", TIMM_ARCH)
    weights.resolve.cache_clear()


def test_a_fetched_yolo_checkpoint_is_checked_against_its_recorded_sha256(tmp_path):
    from pseudolabel.models import yolo

    path = fabricate_yolo(tmp_path / "w")
    (path.parent / (path.name + ".sha256")).write_text("0" * 64 + "\n")
    with pytest.raises(ValueError, match="when it was fetched"):
        yolo.checked(path)
    from pseudolabel.models.weights import sha256_of

    (path.parent / (path.name + ".sha256")).write_text(sha256_of(path) + "\n")
    assert yolo.checked(path) == sha256_of(path)


# ----------------------------------------------------------------------------- the user's home


def home_files(home: Path) -> set[str]:
    return {str(p.relative_to(home)) for p in home.rglob("*") if p.is_file()}


@pytest.mark.slow
def test_the_users_ultralytics_settings_keep_their_bytes(tmp_path):
    """A yolo weights file loads ultralytics through its checkpoint: our settings, never the user's."""
    home = tmp_path / "home"
    settings = home / ".config" / "Ultralytics" / "settings.json"
    settings.parent.mkdir(parents=True)
    settings.write_text('{"weights_dir": "/somewhere/mine", "sync": false}')
    before = settings.read_bytes()
    ckpt = fabricate_yolo(tmp_path / "w")
    pipe = colour_job(tmp_path, yolo={"pretrained": str(ckpt), "train": "frozen"}, resnet50={"pretrained": "none"})
    env = {"HOME": str(home), "XDG_CACHE_HOME": "", "XDG_CONFIG_HOME": "", "PSEUDOLABEL_OFFLINE": "1"}
    res = cli(env, "run", str(pipe), "--out", "run", "--quiet", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert settings.read_bytes() == before


@pytest.mark.slow
def test_every_command_writes_only_into_our_cache_under_a_fresh_home(tmp_path):
    """run, retrain, resort, predict (with --show), export: every file they create under $HOME is in
    ~/.cache/pseudolabel (no ~/.config/matplotlib, no ONNX Runtime device id, no ultralytics settings)."""
    from tests.conftest import COLORS, make_color_data, write_color_pipeline

    home = tmp_path / "home"
    home.mkdir()
    truth = make_color_data(tmp_path / "images", n_per_class=12)
    seeds = [n for c in COLORS for n in sorted(n for n, t in truth.items() if t == c)[:6]]
    (tmp_path / "seeds.csv").write_text("image,label\n" + "".join(f"{n},{truth[n]}\n" for n in seeds))
    pipe = write_color_pipeline(tmp_path, tmp_path / "images", tmp_path / "seeds.csv")
    data = yaml.safe_load(pipe.read_text())
    data.update(n_train=12)
    pipe.write_text(yaml.safe_dump(data))
    env = {"HOME": str(home), "XDG_CACHE_HOME": "", "XDG_CONFIG_HOME": "", "MPLCONFIGDIR": "", "HF_HOME": "",
           "PSEUDOLABEL_CACHE": "", "PSEUDOLABEL_OFFLINE": "1"}  # fmt: skip
    env = {k: v for k, v in env.items() if v}
    clean = {k: v for k, v in os.environ.items() if k not in ("XDG_CACHE_HOME", "XDG_CONFIG_HOME", "MPLCONFIGDIR",
                                                              "HF_HOME", "PSEUDOLABEL_CACHE")}  # fmt: skip
    one = next(iter(sorted(truth)))
    for args in (["run", str(pipe), "--out", "run", "--quiet"], ["retrain", "run", "--quiet"],
                 ["resort", "run"], ["predict", f"images/{one}", "--model", "run", "--show", "shown"],
                 ["export", "run", "--format", "csv", "--out", "exported"]):  # fmt: skip
        res = subprocess.run([sys.executable, "-m", "pseudolabel.cli", *args], cwd=tmp_path, capture_output=True,
                             text=True, env={**clean, **env}, timeout=600)  # fmt: skip
        assert res.returncode == 0, (args, res.stderr[-3000:])
        outside = sorted(f for f in home_files(home) if not f.startswith(".cache/pseudolabel/"))
        assert outside == [], (args[0], outside)
