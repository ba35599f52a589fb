"""End-to-end `pseudolabel run` on 300 real crops with few epochs."""
import csv
import hashlib
import json

import numpy as np
import pytest

from pseudolabel.config.schema import load_config
from tests.conftest import copy_crops, run_cli, tree_digest, write_pipeline


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, eyes):
    import shutil

    tmp = tmp_path_factory.mktemp("e2e")
    images = copy_crops(eyes, tmp / "images")
    labels = tmp / "targets.json"
    shutil.copy2(eyes / "targets.json", labels)
    before = tree_digest(images), labels.read_bytes()
    pipeline = write_pipeline(tmp, images, labels)
    proc = run_cli("run", str(pipeline), "--out", str(tmp / "run"), "--quiet", cwd=tmp)
    return tmp, proc, before


def test_run_succeeds_and_reports_bad_seed_labels(finished_run):
    tmp, proc, _ = finished_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "000115.jpg is labeled both 'closed' and 'open'; dropped" in proc.stderr
    assert "000000.jpg is not in the images folder; dropped" in proc.stderr
    assert "unclear/" in proc.stdout and "report:" in proc.stdout


def test_originals_are_untouched(finished_run):
    tmp, _, (digest, label_bytes) = finished_run
    assert tree_digest(tmp / "images") == digest
    assert (tmp / "targets.json").read_bytes() == label_bytes


def test_run_folder_contents(finished_run):
    tmp, _, _ = finished_run
    run = tmp / "run"
    for name in ("report.md", "scatter.png", "samples_0.png", "samples_1.png", "samples_unclear.png", "curves.png",
                 "predictions.csv", "metrics.json", "config.yaml", "split.csv", "timings.json", "run.json",
                 "run_summary.json", "scores/yolov8-cls.npy", "scores/resnet50.npy"):  # fmt: skip
        assert (run / name).is_file(), name
    assert not list(tmp.glob(".run.partial")) and not list(tmp.glob(".run.old")), "partial folder left behind"
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["complete"] and set(manifest["files"]) == {p.name for p in run.iterdir() if p.is_file()} - {"manifest.json"}
    for name, digest in manifest["files"].items():
        assert hashlib.sha256((run / name).read_bytes()).hexdigest() == digest, name
    assert manifest["folders"] == {f: len(list((run / f).iterdir())) for f in ("0", "1", "unclear")}
    rows = list(csv.DictReader(open(run / "predictions.csv")))
    assert len(rows) == 300
    files = {p.relative_to(run).as_posix() for f in ("0", "1", "unclear") for p in (run / f).iterdir()}
    assert files == {r["file"] for r in rows}
    assert list(rows[0]) == ["image", "file", "decision", "queue_rank", "source", "issue"]
    for m in ("yolov8-cls", "resnet50"):
        p = np.load(run / "scores" / f"{m}.npy")
        assert p.shape == (300, 2) and np.allclose(p.sum(1), 1, atol=1e-4)
    for r in rows:
        assert r["file"].split("/")[0] == r["decision"]
        assert (r["queue_rank"] != "") == (r["decision"] == "unclear")
    seeds = {r["image"]: r for r in rows if r["source"].startswith("seed")}
    assert len(seeds) == 97
    split = list(csv.DictReader(open(run / "split.csv")))
    assert sum(s["split"] == "train" for s in split) == 80
    flagged = [r for r in rows if r["issue"]]
    assert sorted(int(r["queue_rank"]) for r in flagged) == list(range(1, len(flagged) + 1))  # label check first
    assert len(flagged) <= int(0.03 * (sum(r["decision"] != "unclear" for r in rows) + len(flagged)))
    for s in split:  # seed images sit in their labeled folder, unless the label check sent them back
        row = seeds[s["image"]]
        assert row["decision"] == ("unclear" if row["issue"] else s["label"])
        assert not row["issue"] or row["issue"].startswith(f"seed label says {s['label']}")
    metrics = json.loads((run / "metrics.json").read_text())
    for m in ("yolov8-cls", "resnet50"):
        assert {"accuracy", "precision", "recall", "f1", "eer", "roc_auc", "parameters", "train_seconds"} <= set(metrics[m])
    assert metrics["resnet50"]["parameters"] > 20e6
    assert load_config(run / "config.yaml").yolo.fixmatch_epochs == 1
    report = (run / "report.md").read_text()
    assert "![scatter](scatter.png)" in report and "000115.jpg" in report
    eda = json.loads((run / "eda.json").read_text())  # the seed model's view of labeled against unlabeled
    assert (eda["n_labeled"], eda["n_unlabeled"], eda["model"]) == (97, 203, "yolov8-cls")
    unlabeled = {r["image"] for r in rows if not r["source"].startswith("seed")}
    assert len(eda["ood"]) == 24 and set(eda["ood"]) <= unlabeled
    assert "## Labeled and unlabeled images" in report and "![out of distribution](eda_ood.png)" in report


def test_second_run_refuses_without_overwrite(finished_run):
    tmp, _, _ = finished_run
    before = tree_digest(tmp / "run")
    proc = run_cli("run", str(tmp / "tiny.yaml"), "--out", str(tmp / "run"), "--quiet", cwd=tmp)
    assert proc.returncode == 2
    assert "already exists" in proc.stderr and "--overwrite" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert tree_digest(tmp / "run") == before


@pytest.mark.parametrize(
    "args,message",
    [
        (["--images", "/nonexistent/imgs"], "images folder not found: /nonexistent/imgs"),
        (["--labels", "/nonexistent/t.json"], "seed label file not found: /nonexistent/t.json"),
        (["--threshold", "1.6"], "threshold must be in (0, 1], one number or one per model (2), got 1.6"),
        (["--threshold", "0.9,0.5,0.4"], "threshold must be in (0, 1], one number or one per model (2), got (0.9, 0.5, 0.4)"),
    ],
)
def test_bad_input_gives_one_line_error(finished_run, args, message):
    tmp, _, _ = finished_run
    proc = run_cli("run", str(tmp / "tiny.yaml"), "--out", str(tmp / "other"), "--quiet", *args, cwd=tmp)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"pseudolabel: error: {message}"
    assert not (tmp / "other").exists()
