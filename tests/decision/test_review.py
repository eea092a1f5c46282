"""Review files (the report's export) are read as untrusted: every field checked; keep-fraction without torch."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch

from oodfilter.decision.keep_fraction import keep_fraction_decisions, keep_fraction_flags
from oodfilter.decision.review import REVIEW_FORMAT, check_review, load_review
from oodfilter.errors import InputError


def _write(path: Path, source: Path, changes: dict[str, Any] | None = None) -> Path:
    record: dict[str, Any] = {"format": REVIEW_FORMAT, "manifest": str(source),
                              "manifest_sha256": hashlib.sha256(source.read_bytes()).hexdigest(),
                              "threshold": 0.25, "marks": {"a.jpg": "drop", "b.jpg": "keep"}}
    record.update(changes or {})
    path.write_text(json.dumps(record))
    return path


@pytest.fixture
def manifest(tmp_path: Path) -> Path:
    path = tmp_path / "scan.jsonl"
    path.write_text("rows\n")
    return path


def test_a_valid_review_reads_back(tmp_path, manifest):
    review = load_review(_write(tmp_path / "r.json", manifest, {"extra": "later versions may add keys"}))
    assert review.threshold == 0.25 and review.marks == {"a.jpg": "drop", "b.jpg": "keep"}
    assert review.counts() == {"keep": 1, "drop": 1}
    assert review.sha256 == hashlib.sha256((tmp_path / "r.json").read_bytes()).hexdigest()
    check_review(review, manifest, {"a.jpg", "b.jpg", "c.jpg"})
    with pytest.raises(InputError, match=r"'a\.jpg'.*has no row"):
        check_review(review, manifest, {"b.jpg"})
    manifest.write_text("other rows\n")
    with pytest.raises(InputError, match="changed since the report was made"):
        check_review(review, manifest, {"a.jpg", "b.jpg"})


@pytest.mark.parametrize(("changes", "message"), [
    ({"format": "oodfilter-review/2"}, "not an oodfilter review file"),
    ({"manifest": 7}, "'manifest' must be"),
    ({"manifest_sha256": "abc"}, "64 hex digits"),
    ({"threshold": True}, "'threshold' holds"),
    ({"threshold": "0.5"}, "'threshold' holds"),
    ({"threshold": 10**400}, "not a finite number"),
    ({"marks": ["a.jpg"]}, "'marks' must map"),
    ({"marks": {"a.jpg": "remove"}}, "expected \"keep\" or \"drop\""),
    ({"marks": {"a.jpg": None}}, "expected \"keep\" or \"drop\""),
    ({"marks": {"": "keep"}}, "no row path"),
])
def test_malformed_reviews_are_refused_naming_the_field(tmp_path, manifest, changes, message):
    with pytest.raises(InputError, match=message):
        load_review(_write(tmp_path / "r.json", manifest, changes))


def test_a_review_without_marks_is_refused_and_empty_marks_are_kept(tmp_path, manifest):
    path = _write(tmp_path / "r.json", manifest)
    record = json.loads(path.read_text())
    del record["marks"]  # not "no marks": a file cut short or written by another tool
    path.write_text(json.dumps(record))
    with pytest.raises(InputError, match="'marks' is missing"):
        load_review(path)
    with pytest.raises(InputError, match="'marks' must map"):
        load_review(_write(tmp_path / "r.json", manifest, {"marks": None}))
    assert load_review(_write(tmp_path / "r.json", manifest, {"marks": {}})).marks == {}


@pytest.mark.parametrize("data", [b"", b"{", b"[]", b"\xff\xfe\x00", b"NaN", b"[" * 100_000])
def test_a_review_that_is_not_json_or_not_an_object_is_refused(tmp_path, data):
    (tmp_path / "r.json").write_bytes(data)
    with pytest.raises(InputError, match="review file"):
        load_review(tmp_path / "r.json")
    with pytest.raises(InputError, match="does not exist"):
        load_review(tmp_path / "missing.json")


@pytest.mark.parametrize("fraction", [0.05, 0.3, 0.5, 0.77, 1.0])
def test_keep_fraction_without_torch_decides_as_with_it(fraction):
    generator = torch.Generator().manual_seed(3)
    scores = torch.randint(0, 20, (101,), generator=generator).float() / 7  # many ties
    flags, boundary = keep_fraction_flags(scores.tolist(), fraction)
    decided, expected_boundary = keep_fraction_decisions(scores, fraction)
    assert flags.tolist() == decided.tolist() and boundary == expected_boundary
    assert int((~flags).sum()) == math.floor(fraction * 101 + 0.5)
