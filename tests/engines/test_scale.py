"""Issue 35: one device for every tensor, a streamed pool cache, budgets in steps, the review index."""
from __future__ import annotations

import os
import shutil
import time

import numpy as np
import pytest
import torch

from pseudolabel.config.schema import SeedTrainConfig
from pseudolabel.core import device
from pseudolabel.data import augment
from pseudolabel.data.cache import decode_cached, decoder
from pseudolabel.data.images import Problems, list_images, load_image
from pseudolabel.data.pool import load_pool
from pseudolabel.data.stream import CyclingBatches, InOrder, batches, loader
from pseudolabel.models.backbones import create_backbone
from pseudolabel.train import fixmatch
from pseudolabel.train.fixmatch import FixMatchConfig, fit_fixmatch, predict_probs
from pseudolabel.train.simclr import pretrain_simclr
from pseudolabel.train.supervised import fit_module


def tiny_set(n: int = 48, k: int = 3, seed: int = 0):
    """(n, 3, 12, 12) uint8 images whose class is their dominant colour channel, and (n,) labels."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % k
    x = rng.integers(0, 90, size=(n, 3, 12, 12))
    x[np.arange(n), y] += 160
    return x.astype(np.uint8), y


def net():
    torch.manual_seed(0)
    return create_backbone("tinycnn", num_classes=3, in_chans=3, image_size=(12, 12), width=8)


# ----------------------------------------------------------------------------- device


def _fixmatch(model, x, y):
    fit_fixmatch(model, x[:24], y[:24], x, x[24:], y[24:], FixMatchConfig(epochs=1, epoch_steps=2, batch_size=8, mu=2,
                 threshold="flexmatch"), progress=False)  # fmt: skip


def _supervised(model, x, y):
    fit_module(model, x[:24], y[:24], x[24:], y[24:], SeedTrainConfig(epochs=1, batch_size=8), 0, "t", False)


def _simclr(model, x, y):
    pretrain_simclr(model, x, epochs=1, batch_size=8, epoch_steps=2, progress=False)


def _scoring(model, x, y):
    predict_probs(model, x, batch_size=16, tta=True)


@pytest.mark.parametrize("step", [_fixmatch, _supervised, _simclr, _scoring])
def test_every_tensor_of_a_step_is_made_on_the_models_device(step):
    """The stand-in device check: inside ``torch.device("meta")`` a tensor made without an explicit
    device lands on "meta", and the first op that mixes it with the model's CPU tensors raises."""
    device.use("cpu")
    x, y, model = *tiny_set(), net()
    with torch.device("meta"):
        step(model, x, y)
    assert {p.device.type for p in model.parameters()} == {"cpu"}


def test_the_device_check_catches_a_tensor_made_on_the_default_device(monkeypatch):
    """The check above can fail: an augmentation that forgets ``device=`` is caught."""
    device.use("cpu")
    real = augment.flip

    def careless(x, p=0.5, g=None):
        noise = torch.rand(len(x)).view(-1, 1, 1, 1)  # no device: the default one
        return real(x, p, g) * 0 + x + noise * 0

    monkeypatch.setattr(augment, "flip", careless)
    x, y, model = *tiny_set(), net()
    with pytest.raises((RuntimeError, NotImplementedError)), torch.device("meta"):
        _fixmatch(model, x, y)


@pytest.mark.parametrize("name,expected", [("auto", "cpu"), ("cpu", "cpu"), ("CPU", "cpu")])
def test_resolve_picks_what_this_machine_has(name, expected):
    if torch.cuda.is_available():  # a GPU machine: auto is CUDA
        expected = "cuda:0" if name == "auto" else expected
    assert device.resolve(name).name == expected


@pytest.mark.parametrize("name", ["cuda:99", "tpu", "", "cuda:x"])
def test_resolve_refuses_a_device_with_one_line(name):
    with pytest.raises(ValueError, match="device"):
        device.resolve(name)


def test_cpu_runs_fp32_and_exported_models_load_anywhere(tmp_path):
    d = device.resolve("cpu")
    assert d.amp_dtype is None and not d.scaler().is_enabled()
    from pseudolabel.config.schema import Config
    from pseudolabel.serve.predict import export_model

    cfg = Config(classes=("a", "b", "c"), channels=3, image_size=12)
    export_model(net(), cfg, tmp_path)
    loaded = torch.jit.load(str(tmp_path / "model.ts"), map_location="cpu")
    assert {p.device.type for p in loaded.parameters()} == {"cpu"}


# ----------------------------------------------------------------------------- streamed batches and steps


