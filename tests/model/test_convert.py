"""The converter for the reference CLIPN release (docs/method.md §4)."""

from __future__ import annotations

import pickle

import pytest
import torch
from click.testing import CliRunner
from reference_checkpoint import _reference_layout_checkpoint

import oodfilter
from oodfilter.cli.main import cli
from oodfilter.errors import CheckpointError


def _direct_no_embeddings(model, tokens):
    """No-embeddings computed by hand from the reference formula (token + position + mean prompt)."""
    no = model.no_tower
    x = no.token_embedding(tokens) + no.positional_embedding + no.prompts.mean(dim=0)
    x = no.transformer(x, attn_mask=no.attn_mask)
    x = no.ln_final(x)
    x = x[torch.arange(x.shape[0]), tokens.argmax(dim=-1)] @ no.text_projection
    return torch.nn.functional.normalize(x, dim=-1)


def test_converted_model_gives_the_same_no_embeddings(tiny_model, tmp_path):
    checkpoint = _reference_layout_checkpoint(tiny_model, tmp_path / "clipn.pt")
    bundle = oodfilter.convert_reference_checkpoint(checkpoint, tmp_path / "bundle", architecture="test-tiny")
    converted = oodfilter.load_model(bundle, device="cpu")
    tokens = converted.tokenize(["a photo of a tench", "a photo of a hen", "no image at all"])
    with torch.no_grad():
        expected = _direct_no_embeddings(tiny_model, tokens)
        torch.testing.assert_close(converted.encode_text_no(tokens), expected, rtol=0, atol=1e-6)
        torch.testing.assert_close(converted.encode_text(tokens), tiny_model.encode_text(tokens), rtol=0, atol=0)
    assert converted.no_branch_trained
    assert converted.source.details["origin"]["kind"] == "reference-checkpoint"
    assert converted.source.details["origin"]["details"]["epoch"] == 10


def test_checkpoint_file_loads_directly(tiny_model, tmp_path):
    checkpoint = _reference_layout_checkpoint(tiny_model, tmp_path / "clipn.pt")
    model = oodfilter.load_model(checkpoint, "test-tiny", device="cpu")
    assert model.text_fingerprint("no") == tiny_model.text_fingerprint("no")


def test_missing_no_tower_key_is_named(tiny_model, tmp_path):
    checkpoint = _reference_layout_checkpoint(tiny_model, tmp_path / "clipn.pt", drop=["module.ln_final_no.bias"])
    with pytest.raises(CheckpointError, match=r"missing keys \(1\): ln_final.bias"):
        oodfilter.convert_reference_checkpoint(checkpoint, tmp_path / "bundle", architecture="test-tiny")
    assert not (tmp_path / "bundle").exists()


def test_unexpected_key_is_named(tiny_model, tmp_path):
    extra = {"module.head.weight": torch.ones(2)}
    checkpoint = _reference_layout_checkpoint(tiny_model, tmp_path / "clipn.pt", extra=extra)
    with pytest.raises(CheckpointError, match=r"unexpected keys \(1\): head.weight"):
        oodfilter.load_model(checkpoint, "test-tiny", device="cpu")


def test_wrong_architecture_reports_shape_mismatches(tiny_model, tmp_path):
    checkpoint = _reference_layout_checkpoint(tiny_model, tmp_path / "clipn.pt")
    with pytest.raises(CheckpointError, match="shape mismatches"):
        oodfilter.convert_reference_checkpoint(checkpoint, tmp_path / "bundle", architecture="ViT-B-32")


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
    bad = tmp_path / "clipn.pt"
    bad.write_bytes(b"this is not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        oodfilter.convert_reference_checkpoint(bad, tmp_path / "bundle")


def test_truncated_checkpoint_is_a_clear_error(tiny_model, tmp_path):
    good = _reference_layout_checkpoint(tiny_model, tmp_path / "clipn.pt")
    data = good.read_bytes()
    good.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        oodfilter.convert_reference_checkpoint(good, tmp_path / "bundle", architecture="test-tiny")


class _Payload:
    """An arbitrary object: a safe (weights_only) load must refuse to unpickle it."""


def test_pickled_objects_are_refused(tmp_path):
    evil = tmp_path / "clipn.pt"
    with open(evil, "wb") as handle:
        pickle.dump({"state_dict": _Payload()}, handle)
    with pytest.raises(CheckpointError, match="weights_only=True"):
        oodfilter.convert_reference_checkpoint(evil, tmp_path / "bundle")


def test_checkpoint_without_prompts_is_not_clipn(tiny_model, tmp_path):
    checkpoint = _reference_layout_checkpoint(tiny_model, tmp_path / "clipn.pt", drop=["module.prompt_no"])
    with pytest.raises(CheckpointError, match="not a CLIPN checkpoint"):
        oodfilter.convert_reference_checkpoint(checkpoint, tmp_path / "bundle", architecture="test-tiny")


def test_cli_converts_and_reports_errors(tiny_model, tmp_path):
    checkpoint = _reference_layout_checkpoint(tiny_model, tmp_path / "clipn.pt")
    runner = CliRunner()
    result = runner.invoke(cli, ["convert-clipn", str(checkpoint), str(tmp_path / "b"), "--arch", "test-tiny"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "b" / "oodfilter.json").is_file()
    result = runner.invoke(cli, ["convert-clipn", str(checkpoint), str(tmp_path / "b"), "--arch", "test-tiny"])
    assert result.exit_code != 0
    assert isinstance(result.exception, oodfilter.InputError)
