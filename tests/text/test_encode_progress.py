"""Caption encoding reports its progress and an estimate through hooks; the command line shows them."""

from __future__ import annotations

import itertools
import logging
import re
import types

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from oodfilter.cli.main import cli
from oodfilter.encode_progress import EncodeHooks, as_hooks, reporting_encodes
from oodfilter.text import build_class_vectors, encode_captions
from oodfilter.text import encoding as encoding_module
from oodfilter.text.encoding import EncodePlan

NAMES = ["tench", "goldfish", "great white shark", "hen", "ostrich"]
ESTIMATE = r"encoding (\d+) captions with the (yes and no towers|yes tower), about [\d.]+ (s|min|h)"


class Recorder:
    """Hooks that keep every call."""

    def __init__(self) -> None:
        self.counts: list[tuple[int, int]] = []
        self.lines: list[str] = []
        self.hooks = EncodeHooks(advance=lambda done, total: self.counts.append((done, total)),
                                 announce=self.lines.append)


def _assert_counts_rise_to(counts: list[tuple[int, int]], total: int) -> None:
    assert counts[0] == (0, total) and counts[-1] == (total, total)
    done = [d for d, _ in counts]
    assert all(a < b for a, b in itertools.pairwise(done)), done  # strictly increasing, one call per batch
    assert {t for _, t in counts} == {total}


def test_counts_rise_to_the_captions_to_encode_and_a_warm_build_reports_nothing(tiny_model, cache_dir):
    record = Recorder()
    build_class_vectors(tiny_model, NAMES, templates="ensemble", cache_dir=cache_dir, batch_size=4,
                        progress=record.hooks)
    _assert_counts_rise_to(record.counts, 2 * 7 * len(NAMES))  # both towers, one count
    assert len(record.counts) > 2 * 7 * len(NAMES) / 4  # batches of at most 4
    assert len(record.lines) == 1 and re.fullmatch(ESTIMATE, record.lines[0])
    assert re.match(r"encoding 35 captions with the yes and no towers", record.lines[0])

    warm = Recorder()
    build_class_vectors(tiny_model, NAMES, templates="ensemble", cache_dir=cache_dir, progress=warm.hooks)
    assert warm.counts == [] and warm.lines == []

    grown = Recorder()  # only the new name's captions are encoded
    build_class_vectors(tiny_model, [*NAMES, "axolotl"], templates="ensemble", cache_dir=cache_dir,
                        progress=grown.hooks)
    _assert_counts_rise_to(grown.counts, 2 * 7)
    assert grown.lines[0].startswith("encoding 7 captions with the yes and no towers, about ")


def test_a_plain_callback_counts_the_captions_of_encode_captions(tiny_model):
    counts: list[tuple[int, int]] = []
    captions = [f"a photo of a {name}." for name in NAMES * 3]
    encode_captions(tiny_model, "yes", captions, batch_size=4,
                    progress=lambda done, total: counts.append((done, total)))
    _assert_counts_rise_to(counts, len(captions))


def test_installed_hooks_reach_encodes_inside_the_block_and_explicit_ones_win(tiny_model, cache_dir):
    installed, explicit = Recorder(), Recorder()
    with reporting_encodes(installed.hooks):
        build_class_vectors(tiny_model, NAMES, cache_dir=cache_dir / "a", templates="photo", include_no=False)
        build_class_vectors(tiny_model, NAMES, cache_dir=cache_dir / "b", templates="photo", include_no=False,
                            progress=explicit.hooks)
    assert installed.counts[-1] == (5, 5) and len(installed.lines) == 1
    assert installed.lines[0].startswith("encoding 5 captions with the yes tower, about ")
    assert explicit.counts[-1] == (5, 5) and len(installed.counts) == 2  # (0, 5) and (5, 5): the first build only
    assert as_hooks(None) == EncodeHooks()  # nothing installed outside the block


def test_the_estimate_scales_the_timed_first_batch_by_token_positions(tiny_model, monkeypatch, caplog):
    captions = [f"a photo of a {name}." for name in NAMES] + ["a bad photo of the great white shark at dusk."]
    monkeypatch.setattr(encoding_module, "CALIBRATION_CAPTIONS", 2)
    clock = iter([0.0, 120.0] + [120.0] * 100)  # the first batch takes two minutes
    monkeypatch.setattr(encoding_module, "time", types.SimpleNamespace(perf_counter=lambda: next(clock)))
    record = Recorder()
    with caplog.at_level(logging.INFO, logger="oodfilter.text.encoding"):
        encode_captions(tiny_model, "yes", captions, batch_size=3, progress=record.hooks)
    plan = EncodePlan(tiny_model, "yes", captions, batch_size=3, first_batch=2)
    first = len(plan.batches[0][0]) * plan.batches[0][1]  # captions x token positions of the timed batch
    assert plan.positions > 1.5 * first
    expected = encoding_module._duration(120 * plan.positions / first)
    assert expected != encoding_module._duration(120)
    assert record.lines == [f"encoding 6 captions with the yes tower, about {expected}"]
    assert record.lines[0] in caplog.messages  # the library logs it too


