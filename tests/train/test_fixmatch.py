import pytest
import torch

from pseudolabel.train.fixmatch import EMA, confidence_mask, fixmatch_loss, improved, pseudo_label

P = torch.tensor([[0.97, 0.03], [0.5, 0.5], [0.04, 0.96], [0.2, 0.8], [0.05, 0.95]])


@pytest.mark.parametrize(
    "tau,expected",
    [
        (0.95, [True, False, True, False, True]),
        (0.96, [True, False, True, False, False]),
        (0.5, [True, True, True, True, True]),
        (0.99, [False, False, False, False, False]),
    ],
)
def test_confidence_mask(tau, expected):
    assert confidence_mask(P, tau).tolist() == expected


def test_pseudo_label_hard_labels_and_float_mask():
    labels, mask = pseudo_label(P, 0.95)
    assert labels.tolist() == [0, 0, 1, 1, 1]
    assert mask.tolist() == [1.0, 0.0, 1.0, 0.0, 1.0]


def test_confidence_mask_rejects_bad_tau():
    with pytest.raises(ValueError, match="tau"):
        confidence_mask(P, 1.5)


def test_loss_ignores_unconfident_rows_and_weights_labels():
    logits_lb = torch.tensor([[2.0, -2.0], [-1.0, 1.0]])
    y = torch.tensor([0, 0])
    probs_w = torch.tensor([[0.99, 0.01], [0.6, 0.4]])
    logits_s = torch.tensor([[0.0, 0.0], [-50.0, 50.0]])  # second row is wildly wrong but not confident
    loss, st = fixmatch_loss(logits_lb, y, logits_s, probs_w, tau=0.95)
    unsup_expected = torch.nn.functional.cross_entropy(logits_s[:1], torch.tensor([0])) / 2
    assert st["mask"] == 0.5
    assert abs(st["unsup"] - float(unsup_expected)) < 1e-6
    # weighting the second (misclassified) labeled row to zero lowers the supervised term
    _, st_w = fixmatch_loss(logits_lb, y, logits_s, probs_w, tau=0.95, w_lb=torch.tensor([1.0, 0.0]))
    assert st_w["sup"] < st["sup"]


def test_ema_moves_towards_the_weights():
    m = torch.nn.Linear(2, 2)
    ema = EMA(m, decay=0.5)
    before = ema.module.weight.clone()
    with torch.no_grad():
        m.weight.add_(1.0)
    ema.update(m)
    assert torch.allclose(ema.module.weight, before + 0.5)


@pytest.mark.parametrize("average, expected_mean", [(True, 1.0), (False, 4.0)])  # 0.75 * 0 + 0.25 * 4, or copied
def test_ema_batch_norm_statistics(average, expected_mean):
    m = torch.nn.BatchNorm1d(3)
    ema = EMA(m, decay=0.75, average_buffers=average)
    with torch.no_grad():
        m.running_mean.fill_(4.0)
        m.num_batches_tracked.fill_(7)
    ema.update(m)
    assert torch.allclose(ema.module.running_mean, torch.full((3,), expected_mean))
    assert int(ema.module.num_batches_tracked) == 7  # integer buffers are always copied


def test_class_wise_thresholds_in_the_mask():
    # class 0 rows need 0.97, class 1 rows need 0.9
    assert confidence_mask(P, torch.tensor([0.97, 0.9])).tolist() == [True, False, True, False, True]
    assert confidence_mask(P, torch.tensor([0.98, 0.96])).tolist() == [False, False, True, False, False]


@pytest.mark.parametrize(
    "selected,expected",
    [
        ([-1, -1, -1, -1], [0.0, 0.0]),  # warm-up: nothing learned yet, thresholds start low
        ([0, 0, 1, 1], [0.95, 0.95]),  # balanced and all learned: plain tau
        ([0, 0, 0, 1], [0.95, 0.95 * (1 / 3) / (2 - 1 / 3)]),  # class 1 lags: lower threshold
        ([0, -1, -1, -1], [0.95 * (1 / 3) / (2 - 1 / 3), 0.0]),  # most unused: warm-up denominator
    ],
)
def test_flexmatch_thresholds(selected, expected):
    from pseudolabel.train.fixmatch import flexmatch_thresholds

    got = flexmatch_thresholds(torch.tensor(selected), 2, 0.95)
    assert torch.allclose(got, torch.tensor(expected), atol=1e-6)


KEPT = {"val_loss": 0.10, "val_acc": 0.95}


@pytest.mark.parametrize(
    "row, monitor, expected",
    [
        ({"val_loss": 0.05, "val_acc": 0.90}, "loss", True),  # lower loss wins, whatever the accuracy
        ({"val_loss": 0.09995, "val_acc": 1.0}, "loss", False),  # within 1e-4 is no improvement
        ({"val_loss": 0.30, "val_acc": 0.95}, "accuracy", True),  # a tie goes to the later epoch
        ({"val_loss": 0.01, "val_acc": 0.90}, "accuracy", False),  # lower accuracy loses, whatever the loss
        ({"val_loss": 0.50, "val_acc": 1.00}, "accuracy", True),
        ({"val_loss": 0.50, "val_acc": 0.50}, "last", True),  # the latest epoch always replaces the kept one
    ],
)
def test_which_epoch_is_kept(row, monitor, expected):
    assert improved(row, KEPT, monitor) is expected
    assert improved(row, None, monitor) is True  # the first epoch is always kept


def test_unknown_monitor_is_refused():
    with pytest.raises(ValueError, match="'val_acc'"):
        improved(KEPT, KEPT, "val_acc")
