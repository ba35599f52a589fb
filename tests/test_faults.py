"""Faults: interrupted runs and retrains, a second run on the same folder, re-running after a
review, a full disk or read-only output, and originals that never change. Real processes on
real crops; the signals are real signals."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pseudolabel.core import runstate

from pseudolabel.review.state import ReviewState, journal_path_for
from tests.conftest import make_seed_run, run_cli, tree_digest, write_pipeline


@pytest.fixture
def job(tmp_path, eyes, small_pool):
    """A private 300-crop images folder, its labels and a tiny pipeline."""
    images = small_pool
    labels = tmp_path / "targets.json"
    shutil.copy2(eyes / "targets.json", labels)
    return tmp_path, images, write_pipeline(tmp_path, images, labels)


def _default_sigint() -> None:
    """In the child: Ctrl-C acts as it does in a terminal, even when the test runner was started in
    the background by a shell, which ignores SIGINT in its background jobs (and the child inherits it)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start(*args: str, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "pseudolabel.cli", *args], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=_default_sigint)  # fmt: skip


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    """Until ``path`` exists (the process is mid-work), then a moment more."""
    end = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < end, f"{path} never appeared"
        time.sleep(0.1)
    time.sleep(1.0)


def test_second_run_is_refused_then_sigint_cleans_up(job):
    tmp, images, pipeline = job
    before = tree_digest(images)
    first = start("run", str(pipeline), "--out", str(tmp / "run"), "--quiet", cwd=tmp)
    wait_for(tmp / ".run.partial", first)
    second = run_cli("run", str(pipeline), "--out", str(tmp / "run"), "--quiet", "--overwrite", cwd=tmp)
    assert second.returncode == 2
    assert second.stderr.strip() == (
        f"pseudolabel: error: another pseudolabel run (pid {first.pid}) is writing {tmp / 'run'}; "
        "wait for it or use another --out"
    )
    first.send_signal(signal.SIGINT)
    _, err = first.communicate(timeout=60)
    assert first.returncode == 130 and err.strip().splitlines()[-1] == "pseudolabel: interrupted"
    assert not (tmp / "run").exists() and not (tmp / ".run.partial").exists()
    assert tree_digest(images) == before


@pytest.mark.slow
def test_sigkill_mid_run_never_looks_complete_and_rerun_works(job):
    tmp, images, pipeline = job
    before = tree_digest(images)
    proc = start("run", str(pipeline), "--out", str(tmp / "run"), "--quiet", cwd=tmp)
    wait_for(tmp / ".run.partial", proc)
    proc.kill()
    proc.wait(timeout=30)
    assert not (tmp / "run").exists()  # only the hidden partial folder may be left, and it has no manifest
    assert (tmp / ".run.partial").is_dir() and not (tmp / ".run.partial" / "manifest.json").exists()
    again = run_cli("run", str(pipeline), "--out", str(tmp / "run"), "--quiet", cwd=tmp)  # the kernel freed the lock
    assert again.returncode == 0, again.stderr
    assert (tmp / "run" / "manifest.json").is_file() and not (tmp / ".run.partial").exists()
    assert tree_digest(images) == before


@pytest.fixture
def seed_run(tmp_path, eyes):
    run, images, _, _ = make_seed_run(tmp_path, eyes)
    return tmp_path, run, images


@pytest.mark.parametrize("how", ["page", "hand"])
def test_rerun_after_review_refuses_and_keeps_the_review(seed_run, how):
    tmp, run, images = seed_run
    journal = journal_path_for(run)  # the run's own: RUN/journal.csv
    assert journal == run / "journal.csv"
    state = ReviewState(run, journal)
    image = state.queue()["items"][0]["image"]
    if how == "page":
        state.decide(image, "1")
    else:
        f = state.items[image].file
        os.rename(run / "unclear" / f, run / "0" / f)
    before = tree_digest(run), journal.read_bytes() if journal.exists() else b""
    proc = run_cli("run", str(run / "config.yaml"), "--out", str(run), "--overwrite", "--quiet", cwd=tmp)
    assert proc.returncode == 2
    page, hand = (1, 0) if how == "page" else (0, 1)
    assert proc.stderr.strip() == (
        f"pseudolabel: error: run folder {run} holds review work ({page} image(s) decided on the review page, "
        f"{hand} moved by hand) that a new run would undo; refusing. Retrain from it, or use another --out"
    )
    assert (tree_digest(run), journal.read_bytes() if journal.exists() else b"") == before


