"""oodfilter.integrations.datasets on a small local datasets.Dataset of real images."""

from __future__ import annotations

import pytest

import oodfilter
from oodfilter.errors import InputError
from oodfilter.scan import ScanConfig, scan
from oodfilter.sinks.manifest import read_manifest

datasets = pytest.importorskip("datasets", reason="the integration needs Hugging Face datasets (the dev extra)")
from oodfilter.integrations.datasets import add_ood_columns, filter_ood  # noqa: E402 (after the skip)

CLASSES = ["tench", "goldfish", "great white shark", "hen", "ostrich"]


@pytest.fixture
def image_dataset(real_images):
    """A Dataset with an Image column (real photos plus one corrupt image) and a label column."""
    files = [str(path) for path in real_images[:9]]
    data = {"image": [{"bytes": open(f, "rb").read(), "path": f} for f in files], "label": list(range(9))}  # noqa: SIM115
    data["image"].append({"bytes": b"\x89PNG\r\n\x1a\n broken", "path": "broken.png"})
    data["label"].append(9)
    features = datasets.Features({"image": datasets.Image(), "label": datasets.Value("int64")})
    return datasets.Dataset.from_dict(data, features=features), files


def _scorer(model, **kw):
    # clipn-clean: with the quoted reference captions these random weights put ATD above 0.9 for every image, and
    # the filter test needs a threshold (0.9) that keeps some.
    kw.setdefault("templates", "clipn-clean")
    return oodfilter.build_scorer(oodfilter.ScorerSpec(model="test-tiny", classes=CLASSES, device="cpu", **kw),
                                  model=model)


def test_columns_match_a_scan_of_the_same_files_and_a_bad_image_is_an_error_row(image_dataset, tiny_model,
                                                                                  tmp_path):
    dataset, files = image_dataset
    scored = add_ood_columns(dataset, _scorer(tiny_model, threshold=0.9), batch_size=4)
    assert scored.column_names == ["image", "label", "ood_score", "is_ood", "top_class", "ood_error"]
    assert scored["label"] == list(range(10)) and dataset.column_names == ["image", "label"]
    scan(ScanConfig(inputs=files, classes=CLASSES, out=str(tmp_path / "m.jsonl"), workers=0, threshold=0.9,
                    cache_dir=str(tmp_path / "cache"), templates="clipn-clean"), model=tiny_model)
    rows = {row.path: row for row in read_manifest(tmp_path / "m.jsonl")}
    scored = scored.select_columns(["ood_score", "is_ood", "top_class", "ood_error"])  # no image decoding here
    for index, file in enumerate(files):
        assert scored[index]["ood_score"] == pytest.approx(rows[file].ood_score, abs=1e-6)
        assert scored[index]["is_ood"] == rows[file].is_ood and scored[index]["top_class"] == rows[file].top_class
    broken = scored[9]
    assert broken["ood_score"] is None and broken["is_ood"] is None and broken["top_class"] is None
    assert broken["ood_error"] == "not a recognised image format"
    assert all(scored[index]["ood_error"] is None for index in range(9))


def test_filter_keeps_the_decided_rows_only(image_dataset, tiny_model):
    dataset, _ = image_dataset
    scorer = _scorer(tiny_model, threshold=0.9)
    everything = add_ood_columns(dataset, scorer).select_columns(["label", "is_ood"])
    kept, flagged = filter_ood(dataset, scorer), filter_ood(dataset, scorer, keep="ood")
    assert kept["label"] == [row["label"] for row in everything if row["is_ood"] is False]
    assert flagged["label"] == [row["label"] for row in everything if row["is_ood"] is True]
    assert len(kept) > 0 and len(kept) + len(flagged) == 9  # the corrupt image is in neither


def test_refusals_name_the_fix(image_dataset, tiny_model):
    dataset, _ = image_dataset
    with pytest.raises(InputError, match="no column 'picture'"):
        add_ood_columns(dataset, _scorer(tiny_model), image_column="picture")
    with pytest.raises(InputError, match="gives no decision without a threshold"):
        filter_ood(dataset, _scorer(tiny_model, method="msp"))
    scored = add_ood_columns(dataset, _scorer(tiny_model))
    with pytest.raises(InputError, match="already has ood_score"):
        add_ood_columns(scored, _scorer(tiny_model))


def test_streaming_and_dict_datasets_are_refused_and_an_empty_one_gets_the_columns(image_dataset, tiny_model):
    dataset, _ = image_dataset
    scorer = _scorer(tiny_model, threshold=0.9)
    with pytest.raises(InputError, match="streaming IterableDataset"):
        add_ood_columns(dataset.to_iterable_dataset(), scorer)
    with pytest.raises(InputError, match=r"dataset\['train'\]"):
        add_ood_columns(datasets.DatasetDict({"train": dataset}), scorer)
    empty = add_ood_columns(dataset.select([]), scorer)
    assert len(empty) == 0 and empty.column_names == ["image", "label", "ood_score", "is_ood", "top_class", "ood_error"]
