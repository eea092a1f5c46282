"""The first run: the default model, failing before any download, hub bundles, and other architectures."""

from __future__ import annotations

import json
import time

import huggingface_hub.constants
import open_clip
import pytest
from PIL import Image
from reference_checkpoint import _reference_layout_checkpoint

import oodfilter
from oodfilter.cli.main import main
from oodfilter.errors import CheckpointError, InputError
from oodfilter.model import factory
from oodfilter.model.catalogue import CATALOGUE_ENV
from oodfilter.model.factory import model_has_trained_no_branch
from oodfilter.scan import ScanConfig
from oodfilter.scoring.factory import check_method_fits_model

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def main_job(tmp_path, monkeypatch):
    """The README's main job laid out in a fresh folder, offline, with an empty cache."""
    (tmp_path / "images").mkdir()
    for index, colour in enumerate(("red", "blue")):
        Image.new("RGB", (40, 30), colour).save(tmp_path / "images" / f"{index}.png")
    (tmp_path / "classes.txt").write_text("tench\ngoldfish\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OODFILTER_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv(CATALOGUE_ENV, raising=False)
    return tmp_path


@pytest.fixture
def no_open_clip_build(monkeypatch):
    """Fail the test if any open_clip model is built (that is where weights would be downloaded)."""
    def refuse(*args, **kwargs):
        raise AssertionError(f"an open_clip model was built: {args}")

    monkeypatch.setattr(factory, "build_from_open_clip", refuse)


def test_default_model_is_the_reference_clipn():
    assert ScanConfig().model == "clipn-vitb16"


def test_main_job_offline_stops_at_the_download_with_the_manual_steps(main_job, capsys, no_open_clip_build):
    start = time.perf_counter()
    with pytest.raises(SystemExit) as exit_info:
        main(["scan", "./images", "--classes", "classes.txt"])
    elapsed = time.perf_counter() - start
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    bundle = main_job / "cache" / "models" / "clipn-vitb16-repeat3" / "bundle"
    assert err.startswith(f"Error: clipn-vitb16-repeat3 is not in the cache yet ({bundle}) and HF_HUB_OFFLINE is set")
    assert "Traceback" not in err and "oodfilter convert-clipn epoch_10.pt" in err
    assert not (main_job / "oodfilter-scan.jsonl").exists()
    assert elapsed < 10  # no network wait: imports and discovery only


@pytest.mark.parametrize("extra", [[], ["--method", "ctw"]])
def test_plain_open_clip_model_fails_before_any_weights(main_job, capsys, no_open_clip_build, extra):
    with pytest.raises(SystemExit) as exit_info:
        main(["scan", "./images", "--classes", "classes.txt", "--model", "ViT-B-16", *extra])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "model 'ViT-B-16' has no trained CLIPN no-branch" in err or "needs a trained CLIPN no-branch" in err
    assert "clipn-vitb16" in err


def test_trained_no_branch_is_known_from_the_name(tiny_model, fresh_tiny_model, tmp_path, no_open_clip_build):
    trained = oodfilter.save_bundle(tiny_model, tmp_path / "trained")
    untrained = oodfilter.save_bundle(fresh_tiny_model, tmp_path / "untrained")
    checkpoint = _reference_layout_checkpoint(tiny_model, tmp_path / "clipn.pt")
    assert model_has_trained_no_branch(trained) and not model_has_trained_no_branch(untrained)
    assert model_has_trained_no_branch(checkpoint) and model_has_trained_no_branch("test-tiny")
    assert model_has_trained_no_branch("clipn-vitb16") and model_has_trained_no_branch("clipn-vitb16-repeat1")
    assert not model_has_trained_no_branch("ViT-B-16") and not model_has_trained_no_branch("ViT-L-14")
    assert not model_has_trained_no_branch(f"local-dir:{tmp_path}")


def test_the_early_check_lets_fitting_methods_through(no_open_clip_build):
    check_method_fits_model(oodfilter.ScorerSpec(model="test-tiny"))  # default atd: test-tiny has a no-branch
    check_method_fits_model(oodfilter.ScorerSpec(model="ViT-B-16", method="mcm"))  # mcm needs none
    with pytest.raises(InputError, match="method 'atd' needs a trained CLIPN no-branch, and model 'ViT-B-16'"):
        check_method_fits_model(oodfilter.ScorerSpec(model="ViT-B-16", method="atd"))
    with pytest.raises(oodfilter.UnknownNameError, match="unknown scorers 'nonsense'"):
        check_method_fits_model(oodfilter.ScorerSpec(model="ViT-B-16", method="nonsense"))


def _fake_hub_repo(hub_cache, repo_id, bundle_source):
    """Lay out ``repo_id`` in a hub cache as huggingface_hub does: refs/main → snapshots/<commit>/files."""
    repo = hub_cache / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(COMMIT)
    snapshot = repo / "snapshots" / COMMIT
    snapshot.parent.mkdir(parents=True)
    if bundle_source is not None:
        oodfilter.save_bundle(bundle_source, snapshot)
    else:
        snapshot.mkdir()
    return snapshot


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """An offline model hub whose cache is a temporary folder."""
    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    return cache


def test_hub_bundle_loads_pinned_and_verified(hub_cache, tiny_model, no_open_clip_build):
    snapshot = _fake_hub_repo(hub_cache, "someone/clipn-bundle", tiny_model)
    assert model_has_trained_no_branch("hf-hub:someone/clipn-bundle")
    for name in ("hf-hub:someone/clipn-bundle", f"hf-hub:someone/clipn-bundle@{COMMIT}"):
        model = oodfilter.load_model(name, device="cpu")
        assert model.no_branch_trained and model.text_fingerprint("no") == tiny_model.text_fingerprint("no")
    weights = snapshot / "no_tower.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(CheckpointError, match=r"does not match the sha256 in oodfilter\.json"):
        oodfilter.load_model("hf-hub:someone/clipn-bundle", device="cpu")


def test_hub_repo_without_bundle_stays_open_clip(hub_cache):
    _fake_hub_repo(hub_cache, "someone/plain-clip", None)
    assert not model_has_trained_no_branch("hf-hub:someone/plain-clip")
    with pytest.raises(oodfilter.ModelLoadError, match="Only oodfilter bundles take an @REVISION"):
        oodfilter.load_model("hf-hub:someone/plain-clip@v1", device="cpu")


def test_convert_accepts_a_local_dir_architecture(tiny_model, tmp_path):
    arch = tmp_path / "arch"
    arch.mkdir()
    config = {"model_cfg": open_clip.get_model_config("test-tiny"), "preprocess_cfg": {}}
    (arch / "open_clip_config.json").write_text(json.dumps(config))
    checkpoint = _reference_layout_checkpoint(tiny_model, tmp_path / "clipn.pt")
    bundle = oodfilter.convert_reference_checkpoint(checkpoint, tmp_path / "bundle", architecture=f"local-dir:{arch}")
    model = oodfilter.load_model(bundle, device="cpu")
    assert model.text_fingerprint("no") == tiny_model.text_fingerprint("no")
