import errno

import numpy as np
import pytest

from pseudolabel.core import sort
from pseudolabel.core.vote import UNCLEAR, binary_probs, vote
from tests.conftest import tree_digest


@pytest.mark.parametrize(
    "image,decision,rank,queue,expected",
    [
        ("a.jpg", 1, 0, 10, "a.jpg"),
        ("sub/dir/a.jpg", 0, 0, 10, "sub__dir__a.jpg"),
        ("a.jpg", UNCLEAR, 7, 10, "00007_a.jpg"),
        ("-x y é.png", UNCLEAR, 12345, 99_999, "12345_-x y é.png"),
        ("a.jpg", UNCLEAR, 7, 100_000, "000007_a.jpg"),  # the prefix widens with the queue
        ("a.jpg", UNCLEAR, 1_234_567, 1_234_567, "1234567_a.jpg"),
    ],
)
def test_file_names(image, decision, rank, queue, expected):
    assert sort.file_name(image, decision, rank, sort.rank_width(queue)) == expected


def test_rank_prefixes_sort_in_queue_order_for_a_large_queue():
    n = 123_456
    rank = np.arange(1, n + 1)
    placed = sort.plan([f"{i}.jpg" for i in range(n)], np.full(n, UNCLEAR), rank, ("0", "1"))
    names = [p.file for p in placed]
    assert sorted(names) == names and len(names[0].split("_")[0]) == 6


def test_materialize_links_every_image_once_and_leaves_originals_untouched(small_pool, tmp_path):
    names = sorted(p.name for p in small_pool.iterdir())
    rng = np.random.default_rng(0)
    v = vote(binary_probs(rng.random(len(names))), binary_probs(rng.random(len(names))), threshold=0.7)
    before = tree_digest(small_pool)
    run = tmp_path / "run"
    counts = sort.materialize(sort.plan(names, v.decision, v.rank, ("0", "1")), small_pool, run, ("0", "1"))
    assert tree_digest(small_pool) == before
    assert counts["link"] + counts["copy"] == len(names)
    for folder, d in (("0", 0), ("1", 1), ("unclear", UNCLEAR)):
        files = sorted(p.name for p in (run / folder).iterdir())
        assert len(files) == int((v.decision == d).sum())
    unclear = sorted((run / "unclear").iterdir())
    # file-manager order is queue order
    ranks = [int(p.name.split("_", 1)[0]) for p in unclear]
    assert ranks == list(range(1, len(unclear) + 1))
    # same bytes as the originals
    for p in (run / "0").iterdir():
        assert p.read_bytes() == (small_pool / p.name).read_bytes()


def test_copy_fallback_keeps_bytes_and_mtime(small_pool, tmp_path, monkeypatch):
    def no_links(*a, **k):
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(sort.os, "link", no_links)
    src = next(small_pool.iterdir())
    dst = tmp_path / "copy.jpg"
    assert sort.link_or_copy(src, dst) == "copy"
    assert dst.read_bytes() == src.read_bytes() and dst.stat().st_mtime_ns == src.stat().st_mtime_ns


def test_class_names_as_folders(small_pool, tmp_path):
    names = sorted(p.name for p in small_pool.iterdir())[:30]
    decision = np.array([i % 4 - 1 for i in range(30)])  # -1 (unclear), 0, 1, 2
    rank = np.where(decision < 0, np.cumsum(decision < 0), 0)
    folders = ("red", "green", "blue")
    sort.materialize(sort.plan(names, decision, rank, folders), small_pool, tmp_path / "run", folders)
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["blue", "green", "red", "unclear"]
    for k, f in enumerate(folders):
        assert sorted(p.name for p in (tmp_path / "run" / f).iterdir()) == [n for n, d in zip(names, decision) if d == k]
