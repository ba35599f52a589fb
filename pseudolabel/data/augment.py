"""Batched image augmentations for small images, grayscale or colour.

Every function takes an (N, C, H, W) float tensor in [0, 1] and returns one of
the same shape and range. Each image gets its own random parameters; the work
is vectorised over the batch, so augmenting thousands of 24x24 crops is cheap.

- :func:`seed_augment`: flip, small shift/zoom/rotation, brightness, contrast,
  blur and sharpness (the list from the two-model write-up), and colour jitter on RGB.
- :func:`weak_augment`: FixMatch's weak view, flip plus a shift of up to 12.5 %.
- :func:`strong_augment`: the weak view plus two RandAugment ops (those that make sense
  for grayscale, plus colour on RGB), then Cutout.
- :func:`tta_views`: the fixed views that test-time augmentation averages over.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from pseudolabel.config.values import TTA_MODES, WEAK_SHIFTS


def to_float(images: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) uint8 -> float in [0, 1]."""
    return images.float().div_(255.0)


def _u(n: int, lo: float, hi: float, g: torch.Generator | None, device: torch.device | str = "cpu") -> torch.Tensor:
    """(n,) uniform in [lo, hi), made on ``device`` (the images' device: every random tensor is)."""
    return torch.rand(n, generator=g, device=device) * (hi - lo) + lo


def _per(v: torch.Tensor) -> torch.Tensor:
    return v.view(-1, 1, 1, 1)


def flip(x: torch.Tensor, p: float = 0.5, g: torch.Generator | None = None) -> torch.Tensor:
    m = _per(torch.rand(len(x), generator=g, device=x.device) < p)
    return torch.where(m, x.flip(-1), x)


