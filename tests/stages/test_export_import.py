"""Labels out (`pseudolabel export`: ImageFolder, ultralytics, CSV, Label Studio) and in (CVAT ImageNet
zip, CVAT for images XML, Label Studio JSON), `pseudolabel init`, --version and the wheel (issue 37)."""
import csv
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from xml.etree import ElementTree

import pytest
import yaml

from pseudolabel.cli.main import main
from pseudolabel.core import runstate
from pseudolabel.data.images import Problems
from pseudolabel.data.labels import read_seed_labels
from tests.conftest import COLORS, ROOT, make_color_data, place_fake_run, run_cli, tree_digest

CLASSES = ("closed", "open")


@pytest.fixture
def run(tmp_path, eyes):
    """A finished run over 80 real crops: vote decisions, with 10 of them marked seed-val and 10 seed-train."""
    import shutil

    import numpy as np
    import yaml

    from pseudolabel.core.vote import binary_probs

    images = tmp_path / "images"
    images.mkdir()
    names = sorted(os.listdir(eyes / "images"))[:80]
    for name in names:
        shutil.copy2(eyes / "images" / name, images / name)
    p = np.random.default_rng(0).random(80)  # the two models agree on most images: most are placed
    run = tmp_path / "run"
    place_fake_run(run, images, names, (binary_probs(p), binary_probs(np.clip(p + 0.05, 0, 1))), 0.6, CLASSES,
                   ("0", "1"))  # fmt: skip
    (run / "config.yaml").write_text(yaml.safe_dump({"name": "eyes-test", "classes": list(CLASSES)}))
    rows = runstate.read_predictions(run)
    placed = [r for r in rows if r["decision"] != "unclear"]
    for k, r in enumerate(placed[:20]):
        r["source"] = runstate.SEED_VAL if k < 10 else runstate.SEED_TRAIN
    (run / "predictions.csv").write_text(runstate.predictions_text(rows))
    return run


def _placed(run):
    return [r for r in runstate.read_predictions(run) if r["decision"] != "unclear"]


def test_imagefolder_export_loads_with_torchvision(run, tmp_path, capsys):
    from torchvision.datasets import ImageFolder

    before = tree_digest(run)
    assert main(["export", str(run), "--format", "imagefolder", "--out", str(tmp_path / "if")]) == 0
    ds = ImageFolder(str(tmp_path / "if"))
    placed = _placed(run)
    assert ds.classes == list(CLASSES) and len(ds) == len(placed)
    truth = {Path(r["file"]).name: int(r["decision"]) for r in placed}
    assert all(truth[Path(p).name] == y for p, y in ds.samples)
    assert all(os.path.islink(p) and Path(p).resolve().is_relative_to(run.resolve()) for p, _ in ds.samples)
    assert tree_digest(run) == before  # the run is only read
    out = capsys.readouterr().out
    assert f"exported {len(placed)} images (imagefolder)" in out and "by source: seed 20, reviewed 0, vote" in out


def test_yolo_export_trains_with_ultralytics_offline(run, tmp_path):
    from pseudolabel.models.yolo import ultralytics_train

    out = tmp_path / "y"
    assert main(["export", str(run), "--format", "yolo", "--out", str(out), "--val-share", "0.25", "--copy"]) == 0
    for part in ("train", "val"):
        assert sorted(p.name for p in (out / part).iterdir()) == list(CLASSES)
    val = {p.name for p in (out / "val").rglob("*.jpg")}
    rows = {Path(r["file"]).name: r for r in _placed(run)}
    for c in CLASSES:  # stratified: a quarter of each class
        n_c = sum(r["decision"] == str(CLASSES.index(c)) for r in rows.values())
        assert len(list((out / "val" / c).iterdir())) == round(0.25 * n_c)
    seed_val = {n for n, r in rows.items() if r["source"] == runstate.SEED_VAL}
    assert seed_val <= val  # human labels are validated first
    assert not any(p.is_symlink() for p in out.rglob("*.jpg"))  # --copy
    model = ultralytics_train(out, epochs=1, imgsz=32, project=tmp_path / "project", batch=16)
    assert sorted(model.names.values()) == list(CLASSES)
    assert (tmp_path / "project" / "train" / "weights" / "last.pt").is_file()


def test_csv_export_has_a_row_per_image_with_its_scores(run, tmp_path):
    assert main(["export", str(run), "--format", "csv", "--out", str(tmp_path / "c"), "--include", "seed"]) == 0
    rows = list(csv.DictReader(open(tmp_path / "c" / "labels.csv")))
    assert list(rows[0]) == ["image", "path", "label", "source", "score", "p_closed", "p_open"]
    assert len(rows) == 20 and {r["source"] for r in rows} == {"seed"}
    for r in rows:
        assert Path(r["path"]).is_file() and r["label"] in CLASSES
        assert float(r["score"]) == float(r[f"p_{r['label']}"])
        assert abs(float(r["p_closed"]) + float(r["p_open"]) - 1) < 1e-4


