"""A damaged run folder is reported as damaged, in one line naming the file, never read as a smaller
truth (issue 52, item 8). Each case damages one file of a run and asks every command that reads it."""
from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import make_color_run, tree_digest


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pseudolabel.cli", *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, "PSEUDOLABEL_OFFLINE": "1"}, timeout=600)  # fmt: skip


def one_line(res: subprocess.CompletedProcess, *words: str) -> str:
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2, (res.returncode, res.stderr[-2000:])
    assert len(lines) == 1 and "Traceback" not in res.stderr, lines
    for w in words:
        assert w in lines[0], lines[0]
    return lines[0]


def add_final(run: Path) -> Path:
    """A small exported final model for the colour run (what `retrain` leaves in final/)."""
    import torch

    from pseudolabel.config.schema import Config
    from pseudolabel.core.runstate import write_manifest
    from pseudolabel.models.backbones import create_backbone
    from pseudolabel.serve.predict import export_model

    torch.manual_seed(0)
    cfg = dataclasses.replace(Config(), classes=("red", "green", "blue"), channels=3, image_size=[32, 40],
                              folder_names="name")  # fmt: skip
    (run / "final").mkdir()
    export_model(create_backbone("tinycnn", num_classes=3, in_chans=3, image_size=(32, 40), width=8), cfg,
                 run / "final")  # fmt: skip
    write_manifest(run / "final")  # as retrain finishes it (a final model of an earlier release: no marker)
    return run / "final"


def cut(path: Path, keep: float) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


DAMAGE = {
    "run.json not JSON": ("run.json", lambda p: p.write_text('{"id": "x", "classes": ['), "not valid JSON"),
    "run.json without id": ("run.json", lambda p: p.write_text('{"classes": ["a", "b", "c"], "folders": ["a", "b", "c"],'
                                                                ' "models": ["m"]}'), "'id' is missing"),
    "predictions.csv cut mid-row": ("predictions.csv", lambda p: cut(p, 0.5), "damaged"),
    "predictions.csv short of rows": ("predictions.csv",
                                      lambda p: p.write_text("".join(p.read_text().splitlines(True)[:7])),
                                      "it has 6 rows, but scores/"),
}
COMMANDS = [["export", "{run}", "--format", "csv", "--out", "{tmp}/exported"], ["review", "{run}", "--status"],
            ["resort", "{run}"], ["retrain", "{run}", "--overwrite", "--epochs", "1"]]  # fmt: skip


@pytest.mark.parametrize("damage", list(DAMAGE))
@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[0])
def test_a_damaged_record_is_one_line_naming_it(damage, command, tmp_path):
    run = make_color_run(tmp_path)
    add_final(run)
    name, spoil, says = DAMAGE[damage]
    spoil(run / name)
    before = tree_digest(tmp_path)
    res = cli(*[a.format(run=run, tmp=tmp_path) for a in command], cwd=tmp_path)
    one_line(res, name, says)
    after = {k: v for k, v in tree_digest(tmp_path).items() if not k.endswith(".lock")}  # the lock may be taken
    assert after == before, "a command wrote on a damaged run"


@pytest.mark.parametrize("garbage", ["\x00\x01binary\xff", "not,a,journal\n1,2,3\n", "time,run,action\n"])
def test_a_garbage_journal_is_damaged_never_empty(garbage, tmp_path):
    from pseudolabel.core.runstate import RunInfo

    run = make_color_run(tmp_path)
    dataclasses.replace(RunInfo.load(run), journal="journal.csv").save(run)  # as runs of this release record it
    (run / "journal.csv").write_text(garbage, errors="surrogateescape")
    before = (run / "journal.csv").read_bytes()
    for command in (["review", str(run), "--status"], ["export", str(run), "--format", "csv", "--out", "x"]):
        one_line(cli(*command, cwd=tmp_path), "journal.csv", "damaged")
    assert (run / "journal.csv").read_bytes() == before


def test_a_journal_row_with_missing_fields_names_its_line(tmp_path):
    from pseudolabel.review.journal import FIELDS, Journal

    path = tmp_path / "journal.csv"
    path.write_text(",".join(FIELDS) + "\n" + ",".join(["t", "r", "a", "decide", "x.jpg", "red", "f", "unclear",
                                                       "red"]) + "\nt,r\n")  # fmt: skip
    with pytest.raises(ValueError, match="line 3 does not have"):
        Journal(path, "r")


@pytest.mark.parametrize("file", ["model.onnx", "model.ts", "preprocess.json"])
def test_a_damaged_final_model_is_one_line(file, tmp_path):
    run = make_color_run(tmp_path)
    final = add_final(run)
    (final / file).write_bytes(b"\x00garbage" * 50)
    image = next((tmp_path / "cimages").iterdir())
    one_line(cli("predict", str(image), "--model", str(run), cwd=tmp_path), file)
    one_line(cli("resort", str(run), cwd=tmp_path), file)


def test_an_undamaged_run_still_reads(tmp_path):
    """The checks above are not a refusal of every run: the same commands succeed on the intact folder."""
    run = make_color_run(tmp_path)
    add_final(run)
    res = cli("review", str(run), "--status", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    res = cli("export", str(run), "--format", "csv", "--out", str(tmp_path / "exported"), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    image = next((tmp_path / "cimages").iterdir())
    res = cli("predict", str(image), "--model", str(run), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