def test_cycling_batches_see_every_image_once_per_pass_and_are_seeded():
    batches = list(CyclingBatches(10, 4, 5, seed=3))
    flat = [i for b in batches for i in b]
    assert [len(b) for b in batches] == [4] * 5 and sorted(flat[:10]) == list(range(10))
    assert sorted(flat[10:20]) == list(range(10)) and batches == list(CyclingBatches(10, 4, 5, seed=3))
    assert batches != list(CyclingBatches(10, 4, 5, seed=4))


def test_cycling_batches_do_not_share_the_augmentations_random_stream():
    """The training loops seed their augmentation generator and the batch order with the same seed;
    the order must come from its own stream, not replay the augmentations' numbers."""
    first = list(CyclingBatches(50, 50, 1, seed=0))[0]
    same_stream = torch.randperm(50, generator=torch.Generator().manual_seed(0)).tolist()
    assert sorted(first) == list(range(50)) and first != same_stream


def test_loader_reads_rows_in_order_from_a_memmap(tmp_path):
    x, _ = tiny_set(37)
    mm = np.memmap(tmp_path / "x.u8", dtype=np.uint8, mode="w+", shape=x.shape)
    mm[:] = x
    mm.flush()
    ro = np.memmap(tmp_path / "x.u8", dtype=np.uint8, mode="r", shape=x.shape)
    got = [b for b, _ in loader(ro, InOrder(len(ro), 16), device=device.resolve("cpu"))]
    assert [len(b) for b in got] == [16, 16, 5] and np.array_equal(torch.cat(got).numpy(), x)
    rows = [5, 1, 30]
    batch, idx = loader(ro, [rows]).dataset[rows]
    assert np.array_equal(batch.numpy(), x[rows]) and idx.tolist() == rows


def test_scanning_a_cache_file_gives_its_rows_in_order(tmp_path):
    x, _ = tiny_set(37)
    x.tofile(tmp_path / "x.u8")
    ro = np.memmap(tmp_path / "x.u8", dtype=np.uint8, mode="r", shape=x.shape)
    got = torch.cat(list(batches(ro, 16, device=device.resolve("cpu"))))
    assert got.dtype == torch.float32 and np.array_equal((got * 255).round().byte().numpy(), x)
    part = torch.cat(list(batches(ro[5:], 16, device=device.resolve("cpu"))))  # not a whole file: the loader
    assert np.array_equal((part * 255).round().byte().numpy(), x[5:])


@pytest.mark.parametrize("pool_size", [48, 480])
def test_a_fixmatch_budget_in_steps_does_not_grow_with_the_pool(pool_size, monkeypatch):
    calls = []
    real = fixmatch._step
    monkeypatch.setattr(fixmatch, "_step", lambda *a, **k: calls.append(len(a[3])) or real(*a, **k))
    x, y = tiny_set(pool_size)
    fit_fixmatch(net(), x[:24], y[:24], x, x[:12], y[:12], FixMatchConfig(epochs=2, epoch_steps=3, batch_size=8, mu=2),
                 progress=False)  # fmt: skip
    assert calls == [16] * 6


# ----------------------------------------------------------------------------- the pool cache


def test_pool_cache_is_built_once_reused_and_equal_to_a_direct_decode(eyes, tmp_path):
    pool_dir = tmp_path / "images"
    pool_dir.mkdir()
    for name in sorted(os.listdir(eyes / "images"))[:40]:
        shutil.copy2(eyes / "images" / name, pool_dir / name)
    cache = tmp_path / "cache"
    first = load_pool(pool_dir, 24, 1, Problems(quiet=True), False, cache=cache)
    direct = np.stack([load_image(pool_dir / n, 24, 1) for n in first.names])
    assert isinstance(first.images, np.memmap) and np.array_equal(np.asarray(first.images), direct)
    built = {p.name: p.stat().st_mtime_ns for p in cache.iterdir()}
    again = load_pool(pool_dir, 24, 1, Problems(quiet=True), False, cache=cache)
    assert {p.name: p.stat().st_mtime_ns for p in cache.iterdir()} == built  # reused, not rebuilt
    assert again.names == first.names and np.array_equal(np.asarray(again.images), direct)
    # a file written again (another image in its place) gives a new cache, decoded afresh
    changed = first.names[3]
    time.sleep(0.01)
    shutil.copyfile(eyes / "images" / sorted(os.listdir(eyes / "images"))[100], pool_dir / changed)
    third = load_pool(pool_dir, 24, 1, Problems(quiet=True), False, cache=cache)
    assert len(list(cache.glob("*.u8"))) == 2
    assert np.array_equal(np.asarray(third.images[3]), load_image(pool_dir / changed, 24, 1))
    assert not np.array_equal(np.asarray(third.images[3]), direct[3])


