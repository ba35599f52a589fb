"""VAE pretraining, the linear probe, the latent study and the EDA (issue 36), on real crops and a generated K = 3 set."""
import json

import numpy as np
import pytest
import torch
import torch.nn as nn

from pseudolabel.config.schema import load_config, with_overrides
from pseudolabel.data.images import Problems
from pseudolabel.data.pool import load_pool
from pseudolabel.models.backbones import create_backbone
from pseudolabel.models.layers import SigmoidNeuron
from pseudolabel.report import study
from pseudolabel.train.probe import fit_probe
from pseudolabel.train.vae import Decoder, attach_latent, latent_layer, pretrain_vae, vae_loss
from tests.conftest import make_color_data, make_seed_run


def _reference_vae_loss(x, logits, mu, logvar, beta):
    """Written out by hand, per image, in float64."""
    x, logits, mu, logvar = (np.asarray(t, np.float64) for t in (x, logits, mu, logvar))
    p = 1 / (1 + np.exp(-logits))
    bce = -(x * np.log(p) + (1 - x) * np.log(1 - p))
    recon = bce.reshape(len(x), -1).sum(1)
    kl = -0.5 * (1 + logvar - mu**2 - np.exp(logvar)).sum(1)
    return (recon + beta * kl).mean(), recon.mean(), kl.mean()


@pytest.mark.parametrize("beta", [0.0, 1.0, 4.0])
@pytest.mark.parametrize("shape", [(3, 1, 8, 8), (2, 3, 5, 7)])
def test_vae_loss_matches_a_hand_written_reference(beta, shape):
    g = torch.Generator().manual_seed(1)
    x, logits = torch.rand(shape, generator=g), torch.randn(shape, generator=g)
    mu, logvar = torch.randn(shape[0], 4, generator=g), torch.randn(shape[0], 4, generator=g) * 0.5
    got = [v.item() for v in vae_loss(x, logits, mu, logvar, beta)]
    assert got == pytest.approx(_reference_vae_loss(x, logits, mu, logvar, beta), rel=1e-5)


def test_vae_loss_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="shapes differ"):
        vae_loss(torch.rand(2, 1, 4, 4), torch.rand(2, 1, 4, 5), torch.zeros(2, 3), torch.zeros(2, 3), 1.0)


@pytest.mark.parametrize("hw, channels", [((24, 24), 1), ((40, 32), 3), ((13, 9), 2)])
def test_the_decoder_fits_the_image_size(hw, channels):
    assert Decoder(8, channels, hw)(torch.zeros(2, 8)).shape == (2, channels, *hw)


@pytest.fixture(scope="module")
def crops(eyes):
    return np.asarray(load_pool(eyes / "images", 24, 1, Problems(quiet=True), False).images[:300])


def test_vae_loss_decreases_on_real_crops(crops):
    torch.manual_seed(0)
    net = attach_latent(create_backbone("tinycnn", num_classes=2, in_chans=1, image_size=24), 8)
    final = [m for m in net.modules() if isinstance(m, nn.Linear)][-1].weight.detach().clone()
    hist = pretrain_vae(net, crops, epochs=6, epoch_steps=4, batch_size=64, seed=0, progress=False)
    x = crops.astype(np.float64) / 255  # BCE on grey levels cannot go below their entropy: measure above it
    floor = -(x * np.log(np.clip(x, 1e-12, 1)) + (1 - x) * np.log(np.clip(1 - x, 1e-12, 1))).reshape(len(x), -1).sum(1).mean()
    assert len(hist) == 6 and hist[-1]["loss"] - floor < 0.7 * (hist[0]["loss"] - floor), (floor, hist)
    assert hist[-1]["recon"] < hist[0]["recon"]
    head = [m for m in net.modules() if isinstance(m, nn.Linear)][-1]
    assert torch.equal(head.weight, final)  # the classifier layer is not the VAE's to train