def affine(x: torch.Tensor, *, translate: float = 0.0, degrees: float = 0.0, scale: tuple[float, float] = (1.0, 1.0),
           shear: float = 0.0, g: torch.Generator | None = None) -> torch.Tensor:
    """Random per-image shift (fraction of size), rotation and shear (degrees) and zoom, reflection-padded."""
    n = len(x)
    d = x.device
    ang = torch.deg2rad(_u(n, -degrees, degrees, g, d))
    sh = torch.deg2rad(_u(n, -shear, shear, g, d))
    s = _u(n, *scale, g, d)
    tx, ty = _u(n, -translate, translate, g, d) * 2, _u(n, -translate, translate, g, d) * 2
    cos, sin = torch.cos(ang) / s, torch.sin(ang) / s
    theta = torch.stack([torch.stack([cos, -sin + torch.tan(sh), tx], 1), torch.stack([sin, cos, ty], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def brightness(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    return (x * _per(f)).clamp(0, 1)


def contrast(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return ((x - mean) * _per(f) + mean).clamp(0, 1)


def _blur(x: torch.Tensor) -> torch.Tensor:
    k = torch.tensor([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]], dtype=x.dtype, device=x.device) / 16
    k = k.expand(x.shape[1], 1, 3, 3)
    return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), k, groups=x.shape[1])


def sharpness(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """f = 0 blurs, 1 keeps, 2 sharpens (PIL's ImageEnhance.Sharpness)."""
    return (_blur(x) + _per(f) * (x - _blur(x))).clamp(0, 1)


def autocontrast(x: torch.Tensor) -> torch.Tensor:
    """Stretch each channel of each image to the full range (PIL's ImageOps.autocontrast)."""
    lo = x.amin(dim=(2, 3), keepdim=True)
    hi = x.amax(dim=(2, 3), keepdim=True)
    return torch.where(hi > lo, (x - lo) / (hi - lo).clamp_min(1e-6), x)


def equalize(x: torch.Tensor) -> torch.Tensor:
    """Histogram equalisation per image and channel (rank transform of the pixel values)."""
    n, c = x.shape[:2]
    flat = x.reshape(n, c, -1)
    ranks = flat.argsort(2).argsort(2).float() / max(flat.shape[2] - 1, 1)
    return ranks.reshape(x.shape)


def grayscale(x: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) RGB -> (N, 1, H, W) luma (ITU-R 601, as PIL's convert("L")); one channel stays as it is."""
    if x.shape[1] == 1:
        return x
    w = torch.tensor([0.299, 0.587, 0.114], dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * w).sum(1, keepdim=True)


def saturation(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """f = 0 gives grey, 1 keeps, 2 doubles the colour (PIL's ImageEnhance.Color); no-op on one channel."""
    g = grayscale(x)
    return (g + _per(f) * (x - g)).clamp(0, 1)


def posterize(x: torch.Tensor, bits: torch.Tensor) -> torch.Tensor:
    levels = _per(2.0 ** bits)
    return torch.floor(x * levels) / levels


def solarize(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return torch.where(x >= _per(t), 1 - x, x)


def cutout(x: torch.Tensor, frac: float = 0.33, g: torch.Generator | None = None) -> torch.Tensor:
    """Grey out one random square of side up to ``frac`` of the image per image."""
    n, _, h, w = x.shape
    d = x.device
    side = (_u(n, 0.0, frac, g, d) * min(h, w)).round().long().view(-1, 1, 1)
    cy, cx = (_u(n, 0.0, h, g, d)).long().view(-1, 1, 1), (_u(n, 0.0, w, g, d)).long().view(-1, 1, 1)
    yy, xx = torch.arange(h, device=d).view(1, -1, 1), torch.arange(w, device=d).view(1, 1, -1)
    box = ((yy - cy).abs() * 2 < side) & ((xx - cx).abs() * 2 < side)
    return torch.where(box[:, None], torch.full_like(x, 0.5), x)


def seed_augment(x: torch.Tensor, g: torch.Generator | None = None) -> torch.Tensor:
    """Supervised-training view: flip, shift/zoom/rotation, brightness/contrast, blur or sharpen,
    and on RGB a colour (saturation) jitter."""
    n = len(x)
    x = affine(flip(x, g=g), translate=0.1, degrees=10, scale=(0.9, 1.1), g=g)
    d = x.device
    x = contrast(brightness(x, _u(n, 0.7, 1.3, g, d)), _u(n, 0.7, 1.3, g, d))
    x = sharpness(x, _u(n, 0.0, 2.0, g, d))
    return saturation(x, _u(n, 0.6, 1.4, g, d)) if x.shape[1] == 3 else x


def crop_shift(x: torch.Tensor, frac: float = 0.125, g: torch.Generator | None = None) -> torch.Tensor:
    """Pad-and-crop: a random shift by whole pixels, up to ``frac`` of the size each way, reflection-padded.
    Unlike :func:`affine`, no resampling, so the view is as sharp as the image."""
    n, _, h, w = x.shape
    k = max(1, round(frac * min(h, w)))
    p = F.pad(x, (k, k, k, k), mode="reflect").permute(0, 2, 3, 1)  # (N, H + 2k, W + 2k, C)
    d = x.device
    oy, ox = (torch.randint(0, 2 * k + 1, (n,), generator=g, device=d) for _ in range(2))
    rows = (oy[:, None] + torch.arange(h, device=d))[:, :, None]
    cols = (ox[:, None] + torch.arange(w, device=d))[:, None, :]
    return p[torch.arange(n, device=d)[:, None, None], rows, cols].permute(0, 3, 1, 2).contiguous()


def weak_augment(x: torch.Tensor, g: torch.Generator | None = None, shift: str = "bilinear") -> torch.Tensor:
    """FixMatch weak view: horizontal flip and a shift of up to 12.5 % of the size, either sub-pixel
    with bilinear resampling ("bilinear", which also blurs a little) or by whole pixels ("crop")."""
    if shift == "crop":
        return crop_shift(flip(x, g=g), 0.125, g=g)
    if shift != "bilinear":
        raise ValueError(f"weak shift must be one of {WEAK_SHIFTS}, got {shift!r}")
    return affine(flip(x, g=g), translate=0.125, g=g)


_STRONG_OPS = ("identity", "autocontrast", "brightness", "contrast", "equalize", "posterize", "rotate", "sharpness",
               "shear", "solarize", "translate")  # fmt: skip
_COLOUR_OPS = ("color",)  # RandAugment ops that only make sense on RGB, added for 3 channels


def strong_ops(channels: int) -> tuple[str, ...]:
    """The RandAugment ops the strong view draws from for images with ``channels`` channels."""
    return _STRONG_OPS + (_COLOUR_OPS if channels == 3 else ())


def _apply_op(name: str, x: torch.Tensor, g: torch.Generator | None) -> torch.Tensor:
    n, d = len(x), x.device
    if name == "autocontrast":
        return autocontrast(x)
    if name == "brightness":
        return brightness(x, _u(n, 0.05, 1.95, g, d))
    if name == "contrast":
        return contrast(x, _u(n, 0.05, 1.95, g, d))
    if name == "equalize":
        return equalize(x)
    if name == "posterize":
        return posterize(x, torch.randint(4, 9, (n,), generator=g, device=d).float())
    if name == "rotate":
        return affine(x, degrees=30, g=g)
    if name == "sharpness":
        return sharpness(x, _u(n, 0.05, 1.95, g, d))
    if name == "shear":
        return affine(x, shear=17, g=g)
    if name == "solarize":
        return solarize(x, _u(n, 0.0, 1.0, g, d))
    if name == "translate":
        return affine(x, translate=0.3, g=g)
    if name == "color":
        return saturation(x, _u(n, 0.05, 1.95, g, d))
    return x


def strong_augment(x: torch.Tensor, n_ops: int = 2, g: torch.Generator | None = None,
                   shift: str = "bilinear") -> torch.Tensor:
    """FixMatch strong view: weak view (``shift`` as there), ``n_ops`` RandAugment ops per image
    (random magnitude), Cutout."""
    x = weak_augment(x, g=g, shift=shift)
    ops = strong_ops(x.shape[1])
    for _ in range(n_ops):
        choice = torch.randint(len(ops), (len(x),), generator=g, device=x.device)
        out = x.clone()
        for k, name in enumerate(ops):
            m = choice == k
            if name != "identity" and m.any():
                out[m] = _apply_op(name, x[m], g)
        x = out
    return cutout(x, g=g)


def shift(x: torch.Tensor, dx: int, dy: int) -> torch.Tensor:
    """(N, C, H, W) -> the same images moved ``dx`` pixels right and ``dy`` down, edges replicated."""
    k = max(abs(dx), abs(dy))
    if k == 0:
        return x
    h, w = x.shape[-2:]
    p = F.pad(x, (k, k, k, k), mode="replicate")
    return p[..., k - dy : k - dy + h, k - dx : k - dx + w]


def tta_views(x: torch.Tensor, mode: str) -> torch.Tensor:
    """(N, C, H, W) -> (V * N, C, H, W): the views test-time augmentation averages over, view-major.

    "none": the image (V = 1); "flip": and its mirror (V = 2); "flip+shift": each of those also
    moved one pixel left, right, up and down (V = 10), the shifts the weak view trains with."""
    if mode not in TTA_MODES:
        raise ValueError(f"tta must be one of {TTA_MODES}, got {mode!r}")
    base = [x] if mode == "none" else [x, x.flip(-1)]
    moves = ((0, 0), (1, 0), (-1, 0), (0, 1), (0, -1)) if mode == "flip+shift" else ((0, 0),)
    return torch.cat([shift(v, dx, dy) for v in base for dx, dy in moves])
