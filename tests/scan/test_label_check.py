"""``--classes-from-folders`` and the label check: the class list from an ImageFolder tree, the rule, the columns."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
from click.testing import CliRunner

from oodfilter.cli.main import cli
from oodfilter.errors import InputError
from oodfilter.scan import ScanConfig, scan
from oodfilter.scan.folder_classes import clean_class_name, folder_classes
from oodfilter.scan.label_check import is_label_issue, label_rows
from oodfilter.sinks.manifest import ManifestWriter, read_manifest
from oodfilter.sinks.rows import ManifestRow

# folder → DTD class whose images it holds (the folder names exercise the cleaning)
FOLDERS = {"banded": "banded", "chequered": "chequered", "cracked_paint": "cracked"}


@pytest.fixture
def labelled(tmp_path, shared_data):
    """An ImageFolder tree of links to real images, with one photo of a goldfish misfiled under chequered/."""
    root = tmp_path / "labelled"
    for folder, dtd in FOLDERS.items():
        (root / folder).mkdir(parents=True)
        for image in sorted((shared_data / "textures-dtd" / "images" / dtd).glob("*.jpg"))[:3]:
            (root / folder / image.name).symlink_to(image)
    goldfish = shared_data / "imagenet-sample" / "images"
    photo = next(p for p in sorted(goldfish.iterdir()) if "goldfish" in p.name)
    (root / "chequered" / "misfiled.jpg").symlink_to(photo)
    (root / "banded" / "broken.jpg").write_bytes(b"not an image")
    (root / "loose.jpg").symlink_to(photo)  # directly in the root: no folder class
    (root / ".hidden").mkdir()  # not a class
    return root


def _scan_cli(tmp_path, *args, expect=0):
    result = CliRunner().invoke(cli, ["scan", "--model", "test-tiny", "--cache-dir", str(tmp_path / "cache"),
                                      "--workers", "0", "--batch-size", "4", *map(str, args)])
    if result.exit_code != expect:
        raise AssertionError(f"exit {result.exit_code}: {result.output}\n{result.exception!r}")
    if expect:  # the refusal is an InputError, which the CLI's error boundary prints as one line
        assert isinstance(result.exception, InputError), repr(result.exception)
    return result


def _refusal(result) -> str:
    return str(result.exception)


# --- the rule, on constructed scores -------------------------------------------------------------------------

def test_another_confident_class_is_a_label_issue():
    assert is_label_issue("chequered", "goldfish", 0.93) is True


def test_the_folders_own_class_is_never_an_issue_however_confident():
    assert is_label_issue("goldfish", "goldfish", 0.99) is False


def test_another_class_without_a_majority_is_not_an_issue():
    # below 0.5 the folder's class may be the second most likely, or as likely: no confident disagreement
    assert is_label_issue("chequered", "goldfish", 0.45) is False
    assert is_label_issue("chequered", "goldfish", 0.5) is False  # a tie at most: not more likely than the folder's
    assert is_label_issue("chequered", "goldfish", 0.51) is True


def test_the_cut_is_a_parameter():
    assert is_label_issue("chequered", "goldfish", 0.8, min_prob=0.9) is False
    assert is_label_issue("chequered", "goldfish", 0.95, min_prob=0.9) is True


def test_nothing_to_check_gives_none():
    assert is_label_issue(None, "goldfish", 0.99) is None
    assert is_label_issue("chequered", None, None) is None


def test_label_rows_sets_both_columns_and_leaves_error_rows_undecided():
    rows = [ManifestRow("a/x.jpg", "ok", ood_score=0.1, is_ood=False, top_class="b", top_prob=0.9),
            ManifestRow("a/y.jpg", "ok", ood_score=0.1, is_ood=False, top_class="a", top_prob=0.9),
            ManifestRow("a/z.jpg", "error", error="truncated"),
            ManifestRow("w.jpg", "ok", ood_score=0.2, is_ood=True, top_class="b", top_prob=0.99)]
    folders = {"a/x.jpg": "a", "a/y.jpg": "a", "a/z.jpg": "a"}
    got = [(r.folder_class, r.label_issue) for r in label_rows(rows, folders.get)]
    assert got == [("a", True), ("a", False), ("a", None), (None, None)]


# --- the class list from folders ------------------------------------------------------------------------------

@pytest.mark.parametrize(("folder", "name"), [("golden_retriever", "golden retriever"),
                                              ("black-and-tan_coonhound", "black and tan coonhound"),
                                              ("  sea  lion_ ", "sea lion"), ("tench", "tench")])
def test_folder_names_are_cleaned_for_prompts(folder, name):
    assert clean_class_name(folder) == name


def test_classes_are_the_sorted_cleaned_sub_folders_once_each(tmp_path):
    for name in ("zebra", "golden_retriever", "golden-retriever", ".git", "ant"):
        (tmp_path / name).mkdir()
    (tmp_path / "notes.txt").write_text("not a class")
    with pytest.warns(UserWarning, match="name one class, 'golden retriever'"):
        found = folder_classes([str(tmp_path)])
    assert found.class_names == ["ant", "golden retriever", "zebra"]
    assert found.by_folder["golden-retriever"] == found.by_folder["golden_retriever"] == "golden retriever"


def test_folders_that_differ_only_by_case_or_separators_are_one_class_and_said(tmp_path):
    for name in ("a_b", "a b", "A-B", "cat"):
        (tmp_path / name).mkdir()
    with pytest.warns(UserWarning, match=r"the folders 'A-B', 'a b', 'a_b' in .* name one class, 'A B'"):
        found = folder_classes([str(tmp_path)])
    assert found.class_names == ["A B", "cat"]  # not "A B" and "a b": no prompt tells them apart
    assert {found.by_folder[n] for n in ("a_b", "a b", "A-B")} == {"A B"}


def test_what_the_label_check_cannot_see_is_said(tmp_path, labelled):
    (labelled / "empty_class").mkdir()
    (labelled / ".hidden" / "stray.jpg").symlink_to(next((labelled / "banded").glob("*.jpg")).resolve())
    config = ScanConfig(inputs=[str(labelled)], classes_from_folders=True, model="test-tiny", workers=0,
                        out=str(tmp_path / "m.jsonl"), cache_dir=str(tmp_path / "cache"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        scan(config)
    said = [str(w.message) for w in caught if str(w.message).startswith("--classes-from-folders:")]
    assert len(said) == 1, said
    assert "1 class folder(s) hold no image ('empty class') but stay in the class list" in said[0]
    assert "2 image(s) are in no class folder" in said[0]  # loose.jpg in the root and .hidden/stray.jpg
    rows = {Path(r.path).name: r for r in read_manifest(tmp_path / "m.jsonl")}
    assert rows["stray.jpg"].folder_class is None and rows["loose.jpg"].folder_class is None


@pytest.mark.parametrize(("make", "words"), [
    (lambda root: None, "has no sub-folders"),
    (lambda root: (root / "n01443537").mkdir() or (root / "n01484850").mkdir(), "WordNet id"),
    (lambda root: (root / "___").mkdir(), "no class name"),
])
def test_folders_that_name_no_usable_classes_are_refused(tmp_path, make, words):
    make(tmp_path)
    with pytest.raises(InputError, match=words):
        folder_classes([str(tmp_path)])


def test_not_one_folder_is_refused(tmp_path):
    (tmp_path / "a").mkdir()
    with pytest.raises(InputError, match="2 inputs"):
        folder_classes([str(tmp_path), str(tmp_path)])
    with pytest.raises(InputError, match="is not a folder"):
        folder_classes([str(tmp_path / "missing")])


def test_classes_and_classes_from_folders_together_are_refused(tmp_path, labelled):
    (tmp_path / "classes.txt").write_text("banded\n")
    result = _scan_cli(tmp_path, labelled, "--classes", tmp_path / "classes.txt", "--classes-from-folders",
                       "--out", tmp_path / "m.jsonl", expect=1)
    assert "--classes and --classes-from-folders each set the class list" in _refusal(result)
    assert not (tmp_path / "m.jsonl").exists()


def test_a_folder_without_sub_folders_is_refused_by_the_cli(tmp_path, shared_data):
    flat = tmp_path / "flat"
    flat.mkdir()
    (flat / "a.jpg").symlink_to(sorted((shared_data / "imagenet-sample" / "images").iterdir())[0])
    result = _scan_cli(tmp_path, flat, "--classes-from-folders", "--out", tmp_path / "m.jsonl", expect=1)
    assert "has no sub-folders" in _refusal(result)


# --- end to end -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_scan_writes_folder_class_and_label_issue_in_every_format(tmp_path, labelled, suffix):
    out = tmp_path / f"m{suffix}"
    result = _scan_cli(tmp_path, labelled, "--classes-from-folders", "--out", out)
    rows = {Path(r.path).relative_to(labelled).as_posix(): r for r in read_manifest(out)}
    assert len(rows) == 3 * 3 + 3  # the textures, the misfiled photo, the broken file, the loose photo
    ok = [r for r in rows.values() if r.ok and r.folder_class is not None]
    assert len(ok) == 10
    for name, row in rows.items():
        folder = name.split("/")[0] if "/" in name else None
        expected_class = {"cracked_paint": "cracked paint"}.get(folder, folder) if folder else None
        assert row.folder_class == expected_class, name
        if row.ok and folder is not None:
            assert row.top_class in {"banded", "chequered", "cracked paint"}
            assert row.label_issue is (row.top_class != row.folder_class and row.top_prob > 0.5)
        else:
            assert row.label_issue is None
    assert rows["banded/broken.jpg"].status == "error" and rows["banded/broken.jpg"].folder_class == "banded"
    issues = sum(r.label_issue is True for r in rows.values())
    assert (f"{issues} image" in result.output and "may be mislabelled" in result.output) if issues \
        else "no image looks mislabelled" in result.output
    config = (tmp_path / f"m{suffix}.config.yaml").read_text()
    assert "cracked paint" in config  # the class list the folders gave is recorded


def test_manifest_without_the_label_check_has_no_label_columns(tmp_path, labelled):
    (tmp_path / "classes.txt").write_text("banded\nchequered\n")
    _scan_cli(tmp_path, labelled / "banded", "--classes", tmp_path / "classes.txt", "--out", tmp_path / "m.jsonl")
    _scan_cli(tmp_path, labelled / "banded", "--classes", tmp_path / "classes.txt", "--out", tmp_path / "m.csv")
    first = json.loads((tmp_path / "m.jsonl").read_text().splitlines()[0])
    assert "folder_class" not in first and "label_issue" not in first
    assert "folder_class" not in (tmp_path / "m.csv").read_text().splitlines()[0]
    assert all(r.folder_class is None and r.label_issue is None for r in read_manifest(tmp_path / "m.csv"))


def test_library_scan_counts_label_issues(tmp_path, labelled):
    config = ScanConfig(inputs=[str(labelled)], classes_from_folders=True, model="test-tiny", workers=0,
                        out=str(tmp_path / "m.jsonl"), cache_dir=str(tmp_path / "cache"), label_min_prob=0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        summary = scan(config)
    rows = read_manifest(tmp_path / "m.jsonl")
    assert summary.label_issues == sum(r.label_issue is True for r in rows)
    assert summary.ok == 11


def test_resume_refuses_to_mix_a_label_check_with_a_scan_without_one(tmp_path, labelled):
    (tmp_path / "classes.txt").write_text("banded\nchequered\ncracked paint\n")  # the same list as the folders'
    _scan_cli(tmp_path, labelled / "banded", "--classes", tmp_path / "classes.txt", "--out", tmp_path / "m.jsonl")
    result = _scan_cli(tmp_path, labelled, "--classes-from-folders", "--resume", "--out", tmp_path / "m.jsonl",
                       expect=1)
    assert "label check" in _refusal(result)


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_label_columns_round_trip_and_old_manifests_still_read(tmp_path, suffix):
    rows = [ManifestRow("a/x.jpg", "ok", ood_score=0.25, is_ood=False, top_class="b", top_prob=0.875,
                        folder_class="a", label_issue=True),
            ManifestRow("a/y.jpg", "error", error="truncated", folder_class="a"),
            ManifestRow("z.jpg", "ok", ood_score=0.5, is_ood=True, top_class="a", top_prob=0.25)]
    writer = ManifestWriter(tmp_path / f"new{suffix}", append=False, label_columns=True)
    writer.write(rows)
    writer.close()
    assert read_manifest(tmp_path / f"new{suffix}") == rows
    old = [ManifestRow("q.jpg", "ok", ood_score=0.5, is_ood=True, top_class="a", top_prob=0.25)]
    writer = ManifestWriter(tmp_path / f"old{suffix}", append=False)
    writer.write(old)
    writer.close()
    assert read_manifest(tmp_path / f"old{suffix}") == old


def test_a_label_issue_that_is_not_a_boolean_is_refused(tmp_path):
    row = {"path": "a.jpg", "status": "ok", "error": None, "ood_score": 0.1, "is_ood": False, "top_class": "a",
           "top_prob": 0.9, "folder_class": "b", "label_issue": "yes"}
    (tmp_path / "m.jsonl").write_text(json.dumps(row) + "\n")
    with pytest.raises(InputError, match="label_issue"):
        read_manifest(tmp_path / "m.jsonl")
