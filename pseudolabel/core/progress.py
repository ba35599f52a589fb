"""Progress bars for the long stages: live on a terminal, sparse in a log file or a pipe."""
from __future__ import annotations

import sys

LIVE_INTERVAL = 0.1  # seconds between redraws on a terminal (tqdm's default)
LOG_INTERVAL = 30.0  # ...and when stderr is a file or a pipe, so `retrain > log 2>&1` stays small


def bar(progress: bool = True, iterable=None, **kwargs):
    """A tqdm bar on stderr, off when ``progress`` is False, cleared when it ends.

    On a terminal it redraws ten times a second. Into a log it writes a line at most every
    ``LOG_INTERVAL`` seconds: a retrain logged ~2 MB of redraws before."""
    from tqdm import tqdm

    interval = LIVE_INTERVAL if sys.stderr.isatty() else LOG_INTERVAL
    return tqdm(iterable, disable=not progress, leave=False, mininterval=interval, **kwargs)
