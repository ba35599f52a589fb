"""Staged fine-tuning from a local pretrained file (shared/seeds/003's recipe): what is frozen when,
and the two learning-rate groups."""
import numpy as np
import pytest
import torch

from pseudolabel.config.schema import Config, StagedConfig, with_overrides
from pseudolabel.data.images import Problems
from pseudolabel.data.pool import load_pool
from pseudolabel.models.backbones import create_backbone
from pseudolabel.train.finetune import BATCHNORMS, fit_staged, param_groups, set_stage
from pseudolabel.train.seeds import create_seed_model


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """A small "pretrained" file: timm's test_resnet with 10 classes and 3 channels, as a hub file would be."""
    import timm

    torch.manual_seed(5)
    path = tmp_path_factory.mktemp("weights") / "test_resnet.pth"
    torch.save(timm.create_model("test_resnet", num_classes=10).state_dict(), path)
    return path


@pytest.fixture(scope="module")
def crops(eyes):
    pool = load_pool(eyes / "images", 24, 1, Problems(quiet=True), False)
    return np.asarray(pool.images[:120])


def _net(weights):
    torch.manual_seed(0)
    return create_backbone("test_resnet", num_classes=2, in_chans=1, image_size=24, pretrained=str(weights))


def test_the_pretrained_file_is_loaded(weights):
    ref = torch.load(weights, weights_only=True)

    def same(net):
        inner = [m for m in net.modules() if type(m).__name__ == "ResNet"][0].state_dict()
        return sum(inner[k].shape == ref[k].shape and torch.equal(inner[k], ref[k]) for k in convs)

    convs = [k for k, v in ref.items() if v.ndim == 4]  # convolution kernels: random unless loaded
    assert same(_net(weights)) == len(convs) - 1  # all but the 1-channel stem (timm adapts it from 3 channels)
    torch.manual_seed(0)
    assert same(create_backbone("test_resnet", num_classes=2, in_chans=1, image_size=24)) == 0


@pytest.mark.parametrize("stage, backbone_grad", [(1, False), (2, True)])
def test_set_stage_freezes_the_backbone_and_its_batchnorm_in_stage_one(weights, stage, backbone_grad):
    net = _net(weights)
    set_stage(net, stage)
    backbone, head = param_groups(net)
    assert backbone and all(p.requires_grad == backbone_grad for p in backbone)
    assert head and all(p.requires_grad for p in head) and len(head) == 2
    bns = [m for m in net.modules() if isinstance(m, BATCHNORMS)]
    assert bns and all(m.training == (stage == 2) for m in bns)


def _snapshot(net):
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def test_staged_fine_tuning_trains_the_head_then_everything(weights, crops):
    net = _net(weights)
    y = (np.arange(len(crops)) % 2).astype(np.int64)
    head = {n for n, _ in net.named_parameters() if n.endswith(("fc.weight", "fc.bias"))}
    assert len(head) == 2
    snaps = [_snapshot(net)]
    sc = StagedConfig(head_epochs=2, epochs=4, stop_patience=10, batch_size=32, backbone_lr=1e-3, head_lr=1e-2)
    res = fit_staged(net, crops[:96], y[:96], crops[96:], y[96:], sc, seed=0, progress=False,
                     on_epoch=lambda row, m: snaps.append(_snapshot(m)))
    assert [r["stage"] for r in res.history] == [1, 1, 2, 2]
    assert [(r["lr_backbone"], r["lr_head"]) for r in res.history[:2]] == [(1e-3, 1e-2)] * 2
    for before, after, stage in zip(snaps, snaps[1:], (1, 1, 2, 2)):
        moved = {k for k in before if not torch.equal(before[k], after[k])}
        assert head <= moved, stage
        others = moved - head
        if stage == 1:  # nothing of the backbone moves: weights, BatchNorm weights and running statistics
            assert not others, sorted(others)[:5]
        else:
            assert any("running_mean" in k for k in others) and any(k.endswith("conv.weight") or "conv" in k
                                                                   for k in others)
    assert all(p.requires_grad for p in net.parameters())  # left trainable afterwards


def test_early_stopping_and_the_plateau_scheduler(weights, crops):
    net = _net(weights)
    y = (np.arange(len(crops)) % 2).astype(np.int64)  # labels unrelated to the images: validation cannot improve
    sc = StagedConfig(head_epochs=1, epochs=30, stop_patience=3, plateau_patience=0, plateau_factor=0.15,
                      min_delta=10.0, batch_size=32)
    res = fit_staged(net, crops[:96], y[:96], crops[96:], y[96:], sc, seed=0, progress=False)
    assert len(res.history) == 4 and res.best_epoch == 0  # min_delta 10: no epoch after the first counts
    lrs, best, bad, lr = [], float("inf"), 0, 1e-2  # ReduceLROnPlateau replayed by hand on the losses seen
    for r in res.history:
        lrs.append(lr)
        if r["val_loss"] < best * (1 - 1e-4):
            best, bad = r["val_loss"], 0
        else:
            bad += 1
        if bad > sc.plateau_patience:
            lr, bad = lr * sc.plateau_factor, 0
    assert [r["lr_head"] for r in res.history] == pytest.approx(lrs)
    assert [r["lr_backbone"] for r in res.history] == pytest.approx([x / 10 for x in lrs])
    assert min(lrs) < 1e-2  # it did reduce


def test_the_seed_resnet50_is_fine_tuned_in_stages_only_with_weights(tmp_path, weights):
    with pytest.raises(ValueError, match="resnet50: train: staged needs pretrained weights"):
        with_overrides(Config(), **{"resnet50.train": "staged"})
    cfg = with_overrides(Config(), **{"resnet50.train": "staged", "resnet50.pretrained": str(weights),
                                      "resnet50.arch": "test_resnet"})
    assert create_seed_model("resnet50", cfg, progress=False).staged is not None
    with pytest.raises(ValueError, match="train must be one of finetune, staged, frozen"):
        with_overrides(Config(), **{"resnet50.train": "gradual"})
    with pytest.raises(ValueError, match="plateau_factor"):
        with_overrides(Config(), **{"staged.plateau_factor": 1.5})


def test_retrain_fine_tunes_a_pretrained_final_model_in_stages(tmp_path, eyes, weights):
    from pseudolabel.config.schema import load_config
    from pseudolabel.stages.retrain import retrain
    from tests.conftest import make_seed_run

    run, *_ = make_seed_run(tmp_path, eyes, n=150)
    cfg = with_overrides(load_config(run / "config.yaml"),
                         **{"retrain.pretrained": str(weights), "retrain.train": "staged",
                            "retrain.backbone": "test_resnet", "retrain.members": 1, "retrain.epochs": 1,
                            "retrain.tta": "none", "staged.epochs": 3, "staged.head_epochs": 1})  # fmt: skip
    m = retrain(cfg, run, tmp_path / "journal.csv", progress=False)
    assert m["finetune"] == "staged" and m["pretrain"] == "none" and m["members"][0]["pretrain_seconds"] == 0
    assert not list((run / "cache").glob("*.pt"))  # no SimCLR: the weights are the pretraining
    model = torch.jit.load(str(run / "final" / "model.ts"))
    ref = torch.load(weights, weights_only=True)
    kernels = [v for k, v in model.state_dict().items() if v.ndim == 4 and ".layer" in k]  # past the stem
    assert kernels and not any(torch.equal(k, r) for k in kernels for r in ref.values() if r.shape == k.shape)
