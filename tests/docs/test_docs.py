"""The README and the docs pages run as written, so they cannot drift from the code (issue 30, item 5).

Each page's ```bash and ```python blocks run in order in one fresh folder, offline, with a private cache
and journal key; a page other than the README starts in a folder where the README's first Python block
(the quick start's pictures and class list) has run. Blocks marked ``<!-- not-run: REASON -->`` (a
download, a GPU, a cluster, an install) are checked instead: each ``oodfilter`` subcommand and option
exists, each script and pip extra exists, each Python name imported from oodfilter exists. The site builds
with ``mkdocs build --strict``, and ``.ci/run`` installs and tests exactly as CONTRIBUTING.md says.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from doc_blocks import RUNNABLE, Block, check_python, check_shell, missing_output, read_blocks

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
CONTRIBUTING = REPO / "CONTRIBUTING.md"
DOCS = REPO / "docs"
PAGES = [README, CONTRIBUTING, *sorted(DOCS.glob("*.md"))]
KNOWN_LANGS = {*RUNNABLE, "text", "yaml", "json", "toml", ""}
BLOCK_TIMEOUT = 600


def _page_id(page: Path) -> str:
    return str(page.relative_to(REPO))


def _runnable(page: Path) -> list[Block]:
    return [b for b in read_blocks(page) if b.lang in RUNNABLE and b.mark != "not-run"]


# --- the README is a quick start -------------------------------------------------------------------

def test_readme_is_a_short_quick_start_with_the_zero_download_run_near_the_top():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines; the quick start must stay within 200"
    first_tiny = next(number for number, line in enumerate(lines, 1) if "test-tiny" in line)
    assert first_tiny <= 40, f"test-tiny first appears on README line {first_tiny}"
    installs = [b for b in read_blocks(README) if "pip install" in b.code]
    assert installs and all(re.fullmatch(r"pip install \.\n", b.code) for b in installs), \
        "the README installs for users (pip install .), without the dev or bench extras"


def test_readme_manifests_are_read_by_the_names_they_were_written_under():
    from oodfilter.scan import ScanConfig

    default = ScanConfig().out
    assert f"`{default}`" in README.read_text(encoding="utf-8"), "the README names the scan's default manifest"
    written: set[str] = set()
    for block in _runnable(README):
        for line in block.code.splitlines():
            for read in re.findall(r"oodfilter (?:report|apply|undo) (\S+)", line):
                assert read in written or read.removesuffix(".journal.jsonl") in written, \
                    f"{block.where}: reads {read}, which no earlier command wrote"
            if re.match(r"oodfilter (scan|apply) ", line) and "--dry-run" not in line:
                default_out = {default} if line.startswith("oodfilter scan") else set()
                outs = set(re.findall(r"--out (\S+)", line)) or default_out
                assert "--overwrite" in line or not outs & written, \
                    f"{block.where}: writes {outs & written} again, which stops without --overwrite"
                written |= outs


def test_every_relative_link_of_the_readme_and_contributing_resolves():
    for page in (README, CONTRIBUTING):
        text = page.read_text(encoding="utf-8")
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
            if "://" in target:
                continue
            assert (page.parent / target).exists(), f"{page.name} links to {target}, which does not exist"


# --- marks and commands that cannot run ----------------------------------------------------------

@pytest.mark.parametrize("page", PAGES, ids=_page_id)
def test_blocks_are_known_kinds_and_marks_sit_on_the_right_blocks(page):
    for block in read_blocks(page):
        assert block.lang in KNOWN_LANGS, f"{block.where}: unknown block language {block.lang!r}"
        if block.mark == "not-run":
            assert block.lang in RUNNABLE, f"{block.where}: not-run marks a {block.lang!r} block, which never runs"
            assert block.reason, f"{block.where}: a not-run mark must say why"
        if block.mark == "output":
            assert block.lang == "text", f"{block.where}: an output mark goes before a ```text block"


@pytest.mark.parametrize("page", PAGES, ids=_page_id)
def test_blocks_that_cannot_run_still_parse(page):
    problems = []
    for block in read_blocks(page):
        if block.mark != "not-run":
            continue
        problems += check_python(block) if block.lang == "python" else check_shell(block, REPO)
    assert not problems, "\n".join(problems)


def test_the_parse_check_catches_a_wrong_option_a_wrong_choice_and_a_missing_name(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("<!-- not-run: x -->\n```bash\noodfilter scan d --classes c.txt --no-such-option\n```\n"
                    "<!-- not-run: x -->\n```bash\noodfilter scan d \\\n  --action shred --dest x\n```\n"
                    "<!-- not-run: x -->\n```bash\noodfilter sacn d\n```\n"
                    "<!-- not-run: x -->\n```bash\npip install '.[no-such-extra]'\n```\n"
                    "<!-- not-run: x -->\n```python\nfrom oodfilter.pipeline import NoSuchThing\n```\n"
                    "<!-- not-run: x -->\n```bash\noodfilter scan d --classes c.txt -q --action move # fine\n```\n")
    blocks = read_blocks(page)
    found = [check_python(b) if b.lang == "python" else check_shell(b, REPO) for b in blocks]
    assert "no option --no-such-option" in found[0][0]
    assert "takes" in found[1][0] and "shred" in found[1][0]
    assert "no command 'sacn'" in found[2][0]
    assert "no extra 'no-such-extra'" in found[3][0]
    assert "NoSuchThing" in found[4][0]
    assert found[5] == []


# --- blocks that run --------------------------------------------------------------------------------

def _environment(root: Path) -> dict[str, str]:
    """Offline, private cache and journal key, and `oodfilter`/`python` meaning this checkout."""
    bin_dir = root / "bin"
    bin_dir.mkdir()
    for name, command in (("oodfilter", f'"{sys.executable}" -m oodfilter.cli'), ("python", f'"{sys.executable}"'),
                          ("python3", f'"{sys.executable}"')):
        shim = bin_dir / name
        shim.write_text(f'#!/bin/sh\nexec {command} "$@"\n')
        shim.chmod(0o755)
    env = {key: value for key, value in os.environ.items() if not key.startswith(("OODFILTER_", "PYTEST"))}
    env.update(PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}",
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")])),
               HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1", COLUMNS="100",
               HF_HOME=str(root / "huggingface"),
               OODFILTER_CACHE_DIR=str(root / "cache"), OODFILTER_STATE_DIR=str(root / "state"))
    return env


def _run(block: Block, work: Path, env: dict[str, str]) -> str:
    command = [sys.executable, "-"] if block.lang == "python" else ["bash", "-euo", "pipefail", "-s"]
    result = subprocess.run(command, input=block.code, cwd=work, env=env, capture_output=True, text=True,
                            timeout=BLOCK_TIMEOUT)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{block.where} failed (exit {result.returncode}):\n{block.code}\n{output[-4000:]}"
    return output


def _pages_with_runnable_blocks() -> list[Path]:
    return [page for page in PAGES if _runnable(page)]


@pytest.mark.slow
@pytest.mark.parametrize("page", _pages_with_runnable_blocks(), ids=_page_id)
def test_page_runs_top_to_bottom_as_written(page, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    env = _environment(tmp_path)
    blocks = read_blocks(page)
    if page != README:
        _run(_runnable(README)[0], work, env)  # the quick start's pictures and class list
    output = None
    for block in blocks:
        if block.mark == "output":
            assert output is not None, f"{block.where}: an output block follows no block that ran"
            line = missing_output(block.code, output)
            assert line is None, f"{block.where}: the page shows {line!r}, which the command does not print:\n{output}"
        elif block.lang in RUNNABLE and block.mark != "not-run":
            output = _run(block, work, env)


def test_shown_output_is_compared_cell_by_cell():
    real = "┌──┬──┐\n│ inputs   │ 16  │\n│ throughput │ 9.1 files/s │\n└──┘\n"
    assert missing_output("│ inputs │ 16 │\n│ throughput │ 15.5 files/s │", real) is None
    assert missing_output("│ inputs │ 17 │", real) == "│ inputs │ 17 │"
    assert missing_output("│ throughput │ 1 files/s │\n│ inputs │ 16 │", real) == "│ inputs │ 16 │"  # order


# --- the site ---------------------------------------------------------------------------------------

@pytest.mark.slow
def test_the_docs_site_builds_with_warnings_as_errors(tmp_path):
    pytest.importorskip("mkdocs", reason="the docs extra is not installed (pip install '.[docs]')")
    pytest.importorskip("mkdocstrings", reason="the docs extra is not installed (pip install '.[docs]')")
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                            cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    assert (tmp_path / "site" / "api" / "index.html").is_file()


def test_every_docs_page_is_in_the_site_navigation():
    import yaml

    config = yaml.safe_load((REPO / "mkdocs.yml").read_text(encoding="utf-8"))

    def pages(nav):
        for item in nav:
            value = next(iter(item.values())) if isinstance(item, dict) else item
            yield from pages(value) if isinstance(value, list) else [value]

    assert sorted(pages(config["nav"])) == sorted(p.name for p in DOCS.glob("*.md"))


# --- CI follows CONTRIBUTING.md ------------------------------------------------------------------

def _ci_lines() -> list[str]:
    return [" ".join(line.split()) for line in (REPO / ".ci" / "run").read_text().splitlines()]


def test_ci_installs_and_tests_exactly_as_contributing_says():
    documented = [b for b in read_blocks(CONTRIBUTING) if b.reason and "same as .ci/run" in b.reason]
    assert documented, "CONTRIBUTING.md marks its install and test blocks '<!-- not-run: same as .ci/run ... -->'"
    commands = [" ".join(line.split()) for b in documented for line in b.code.splitlines()
                if line.strip() and not line.lstrip().startswith("#")]
    ci = _ci_lines()
    for command in commands:
        assert command in ci, f".ci/run does not run {command!r}, which CONTRIBUTING.md gives"
    for line in ci:
        if re.match(r"python -m (pip install|pytest)", line) and "--upgrade pip" not in line:
            assert line in commands, f".ci/run runs {line!r}, which CONTRIBUTING.md does not give"
