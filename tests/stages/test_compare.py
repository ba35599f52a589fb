"""`pseudolabel compare`: seed 001's backbone table on a tiny real run, its files and its errors."""
import csv

import pytest

from pseudolabel.cli.main import main
from pseudolabel.core import runstate
from tests.conftest import make_seed_run


@pytest.fixture(scope="module")
def compared(tmp_path_factory, eyes):
    tmp = tmp_path_factory.mktemp("compare")
    run, *_ = make_seed_run(tmp, eyes, n=200)
    return run


def test_compare_prints_and_writes_the_table(compared, capsys):
    run = compared
    assert main(["compare", str(run), "--backbones", "tinycnn,yolov8n-cls", "--epochs", "1", "--quiet"]) == 0
    out = capsys.readouterr().out
    lines = [x for x in out.splitlines() if x.startswith("|")]
    head = [c.strip() for c in lines[0].strip("|").split("|")]
    assert head[:5] == ["backbone", "precision", "recall", "EER", "macro F1"] or head[:4] == ["backbone", "precision",
                                                                                              "recall", "EER"]
    assert head[-3:] == ["params (M)", "train s", "CPU ms/image"] and "accuracy" in head
    assert [x.split("|")[1].strip() for x in lines[2:]] == ["tinycnn", "yolov8n-cls"]
    rows = list(csv.DictReader(open(run / "compare.csv")))
    assert [r["backbone"] for r in rows] == ["tinycnn", "yolov8n-cls"]
    for r in rows:
        assert 0 <= float(r["accuracy"]) <= 1 and 0 <= float(r["EER"]) <= 1 and float(r["CPU ms/image"]) > 0
    assert float(rows[0]["params (M)"]) < 0.2 < float(rows[1]["params (M)"])  # tinycnn 72 k, yolov8n-cls 1.4 M
    md = (run / "compare.md").read_text()
    n_val = sum(r["source"] == "seed-val" for r in runstate.read_predictions(run))  # nothing reviewed yet
    assert md.splitlines()[0] == lines[0] and f"validated on **{n_val} images**" in md
    assert f"one image is {100 / n_val:.1f} points" in md


def test_a_bad_backbone_is_one_line_before_any_training(compared, capsys):
    (compared / "compare.csv").unlink(missing_ok=True)
    assert main(["compare", str(compared), "--backbones", "tinycnn,resnet_9000", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "resnet_9000" in err[0]
    assert not (compared / "compare.csv").exists()


def test_the_default_list_is_seed_001s_seven():
    from pseudolabel.config.schema import Config

    names = Config().compare.backbones
    assert len(names) == 7 and {"resnet18", "resnet50", "resnet101", "yolov8n-cls", "yolov8m-cls"} <= set(names)
    assert sum("mobilenetv3" in n for n in names) == 2
