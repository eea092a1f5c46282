"""WebDataset shards of real images for the shard tests: an image and a caption (txt or json) per sample."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path


def add_member(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    """Add a member ``name`` holding ``data``."""
    info = tarfile.TarInfo(name)
    info.size = len(data)
    archive.addfile(info, io.BytesIO(data))


def write_shards(folder: Path, images: list[Path], per_shard: int = 6) -> list[Path]:
    """Write WebDataset shards of ``images``: ``key.jpg`` + ``key.txt`` (even keys) or ``key.json`` (odd keys)."""
    folder.mkdir(parents=True, exist_ok=True)
    shards = []
    for number, start in enumerate(range(0, len(images), per_shard)):
        shard = folder / f"shard-{number:03d}.tar"
        with tarfile.open(shard, "w") as archive:
            for offset, image in enumerate(images[start:start + per_shard]):
                key = f"{start + offset:06d}"
                add_member(archive, f"{key}.jpg", image.read_bytes())
                caption = f"a photo of {image.stem.split('_', 1)[-1]}"
                if (start + offset) % 2:
                    add_member(archive, f"{key}.json", json.dumps({"caption": caption, "source": image.name}).encode())
                else:
                    add_member(archive, f"{key}.txt", caption.encode())
        shards.append(shard)
    return shards
