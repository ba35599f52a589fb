"""Issue 35, the Ray engine: Ray Data scoring equal to local scoring, and Ray Train (DDP) on 2 CPU workers.

One local Ray (``ray.init(num_cpus=2)`` on this machine) serves the whole module.
"""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from pseudolabel import cli
from pseudolabel.engines.ray import score_classifier
from pseudolabel.config.schema import Config, RayConfig, load_config
from pseudolabel.core import device
from pseudolabel.data.cache import decoder
from pseudolabel.data.pool import Pool
from pseudolabel.engines import ray as ray_engine
from pseudolabel.models.backbones import create_backbone
from pseudolabel.serve.predict import Classifier, export_model
from pseudolabel.stages.run import score_pool
from pseudolabel.train.fixmatch import FixMatchConfig, predict_probs
from pseudolabel.train.seeds import TorchSeed

from tests.conftest import copy_crops, make_color_data, make_seed_run


@pytest.fixture(scope="module")
def local_ray():
    import ray

    device.use("cpu")
    ray_engine.init(RayConfig())
    assert ray.cluster_resources()["CPU"] >= 1
    yield RayConfig(batch_size=16)  # several batches over a few dozen images
    ray.shutdown()


def _images(tmp_path, eyes, n=40):
    """n real crops plus two files that cannot be decoded (a truncated PNG and a text file named .png)."""
    pool = copy_crops(eyes, tmp_path / "pool", n)
    png = sorted(pool.iterdir())[0].read_bytes()
    (pool / "zz_truncated.png").write_bytes(png[: len(png) // 3])
    (pool / "zz_text.png").write_text("not an image")
    return sorted(pool.iterdir())


def _exported(tmp_path, classes=("closed", "open"), channels=1, hw=(24, 24)):
    torch.manual_seed(0)
    cfg = dataclasses.replace(Config(), classes=classes, channels=channels, image_size=list(hw))
    net = create_backbone("tinycnn", num_classes=len(classes), in_chans=channels, image_size=hw, width=8)
    out = tmp_path / "final"
    out.mkdir()
    export_model(net, cfg, out)
    return Classifier.load(out)


@pytest.mark.parametrize("uri", [False, True])  # local paths: the actors read them; URIs: read_binary_files
def test_ray_data_scores_equal_local_scores(local_ray, eyes, tmp_path, uri):
    paths = _images(tmp_path, eyes)
    clf = _exported(tmp_path)
    local_warn, ray_warn = [], []
    local = list(clf.score_files(paths, warn=local_warn.append, chunk=7))
    asked = [f"file://{p}" for p in paths] if uri else paths
    remote = list(score_classifier(clf, asked, local_ray, warn=ray_warn.append, chunk=7))
    kept_l, kept_r = [p for c, _ in local for p in c], [p for c, _ in remote for p in c]
    assert [str(p).removeprefix("file://") for p in kept_r] == [str(p) for p in kept_l]  # the order asked for
    assert len(kept_l) == len(paths) - 2
    diff = np.abs(np.concatenate([p for _, p in remote]) - np.concatenate([p for _, p in local]))
    assert diff.max() <= 1e-6
    assert sorted(w.removeprefix("file://").split(":")[0] for w in ray_warn) == sorted(w.split(":")[0] for w in local_warn)
    assert all("zz_" in w and "cannot read image" in w for w in ray_warn) and len(ray_warn) == 2


@pytest.mark.parametrize("k,channels,tta", [(2, 1, True), (3, 3, False)])
def test_run_scoring_on_ray_equals_local(local_ray, eyes, tmp_path, k, channels, tta):
    """The seed models' pool scoring in `run` (``score_pool``) through Ray Data actors: real crops for
    K = 2, the generated colour set for K = 3."""
    root = tmp_path / "pool"
    if k == 2:
        copy_crops(eyes, root, 30)
        hw = (24, 24)
    else:
        make_color_data(root, n_per_class=8)
        hw = (40, 32)
    names = sorted(p.name for p in root.iterdir())
    decode = decoder(hw, channels)
    pool = Pool(root, names, np.stack([decode(n, (root / n).read_bytes()) for n in names]))
    torch.manual_seed(1)
    module = create_backbone("tinycnn", num_classes=k, in_chans=channels, image_size=hw, width=8)
    cfg = dataclasses.replace(Config(), classes=tuple("abc"[:k]), channels=channels, image_size=list(hw),
                              engine="ray", ray=local_ray)  # fmt: skip
    seed = TorchSeed("yolov8-cls", module, dataclasses.replace(cfg.yolo, tta=tta), 0, progress=False)
    remote = score_pool(cfg, seed, pool)
    local = score_pool(dataclasses.replace(cfg, engine="local"), seed, pool)
    assert remote.shape == (len(names), k) and np.abs(remote - local).max() <= 1e-6


def test_predict_cli_with_ray_prints_what_local_prints(local_ray, eyes, tmp_path, capsys):
    paths = _images(tmp_path, eyes, 12)
    clf = _exported(tmp_path)
    outputs = []
    for extra in ([], ["--engine", "ray", "--workers", "1"]):
        assert cli.main(["predict", *map(str, paths), "--model", str(clf.file), "--no-cache", *extra]) == 0
        outputs.append(capsys.readouterr())
    assert outputs[0].out == outputs[1].out and len(outputs[0].out.splitlines()) == 1 + 12
    assert outputs[1].err.count("cannot read image") == 2


def test_engine_flags_reach_the_config(tmp_path):
    args = cli.build_parser().parse_args(["run", "--engine", "ray", "--address", "auto", "--workers", "3"])
    cfg = cli.resolve_run_config(args)
    assert (cfg.engine, cfg.ray.address, cfg.ray.workers) == ("ray", "auto", 3)
    assert load_config("pipelines/eyes.yaml").engine == "local"


def test_ray_train_ddp_on_two_cpu_workers_beats_an_untrained_model(local_ray):
    """FixMatch on Ray Train's TorchTrainer with 2 CPU workers (gloo): the kept weights come back
    into the driver's module and classify a held-out split better than the untrained network."""
    rng = np.random.default_rng(0)
    y = np.arange(96) % 3
    x = rng.integers(0, 90, size=(96, 3, 12, 12))
    x[np.arange(96), y] += 160  # the class is the dominant colour channel
    x = x.astype(np.uint8)
    torch.manual_seed(0)
    module = create_backbone("tinycnn", num_classes=3, in_chans=3, image_size=(12, 12), width=8)
    before = (predict_probs(module, x[60:]).argmax(1).numpy() == y[60:]).mean()
    fc = FixMatchConfig(epochs=4, epoch_steps=8, batch_size=16, mu=2, lr=0.05, ema=0.9, monitor="last")
    rows = []
    fit = ray_engine.fit_fixmatch(module, x[:36], y[:36], x, x[36:60], y[36:60], fc, 0, local_ray,
                                  on_epoch=lambda row, _: rows.append(row), workers=2)  # fmt: skip
    after = (predict_probs(module, x[60:]).argmax(1).numpy() == y[60:]).mean()
    assert len(fit.history) == 4 and rows == fit.history
    assert after >= 0.9 and after > before + 0.2


def test_missing_ray_is_one_clear_line(monkeypatch):
    import builtins

    real = builtins.__import__

    def no_ray(name, *a, **kw):
        if name == "ray":
            raise ImportError("no ray")
        return real(name, *a, **kw)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    with pytest.raises(ValueError, match=r"pip install 'pseudolabel\[ray\]'"):
        ray_engine._ray()


def test_memmaps_travel_as_files(tmp_path):
    data = np.arange(2 * 1 * 4 * 4, dtype=np.uint8).reshape(2, 1, 4, 4)
    path = tmp_path / "x.u8"
    data.tofile(path)
    mm = np.memmap(path, dtype=np.uint8, mode="r", shape=data.shape)
    ref = ray_engine._array_ref(mm)
    assert ref[0] == "memmap" and np.array_equal(ray_engine._array(ref), data)
    assert np.array_equal(ray_engine._array(ray_engine._array_ref(data)), data)


def test_retrain_and_resort_on_ray_through_the_cli(local_ray, eyes, tmp_path, capsys):
    """`retrain --engine ray --workers 2` (FixMatch on Ray Train) exports a final model; `resort
    --engine ray` scores the run with it on Ray Data, as the local engine would."""
    from pseudolabel.core import runstate
    from pseudolabel.review.state import ReviewState
    from pseudolabel.stages.resort import score_run

    run, _, _, _ = make_seed_run(tmp_path, eyes, n=120, **{"retrain.members": 1, "retrain.epochs": 3,
                                                          "retrain.tta": "flip"})  # fmt: skip
    assert cli.main(["retrain", str(run), "--engine", "ray", "--workers", "2", "--quiet"]) == 0
    metrics = json.loads((run / "final" / "metrics.json").read_text())
    assert len(metrics["members"]) == 1 and (run / "final" / "model.ts").is_file()
    assert len([x for x in (run / "final" / "log.csv").read_text().splitlines() if x.strip()]) >= 1 + 3
    state = ReviewState(run, run / "journal.csv")
    local = score_run(run, state, state.rows, state.where())
    assert cli.main(["resort", str(run), "--engine", "ray", "--workers", "1"]) == 0
    capsys.readouterr()
    assert np.abs(runstate.load_scores(run, "final") - local).max() <= 1e-6
