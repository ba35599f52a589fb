"""Only ever replace what pseudolabel itself made, and never take a run's own files for images (issue 53).
Each case is a fault a probe reproduced on a small pool; each test failed before the change."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import COLORS, make_color_data, make_color_run, tree_digest, write_color_pipeline


def cli(*args: str, cwd: Path, ulimit_blocks: int | None = None, env: dict | None = None
        ) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "pseudolabel.cli", *args]
    if ulimit_blocks is not None:  # a file-size limit: writes past it fail with EFBIG (Python ignores SIGXFSZ)
        cmd = ["bash", "-c", f'ulimit -f {ulimit_blocks}; exec "$@"', "bash", *cmd]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PSEUDOLABEL_OFFLINE": "1", **(env or {})})  # fmt: skip


def one_line(res: subprocess.CompletedProcess, *words: str) -> str:
    lines = [x for x in res.stderr.strip().splitlines() if x.startswith("pseudolabel: error")]
    assert res.returncode == 2, (res.returncode, res.stderr[-2000:])
    assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr[-2000:]
    for w in words:
        assert w in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def job(tmp_path) -> Path:
    """A tiny colour pool (10 a class, 4 seed labels a class) and its fast pipeline; returns the pipeline."""
    truth = make_color_data(tmp_path / "images", n_per_class=10)
    seeds = [n for c in COLORS for n in sorted(n for n, t in truth.items() if t == c)[:4]]
    (tmp_path / "seeds.csv").write_text("image,label\n" + "".join(f"{n},{truth[n]}\n" for n in seeds))
    pipe = write_color_pipeline(tmp_path, tmp_path / "images", tmp_path / "seeds.csv")
    data = yaml.safe_load(pipe.read_text())
    data.update(n_train=8, student_max=0, eda=False)
    pipe.write_text(yaml.safe_dump(data))
    return pipe


# ----------------------------------------------------------------------------- --overwrite and --out


@pytest.mark.parametrize("what", ["folder with a file", "nested folder", "a file"])
def test_overwrite_never_replaces_a_folder_that_is_not_a_run(what, job, tmp_path):
    precious = tmp_path / "precious"
    if what == "a file":
        precious.write_text("my thesis")
    else:
        (precious / ("deep/er" if what == "nested folder" else "")).mkdir(parents=True, exist_ok=True)
        (precious / "thesis.txt").write_text("three years of work")
    before = tree_digest(tmp_path)
    line = one_line(cli("run", str(job), "--out", str(precious), "--overwrite", cwd=tmp_path), str(precious))
    assert "replaces only a run" in line
    after = {k: v for k, v in tree_digest(tmp_path).items() if not k.endswith(".lock")}
    assert after == before


@pytest.mark.parametrize("where", ["images", "images/sub/run", "."])
@pytest.mark.parametrize("overwrite", [False, True])
def test_out_may_not_be_in_or_above_the_images(where, overwrite, job, tmp_path):
    (tmp_path / "images" / "sub").mkdir()
    before = tree_digest(tmp_path)
    res = cli("run", str(job), "--out", str(tmp_path / where), *(["--overwrite"] if overwrite else []), cwd=tmp_path)
    one_line(res, "images folder")
    assert tree_digest(tmp_path) == before


def test_a_pool_holding_an_old_run_lists_the_same_images(tmp_path):
    from pseudolabel.data.images import list_images

    run = make_color_run(tmp_path)  # a run made by an earlier release (no marker): run.json, predictions.csv
    from pseudolabel.core.runstate import write_manifest

    write_manifest(run)
    images = tmp_path / "cimages"
    alone = list_images(images)
    shutil.copytree(run, images / "oldrun", symlinks=True)  # a run left inside the pool, pictures and all
    (images / "oldrun" / "curves.png").write_bytes((images / alone[0][0]).read_bytes())
    shutil.copytree(run, images / "newrun", symlinks=True)
    (images / "newrun" / "manifest.json").unlink()
    (images / "newrun" / ".pseudolabel").write_text("{}")  # a run of this release: its marker
    assert list_images(images) == alone


def test_overwrite_still_replaces_a_run_and_an_empty_folder(job, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    res = cli("run", str(job), "--out", str(empty), "--overwrite", "--quiet", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    assert (empty / ".pseudolabel").is_file() and (empty / "run.json").is_file()
    res = cli("run", str(job), "--out", str(empty), "--overwrite", "--quiet", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]


# ----------------------------------------------------------------------------- images that change during a run


@pytest.mark.slow
def test_an_image_replaced_or_deleted_mid_run_never_lands_in_a_class_folder(job, tmp_path, monkeypatch, capsys):
    """Seed images always go to their labeled folder: one is replaced by other bytes and one deleted while
    the seed models train. The replaced one goes to unclear/ with a warning; the deleted one is left out."""
    from pseudolabel.config.schema import load_config
    from pseudolabel.core import runstate
    from pseudolabel.stages import run as run_stage

    seeds = [line.split(",")[0] for line in (tmp_path / "seeds.csv").read_text().splitlines()[1:]]
    replaced, deleted = tmp_path / "images" / seeds[0], tmp_path / "images" / seeds[1]
    train = run_stage.train_seed_models

    def train_then_change(*args, **kwargs):
        out = train(*args, **kwargs)
        replaced.write_bytes((tmp_path / "images" / seeds[-1]).read_bytes())  # another class's picture
        deleted.unlink()
        return out

    monkeypatch.setattr(run_stage, "train_seed_models", train_then_change)
    run_stage.run_pipeline(load_config(job), tmp_path / "run", progress=False)
    rows = {r["image"]: r for r in runstate.read_predictions(tmp_path / "run")}
    assert rows[seeds[0]]["decision"] == "unclear"
    assert (tmp_path / "run" / rows[seeds[0]]["file"]).is_file()
    assert seeds[1] not in rows
    assert not any((tmp_path / "run" / f / seeds[1]).exists() for f in (*COLORS, "unclear"))
    err = capsys.readouterr().err
    assert f"{seeds[0]}: changed while the run trained" in err and f"{seeds[1]}: gone from the images" in err


# ----------------------------------------------------------------------------- --journal, --show, resort --model


@pytest.mark.parametrize("victim", ["notes.txt", "cimages/{first}", "empty.csv", "headless.csv"])
@pytest.mark.parametrize("command", ["review --status", "retrain"])
def test_journal_only_opens_a_journal(victim, command, tmp_path):
    from pseudolabel.review.journal import FIELDS

    run = make_color_run(tmp_path)
    first = sorted(os.listdir(tmp_path / "cimages"))[0]
    path = tmp_path / victim.format(first=first)
    if victim == "notes.txt":
        path.write_text("my notes\nline two\n")
    elif victim == "empty.csv":
        path.write_text("")
    elif victim == "headless.csv":  # a journal whose header line is gone: its decisions must survive
        path.write_text("".join(f"t,{i},a{i},decide,img{i:03d}.jpg,red,f,unclear,red\n" for i in range(450)))
        assert "image" in FIELDS
    before = path.read_bytes()
    res = cli(*command.split()[:1], str(run), *command.split()[1:], "--journal", str(path), cwd=tmp_path)
    one_line(res, str(path))
    assert path.read_bytes() == before


def test_show_never_writes_onto_a_file_and_keeps_one_picture_per_image(tmp_path):
    run = make_color_run(tmp_path)
    from tests.stages.test_damaged_runs import add_final

    add_final(run)
    imgs = tmp_path / "imgs"
    (imgs / "a").mkdir(parents=True)
    (imgs / "b").mkdir()
    src = sorted((tmp_path / "cimages").iterdir())
    shutil.copy(src[0], imgs / "a" / "x.jpg")
    shutil.copy(src[1], imgs / "b" / "x.jpg")
    shown = tmp_path / "shown"
    shown.mkdir()
    (shown / "x.score.png").write_bytes(b"my own picture")
    res = cli("predict", str(imgs / "a" / "x.jpg"), str(imgs / "b" / "x.jpg"), "--model", str(run), "--show", str(shown),
              cwd=tmp_path)  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    assert (shown / "x.score.png").read_bytes() == b"my own picture"
    made = sorted(p.name for p in shown.iterdir() if p.name != "x.score.png")
    assert len(made) == 2 and all(n.startswith("x~") and n.endswith(".score.png") for n in made), made


def test_resort_refuses_a_model_of_other_classes(tmp_path):
    import dataclasses

    import torch

    from pseudolabel.config.schema import Config
    from pseudolabel.models.backbones import create_backbone
    from pseudolabel.serve.predict import export_model

    run = make_color_run(tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    torch.manual_seed(0)
    cfg = dataclasses.replace(Config(), classes=("cat", "dog", "fox"), channels=3, image_size=[32, 40])
    export_model(create_backbone("tinycnn", num_classes=3, in_chans=3, image_size=(32, 40), width=8), cfg, other)
    before = tree_digest(run)
    one_line(cli("resort", str(run), "--model", str(other), cwd=tmp_path), "are not this run's")
    assert {k: v for k, v in tree_digest(run).items() if not k.endswith(".lock")} == before


# ----------------------------------------------------------------------------- write errors


@pytest.mark.slow
def test_a_file_size_limit_during_export_and_retrain_is_one_line_with_nothing_left(job, tmp_path):
    cache = tmp_path / "cache"
    run = tmp_path / "run"
    res = cli("run", str(job), "--out", str(run), "--quiet", cwd=tmp_path, env={"PSEUDOLABEL_CACHE": ""})
    assert res.returncode == 0, res.stderr[-2000:]
    before = tree_digest(tmp_path)
    res = cli("export", str(run), "--format", "imagefolder", "--copy", "--out", str(tmp_path / "exp"), cwd=tmp_path,
              ulimit_blocks=1)  # fmt: skip
    one_line(res, "cannot write")
    assert tree_digest(tmp_path) == before, "the export left something behind"
    res = cli("retrain", str(run), "--backbone", "tinycnn", "--epochs", "1", "--pretrain", "none", "--quiet",
              cwd=tmp_path, ulimit_blocks=40, env={"PSEUDOLABEL_CACHE": str(cache)})  # fmt: skip
    line = one_line(res, "cannot write")
    assert str(cache) in line, line  # the pool cache's folder: the first thing retrain writes
    assert not (run / "final").exists() and not (run / ".final.partial").exists()
    res = cli("retrain", str(run), "--backbone", "tinycnn", "--epochs", "1", "--pretrain", "none", "--quiet",
              cwd=tmp_path, ulimit_blocks=40, env={"PSEUDOLABEL_CACHE": ""})  # fmt: skip
    line = one_line(res, "cannot write", str(run))  # the final model's files (torch's writer) or its pictures
    assert not (run / "final").exists() and not (run / ".final.partial").exists()
    left = [p for p in tmp_path.rglob("*.tmp")]
    assert left == [], left


def test_a_killed_cache_build_leaves_nothing_for_the_next(tmp_path):
    from pseudolabel.core.home import clean_stale

    folder = tmp_path / "pools"
    folder.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = folder / f".abc.{int(dead.stdout)}.tmp"
    stale.write_bytes(b"half a cache")
    alive = folder / f".def.{os.getpid()}.tmp"
    alive.write_bytes(b"being written")
    mine = folder / "notes.tmp"
    mine.write_bytes(b"not ours")
    assert clean_stale(folder) == 1
    assert not stale.exists() and alive.exists() and mine.exists()
