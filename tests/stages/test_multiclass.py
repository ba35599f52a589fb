"""K classes end to end: a generated three-class colour set of 40x32 images through `run`, `retrain`,
`resort` and `predict` by the CLI, the Python API for K = 3, and a real CIFAR-10 subset."""
from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest

from pseudolabel.core import runstate
from tests.conftest import COLORS, ROOT, make_color_data, run_cli, tree_digest, write_color_pipeline

CIFAR = ROOT.parent / "shared" / "data" / "cifar10"


@pytest.fixture(scope="module")
def colors(tmp_path_factory):
    """run, retrain (1 FixMatch epoch) and resort on the generated set, through the CLI."""
    tmp = tmp_path_factory.mktemp("colors")
    truth = make_color_data(tmp / "images")
    seeds = [n for n in sorted(truth)][:24]  # 8 per class
    (tmp / "labels.csv").write_text("image,label\n" + "".join(f"{n},{truth[n]}\n" for n in seeds))
    pipeline = write_color_pipeline(tmp, tmp / "images", tmp / "labels.csv")
    before = tree_digest(tmp / "images")
    procs = [run_cli("run", str(pipeline), "--out", str(tmp / "run"), "--quiet", cwd=tmp)]
    procs.append(run_cli("retrain", str(tmp / "run"), "--epochs", "1", "--journal", str(tmp / "j.csv"), "--quiet", cwd=tmp))
    procs.append(run_cli("resort", str(tmp / "run"), "--journal", str(tmp / "j.csv"), cwd=tmp))
    return tmp, truth, procs, before


def test_run_sorts_into_one_folder_per_class(colors):
    tmp, truth, procs, before = colors
    assert procs[0].returncode == 0, procs[0].stderr[-3000:]
    run = tmp / "run"
    dirs = {p.name for p in run.iterdir() if p.is_dir()} - {"final", "cache"}  # those two are retrain's
    assert dirs == {"blue", "green", "red", "scores", "unclear"}
    info = json.loads((run / "run.json").read_text())
    assert info["classes"] == info["folders"] == list(COLORS) and len(info["id"]) == 12
    rows = runstate.read_predictions(run)
    assert len(rows) == 90 and {r["decision"] for r in rows} <= {*COLORS, "unclear"}
    for m in ("yolov8-cls", "resnet50"):
        assert np.load(run / "scores" / f"{m}.npy").shape == (90, 3)
    cfg = (run / "config.yaml").read_text()
    assert "normalize: given" in cfg and "mean:" in cfg  # measured on the pool, kept for retrain
    report = (run / "report.md").read_text()
    assert "| red/ |" in report and "### blue/" in report and "closed" not in report and "P(open)" not in report
    assert tree_digest(tmp / "images") == before


def test_retrain_exports_a_three_class_model(colors):
    tmp, truth, procs, _ = colors
    assert procs[1].returncode == 0, procs[1].stderr[-3000:]
    final = tmp / "run" / "final"
    pre = json.loads((final / "preprocess.json").read_text())
    assert pre["image_size"] == [40, 32] and pre["channels"] == 3 and pre["classes"] == list(COLORS)
    assert len(pre["mean"]) == 3 and len(pre["std"]) == 3
    m = json.loads((final / "metrics.json").read_text())
    assert np.array(m["confusion"]).shape == (3, 3) and "eer" not in m and set(m["per_class"]) == set(COLORS)
    assert (final / "confusion.png").is_file() and "macro F1" in procs[1].stdout


def test_resort_moves_within_the_class_folders(colors):
    tmp, _, procs, _ = colors
    assert procs[2].returncode == 0, procs[2].stderr[-3000:]
    summary = json.loads((tmp / "run" / "resort.json").read_text())
    assert set(summary["after"]) == {*COLORS, "unclear"} and summary["accept"] == [0.5, 0.5, 0.5]
    assert np.load(tmp / "run" / "scores" / "final.npy").shape == (90, 3)
    assert "## Re-sorted by the final model" in (tmp / "run" / "report.md").read_text()


