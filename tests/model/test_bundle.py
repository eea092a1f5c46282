"""Bundles: bit-exact round trip, open_clip-loadable yes-model, strict and verified loading."""

from __future__ import annotations

import json

import open_clip
import pytest
import torch
from safetensors.torch import load_file, save_file

import oodfilter
from oodfilter.errors import CheckpointError, InputError
from oodfilter.model.bundle import NO_TOWER_FILE, YES_DIR
from oodfilter.model.fingerprint import file_sha256


def _resign(bundle, name):
    """Record ``name``'s current sha256 in the manifest, as a bundle written with that content would have it."""
    manifest = json.loads((bundle / "oodfilter.json").read_text())
    manifest["files"][name] = file_sha256(bundle / name)
    (bundle / "oodfilter.json").write_text(json.dumps(manifest))


def _assert_same_state(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert sa[key].dtype == sb[key].dtype, key
        assert torch.equal(sa[key], sb[key]), key


def test_round_trip_is_bit_exact(tiny_model, tmp_path):
    out = oodfilter.save_bundle(tiny_model, tmp_path / "bundle", training_config={"steps": 3})
    loaded = oodfilter.load_model(out, device="cpu")
    _assert_same_state(tiny_model, loaded)
    assert loaded.no_branch_trained is True
    assert loaded.training_config == {"steps": 3}
    assert loaded.source.kind == "bundle"
    assert loaded.text_fingerprint("no") == tiny_model.text_fingerprint("no")
    tokens = tiny_model.tokenize(["a photo of a goldfish"])
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded.encode_text_no(tokens), tiny_model.encode_text_no(tokens))
        assert torch.equal(loaded.encode_image(images), tiny_model.encode_image(images))
    manifest = json.loads((out / "oodfilter.json").read_text())
    assert set(manifest["files"]) == {f"{YES_DIR}/open_clip_config.json", f"{YES_DIR}/open_clip_model.safetensors",
                                      NO_TOWER_FILE}
    assert manifest["architecture"]["num_prompts"] == 16


def test_yes_model_loads_with_plain_open_clip(tiny_model, tmp_path):
    out = oodfilter.save_bundle(tiny_model, tmp_path / "bundle")
    clip = open_clip.create_model(f"local-dir:{out / YES_DIR}")
    assert all(torch.equal(v, tiny_model.clip.state_dict()[k]) for k, v in clip.state_dict().items())


def test_existing_folder_is_never_overwritten_by_default(tiny_model, tmp_path):
    target = tmp_path / "mine"
    target.mkdir()
    (target / "notes.txt").write_text("precious")
    with pytest.raises(InputError, match="not empty"):
        oodfilter.save_bundle(tiny_model, target)
    assert (target / "notes.txt").read_text() == "precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]  # no staging folder left behind


def test_overwrite_replaces_a_bundle(tiny_model, fresh_tiny_model, tmp_path):
    out = oodfilter.save_bundle(fresh_tiny_model, tmp_path / "bundle")
    oodfilter.save_bundle(tiny_model, out, overwrite=True)
    assert oodfilter.load_model(out, device="cpu").text_fingerprint("no") == tiny_model.text_fingerprint("no")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]


def test_modified_file_fails_verification(tiny_model, tmp_path):
    out = oodfilter.save_bundle(tiny_model, tmp_path / "bundle")
    state = load_file(str(out / NO_TOWER_FILE))
    state["prompts"] = state["prompts"] + 1
    save_file(state, str(out / NO_TOWER_FILE))
    with pytest.raises(CheckpointError, match="does not match the sha256"):
        oodfilter.load_model(out, device="cpu")


def test_missing_and_unexpected_keys_are_listed(tiny_model, tmp_path):
    out = oodfilter.save_bundle(tiny_model, tmp_path / "bundle")
    state = load_file(str(out / NO_TOWER_FILE))
    state.pop("ln_final.weight")
    state["extra.bias"] = torch.zeros(3)
    save_file(state, str(out / NO_TOWER_FILE))
    _resign(out, NO_TOWER_FILE)
    with pytest.raises(CheckpointError) as caught:
        oodfilter.load_bundle(out)
    message = str(caught.value)
    assert "missing keys (1): ln_final.weight" in message
    assert "unexpected keys (1): extra.bias" in message


def test_corrupt_weights_file_is_a_clear_error(tiny_model, tmp_path):
    out = oodfilter.save_bundle(tiny_model, tmp_path / "bundle")
    (out / NO_TOWER_FILE).write_bytes(b"\x00garbage")
    _resign(out, NO_TOWER_FILE)
    with pytest.raises(CheckpointError, match="unreadable or corrupt"):
        oodfilter.load_bundle(out)


def test_folder_without_manifest_is_not_a_bundle(tmp_path):
    with pytest.raises(CheckpointError, match=r"oodfilter\.json is missing"):
        oodfilter.load_bundle(tmp_path)


def test_newer_format_version_is_refused(tiny_model, tmp_path):
    out = oodfilter.save_bundle(tiny_model, tmp_path / "bundle")
    manifest = json.loads((out / "oodfilter.json").read_text())
    manifest["format_version"] = 99
    (out / "oodfilter.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match="format version 99"):
        oodfilter.load_model(out, device="cpu")
