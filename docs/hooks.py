"""MkDocs hooks: the reference pages are generated from the code at every build (docs/reference_gen.py)."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(_HERE.parent))  # the package, importable from the checkout
_spec = importlib.util.spec_from_file_location("reference_gen", _HERE / "reference_gen.py")
gen = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gen)

MARKERS = {"<!-- generated: configuration -->": gen.config_markdown, "<!-- generated: cli -->": gen.cli_markdown}


def on_page_markdown(markdown: str, page, config, files) -> str:
    for marker, make in MARKERS.items():
        if marker in markdown:
            markdown = markdown.replace(marker, make())
    return markdown
