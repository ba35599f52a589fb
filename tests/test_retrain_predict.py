"""retrain on a real 300-crop run (seed labels in the folders), export, predict CLI and API."""
import csv
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml

from pseudolabel.config.schema import load_config, to_dict, with_overrides
from pseudolabel.core import device, runstate
from pseudolabel.core.metrics import roc_auc
from pseudolabel.models.backbones import create_backbone
from tests.conftest import ROOT, make_seed_run, tree_digest


@pytest.fixture(scope="module")
def trained(tmp_path_factory, eyes):
    from pseudolabel.stages.retrain import retrain

    tmp = tmp_path_factory.mktemp("retrain")
    run, images, val, labels = make_seed_run(tmp, eyes)
    before = tree_digest(images)
    metrics = retrain(load_config(run / "config.yaml"), run, tmp / "journal.csv", progress=False)
    return run, images, val, labels, metrics, before


def test_retrain_writes_everything(trained):
    run, *_ = trained
    final = run / "final"
    for name in ("model.ts", "model.onnx", "preprocess.json", "metrics.json", "roc.png", "hist.png", "curves.png",
                 "confusion.png", "log.csv", "config.yaml"):  # fmt: skip
        assert (final / name).is_file(), name
    assert list((final / "tensorboard").glob("events.out.tfevents.*"))
    log = list(csv.DictReader(open(final / "log.csv")))
    assert len(log) >= 1 and {"train_loss", "mask_rate", "val_loss", "val_acc"} <= set(log[0])
    m = json.loads((final / "metrics.json").read_text())
    for key in ("at_0.5", "at_eer_threshold", "at_user_threshold"):
        assert {"accuracy", "precision", "recall", "f1", "confusion", "threshold"} <= set(m[key])
        assert sum(map(sum, m[key]["confusion"])) == m["n"]
    assert {"eer", "eer_threshold", "roc_auc", "parameters", "counts", "confusion", "macro_f1", "per_class"} <= set(m)
    assert m["counts"]["validation"] == 17 and m["counts"]["labeled"] == 80
    assert m["accuracy"] == m["at_0.5"]["accuracy"] and m["confusion"] == m["at_0.5"]["confusion"]
    report = (run / "report.md").read_text()  # the run's report gains the final model's section
    assert "## Final model" in report and f"{m['n']} images: accuracy {m['accuracy']:.3f}" in report


def test_originals_untouched_by_retrain(trained):
    _, images, *_, before = trained
    assert tree_digest(images) == before


def test_a_few_retrain_steps_beat_the_untrained_model(trained):
    from pseudolabel import EyeStateClassifier

    run, images, val, labels, *_ = trained
    y = np.array([labels[v] for v in val])
    clf = EyeStateClassifier.load(run)
    trained_auc = roc_auc(y, clf.predict_many([images / v for v in val]))
    torch.manual_seed(0)
    untrained = create_backbone(load_config(run / "config.yaml").retrain.backbone, num_classes=2, in_chans=1,
                                image_size=24).eval()
    x = torch.from_numpy(clf.load_images([images / v for v in val])).float() / 255
    with torch.no_grad():
        untrained_auc = roc_auc(y, untrained(x).softmax(1)[:, 1].numpy())
    assert trained_auc >= 0.75 and trained_auc > untrained_auc + 0.1, (trained_auc, untrained_auc)


def assert_onnx_matches_torch(run, images, n):
    """ONNX Runtime and the TorchScript model give the same P(open) on n real crops, within 1e-4."""
    import onnxruntime as ort

    from pseudolabel import EyeStateClassifier

    clf = EyeStateClassifier.load(run, backend="torchscript")
    x = clf.load_images(sorted(images.iterdir())[:n])
    assert clf.session(device.current()) is None  # TorchScript itself, not ONNX Runtime again
    sess = ort.InferenceSession(str(run / "final" / "model.onnx"), providers=["CPUExecutionProvider"])
    onnx_probs = sess.run(None, {"images": x.astype(np.float32) / 255})[0]
    np.testing.assert_allclose(onnx_probs[:, 1], clf.predict_array(x), atol=1e-4)
    np.testing.assert_allclose(onnx_probs.sum(1), 1.0, atol=1e-5)


