"""Old public names keep working for one release, and each use warns with the new name."""

from __future__ import annotations

import importlib
import sys

import pytest
from PIL import Image

import oodfilter
from oodfilter.sinks.rows import ManifestRow


@pytest.mark.parametrize(("old", "new"), [("TextIndex", "ClassVectors"), ("build_text_index", "build_class_vectors"),
                                          ("scorers", "score_methods"), ("ImageScore", "ManifestRow")])
def test_old_top_level_names_warn_and_resolve_to_the_new_ones(old, new):
    with pytest.warns(DeprecationWarning, match=new):
        value = getattr(oodfilter, old)
    assert value is getattr(oodfilter, new)


@pytest.mark.parametrize("module", ["oodfilter.text.index", "oodfilter.text.store", "oodfilter.data.files",
                                    "oodfilter.data.encode"])
def test_old_modules_warn_on_import(module):
    sys.modules.pop(module, None)
    with pytest.warns(DeprecationWarning, match="deprecated"):
        importlib.import_module(module)


def test_score_paths_warns_and_gives_the_rows_of_score_files(tiny_model, cache_dir, tmp_path):
    image = tmp_path / "a.png"
    Image.new("RGB", (30, 30), (10, 200, 10)).save(image)
    spec = oodfilter.ScorerSpec(classes=["a", "b"], cache_dir=str(cache_dir))
    scorer = oodfilter.build_scorer(spec, model=tiny_model)
    with pytest.warns(DeprecationWarning, match="score_files"):
        old = scorer.score_paths([image, tmp_path / "missing.png"])
    new = [row for rows in oodfilter.score_files(scorer, [image, tmp_path / "missing.png"]) for row in rows]
    assert old == new and [row.status for row in new] == ["ok", "error"]


def test_dict_style_row_access_warns():
    row = ManifestRow("a.png", "ok", ood_score=0.25, is_ood=False, top_class="a", top_prob=0.9)
    with pytest.warns(DeprecationWarning):
        assert row["ood_score"] == 0.25
    with pytest.warns(DeprecationWarning):
        assert row.get("is_ood") is False
