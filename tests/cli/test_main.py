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
