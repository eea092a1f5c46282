"""PLP: the probe learns its pseudo-labels, separates ID from OOD, and is found after `oodfilter fit plp`."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import oodfilter
from oodfilter.evaluate.metrics import auroc
from oodfilter_plp import LinearProbe, fit_probe, probe_cache_path


def _rows(scorer, paths):
    """Every row of ``paths``, in order (score_files yields them batch by batch)."""
    return [row for rows in oodfilter.score_files(scorer, paths) for row in rows]



def _clusters(dim=32, classes=4, per_class=30, seed=0):
    g = torch.Generator().manual_seed(seed)
    basis = torch.linalg.qr(torch.randn(dim, dim, generator=g)).Q.T
    centres = basis[:classes]
    labels = torch.arange(classes).repeat(per_class)
    features = F.normalize(centres[labels] + 0.1 * torch.randn(len(labels), dim, generator=g), dim=-1)
    ood = F.normalize(torch.randn(per_class, dim - classes, generator=g) @ basis[classes:], dim=-1)
    return features, labels, ood


def test_probe_reaches_the_pseudo_label_accuracy():
    features, labels, _ = _clusters()
    noisy = labels.clone()
    noisy[::10] = (noisy[::10] + 1) % 4  # 10% wrong pseudo-labels: the probe should not memorise them
    weight, bias, accuracy = fit_probe(features, noisy, 4)
    assert accuracy == pytest.approx(0.9, abs=0.02)
    predictions = (features @ weight.T + bias).argmax(dim=1)
    assert (predictions == labels).float().mean() > 0.98


def test_probe_scores_separate_id_from_ood():
    features, labels, ood = _clusters()
    weight, bias, _ = fit_probe(features, labels, 4)
    probe = LinearProbe(weight, bias, "x", "y", 1.0)

    def msp_ood(f):
        return 1 - torch.softmax(probe.logits(f), dim=1).amax(dim=1)

    assert auroc(msp_ood(features).numpy(), msp_ood(ood).numpy()) > 0.95


def test_probe_round_trip(tmp_path):
    probe = LinearProbe(torch.randn(3, 8), torch.randn(3), "fp", "cls", 0.75)
    loaded = LinearProbe.load(probe.save(tmp_path / "p.safetensors"))
    assert torch.equal(loaded.weight, probe.weight) and loaded.pseudo_label_accuracy == 0.75
    (tmp_path / "bad.safetensors").write_bytes(b"nope")
    with pytest.raises(oodfilter.CheckpointError):
        LinearProbe.load(tmp_path / "bad.safetensors")


def test_fit_command_then_scorer_finds_the_probe(tmp_path):
    from oodfilter.cli.main import cli

    images = tmp_path / "id"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(12):
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(images / f"{i}.png")
    classes = tmp_path / "classes.txt"
    classes.write_text("cat\ndog\nbird\n")
    cache = tmp_path / "cache"
    result = CliRunner().invoke(cli, ["fit", "plp", "--images", str(images), "--classes", str(classes), "--model",
                                      "test-tiny", "--cache-dir", str(cache), "--epochs", "20"])
    assert result.exit_code == 0, result.output
    model = oodfilter.load_model("test-tiny", device="cpu")
    assert probe_cache_path(model.text_fingerprint("yes"), ["cat", "dog", "bird"], cache).is_file()
    index = oodfilter.build_class_vectors(model, ["cat", "dog", "bird"], cache_dir=cache)
    rows = _rows(oodfilter.Scorer(model, index, "plp", cache_dir=cache), sorted(images.iterdir())[:3])
    assert [r.status for r in rows] == ["ok"] * 3
    # `oodfilter scan --method plp` finds the same probe through the scan's cache folder
    from oodfilter.scan import ScanConfig, scan

    summary = scan(ScanConfig(inputs=[str(images)], classes=["cat", "dog", "bird"], method="plp", threshold=0.5,
                              out=str(tmp_path / "m.jsonl"), cache_dir=str(cache), workers=0), model=model)
    assert summary.ok == 12 and summary.ood + summary.in_distribution == 12
    other = oodfilter.build_class_vectors(model, ["cat", "dog"], cache_dir=cache)
    with pytest.raises(oodfilter.InputError, match="oodfilter fit plp"):
        oodfilter.Scorer(model, other, "plp", cache_dir=cache)


def test_no_probe_is_refused_before_any_text_is_encoded(tmp_path, monkeypatch):
    """`eval --methods neglabel,plp` and `scan --method plp` without a probe stop once the model is loaded,
    not after the class vectors (and NegLabel's vocabulary) are encoded."""
    from oodfilter.evaluate import runner
    from oodfilter.evaluate.config import EvalConfig
    from oodfilter.scan import ScanConfig, scan
    from oodfilter.scoring import factory

    def no_encoding(*args, **kwargs):
        raise AssertionError("text was encoded before PLP's probe was looked for")

    monkeypatch.setattr(runner, "build_class_vectors", no_encoding)
    monkeypatch.setattr(factory, "build_class_vectors", no_encoding)
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(images / f"{i}.png")
    cache = str(tmp_path / "cache")
    config = EvalConfig(id=str(images), ood=[str(images)], classes=["cat", "dog"], model="test-tiny",
                        methods=["neglabel", "plp"], cache_dir=cache)
    with pytest.raises(oodfilter.InputError, match="PLP has no probe"):
        runner.evaluate(config)
    with pytest.raises(oodfilter.InputError, match="PLP has no probe"):
        scan(ScanConfig(inputs=[str(images)], classes=["cat", "dog"], model="test-tiny", method="plp", threshold=0.5,
                        out=str(tmp_path / "m.jsonl"), cache_dir=cache, workers=0))