def test_pool_cache_keeps_the_problems_it_met(small_pool, tmp_path):
    (small_pool / "broken.jpg").write_bytes(b"not an image")
    shutil.copy2(small_pool / "000001.jpg", small_pool / "zz_copy.jpg")
    lines = []
    for _ in range(2):  # built, then reused: the same one-line problems both times
        problems = Problems(quiet=True)
        pool = load_pool(small_pool, 24, 1, problems, False, cache=tmp_path / "cache")
        lines.append(problems.lines)
    assert lines[0] == lines[1] and len(lines[0]) == 2
    assert "broken.jpg" not in pool.names and "zz_copy.jpg" not in pool.names
    assert any("same bytes as 000001.jpg" in m for m in lines[0])


@pytest.mark.parametrize("cached", [False, True])
def test_decoding_in_worker_processes_equals_decoding_here(small_pool, tmp_path, monkeypatch, cached):
    import pseudolabel.data.cache as cache_mod

    (small_pool / "000050.jpg").write_bytes(b"not an image")
    shutil.copy2(small_pool / "000002.jpg", small_pool / "zz_copy.jpg")
    names, _ = list_images(small_pool)
    files = [(n, os.fspath(small_pool / n)) for n in names]
    monkeypatch.setattr(cache_mod, "CHUNK", 16)  # many tasks, so that their order matters
    out = []
    for workers in (1, 2):
        where = tmp_path / f"cache{workers}" if cached else None
        out.append(decode_cached(files, (24, 24), 1, where, None, False, dedupe=True, workers=workers))
    (here, meta_here), (there, meta_there) = out
    assert meta_here["names"] == meta_there["names"] and meta_here["skipped"] == meta_there["skipped"]
    assert np.array_equal(np.asarray(here), np.asarray(there))
    assert [n for n, _ in meta_there["skipped"]] == ["000050.jpg", "zz_copy.jpg"]
    assert meta_there["skipped"][1][1] == "Duplicate: same bytes as 000002.jpg"
    assert np.array_equal(np.asarray(there[10]), load_image(small_pool / meta_there["names"][10], 24, 1))


class PidDecoder:
    """Decodes any file to a (1, 1, 4) array holding the deciding process's pid: who decoded what."""

    def __call__(self, name: str, data: bytes) -> np.ndarray:
        return np.frombuffer(np.array([os.getpid()], dtype="<u4").tobytes(), np.uint8).reshape(1, 1, 4).copy()


@pytest.mark.parametrize("payoff,forks", [(1e9, False), (0.0, True)])
def test_decoding_workers_start_only_when_the_files_would_take_long_here(tmp_path, monkeypatch, payoff, forks):
    import pseudolabel.data.cache as cache_mod

    monkeypatch.setattr(cache_mod, "PAYOFF_S", payoff)  # what the first chunk's timing is weighed against
    monkeypatch.setattr(cache_mod, "decode_workers", lambda n: 2)
    files = []
    for i in range(600):
        (tmp_path / f"{i:04d}.bin").write_bytes(b"x")
        files.append((f"{i:04d}.bin", os.fspath(tmp_path / f"{i:04d}.bin")))
    images, meta = decode_cached(files, (1, 4), 1, None, PidDecoder(), False)
    pids = np.frombuffer(np.ascontiguousarray(images).tobytes(), "<u4")
    assert len(meta["names"]) == 600 and set(pids[: cache_mod.CHUNK]) == {os.getpid()}  # the timed first chunk
    assert (set(pids[cache_mod.CHUNK :]) != {os.getpid()}) == forks


def test_a_killed_cache_build_leaves_nothing_behind(small_pool, tmp_path):
    names, _ = list_images(small_pool)
    files = [(n, small_pool / n) for n in names[:20]]
    calls = []
    real = decoder((24, 24), 1)

    def dying(name, data):
        if len(calls) == 10:
            raise KeyboardInterrupt
        calls.append(name)
        return real(name, data)

    with pytest.raises(KeyboardInterrupt):
        decode_cached(files, (24, 24), 1, tmp_path / "cache", dying, False)
    assert list((tmp_path / "cache").iterdir()) == []
    images, meta = decode_cached(files, (24, 24), 1, tmp_path / "cache", real, False)
    assert len(images) == 20 and not meta["reused"]


def test_predict_from_the_pool_cache_equals_a_direct_decode(small_pool, tmp_path):
    from pseudolabel.config.schema import Config
    from pseudolabel.serve.predict import Classifier, export_model

    torch.manual_seed(0)
    export_model(create_backbone("tinycnn", num_classes=2, in_chans=1, image_size=24), Config(), tmp_path)
    clf = Classifier.load(tmp_path / "model.ts")
    paths = sorted(small_pool.iterdir())[:50]
    (small_pool / "broken.jpg").write_bytes(b"no")
    paths.insert(7, small_pool / "broken.jpg")
    direct, warned = list(clf.score_files(paths, chunk=16, warn=lambda m: None)), []
    for _ in range(2):  # builds the cache, then reads it
        cached = list(clf.score_files(paths, chunk=16, warn=warned.append, cache=tmp_path / "cache"))
        assert [p for c, _ in cached for p in c] == [p for c, _ in direct for p in c]
        assert np.allclose(np.concatenate([p for _, p in cached]), np.concatenate([p for _, p in direct]), atol=1e-6)
    assert len(warned) == 2 and all("broken.jpg" in w for w in warned)