def test_predict_csv_and_api_for_three_classes(colors):
    from pseudolabel import Classifier, EyeStateClassifier

    tmp, truth, _, _ = colors
    proc = run_cli("predict", str(tmp / "images"), "--model", str(tmp / "run"), "--csv", str(tmp / "out.csv"), cwd=tmp)
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader(open(tmp / "out.csv")))
    assert list(rows[0]) == ["image", "label", "score", "p_red", "p_green", "p_blue"] and len(rows) == 90
    for r in rows:
        p = np.array([float(r[f"p_{c}"]) for c in COLORS])
        assert abs(p.sum() - 1) < 1e-4 and r["label"] == list(COLORS)[int(p.argmax())]
        assert float(r["score"]) == pytest.approx(p.max(), abs=1e-6)
    clf = Classifier.load(tmp / "run")
    path = tmp / "images" / sorted(truth)[0]
    proba = clf.predict_proba(path)
    assert list(proba) == list(COLORS) and abs(sum(proba.values()) - 1) < 1e-4
    assert clf.predict(path) == max(proba, key=proba.get)
    x = clf.load_images(sorted((tmp / "images").iterdir())[:5])
    assert x.shape == (5, 3, 40, 32) and clf.predict_array(x).shape == (5, 3)
    with pytest.raises(ValueError, match="two-class model.*3 classes"):
        EyeStateClassifier.load(tmp / "run")
    bad = run_cli("predict", str(tmp / "images"), "--model", str(tmp / "run"), "--threshold", "0.6", cwd=tmp)
    assert bad.returncode == 2 and "--threshold is for two-class models" in bad.stderr


def test_onnx_gives_the_same_three_class_probabilities(colors):
    import onnxruntime as ort

    from pseudolabel import Classifier

    tmp, *_ = colors
    clf = Classifier.load(tmp / "run")
    x = clf.load_images(sorted((tmp / "images").iterdir())[:16])
    sess = ort.InferenceSession(str(tmp / "run" / "final" / "model.onnx"), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"images": x.astype(np.float32) / 255})[0]
    np.testing.assert_allclose(got, clf.predict_array(x), atol=1e-4)


@pytest.mark.slow
def test_a_real_cifar10_subset_end_to_end(tmp_path):
    """The shipped cifar10 pipeline on 100 pool images plus its 250 seeds, with one-epoch stages."""
    if not (CIFAR / "images").is_dir():
        pytest.fail(f"real test data not found at {CIFAR}")
    out = tmp_path / "run"
    proc = run_cli("run", str(ROOT / "pipelines" / "cifar10.yaml"), "--images", str(CIFAR / "images"), "--labels",
                   str(CIFAR / "seed_labels.csv"), "--limit", "100", "--epochs", "1", "--fixmatch-epochs", "1",
                   "--student-max", "50", "--out", str(out), "--quiet", cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    classes = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == sorted([*classes, "scores", "unclear"])
    rows = runstate.read_predictions(out)
    assert len(rows) == 350 - sum(int(r["image"][:5]) <= 100 for r in csv.DictReader(open(CIFAR / "seed_labels.csv")))
    seeds = {r["image"]: r["label"] for r in csv.DictReader(open(CIFAR / "seed_labels.csv"))}
    for r in rows:  # every seed label sits in its class's folder (unless the label check sent it back)
        if r["image"] in seeds:
            assert r["decision"] in (seeds[r["image"]], "unclear") and r["source"].startswith("seed")
    retrain = run_cli("retrain", str(out), "--epochs", "1", "--pretrain-epochs", "1", "--journal",
                      str(tmp_path / "j.csv"), "--quiet", cwd=tmp_path)  # fmt: skip
    assert retrain.returncode == 0, retrain.stderr[-3000:]
    assert json.loads((out / "final" / "preprocess.json").read_text())["classes"] == classes
    shutil.rmtree(out)
