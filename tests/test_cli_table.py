"""docs/technician.md's CLI table names every command the CLI has, and only those: a command added,
renamed or removed without the table fails here."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from clockterm_host.cli import build_parser

TABLE = Path(__file__).resolve().parents[1] / "docs" / "technician.md"


def _commands(p: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> set[tuple[str, ...]]:
    subs = [a for a in p._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        return {path}
    return {c for name, sp in subs[0].choices.items() for c in _commands(sp, (*path, name))}


def _documented() -> set[tuple[str, ...]]:
    # The first cell of each row: `clockterm a b ...` then `/`-separated alternatives (`x` / `y`) for
    # its last word
    text = TABLE.read_text().split("## The CLI", 1)[1]
    out = set()
    for cell in re.findall(r"^\| (`clockterm [^|]*?(?:\\\|[^|]*?)*) \|", text, re.M):
        pieces = re.findall(r"`([^`]*)`", cell)
        words = [w for w in pieces[0].split() if re.fullmatch(r"[a-z][a-z-]*", w)][1:]
        out.add(tuple(words))
        for alt in pieces[1:]:
            if re.fullmatch(r"[a-z][a-z-]*", alt):
                out.add((*words[:-1], alt))
    return out


def test_the_cli_table_names_every_command_and_no_other() -> None:
    cli = _commands(build_parser())
    # a row names a command by its words up to the first option or placeholder
    doc = _documented()
    missing = {c for c in cli if not any(d[:len(c)] == c for d in doc)}
    unknown = {d for d in doc if not any(d[:len(c)] == c for c in cli)}
    assert not missing, f"commands missing from docs/technician.md's CLI table: {sorted(missing)}"
    assert not unknown, f"rows in docs/technician.md's CLI table that the CLI lacks: {sorted(unknown)}"
