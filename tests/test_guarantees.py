"""What we guarantee, one section per fault an adversarial probe found (issue 47): originals are never
written, nothing is written outside the run or --out, a bad file is one line and never a stop, and every
error of the command line is one line with exit 2. Real files, real processes where it matters."""
from __future__ import annotations

import json
import os
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest
import yaml

from pseudolabel.core import runstate, sort
from pseudolabel.core.names import class_folders, folder_name
from pseudolabel.review.state import ReviewState
from tests.conftest import (
    ROOT,
    image_bytes,
    page_token,
    place_fake_run,
    png_header_only,
    png_with_short_idat,
    post,
    run_cli,
    serve_state,
    tiff_with_tag_type,
    tree_digest,
    write_pipeline,
)


def one_error_line(proc) -> str:
    """The command failed with exit 2 and said so in exactly one line."""
    assert proc.returncode == 2, (proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


# ----------------------------------------------------------------------------- 1: name clashes in `run`

# every clash shape: (pool files) -> the run must give each its own name and never touch an original
CLASHES = {
    "flattened separator": ["sub/x.jpg", "sub__x.jpg"],
    "case only": ["Case.jpg", "case.jpg"],
    "rank-prefix look-alike": ["00001_u7.jpg", "u7.jpg", "00002_u7.jpg"],
    "same name in two sub-folders": ["a/y.jpg", "b/y.jpg"],
    "nested look-alike": ["p/q__r.jpg", "p__q/r.jpg", "p__q__r.jpg"],
    "long nested name": ["d" * 120 + "/" + "e" * 120 + ".jpg", "d" * 120 + "__" + "e" * 120 + ".jpg"],
}


def clash_pool(root: Path, eyes: Path, names: list[str], start: int = 0) -> dict[str, str]:
    """Real crops (each a different one, so every file's bytes are its own) under the given names."""
    crops = sorted(os.listdir(eyes / "images"))[start:]
    src = {}
    for name, crop in zip(names, crops):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(eyes / "images" / crop, root / name)
        src[name] = crop
    return src


@pytest.mark.parametrize("shape", list(CLASHES))
@pytest.mark.parametrize("link", [True, False], ids=["hard links", "copies"])
def test_run_folders_give_every_image_its_own_name_and_never_write_an_original(shape, link, eyes, tmp_path,
                                                                                monkeypatch):
    images = tmp_path / "images"
    names = sorted(CLASHES[shape] + ["plain.jpg", "other.jpg"])
    clash_pool(images, eyes, names)
    before = tree_digest(images)
    if not link:  # a file system without hard links: every entry is a copy, made exclusively
        def no_link(*a, **k):
            raise OSError(18, "Invalid cross-device link")

        monkeypatch.setattr(sort.os, "link", no_link)
    n = len(names)
    for decisions in (np.zeros(n, int), np.full(n, -1), np.arange(n) % 3 - 1):  # all decided, all unclear, mixed
        run = tmp_path / f"run{decisions.sum()}"
        rank = np.where(decisions < 0, np.cumsum(decisions < 0), 0)
        placed = sort.plan(names, decisions, rank, ("0", "1"))
        sort.materialize(placed, images, run, ("0", "1"))
        keys = [sort.name_key(p.file) for p in placed]
        assert len(set(keys)) == n, "two images share a name in the run"
        for p in placed:
            assert (run / p.folder / p.file).read_bytes() == (images / p.image).read_bytes()
        assert tree_digest(images) == before  # every original's bytes and mtime


def test_a_full_run_over_every_clash_shape_leaves_the_pool_as_it_was(eyes, tmp_path):
    """`pseudolabel run` itself over a pool holding every clash shape, a relative symbolic link, a file
    name that is not UTF-8 and three damaged files (faults 1, 4, 5 and 6)."""
    images = tmp_path / "images"
    shutil.copytree(eyes / "images", images, ignore=lambda d, fs: sorted(fs)[300:])  # 300 real crops
    clash_pool(images, eyes, [n for shape in CLASHES.values() for n in shape], start=300)
    (images / "broken.png").write_bytes(png_with_short_idat())
    (images / "float.tif").write_bytes(tiff_with_tag_type(273, 11))
    (images / "lzw.tif").write_bytes(image_bytes("TIFF", compression="tiff_lzw")[:300])  # libtiff complains
    shutil.copy2(eyes / "images" / sorted(os.listdir(eyes / "images"))[401], tmp_path / "outside.jpg")
    os.symlink("../outside.jpg", images / "alias.jpg")  # relative: it would dangle if linked into the run as is
    shutil.copy2(eyes / "images" / sorted(os.listdir(eyes / "images"))[400], os.fsencode(images) + b"/caf\xe9.jpg")
    labels = tmp_path / "targets.json"
    shutil.copy2(eyes / "targets.json", labels)
    pipeline = write_pipeline(tmp_path, images, labels)
    before, outside = tree_digest(images), sorted(os.listdir(tmp_path))
    res = run_cli("run", str(pipeline), "--out", str(tmp_path / "run"), "--quiet", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert tree_digest(images) == before
    assert sorted(os.listdir(tmp_path)) == sorted(outside + ["run", ".run.lock"])  # nothing else written
    assert (tmp_path / "outside.jpg").stat().st_nlink >= 2  # the link in the run is to the file itself
    warnings = [w for w in res.stderr.splitlines() if w.strip()]
    assert all(w.startswith("warning: ") for w in warnings), warnings  # libtiff's own lines never show
    for bad in ("broken.png", "float.tif", "lzw.tif"):
        assert sum(bad in w for w in warnings) == 1, bad
    assert any("caf\\xe9.jpg" in w and "not valid UTF-8" in w for w in warnings), warnings
    rows = runstate.read_predictions(tmp_path / "run")
    assert len({sort.name_key(r["file"].split("/")[1]) for r in rows}) == len(rows)
    by_image = {r["image"]: r for r in rows}
    assert set(n for shape in CLASHES.values() for n in shape) <= set(by_image)
    link = tmp_path / "run" / by_image["alias.jpg"]["file"]
    assert not link.is_symlink() and link.read_bytes() == (images / "alias.jpg").read_bytes()
    report = (tmp_path / "run" / "report.md").read_text()
    assert "broken.png" in report and "float.tif" in report
    st = ReviewState(tmp_path / "run", tmp_path / "run" / "journal.csv", readonly=True).status()
    assert st["problems"] == []


# ----------------------------------------------------------------------------- 2: look-alike names on the page


def test_a_rank_prefixed_pool_name_is_never_confused_with_a_queue_file(eyes, tmp_path):
    images = tmp_path / "images"
    names = ["00001_u7.jpg", "u7.jpg", "v.jpg", "w.jpg"]
    clash_pool(images, eyes, names)
    # u7 is first in the queue; the look-alike 00001_u7.jpg sits in 0/ as a decided image
    a = np.array([[0.9, 0.1], [0.5, 0.5], [0.1, 0.9], [0.45, 0.55]])
    run = tmp_path / "run"
    place_fake_run(run, images, sorted(names), (a, a), 0.8, ("closed", "open"), ("0", "1"))
    (run / "config.yaml").write_text(yaml.safe_dump({"name": "t", "classes": ["closed", "open"]}))
    before = tree_digest(run)
    state = ReviewState(run, tmp_path / "journal.csv")
    st = state.status()
    assert st["problems"] == [] and st["counts"]["0"] == 1, st
    state.decide("u7.jpg", "0")
    after = tree_digest(run)
    files = {r["image"]: r["file"] for r in runstate.read_predictions(run)}
    look_alike = files["00001_u7.jpg"]
    assert after[look_alike] == before[look_alike]  # the other image's file is still its own
    moved = "0/" + files["u7.jpg"].split("/")[1]
    assert after[moved][0] == before[files["u7.jpg"]][0]
    assert state.status()["problems"] == []


def test_a_move_never_replaces_a_file_put_there_by_hand(fake_run, tmp_path):
    state = ReviewState(fake_run, tmp_path / "journal.csv")
    item = state.items[state.queue()["items"][0]["image"]]
    squatter = fake_run / "1" / item.file
    squatter.write_bytes(b"a person's own file")
    from pseudolabel.review.state import Conflict

    with pytest.raises(Conflict, match=r"already (exists|in 1/)"):
        state.decide(item.image, "1")
    assert squatter.read_bytes() == b"a person's own file" and (fake_run / "unclear" / item.file).is_file()
    with pytest.raises(FileExistsError):
        runstate.rename_noreplace(fake_run / "unclear" / item.file, squatter)


def test_old_runs_with_shared_names_are_read_by_the_folder_the_run_recorded(eyes, tmp_path):
    rows = [{"image": "u7.jpg", "file": "unclear/00001_u7.jpg"}, {"image": "00001_u7.jpg", "file": "0/00001_u7.jpg"},
            {"image": "z.jpg", "file": "1/z.jpg"}]
    index = runstate.FileIndex(rows)
    assert index.image("unclear", "00001_u7.jpg") == "u7.jpg"
    assert index.image("0", "00001_u7.jpg") == "00001_u7.jpg"
    assert index.image("0", "z.jpg") == "z.jpg"  # an unshared name is found in any folder (a hand move)
    assert index.image("1", "00001_u7.jpg") is None and index.image("1", "stranger.jpg") is None


# ----------------------------------------------------------------------------- 3: class names as folder names

@pytest.mark.parametrize("name,folder", [
    ("cat", "cat"), ("a/b", "a%2Fb"), ("../../x", "%2E.%2F..%2Fx"), ("..", "%2E%2E"), (".hidden", "%2Ehidden"),
    ("a\\b", "a%5Cb"), ("50%", "50%25"), ("CON", "%43ON"), ("nul.txt", "%6Eul.txt"), ("dot.", "dot%2E"),
    (" lead", "%20lead"), ("tab\there", "tab%09here"), ("new\nline", "new%0Aline"), ("été", "été"),
    ("a:b*c?", "a%3Ab%2Ac%3F"),
])  # fmt: skip
def test_folder_name_is_one_plain_component(name, folder):
    assert folder_name(name) == folder
    assert "/" not in folder and "\\" not in folder and folder not in (".", "..") and not folder.startswith(".")


@pytest.mark.parametrize("classes,match", [(("", "b"), "empty"), (("A", "a"), "differ only in case"),
                                           (("x" * 300, "b"), "too long")])
def test_class_folders_refuse_what_cannot_be_a_folder(classes, match):
    with pytest.raises(ValueError, match=match):
        class_folders(classes)


def test_folder_name_is_one_to_one():
    names = ["a/b", "a%2Fb", "a%252Fb", "..", "%2E%2E", "CON", "%43ON", "x.", "x%2E"]
    assert len({folder_name(n) for n in names}) == len(names)


@pytest.fixture
def hostile_run(eyes, tmp_path):
    """A run whose classes are named ../../x and a/b (accepted with folder_names: index)."""
    images = tmp_path / "work" / "images"
    names = [f"{i}.jpg" for i in range(8)]
    clash_pool(images, eyes, names)
    a = np.tile([[0.95, 0.05], [0.05, 0.95]], (4, 1))
    run = tmp_path / "work" / "run"
    place_fake_run(run, images, names, (a, a), 0.8, ("../../x", "a/b"), ("0", "1"))
    (run / "config.yaml").write_text(yaml.safe_dump({"name": "t", "classes": ["../../x", "a/b"],
                                                     "images": str(images)}))
    return tmp_path, run, images


@pytest.mark.parametrize("fmt", ["imagefolder", "yolo", "labelstudio"])
@pytest.mark.parametrize("copy", [False, True])
def test_export_writes_only_inside_out(hostile_run, fmt, copy):
    tmp, run, images = hostile_run
    (tmp / "x").mkdir()
    (tmp / "x" / "0.jpg").write_bytes(b"a user's file above --out")  # where ../../x would have landed
    before = tree_digest(tmp)
    out = tmp / "work" / "deep" / "out"
    res = run_cli("export", str(run), "--format", fmt, "--out", str(out), *(["--copy"] if copy else []), cwd=tmp)
    assert res.returncode == 0, res.stderr
    after = tree_digest(tmp)
    for path, digest in before.items():
        assert after.get(path) == digest, path  # nothing changed, in the run or anywhere else
    new = [p for p in after if p not in before]
    assert new and all(p.startswith("work/deep/out/") for p in new), new
    assert {p.name for p in out.rglob("*") if p.is_dir() and p.parent.name in ("out", "train", "images")} >= {
        "%2E.%2F..%2Fx", "a%2Fb"}


@pytest.mark.parametrize("where,match", [
    ("images/out", "inside the images folder"), ("run/out", "inside the run"), ("run/0/out", "inside the run"),
])  # fmt: skip
def test_export_refuses_an_out_inside_the_images_or_a_run(hostile_run, where, match):
    tmp, run, images = hostile_run
    before = tree_digest(tmp)
    line = one_error_line(run_cli("export", str(run), "--format", "csv", "--out", str(tmp / "work" / where), cwd=tmp))
    assert match in line
    assert tree_digest(tmp) == before


def test_export_never_removes_a_partial_folder_it_did_not_make(hostile_run):
    tmp, run, _ = hostile_run
    theirs = tmp / ".out.partial"
    theirs.mkdir()
    (theirs / "keep.txt").write_text("mine")
    line = one_error_line(run_cli("export", str(run), "--format", "csv", "--out", str(tmp / "out"), cwd=tmp))
    assert ".out.partial exists" in line
    assert (theirs / "keep.txt").read_text() == "mine" and not (tmp / "out").exists()


# ----------------------------------------------------------------------------- 4, 12: damaged and huge images


def raw_pil_raises(data: bytes) -> str:
    """The exception class Pillow itself raises on ``data`` (None: it decodes)."""
    import io
    import warnings

    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            Image.open(io.BytesIO(data)).convert("RGB")
    except Exception as exc:  # noqa: BLE001
        return type(exc).__name__
    return "none"


@pytest.mark.parametrize("name,make,pil_raises", [
    ("broken.png", png_with_short_idat, "SyntaxError"),
    ("float.tif", lambda: tiff_with_tag_type(273, 11), "TypeError"),
    ("rational.tif", lambda: tiff_with_tag_type(273, 5), "TypeError"),
    ("bomb.png", lambda: png_header_only(20000, 20000), "DecompressionBombError"),
])  # fmt: skip
def test_a_decoder_fault_on_one_file_is_one_line_naming_it(name, make, pil_raises, tmp_path, small_pool, capfd):
    from pseudolabel.data.images import Problems
    from pseudolabel.data.pool import load_pool

    data = make()
    assert raw_pil_raises(data) == pil_raises  # the fault is real: Pillow raises this, not OSError
    (small_pool / name).write_bytes(data)
    problems = Problems()
    pool = load_pool(small_pool, 24, 1, problems, progress=False, cache=None)
    assert name not in pool.names and len(pool.names) == 300
    lines = [line for line in problems.lines if name in line]
    assert len(lines) == 1 and "\n" not in lines[0] and str(small_pool / name) in lines[0]
    err = capfd.readouterr().err.strip().splitlines()
    assert err == [f"warning: {line}" for line in problems.lines]  # nothing else reached the terminal


def test_libtiff_messages_are_caught_not_printed(tmp_path, capfd):
    from pseudolabel.data.cache import Decoder

    data = image_bytes("TIFF", compression="tiff_deflate")
    at = len(data) // 3
    damaged = data[:at] + bytes(b ^ 0x5A for b in data[at : at + 40]) + data[at + 40 :]
    capfd.readouterr()
    with pytest.raises(Exception) as info:  # noqa: PT011 -- whatever the decoder raises, it is one line
        Decoder((24, 24), 3)("x.tif", damaged)
    assert capfd.readouterr().err == ""
    assert "\n" not in str(info.value)


def test_a_huge_image_is_one_line_and_no_pillow_warning(small_pool, capfd, recwarn):
    from pseudolabel.data.images import Problems
    from pseudolabel.data.pool import load_pool

    (small_pool / "huge.png").write_bytes(png_header_only(11000, 10000))  # 110 Mpx: over our limit, under Pillow's
    problems = Problems()
    load_pool(small_pool, 24, 1, problems, progress=False, cache=None)
    line = [p for p in problems.lines if "huge.png" in p]
    assert len(line) == 1 and "11000x10000 pixels is more than max_pixels (100,000,000)" in line[0]
    assert "DecompressionBomb" not in capfd.readouterr().err and not [w for w in recwarn if "bomb" in str(w.message)]


def test_large_images_decode_with_bounded_memory(tmp_path):
    """A JPEG over the pixel limit still decodes (its draft scale shrinks it while decoding); a PNG
    over it does not; one under it is reduced before any conversion."""
    from pseudolabel.data.images import TooLarge, load_image

    jpeg, png = tmp_path / "big.jpg", tmp_path / "big.png"
    jpeg.write_bytes(image_bytes("JPEG", size=(3000, 4000)))
    png.write_bytes(image_bytes("PNG", size=(3000, 4000)))
    assert load_image(jpeg, 24, 3, max_pixels=1_000_000).shape == (3, 24, 24)
    with pytest.raises(TooLarge, match="4000x3000 pixels is more than max_pixels"):
        load_image(png, 24, 3, max_pixels=1_000_000)
    import subprocess
    import sys

    code = ("import resource, sys; from pseudolabel.data import load_image; a = load_image(sys.argv[1], 32, 3); "
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")  # fmt: skip
    big = tmp_path / "grey.png"
    from PIL import Image

    Image.new("L", (6000, 5000), 128).save(big)  # 30 Mpx: 30 MB as grey, 90 MB as RGB
    peak_kb = int(subprocess.run([sys.executable, "-c", code, str(big)], capture_output=True, text=True,
                                 cwd=ROOT, check=True).stdout)  # fmt: skip
    base_kb = int(subprocess.run([sys.executable, "-c", code.replace("a = load_image(sys.argv[1], 32, 3); ", ""),
                                  str(big)], capture_output=True, text=True, cwd=ROOT, check=True).stdout)
    assert peak_kb - base_kb < 60_000  # the grey image once, never its RGB conversion at full size


# ----------------------------------------------------------------------------- 7: init writes YAML through yaml

HOSTILE = ["red, dark", "yes", "no", "null", "1.5", "cat: big", "img #1", "[x]", "{y}", "- z", "'q'", "a\\b",
           "~", "on", "tab\there"]  # fmt: skip


@pytest.mark.parametrize("folder", ["img #1", "yes", "a: b", "[x]", "- dash", "new\nline"])
def test_init_round_trips_hostile_class_and_folder_names(tmp_path, folder):
    from pseudolabel.config.schema import load_config

    images = tmp_path / folder
    images.mkdir()
    for i in range(len(HOSTILE) * 2):
        (images / f"{i}.png").write_bytes(image_bytes("PNG", size=(16, 16), seed=i))
    labels = tmp_path / "my labels #1.csv"
    labels.write_text("image,label\n" + "".join(f'{i}.png,"{HOSTILE[i % len(HOSTILE)]}"\n'
                                                 for i in range(len(HOSTILE) * 2)))
    res = run_cli("init", str(images), "--labels", str(labels), "--name", "hostile", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    cfg = load_config(tmp_path / "pipelines" / "hostile.yaml")
    assert sorted(cfg.classes) == sorted(HOSTILE)
    assert cfg.images == str(images) and cfg.labels == str(labels)
    assert cfg.folder_names == "index"  # a\\b and tab\there are not plain folder names


# ----------------------------------------------------------------------------- 8: Label Studio with wrong types

LS_BAD = [
    ([{"data": {"image": "a.jpg"}, "annotations": 3}], "'annotations' must be a list, got a number"),
    ([{"data": {"image": "a.jpg"}, "annotations": [{"result": 5}]}], "'result' must be a list, got a number"),
    ([{"data": {"image": "a.jpg"}, "annotations": [{"result": [{"type": "choices", "value": {"choices": "red"}}]}]}],
     "choices must be a list, got a string"),
    ([{"data": {"image": "a.jpg"}, "annotations": [{"result": [{"type": "choices", "value": {"choices": {"a": 1}}}]}]}],
     "choices must be a list, got an object"),
    ([{"data": {"image": "a.jpg"}, "annotations": [{"result": [{"type": "choices", "value": {"choices": [3]}}]}]}],
     "choices[0] must be a string, got a number"),
    ([{"data": {"image": "a.jpg"}, "annotations": [{"result": [{"type": "choices", "value": "red"}]}]}],
     "value must be an object, got a string"),
    ([{"data": {"image": "a.jpg"}, "annotations": ["x"]}], "annotations[0] must be an object, got a string"),
    ([{"data": "a.jpg"}], "'data' must be an object, got a string"),
    ([{"data": {"image": "a.jpg"}}, 7], "task 1 must be an object, got a number"),
]  # fmt: skip


@pytest.mark.parametrize("data,message", LS_BAD)
@pytest.mark.parametrize("command", ["run", "init"])
def test_label_studio_with_wrong_types_is_one_line_naming_the_field(data, message, command, small_pool, tmp_path):
    labels = tmp_path / "ls.json"
    labels.write_text(json.dumps(data))
    if command == "run":
        pipe = tmp_path / "p.yaml"
        pipe.write_text(yaml.safe_dump({"images": str(small_pool), "labels": str(labels), "classes": ["red", "blue"]}))
        res = run_cli("run", str(pipe), "--out", str(tmp_path / "run"), "--quiet", cwd=tmp_path)
    else:
        res = run_cli("init", str(small_pool), "--labels", str(labels), cwd=tmp_path)
    line = one_error_line(res)
    assert str(labels) in line and message in line, line
    assert not (tmp_path / "run").exists() and not (tmp_path / "pipelines").exists()


@pytest.mark.parametrize("text", ["[" * 100_000 + "]" * 100_000, '{"a":' * 50 + "1" + "}" * 50])
def test_deeply_nested_json_is_one_line(text, small_pool, tmp_path):
    labels = tmp_path / "deep.json"
    labels.write_text(text)
    line = one_error_line(run_cli("init", str(small_pool), "--labels", str(labels), cwd=tmp_path))
    assert "nested more than 32 levels" in line and str(labels) in line


# ----------------------------------------------------------------------------- 9, 10: init on a bomb, the port


def test_init_on_a_folder_holding_a_decompression_bomb_warns_and_goes_on(small_pool, eyes, tmp_path):
    (small_pool / "-bomb.png").write_bytes(png_header_only(20000, 20000))  # first by name: sampled
    labels = tmp_path / "t.json"
    shutil.copy2(eyes / "targets.json", labels)
    res = run_cli("init", str(small_pool), "--labels", str(labels), "--name", "b", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    bomb = [line for line in res.stderr.splitlines() if "-bomb.png" in line]
    assert len(bomb) == 1 and bomb[0].startswith("warning: ") and "Traceback" not in res.stderr


def test_review_port_out_of_range_or_taken_is_one_line(fake_run, tmp_path):
    assert "from 0 to 65535" in one_error_line(run_cli("review", str(fake_run), "--port", "70000", "--no-browser",
                                                       cwd=tmp_path))  # fmt: skip
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        line = one_error_line(run_cli("review", str(fake_run), "--port", str(port), "--no-browser", cwd=tmp_path))
    assert f"cannot listen on 127.0.0.1:{port}" in line


# ----------------------------------------------------------------------------- 11: configuration

CONFIG_BAD = [
    ({"retrain": 0}, "retrain must be a section"),
    ({"retrain": []}, "retrain must be a section"),
    ({"yolo": False}, "yolo must be a section"),
    ({"staged": ""}, "staged must be a section"),
    ({"classes": [1, 2]}, "classes must be a list of names"),
    ({"image_size": [24, "a"]}, "image_size must be a list of whole numbers"),
    ({"threshold": ["a", 0.5]}, "threshold must be a list of numbers"),
    ({"mean": [0.5], "std": [{}], "normalize": "given"}, "std must be a list of numbers"),
    ({"resort": {"accept": [0.9, None]}}, "accept must be a list of numbers"),
    ({"compare": {"backbones": [1]}}, "backbones must be a list of names"),
    ({"yolo": {"lr": -0.01}}, "yolo: lr (a learning rate) must be > 0"),
    ({"retrain": {"warmup_lr": 0}}, "retrain: warmup_lr (a learning rate) must be > 0"),
    ({"staged": {"momentum": 1.5}}, "staged: momentum must be in [0, 1)"),
    ({"retrain": {"weight_decay": -1e-4}}, "retrain: weight_decay (a weight decay) must be >= 0"),
    ({"label_check": {"lr": float("nan")}}, "label_check: lr must be a finite number"),
    ({1: "x"}, "unknown key(s) 1"),
    ({"max_pixels": 0}, "max_pixels must be a whole number >= 1"),
]  # fmt: skip


@pytest.mark.parametrize("data,message", CONFIG_BAD)
def test_config_errors_name_the_key(data, message, tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(data))
    line = one_error_line(run_cli("run", str(path), "--out", str(tmp_path / "run"), cwd=tmp_path))
    assert message in line and str(path) in line, line
    assert not (tmp_path / "run").exists()


def test_an_empty_section_means_its_defaults(tmp_path):
    from pseudolabel.config.schema import Config, load_config

    path = tmp_path / "p.yaml"
    path.write_text("retrain:\nyolo:\n")
    assert load_config(path) == Config()


# ----------------------------------------------------------------------------- the page serves a resolved link


def test_the_review_page_serves_every_image_of_a_run_with_links_in_its_pool(eyes, tmp_path):
    import urllib.request

    images = tmp_path / "images"
    clash_pool(images, eyes, ["a.jpg", "b.jpg"])
    os.symlink("a.jpg", images / "alias.jpg")
    names = ["a.jpg", "alias.jpg", "b.jpg"]
    p = np.full((3, 2), 0.5)
    run = tmp_path / "run"
    place_fake_run(run, images, names, (p, p), 0.8, ("closed", "open"), ("0", "1"))
    (run / "config.yaml").write_text(yaml.safe_dump({"name": "t", "classes": ["closed", "open"]}))
    for url, _ in serve_state(ReviewState(run, tmp_path / "j.csv")):
        token = page_token(url)
        for name in names:
            with urllib.request.urlopen(f"{url}api/image?name={name}") as r:
                assert r.status == 200 and r.read() == (images / name).read_bytes()
        assert post(url, "/api/decide", {"image": "alias.jpg", "label": "1"}, token)[0] == 200
