"""``load_model``: the one way in from a name, a file or a folder to a ready CLIPN model.

It dispatches over bundle folders, reference checkpoints, the tiny test models, catalogue names
(``clipn-vitb16``), model-hub bundles and open_clip names; the building blocks live in lower modules
(:mod:`~oodfilter.model.build`, :mod:`~oodfilter.model.tiny`, :mod:`~oodfilter.model.bundle`,
:mod:`~oodfilter.model.convert`, :mod:`~oodfilter.model.download`, :mod:`~oodfilter.model.hub`), none of
which imports this one. :func:`model_has_trained_no_branch` (defined in the torch-free
:mod:`~oodfilter.model.no_branch`) answers from the name alone, before any weights are fetched, so that a
method the model cannot run fails at once.
"""

from __future__ import annotations

from pathlib import Path

import torch

from oodfilter.device import resolve_device
from oodfilter.model.build import build_from_open_clip
from oodfilter.model.bundle import load_bundle
from oodfilter.model.catalogue import catalogue_entry
from oodfilter.model.clipn import CLIPN
from oodfilter.model.convert import load_reference_checkpoint
from oodfilter.model.download import load_catalogue_model
from oodfilter.model.hub import fetch_hub_bundle, hub_bundle_manifest, parse_hub_name
from oodfilter.model.manifest import BUNDLE_MANIFEST
from oodfilter.model.no_branch import model_has_trained_no_branch as model_has_trained_no_branch  # re-exported
from oodfilter.model.pretrained import resolve_pretrained
from oodfilter.model.registration import TINY_HF_MODEL_NAME, TINY_MODEL_NAME
from oodfilter.model.tiny import build_tiny_hf_model, build_tiny_model


def load_model(
    model: str | Path = "ViT-B-16",
    pretrained: str | None = None,
    *,
    device: str | torch.device | None = "auto",
    cache_dir: str | Path | None = None,
) -> CLIPN:
    """Load a CLIPN model, ready for inference (eval mode, on ``device``).

    ``model`` may be:

    * a bundle folder written by :func:`oodfilter.save_bundle`, ``oodfilter finetune`` or
      ``oodfilter convert-clipn`` (trained no-branch included); its manifest and file hashes are
      always checked;
    * a reference CLIPN release checkpoint (``.pt``), converted on the fly (architecture ViT-B-16,
      or the one named by ``pretrained``);
    * a catalogue name (``clipn-vitb16``, see ``oodfilter models``): the reference weights, downloaded
      and converted to a bundle in the cache on first use, loaded from there afterwards without network;
    * ``hf-hub:ORG/REPO[@REVISION]``: an oodfilter bundle on the model hub (a repository holding an
      ``oodfilter.json``, fetched at a pinned commit and verified); a repository without one is loaded
      as open_clip's ``hf-hub:`` form, like ``local-dir:/path``;
    * an open_clip model name (``ViT-B-16``) with ``pretrained`` a tag (``laion2b_s34b_b88k``,
      downloaded from the model hub), a local weights file, or ``"random"`` for random weights
      (benchmarks); without ``pretrained``, ViT-B-16 and ViT-B-32 get CLIPN's LAION-2B tags. The
      no-branch starts as an untrained copy of the text tower;
    * an ``hf-hub:org/repo`` or ``local-dir:/path`` open_clip identifier;
    * ``test-tiny``: a tiny model with seeded random weights (no-branch included) for tests, and
      ``test-tiny-hf``, the same with a tiny BERT as its text tower (needs ``transformers``).

    Args:
        model: What to load (see above).
        pretrained: Pretrained tag or weights file for an open_clip name.
        device: ``auto`` (CUDA when present), ``cpu``, ``cuda`` or a ``torch.device``.
        cache_dir: Cache root for catalogue models (default ``$OODFILTER_CACHE_DIR`` or the user's cache).

    Raises:
        ModelLoadError: the name, tag or file cannot be resolved or loaded, or a bundle fails its
            checks; the message says why. ``ModelDownloadError`` (a subclass) when a catalogue model is
            not cached and cannot be downloaded now: the message names the URL and the command to
            install it by hand.

    """
    target = resolve_device(device)
    return _load(model, pretrained, cache_dir).to(target).eval()


def _load(model: str | Path, pretrained: str | None, cache_dir: str | Path | None) -> CLIPN:
    """Dispatch :func:`load_model` over the kinds of name (on the CPU)."""
    path = Path(model)
    name = str(model)
    hub = parse_hub_name(name)
    if path.is_dir() and (path / BUNDLE_MANIFEST).is_file():
        return load_bundle(path)
    if path.is_file():
        return load_reference_checkpoint(path, architecture=pretrained or "ViT-B-16")
    if name == TINY_MODEL_NAME:
        return build_tiny_model()
    if name == TINY_HF_MODEL_NAME:
        return build_tiny_hf_model()
    if catalogue_entry(name) is not None:
        return load_catalogue_model(name, cache_dir=cache_dir)
    if hub is not None and (manifest := hub_bundle_manifest(hub)) is not None:
        return load_bundle(fetch_hub_bundle(hub, manifest))
    return build_from_open_clip(name, resolve_pretrained(name, pretrained))

