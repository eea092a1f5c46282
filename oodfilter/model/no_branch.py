"""Whether a model comes with a trained no-branch, from its name (and at most a manifest) alone.

Torch-free, so that a method the model cannot run (``atd`` with an open_clip name) is refused before
torch and open_clip are even imported, let alone weights fetched.
"""

from __future__ import annotations

from pathlib import Path

from oodfilter.model.catalogue import catalogue_entry
from oodfilter.model.manifest import BUNDLE_MANIFEST, read_manifest
from oodfilter.model.names import HUB_PREFIX, TINY_HF_MODEL_NAME, TINY_MODEL_NAME


def model_has_trained_no_branch(model: str | Path) -> bool:
    """Whether ``model`` (anything :func:`~oodfilter.load_model` takes) comes with a trained no-branch, from its name.

    Nothing but a manifest is read: a bundle folder's ``oodfilter.json``, a hub repository's
    ``oodfilter.json`` (a few kB). Reference checkpoints, catalogue names and ``test-tiny`` have one;
    open_clip names and hub repositories without a manifest have none.

    Raises:
        CheckpointError: a bundle folder's manifest is malformed.
        ModelLoadError: a hub repository or revision does not exist.

    """
    path = Path(model)
    name = str(model)
    if path.is_dir() and (path / BUNDLE_MANIFEST).is_file():
        return read_manifest(path).no_branch_trained
    if path.is_file() or name in (TINY_MODEL_NAME, TINY_HF_MODEL_NAME) or catalogue_entry(name) is not None:
        return True
    if not name.startswith(HUB_PREFIX):
        return False
    from oodfilter.model.hub import hub_no_branch_trained, parse_hub_name  # huggingface_hub: for hub names only

    hub = parse_hub_name(name)
    return hub is not None and hub_no_branch_trained(hub)
