"""Filtering inside training pipelines: DataLoader wrappers, manifest filtering, torchdata nodes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, SequentialSampler, default_collate
from torchvision import transforms
from torchvision.datasets import ImageFolder

import oodfilter
from oodfilter.pipeline import FilteredLoader, ManifestFilter, OODFilter
from oodfilter.scan import ScanConfig, scan
from oodfilter.sinks.manifest import read_manifest


def _rows(scorer, paths):
    """Every row of ``paths``, in order (score_files yields them batch by batch)."""
    return [row for rows in oodfilter.score_files(scorer, paths) for row in rows]


NAMES = ["tench", "goldfish", "great white shark", "hen", "ostrich"]
USER_TRANSFORM = transforms.Compose([transforms.Resize((20, 20)), transforms.ToTensor()])


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory) -> Path:
    """Two class folders of generated photos-like images (no shared data needed)."""
    root = tmp_path_factory.mktemp("folder")
    rng = np.random.default_rng(0)
    for label in ("cats", "dogs"):
        (root / label).mkdir()
        for i in range(14):
            base = rng.integers(0, 255, 3)
            pixels = np.clip(base + rng.normal(0, 40, (40, 48, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / label / f"{label}_{i:02d}.png")
    return root


class PathDataset(Dataset):
    """Dict samples with a path and a label, the way many training sets look."""

    def __init__(self, root: Path) -> None:
        self.paths = sorted(str(p) for p in root.rglob("*.png"))

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index):
        return {"path": self.paths[index], "label": index % 2, "pixels": USER_TRANSFORM(Image.open(self.paths[index]))}


def _direct_scores(model, root: Path, cache_dir, method="atd"):
    index = oodfilter.build_class_vectors(model, NAMES, cache_dir=cache_dir)
    rows = _rows(oodfilter.Scorer(model, index, method), sorted(str(p) for p in root.rglob("*.png")))
    return {row.path: row.ood_score for row in rows}


@pytest.mark.parametrize("workers", [0, 2])
def test_tagging_imagefolder_matches_direct_scoring(tiny_model, image_folder, cache_dir, workers):
    ood_filter = OODFilter(tiny_model, NAMES, mode="tag", cache_dir=cache_dir)
    dataset = ImageFolder(str(image_folder), transform=USER_TRANSFORM)
    dataset.transform = ood_filter.wrap_transform(dataset.transform)
    loader = DataLoader(dataset, batch_size=5, num_workers=workers)
    scores, labels = [], []
    for (images, batch_labels), info in FilteredLoader(loader, ood_filter):
        assert images.shape[1:] == (3, 20, 20)  # the user's own view, untouched
        scores.append(info["ood_score"])
        labels.append(batch_labels)
        assert info["is_ood"].dtype == torch.bool
    expected = _direct_scores(tiny_model, image_folder, cache_dir)
    paths = [path for path, _ in dataset.samples]
    torch.testing.assert_close(torch.cat(scores), torch.tensor([expected[p] for p in paths]), rtol=1e-5, atol=1e-5)
    assert torch.cat(labels).tolist() == [label for _, label in dataset.samples]
    assert ood_filter.counters.seen == len(paths) and ood_filter.counters.dropped == 0


def test_tagging_dict_samples_adds_fields(tiny_model, image_folder, cache_dir):
    ood_filter = OODFilter(tiny_model, NAMES, mode="tag", cache_dir=cache_dir)
    dataset = ood_filter.wrap_dataset(PathDataset(image_folder), image="path")
    batch = next(iter(FilteredLoader(DataLoader(dataset, batch_size=4), ood_filter)))
    assert set(batch) == {"path", "label", "pixels", "ood_score", "is_ood"}
    expected = _direct_scores(tiny_model, image_folder, cache_dir)
    torch.testing.assert_close(batch["ood_score"], torch.tensor([expected[p] for p in batch["path"]]), atol=1e-5,
                               rtol=1e-5)


@pytest.mark.parametrize("workers", [0, 2])
def test_drop_mode_yields_exactly_the_id_samples(tiny_model, image_folder, cache_dir, workers):
    expected = _direct_scores(tiny_model, image_folder, cache_dir, method="msp")
    threshold = float(np.median(list(expected.values())))
    ood_filter = OODFilter(tiny_model, NAMES, method="msp", threshold=threshold, mode="drop", cache_dir=cache_dir)
    dataset = ood_filter.wrap_dataset(PathDataset(image_folder), image="path")
    kept = []
    for batch in FilteredLoader(DataLoader(dataset, batch_size=6, num_workers=workers), ood_filter):
        assert len(batch["path"]) == batch["pixels"].shape[0] == batch["label"].shape[0]
        kept += batch["path"]
    assert kept == [p for p in sorted(expected) if expected[p] <= threshold]
    counters = ood_filter.counters
    assert (counters.seen, counters.kept, counters.dropped) == (len(expected), len(kept), len(expected) - len(kept))


def test_refill_keeps_batches_full(tiny_model, image_folder, cache_dir):
    expected = _direct_scores(tiny_model, image_folder, cache_dir, method="msp")
    threshold = float(np.quantile(list(expected.values()), 0.6))
    ood_filter = OODFilter(tiny_model, NAMES, method="msp", threshold=threshold, mode="drop", cache_dir=cache_dir)
    dataset = ood_filter.wrap_dataset(PathDataset(image_folder), image="path")
    batches = list(FilteredLoader(DataLoader(dataset, batch_size=4), ood_filter, refill=True))
    sizes = [len(b["path"]) for b in batches]
    assert all(size == 4 for size in sizes[:-1]) and 0 < sizes[-1] <= 4
    assert [p for b in batches for p in b["path"]] == [p for p in sorted(expected) if expected[p] <= threshold]


def test_dropping_most_samples_warns(tiny_model, image_folder, cache_dir):
    ood_filter = OODFilter(tiny_model, NAMES, method="msp", threshold=-1.0, mode="drop", cache_dir=cache_dir,
                           min_seen=8)
    dataset = ood_filter.wrap_dataset(PathDataset(image_folder), image="path")
    with pytest.warns(UserWarning, match="dropped .* a wrong or incomplete class list"):
        assert list(FilteredLoader(DataLoader(dataset, batch_size=4), ood_filter)) == []


def test_unwrapped_batches_and_undecided_drop_are_refused(tiny_model, image_folder, cache_dir):
    ood_filter = OODFilter(tiny_model, NAMES, mode="tag", cache_dir=cache_dir)
    plain = DataLoader(PathDataset(image_folder), batch_size=4)
    with pytest.raises(oodfilter.InputError, match="wrap_transform"):
        next(iter(FilteredLoader(plain, ood_filter)))
    with pytest.raises(oodfilter.InputError, match="pass threshold="):
        OODFilter(tiny_model, NAMES, method="msp", mode="drop", cache_dir=cache_dir)


# ---- offline, from a scan manifest ---------------------------------------------------------------------

@pytest.fixture
def median_msp(tiny_model, image_folder, cache_dir) -> float:
    return float(np.median(list(_direct_scores(tiny_model, image_folder, cache_dir, method="msp").values())))


@pytest.fixture
def manifest(tiny_model, image_folder, tmp_path, cache_dir, median_msp) -> Path:
    out = tmp_path / "scan.jsonl"
    scan(ScanConfig(inputs=[str(image_folder)], classes=NAMES, out=str(out), cache_dir=str(cache_dir), workers=0,
                    method="msp", threshold=median_msp), model=tiny_model)
    return out


def test_manifest_subset_matches_the_manifest(manifest, image_folder):
    rows = {r.path: r for r in read_manifest(manifest)}
    dataset = ImageFolder(str(image_folder), transform=USER_TRANSFORM)
    subset = ManifestFilter(manifest).subset(dataset)
    kept = [dataset.samples[i][0] for i in subset.indices]
    assert kept == [p for p, _ in dataset.samples if not rows[p].is_ood]
    assert 0 < len(kept) < len(dataset)
    scores = sorted(r.ood_score for r in rows.values())
    stricter = ManifestFilter(manifest, threshold=scores[3]).subset(dataset)
    assert len(stricter) == 4


def test_manifest_must_cover_the_dataset(manifest, tmp_path):
    extra = tmp_path / "new.png"
    Image.new("RGB", (8, 8)).save(extra)
    with pytest.raises(oodfilter.InputError, match="does not cover 1 of 1 dataset files"):
        ManifestFilter(manifest).keep_indices([extra])


def test_manifest_sampler_drops_or_down_weights(manifest, image_folder):
    dataset = ImageFolder(str(image_folder))
    paths = [p for p, _ in dataset.samples]
    mf = ManifestFilter(manifest)
    keep = set(mf.keep_indices(paths))
    drawn = list(mf.sampler(paths, generator=torch.Generator().manual_seed(0)))
    assert sorted(drawn) == sorted(keep)
    weighted = list(mf.sampler(paths, ood_weight=1e-9, generator=torch.Generator().manual_seed(0)))
    assert len(weighted) == len(paths) and set(weighted) <= keep


def test_relative_manifest_paths_resolve_from_the_scan_folder(tiny_model, image_folder, tmp_path, cache_dir,
                                                              monkeypatch, median_msp):
    monkeypatch.chdir(image_folder.parent)
    out = tmp_path / "rel.jsonl"
    scan(ScanConfig(inputs=[image_folder.name], classes=NAMES, out=str(out), cache_dir=str(cache_dir), workers=0,
                    method="msp", threshold=median_msp), model=tiny_model)
    assert not read_manifest(out)[0].path.startswith("/")
    monkeypatch.chdir(tmp_path)
    dataset = ImageFolder(str(image_folder))
    assert len(ManifestFilter(out).subset(dataset)) == len(dataset) // 2


# ---- torchdata.nodes ---------------------------------------------------------------------------------

def _node_pipeline(ood_filter, dataset):
    nodes = pytest.importorskip("torchdata.nodes")
    from oodfilter.pipeline.nodes import OODFilterNode

    node = nodes.MapStyleWrapper(map_dataset=dataset, sampler=SequentialSampler(dataset))
    node = nodes.Batcher(node, batch_size=3, drop_last=False)
    node = nodes.Mapper(node, default_collate)
    return nodes.Loader(OODFilterNode(node, ood_filter))


def test_torchdata_node_checkpoint_resumes_exactly(tiny_model, image_folder, cache_dir):
    expected = _direct_scores(tiny_model, image_folder, cache_dir, method="msp")
    threshold = float(np.median(list(expected.values())))

    def make():
        ood_filter = OODFilter(tiny_model, NAMES, method="msp", threshold=threshold, mode="drop", cache_dir=cache_dir)
        return ood_filter, _node_pipeline(ood_filter, ood_filter.wrap_dataset(PathDataset(image_folder), "path"))

    first_filter, loader = make()
    iterator = iter(loader)
    head = [next(iterator)["path"] for _ in range(2)]
    state = loader.state_dict()
    rest = [batch["path"] for batch in iterator]
    final_counters = vars(first_filter.counters).copy()

    second_filter, restored = make()
    restored.load_state_dict(state)
    resumed = [batch["path"] for batch in restored]
    assert resumed == rest
    assert vars(second_filter.counters) == final_counters
    all_kept = [p for batch in head + rest for p in batch]
    assert all_kept == [p for p in sorted(expected) if expected[p] <= threshold]
    assert final_counters["seen"] == len(expected)
