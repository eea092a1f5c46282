"""WebDataset shards as inputs: one row per sample, the same scores as the files, filtered shards, finetune."""

from __future__ import annotations

import hashlib
import tarfile
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from shard_data import add_member, write_shards

import oodfilter
from oodfilter.cli.main import cli
from oodfilter.data.discovery import discover_images
from oodfilter.errors import InputError
from oodfilter.model.build import build_from_open_clip
from oodfilter.scan import ScanConfig, scan
from oodfilter.sinks.manifest import read_manifest
from oodfilter.train import FinetuneConfig, finetune
from oodfilter.train.data import read_caption_source

CLASSES = ["tench", "goldfish", "great white shark", "hen", "ostrich"]


@pytest.fixture
def shards(tmp_path, real_images):
    """Shards of the real images, and a folder of the same images as files (sample key → file)."""
    images = real_images[:14]
    files = tmp_path / "files"
    files.mkdir()
    for index, image in enumerate(images):
        (files / f"{index:06d}.jpg").write_bytes(image.read_bytes())
    return write_shards(tmp_path / "shards", images), files


def _config(tmp_path, inputs, out, **kw) -> ScanConfig:
    # clipn-clean: with the quoted reference captions these random weights put ATD above 0.9 for every sample, and
    # the reshard tests need a threshold (0.9) that splits the samples.
    kw.setdefault("templates", "clipn-clean")
    return ScanConfig(inputs=[str(i) for i in inputs], classes=CLASSES, out=str(tmp_path / out), workers=0,
                      batch_size=4, cache_dir=str(tmp_path / "cache"), **kw)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_shard_gives_one_input_per_image_sample_named_shard_hash_key(tmp_path, shards):
    shard_files, _ = shards
    with tarfile.open(shard_files[0], "a") as archive:
        add_member(archive, "only-text.txt", b"a sample without an image")
    found = discover_images([str(shard_files[0].parent / "shard-{000..002}.tar")])
    names = [item.name for item in found]
    assert names == [f"{shard_files[key // 6]}#{key:06d}" for key in range(14)]
    assert all(not item.local and item.error is None for item in found)
    assert [item.name for item in discover_images([str(shard_files[0].parent / "*.tar")])] == names


def test_scanning_shards_gives_the_scores_of_the_same_images_as_files(tmp_path, shards, tiny_model):
    shard_files, files = shards
    scan(_config(tmp_path, [files], "files.jsonl"), model=tiny_model)
    summary = scan(_config(tmp_path, shard_files, "shards.jsonl"), model=tiny_model)
    assert summary.total == summary.ok == 14
    by_key = {Path(row.path).stem: row for row in read_manifest(tmp_path / "files.jsonl")}
    for row in read_manifest(tmp_path / "shards.jsonl"):
        expected = by_key[row.path.rsplit("#", 1)[1]]
        assert row.ood_score == pytest.approx(expected.ood_score, abs=1e-6)
        assert (row.is_ood, row.top_class) == (expected.is_ood, expected.top_class)


