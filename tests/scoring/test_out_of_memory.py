"""An out-of-memory error halves the batch and the scan goes on: no row lost, none duplicated."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from oodfilter.scan import ScanConfig, scan
from oodfilter.sinks.manifest import read_manifest


def test_an_injected_oom_halves_the_batch_and_the_manifest_is_complete(tmp_path, tiny_model, monkeypatch):
    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(3)
    for i in range(21):
        Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(folder / f"{i:02d}.png")
    (folder / "broken.png").write_bytes(b"no image")

    def config(out: str) -> ScanConfig:
        # fp32: the injected encoder replaces model.encode_image, which a bf16 or int8 CPU scan does not call
        # (it encodes with a reduced-precision copy, inside the same out-of-memory handling)
        return ScanConfig(inputs=[str(folder)], classes=["tench", "hen"], out=str(tmp_path / out), workers=0,
                          batch_size=8, cache_dir=str(tmp_path / "cache"), precision="fp32")

    scan(config("plain.jsonl"), model=tiny_model)
    real_encode = tiny_model.encode_image
    seen: list[int] = []

    def encode_with_a_small_memory(images: torch.Tensor) -> torch.Tensor:
        seen.append(images.shape[0])
        if images.shape[0] > 3:  # a device that fits at most 3 images
            raise torch.OutOfMemoryError("CUDA out of memory (injected)")
        return real_encode(images)

    monkeypatch.setattr(tiny_model, "encode_image", encode_with_a_small_memory)
    scan(config("oom.jsonl"), model=tiny_model)
    assert seen.count(8) == 1 and seen.count(4) == 1  # 8 → 4 → 2 once, and later batches start at 2
    assert set(seen) <= {8, 4, 2, 1}
    plain, oom = read_manifest(tmp_path / "plain.jsonl"), read_manifest(tmp_path / "oom.jsonl")
    assert [r.path for r in oom] == [r.path for r in plain] and len({r.path for r in oom}) == 22
    for a, b in zip(oom, plain, strict=True):
        assert a.status == b.status and a.is_ood == b.is_ood
        if a.ok:
            assert a.ood_score == pytest.approx(b.ood_score, abs=1e-5)


def test_an_oom_at_batch_size_one_is_raised(tiny_model, monkeypatch, tmp_path):
    import oodfilter

    scorer = oodfilter.build_scorer(oodfilter.ScorerSpec(model="test-tiny", classes=["hen"], batch_size=1,
                                                         precision="fp32", cache_dir=str(tmp_path)), model=tiny_model)

    def always_out_of_memory(images: torch.Tensor) -> torch.Tensor:
        raise torch.OutOfMemoryError("injected")

    monkeypatch.setattr(tiny_model, "encode_image", always_out_of_memory)
    with pytest.raises(torch.OutOfMemoryError):
        scorer.encode_images(torch.zeros(2, 3, 32, 32))


def test_an_oom_in_a_reduced_precision_copy_of_the_tower_halves_the_batch_too(tiny_model, monkeypatch, tmp_path):
    import oodfilter
    from oodfilter.scoring import scorer as scorer_module

    seen: list[int] = []
    real = scorer_module._reduced_copy(tiny_model, torch.device("cpu"), "bf16")
    assert real is not None

    def small_memory_copy(model, device, precision):
        def encode(images: torch.Tensor) -> torch.Tensor:
            seen.append(images.shape[0])
            if images.shape[0] > 2:
                raise torch.OutOfMemoryError("injected")
            return real(images)
        return encode

    monkeypatch.setattr(scorer_module, "_reduced_copy", small_memory_copy)
    scorer = oodfilter.build_scorer(oodfilter.ScorerSpec(model="test-tiny", classes=["hen", "tench"], batch_size=8,
                                                         precision="bf16", cache_dir=str(tmp_path)), model=tiny_model)
    images = torch.randn(7, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    features = scorer.encode_images(images)
    assert seen[:3] == [7, 4, 2] and set(seen[3:]) <= {2, 1} and scorer.batch_size == 2  # 7 images: one slice
    torch.testing.assert_close(features, torch.cat([real(images[i : i + 2]) for i in range(0, 7, 2)]))
