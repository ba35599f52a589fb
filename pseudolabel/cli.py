"""Command line: ``pseudolabel run`` and ``pseudolabel review``."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .config import Config, load_config, with_overrides

DEFAULT_PIPELINE = "pipelines/eyes.yaml"


def _pipeline_path(value: str | None) -> Path:
    """A pipeline is a YAML path or a bare name looked up in ./pipelines/."""
    if value is None:
        return Path(DEFAULT_PIPELINE)
    p = Path(value)
    if p.suffix in (".yaml", ".yml") or p.exists():
        return p
    return Path("pipelines") / f"{value}.yaml"


def _margin(text: str) -> float | tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or two numbers separated by a comma, got {text!r}")
    return values[0] if len(values) == 1 else values


def _add_run(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="train two seed models and sort the pool into 0/, 1/ and unclear/")
    p.add_argument("pipeline", nargs="?", help=f"pipeline YAML or name in pipelines/ (default: {DEFAULT_PIPELINE})")
    p.add_argument("--out", help="run folder (default: runs/<pipeline>/)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run folder")
    p.add_argument("--images", help="folder of unlabeled images (overrides the pipeline)")
    p.add_argument("--labels", help="seed labels: JSON, CSV or class folders (overrides the pipeline)")
    p.add_argument("--margin", type=_margin, help="vote margin around 0.5: M for both models, or MA,MB")
    p.add_argument("--n-train", type=int, dest="n_train", help="seed labels used for training")
    p.add_argument("--seed", type=int, help="random seed")
    p.add_argument("--pretrained", help="local weights file for resnet50")
    p.add_argument("--epochs", type=int, help="epochs for both seed models (debugging / quick runs)")
    p.add_argument("--fixmatch-epochs", type=int, dest="fixmatch_epochs", help="FixMatch epochs of the teacher")
    p.add_argument("--student-max", type=int, dest="student_max", help="pool images the student learns from")
    p.add_argument("--limit", type=int, help="use only the first N pool images (quick trials)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def resolve_run_config(args: argparse.Namespace) -> Config:
    cfg = load_config(_pipeline_path(args.pipeline))
    over = {
        "images": args.images, "labels": args.labels, "margin": args.margin, "n_train": args.n_train,
        "seed": args.seed, "pretrained": args.pretrained, "student_max": args.student_max, "limit": args.limit,
        "resnet50.epochs": args.epochs, "yolo.epochs": args.epochs, "yolo.fixmatch_epochs": args.fixmatch_epochs,
    }  # fmt: skip
    return with_overrides(cfg, **over)


def cmd_run(args: argparse.Namespace) -> int:
    from .pipeline import run_pipeline

    cfg = resolve_run_config(args)
    out = Path(args.out) if args.out else Path("runs") / cfg.name
    run_pipeline(cfg, out, overwrite=args.overwrite, progress=not args.quiet)
    return 0


def _add_review(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("review", help="review the unclear queue on a local web page")
    p.add_argument("run", nargs="?", default="runs/eyes", help="run folder (default: runs/eyes)")
    p.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: any free port)")
    p.add_argument("--no-browser", action="store_true", help="do not open a browser")
    p.add_argument("--status", action="store_true", help="print counts and journal/folder disagreements, then exit")
    p.add_argument("--journal", help="decision journal (default: labels/<pipeline>/reviewed.csv)")


def cmd_review(args: argparse.Namespace) -> int:
    from .review import ReviewState, format_status, journal_path_for
    from .review_server import make_server

    run = Path(args.run)
    if not (run / "predictions.csv").is_file():
        raise ValueError(f"not a run folder (no predictions.csv): {run}")
    state = ReviewState(run, Path(args.journal) if args.journal else journal_path_for(run))
    if state.recovered:
        print(f"finished {state.recovered} journaled move(s) that an interrupted session left undone")
    if args.status:
        print(format_status(state.status()))
        return 0
    server = make_server(state, args.port)
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    print(f"reviewing {run} ({state.queue()['left']} unclear); journal: {state.journal.path}", flush=True)
    print(f"open {url}  (Ctrl+C to stop)", flush=True)
    if not args.no_browser:
        import webbrowser

        webbrowser.open(url)
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pseudolabel", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _add_run(sub)
    _add_review(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return {"run": cmd_run, "review": cmd_review}[args.command](args)
    except ValueError as exc:  # user-facing errors: one line, no traceback
        print(f"pseudolabel: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("pseudolabel: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
