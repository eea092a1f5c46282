"""Finding input files: order, extensions, recursion, patterns, globs and symlinks."""

from __future__ import annotations

from pathlib import Path

import pytest

from oodfilter.data.discovery import discover_images
from oodfilter.errors import InputError


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "images"
    for name in ("b.jpg", "a.PNG", "notes.txt", "sub/c.JpEg", "sub/deeper/d.webp", "skip/e.jpg"):
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    return root


def _names(found):
    return [item.relative.as_posix() for item in found]


def test_folders_are_walked_sorted_with_case_insensitive_extensions(tree):
    assert _names(discover_images([tree])) == ["a.PNG", "b.jpg", "skip/e.jpg", "sub/c.JpEg", "sub/deeper/d.webp"]
    assert _names(discover_images([tree], recursive=False)) == ["a.PNG", "b.jpg"]


def test_include_and_exclude_patterns(tree):
    assert _names(discover_images([tree], exclude=["skip/*"])) == ["a.PNG", "b.jpg", "sub/c.JpEg", "sub/deeper/d.webp"]
    assert _names(discover_images([tree], include=["*.jpg"])) == ["b.jpg", "skip/e.jpg"]


def test_globs_and_explicit_files(tree):
    found = discover_images([str(tree / "**" / "*.jpg"), tree / "notes.txt"])
    assert [item.path.name for item in found] == ["b.jpg", "notes.txt", "e.jpg"] or \
        sorted(item.path.name for item in found) == ["b.jpg", "e.jpg", "notes.txt"]
    # The same file named twice appears once.
    assert len(discover_images([tree / "b.jpg", tree / "b.jpg", tree])) == 5


def test_symlink_loops_are_not_followed_forever(tree):
    (tree / "sub" / "loop").symlink_to(tree, target_is_directory=True)
    found = discover_images([tree])
    assert len(found) == 5


def test_broken_symlinks_are_kept_for_reporting(tree):
    (tree / "gone.jpg").symlink_to(tree / "nowhere.jpg")
    assert "gone.jpg" in _names(discover_images([tree]))


def test_missing_inputs_are_clear_errors(tree):
    with pytest.raises(InputError, match="does not exist"):
        discover_images([tree / "nope"])
    with pytest.raises(InputError, match="matches nothing"):
        discover_images([str(tree / "*.gif")])
    with pytest.raises(InputError, match="no inputs"):
        discover_images([])