@pytest.mark.parametrize("k,channels,hw", [(2, 1, (24, 24)), (3, 3, (40, 32))])
def test_onnx_backend_on_the_cpu_matches_torchscript(tmp_path, k, channels, hw):
    """``backend: auto`` scores with ONNX Runtime on the CPU; its probabilities are TorchScript's within 1e-5."""
    import dataclasses

    from pseudolabel.config.schema import Config
    from pseudolabel.serve.predict import Classifier, export_model

    device.use("cpu")
    torch.manual_seed(0)
    cfg = dataclasses.replace(Config(), classes=tuple("abc"[:k]), channels=channels, image_size=list(hw))
    export_model(create_backbone("tinycnn", num_classes=k, in_chans=channels, image_size=hw, width=8), cfg, tmp_path)
    x = np.random.default_rng(0).integers(0, 256, (70, channels, *hw), dtype=np.uint8)
    auto, ts = Classifier.load(tmp_path), Classifier.load(tmp_path, backend="torchscript")
    assert auto.session(device.current()) is not None and ts.session(device.current()) is None
    a, t = auto.probs_array(x, batch_size=32), ts.probs_array(x, batch_size=32)
    assert a.shape == (70, k) and np.abs(a - t).max() < 1e-5
    (tmp_path / "model.onnx").unlink()
    assert Classifier.load(tmp_path).session(device.current()) is None  # no model.onnx: TorchScript
    with pytest.raises(ValueError, match="backend onnx needs model.onnx"):
        Classifier.load(tmp_path, backend="onnx")
    with pytest.raises(ValueError, match="backend must be one of"):
        Classifier.load(tmp_path, backend="tensorrt")


def _percent_format_rows(paths, labels, scores, probs) -> str:
    """predict's CSV as a "%.6f" per number writes it: the reference for the fast formatter."""
    def field(text):
        return '"' + text.replace('"', '""') + '"' if any(c in text for c in ',"\n\r') else text

    row = "%s,%s,%.6f" + ",%.6f" * probs.shape[1] + "\n"
    return "".join(row % (field(str(p)), field(lab), s, *ps)
                   for p, lab, s, ps in zip(paths, labels, scores.tolist(), probs.tolist()))  # fmt: skip


@pytest.mark.parametrize("k,dtype,special", [
    (2, np.float32, "ties"),  # exact halves of the 6th decimal, and near ones: rounded as "%.6f" rounds them
    (3, np.float32, "quotes"),  # names with commas, quotes and line breaks
    (10, np.float32, "none"),
    (2, np.float64, "none"),  # not float32: the per-row format
    (3, np.float32, "nan"),  # a NaN: the per-row format
    (2, np.float32, "negative zero"),  # "-0.000000": the per-row format
])  # fmt: skip
def test_predict_csv_rows_equal_a_percent_format(k, dtype, special):
    from pathlib import Path

    from pseudolabel.serve.predict import csv_rows

    rng = np.random.default_rng(k)
    probs = rng.random((3000, k)).astype(np.float32)
    probs /= probs.sum(1, keepdims=True)
    if special == "ties":
        probs[:64, 0] = (np.arange(64, dtype=np.float32) * 2 + 1) / 128  # odd / 128: exactly n + 0.5 millionths
        probs[400:800, 0] = np.float32(0.1234565) + np.arange(400, dtype=np.float32) * np.float32(1e-6)
        probs[800, :] = [0.0, 1.0]
    elif special == "nan":
        probs[5, 1] = np.nan
    elif special == "negative zero":
        probs[9, 0] = -0.0
    probs = probs.astype(dtype)
    names = ["a,b.png", 'say "hi".png', "line\nbreak.png", "plain.png"] if special == "quotes" else ["x.png"]
    paths = [Path(f"d{i}") / names[i % len(names)] for i in range(3000)]
    labels = [("c,1" if special == "quotes" else "c1") if i % 3 else "c0" for i in range(3000)]
    for scores in (probs[:, 1], probs.max(1)):
        assert csv_rows(paths, labels, scores, probs) == _percent_format_rows(paths, labels, scores, probs)
    assert csv_rows([], [], probs[:0, 1], probs[:0]) == ""
