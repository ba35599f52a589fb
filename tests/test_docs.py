"""The documentation cannot drift from the code: the generated configuration and command-line reference
pages list exactly the keys and options the code has, the README keeps its shape and its links resolve,
and every public name imports."""
from __future__ import annotations

import dataclasses
import importlib.util
import re
import subprocess
import sys

import pytest

from tests.conftest import ROOT


def reference():
    spec = importlib.util.spec_from_file_location("reference_gen", ROOT / "docs" / "reference_gen.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def tables(markdown: str) -> dict[str, list[list[str]]]:
    """{section heading: rows of its table, cells stripped of backticks}."""
    out, heading = {}, None
    for line in markdown.splitlines():
        if line.startswith("## "):
            heading = line[3:].strip().strip("`")
            out[heading] = []
        elif heading and line.startswith("| ") and not line.startswith(("| key ", "| argument ", "|---")):
            cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
            out[heading].append([c.strip("`") for c in cells])
    return out


def test_the_configuration_reference_lists_every_key_of_every_section():
    from pseudolabel.config import Config

    page = tables(reference().config_markdown())
    want = {"Top level": Config}
    for f in dataclasses.fields(Config):
        if f.default_factory is not dataclasses.MISSING:
            want[f"{f.name}:"] = type(f.default_factory())
    assert set(page) == set(want)
    for heading, cls in want.items():
        keys = [row[0] for row in page[heading]]
        assert keys == [f.name for f in dataclasses.fields(cls)], heading
        undocumented = [row[0] for row in page[heading] if not row[3]]
        assert not undocumented, f"{heading}: keys without a comment in schema.py: {undocumented}"


def test_the_command_line_reference_lists_every_subcommand_and_option():
    import argparse

    from pseudolabel.cli.main import build_parser

    page = tables(reference().cli_markdown())
    seen = {}

    def walk(parser, prefix):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    seen[f"{prefix} {name}"] = sub
                    walk(sub, f"{prefix} {name}")

    walk(build_parser(), "pseudolabel")
    assert set(page) == set(seen) and "pseudolabel weights fetch" in page
    for command, sub in seen.items():
        typed = {a.option_strings[0] if a.option_strings else a.dest for a in sub._actions
                 if not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction)) and a.help != argparse.SUPPRESS}
        listed = {row[0].split(",")[0].split(" {")[0] for row in page[command]}
        assert listed == typed, command


def test_the_readme_starts_with_the_two_commands_then_the_tests_and_its_links_resolve():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 150
    blocks = re.findall(r"```bash\n(.*?)```", text, re.S)
    assert blocks[0].split("\n")[0].startswith("make setup") and "pseudolabel run" in blocks[0]
    assert blocks[1].strip() == '.venv/bin/python -m pytest -q -m "slow or not slow"'
    links = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text)
    assert links
    for link in links:
        if not link.startswith("http"):
            assert (ROOT / link).exists(), link


@pytest.mark.parametrize("name", __import__("pseudolabel").__all__)
def test_every_public_name_imports(name):
    import pseudolabel

    assert getattr(pseudolabel, name) is not None
    exec(f"from pseudolabel import {name}", {})


def test_the_command_line_module_and_the_entry_point_answer():
    res = subprocess.run([sys.executable, "-m", "pseudolabel.cli", "--version"], capture_output=True, text=True)
    from pseudolabel import __version__

    assert res.returncode == 0 and res.stdout.strip() == f"pseudolabel {__version__}"
