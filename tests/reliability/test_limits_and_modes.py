"""Issue 28, cases 12 and 14-17: huge JSON integers, self-consistent calibrations, the umask, nothing left behind,
numeric options in range."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from PIL import Image

import oodfilter
from oodfilter.atomic import atomic_write, atomic_write_text
from oodfilter.decision import Calibration
from oodfilter.errors import CheckpointError, InputError, OODFilterError
from oodfilter.scan import ScanConfig, load_scan_config, scan
from oodfilter.sinks.features import read_header
from oodfilter.sinks.journal import read_journal
from oodfilter.sinks.manifest import read_manifest, read_meta, sidecar

CLASSES = ["tench", "goldfish", "hen"]
IDENTITY = {"fingerprints": {"image": "i", "yes": "y", "no": "n"}, "classes_sha256": "c", "templates": ["a {}"]}
HUGE = "9" * 5000  # more digits than Python converts to an int (4300)


def _images(folder: Path, count: int = 3) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"img{i}.png"
        Image.new("RGB", (24 + i, 24), (40 * i, 90, 200)).save(path)
        paths.append(path)
    return paths


def _config(tmp_path: Path, inputs: list[Path], out: Path | str = "scan.jsonl", **options) -> ScanConfig:
    return ScanConfig(inputs=[str(p) for p in inputs], classes=CLASSES, out=str(tmp_path / out), model="test-tiny",
                      device="cpu", workers=0, batch_size=2, cache_dir=str(tmp_path / "cache"), **options)


def _tree(folder: Path) -> set[str]:
    return {str(path.relative_to(folder)) for path in folder.rglob("*")}


# --- 12: a JSON integer longer than Python converts is a named error, naming the file -----------------------------

def _calibration_text() -> str:
    calibration = Calibration.fit(torch.linspace(0, 1, 40), 0.9, method="atd", identity=IDENTITY)
    return json.dumps(calibration.to_dict()).replace('"num_images": 40', f'"num_images": {HUGE}')


_ROW = '{"path": "a.png", "status": "ok", "error": null, "ood_score": SCORE, "is_ood": false, "top_class": "hen", ' \
       '"top_prob": 0.5}\n'
_HEADER = '{"format": "oodfilter-features/1", "dtype": "float16", "dim": DIM, "image_fingerprint": "f", ' \
          '"model": "m", "data": "x.f16"}'
_JOURNAL = '{"version": VERSION, "op": "copy"}\n'


@pytest.mark.parametrize("write, read, error", [
    (lambda p: (p / "cal.json").write_text(_calibration_text()), lambda p: Calibration.load(p / "cal.json"),
     InputError),
    (lambda p: (p / "s.jsonl").write_text(_ROW.replace("SCORE", HUGE)), lambda p: read_manifest(p / "s.jsonl"),
     InputError),
    (lambda p: (p / "s.jsonl").write_text(_ROW.replace("SCORE", "0.5")) + sidecar(p / "s.jsonl", "meta.json")
     .write_text(f'{{"num_classes": {HUGE}}}'), lambda p: read_meta(p / "s.jsonl"), InputError),
    (lambda p: sidecar(p / "s.jsonl", "features.json").write_text(_HEADER.replace("DIM", HUGE)),
     lambda p: read_header(p / "s.jsonl"), InputError),
    (lambda p: (p / "j.jsonl").write_text(_JOURNAL.replace("VERSION", HUGE)), lambda p: read_journal(p / "j.jsonl"),
     InputError),
    (lambda p: (p / "bundle").mkdir() or (p / "bundle" / "oodfilter.json").write_text(f'{{"format_version": {HUGE}}}'),
     lambda p: oodfilter.load_bundle(p / "bundle"), CheckpointError),
])
def test_an_integer_too_long_for_python_is_a_named_error_naming_the_file(tmp_path, write, read, error):
    write(tmp_path)
    with pytest.raises(error, match=r"integer too long") as raised:
        read(tmp_path)
    assert str(tmp_path) in str(raised.value)


def test_the_manifest_filter_reports_a_huge_integer_as_an_input_error(tmp_path):
    from oodfilter.pipeline.manifest_filter import ManifestFilter

    manifest = tmp_path / "s.jsonl"
    manifest.write_text(_ROW.replace("SCORE", "0.5") + _ROW.replace("a.png", "b.png").replace("SCORE", HUGE))
    with pytest.raises(InputError, match=r"s\.jsonl line 2 .*integer too long"):
        ManifestFilter(manifest)


def test_a_huge_integer_in_a_yaml_config_is_an_input_error(tmp_path):
    config = tmp_path / "scan.yaml"
    config.write_text(f"batch_size: {HUGE}\n")
    with pytest.raises(InputError, match=r"scan\.yaml"):
        load_scan_config(config)


# --- 14: a calibration's threshold must be the one its own scores and recall give ----------------------------------

@pytest.mark.parametrize("change, message", [
    ({"threshold": 1e308}, r"'threshold' \(1e\+308\) is not the one its 40 scores give"),
    ({"threshold": -5}, "is not the one its 40 scores give"),
    ({"id_recall": 0.5}, "is not the one its 40 scores give"),
    ({"id_recall": 0.99}, r"40 scores are too few for an ID recall of 0\.99"),
    ({"kept": 0.25}, "'kept'"),
])
def test_a_calibration_whose_threshold_does_not_follow_from_its_scores_is_refused(tmp_path, change, message):
    calibration = Calibration.fit(torch.linspace(0, 1, 40), 0.9, method="atd", identity=IDENTITY)
    path = tmp_path / "cal.json"
    path.write_text(json.dumps({**calibration.to_dict(), **change}))
    with pytest.raises(InputError, match=message) as raised:
        Calibration.load(path)
    assert str(path) in str(raised.value)
    path.write_text(json.dumps(calibration.to_dict()))
    assert Calibration.load(path) == calibration  # the file as fitted still loads, exactly


def test_a_calibration_with_ties_and_recall_one_still_loads(tmp_path):
    for scores, recall in ((torch.tensor([0.1] * 30 + [0.9] * 10), 0.5), (torch.linspace(-3, 7, 25), 1.0)):
        calibration = Calibration.fit(scores, recall, method="mcm", identity=IDENTITY)
        assert Calibration.load(calibration.save(tmp_path / "cal.json")) == calibration


# --- 15: every file and folder the tool creates follows the umask -------------------------------------------------

@pytest.fixture(params=[0o027, 0o002])
def umask(request) -> Iterator[int]:
    previous = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(previous)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_atomic_writes_follow_the_umask(tmp_path, umask):
    path = atomic_write_text(tmp_path / "new" / "deeper" / "a.json", "{}")
    assert _mode(path) == 0o666 & ~umask
    assert _mode(tmp_path / "new") == _mode(tmp_path / "new" / "deeper") == 0o777 & ~umask


def test_a_bundle_follows_the_umask(tmp_path, umask, tiny_model):
    out = oodfilter.save_bundle(tiny_model, tmp_path / "bundle")
    folders = [out, *(p for p in out.rglob("*") if p.is_dir())]
    files = [p for p in out.rglob("*") if p.is_file()]
    assert files and {_mode(p) for p in folders} == {0o777 & ~umask}
    assert {_mode(p) for p in files} == {0o666 & ~umask}
    oodfilter.save_bundle(tiny_model, out, overwrite=True)  # a replaced bundle too
    assert _mode(out) == 0o777 & ~umask and {_mode(p) for p in out.rglob("*") if p.is_file()} == {0o666 & ~umask}
    from oodfilter.model.bundle import write_bundle_into

    run = tmp_path / "run"
    write_bundle_into(tiny_model, run)
    assert {_mode(p) for p in run.rglob("*") if p.is_dir()} | {_mode(run)} == {0o777 & ~umask}
    assert {_mode(p) for p in run.rglob("*") if p.is_file()} == {0o666 & ~umask}


def test_a_scans_outputs_follow_the_umask(tmp_path, umask):
    out = tmp_path / "outputs" / "scan.jsonl"
    scan(_config(tmp_path, _images(tmp_path / "in"), out=out, save_features=True, threshold=0.5))
    assert _mode(out.parent) == 0o777 & ~umask
    assert {p.name: _mode(p) for p in out.parent.iterdir()} == {p.name: 0o666 & ~umask for p in out.parent.iterdir()}


# --- 16: a refused run leaves nothing behind; a killed atomic write leaves a temp file a later write removes --------

def test_a_refused_out_leaves_no_lock_file(tmp_path):
    images = _images(tmp_path / "in")
    before = _tree(tmp_path / "in")
    with pytest.raises(InputError, match="is one of the scanned inputs"):
        scan(_config(tmp_path, images, out=images[0]))
    assert _tree(tmp_path / "in") == before
    (tmp_path / "taken.jsonl").write_text("")
    with pytest.raises(InputError, match="already exists"):
        scan(_config(tmp_path, images, out="taken.jsonl"))
    assert not sidecar(tmp_path / "taken.jsonl", "lock").exists()


def test_a_refused_out_in_a_new_folder_leaves_no_folder(tmp_path):
    images = _images(tmp_path / "in")
    with pytest.raises(OODFilterError):
        scan(_config(tmp_path, images, out="new/deeper/scan.jsonl", method="no-such-method"))
    assert not (tmp_path / "new").exists()


def test_a_finished_scan_leaves_no_lock_file_and_a_held_lock_still_refuses(tmp_path):
    images = _images(tmp_path / "in")
    scan(_config(tmp_path, images))
    assert not sidecar(tmp_path / "scan.jsonl", "lock").exists()
    from oodfilter.sinks.lock import ManifestLock

    other = tmp_path / "other.jsonl"
    with ManifestLock(other):
        second = subprocess.run([sys.executable, "-c", "from oodfilter.sinks.lock import ManifestLock\n"
                                 f"with ManifestLock({str(other)!r}): pass"],
                                capture_output=True, text=True, env={**os.environ, "PYTHONPATH": _package_root()})
        assert second.returncode != 0 and "being written by another scan" in second.stderr
    assert not sidecar(other, "lock").exists()
    with ManifestLock(other):  # free again
        pass


def test_an_atomic_write_that_fails_leaves_no_temporary_file(tmp_path):
    def fail(tmp: str) -> None:
        Path(tmp).write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(tmp_path / "a.json", fail)
    assert list(tmp_path.iterdir()) == []


def _package_root() -> str:
    return str(Path(oodfilter.__file__).resolve().parents[1])


def test_a_killed_atomic_write_leaves_a_recognisable_temp_file_that_the_next_write_removes(tmp_path, monkeypatch):
    target = tmp_path / "img.png.meta.json"
    code = ("import sys, time; from pathlib import Path; from oodfilter.atomic import atomic_write\n"
            "def write(tmp):\n    Path(tmp).write_text('half'); print('writing', flush=True); time.sleep(60)\n"
            f"atomic_write({str(target)!r}, write)")
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONPATH": _package_root()})
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "writing"
        (live,) = [p for p in tmp_path.iterdir()]
        atomic_write_text(tmp_path / "other.json", "{}")  # a write running in another process is never removed
        atomic_write_text(target, "{}")
        assert live.exists()
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    (stale,) = [p for p in tmp_path.iterdir() if p.name not in (target.name, "other.json")]
    assert stale.name.startswith(".") and ".oodfilter-tmp" in stale.name
    assert oodfilter.data.discovery.discover_images([str(tmp_path)]) == []  # never taken for an input
    old = time.time() - 3600
    os.utime(stale, (old, old))
    atomic_write_text(target, '{"a": 1}')
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([target.name, "other.json"])


# --- 17: max_pixels and sibling numeric options out of range are refused clearly ----------------------------------

@pytest.mark.parametrize("value", [0, -1])
def test_max_pixels_below_one_is_refused_by_the_config(tmp_path, value):
    config = _config(tmp_path, _images(tmp_path / "in"), max_pixels=value)
    with pytest.raises(InputError, match=r"max_pixels must be at least 1"):
        scan(config)
    (tmp_path / "scan.yaml").write_text(f"max_pixels: {value}\n")
    with pytest.raises(InputError, match=r"max_pixels must be at least 1"):
        load_scan_config(tmp_path / "scan.yaml", {"inputs": ["x"], "classes": "c.txt"}).validate()


def test_max_pixels_below_one_is_refused_by_the_api(tmp_path, tiny_model, cache_dir):
    (image,) = _images(tmp_path / "in", 1)
    scorer = oodfilter.build_scorer(oodfilter.ScorerSpec(model="test-tiny", classes=CLASSES, cache_dir=str(cache_dir)),
                                    model=tiny_model)
    for value in (0, -5, True, 2.5):
        with pytest.raises(InputError, match="max_pixels must be a whole number of at least 1"):
            oodfilter.load_rgb_image(image, max_pixels=value)
        with pytest.raises(InputError, match="max_pixels must be a whole number of at least 1"):
            list(oodfilter.score_files(scorer, [image], max_pixels=value))
    assert [row.status for rows in oodfilter.score_files(scorer, [image], max_pixels=24 * 24) for row in rows] == ["ok"]


@pytest.mark.parametrize("option, value, message", [
    ("threshold", float("inf"), "--threshold must be a finite number"),
    ("threshold", float("-inf"), "--threshold must be a finite number"),
    ("ray_actors", 0, "--ray-actors must be at least 1"),
])
def test_scan_numeric_options_out_of_range_are_refused(tmp_path, option, value, message):
    with pytest.raises(InputError, match=message):
        scan(_config(tmp_path, _images(tmp_path / "in"), **{option: value}))
    assert not (tmp_path / "scan.jsonl").exists()


@pytest.mark.parametrize("option, value, message", [
    ("workers", -1, "--workers must be 0 or more"),
    ("attack_steps", 0, "--attack-steps must be at least 1"),
])
def test_eval_numeric_options_out_of_range_are_refused(tmp_path, option, value, message):
    from oodfilter.evaluate.config import EvalConfig
    from oodfilter.evaluate.runner import evaluate

    images = _images(tmp_path / "in")
    config = EvalConfig(model="test-tiny", device="cpu", classes=CLASSES, id=str(images[0]), ood=[str(images[1])],
                        attack_eps=[1.0], cache_dir=str(tmp_path / "cache"), **{option: value})
    with pytest.raises(InputError, match=message):
        evaluate(config)


@pytest.mark.parametrize("option, value, message", [
    ("lr", float("nan"), "--lr must be a positive"),
    ("lr", float("inf"), "--lr must be a positive"),
    ("val_fraction", 1.0, r"--val-fraction must be in \[0, 1\)"),
    ("val_fraction", -0.1, r"--val-fraction must be in \[0, 1\)"),
    ("warmup_steps", -1, "--warmup-steps must be 0 or more"),
    ("workers", -1, "--workers must be 0 or more"),
    ("beta1", 1.0, r"beta1 must be in \[0, 1\)"),
    ("beta2", -0.5, r"beta2 must be in \[0, 1\)"),
    ("eps", 0.0, "eps must be a positive"),
    ("weight_decay", -0.1, "--weight-decay must be 0 or more"),
    ("grad_clip", -1.0, "--grad-clip must be 0 or more"),
    ("val_every", -1, "--val-every must be 0 or more"),
    ("val_max", -1, "val_max must be 0 or more"),
    ("checkpoint_every", -2, "--checkpoint-every must be 0 or more"),
    ("log_every", 0, "log_every must be at least 1"),
])
def test_finetune_numeric_options_out_of_range_are_refused(option, value, message):
    from oodfilter.train.config import FinetuneConfig

    with pytest.raises(InputError, match=message):
        FinetuneConfig(data="d", out="o", steps=1, **{option: value}).validate()
