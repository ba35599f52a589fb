"""The fast decode path (OpenCV) gives PIL's pixels exactly, and only takes the files where that is certain."""
from __future__ import annotations

import io
import os

import numpy as np
import pytest
from PIL import Image

from pseudolabel.data.cache import decoder
from pseudolabel.data.fastdecode import fast_decode, jpeg_header, png_header
from pseudolabel.data.images import load_image

CIFAR = os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "data", "cifar10", "images")


def _saved(arr: np.ndarray, fmt: str, mode: str | None = None, **kw) -> bytes:
    buf = io.BytesIO()
    im = Image.fromarray(arr)
    (im.convert(mode) if mode else im).save(buf, fmt, **kw)
    return buf.getvalue()


def _rng_image(shape, seed=0) -> np.ndarray:
    """A smooth random picture (JPEG keeps some structure), uint8."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, size=(shape[0] // 4 + 1, shape[1] // 4 + 1) + shape[2:]).astype(np.uint8)
    return np.kron(base, np.ones((4, 4) + (1,) * (len(shape) - 2), np.uint8))[: shape[0], : shape[1]]


def _exif_rotated(shape: tuple) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    buf = io.BytesIO()
    Image.fromarray(_rng_image(shape)).save(buf, "JPEG", exif=exif)
    return buf.getvalue()


def _sixteen_bit_png() -> bytes:
    buf = io.BytesIO()
    Image.fromarray((_rng_image((24, 24)).astype(np.uint16) * 257)).save(buf, "PNG")
    return buf.getvalue()


def _eye(eyes) -> bytes:
    return (eyes / "images" / sorted(os.listdir(eyes / "images"))[5]).read_bytes()


def _cifar() -> bytes:
    with open(os.path.join(CIFAR, sorted(os.listdir(CIFAR))[7]), "rb") as f:
        return f.read()


CASES = [  # (name, bytes maker (eyes folder -> bytes), (H, W), channels, fast path taken)
    ("real grey eye crop", _eye, (24, 24), 1, True),
    ("real grey eye crop as RGB", _eye, (24, 24), 3, True),
    ("real colour photo", lambda e: _cifar(), (32, 32), 3, True),
    ("colour photo into grey (PIL's luma)", lambda e: _cifar(), (32, 32), 1, False),
    ("grey crop resized (PIL's bilinear)", _eye, (20, 20), 1, False),
    ("grey PNG", lambda e: _saved(_rng_image((24, 24)), "PNG"), (24, 24), 1, True),
    ("RGB PNG", lambda e: _saved(_rng_image((24, 24, 3)), "PNG"), (24, 24), 3, True),
    ("RGBA PNG", lambda e: _saved(_rng_image((24, 24, 4)), "PNG"), (24, 24), 3, False),
    ("palette PNG", lambda e: _saved(_rng_image((24, 24, 3)), "PNG", "P"), (24, 24), 3, False),
    ("16-bit PNG", lambda e: _sixteen_bit_png(), (24, 24), 1, False),
    ("progressive JPEG", lambda e: _saved(_rng_image((24, 24, 3)), "JPEG", progressive=True), (24, 24), 3, True),
    ("CMYK JPEG", lambda e: _saved(_rng_image((24, 24, 3)), "JPEG", "CMYK"), (24, 24), 3, False),
    ("EXIF-rotated JPEG", lambda e: _exif_rotated((24, 32)), (32, 24), 1, False),
    ("EXIF-rotated square JPEG", lambda e: _exif_rotated((24, 24)), (24, 24), 1, False),
    ("BMP", lambda e: _saved(_rng_image((24, 24)), "BMP"), (24, 24), 1, False),
]


@pytest.mark.parametrize("name,make,hw,channels,fast", CASES, ids=[c[0] for c in CASES])
def test_the_decoder_gives_pils_pixels_and_takes_the_fast_path_only_where_certain(eyes, name, make, hw, channels, fast):
    data = make(eyes)
    want = load_image(io.BytesIO(data), hw, channels)
    got = decoder(hw, channels)(name, data)
    assert got.dtype == np.uint8 and got.shape == want.shape == (channels, *hw)
    assert np.array_equal(got, want)
    assert (fast_decode(data, hw, channels) is not None) == fast


def test_every_real_crop_and_photo_decodes_to_pils_pixels_on_the_fast_path(eyes):
    names = sorted(os.listdir(eyes / "images"))[:400]
    for folder, files, hw, channels in ((eyes / "images", names, (24, 24), 1),
                                        (CIFAR, sorted(os.listdir(CIFAR))[:400], (32, 32), 3)):  # fmt: skip
        for f in files:
            data = open(os.path.join(folder, f), "rb").read()
            fast = fast_decode(data, hw, channels)
            assert fast is not None, f
            assert np.array_equal(fast, load_image(io.BytesIO(data), hw, channels)), f


@pytest.mark.parametrize("cut", ["truncated", "zeros inside"])
def test_a_damaged_jpeg_is_left_to_pil_and_libjpeg_says_nothing(eyes, capfd, cut):
    data = _eye(eyes)
    bad = data[: len(data) // 2] if cut == "truncated" else data[:300] + bytes(50) + data[350:]
    assert fast_decode(bad, (24, 24), 1) is None
    try:
        decoder((24, 24), 1)("bad.jpg", bad)
    except (OSError, ValueError):
        pass  # PIL's verdict, as before the fast path
    assert "Corrupt JPEG" not in capfd.readouterr().err


@pytest.mark.parametrize("data,want", [
    (b"\xff\xd8\xff\xc0\x00\x11\x08\x00\x18\x00\x20\x01", (24, 32, 1)),
    (b"\xff\xd8\xff\xc0\x00\x11\x0c\x00\x18\x00\x20\x01", None),  # 12-bit samples
    (b"\xff\xd8\xff\xc3\x00\x11\x08\x00\x18\x00\x20\x01", None),  # lossless coding
    (b"\xff\xd8\xff\xe0\x00\x04\x00\x00\xff\xc2\x00\x11\x08\x00\x08\x00\x09\x03", (8, 9, 3)),  # after an APP0
    (b"GIF89a", None),
])
def test_jpeg_header_reads_size_and_components(data, want):
    assert jpeg_header(data) == want


def test_png_header_takes_8_bit_grey_and_rgb_only():
    assert png_header(_saved(_rng_image((5, 7)), "PNG")) == (5, 7, 1)
    assert png_header(_saved(_rng_image((5, 7, 3)), "PNG")) == (5, 7, 3)
    assert png_header(_saved(_rng_image((5, 7, 4)), "PNG")) is None
    assert png_header(_sixteen_bit_png()) is None
