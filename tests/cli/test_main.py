"""The CLI layer: help without heavy imports, the plugin listing, and the error boundary."""

from __future__ import annotations

import subprocess
import sys

import pytest
from click.testing import CliRunner

from oodfilter.cli.main import cli, main


def test_help_does_not_import_torch():
    code = "import sys; from oodfilter.cli.main import cli; cli.main(['--help'], standalone_mode=False); " \
           "print('torch' in sys.modules, 'open_clip' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "convert-clipn" in out and out.strip().endswith("False False")


def test_plugins_lists_builtin_scorers():
    result = CliRunner().invoke(cli, ["plugins"])
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert any(line.strip().startswith("atd") and "needs no-branch" in line for line in lines)
    assert any(line.strip().startswith("knn") and "needs --reference" in line for line in lines)
    assert not any(line.strip().startswith("mcm") and "needs" in line for line in lines)
    assert any(line.strip().startswith("mcm") and "builtin" in line for line in lines)


def test_known_errors_print_one_line_and_exit_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["convert-clipn", str(tmp_path / "missing.pt"), str(tmp_path / "out")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.strip() == f"Error: checkpoint {tmp_path / 'missing.pt'} does not exist"


def test_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["convert-clipn"])
    assert exit_info.value.code == 2
    assert "Missing argument" in capsys.readouterr().err


@pytest.mark.parametrize(("command", "required", "optional"), [
    ("eval", ["--classes", "--id", "--ood"], ["--id-labels", "--methods"]),
    ("robustness", ["--classes", "--id", "--ood"], ["--methods", "--eps"]),
    ("finetune", ["--data", "--out"], ["--lr", "--steps"]),
])
def test_help_marks_the_options_that_must_be_given(command, required, optional):
    """--help showed no sign of which options a command cannot run without."""
    result = CliRunner().invoke(cli, [command, "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()

    starts = [i for i, line in enumerate(lines) if line.lstrip().startswith("-")]

    def entry(option):  # the option's line and its wrapped help lines, up to the next option
        start = next(i for i in starts if option in lines[i].strip().split("  ")[0].replace(",", "").split())
        end = next((i for i in starts if i > start), len(lines))
        return " ".join(lines[start:end])

    for option in required:
        assert "[required]" in entry(option), (option, result.output)
    for option in optional:
        assert "[required]" not in entry(option), (option, result.output)


def test_a_required_option_given_in_the_config_file_is_enough(tmp_path):
    """The [required] mark is help text only: click's own check would refuse an option set in --config."""
    config = tmp_path / "eval.yaml"
    config.write_text(f"classes: {tmp_path / 'missing.txt'}\n")
    result = CliRunner().invoke(cli, ["eval", "--config", str(config), "--id", str(tmp_path), "--ood", str(tmp_path)])
    assert result.exit_code != 0
    assert "Missing option" not in result.output and "missing.txt" in str(result.exception or result.output)


def _two_images(folder):
    import numpy as np
    from PIL import Image

    folder.mkdir()
    for i in range(2):
        pixels = np.random.default_rng(i).integers(0, 255, (32, 32, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{i}.png")
    return folder


@pytest.mark.slow
def test_quiet_before_the_command_silences_it_as_the_commands_own_quiet(tmp_path):
    """`oodfilter -q scan ...` was refused (no such option); it now means the command's -q, for eval too."""
    images = _two_images(tmp_path / "images")
    classes = tmp_path / "classes.txt"
    classes.write_text("cat\ndog\n")
    common = ["--model", "test-tiny", "--classes", str(classes), "--templates", "photo", "--workers", "0",
              "--cache-dir", str(tmp_path / "cache")]

    def run(*args):
        result = CliRunner().invoke(cli, list(args))
        assert result.exit_code == 0, result.output
        return result.output

    loud = run("scan", str(images), *common, "--out", str(tmp_path / "loud.jsonl"))
    assert "oodfilter scan" in loud and "manifest" in loud
    assert run("-q", "scan", str(images), *common, "--out", str(tmp_path / "quiet.jsonl")) == ""
    assert run("scan", "-q", str(images), *common, "--out", str(tmp_path / "own.jsonl")) == ""

    evaluation = [*common, "--id", str(images), "--ood", str(images), "--methods", "msp"]
    loud = run("eval", *evaluation, "--out", str(tmp_path / "loud.json"))
    quiet = run("-q", "eval", *evaluation, "--out", str(tmp_path / "quiet.json"))
    assert "encoding images 2/2" in loud and "encoding" not in quiet
    assert "ID vs " in quiet and "│ msp " in quiet  # the results are the command's output, not a summary: they stay
