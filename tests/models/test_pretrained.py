"""Pretrained weights (issue 48): fabricated weights in the exact cache layouts the libraries read
(huggingface_hub's for timm, ultralytics' weights folder), the hubs off, and every model that starts
from them: loaded tensors, the head rebuilt for K, the weights' own mean and std, grey and colour input,
the offline answer, frozen features and their cache, and the gates that keep a weak model quiet."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.conftest import COLORS, ROOT, TIMM_ARCH, TIMM_TAG, make_color_data, tree_digest

LOAD = r"""
import json, sys, torch, safetensors.torch
from pseudolabel.models.backbones import create_backbone
spec, name, arch, channels, k = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
net = create_backbone(name, num_classes=k, in_chans=channels, image_size=24, pretrained=spec,
                      arch=arch if name == "resnet50" else None)
state = {key: v.clone() for key, v in net.state_dict().items()}  # as loaded, before any forward pass
out = net.eval()(torch.rand(2, channels, 24, 24))
out = out[1] if isinstance(out, tuple) else out
norm = [state[key].flatten().tolist() for key in ("mean", "std")] if "mean" in state else None
print(json.dumps({"shape": list(out.shape), "keys": list(state), "norm": norm,
                  "state": {key: v.double().sum().item() for key, v in state.items()},
                  "first": next(v for key, v in state.items() if v.ndim == 4).flatten()[:20].tolist()}))
