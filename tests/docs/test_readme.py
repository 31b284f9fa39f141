"""The README cannot drift from the CLI: every `gen` command its examples and usage lines show
exists, with every option they give it; and it stays a read of ten minutes."""

from __future__ import annotations

import re
from pathlib import Path

import typer

from chargen.cli import app

README = Path(__file__).resolve().parents[2] / "README.md"


def code_blocks(text: str) -> list[list[str]]:
    """The README's code: fenced blocks and blocks indented by four spaces."""
    blocks, current, fenced = [], [], False
    for line in text.splitlines():
        if line.startswith("```"):
            if fenced:
                blocks.append(current)
            current, fenced = [], not fenced
        elif fenced:
            current.append(line)
        elif line.startswith("    ") or (current and not line.strip()):
            current.append(line)
        elif current:
            blocks.append(current)
            current = []
    return blocks + ([current] if current else [])


def usages(text: str) -> list[tuple[str, str]]:
    """(command, its whole line with continuations) for every `gen CMD ...` in the code."""
    found = []
    for block in code_blocks(text):
        for i, line in enumerate(block):
            for m in re.finditer(r"(?:^|&& |\| |\$ )gen ([a-z]+)(.*)", line.strip()):
                whole = m.group(2).split(" && ")[0].split("  #")[0]
                for more in block[i + 1:]:  # usage lines continue on deeper-indented lines
                    if not re.match(r"\s{6,}[\[(]", more):
                        break
                    whole += " " + more.strip()
                found.append((m.group(1), whole))
    return found


def options_of(command) -> set[str]:
    return {o for p in command.params for o in [*p.opts, *p.secondary_opts]}


def test_every_command_and_option_the_readme_shows_exists():
    commands = typer.main.get_command(app).commands
    shown = usages(README.read_text(encoding="utf-8"))
    assert {c for c, _ in shown} >= {"train", "export", "eval", "sample", "bench", "serve"}
    for command, line in shown:
        assert command in commands, f"gen {command} is not a command"
        known = options_of(commands[command])
        for option in re.findall(r"(?<![\w-])(--?[a-z][a-z0-9-]*)", line):
            assert option in known, f"gen {command}: the README shows {option}, which it does not take"


def test_the_readme_is_a_short_read():
    assert len(README.read_text(encoding="utf-8").splitlines()) <= 315