def _images(folder):
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return folder


@pytest.mark.slow
def test_a_cold_scan_prints_the_estimate_and_the_count_and_a_warm_one_does_not(tmp_path):
    images = _images(tmp_path / "images")
    classes = tmp_path / "classes.txt"
    classes.write_text("\n".join(NAMES) + "\n")

    def scan(out, *extra):
        result = CliRunner().invoke(cli, ["scan", str(images), "--model", "test-tiny", "--classes", str(classes),
                                          "--templates", "photo", "--cache-dir", str(tmp_path / "cache"),
                                          "--workers", "0", "--out", str(tmp_path / out), *extra])
        assert result.exit_code == 0, result.output
        return result.output

    quiet = scan("quiet.jsonl", "--quiet", "--cache-dir", str(tmp_path / "other-cache"))
    assert "encoding" not in quiet
    cold = scan("cold.jsonl")
    assert re.search(r"^encoding 5 captions with the yes and no towers, about \d+ s$", cold, re.MULTILINE), cold
    assert re.search(r"^encoding captions 10/10 \(", cold, re.MULTILINE), cold  # plain lines without a terminal
    warm = scan("warm.jsonl")
    assert "encoding" not in warm and "scanning 2/2" in warm


@pytest.mark.parametrize("seconds, text", [(0.2, "1 s"), (42.4, "42 s"), (600, "10 min"), (7200, "2.0 h")])
def test_durations_read_naturally(seconds, text):
    assert encoding_module._duration(seconds) == text


def test_a_build_interrupted_in_the_no_tower_keeps_the_yes_vectors(fresh_tiny_model, cache_dir, monkeypatch):
    model = fresh_tiny_model
    real_no = model.encode_text_no

    def interrupted(tokens, choice=None):
        raise KeyboardInterrupt

    monkeypatch.setattr(model, "encode_text_no", interrupted)
    with pytest.raises(KeyboardInterrupt):
        build_class_vectors(model, NAMES, templates="ensemble", cache_dir=cache_dir, include_no=True)
    monkeypatch.setattr(model, "encode_text_no", real_no)
    record = Recorder()
    build_class_vectors(model, NAMES, templates="ensemble", cache_dir=cache_dir, include_no=True,
                        progress=record.hooks)
    assert record.counts[-1] == (7 * len(NAMES), 7 * len(NAMES))  # the no tower's captions only
    assert record.lines[0].startswith(f"encoding {7 * len(NAMES)} captions with the no tower, about ")


def test_image_files_encoded_inside_the_block_report_their_count_unreadable_ones_too(tiny_model, tmp_path):
    """Evaluations and plugin fits encode image files with no display at all; their count now reaches the hooks."""
    from oodfilter.data.loader import encode_image_files

    folder = _images(tmp_path / "images")
    (folder / "broken.png").write_bytes(b"not an image")
    paths = sorted(str(p) for p in folder.iterdir())
    counts: list[tuple[int, int]] = []
    with reporting_encodes(EncodeHooks(images=lambda done, total: counts.append((done, total)))):
        encoded = encode_image_files(tiny_model.encode_image, tiny_model.preprocess, paths, batch_size=1)
    assert len(encoded.paths) == 2 and len(encoded.errors) == 1
    _assert_counts_rise_to(counts, 3)
    counts.clear()
    encode_image_files(tiny_model.encode_image, tiny_model.preprocess, paths, batch_size=1)
    assert counts == []  # nothing installed outside the block


def test_eval_shows_the_image_encodes(tmp_path):
    """`oodfilter eval` showed only caption encodes; its image sets (most of its time) now count on a line."""
    id_images, ood_images = _images(tmp_path / "id"), _images(tmp_path / "ood")
    classes = tmp_path / "classes.txt"
    classes.write_text("\n".join(NAMES) + "\n")
    result = CliRunner().invoke(cli, ["eval", "--model", "test-tiny", "--classes", str(classes), "--id",
                                      str(id_images), "--ood", str(ood_images), "--methods", "msp", "--templates",
                                      "photo", "--workers", "0", "--cache-dir", str(tmp_path / "cache"), "--out",
                                      str(tmp_path / "results.json")])
    assert result.exit_code == 0, result.output
    assert len(re.findall(r"^encoding images 2/2 \(", result.output, re.MULTILINE)) == 2, result.output