def test_a_damaged_shard_keeps_its_readable_samples_and_reports_the_rest(tmp_path, shards, tiny_model):
    shard_files, _ = shards
    damaged = tmp_path / "damaged.tar"
    data = shard_files[0].read_bytes()
    damaged.write_bytes(data[: len(data) // 2])  # cut inside a member
    not_a_tar = tmp_path / "notatar.tar"
    not_a_tar.write_bytes(b"this is not a tar file at all" * 40)
    summary = scan(_config(tmp_path, [damaged, not_a_tar], "m.jsonl"), model=tiny_model)
    rows = {row.path: row for row in read_manifest(tmp_path / "m.jsonl")}
    assert rows[str(not_a_tar)].status == "error" and "not an uncompressed tar" in rows[str(not_a_tar)].error
    assert rows[str(damaged)].status == "error" and "damaged" in rows[str(damaged)].error
    samples = [row for path, row in rows.items() if "#" in path]
    assert samples and summary.errors >= 2  # the samples before the cut are scored or named as truncated
    assert all(row.status == "ok" or "truncated" in (row.error or "") or "ends inside" in (row.error or "")
               for row in samples)


def test_reshard_writes_the_kept_samples_whole_and_never_touches_the_input(tmp_path, shards, tiny_model):
    shard_files, _ = shards
    before = {shard: _digest(shard) for shard in shard_files}
    out = tmp_path / "filtered"
    summary = scan(_config(tmp_path, shard_files, "m.jsonl", action="reshard", dest=str(out), threshold=0.9),
                   model=tiny_model)
    rows = read_manifest(tmp_path / "m.jsonl")
    kept = {row.path for row in rows if row.is_ood is False}
    assert 0 < len(kept) < 14, "the threshold should split the images"
    report = summary.resharded
    assert report is not None and report.written and report.kept == len(kept)
    assert report.dropped_selected == 14 - len(kept) and report.dropped_errors == 0
    assert {_digest(shard) for shard in shard_files} == set(before.values())
    for shard in shard_files:
        written = out / shard.name
        with tarfile.open(written) as archive, tarfile.open(shard) as source:
            members = archive.getnames()
            keys = {name.split(".")[0] for name in members}
            assert keys == {path.rsplit("#", 1)[1] for path in kept if path.startswith(f"{shard}#")}
            for name in members:  # every field of a kept sample, byte for byte
                assert archive.extractfile(name).read() == source.extractfile(name).read()
            assert all(f"{key}.jpg" in members for key in keys)
    again = _config(tmp_path, shard_files, "m2.jsonl", action="reshard", dest=str(out), threshold=0.9)
    with pytest.raises(InputError, match="already exists and is never overwritten"):
        scan(again, model=tiny_model)
    assert not (tmp_path / "m2.jsonl").exists(), "refused before anything was scored"


def test_reshard_refuses_files_and_a_dest_holding_the_shards_and_a_dry_run_writes_nothing(tmp_path, shards,
                                                                                       tiny_model):
    shard_files, files = shards
    with pytest.raises(InputError, match="is not a shard's sample"):
        scan(_config(tmp_path, [files], "a.jsonl", action="reshard", dest=str(tmp_path / "o"), threshold=0.9),
             model=tiny_model)
    with pytest.raises(InputError, match="already exists"):
        scan(_config(tmp_path, shard_files, "b.jsonl", action="reshard", dest=str(shard_files[0].parent),
                     threshold=0.9), model=tiny_model)
    dry = scan(_config(tmp_path, shard_files, "c.jsonl", action="reshard", dest=str(tmp_path / "dry"),
                       threshold=0.9, dry_run=True), model=tiny_model)
    assert dry.resharded is not None and not dry.resharded.written and dry.resharded.kept > 0
    assert not (tmp_path / "dry").exists()


def test_file_actions_refuse_shard_samples_before_scoring(tmp_path, shards, tiny_model):
    shard_files, _ = shards
    with pytest.raises(InputError, match="works on local image files only"):
        scan(_config(tmp_path, shard_files, "m.jsonl", action="move", dest=str(tmp_path / "moved"), threshold=0.9),
             model=tiny_model)
    assert not (tmp_path / "m.jsonl").exists()


def test_shards_are_caption_pairs_for_finetune_and_a_short_run_trains_from_them(tmp_path, shards):
    shard_files, _ = shards
    spec = str(shard_files[0].parent / "shard-{000..002}.tar")
    pairs = read_caption_source(spec)
    assert len(pairs) == 14
    assert pairs[0].caption == "a photo of tench" and pairs[1].caption.startswith("a photo of ")  # txt, json
    assert pairs[3].path == f"{shard_files[0]}#000003" and pairs[3].key == "shard-000.tar#000003"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        model = build_from_open_clip("test-tiny")
    config = FinetuneConfig(model="test-tiny", data=spec, out=str(tmp_path / "run"), steps=3, batch_size=4,
                            lr=1e-3, val_fraction=0.2, workers=0, log_every=1, device="cpu")
    result = finetune(config, model=model)
    assert result.steps == 3
    assert oodfilter.load_model(result.bundle, device="cpu").no_branch_trained


def test_cli_reshard_prints_what_it_wrote(tmp_path, shards):
    shard_files, _ = shards
    classes = tmp_path / "classes.txt"
    classes.write_text("\n".join(CLASSES) + "\n")
    result = CliRunner().invoke(cli, ["scan", str(shard_files[0].parent / "shard-{000..002}.tar"), "--model",
                                      "test-tiny", "--classes", str(classes), "--workers", "0", "--out",
                                      str(tmp_path / "m.jsonl"), "--threshold", "0.9", "--action", "reshard",
                                      "--dest", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache")])
    assert result.exit_code == 0, result.output
    assert "samples written" in result.output and "to 3 shard(s)" in result.output
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [s.name for s in shard_files]


def test_keys_with_a_hash_or_empty_are_samples_and_reshard_takes_them(tmp_path, real_images, tiny_model):
    shard = tmp_path / "odd.tar"
    with tarfile.open(shard, "w") as archive:
        add_member(archive, "a#b.jpg", real_images[0].read_bytes())
        add_member(archive, ".jpg", real_images[1].read_bytes())
        add_member(archive, "000001.jpg", real_images[2].read_bytes())
    summary = scan(_config(tmp_path, [shard], "m.jsonl", action="reshard", dest=str(tmp_path / "out"),
                           threshold=100.0), model=tiny_model)
    rows = {row.path: row for row in read_manifest(tmp_path / "m.jsonl")}
    assert set(rows) == {f"{shard}#a#b", f"{shard}#", f"{shard}#000001"} and all(r.ok for r in rows.values())
    assert summary.resharded is not None and summary.resharded.kept == 3
    with tarfile.open(tmp_path / "out" / "odd.tar") as written:
        assert written.getnames() == ["a#b.jpg", ".jpg", "000001.jpg"]


def test_a_shard_with_a_corrupt_header_part_way_gets_an_error_row(tmp_path, real_images, tiny_model):
    good = write_shards(tmp_path / "s", real_images[:5], per_shard=5)[0]
    data = bytearray(good.read_bytes())
    with tarfile.open(good) as archive:
        third = archive.getmembers()[4]  # 000002.jpg's header
    data[third.offset:third.offset + 512] = b"Z" * 512
    broken = tmp_path / "garbage.tar"
    broken.write_bytes(bytes(data))
    scan(_config(tmp_path, [broken], "m.jsonl"), model=tiny_model)
    rows = {row.path: row for row in read_manifest(tmp_path / "m.jsonl")}
    assert rows[str(broken)].status == "error" and "damaged after 2 samples" in rows[str(broken)].error
    assert {path for path in rows if "#" in path} == {f"{broken}#000000", f"{broken}#000001"}


def test_reshard_keeps_unscanned_samples_and_links_and_copies_a_damaged_shard_up_to_the_damage(tmp_path,
                                                                                               real_images,
                                                                                               tiny_model):
    shard = tmp_path / "mixed.tar"
    with tarfile.open(shard, "w") as archive:
        add_member(archive, "000001.jpg", real_images[0].read_bytes())
        add_member(archive, "000002.json", b'{"only": "metadata"}')  # no image: not scanned, kept
        link = tarfile.TarInfo("000001.txt")
        link.type, link.linkname = tarfile.SYMTYPE, "elsewhere.txt"
        archive.addfile(link)
        add_member(archive, "000003.jpg", real_images[1].read_bytes())
    summary = scan(_config(tmp_path, [shard], "m.jsonl", action="reshard", dest=str(tmp_path / "out"),
                           threshold=100.0), model=tiny_model)
    assert summary.resharded is not None and summary.resharded.shards[0].unscanned == 1
    with tarfile.open(tmp_path / "out" / "mixed.tar") as written, tarfile.open(shard) as source:
        assert written.getnames() == source.getnames()
        assert written.getmember("000001.txt").issym() and written.getmember("000001.txt").linkname == "elsewhere.txt"
        assert written.extractfile("000003.jpg").read() == source.extractfile("000003.jpg").read()


def test_a_folder_of_shards_says_how_to_scan_them_and_a_brace_named_file_is_found(tmp_path, shards):
    shard_files, _ = shards
    with pytest.warns(UserWarning, match=r"holds 3 \.tar file\(s\).*/\*\.tar"):
        assert discover_images([str(shard_files[0].parent)]) == []
    literal = tmp_path / "photo{1,2}.jpg"
    literal.write_bytes(b"x")
    assert [item.name for item in discover_images([str(literal)])] == [str(literal)]


def test_a_finetune_source_with_a_damaged_caption_leaves_that_sample_out(tmp_path, real_images, caplog):
    shard = tmp_path / "cap.tar"
    with tarfile.open(shard, "w") as archive:
        for key in ("000000", "000001", "000002"):
            add_member(archive, f"{key}.jpg", real_images[0].read_bytes())
            add_member(archive, f"{key}.txt", f"a photo number {key}".encode())
    data = shard.read_bytes()
    with tarfile.open(shard) as archive:
        last = archive.getmember("000002.txt")
    (tmp_path / "cut.tar").write_bytes(data[: last.offset_data + 3])  # the last caption ends early
    with caplog.at_level("WARNING"):
        pairs = read_caption_source(str(tmp_path / "cut.tar"))
    assert [pair.caption for pair in pairs] == ["a photo number 000000", "a photo number 000001"]
    assert "left samples out" in caplog.text