def test_attach_latent_puts_the_mean_before_the_last_layer():
    net = attach_latent(create_backbone("tinycnn", num_classes=3, in_chans=1, image_size=24), 5)
    assert latent_layer(net).out_features == 5 and net(torch.rand(2, 1, 24, 24)).shape == (2, 3)
    with pytest.raises(ValueError, match="already has a latent layer"):
        attach_latent(net, 5)
    with pytest.raises(ValueError, match="no latent layer"):
        latent_layer(create_backbone("tinycnn", num_classes=2, in_chans=1, image_size=24))


def _state(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


@pytest.mark.parametrize("k", [2, 3])
def test_the_probe_trains_only_its_linear_layer(tmp_path, k):
    truth = make_color_data(tmp_path / "c", n_per_class=20, seed=k)
    pool = load_pool(tmp_path / "c", (40, 32), 3, Problems(quiet=True), False)
    classes = sorted(set(truth.values()))[:k]
    keep = [i for i, n in enumerate(pool.names) if truth[n] in classes]
    x, y = np.asarray(pool.images)[keep], np.array([classes.index(truth[pool.names[i]]) for i in keep])
    order = np.random.default_rng(0).permutation(len(y))  # the names cycle through the classes: shuffle first
    x, y = x[order], y[order]
    torch.manual_seed(0)
    net = create_backbone("tinycnn", num_classes=k, in_chans=3, image_size=(40, 32))
    head = [n for n, m in net.named_modules() if isinstance(m, nn.Linear)][-1]
    before = _state(net)
    res = fit_probe(net, x[::2], y[::2], x[1::2], y[1::2], num_classes=k, epochs=150, lr=0.05, weight_decay=1e-3,
                    progress=False)  # fmt: skip
    after = _state(net)
    encoder = [n for n in before if not n.startswith(head + ".")]
    assert encoder and all(torch.equal(before[n], after[n]) for n in encoder)  # weights and BatchNorm buffers
    trained = [n for n in after if n.startswith(head + ".")]
    assert all(n not in before or not torch.equal(before[n], after[n]) for n in trained) and trained
    new = net.get_submodule(head)
    assert isinstance(new, SigmoidNeuron) and new.neuron.out_features == 1 if k == 2 else isinstance(new, nn.Linear)
    assert res.history[-1]["train_loss"] < res.history[0]["train_loss"]
    assert res.history[-1]["val_acc"] > 1 / k + 0.2, res.history[-1]  # colours are easy even for random features
    net.eval()
    with torch.no_grad():  # the exported layer (standardisation folded in) predicts as the probe did
        p = net(torch.as_tensor(x[1::2]).float() / 255).argmax(1).numpy()
    assert (p == y[1::2]).mean() == pytest.approx(res.history[-1]["val_acc"], abs=1e-6)


@pytest.mark.parametrize(
    "clusters, labels, expect",
    [
        ([0, 0, 1, 1], [0, 0, 1, 1], 1.0),
        ([0, 0, 1, 1], [0, 1, 0, 1], 0.5),
        ([0, 0, 0, 1], [0, 0, 1, -1], 2 / 3),  # -1: no label, not counted
        ([0, 1, 2, 2], [1, 1, 0, 2], 0.75),
    ],
)
def test_purity_table(clusters, labels, expect):
    assert study.purity(np.array(clusters), np.array(labels)) == pytest.approx(expect)


def test_pca_finds_the_direction_of_most_variance():
    rng = np.random.default_rng(0)
    x = np.c_[rng.normal(0, 10, 500), rng.normal(0, 1, 500), rng.normal(0, 0.1, 500)]
    xy = study.pca_2d(x)
    assert abs(np.corrcoef(xy[:, 0], x[:, 0])[0, 1]) > 0.99 and abs(np.corrcoef(xy[:, 1], x[:, 1])[0, 1]) > 0.99


def test_nearest_distance_equals_brute_force():
    rng = np.random.default_rng(1)
    q, r = rng.normal(size=(37, 5)), rng.normal(size=(11, 5))
    brute = np.sqrt(((q[:, None] - r[None]) ** 2).sum(2)).min(1)
    np.testing.assert_allclose(study.nearest_distance(q, r, chunk=8), brute, rtol=1e-4, atol=1e-4)


@pytest.fixture(scope="module")
def probed(tmp_path_factory, eyes):
    """`retrain --pretrain vae --probe` on a real 200-crop run, few steps."""
    from pseudolabel.stages.retrain import retrain

    tmp = tmp_path_factory.mktemp("probe")
    run, *_ = make_seed_run(tmp, eyes, n=200)
    cfg = with_overrides(load_config(run / "config.yaml"), **{"retrain.members": 1, "retrain.pretrain": "vae",
                                                              "retrain.probe": True, "retrain.pretrain_epochs": 3})
    return run, retrain(cfg, run, tmp / "journal.csv", progress=False)


def test_retrain_with_vae_and_probe_writes_the_latent_study(probed):
    from pseudolabel.report.render import _final_section

    run, m = probed
    assert m["pretrain"] == "vae" and m["probe"] is True
    latent = json.loads((run / "final" / "latent.json").read_text())
    assert latent == m["latent"] and latent["n"] == 200 and latent["dims"] == 16 and latent["k"] == 2
    assert 0.5 <= latent["purity_seed"] <= 1 and latent["n_seed"] > 50
    assert (run / "final" / "latent.png").stat().st_size > 10_000
    text = "\n".join(_final_section(m))
    assert "### Latent space" in text and "final/latent.png" in text and "VAE" in text and "linear probe" in text


def test_bad_pretrain_values_are_refused(tmp_path):
    from pseudolabel.config.schema import Config

    with pytest.raises(ValueError, match="retrain pretrain must be one of"):
        with_overrides(Config(), **{"retrain.pretrain": "autoencoder"})
    with pytest.raises(ValueError, match="vae_latent"):
        with_overrides(Config(), **{"retrain.vae_latent": 0})


def test_eda_finds_the_planted_outlier_and_writes_its_pictures(tmp_path, crops):
    rng = np.random.default_rng(0)
    emb_lb, emb_ulb = rng.normal(size=(40, 8)), rng.normal(size=(100, 8))
    emb_ulb[37] += 25  # far from every labeled image
    x_lb, x_ulb = crops[:40], crops[40:140].copy()
    x_ulb[:, :, :, :] = np.minimum(x_ulb.astype(int) + 60, 255)  # the unlabeled images are brighter
    names = [f"u{i:03d}.jpg" for i in range(100)]
    info = study.write_eda(tmp_path, x_lb, x_ulb, emb_lb, emb_ulb, names, "yolov8-cls")
    assert info["ood"][0] == "u037.jpg" and len(info["ood"]) == 24 and len(set(info["ood"])) == 24
    assert info["n_labeled"] == 40 and info["n_unlabeled"] == 100
    assert info["mean_unlabeled"][0] > info["mean_labeled"][0] + 30
    assert info["d_unlabeled"]["p95"] > info["d_labeled"]["p50"] and 0 < info["share_beyond_labeled_p95"] < 0.2
    assert json.loads((tmp_path / "eda.json").read_text()) == info
    for png in ("eda_hist.png", "eda_nn.png", "eda_ood.png"):
        assert (tmp_path / png).stat().st_size > 5_000, png
    text = "\n".join(study.eda_section(info))
    assert "![out of distribution](eda_ood.png)" in text and "40 seed-labeled images" in text


@pytest.mark.parametrize("c", [1, 3])
def test_channel_histograms_count_every_pixel(c):
    x = np.random.default_rng(c).integers(0, 256, (7, c, 5, 4), dtype=np.uint8)
    h = study.channel_histograms(x, bins=16, chunk=3)
    assert h.shape == (c, 16) and np.allclose(h.sum(1), 1)
    for ch in range(c):
        np.testing.assert_allclose(h[ch], np.histogram(x[:, ch], bins=16, range=(0, 256))[0] / x[:, ch].size)
