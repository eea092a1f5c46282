"""The Ray engine reads an S3 bucket (moto on 127.0.0.1) without a shared file system: same rows as locally."""

from __future__ import annotations

import os
import shutil

import pytest
from servers import s3_server, upload

from oodfilter.scan import ScanConfig, scan
from oodfilter.sinks.manifest import read_manifest

ray = pytest.importorskip("ray", reason="the Ray engine test needs the ray extra")
pytest.importorskip("moto", reason="the S3 server needs moto (the dev extra)")
pytest.importorskip("s3fs", reason="s3:// needs s3fs (the dev extra)")

CLASSES = ["tench", "goldfish", "great white shark", "hen", "ostrich"]


@pytest.mark.slow
def test_ray_actors_score_an_s3_bucket_like_the_local_engine(tiny_model, real_images, tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for path in real_images[:8]:
        shutil.copy(path, folder / path.name)
    (folder / "corrupt.jpg").write_bytes(b"\xff\xd8 not really")

    def config(out, **kw):
        return ScanConfig(inputs=["s3://bucket/imgs/"], classes=CLASSES, out=str(tmp_path / out), workers=0,
                          cache_dir=str(tmp_path / "cache"), batch_size=4, **kw)

    with s3_server():
        upload(folder, "s3://bucket/imgs")
        # the actors learn the endpoint and credentials the way a cluster's nodes do: from their environment
        env = {name: os.environ[name] for name in os.environ if name.startswith("AWS_")}
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": env})
        try:
            scan(config("local.jsonl"), model=tiny_model)
            summary = scan(config("ray.jsonl", engine="ray"), model=tiny_model)
        finally:
            ray.shutdown()
    assert summary.total == 9 and summary.errors == 1
    local = {row.path: row for row in read_manifest(tmp_path / "local.jsonl")}
    remote = read_manifest(tmp_path / "ray.jsonl")
    assert {row.path for row in remote} == set(local) and len(remote) == 9
    for row in remote:
        expected = local[row.path]
        assert (row.status, row.is_ood, row.top_class) == (expected.status, expected.is_ood, expected.top_class)
        if row.status == "ok":
            assert row.ood_score == pytest.approx(expected.ood_score, abs=1e-5)
