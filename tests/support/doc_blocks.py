"""Read the fenced code blocks of the README and the docs pages, and check commands that cannot run here.

A page's ```bash and ```python blocks run in order, as written (tests/docs/test_docs.py). Two HTML comments,
each on the line right before a block, change that:

- ``<!-- not-run: REASON -->``: the block needs what a test cannot have (the CLIPN weights download, a GPU,
  a cluster, a package install). Its commands are checked instead: every ``oodfilter`` subcommand and
  option exists (choices included), every script it names exists, every pip extra is in pyproject.toml;
  a Python block compiles and every ``oodfilter`` name it imports or uses exists.
- ``<!-- output -->`` before a ```text block: what the block before it prints. Each shown line must
  appear in the real output, in order, compared cell by cell (table borders and padding ignored, a
  throughput figure may differ).
"""

from __future__ import annotations

import ast
import importlib
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import click
import tomllib

RUNNABLE = ("bash", "python")
_FENCE = re.compile(r"^(?P<indent> *)(?P<fence>`{3,})(?P<lang>[\w+-]*)\s*$")
_MARK = re.compile(r"^\s*<!--\s*(?P<kind>not-run|output)\s*(?::\s*(?P<reason>.*?))?\s*-->\s*$")


@dataclass(frozen=True)
class Block:
    """One fenced code block of a markdown file."""

    file: Path
    line: int  # 1-based line of the opening fence
    lang: str
    code: str
    mark: str | None  # "not-run", "output" or None
    reason: str | None

    @property
    def where(self) -> str:
        """``file:line`` for messages."""
        return f"{self.file.name}:{self.line}"


