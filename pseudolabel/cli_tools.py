"""The commands that work on a finished run or a new folder: ``compare``, ``export`` and ``init``
(the pipeline's own commands are in :mod:`pseudolabel.cli`)."""
from __future__ import annotations

import argparse
from pathlib import Path

from . import device as devices
from .config import load_config, with_overrides


def _add_compare(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compare", help="train several backbones alike on a run's labeled set and tabulate them")
    p.add_argument("run", nargs="?", default="runs/eyes", help="run folder (default: runs/eyes)")
    p.add_argument("--backbones", type=lambda t: tuple(x.strip() for x in t.split(",") if x.strip()),
                   help="comma-separated: yolov8n-cls, yolov8m-cls, tinycnn or timm names (default: the seven of "
                   "the pipeline's compare.backbones)")  # fmt: skip
    p.add_argument("--epochs", type=int, help="supervised passes over the labeled set, every backbone alike")
    p.add_argument("--journal", help="review journal (default: RUN/journal.csv)")
    p.add_argument("--device", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def cmd_compare(args: argparse.Namespace) -> int:
    from .compare import compare
    from .review import journal_path_for

    run = Path(args.run)
    if not (run / "config.yaml").is_file():
        raise ValueError(f"not a run folder (no config.yaml): {run}")
    cfg = with_overrides(load_config(run / "config.yaml"), device=args.device, **{"compare.epochs": args.epochs})
    devices.use(cfg.device)
    compare(cfg, run, Path(args.journal) if args.journal else journal_path_for(run), args.backbones,
            progress=not args.quiet)
    print((run / "compare.md").read_text(), end="")
    print(f"wrote {run / 'compare.csv'} and {run / 'compare.md'}")
    return 0


def _add_export(sub: argparse._SubParsersAction) -> None:
    from .export import FORMATS, SOURCES

    p = sub.add_parser("export", help="write a run's labeled images for other trainers and tools")
    p.add_argument("run", nargs="?", default="runs/eyes", help="run folder (default: runs/eyes)")
    p.add_argument("--format", required=True, choices=FORMATS, help="imagefolder (DIR/<class>/), yolo "
                   "(DIR/train|val/<class>/), csv (DIR/labels.csv) or labelstudio (DIR/tasks.json)")  # fmt: skip
    p.add_argument("--out", help="the folder to create (default: RUN-<format> beside the run); never an existing one")
    p.add_argument("--val-share", type=float, default=0.1, dest="val_share", help="yolo: share of each class "
                   "held out for val/, human-labeled images first (default 0.1)")  # fmt: skip
    p.add_argument("--include", default=",".join(SOURCES), help=f"who labeled the images to export, "
                   f"comma-separated from {','.join(SOURCES)} (default: all)")  # fmt: skip
    p.add_argument("--copy", action="store_true", help="copy the images (default: symbolic links to the run's files)")
    p.add_argument("--journal", help="review journal (default: RUN/journal.csv)")


def cmd_export(args: argparse.Namespace) -> int:
    from .export import check_out, collect, summary_lines, write
    from .review import journal_path_for

    run = Path(args.run)
    if not (run / "predictions.csv").is_file():
        raise ValueError(f"not a run folder (no predictions.csv): {run}")
    cfg = load_config(run / "config.yaml") if (run / "config.yaml").is_file() else None
    out = Path(args.out) if args.out else run.parent / f"{run.name}-{args.format}"  # beside the run, not in it
    check_out(out, run, Path(cfg.images) if cfg else None)  # before any work
    include = tuple(x.strip() for x in args.include.split(",") if x.strip())
    items, classes = collect(run, Path(args.journal) if args.journal else journal_path_for(run), include)
    seed = cfg.seed if cfg else 0
    s = write(items, classes, args.format, out, val_share=args.val_share, copy=args.copy, seed=seed)
    print("\n".join(summary_lines(s)))
    return 0


def _add_init(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("init", help="write pipelines/NAME.yaml for a new folder of images and its seed labels")
    p.add_argument("images", help="the folder of unlabeled images")
    p.add_argument("--labels", help="seed labels: CSV, JSON, class folders, CVAT (zip, XML) or Label Studio JSON")
    p.add_argument("--name", default="mine", help="the pipeline's name: pipelines/NAME.yaml (default: mine)")


def cmd_init(args: argparse.Namespace) -> int:
    from .scaffold import init_pipeline

    path, command = init_pipeline(Path(args.images), Path(args.labels) if args.labels else None, args.name)
    print(f"wrote {path}: read its comments, then run\n  {command}")
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    _add_compare(sub)
    _add_export(sub)
    _add_init(sub)


COMMANDS = {"compare": cmd_compare, "export": cmd_export, "init": cmd_init}