def test_labelstudio_export_matches_its_import_schema(run, tmp_path):
    out = tmp_path / "ls"
    assert main(["export", str(run), "--format", "labelstudio", "--out", str(out)]) == 0
    config = ElementTree.parse(out / "label_config.xml").getroot()
    image, choices = config.find("Image"), config.find("Choices")
    allowed = {c.get("value") for c in choices.findall("Choice")}
    assert allowed == set(CLASSES) and image.get("value") == "$image"
    tasks = json.loads((out / "tasks.json").read_text())
    assert isinstance(tasks, list) and len(tasks) == len(_placed(run))
    ids = set()
    for t in tasks:  # the fields Label Studio's "import pre-annotated data" guide names
        assert set(t) == {"data", "predictions"} and isinstance(t["data"]["image"], str)
        ref = t["data"]["image"]
        assert ref.startswith("/data/local-files/?d=images/") and (out / ref.split("?d=", 1)[1]).is_file()
        (pred,) = t["predictions"]
        assert pred["model_version"] == "pseudolabel" and 0 <= pred["score"] <= 1
        (res,) = pred["result"]
        assert res["type"] == "choices" and res["from_name"] == choices.get("name")
        assert res["to_name"] == choices.get("toName") == image.get("name")
        assert len(res["value"]["choices"]) == 1 and res["value"]["choices"][0] in allowed
        ids.add(res["id"])
    assert len(ids) == len(tasks)  # result ids differ, as the guide asks


