import numpy as np
import pytest

from pseudolabel.core.metrics import classification_metrics, eer, roc_auc


@pytest.mark.parametrize(
    "y,s,auc",
    [
        ([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9], 1.0),
        ([0, 0, 1, 1], [0.9, 0.8, 0.2, 0.1], 0.0),
        ([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5], 0.5),
        ([0, 0, 1, 1], [0.1, 0.6, 0.4, 0.9], 0.75),
    ],
)
def test_roc_auc(y, s, auc):
    assert roc_auc(np.array(y), np.array(s)) == pytest.approx(auc)


def test_eer_perfect_and_symmetric_error():
    assert eer(np.array([0, 0, 1, 1]), np.array([0.1, 0.2, 0.8, 0.9]))[0] == 0.0
    y = np.array([0] * 10 + [1] * 10)
    s = np.r_[np.linspace(0, 0.5, 10), np.linspace(0.45, 1, 10)]  # one of each class on the wrong side
    e, thr = eer(y, s)
    assert e == pytest.approx(0.1) and 0.4 < thr < 0.55


def test_classification_metrics_counts():
    y = np.array([1, 1, 1, 0, 0])
    s = np.array([0.9, 0.6, 0.3, 0.7, 0.1])
    m = classification_metrics(y, s)
    assert m["accuracy"] == pytest.approx(3 / 5)
    assert m["precision"] == pytest.approx(2 / 3)
    assert m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 / 3)
    assert np.isnan(classification_metrics(np.array([1, 1]), np.array([0.2, 0.9]))["eer"])
