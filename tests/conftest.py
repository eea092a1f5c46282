"""Shared fixtures: the tiny model, temporary caches, and the real image data under ../shared/data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def pytest_configure(config: pytest.Config) -> None:
    # Before any test module imports open_clip / huggingface_hub: never touch the network.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def tiny_model():
    """The registered test-tiny CLIPN (seeded random weights, trained-looking no-branch)."""
    import oodfilter

    return oodfilter.load_model("test-tiny", device="cpu")


@pytest.fixture
def fresh_tiny_model():
    """A test-tiny model built like any open_clip name: untrained no-branch copied from the yes tower."""
    from oodfilter.model.loading import build_from_open_clip

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        return build_from_open_clip("test-tiny").eval()


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    """An empty cache root for text vectors."""
    path = tmp_path / "cache"
    path.mkdir()
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The project's real image data (ImageNet sample, DTD, Tiny-ImageNet, WordNet); skips without it."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real image data not found at {SHARED_DATA} (only present in the project workspace and CI)")
    return SHARED_DATA
