import pytest
import torch

from pseudolabel.data import augment as A


@pytest.fixture
def batch(eyes):
    import numpy as np
    from PIL import Image

    names = sorted(p.name for p in (eyes / "images").iterdir())[:16]
    arr = np.stack([np.asarray(Image.open(eyes / "images" / n).convert("L")) for n in names])[:, None]
    return A.to_float(torch.from_numpy(arr))


@pytest.mark.parametrize(
    "fn",
    [
        A.seed_augment,
        A.weak_augment,
        A.strong_augment,
        A.autocontrast,
        A.equalize,
        A.cutout,
        A.crop_shift,
        lambda x, g=None: A.weak_augment(x, g, "crop"),
        lambda x, g=None: A.strong_augment(x, g=g, shift="crop"),
        lambda x, g=None: A.flip(x, p=1.0),
        lambda x, g=None: A.affine(x, translate=0.3, degrees=30, shear=17, scale=(0.8, 1.2)),
        lambda x, g=None: A.posterize(x, torch.full((len(x),), 4.0)),
        lambda x, g=None: A.solarize(x, torch.full((len(x),), 0.5)),
        lambda x, g=None: A.sharpness(x, torch.full((len(x),), 2.0)),
        lambda x, g=None: A.brightness(x, torch.full((len(x),), 1.9)),
        lambda x, g=None: A.contrast(x, torch.full((len(x),), 0.1)),
    ],
)
def test_augmentations_keep_shape_and_range(batch, fn):
    out = fn(batch)
    assert out.shape == batch.shape and out.dtype == torch.float32
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    assert not torch.isnan(out).any()


@pytest.mark.parametrize("fn", [A.seed_augment, A.weak_augment, A.strong_augment])
def test_random_views_differ_per_image_and_are_seeded(batch, fn):
    same = batch[:1].expand(8, -1, -1, -1).contiguous()
    out = fn(same, g=torch.Generator().manual_seed(0))
    distinct = {tuple(v.flatten().tolist()) for v in out}
    assert len(distinct) >= 6  # each copy of the same image gets its own random parameters
    again = fn(same, g=torch.Generator().manual_seed(0))
    assert torch.equal(out, again)


def test_flip_mirrors():
    x = torch.rand(2, 1, 24, 24)
    assert torch.equal(A.flip(x, p=1.0), x.flip(-1))
    assert torch.equal(A.flip(x, p=0.0), x)


@pytest.mark.parametrize("mode,views", [("none", 1), ("flip", 2), ("flip+shift", 10)])
def test_tta_views_count_order_and_range(batch, mode, views):
    out = A.tta_views(batch, mode)
    n = len(batch)
    assert out.shape == (views * n, *batch.shape[1:])
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    assert torch.equal(out[:n], batch)  # view-major: the first view is the image itself
    if views > 1:
        assert torch.equal(out[(views // 2) * n : (views // 2 + 1) * n], batch.flip(-1))  # then its mirror
    assert len({tuple(out[v * n].flatten().tolist()) for v in range(views)}) == views  # all views differ


@pytest.mark.parametrize(
    "dx,dy,row0,col0",
    [(0, 0, [0, 1, 2, 3], [0, 4, 8, 12]), (1, 0, [0, 0, 1, 2], [0, 4, 8, 12]), (-1, 0, [1, 2, 3, 3], [1, 5, 9, 13]),
     (0, 1, [0, 1, 2, 3], [0, 0, 4, 8]), (0, -1, [4, 5, 6, 7], [4, 8, 12, 12])],
)
def test_shift_moves_content_and_replicates_the_edge(dx, dy, row0, col0):
    x = torch.arange(16.0).view(1, 1, 4, 4)
    out = A.shift(x, dx, dy)[0, 0]
    assert out[0].tolist() == row0 and out[:, 0].tolist() == col0


def test_tta_views_refuse_an_unknown_mode(batch):
    with pytest.raises(ValueError, match="'rotate'"):
        A.tta_views(batch, "rotate")


def test_crop_shift_moves_by_whole_pixels_without_resampling(batch):
    out = A.crop_shift(batch, 0.125, g=torch.Generator().manual_seed(0))
    pad = torch.nn.functional.pad(batch, (3, 3, 3, 3), mode="reflect")
    for img, src in zip(out, pad):
        offsets = [(dy, dx) for dy in range(7) for dx in range(7) if torch.equal(img, src[:, dy : dy + 24, dx : dx + 24])]
        assert len(offsets) >= 1  # exactly a window of the padded crop: no interpolation, no blur
    assert not torch.equal(out, batch)


def test_weak_view_refuses_an_unknown_shift(batch):
    with pytest.raises(ValueError, match="'nearest'"):
        A.weak_augment(batch, shift="nearest")
