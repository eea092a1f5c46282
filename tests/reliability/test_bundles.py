"""Bundles are always verified: strict manifest, mandatory hashes, finite weights, safe --overwrite."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
from click.testing import CliRunner

import oodfilter
from oodfilter.cli.main import cli, main
from oodfilter.errors import CheckpointError, InputError, ModelLoadError
from oodfilter.model.manifest import BUNDLE_MANIFEST, NO_TOWER_FILE, YES_WEIGHTS_FILE

_NO_PREFIXES = ("token_embedding", "positional_embedding", "transformer", "ln_final", "text_projection")


@pytest.fixture
def bundle(tiny_model, tmp_path):
    """A freshly written, valid bundle of the tiny model."""
    return oodfilter.save_bundle(tiny_model, tmp_path / "bundle")


def _edit_manifest(folder, change):
    manifest = json.loads((folder / BUNDLE_MANIFEST).read_text())
    change(manifest)
    (folder / BUNDLE_MANIFEST).write_text(json.dumps(manifest))


def _refused(folder, match):
    with pytest.raises(CheckpointError, match=match) as caught:
        oodfilter.load_model(folder, device="cpu")
    assert isinstance(caught.value, ModelLoadError)
    return str(caught.value)


def _reference_checkpoint(model, path):
    """``model`` saved the way the reference CLIPN release is (DataParallel keys, *_no names, prompt_no)."""
    state = {f"module.{key}": value.clone() for key, value in model.clip.state_dict().items()}
    for key, value in model.no_tower.state_dict().items():
        head, _, rest = key.partition(".")
        assert head == "prompts" or head in _NO_PREFIXES
        name = "prompt_no" if head == "prompts" else f"{head}_no" + (f".{rest}" if rest else "")
        state[f"module.{name}"] = value.clone()
    torch.save({"epoch": 3, "state_dict": state}, path)
    return path


def test_a_valid_bundle_still_loads(bundle, tiny_model):
    loaded = oodfilter.load_model(bundle, device="cpu")
    assert loaded.text_fingerprint("no") == tiny_model.text_fingerprint("no")
    assert loaded.preprocess is not None


# --- non-finite weights --------------------------------------------------------------------------


def test_nan_prompts_are_refused(tiny_model, tmp_path):
    broken = copy.deepcopy(tiny_model)
    with torch.no_grad():
        broken.no_tower.prompts[3, 0] = math.nan
    out = oodfilter.save_bundle(broken, tmp_path / "bundle")
    message = _refused(out, "no-prompts holds NaN or infinite values")
    assert NO_TOWER_FILE in message


def test_infinite_no_tower_weight_is_refused_by_name(tiny_model, tmp_path):
    broken = copy.deepcopy(tiny_model)
    with torch.no_grad():
        broken.no_tower.ln_final.weight[0] = math.inf
    out = oodfilter.save_bundle(broken, tmp_path / "bundle")
    _refused(out, "no-tower weight 'ln_final.weight' holds NaN or infinite values")


def test_infinite_logit_scale_is_refused(tiny_model, tmp_path):
    broken = copy.deepcopy(tiny_model)
    with torch.no_grad():
        broken.clip.logit_scale.fill_(math.inf)
    out = oodfilter.save_bundle(broken, tmp_path / "bundle")
    _refused(out, "logit scale is not finite")


# --- the file list -------------------------------------------------------------------------------


def test_empty_file_list_is_refused(bundle):
    _edit_manifest(bundle, lambda m: m.update(files={}))
    message = _refused(bundle, "lists no files")
    assert "re-create the bundle" in message


def test_file_list_lacking_an_existing_file_is_refused(bundle):
    _edit_manifest(bundle, lambda m: m["files"].pop(NO_TOWER_FILE))
    _refused(bundle, f"lacks the sha256 of {NO_TOWER_FILE}")


def test_listed_file_that_is_gone_is_refused(bundle):
    (bundle / YES_WEIGHTS_FILE).unlink()
    _refused(bundle, f"incomplete: {YES_WEIGHTS_FILE} is missing")


def test_wrong_hash_is_refused_naming_the_file(bundle):
    _edit_manifest(bundle, lambda m: m["files"].update({NO_TOWER_FILE: "0" * 64}))
    message = _refused(bundle, "does not match the sha256")
    assert str(bundle / NO_TOWER_FILE) in message


def test_malformed_hash_is_refused(bundle):
    _edit_manifest(bundle, lambda m: m["files"].update({NO_TOWER_FILE: "abc"}))
    _refused(bundle, f"'files.{NO_TOWER_FILE}' must be a sha256")


# --- keys ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "key"),
    [
        (lambda m: m.update(comment="hi"), "comment"),
        (lambda m: m["architecture"].update(depth=3), "architecture.depth"),
        (lambda m: m["source"].update(url="x"), "source.url"),
        (lambda m: m["files"].update({"notes.txt": "0" * 64}), "notes.txt"),
    ],
)
def test_unknown_key_is_refused_by_name(bundle, change, key):
    _edit_manifest(bundle, change)
    _refused(bundle, f"'{key}'")


@pytest.mark.parametrize(
    ("change", "key"),
    [
        (lambda m: m.pop("source"), "source"),
        (lambda m: m.pop("no_branch_trained"), "no_branch_trained"),
        (lambda m: m.pop("training_config"), "training_config"),
        (lambda m: m["architecture"].pop("num_prompts"), "architecture.num_prompts"),
    ],
)
def test_missing_key_is_refused_by_name(bundle, change, key):
    _edit_manifest(bundle, change)
    _refused(bundle, f"required key '{key}' is missing")


# --- typed and ranged fields ---------------------------------------------------------------------


@pytest.mark.parametrize("value", [0, -2, 1.5, "16", True, None])
def test_bad_num_prompts_is_refused(bundle, value):
    _edit_manifest(bundle, lambda m: m["architecture"].update(num_prompts=value))
    _refused(bundle, r"'architecture.num_prompts' must be an integer ≥ 1")


def test_nan_in_the_manifest_is_refused(bundle):
    text = (bundle / BUNDLE_MANIFEST).read_text().replace('"embed_dim": 32', '"embed_dim": NaN')
    assert "NaN" in text
    (bundle / BUNDLE_MANIFEST).write_text(text)
    _refused(bundle, "NaN is not a valid number")


def test_embed_dim_contradicting_the_weights_is_refused(bundle):
    _edit_manifest(bundle, lambda m: m["architecture"].update(embed_dim=64))
    _refused(bundle, r"'architecture.embed_dim' is 64 but the bundle's weights give 32")


@pytest.mark.parametrize(
    ("change", "key"),
    [
        (lambda m: m.update(no_branch_trained="yes"), "no_branch_trained"),
        (lambda m: m.update(training_config=[1]), "training_config"),
        (lambda m: m["source"].update(kind=3), "source.kind"),
        (lambda m: m["architecture"].update(model_cfg="ViT-B-16"), "architecture.model_cfg"),
    ],
)
def test_wrongly_typed_field_is_refused_by_name(bundle, change, key):
    _edit_manifest(bundle, change)
    _refused(bundle, f"'{key}' must be")


# --- convert-clipn --overwrite -------------------------------------------------------------------


def _convert(checkpoint, out, *extra):
    return CliRunner().invoke(cli, ["convert-clipn", str(checkpoint), str(out), "--arch", "test-tiny", *extra])


def test_overwrite_refuses_a_folder_that_is_not_a_bundle(tiny_model, tmp_path):
    checkpoint = _reference_checkpoint(tiny_model, tmp_path / "clipn.pt")
    documents = tmp_path / "documents"
    documents.mkdir()
    (documents / "thesis.txt").write_text("precious")
    result = _convert(checkpoint, documents, "--overwrite")
    assert isinstance(result.exception, InputError)
    assert "not an oodfilter bundle" in str(result.exception)
    assert sorted(p.name for p in documents.iterdir()) == ["thesis.txt"]
    assert (documents / "thesis.txt").read_text() == "precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clipn.pt", "documents"]  # nothing hidden beside it


def test_overwrite_refuses_a_file(tiny_model, tmp_path):
    checkpoint = _reference_checkpoint(tiny_model, tmp_path / "clipn.pt")
    target = tmp_path / "out"
    target.write_text("not a folder")
    result = _convert(checkpoint, target, "--overwrite")
    assert isinstance(result.exception, InputError)
    assert "is a file" in str(result.exception)
    assert target.read_text() == "not a folder"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clipn.pt", "out"]


def test_overwrite_refuses_a_bundle_folder_holding_other_files(tiny_model, bundle):
    checkpoint = _reference_checkpoint(tiny_model, bundle.parent / "clipn.pt")
    (bundle / "run.log").write_text("training log")
    result = _convert(checkpoint, bundle, "--overwrite")
    assert isinstance(result.exception, InputError)
    assert "run.log" in str(result.exception)
    assert (bundle / "run.log").read_text() == "training log"


def test_overwrite_replaces_a_bundle(tiny_model, fresh_tiny_model, tmp_path):
    out = oodfilter.save_bundle(fresh_tiny_model, tmp_path / "bundle")
    unrelated = tmp_path / ".bundle.old"  # the name the old code used for its backup, then deleted
    unrelated.mkdir()
    (unrelated / "keep.txt").write_text("mine")
    checkpoint = _reference_checkpoint(tiny_model, tmp_path / "clipn.pt")
    assert _convert(checkpoint, out).exit_code != 0  # without --overwrite an existing bundle stays
    result = _convert(checkpoint, out, "--overwrite")
    assert result.exit_code == 0, result.output
    replaced = oodfilter.load_model(out, device="cpu")
    assert replaced.text_fingerprint("no") == tiny_model.text_fingerprint("no")
    assert replaced.source.details["origin"]["kind"] == "reference-checkpoint"
    assert (unrelated / "keep.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".bundle.old", "bundle", "clipn.pt"]


def test_existing_bundle_without_overwrite_is_one_line_error(tiny_model, bundle, capsys):
    checkpoint = _reference_checkpoint(tiny_model, bundle.parent / "clipn.pt")
    before = (bundle / BUNDLE_MANIFEST).read_text()
    with pytest.raises(SystemExit) as exit_info:
        main(["convert-clipn", str(checkpoint), str(bundle), "--arch", "test-tiny"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("Error: ") and "--overwrite" in err
    assert "Traceback" not in err and len(err.splitlines()) == 1
    assert (bundle / BUNDLE_MANIFEST).read_text() == before