def retrain_args(run: Path, tmp: Path) -> list[str]:
    return ["retrain", str(run), "--journal", str(tmp / "journal.csv"), "--quiet"]


@pytest.mark.slow
def test_sigkill_mid_retrain_then_retrain_again(seed_run):
    tmp, run, images = seed_run
    before = tree_digest(images), tree_digest(run / "0"), tree_digest(run / "1"), tree_digest(run / "unclear")
    proc = start(*retrain_args(run, tmp), cwd=tmp)
    wait_for(run / ".final.partial" / "log.csv", proc, timeout=300)
    proc.kill()
    proc.wait(timeout=30)
    assert not (run / "final").exists() and not (run / ".final.partial" / "manifest.json").exists()
    again = run_cli(*retrain_args(run, tmp), cwd=tmp)
    assert again.returncode == 0, again.stderr
    assert (run / "final" / "manifest.json").is_file() and not (run / ".final.partial").exists()
    assert (tree_digest(images), tree_digest(run / "0"), tree_digest(run / "1"), tree_digest(run / "unclear")) == before


@pytest.mark.slow
def test_sigint_mid_retrain_keeps_the_previous_final_model(seed_run):
    tmp, run, _ = seed_run
    (run / "final").mkdir()
    runstate.mark(run / "final", "final")  # a final model retrain made (its marker)
    (run / "final" / "model.onnx").write_bytes(b"previous model")
    proc = start(*retrain_args(run, tmp), "--overwrite", "--epochs", "500", cwd=tmp)  # still training when signalled
    wait_for(run / ".final.partial" / "log.csv", proc, timeout=300)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and err.strip().splitlines()[-1] == "pseudolabel: interrupted", err
    assert (run / "final" / "model.onnx").read_bytes() == b"previous model"
    assert not (run / ".final.partial").exists()


@pytest.fixture
def small_mount(tmp_path):
    """A 3 MiB tmpfs: a real full disk, and remountable read-only. Needs root (CI runs as root)."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.fail("the full-disk and read-only tests mount a tmpfs and need root")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mnt)], check=True)
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


@pytest.mark.parametrize("fault", ["full", "read-only"])
def test_full_disk_or_read_only_output_is_a_clear_error(job, small_mount, fault):
    tmp, images, pipeline = job
    before = tree_digest(images)
    if fault == "full":
        (small_mount / "ballast").write_bytes(b"\0" * (3 * 1024 * 1024 - 64 * 1024))
    else:
        subprocess.run(["mount", "-o", "remount,ro", str(small_mount)], check=True)
    out = small_mount / "run"
    proc = run_cli("run", str(pipeline), "--out", str(out), "--quiet", cwd=tmp)
    assert proc.returncode == 2, proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    expected = "No space left on device" if fault == "full" else "Read-only file system"
    assert line.startswith("pseudolabel: error: cannot write ") and expected in line and str(small_mount) in line
    assert not out.exists()
    assert tree_digest(images) == before


@pytest.mark.slow
def test_originals_keep_bytes_and_mtime_through_run_review_and_retrain(job):
    tmp, images, pipeline = job
    labels = tmp / "targets.json"
    before = tree_digest(images), labels.read_bytes(), labels.stat().st_mtime_ns
    assert run_cli("run", str(pipeline), "--out", str(tmp / "run"), "--quiet", cwd=tmp).returncode == 0
    journal = tmp / "journal.csv"
    state = ReviewState(tmp / "run", journal)
    queue = [it["image"] for it in state.queue()["items"]]
    for image, label in zip(queue, ["1", "0", "unsure", "1"]):
        state.decide(image, label)
    state.undo(queue[3])
    f = state.items[queue[4]].file
    os.rename(tmp / "run" / "unclear" / f, tmp / "run" / "1" / f)  # a hand move
    proc = run_cli("retrain", str(tmp / "run"), "--journal", str(journal), "--epochs", "1", "--quiet", cwd=tmp)
    assert proc.returncode == 0, proc.stderr
    assert (tree_digest(images), labels.read_bytes(), labels.stat().st_mtime_ns) == before
    standing = ReviewState(tmp / "run", journal).journal.last_decisions()
    assert {i: r["label"] for i, r in standing.items()} == {queue[0]: "1", queue[1]: "0", queue[2]: "unsure"}
