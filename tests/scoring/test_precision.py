"""Precision: auto is fp32 on the CPU, bf16 and int8 encode with copies of the image tower, text follows the
same rules, and a scan records its precision and refuses to resume in another."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

import oodfilter
from oodfilter import device as device_module
from oodfilter.device import autocast_dtype, inference_precision
from oodfilter.errors import InputError
from oodfilter.scan import ScanConfig, scan
from oodfilter.sinks.manifest import read_manifest, sidecar

NAMES = ["tench", "goldfish", "hen", "ostrich"]
CPU = torch.device("cpu")


def _images(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("native", [True, False])
def test_auto_is_fp32_on_every_cpu_and_emulated_bf16_is_warned_about(monkeypatch, native):
    monkeypatch.setattr(device_module, "cpu_has_native_bf16", lambda: native)
    assert inference_precision(CPU, "auto") == "fp32"  # bf16 moved 1-3% of decisions on the world
    assert inference_precision(CPU, "fp32") == "fp32" and inference_precision(CPU, "int8") == "int8"
    device_module._warn_emulated_bf16.cache_clear()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert inference_precision(CPU, "bf16") == "bf16"
    assert len([w for w in caught if "emulated and slower" in str(w.message)]) == (0 if native else 1)
    assert autocast_dtype(CPU, "auto") is None  # training keeps fp32 on every CPU


def test_precisions_a_device_cannot_run_are_refused_with_the_fix():
    with pytest.raises(InputError, match="CPU only"):
        inference_precision(torch.device("cuda"), "int8")
    with pytest.raises(InputError, match="CUDA only"):
        inference_precision(CPU, "fp16")
    with pytest.raises(InputError, match="unknown precision"):
        inference_precision(CPU, "fp8")
    with pytest.raises(InputError, match="scoring only"):
        autocast_dtype(CPU, "int8")


def test_native_bf16_is_read_from_the_cpu_flags(tmp_path, monkeypatch):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse avx512f avx512_bf16 amx_tile\nbogomips\t: 1\n")
    monkeypatch.setattr(device_module.sys, "platform", "linux")
    assert {"avx512_bf16", "amx_tile"} <= device_module._cpuinfo_flags(info)
    assert device_module._cpuinfo_flags(tmp_path / "missing") == set()
    real = device_module._cpuinfo_flags()
    if real:  # on Linux: PyTorch's probe and the kernel's flags agree about this machine
        device_module.cpu_has_native_bf16.cache_clear()
        assert device_module.cpu_has_native_bf16() == bool(real & device_module.NATIVE_BF16_FLAGS)


def test_bf16_scores_stay_close_to_fp32_and_are_really_computed_in_bf16(tiny_model, cache_dir):
    images = _images(12)
    scores, features = {}, {}
    for precision in ("fp32", "bf16"):
        vectors = oodfilter.build_class_vectors(tiny_model, NAMES, cache_dir=cache_dir, precision=precision)
        scorer = oodfilter.Scorer(tiny_model, vectors, "atd", precision=precision)
        assert scorer.precision == precision
        features[precision] = scorer.encode_images(images)
        scores[precision] = scorer.score_features(features[precision]).ood_score
    assert features["bf16"].dtype == torch.float32
    assert {p.dtype for p in tiny_model.parameters()} == {torch.float32}  # bf16 weights live in a copy
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):  # what autocast on the model computes
        autocast = torch.nn.functional.normalize(tiny_model.encode_image(images).float(), dim=-1)
    assert torch.nn.functional.cosine_similarity(features["bf16"], autocast).min() > 0.9999
    assert not torch.equal(features["bf16"], features["fp32"])  # autocast ran
    assert torch.nn.functional.cosine_similarity(features["bf16"], features["fp32"]).min() > 0.99
    assert (scores["bf16"] - scores["fp32"]).abs().max() < 0.02
    folders = [p.name for p in (cache_dir / "text").iterdir()]  # bf16 text is cached apart from fp32 text
    assert len(folders) == 4 and sum(name.endswith("-bf16") for name in folders) == 2


def test_int8_quantises_a_copy_and_leaves_the_model_as_it_was(tiny_model, cache_dir):
    before = {name: p.detach().clone() for name, p in tiny_model.named_parameters()}
    linear_types = {type(m) for m in tiny_model.clip.visual.modules() if isinstance(m, torch.nn.Linear)}
    vectors = oodfilter.build_class_vectors(tiny_model, NAMES, cache_dir=cache_dir, precision="int8")
    int8 = oodfilter.Scorer(tiny_model, vectors, "mcm", precision="int8")
    fp32 = oodfilter.Scorer(tiny_model, vectors, "mcm", precision="fp32")
    images = _images(8, seed=1)
    quantised, full = int8.encode_images(images), fp32.encode_images(images)
    assert int8.precision == "int8" and not torch.equal(quantised, full)
    assert torch.nn.functional.cosine_similarity(quantised, full).min() > 0.95
    assert {type(m) for m in tiny_model.clip.visual.modules() if isinstance(m, torch.nn.Linear)} == linear_types
    assert all(torch.equal(before[name], p) for name, p in tiny_model.named_parameters())
    assert not any(p.name.endswith("-int8") for p in (cache_dir / "text").iterdir())  # text in fp32


def _folder(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return folder


def test_a_scan_records_its_precision_and_refuses_to_resume_in_another(tmp_path, tiny_model):
    folder = _folder(tmp_path)
    out = tmp_path / "m.jsonl"

    def config(precision: str, **extra) -> ScanConfig:
        return ScanConfig(inputs=[str(folder)], classes=NAMES, out=str(out), workers=0, precision=precision,
                          cache_dir=str(tmp_path / "cache"), **extra)

    scan(config("bf16"), model=tiny_model)
    meta = json.loads(sidecar(out, "meta.json").read_text())
    assert meta["precision"] == "bf16"
    manifest = out.read_bytes()
    with pytest.raises(InputError, match="different precision"):
        scan(config("fp32", resume=True), model=tiny_model)
    assert out.read_bytes() == manifest
    assert scan(config("bf16", resume=True), model=tiny_model).scanned == 0


def test_a_manifest_from_before_precisions_were_recorded_still_resumes(tmp_path, tiny_model):
    folder = _folder(tmp_path)
    out = tmp_path / "m.jsonl"
    config = ScanConfig(inputs=[str(folder)], classes=NAMES, out=str(out), workers=0, precision="fp32",
                        cache_dir=str(tmp_path / "cache"))
    scan(config, model=tiny_model)
    meta_file = sidecar(out, "meta.json")
    meta = json.loads(meta_file.read_text())
    del meta["precision"]
    meta_file.write_text(json.dumps(meta))
    (folder / "new.png").write_bytes((folder / "0.png").read_bytes())
    config.resume = True
    assert scan(config, model=tiny_model).scanned == 1
    assert len(read_manifest(out)) == 7


def test_a_legacy_manifest_resumes_only_in_the_precision_auto_gave_it(tmp_path, tiny_model):
    folder = _folder(tmp_path)
    out = tmp_path / "m.jsonl"
    config = ScanConfig(inputs=[str(folder)], classes=NAMES, out=str(out), workers=0,
                        cache_dir=str(tmp_path / "cache"))
    scan(config, model=tiny_model)
    meta_file = sidecar(out, "meta.json")
    meta = json.loads(meta_file.read_text())
    del meta["precision"]  # written before precisions were recorded: auto, fp32 on the CPU
    meta_file.write_text(json.dumps(meta))
    manifest = out.read_bytes()
    with pytest.raises(InputError, match=r"different precision \(fp32, this run int8: pass --precision fp32\)"):
        scan(ScanConfig(**{**config.__dict__, "resume": True, "precision": "int8"}), model=tiny_model)
    assert out.read_bytes() == manifest


def test_stored_features_and_calibrations_serve_only_their_precision(tmp_path, tiny_model):
    from oodfilter.scan.rescore import RescoreConfig, rescore
    from oodfilter.sinks.features import matching_features, read_header

    folder = _folder(tmp_path)
    out = tmp_path / "m.jsonl"
    scan(ScanConfig(inputs=[str(folder)], classes=NAMES, out=str(out), workers=0, precision="bf16", method="mcm",
                    save_features=True, cache_dir=str(tmp_path / "cache")), model=tiny_model)
    assert read_header(out).precision == "bf16"
    fingerprint = tiny_model.image_fingerprint()
    assert matching_features(out, fingerprint, "bf16") is not None
    assert matching_features(out, fingerprint, "fp32") is None  # eval then encodes the images in fp32
    # rescore builds its class vectors in the features' precision: it reproduces the bf16 scan
    classes = tmp_path / "classes.txt"
    classes.write_text("\n".join(NAMES) + "\n")
    rescored = tmp_path / "r.jsonl"
    rescore(RescoreConfig(manifest=str(out), classes=str(classes), out=str(rescored), method="mcm",
                          cache_dir=str(tmp_path / "cache")), model=tiny_model)
    assert json.loads(sidecar(rescored, "meta.json").read_text())["precision"] == "bf16"
    scanned = {row.path: row for row in read_manifest(out)}
    for row in read_manifest(rescored):
        assert row.top_class == scanned[row.path].top_class
        assert row.ood_score == pytest.approx(scanned[row.path].ood_score, abs=1e-5)  # float16 storage only
    # a threshold fitted on bf16 scores is refused for fp32 ones; one from before precisions were recorded is not
    towers = {"fingerprints": {"image": "i", "yes": "y"}}
    fitted = oodfilter.Calibration.fit(torch.rand(40), 0.9, method="mcm", identity={**towers, "precision": "bf16"})
    with pytest.raises(InputError, match=r"precision \(bf16, not fp32\)"):
        fitted.check_fits("mcm", {**towers, "precision": "fp32"})
    fitted.check_fits("mcm", {**towers, "precision": "bf16"})
    older = oodfilter.Calibration.fit(torch.rand(40), 0.9, method="mcm", identity=towers)
    older.check_fits("mcm", {**towers, "precision": "fp32"})


def test_a_legacy_manifest_scanned_on_the_cpu_is_fp32_whatever_auto_gives_now(tmp_path, tiny_model, monkeypatch):
    from oodfilter.scan import runner

    folder = _folder(tmp_path)
    out = tmp_path / "m.jsonl"
    config = ScanConfig(inputs=[str(folder)], classes=NAMES, out=str(out), workers=0, device="cpu",
                        cache_dir=str(tmp_path / "cache"))
    scan(config, model=tiny_model)
    meta = json.loads(sidecar(out, "meta.json").read_text())
    del meta["precision"]
    sidecar(out, "meta.json").write_text(json.dumps(meta))
    monkeypatch.setattr(runner, "inference_precision", lambda device, precision: "bf16")  # auto on a GPU now
    with pytest.raises(InputError, match=r"different precision \(fp32, this run bf16"):
        scan(ScanConfig(**{**config.__dict__, "resume": True, "precision": "bf16"}), model=tiny_model)


def test_rescore_runs_features_stored_in_a_precision_this_device_cannot(tmp_path, tiny_model):
    from oodfilter.scan.rescore import RescoreConfig, rescore

    folder = _folder(tmp_path)
    out = tmp_path / "m.jsonl"
    scan(ScanConfig(inputs=[str(folder)], classes=NAMES, out=str(out), workers=0, method="mcm", save_features=True,
                    cache_dir=str(tmp_path / "cache")), model=tiny_model)
    header = json.loads(sidecar(out, "features.json").read_text())
    header["precision"] = "fp16"  # as a scan on a GPU without bf16 writes it
    sidecar(out, "features.json").write_text(json.dumps(header))
    classes = tmp_path / "classes.txt"
    classes.write_text("\n".join(NAMES) + "\n")
    with pytest.warns(UserWarning, match="encoded in fp16, which cpu cannot run: class vectors in fp32"):
        rescore(RescoreConfig(manifest=str(out), classes=str(classes), out=str(tmp_path / "r.jsonl"), method="mcm",
                              device="cpu", cache_dir=str(tmp_path / "cache")), model=tiny_model)
    assert json.loads(sidecar(tmp_path / "r.jsonl", "meta.json").read_text())["precision"] == "fp32"
    header["precision"] = "auto"  # never written by a scan: a damaged header
    sidecar(out, "features.json").write_text(json.dumps(header))
    with pytest.raises(InputError, match="'precision' must be one of fp32, fp16, bf16, int8 or null"):
        rescore(RescoreConfig(manifest=str(out), classes=str(classes), out=str(tmp_path / "r2.jsonl"),
                              device="cpu", cache_dir=str(tmp_path / "cache")), model=tiny_model)


def test_the_emulated_bf16_warning_is_given_once_per_process(tiny_model, cache_dir, monkeypatch):
    monkeypatch.setattr(device_module, "cpu_has_native_bf16", lambda: False)
    device_module._warn_emulated_bf16.cache_clear()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        vectors = oodfilter.build_class_vectors(tiny_model, NAMES, cache_dir=cache_dir, precision="bf16")
        for method in ("mcm", "msp"):  # eval builds one scorer per method
            oodfilter.Scorer(tiny_model, vectors, method, precision="bf16")
    assert len([w for w in caught if "emulated and slower" in str(w.message)]) == 1
    device_module._warn_emulated_bf16.cache_clear()
