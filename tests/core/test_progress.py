"""Progress bars: live on a terminal, sparse when stderr is a log file or a pipe."""
import io
import sys

import pytest
import torch

from pseudolabel.core import progress
from pseudolabel.models.backbones import TinyCNN
from pseudolabel.train.simclr import pretrain_simclr
from tests.conftest import dev_subset as _dev_subset


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(
    "stream, on, interval",
    [
        (Terminal, True, progress.LIVE_INTERVAL),  # a person watching: redraw often
        (io.StringIO, True, progress.LOG_INTERVAL),  # `retrain > log 2>&1`, CI: a line now and then
        (io.StringIO, False, None),  # --quiet: nothing at all
    ],
)
def test_the_redraw_interval_follows_stderr(monkeypatch, stream, on, interval):
    err = stream()
    monkeypatch.setattr(sys, "stderr", err)
    with progress.bar(on, total=3, desc="work") as b:
        b.update(3)
        shown = not b.disable
    assert shown is on
    if on:
        assert b.mininterval == interval and "work" in err.getvalue()
    else:
        assert err.getvalue() == ""


def test_a_training_loop_logged_to_a_file_writes_a_few_lines_not_one_per_step(eyes, capsys):
    """Real SimCLR steps on 256 real crops with the bar on and stderr captured (not a terminal):
    the per-step loss in the bar's postfix must not force a redraw each step."""
    x, _ = _dev_subset(eyes, 256)
    torch.manual_seed(0)
    hist = pretrain_simclr(TinyCNN(1), x, epochs=3, batch_size=64, seed=0, progress=True)
    steps = 3 * (256 // 64)
    err = capsys.readouterr().err
    assert len(hist) == 3 and "pretrain (SimCLR)" in err
    assert err.count("\r") <= 3, f"{err.count(chr(13))} redraws for {steps} steps"
