"""The generated reference pages: the configuration keys from ``pseudolabel/config/schema.py`` (the comment
beside each field is its documentation) and the command line from the argparse parsers. MkDocs calls these
through ``docs/hooks.py`` at every build, so the pages cannot drift from the code; tests compare them with
the dataclasses and the parsers."""
from __future__ import annotations

import argparse
import dataclasses
import re
from pathlib import Path

SCHEMA = Path(__file__).resolve().parents[1] / "pseudolabel" / "config" / "schema.py"


def field_comments(path: Path = SCHEMA) -> dict[str, dict[str, str]]:
    """{class name: {field: its comment}} from the source: the ``# ...`` after a field's line, and the
    comment-only lines right below it (a comment that goes on)."""
    out: dict[str, dict[str, str]] = {}
    cls, last = None, None
    for line in path.read_text().splitlines():
        m = re.match(r"^class (\w+)", line)
        if m:
            cls, last = m.group(1), None
            out[cls] = {}
            continue
        if cls is None:
            continue
        if line and not line.startswith(" "):
            cls, last = None, None
            continue
        f = re.match(r"^    (\w+): [^=]+= ", line)
        if f:
            last = f.group(1)
            out[cls][last] = _comment(line)
            continue
        c = re.match(r"^    # ?(.*)$", line)
        if c and last is not None:
            out[cls][last] = (out[cls][last] + " " + c.group(1)).strip()
            continue
        if line.startswith("        ") and last is not None:  # a default that goes on to the next line
            out[cls][last] = (out[cls][last] + " " + _comment(line)).strip()
            continue
        last = None
    return out


def _comment(line: str) -> str:
    """The trailing comment of one line of Python (a '#' inside a string is not one)."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            quote = None if ch == quote and line[i - 1] != "\\" else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#":
            return line[i + 1 :].strip().removesuffix("fmt: skip").strip()
    return ""


def _yaml(value) -> str:
    import yaml

    if dataclasses.is_dataclass(value):
        return "(section)"
    if isinstance(value, tuple):
        value = list(value)
    return yaml.safe_dump(value, default_flow_style=True, width=10**6).strip().removesuffix("...").strip()


def _cell(text: str) -> str:
    """Text for one table cell: no line break, no pipe, no angle bracket read as HTML."""
    return str(text).replace("|", "\\|").replace("\n", " ").replace("<", "&lt;").replace(">", "&gt;")


def config_sections() -> list[tuple[str, type]]:
    """(YAML key of the section, "" for the top level; its dataclass), top level first."""
    from pseudolabel.config.schema import Config

    nested = [(f.name, type(f.default_factory())) for f in dataclasses.fields(Config)
              if f.default_factory is not dataclasses.MISSING]  # fmt: skip
    return [("", Config), *nested]


def config_markdown() -> str:
    """Every key of every section: its type, default and the comment beside it in the code."""
    comments = field_comments()
    parts = []
    for key, cls in config_sections():
        inst = cls()
        title = "Top level" if not key else f"`{key}:`"
        doc = " ".join((cls.__doc__ or "").split())
        rows = ["| key | type | default | what it does |", "|---|---|---|---|"]
        for f in dataclasses.fields(cls):
            value = getattr(inst, f.name)
            kind = "section" if dataclasses.is_dataclass(value) else str(f.type).replace(" | ", " or ")
            rows.append(f"| `{f.name}` | `{_cell(kind)}` | `{_cell(_yaml(value))}` | "
                        f"{_cell(comments.get(cls.__name__, {}).get(f.name, ''))} |")  # fmt: skip
        parts.append(f"## {title}\n\n{doc}\n\n" + "\n".join(rows))
    return "\n\n".join(parts) + "\n"


# ----------------------------------------------------------------------------- the command line


def subcommands(parser: argparse.ArgumentParser, prefix: str = "pseudolabel"
                ) -> list[tuple[str, argparse.ArgumentParser, str]]:
    """(full command, parser, its one-line help) of every subcommand, nested ones (``weights fetch``) included."""
    out = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {ca.dest: ca.help for ca in action._choices_actions}
            for name, sub in action.choices.items():
                out.append((f"{prefix} {name}", sub, helps.get(name) or ""))
                out += subcommands(sub, f"{prefix} {name}")
    return out


def options(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """The arguments a user types: positionals and options, without help and subcommand groups."""
    return [a for a in parser._actions if not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction))
            and a.help != argparse.SUPPRESS]  # fmt: skip


def cli_markdown() -> str:
    """Every subcommand: its usage line and a table of its arguments (name, default, help)."""
    from pseudolabel.cli.main import build_parser

    parser = build_parser()
    parts = [f"```\n{parser.format_usage().strip()}\n```"]
    for command, sub, about in subcommands(parser):
        rows = ["| argument | default | what it does |", "|---|---|---|"]
        for a in options(sub):
            name = ", ".join(a.option_strings) or a.dest
            if a.choices and not isinstance(a.choices, dict):
                name += " {" + ",".join(map(str, a.choices)) + "}"
            default = "" if a.default in (None, False, argparse.SUPPRESS) else f"`{a.default}`"
            rows.append(f"| `{_cell(name)}` | {_cell(default)} | {_cell((a.help or '').replace('%%', '%'))} |")
        usage = " ".join(sub.format_usage().split())
        parts.append(f"## `{command}`\n\n{_cell(about).capitalize()}.\n\n```\n{usage}\n```\n\n" + "\n".join(rows))
    return "\n\n".join(parts) + "\n"
