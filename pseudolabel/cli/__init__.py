"""The command line: ``pseudolabel run``, ``review``, ``retrain``, ``resort``, ``predict`` (:mod:`.main`);
``compare``, ``export``, ``init`` and ``weights`` (:mod:`.tools`)."""
from pseudolabel.cli.main import build_parser, main, resolve_run_config

__all__ = ["build_parser", "main", "resolve_run_config"]
