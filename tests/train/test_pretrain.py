"""SimCLR pretraining: the contrastive loss as a pure function, and what pretraining on real crops buys."""
import math

import numpy as np
import pytest
import torch
import torch.nn as nn

from pseudolabel.data.augment import to_float
from pseudolabel.models.backbones import TinyCNN, create_backbone
from pseudolabel.models.layers import embedding_tap, last_linear
from pseudolabel.train.pretrain import pretrain_cached
from pseudolabel.train.simclr import nt_xent, pretrain_simclr
from tests.conftest import dev_subset as _dev_subset

E = torch.eye(4)  # four orthogonal unit embeddings


@pytest.mark.parametrize(
    "z1, z2, expect",
    [
        (E, E, "low"),  # each view matches its pair and nothing else
        (E, E.roll(1, 0), "high"),  # each view matches another image's view
        (torch.ones(4, 4), torch.ones(4, 4), "uniform"),  # all alike: log(2N - 1)
    ],
)
def test_nt_xent_table(z1, z2, expect):
    loss = nt_xent(z1, z2, temperature=0.2).item()
    uniform = math.log(2 * len(z1) - 1)
    if expect == "low":
        assert loss < 0.1
    elif expect == "high":
        assert loss > uniform + 1
    else:
        assert loss == pytest.approx(uniform, abs=1e-5)


@pytest.mark.parametrize(
    "z1, z2, temperature, match",
    [
        (E, E, 0.0, "temperature"),
        (E, E[:3], 0.2, "shape"),
        (E[:1], E[:1], 0.2, "shape"),
    ],
)
def test_nt_xent_rejects_bad_input(z1, z2, temperature, match):
    with pytest.raises(ValueError, match=match):
        nt_xent(z1, z2, temperature)


@pytest.mark.parametrize("name, dim", [("tinycnn", 64), ("yolov8-cls", 1280)])
def test_embedding_is_the_last_linear_input(name, dim):
    net = create_backbone(name, num_classes=2, in_chans=1, image_size=24).eval()
    with embedding_tap(net) as tap:
        net(torch.rand(3, 1, 24, 24))
    assert last_linear(net).in_features == dim and tuple(tap[0].shape) == (3, dim)


def test_a_network_without_a_linear_layer_is_named():
    with pytest.raises(ValueError, match="Conv2d"):
        last_linear(nn.Conv2d(1, 2, 3))


def _probe(net, x, y) -> float:
    """Accuracy of a logistic regression on the embeddings: trained on the first half, tested on the rest."""
    from sklearn.linear_model import LogisticRegression

    net.eval()
    with torch.no_grad(), embedding_tap(net) as tap:
        net(to_float(torch.from_numpy(x)))
        f = torch.nn.functional.normalize(tap[0], dim=1).numpy()
    h = len(x) // 2
    return LogisticRegression(C=10, max_iter=2000).fit(f[:h], y[:h]).score(f[h:], y[h:])


def test_pretraining_on_real_crops_learns_eye_state_without_labels(eyes):
    """600 real crops, no labels seen: the loss falls, the last layer is untouched, and a linear
    probe on the embeddings beats the same probe on the untrained network (measured with seeds 0 and 1: 0.70 -> 0.77, 0.68 -> 0.79)."""
    x, y = _dev_subset(eyes, 600)
    torch.manual_seed(0)
    net = TinyCNN(1)
    before_probe, before_head = _probe(net, x, y), last_linear(net).weight.detach().clone()
    hist = pretrain_simclr(net, x, epochs=15, batch_size=128, seed=0, progress=False)
    assert len(hist) == 15 and hist[-1]["loss"] < hist[0]["loss"] - 0.3
    assert torch.equal(last_linear(net).weight, before_head)
    after = _probe(net, x, y)
    assert after > before_probe + 0.04, (before_probe, after)
    assert np.isfinite([h["loss"] for h in hist]).all()


def _fresh(seed=0):
    torch.manual_seed(seed)
    return TinyCNN(1)


SHAPE = {"backbone": "tinycnn", "channels": 1}


@pytest.mark.parametrize(
    "change",
    [
        None,  # the same call again: the weights come from the cache, bit for bit
        "pool",  # one crop differs
        "temperature",  # one setting differs
        "settings",  # the network differs
        "damaged",  # the cached file is broken: pretrain again and replace it
    ],
)
def test_cached_pretraining_is_reused_only_for_the_same_call(eyes, tmp_path, change, capsys):
    x, _ = _dev_subset(eyes, 128)
    kw = {"epochs": 2, "batch_size": 32, "temperature": 0.2, "seed": 0, "progress": False}
    first = _fresh()
    hist, cached = pretrain_cached(first, x, cache=tmp_path, settings=SHAPE, **kw)
    assert len(hist) == 2 and not cached and len(list(tmp_path.glob("simclr-*.safetensors"))) == 1
    x2, kw2, shape2 = x.copy(), dict(kw), dict(SHAPE)
    if change == "pool":
        x2[5] = 255 - x2[5]
    elif change == "temperature":
        kw2["temperature"] = 0.3
    elif change == "settings":
        shape2["backbone"] = "tinycnn-wide"
    elif change == "damaged":
        next(tmp_path.glob("simclr-*.safetensors")).write_bytes(b"not weights")
    again = _fresh()
    hist2, cached2 = pretrain_cached(again, x2, cache=tmp_path, settings=shape2, **kw2)
    assert cached2 == (change is None) and (hist2 == []) == (change is None)
    same = all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), again.state_dict().values()))
    assert same == (change in (None, "damaged", "settings"))  # retrained to the same weights: same net, same pool
    assert len(list(tmp_path.glob("simclr-*.safetensors"))) == (1 if change in (None, "damaged") else 2)
    assert ("cannot load cached SimCLR weights" in capsys.readouterr().err) == (change == "damaged")
