"""Seed models: construction by name, the shared interface, local pretrained weights."""
import numpy as np
import pytest
import torch

from pseudolabel.config.schema import Config, SeedTrainConfig
from pseudolabel.models.backbones import Normalize, create_backbone
from pseudolabel.train.seeds import create_seed_model


@pytest.mark.parametrize("name", ["resnet50", "yolov8-cls"])
@pytest.mark.parametrize("classes,channels,size", [(("closed", "open"), 1, 24), (("r", "g", "b"), 3, (40, 32))])
def test_create_seed_model_by_name_has_predict_proba(name, classes, channels, size):
    cfg = Config(classes=classes, channels=channels, image_size=size)
    model = create_seed_model(name, cfg, progress=False)
    h, w = cfg.hw
    x = np.random.default_rng(0).integers(0, 255, (5, channels, h, w), dtype=np.uint8)
    p = model.predict_proba(x)
    assert p.shape == (5, len(classes))
    np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-5)
    assert model.num_parameters() > 1e6


@pytest.mark.parametrize("name", ["tinycnn", "yolov8-cls", "resnet50", "resnet18"])  # registered, and timm's by name
@pytest.mark.parametrize("k,channels,size", [(2, 1, 24), (5, 3, (40, 32))])
def test_create_backbone_gives_k_logits(name, k, channels, size):
    net = create_backbone(name, num_classes=k, in_chans=channels, image_size=size).eval()
    h, w = (size, size) if isinstance(size, int) else size
    with torch.no_grad():
        out = net(torch.rand(3, channels, h, w))
    out = out[1] if isinstance(out, (tuple, list)) else out
    assert out.shape == (3, k)


def test_normalisation_is_part_of_the_network():
    torch.manual_seed(0)
    net = create_backbone("tinycnn", num_classes=3, in_chans=3, image_size=16, norm=((0.5, 0.4, 0.3), (0.2, 0.2, 0.1)))
    assert isinstance(net, Normalize)
    x = torch.rand(2, 3, 16, 16)
    expected = net.body.eval()((x - torch.tensor([0.5, 0.4, 0.3]).view(1, 3, 1, 1)) / torch.tensor([0.2, 0.2, 0.1]).view(1, 3, 1, 1))
    torch.testing.assert_close(net.eval()(x), expected)


def test_unknown_seed_model_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown seed model 'vgg'"):
        create_seed_model("vgg", Config())


def test_pretrained_weights_load_from_a_local_file(tmp_path):
    import timm

    torch.manual_seed(123)
    donor = timm.create_model("resnet50", num_classes=1000, in_chans=3)
    path = tmp_path / "r50.pth"
    torch.save(donor.state_dict(), path)
    wrapped = create_backbone("resnet50", num_classes=2, in_chans=1, image_size=24, pretrained=str(path))
    assert isinstance(wrapped, Normalize)  # the weights' own mean and std, folded to one channel
    assert wrapped.mean.flatten().tolist() == pytest.approx([(0.485 + 0.456 + 0.406) / 3], abs=1e-6)
    net = wrapped.body.body
    # deep layers are copied as they are; the classifier is re-made for 2 classes
    assert torch.equal(net.layer3[0].conv1.weight, donor.layer3[0].conv1.weight)
    assert net.fc.out_features == 2
    # the RGB stem is folded into one input channel by timm
    assert torch.allclose(net.conv1.weight, donor.conv1.weight.sum(1, keepdim=True), atol=1e-5)


def test_missing_pretrained_file_names_it(tmp_path):
    with pytest.raises(ValueError, match="nope.pth"):
        create_backbone("resnet50", num_classes=2, in_chans=1, image_size=24, pretrained=str(tmp_path / "nope.pth"))


