"""A manifest knows its templates by their text: a resume with other captions is refused, whatever the name."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from oodfilter.cli.main import cli
from oodfilter.text.templates import TEMPLATE_SETS, templates_digest


@pytest.fixture
def job(tmp_path, awkward_images):
    (tmp_path / "classes.txt").write_text("tench\ngoldfish\nhen\n")
    return tmp_path, awkward_images[0]


def _scan(tmp_path, folder, *args):
    return CliRunner().invoke(cli, ["scan", str(folder), "--model", "test-tiny", "--classes",
                                    str(tmp_path / "classes.txt"), "--cache-dir", str(tmp_path / "cache"),
                                    "--workers", "0", "--out", str(tmp_path / "m.jsonl"), *args])


def test_manifest_records_the_digest_of_the_templates_text(job):
    tmp_path, folder = job
    assert _scan(tmp_path, folder).exit_code == 0
    meta = json.loads((tmp_path / "m.jsonl.meta.json").read_text())
    assert meta["templates"] == "clipn"  # test-tiny has a trained no-branch: auto -> the reference's set
    assert meta["templates_sha256"] == templates_digest(TEMPLATE_SETS["clipn"])


def test_resume_with_an_edited_template_list_is_refused(job):
    tmp_path, folder = job
    config = tmp_path / "scan.yaml"
    config.write_text("templates:\n  - 'a photo of a {}.'\n  - 'a drawing of a {}.'\n")
    assert _scan(tmp_path, folder, "--config", config).exit_code == 0
    config.write_text("templates:\n  - 'a photo of a {}.'\n  - 'a painting of a {}.'\n")
    result = _scan(tmp_path, folder, "--config", config, "--resume")
    assert result.exit_code == 1 and "different prompt templates" in str(result.exception)
    config.write_text("templates:\n  - 'a photo of a {}.'\n  - 'a drawing of a {}.'\n")
    assert _scan(tmp_path, folder, "--config", config, "--resume").exit_code == 0


def test_a_manifest_from_before_digests_means_the_quote_free_clipn_set(job):
    tmp_path, folder = job
    assert _scan(tmp_path, folder, "--templates", "clipn-clean").exit_code == 0
    meta_path = tmp_path / "m.jsonl.meta.json"
    meta = json.loads(meta_path.read_text())
    del meta["templates_sha256"]
    meta["templates"] = "clipn"  # what such a manifest recorded for the quote-stripped set
    meta_path.write_text(json.dumps(meta))
    result = _scan(tmp_path, folder, "--resume")  # default: the reference's captions, quotes included
    assert result.exit_code == 1 and "different prompt templates" in str(result.exception)
    assert _scan(tmp_path, folder, "--resume", "--templates", "clipn-clean").exit_code == 0