def read_blocks(path: Path) -> list[Block]:
    """Return every fenced block of ``path`` with the mark on the line before it (if any)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    index = 0
    while index < len(lines):
        opening = _FENCE.match(lines[index])
        if not opening:
            index += 1
            continue
        indent, fence = len(opening["indent"]), opening["fence"]
        body: list[str] = []
        end = index + 1
        while end < len(lines) and lines[end].strip() != fence:
            body.append(lines[end][indent:] if lines[end][:indent].strip() == "" else lines[end])
            end += 1
        if end == len(lines):
            raise ValueError(f"{path.name}:{index + 1}: a code block is never closed")
        previous = lines[index - 1] if index > 0 else ""
        mark = _MARK.match(previous)
        blocks.append(Block(path, index + 1, opening["lang"], "\n".join(body) + "\n",
                            mark["kind"] if mark else None, mark["reason"] if mark else None))
        index = end + 1
    return blocks


# --- shown output against real output ---------------------------------------------------------------

_BORDERS = re.compile(r"[│┃┆┇┊┋|]")
_RULE = re.compile(r"^[\s─━┄┅┈┉═┌┐└┘├┤┬┴┼┏┓┗┛┡┩┢┪╇╈╀╁╂┣┫┳┻╋+\-=]*$")
_RATE = re.compile(r"\d+(\.\d+)? (files|images|rows)/s")


def _cells(line: str) -> tuple[str, ...] | None:
    """A line as its table cells (borders and padding dropped); None for a rule or an empty line."""
    if _RULE.match(line):
        return None
    return tuple(cell.strip() for cell in _BORDERS.split(_RATE.sub("N \\2/s", line)) if cell.strip())


def missing_output(shown: str, real: str) -> str | None:
    """Return the first shown line not found (in order) in the real output, or None when all are."""
    real_lines = [cells for cells in map(_cells, real.splitlines()) if cells]
    position = 0
    for line in shown.splitlines():
        cells = _cells(line)
        if not cells:
            continue
        while position < len(real_lines) and real_lines[position] != cells:
            position += 1
        if position == len(real_lines):
            return line
        position += 1
    return None


# --- commands that cannot run: check that they parse ----------------------------------------------

# Commands a page may show besides oodfilter, python scripts and pip; they are not checked further.
_PLAIN = {"cd", "mkdir", "cp", "ls", "export", "git", "cat", "rm"}


def logical_lines(code: str) -> list[list[str]]:
    """Split a shell block into commands (continuations joined, comments dropped) as shlex tokens."""
    text = code.replace("\\\n", " ")
    commands: list[list[str]] = []
    for line in text.splitlines():
        tokens = shlex.split(line, comments=True)
        current: list[str] = []
        for token in tokens:
            if token in ("&&", "||", ";", "|"):
                if current:
                    commands.append(current)
                current = []
            else:
                current.append(token)
        if current:
            commands.append(current)
    return commands


def check_shell(block: Block, repo: Path) -> list[str]:
    """Return what is wrong with the commands of a shell block that is not run (empty: all parse)."""
    problems = []
    for tokens in logical_lines(block.code):
        words = [t for t in tokens if not re.match(r"^[A-Z_][A-Z0-9_]*=", t)]  # VAR=value prefixes
        if not words:
            continue
        head = words[0]
        if head == "oodfilter":
            problems += check_oodfilter(words[1:], block)
        elif head in ("torchrun", "python", "python3") and "oodfilter.cli" in words:
            problems += check_oodfilter(words[words.index("oodfilter.cli") + 1:], block)
        elif head in ("python", "python3") and words[1:2] == ["-m"] and words[2:3] == ["pytest"]:
            continue
        elif head in ("python", "python3") and words[1:2] == ["-m"] and words[2:3] == ["pip"]:
            problems += check_pip(words[3:], block, repo)
        elif head in ("python", "python3") and len(words) > 1 and words[1].endswith(".py"):
            if not (repo / words[1]).is_file():
                problems.append(f"{block.where}: no script {words[1]}")
        elif head == "pip":
            problems += check_pip(words[1:], block, repo)
        elif head in ("mkdocs", "ruff", "mypy", "bash"):
            continue
        elif head not in _PLAIN:
            problems.append(f"{block.where}: a command the docs test does not know: {' '.join(words)}")
    return problems


def check_pip(args: list[str], block: Block, repo: Path) -> list[str]:
    """Check a ``pip install`` line: the local paths exist and every extra is declared."""
    if args[:1] != ["install"]:
        return [f"{block.where}: pip {' '.join(args)}: only 'pip install' is expected"]
    declared = tomllib.loads((repo / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    problems = []
    for arg in args[1:]:
        if arg.startswith("-"):
            continue
        target, _, extras = arg.partition("[")
        if target.startswith((".", "plugins/")):
            if not (repo / target).exists():
                problems.append(f"{block.where}: pip installs {target}, which is not in the repository")
            if target == "." and extras:
                problems += [f"{block.where}: no extra {name!r} in pyproject.toml"
                             for name in extras.rstrip("]").split(",") if name not in declared]
        elif target == "oodfilter" and extras:
            problems += [f"{block.where}: no extra {name!r} in pyproject.toml"
                         for name in extras.rstrip("]").split(",") if name not in declared]
    return problems


def check_oodfilter(args: list[str], block: Block) -> list[str]:
    """Check ``oodfilter ARGS``: the (sub)commands exist, and so does every option with its choice value."""
    from oodfilter.cli.main import cli

    command: click.Command = cli
    name = "oodfilter"
    problems: list[str] = []
    index = 0
    while index < len(args):
        problem, index = _check_options(command, name, args, index, block)
        if problem:
            return [problem]
        if not isinstance(command, click.Group) or index >= len(args):
            break
        sub = command.get_command(click.Context(command), args[index])
        if sub is None:
            return [f"{block.where}: {name} has no command {args[index]!r}"]
        command, name, index = sub, f"{name} {args[index]}", index + 1
    if isinstance(command, click.Group) and args:
        problems.append(f"{block.where}: '{name}' needs a subcommand")
    return problems


def _check_options(command: click.Command, name: str, args: list[str], index: int,
                   block: Block) -> tuple[str | None, int]:
    """Walk ``args`` from ``index`` through ``command``'s options; stop at a group's subcommand."""
    options: dict[str, click.Option] = {}
    for param in command.params:
        if isinstance(param, click.Option):
            for flag in (*param.opts, *param.secondary_opts):
                options[flag] = param
    help_names = command.context_settings.get("help_option_names") or ["-h", "--help"]
    while index < len(args):
        token = args[index]
        if token == "--":
            return None, len(args)
        if not token.startswith("-") or token == "-":
            if isinstance(command, click.Group):
                return None, index
            index += 1
            continue
        flag, has_value, value = token.partition("=")
        if flag in help_names or flag in ("-h", "--help"):
            index += 1
            continue
        option = options.get(flag)
        if option is None:
            return f"{block.where}: '{name}' has no option {flag}", index
        if option.is_flag or option.count:
            index += 1
            continue
        if not has_value:
            if index + 1 >= len(args):
                return f"{block.where}: '{name} {flag}' needs a value", index
            value = args[index + 1]
            index += 1
        if isinstance(option.type, click.Choice) and value not in option.type.choices:
            return f"{block.where}: '{name} {flag}' takes {'|'.join(map(str, option.type.choices))}, not {value}", index
        index += 1
    return None, index


def check_python(block: Block) -> list[str]:
    """Compile a Python block that is not run, and check every ``oodfilter`` name it imports or uses."""
    try:
        tree = ast.parse(block.code, filename=block.where)
    except SyntaxError as error:
        return [f"{block.where}: does not compile: {error}"]
    problems: list[str] = []
    modules: dict[str, str] = {}  # local alias -> oodfilter module
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "oodfilter":
                    problems += _importable(alias.name, None, block)
                    modules[alias.asname or "oodfilter"] = alias.name if alias.asname else "oodfilter"
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "oodfilter":
            for alias in node.names:
                problems += _importable(node.module, alias.name, block)
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in modules:
            problems += _importable(modules[node.value.id], node.attr, block)
    return problems


def _importable(module: str, attribute: str | None, block: Block) -> list[str]:
    try:
        imported = importlib.import_module(module)
    except ImportError as error:
        return [f"{block.where}: cannot import {module}: {error}"]
    if attribute is None or hasattr(imported, attribute):
        return []
    try:
        importlib.import_module(f"{module}.{attribute}")
    except ImportError:
        return [f"{block.where}: {module} has no {attribute}"]
    return []