def test_onnx_runtime_matches_torch(trained):
    run, images, *_ = trained
    assert_onnx_matches_torch(run, images, 64)


def test_api_contract(trained):
    from pseudolabel import EyeStateClassifier

    run, images, *_ = trained
    path = str(sorted(images.iterdir())[0].resolve())
    for where in (run, run / "final", run / "final" / "model.ts"):
        score = EyeStateClassifier.load(where).predict(path)
        assert isinstance(score, float) and 0.0 <= score <= 1.0
    clf = EyeStateClassifier.load(run)
    assert clf.predict(path) == pytest.approx(float(clf.predict_many([path])[0]), abs=1e-6)
    with pytest.raises(ValueError, match="no exported model"):
        EyeStateClassifier.load(images)


def test_predict_cli_output(trained, tmp_path):
    run, images, *_ = trained
    (tmp_path / "notes.txt").write_text("not an image")
    files = sorted(images.iterdir())
    args = [str(files[0]), str(images / "00001*.jpg"), str(tmp_path / "notes.txt"), "--model", str(run),
            "--csv", str(tmp_path / "out.csv"), "--show", str(tmp_path / "shots"), "--threshold", "0.6"]  # fmt: skip
    out = subprocess.run([sys.executable, "-m", "pseudolabel.cli", "predict", *args], capture_output=True, text=True,
                         timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert lines[0] == "image,label,score,p_closed,p_open"
    rows = [line.split(",") for line in lines[1:]]
    expected = [files[0]] + sorted(p for p in files if p.name.startswith("00001"))
    assert [r[0] for r in rows] == [str(p) for p in expected]
    for _, label, score, p0, p1 in rows:  # two classes: the score is P(open), and --threshold sets the label
        assert float(score) == float(p1) and abs(float(p0) + float(p1) - 1) < 1e-5
        assert label == ("open" if float(score) >= 0.6 else "closed")
    assert (tmp_path / "out.csv").read_text() == out.stdout
    assert len(list((tmp_path / "shots").glob("*.score.png"))) == len(set(expected))
    assert "notes.txt: not an image file" in out.stderr


def test_resort_cli_with_the_real_final_model(trained, tmp_path):
    """`pseudolabel resort` on a copy of the trained run: every machine-placed image lands where the
    exported model's own score puts it, at thresholds given on the command line."""
    import shutil

    from pseudolabel import EyeStateClassifier
    from pseudolabel.review.state import ReviewState

    run = tmp_path / "run"
    shutil.copytree(trained[0], run)
    args = [str(run), "--journal", str(tmp_path / "j.csv"), "--accept", "0.7,0.7", "--keep-agreed", "0.95"]
    out = subprocess.run([sys.executable, "-m", "pseudolabel.cli", "resort", *args], capture_output=True, text=True,
                         timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "unclear/" in out.stdout and "re-sorted" in out.stdout and f"next: `pseudolabel review {run}`" in out.stdout
    where = ReviewState(run, tmp_path / "j.csv").where()
    rows = list(csv.DictReader(open(run / "predictions.csv")))
    clf = EyeStateClassifier.load(run)
    scores = clf.predict_many([run / r["file"] for r in rows])
    kept = runstate.load_scores(run, "final")[:, 1]
    for r, s, k in zip(rows, scores, kept):
        assert k == pytest.approx(s, abs=1e-5)
        if not r["source"].startswith("seed"):
            assert where[r["image"]] == ("0" if s <= 0.3 else "1" if s >= 0.7 else "unclear"), (r, s)
    summary = json.loads((run / "resort.json").read_text())
    assert (summary["accept"], summary["keep_agreed"]) == ([0.7, 0.7], 0.95)
    assert summary["after"]["unclear"] < summary["before"]["unclear"]
    report = (run / "report.md").read_text()
    assert report.index("## Final model") < report.index("## Re-sorted by the final model")


def test_a_second_retrain_reuses_simclr_and_trains_the_same_model(trained, tmp_path):
    """SimCLR sees no labels, so a retrain of the same pool loads the weights the first one kept
    in RUN/cache and skips pretraining; everything after it is seeded, so the model is the same."""
    import shutil

    from pseudolabel import EyeStateClassifier
    from pseudolabel.stages.retrain import CACHE, retrain

    run, images, _, _, metrics, _ = trained
    assert [m["pretrain_cached"] for m in metrics["members"]] == [False, False]
    assert len(list((run / CACHE).glob("simclr-*.safetensors"))) == 2  # one per member
    again = tmp_path / "run"
    shutil.copytree(run, again)
    m2 = retrain(load_config(again / "config.yaml"), again, tmp_path / "journal.csv", overwrite=True, progress=False)
    assert [m["pretrain_cached"] for m in m2["members"]] == [True, True]
    assert m2["pretrain_seconds"] == 0 and metrics["pretrain_seconds"] > 0
    files = sorted(images.iterdir())[:40]
    a, b = (EyeStateClassifier.load(r).predict_many(files) for r in (run, again))
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_predict_on_a_folder_and_without_a_model(trained, tmp_path):
    run, images, *_ = trained
    out = subprocess.run([sys.executable, "-m", "pseudolabel.cli", "predict", str(images), "--model", str(run)],
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert out.returncode == 0 and len(out.stdout.strip().splitlines()) == 301
    out = subprocess.run([sys.executable, "-m", "pseudolabel.cli", "predict", str(images), "--model", str(tmp_path)],
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert out.returncode == 2 and out.stderr.startswith("pseudolabel: error: no exported model at")


def test_retrain_refuses_existing_final_without_overwrite(trained):
    from pseudolabel.stages.retrain import retrain

    run, *_ = trained
    with pytest.raises(ValueError, match="already exists.*--overwrite"):
        retrain(load_config(run / "config.yaml"), run, progress=False)


@pytest.mark.parametrize("pipeline", sorted(p.name for p in (ROOT / "pipelines").glob("*.yaml")))
def test_every_value_a_pipeline_file_sets_reaches_its_config(pipeline):
    """Each key a pipeline YAML sets, nested sections included, arrives unchanged in the loaded config
    (a renamed or dropped key would leave the default in its place)."""
    raw = yaml.safe_load((ROOT / "pipelines" / pipeline).read_text())
    cfg = to_dict(load_config(ROOT / "pipelines" / pipeline))
    for key, value in raw.items():
        if isinstance(value, dict):
            for sub, v in value.items():
                assert cfg[key][sub] == v, f"{key}.{sub}"
        else:
            assert cfg[key] == value, key


def test_two_members_train_apart_and_export_as_one_model(tmp_path, eyes):
    """retrain.members = 2: two networks with their own seeds, one exported model that averages them."""
    from pseudolabel.stages.retrain import retrain

    run, images, *_ = make_seed_run(tmp_path, eyes, n=200)
    cfg = with_overrides(load_config(run / "config.yaml"), seed=3, **{"retrain.members": 2, "retrain.epochs": 2,
                                                                     "retrain.pretrain_epochs": 1})  # fmt: skip
    m = retrain(cfg, run, tmp_path / "journal.csv", progress=False)
    assert [x["seed"] for x in m["members"]] == [3, 1003]
    single = sum(p.numel() for p in create_backbone(cfg.retrain.backbone, num_classes=2, in_chans=1,
                                                    image_size=24).parameters())
    assert m["parameters"] == 2 * single
    log = list(csv.DictReader(open(run / "final" / "log.csv")))
    assert [r["member"] for r in log] == ["0", "0", "1", "1"]
    assert_onnx_matches_torch(run, images, 32)
