"""Parity by default: a CLIPN checkpoint through the CLI with default options scores as the reference does."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from reference_checkpoint import _reference_layout_checkpoint
from reference_infer import reference_captions, reference_scores

from oodfilter.cli.main import cli
from oodfilter.text.templates import TEMPLATE_SETS, resolve_template_choice, templates_digest

# open_clip's tokens for the reference's first caption of "tench": the quotes are tokens (262 is "'", 5938 is ".'").
FIRST_CAPTION_TOKENS = [49406, 262, 320, 2103, 1125, 539, 320, 1149, 634, 5938, 49407]


def test_clipn_set_makes_the_reference_captions():
    names = ["tench", "great white shark"]
    ours = [[template.format(name) for name in names] for template in TEMPLATE_SETS["clipn"]]
    assert ours == reference_captions(names)
    assert ours[0][0] == "'a bad photo of a tench.'" and ours[34][0] == "'a photo of a tench.',"
    assert resolve_template_choice("auto", clipn_model=True) == "clipn"


def test_clean_variant_keeps_the_old_captions_under_its_own_name():
    assert len(TEMPLATE_SETS["clipn-clean"]) == len(TEMPLATE_SETS["clipn"]) == 128
    assert TEMPLATE_SETS["clipn-clean"][0] == "a bad photo of a {}."
    assert [t.strip("',") for t in TEMPLATE_SETS["clipn"]] == [t.strip("'") for t in TEMPLATE_SETS["clipn-clean"]]
    assert templates_digest(TEMPLATE_SETS["clipn"]) != templates_digest(TEMPLATE_SETS["clipn-clean"])


def test_first_reference_caption_is_tokenized_with_its_quotes(tiny_model):
    caption = TEMPLATE_SETS["clipn"][0].format("tench")
    tokens = tiny_model.tokenize([caption])[0].tolist()
    assert tokens[: len(FIRST_CAPTION_TOKENS)] == FIRST_CAPTION_TOKENS
    assert set(tokens[len(FIRST_CAPTION_TOKENS):]) == {0}


def _scan(runner, args):
    result = runner.invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return {row["path"]: row for row in map(json.loads, open(args[args.index("--out") + 1]))}


@pytest.mark.slow
def test_default_cli_scan_gives_the_reference_scores(tiny_model, real_images, shared_data, tmp_path, monkeypatch):
    monkeypatch.setenv("OODFILTER_CACHE_DIR", str(tmp_path / "cache"))
    classes = (shared_data / "imagenet-sample" / "classes.txt").read_text().splitlines()[:10]
    (tmp_path / "classes.txt").write_text("\n".join(classes) + "\n")
    images = tmp_path / "images"
    images.mkdir()
    for path in real_images:
        (images / path.name).write_bytes(path.read_bytes())
    checkpoint = _reference_layout_checkpoint(tiny_model, tmp_path / "epoch_10.pt")
    runner = CliRunner()
    converted = runner.invoke(cli, ["convert-clipn", str(checkpoint), str(tmp_path / "bundle"),
                                    "--arch", "test-tiny"], catch_exceptions=False)
    assert converted.exit_code == 0, converted.output
    base = ["scan", str(images), "--classes", str(tmp_path / "classes.txt"), "--model", str(tmp_path / "bundle")]
    atd = _scan(runner, [*base, "--out", str(tmp_path / "atd.jsonl")])
    ctw = _scan(runner, [*base, "--method", "ctw", "--out", str(tmp_path / "ctw.jsonl")])

    expected = reference_scores(checkpoint, "test-tiny", classes, sorted(images.iterdir()))
    assert len(expected) == len(atd) == len(ctw) == len(real_images)
    atd_diff = max(abs(atd[path]["ood_score"] - (1.0 - ref["atd"])) for path, ref in expected.items())
    ctw_diff = max(abs(ctw[path]["ood_score"] - (1.0 - ref["ctw"])) for path, ref in expected.items())
    assert atd_diff < 1e-5 and ctw_diff < 1e-5, (atd_diff, ctw_diff)
    assert all(atd[path]["top_class"] == classes[ref["top"]] for path, ref in expected.items())
    meta = json.loads((tmp_path / "atd.jsonl.meta.json").read_text())
    assert meta["templates"] == "clipn" and meta["templates_sha256"] == templates_digest(TEMPLATE_SETS["clipn"])
