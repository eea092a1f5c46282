"""The Ray Data engine on a real local Ray cluster (2 CPUs): same manifest as the local scan, and resume."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from oodfilter.scan import ScanConfig, scan
from oodfilter.sinks.features import data_path
from oodfilter.sinks.manifest import read_manifest, read_meta

ray = pytest.importorskip("ray", reason="the Ray engine test needs the ray extra")
CLASSES = ["tench", "goldfish", "great white shark", "hen", "ostrich"]


@pytest.fixture(scope="module")
def local_cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.mark.slow
def test_ray_scan_matches_local_scan_and_resumes(local_cluster, tiny_model, real_images, awkward_images, tmp_path):
    folder = tmp_path / "imgs"
    shutil.copytree(awkward_images[0], folder / "awkward", symlinks=True)
    (folder / "real").mkdir()
    for path in real_images:
        shutil.copy(path, folder / "real" / path.name)

    def config(out, **kw):
        return ScanConfig(inputs=[str(folder)], classes=CLASSES, out=str(tmp_path / out), workers=0,
                          cache_dir=str(tmp_path / "cache"), batch_size=6, **kw)

    scan(config("local.jsonl"), model=tiny_model)
    half = scan(config("ray.parquet", engine="ray", include=["real/*"]), model=tiny_model)
    assert half.scanned == len(real_images)
    resumed = scan(config("ray.parquet", engine="ray", resume=True), model=tiny_model)
    assert resumed.scanned == len(awkward_images[1])  # only what the first run left
    local = {row.path: row for row in read_manifest(tmp_path / "local.jsonl")}
    remote = read_manifest(tmp_path / "ray.parquet")
    assert len(remote) == len(local) and {row.path for row in remote} == set(local)
    for row in remote:
        expected = local[row.path]
        assert row.status == expected.status and row.error == expected.error
        if row.status == "ok":
            assert row.ood_score == pytest.approx(expected.ood_score, abs=1e-5)
            assert row.is_ood == expected.is_ood and row.top_class == expected.top_class


@pytest.mark.slow
def test_ray_actors_decide_with_the_calibrated_threshold(local_cluster, tiny_model, real_images, tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for path in real_images:
        shutil.copy(path, folder / path.name)

    def config(out, **kw):
        return ScanConfig(inputs=[str(folder)], classes=CLASSES, out=str(tmp_path / out), workers=0, method="mcm",
                          id_recall=0.9, calibrate_on=[str(folder)], cache_dir=str(tmp_path / "cache"),
                          batch_size=6, **kw)

    scan(config("local.jsonl"), model=tiny_model)
    scan(config("ray.jsonl", engine="ray"), model=tiny_model)
    threshold = read_meta(tmp_path / "ray.jsonl")["threshold"]
    assert threshold == pytest.approx(read_meta(tmp_path / "local.jsonl")["threshold"], abs=1e-6)
    remote = read_manifest(tmp_path / "ray.jsonl")
    assert all(row.is_ood is (row.score > threshold) for row in remote)  # mcm alone gives no decision
    assert sum(row.is_ood is False for row in remote) >= 0.9 * len(remote)  # calibrated on these very images
    local = {row.path: row.is_ood for row in read_manifest(tmp_path / "local.jsonl")}
    assert {row.path: row.is_ood for row in remote} == local


@pytest.mark.slow
def test_ray_scan_stores_the_same_features_as_the_local_scan(local_cluster, tiny_model, real_images, awkward_images,
                                                              tmp_path):
    folder = tmp_path / "imgs"
    shutil.copytree(awkward_images[0], folder / "awkward", symlinks=True)
    (folder / "real").mkdir()
    for path in real_images[:10]:
        shutil.copy(path, folder / "real" / path.name)

    def config(out, **kw):
        return ScanConfig(inputs=[str(folder)], classes=CLASSES, out=str(tmp_path / out), workers=0,
                          cache_dir=str(tmp_path / "cache"), batch_size=4, save_features=True, **kw)

    scan(config("local.jsonl"), model=tiny_model)
    scan(config("ray.jsonl", engine="ray"), model=tiny_model)
    rows = read_manifest(tmp_path / "ray.jsonl")
    assert [r.path for r in rows] == [r.path for r in read_manifest(tmp_path / "local.jsonl")]
    local = np.fromfile(data_path(tmp_path / "local.jsonl"), dtype="<f2")
    remote = np.fromfile(data_path(tmp_path / "ray.jsonl"), dtype="<f2")
    assert remote.size == sum(r.ok for r in rows) * tiny_model.embed_dim  # one feature per ok row, none for errors
    np.testing.assert_allclose(remote.astype(np.float32), local.astype(np.float32), atol=2e-3)