"""


def build_in(env: dict, *args: str) -> dict:
    """Build a backbone in a fresh interpreter that sees only the fabricated caches; its tensors, summarised."""
    res = subprocess.run([sys.executable, "-c", LOAD, *args], capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, **env}, timeout=300)  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


def timm_file_tensors(path: Path) -> dict:
    import safetensors.torch

    return safetensors.torch.load_file(str(path))


@pytest.mark.parametrize("spec", ["imagenet", f"timm/{TIMM_ARCH}.{TIMM_TAG}", "file"])
@pytest.mark.parametrize("channels", [3, 1])
def test_timm_weights_are_loaded_exactly_from_the_hub_cache(hub, spec, channels):
    import timm

    spec = str(hub["timm"]) if spec == "file" else spec
    got = build_in(hub["env"], spec, "resnet50", TIMM_ARCH, str(channels), "3")
    assert got["shape"] == [2, 3]  # the head rebuilt for K = 3
    want = timm_file_tensors(hub["timm"])
    checked = 0
    for key, tensor in want.items():
        if key.startswith("fc."):  # ImageNet's 1,000-class head: replaced
            assert got["state"][f"body.body.{key}"] != pytest.approx(tensor.double().sum().item())
            continue
        # grey input: timm sums the first layer over RGB, which keeps the sum of its weights
        assert got["state"][f"body.body.{key}"] == pytest.approx(tensor.double().sum().item(), rel=1e-5, abs=1e-5), key
        checked += 1
    assert checked > 20
    cfg = timm.models.get_pretrained_cfg(f"{TIMM_ARCH}.{TIMM_TAG}")
    mean, std = list(cfg.mean), list(cfg.std)
    if channels == 1:
        mean, std = [sum(mean) / 3], [sum(std) / 3]
    assert got["norm"][0] == pytest.approx(mean) and got["norm"][1] == pytest.approx(std)  # the weights' own


@pytest.mark.parametrize("channels", [3, 1])
def test_yolo_weights_are_loaded_from_its_weights_folder(hub, channels):
    import torch

    got = build_in(hub["env"], "imagenet", "yolov8-cls", "-", str(channels), "4")
    assert got["shape"] == [2, 4] and got["norm"] is None  # ultralytics' inputs: [0, 1], no mean or std
    ckpt = torch.load(hub["yolo"], weights_only=False)["model"].float().state_dict()
    first = ckpt["model.0.conv.weight"]
    first = first.sum(1, keepdim=True) if channels == 1 else first
    assert got["first"] == pytest.approx(first.flatten()[:20].tolist(), rel=1e-3, abs=1e-4)
    for key in ("model.4.m.0.cv1.conv.weight", "model.8.cv2.bn.running_var"):
        assert got["state"][f"net.{key}"] == pytest.approx(ckpt[key].double().sum().item(), rel=1e-3)


def colour_job(tmp: Path, per_class: int = 30, labels_per_class: int = 10, **pipe) -> Path:
    """The generated colour set with ``labels_per_class`` seed labels a class and a pipeline over it."""
    truth = make_color_data(tmp / "images", n_per_class=per_class)
    chosen = {c: [n for n, t in sorted(truth.items()) if t == c][:labels_per_class] for c in COLORS}
    (tmp / "seeds.csv").write_text("image,label\n" + "".join(f"{n},{c}\n" for c, ns in chosen.items() for n in ns))
    cfg = {"name": "colors", "images": "images", "labels": "seeds.csv", "classes": list(COLORS),
           "folder_names": "name", "image_size": [40, 32], "channels": 3, "n_train": 24, "student_max": 50,
           "threshold": [0.5, 0.5], "label_check": {"folds": 2},
           "yolo": {"pretrained": "imagenet", "train": "frozen"},
           "resnet50": {"pretrained": "imagenet", "train": "frozen", "arch": TIMM_ARCH}, **pipe}  # fmt: skip
    (tmp / "p.yaml").write_text(yaml.safe_dump(cfg))
    return tmp / "p.yaml"


def cli(env: dict, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pseudolabel.cli", *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=600)  # fmt: skip


def test_run_records_the_weights_and_the_report_says_so(hub, tmp_path):
    pipe = colour_job(tmp_path)
    res = cli(hub["env"], "run", str(pipe), "--out", "run", "--quiet", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    from pseudolabel.models.weights import sha256_of

    assert info["weights"]["resnet50"]["name"] == f"timm/{TIMM_ARCH}.{TIMM_TAG}"
    assert info["weights"]["resnet50"]["sha256"] == sha256_of(hub["timm"])
    assert info["weights"]["yolov8-cls"] == {**info["weights"]["yolov8-cls"], "name": "yolov8n-cls.pt",
                                             "sha256": sha256_of(hub["yolo"]), "file": str(hub["yolo"])}
    report = (tmp_path / "run" / "report.md").read_text()
    line = next(x for x in report.splitlines() if x.startswith("Weights: "))
    assert f"timm/{TIMM_ARCH}.{TIMM_TAG}" in line and "yolov8n-cls.pt" in line and sha256_of(hub["timm"])[:12] in line


@pytest.mark.parametrize("model", ["resnet50", "yolo"])
def test_offline_and_nothing_cached_is_one_line_within_seconds(tmp_path, tmp_path_factory, model):
    pipe = colour_job(tmp_path)
    data = yaml.safe_load(pipe.read_text())
    other = "yolo" if model == "resnet50" else "resnet50"
    data[other] = {"pretrained": "none"}
    pipe.write_text(yaml.safe_dump(data))
    caches = tmp_path_factory.mktemp("caches")  # ours, not the user's: outside the folder checked below
    env = {"HF_HOME": str(caches / "hf"), "XDG_CACHE_HOME": str(caches / "xdg"),
           "HF_HUB_OFFLINE": "1" if model == "resnet50" else ""}  # yolo: the network probe itself answers
    before = tree_digest(tmp_path)
    t = time.perf_counter()
    res = cli(env, "run", str(pipe), "--out", "run", cwd=tmp_path)
    took = time.perf_counter() - t
    assert res.returncode == 2 and took < 10, (res.returncode, took, res.stderr)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    name = f"timm/resnet10t.{TIMM_TAG}" if model == "resnet50" else "yolov8n-cls.pt"
    assert name in lines[0] and "looked in" in lines[0] and f"pseudolabel weights fetch {name}" in lines[0]
    assert "pretrained: none" in lines[0]
    assert tree_digest(tmp_path) == before and not (tmp_path / "run").exists()


def test_a_missing_weights_file_is_one_line(tmp_path):
    pipe = colour_job(tmp_path, resnet50={"pretrained": "nope/weights.pth", "train": "frozen"},
                      yolo={"pretrained": "none"})
    res = cli({}, "run", str(pipe), "--out", "run", cwd=tmp_path)
    assert res.returncode == 2 and res.stderr.strip() == "pseudolabel: error: pretrained weights file not found: " \
                                                         "nope/weights.pth"


# ----------------------------------------------------------------------------- frozen features, in this process


@pytest.fixture
def frozen(tmp_path, hub):
    """A frozen resnet10t seed model over the fabricated weights file, with its embedding cache in tmp."""
    from pseudolabel.config.schema import Config, with_overrides
    from pseudolabel.train.seeds import create_seed_model

    def make(cache: str = str(tmp_path / "pools"), **over):
        cfg = with_overrides(Config(), classes=tuple(COLORS), channels=3, image_size=(40, 32), pool_cache=cache,
                             **{"resnet50.pretrained": str(hub["timm"]), "resnet50.train": "frozen",
                                "resnet50.arch": TIMM_ARCH, **over})  # fmt: skip
        return create_seed_model("resnet50", cfg, progress=False)

    return make


def colour_arrays(tmp_path: Path, per_class: int = 20) -> tuple[np.ndarray, np.ndarray]:
    from pseudolabel.data.images import load_image

    truth = make_color_data(tmp_path / "arr", n_per_class=per_class, seed=3)
    names = sorted(truth)
    x = np.stack([load_image(tmp_path / "arr" / n, (40, 32), 3) for n in names])
    return x, np.array([list(COLORS).index(truth[n]) for n in names])


def test_frozen_head_is_scikit_learns_logistic_regression(frozen, tmp_path, monkeypatch):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from pseudolabel.train import frozen as fz
    from pseudolabel.train.probe import embed

    monkeypatch.setattr(fz, "SMALL", 8)  # the pool path (whole arrays, on disk) even for this small set
    x, y = colour_arrays(tmp_path)
    model = frozen()
    model.fit(x[:30], y[:30], x[30:36], y[30:36], x_unlabeled=x)
    probs = model.predict_proba(x)
    h = embed(model.module, x).numpy()
    # measured on the validation labels, the head then learns from every seed label (train and validation)
    by_hand = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000)).fit(h[:36], y[:36])
    held = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000)).fit(h[:30], y[:30])
    np.testing.assert_allclose(model.val_probs, held.predict_proba(h[30:36]), atol=1e-6)
    assert probs.shape == (len(x), 3)
    np.testing.assert_allclose(probs, by_hand.predict_proba(h), atol=1e-6)


def test_the_embedding_cache_is_reused_by_a_second_run(frozen, tmp_path, monkeypatch):
    from pseudolabel.train import frozen as fz

    monkeypatch.setattr(fz, "SMALL", 8)
    monkeypatch.delenv("PSEUDOLABEL_CACHE")  # the pipeline's pool_cache decides
    x, y = colour_arrays(tmp_path)
    first = frozen()
    first.fit(x[:30], y[:30], x[30:36], y[30:36], x_unlabeled=x)
    first.predict_proba(x)
    assert first.encoder.calls == len(x)  # the pool once; the seed images were among it
    again = frozen()  # a second run: a new model, the same weights, images and cache
    again.fit(x[:30], y[:30], x[30:36], y[30:36], x_unlabeled=x)
    np.testing.assert_allclose(again.predict_proba(x), first.predict_proba(x), atol=1e-6)
    assert again.encoder.calls == 0
    other = frozen(cache="")  # no cache: it embeds again
    other.fit(x[:30], y[:30], x[30:36], y[30:36], x_unlabeled=x)
    assert other.encoder.calls == len(x)


@pytest.mark.parametrize("name", ["resnet50", "yolov8-cls"])
@pytest.mark.parametrize("channels", [1, 3])
def test_grey_and_colour_input_load_and_train_a_step(hub, name, channels, tmp_path):
    import torch

    from pseudolabel.models.backbones import create_backbone

    spec = str(hub["timm"] if name == "resnet50" else hub["yolo"])
    net = create_backbone(name, num_classes=2, in_chans=channels, image_size=24, pretrained=spec,
                          arch=TIMM_ARCH if name == "resnet50" else None)  # fmt: skip
    before = [p.detach().clone() for p in net.parameters()]
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    net.train()
    out = net(torch.rand(4, channels, 24, 24))
    torch.nn.functional.cross_entropy(out[1] if isinstance(out, tuple) else out, torch.tensor([0, 1, 0, 1])).backward()
    opt.step()
    assert any(not torch.equal(a, b) for a, b in zip(before, net.parameters()))


# ----------------------------------------------------------------------------- the gates


def test_a_good_frozen_model_passes_the_gate_from_ten_labels_a_class(frozen, tmp_path):
    """The vote's gate judges a frozen model out of fold on all 30 seed labels: a model that is right on
    two of three passes, where the validation split (6 images) could not tell it from chance."""
    from pseudolabel.core.vote import chance_test

    x, y = colour_arrays(tmp_path, per_class=10)
    model = frozen()
    test = chance_test(y, model.oof_probs(x, y, 5, 0))
    assert test["n"] == 30 and test["p"] < 0.05, test


def test_a_checker_at_chance_flags_nothing_and_says_why(tmp_path):
    """Noise images with labels that have nothing to do with them: the checker cannot beat chance, so it
    must not flag a single label, however much cleanlab would have flagged."""
    from pseudolabel.config.schema import Config, with_overrides
    from pseudolabel.data.pool import Pool
    from pseudolabel.stages.gates import check_labels
    from pseudolabel.stages.results import Seeds

    rng = np.random.default_rng(0)
    n = 120
    images = rng.integers(0, 255, (n, 3, 16, 16), dtype=np.uint8)
    names = [f"{i:03d}.png" for i in range(n)]
    decision = rng.integers(0, 3, n)
    seeds = Seeds({names[i]: int(decision[i]) for i in range(30)}, names[:24], names[24:30])
    cfg = with_overrides(Config(), classes=("a", "b", "c"), channels=3, image_size=16,
                         **{"label_check.folds": 3, "label_check.epochs": 2})  # fmt: skip
    _, _, issues, summary = check_labels(cfg, Pool(tmp_path, names, images), seeds, decision.copy(),
                                         np.zeros(n, int), False)  # fmt: skip
    assert issues == {} and summary["trusted"] is False and "out-of-fold accuracy" in summary["why"]


class Checker:
    """A checker whose out-of-fold probabilities are given: what check_labels does with them is under test."""

    name = "given"

    def __init__(self, probs: np.ndarray):
        self.probs = probs

    def oof_probs(self, x, y, folds, seed):
        return self.probs


def test_a_seed_label_needs_stronger_evidence_than_a_vote(tmp_path):
    """With the same out-of-fold scores, cleanlab's flag alone sends a vote's label back, but a person's
    seed label only when the checker gives it at most seed_max_p."""
    from pseudolabel.config.schema import Config, with_overrides
    from pseudolabel.data.pool import Pool
    from pseudolabel.stages.gates import check_labels
    from pseudolabel.stages.results import Seeds

    n = 80
    y = np.array([0] * 40 + [1] * 40)
    probs = np.where(y[:, None] == 0, [0.95, 0.05], [0.05, 0.95])
    doubtful = {0: 0.001, 1: 0.01, 2: 0.01, 3: 0.001}  # rows 0, 1: seed labels; 2, 3: the vote's
    for i, p in doubtful.items():
        probs[i] = [p, 1 - p]
    names = [f"{i:02d}.png" for i in range(n)]
    seeds = Seeds({names[i]: 0 for i in (0, 1)} | {names[i]: int(y[i]) for i in range(40, 44)},
                  [names[0], names[40], names[41]], [names[1], names[42], names[43]])
    cfg = with_overrides(Config(), **{"label_check.max_share": 0.5, "label_check.seed_max_p": 0.005})
    pool = Pool(tmp_path, names, np.zeros((n, 1, 24, 24), np.uint8))
    _, _, issues, summary = check_labels(cfg, pool, seeds, y.copy(), np.zeros(n, int), False, Checker(probs))
    assert summary["trusted"] and set(issues) == {names[0], names[2], names[3]}, (issues, summary)


@pytest.mark.parametrize("right,trusted", [(9, True), (4, False)])
def test_the_vote_must_be_right_on_the_held_out_seeds_it_decides(right, trusted, capsys):
    """Better than chance is not enough: a vote whose confident agreements are wrong on held-out seed
    labels would fill the folders with wrong labels, so it decides nothing."""
    from pseudolabel.config.schema import Config, with_overrides
    from pseudolabel.stages.gates import vote_precision, voters_trusted

    y = np.array([0, 1, 2] * 10)
    probs = np.full((30, 3), 0.05)
    probs[np.arange(30), y] = 0.9  # each model right, and sure, on all 30 ...
    wrong = np.arange(10 - right)  # ... but on some of the 10 it is sure of a wrong class
    probs[wrong] = 0.05
    probs[wrong, (y[wrong] + 1) % 3] = 0.9
    cfg = with_overrides(Config(), classes=("a", "b", "c"), threshold=0.8)
    p = vote_precision(cfg, y[:10], {"m1": probs[:10], "m2": probs[:10]})
    assert p == {"decided": 10, "right": right, "min": 0.8}
    chance = {"m1": {"n": 30, "correct": 25, "baseline": 1 / 3, "p": 1e-6}}
    assert voters_trusted(cfg, chance, p) == trusted
    assert ("below vote_min_precision 0.8" in capsys.readouterr().err) == (not trusted)
