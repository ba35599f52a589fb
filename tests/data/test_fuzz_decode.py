"""Fuzz: damaged PNG, JPEG, TIFF (raw, LZW, deflate, JPEG-in-TIFF) and GIF files, seeded. Loading a
pool of them gives, for every file, a clean decode or one warning line naming it: never an
exception, and nothing else on the terminal (libtiff's own messages are caught)."""
from __future__ import annotations

import random

import pytest

from tests.conftest import image_bytes, mutate

SEEDS = [("png", "PNG", {}), ("jpg", "JPEG", {}), ("tif", "TIFF", {}), ("tif", "TIFF", {"compression": "tiff_lzw"}),
         ("tif", "TIFF", {"compression": "tiff_deflate"}), ("tif", "TIFF", {"compression": "jpeg"}),
         ("gif", "GIF", {})]  # fmt: skip
CASES = 480


@pytest.mark.parametrize("channels", [1, 3])
def test_mutated_images_decode_or_give_one_line(channels, tmp_path, capfd):
    from pseudolabel.data.images import Problems
    from pseudolabel.data.pool import load_pool

    rng = random.Random(47 + channels)
    originals = [(ext, image_bytes(fmt, size=(24, 32), seed=k, **kw)) for k, (ext, fmt, kw) in enumerate(SEEDS)]
    pool = tmp_path / "pool"
    pool.mkdir()
    names = []
    for i in range(CASES):
        ext, data = originals[i % len(originals)]
        names.append(f"m{i:04d}.{ext}")
        (pool / names[-1]).write_bytes(mutate(data, rng))
    capfd.readouterr()
    problems = Problems()
    loaded = load_pool(pool, (24, 32), channels, problems, progress=False, cache=None)
    assert loaded.images.shape[1:] == (channels, 24, 32)
    for line in problems.lines:
        assert "\n" not in line and line.count(str(pool)) == 1, line
    named = {n for n in names if any(f"{pool / n}:" in line for line in problems.lines)}
    assert set(loaded.names) | named == set(names)  # every file: decoded, or one line naming it
    for n in names:
        lines = [line for line in problems.lines if f"{pool / n}:" in line]
        assert len(lines) <= 1 and not (lines and "cannot read" in lines[0] and n in loaded.names), (n, lines)
    err = capfd.readouterr().err.strip().splitlines()
    assert err == [f"warning: {line}" for line in problems.lines]  # nothing raw from a decoder
    broken = [line for line in problems.lines if "cannot read image" in line]
    assert len(broken) > CASES // 10, "the mutations should break a good share of the files"
    kinds = {line.split("cannot read image (")[1].split(":")[0] for line in broken}
    assert kinds & {"SyntaxError", "TypeError", "OverflowError", "AssertionError"}, kinds  # not only OSError