@pytest.mark.parametrize(
    "args, message",
    [
        (["--format", "imagefolder", "--include", "vote,robots"], "--include takes some of"),
        (["--format", "yolo", "--val-share", "1.5"], "--val-share must lie in"),
    ],
)
def test_bad_export_options_are_one_line(run, tmp_path, capsys, args, message):
    assert main(["export", str(run), "--out", str(tmp_path / "x"), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    assert not (tmp_path / "x").exists()


def test_an_existing_folder_is_never_written_into(run, tmp_path, capsys):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "keep.txt").write_text("mine")
    assert main(["export", str(run), "--format", "imagefolder", "--out", str(tmp_path / "mine")]) == 2
    assert "already exists" in capsys.readouterr().err
    assert [p.name for p in (tmp_path / "mine").iterdir()] == ["keep.txt"]


# ----------------------------------------------------------------------------- labels in


@pytest.fixture
def labels(eyes):
    """The equivalent CSV: 30 real image names with labels."""
    names = sorted(os.listdir(eyes / "images"))[:30]
    return [(n, CLASSES[i % 2]) for i, n in enumerate(names)]


def _csv(path, pairs):
    path.write_text("image,label\n" + "".join(f"{n},{c}\n" for n, c in pairs))
    return path


def _imagenet_zip(path, pairs, eyes):
    with zipfile.ZipFile(path, "w") as z:
        for n, c in pairs:
            z.write(eyes / "images" / n, f"{c}/{n}")
        z.writestr("no_label/zz_unlabeled.jpg", b"")
    return path


def _cvat_xml(path, pairs):
    images = "".join(f'  <image id="{i}" name="{n}" width="24" height="24">\n    <tag label="{c}" source="manual">'
                     "</tag>\n  </image>\n" for i, (n, c) in enumerate(pairs))
    images += '  <image id="999" name="untagged.jpg" width="24" height="24"></image>\n'
    path.write_text(f'<?xml version="1.0" encoding="utf-8"?>\n<annotations>\n  <version>1.1</version>\n'
                    f"  <meta><task><name>eyes</name></task></meta>\n{images}</annotations>\n")
    return path


def _labelstudio(path, pairs):
    tasks = [{"id": i, "data": {"image": f"/data/upload/3/{os.urandom(4).hex()}-{n}"},
              "annotations": [{"id": 10 + i, "was_cancelled": False, "result": [
                  {"id": "a", "type": "choices", "from_name": "choice", "to_name": "image",
                   "value": {"choices": [c]}}]}]} for i, (n, c) in enumerate(pairs)]
    tasks.append({"id": 99, "data": {"image": "/data/local-files/?d=eyes/skipped.jpg"}, "annotations": []})
    path.write_text(json.dumps(tasks))
    return path


@pytest.mark.parametrize("kind", ["imagenet_zip", "imagenet_folder", "cvat_xml", "labelstudio"])
def test_annotation_tool_exports_give_the_csv_labels(tmp_path, eyes, labels, kind):
    expected = read_seed_labels(_csv(tmp_path / "seeds.csv", labels), CLASSES, Problems(quiet=True))
    if kind == "imagenet_zip":
        path = _imagenet_zip(tmp_path / "export.zip", labels, eyes)
    elif kind == "imagenet_folder":
        path = tmp_path / "folder"
        with zipfile.ZipFile(_imagenet_zip(tmp_path / "e.zip", labels, eyes)) as z:
            z.extractall(path)
    elif kind == "cvat_xml":
        path = _cvat_xml(tmp_path / "annotations.xml", labels)
    else:
        path = _labelstudio(tmp_path / "project-3.json", labels)
    problems = Problems(quiet=True)
    assert sorted(read_seed_labels(path, CLASSES, problems)) == sorted(expected)
    assert all("not a class" not in m for m in problems.lines)


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("bad.xml", '<?xml version="1.0"?>\n<annotations><image name="a.jpg"><tag label="open"></image>',
         "malformed CVAT XML"),
        ("tasks.json", '[{"data": {}, "annotations": []}]', "has no image reference"),
        ("export.zip", "PK\x03\x04 not really a zip", "seed labels must be"),
        ("cvat.xml", '<?xml version="1.0"?>\n<annotations><version>1.1</version></annotations>', "no <image>"),
    ],
)
def test_a_malformed_annotation_export_is_one_line_naming_the_file(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(ValueError) as err:
        read_seed_labels(path, CLASSES, Problems(quiet=True))
    assert message in str(err.value) and str(path) in str(err.value) and "\n" not in str(err.value)


def test_unknown_labels_in_a_cvat_file_are_one_line_each(tmp_path, labels):
    path = _cvat_xml(tmp_path / "a.xml", [*labels[:4], ("x.jpg", "blinking")])
    problems = Problems(quiet=True)
    assert len(read_seed_labels(path, CLASSES, problems)) == 4
    assert problems.lines == [f"{path}: unknown label 'blinking' for 'x.jpg'; ignored"]


# ----------------------------------------------------------------------------- init, --version, wheel


def test_init_writes_a_pipeline_that_runs_on_a_colour_folder(tmp_path, hub):
    truth = make_color_data(tmp_path / "pics", n_per_class=20)
    seeds = sorted(truth)[:24]
    (tmp_path / "seeds.csv").write_text("image,label\n" + "".join(f"{n},{truth[n]}\n" for n in seeds))
    proc = run_cli("init", "pics", "--labels", "seeds.csv", "--name", "colours", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "pseudolabel run pipelines/colours.yaml" in proc.stdout
    text = (tmp_path / "pipelines" / "colours.yaml").read_text()
    keys = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert all(" # " in line for line in keys), [x for x in keys if " # " not in x]  # every key commented
    assert "eye" not in text.lower() and "classes: [blue, green, red]" in text and "channels: 3" in text
    assert "image_size: [40, 32]" in text and "60 images" in text
    from pseudolabel.stages.init import colour_weights

    if colour_weights() == "pypi":  # no hub here, the PyPI weights installed: real ImageNet weights offline
        assert "pretrained: pypi:efficientnet-lite2" in text and text.count("pretrained: pypi:efficientnet-lite0") == 2
    else:
        assert text.count("pretrained: imagenet") == 3 and "pseudolabel weights fetch NAME" in text  # ImageNet
    again = run_cli("init", "pics", "--labels", "seeds.csv", "--name", "colours", cwd=tmp_path)
    assert again.returncode == 2 and "already exists" in again.stderr
    assert (tmp_path / "pipelines" / "colours.yaml").read_text() == text
    data = yaml.safe_load(text)  # the hub's weights, fabricated: a small resnet's, and ultralytics' own
    data["yolo"]["pretrained"], data["resnet50"] = "imagenet", {"pretrained": "imagenet", "arch": "resnet10t",
                                                                "train": "frozen"}  # fmt: skip
    (tmp_path / "pipelines" / "colours.yaml").write_text(yaml.safe_dump(data))
    proc = run_cli("run", "pipelines/colours.yaml", "--out", "run", "--quiet", cwd=tmp_path, env=hub["env"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert {p.name for p in (tmp_path / "run").iterdir() if p.is_dir()} >= {*COLORS, "unclear"}


def test_init_reads_cifar10_and_refuses_what_it_cannot_use(tmp_path):
    cifar = ROOT.parent / "shared" / "data" / "cifar10"
    proc = run_cli("init", str(cifar / "images"), "--labels", str(cifar / "seed_labels.csv"), "--name", "mine",
                   cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    text = (tmp_path / "pipelines" / "mine.yaml").read_text()
    assert "5,000 images" in text and "image_size: 32 " in text and "channels: 3 " in text and "250 seed labels" in text
    assert "classes: [airplane, automobile, bird, cat, deer, dog, frog, horse, ship, truck]" in text
    bad = run_cli("init", str(cifar / "images"), "--labels", str(tmp_path / "nope.csv"), "--name", "x", cwd=tmp_path)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "nope.csv" in bad.stderr


def test_version(capsys):
    from pseudolabel import __version__

    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.strip() == f"pseudolabel {__version__}"


def test_the_wheel_carries_the_page_and_the_command(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", str(ROOT),
                           "-w", str(tmp_path)], capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    (wheel,) = tmp_path.glob("pseudolabel-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        entry = next(n for n in names if n.endswith("entry_points.txt"))
        assert "pseudolabel = pseudolabel.cli:main" in z.read(entry).decode()
    assert "pseudolabel/static/review.html" in names and "pseudolabel/cli/tools.py" in names
    for package in ("cli", "stages", "review", "engines", "serve", "train", "models", "report", "data", "config", "core"):
        assert f"pseudolabel/{package}/__init__.py" in names, package
    assert not any(n.startswith(("tests/", "benchmarks/", "data/")) for n in names)