def test_a_few_supervised_epochs_on_real_crops_beat_chance(eyes):
    """Real seed crops, a handful of epochs: the yolo seed model must learn something."""
    from pseudolabel.data.images import Problems
    from pseudolabel.data.labels import clean_seed_labels, read_seed_labels, split_seeds
    from pseudolabel.data.pool import load_pool

    pr = Problems(quiet=True)
    pool = load_pool(eyes / "images", 24, 1, pr, progress=False)
    classes = ("closed", "open")
    labels = clean_seed_labels(read_seed_labels(eyes / "targets.json", classes, pr), pool.names, classes, pr, "t")
    train, val = split_seeds(labels, 80, 0)
    idx = pool.index()
    xs = lambda names: pool.images[[idx[n] for n in names]]  # noqa: E731
    ys = lambda names: np.array([labels[n] for n in names])  # noqa: E731
    cfg = Config(yolo=SeedTrainConfig(epochs=30, batch_size=16, lr=2e-3, patience=30))
    model = create_seed_model("yolov8-cls", cfg, progress=False)
    model.fit(xs(train), ys(train), xs(val), ys(val))
    train_acc = (model.predict_proba(xs(train)).argmax(1) == ys(train)).mean()
    assert train_acc > 0.8
    assert len(model.history) >= 1 and model.fit_seconds > 0


SIGMOID_2 = 1 / (1 + np.exp(-2.0))  # P(open) of logits (0, 2)


class _Fixed(torch.nn.Module):
    """A fake member: returns the same logits for every input row."""

    def __init__(self, logits):
        super().__init__()
        self.logits = torch.tensor(logits)

    def forward(self, x):
        return self.logits.expand(len(x), -1)


@pytest.mark.parametrize(
    "member_logits,expected_p_open",
    [
        ([[0.0, 0.0]], 0.5),
        ([[0.0, 10.0], [10.0, 0.0]], 0.5),  # sure open + sure closed -> undecided
        ([[0.0, 0.0], [0.0, 100.0]], 0.75),  # the mean of the probabilities, not of the logits
        ([[2.0, 0.0], [0.0, 2.0], [0.0, 2.0]], (1 + SIGMOID_2) / 3),  # (1 - s) + s + s over 3
    ],
)
def test_ensemble_averages_member_probabilities(member_logits, expected_p_open):
    from pseudolabel.models.backbones import Ensemble
    from pseudolabel.train.fixmatch import predict_probs

    ens = Ensemble([_Fixed(l) for l in member_logits])
    probs = predict_probs(ens, torch.rand(3, 1, 24, 24))
    assert probs.shape == (3, 2)
    np.testing.assert_allclose(probs[:, 1].numpy(), expected_p_open, atol=1e-6)
    np.testing.assert_allclose(probs.sum(1).numpy(), 1.0, atol=1e-6)


def test_empty_ensemble_is_an_error():
    from pseudolabel.models.backbones import Ensemble

    with pytest.raises(ValueError, match="at least one member"):
        Ensemble([])


@pytest.mark.parametrize("mode", ["none", "flip", "flip+shift"])
def test_tta_is_the_mean_over_views_in_one_pass(eyes, mode):
    """TTA batches all views through the network at once; it must equal scoring each view apart."""
    from PIL import Image

    from pseudolabel.data.augment import tta_views
    from pseudolabel.models.backbones import TTA
    from pseudolabel.train.fixmatch import predict_probs

    names = sorted(p.name for p in (eyes / "images").iterdir())[:12]
    x = torch.from_numpy(np.stack([np.asarray(Image.open(eyes / "images" / n).convert("L")) for n in names])[:, None])
    x = x.float() / 255
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(24 * 24, 2)).eval()  # sees where each pixel is
    views = tta_views(x, mode).view(-1, *x.shape)
    expected = torch.stack([predict_probs(net, v) for v in views]).mean(0)
    got = predict_probs(TTA(net, mode), x)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    if mode != "none":
        assert not torch.allclose(got, predict_probs(net, x), atol=1e-4)  # the views do change the score
    with pytest.raises(ValueError, match="tta must be one of"):
        TTA(net, "flip+rotate")
