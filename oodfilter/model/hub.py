"""Bundles on the model hub: ``hf-hub:ORG/REPO[@REVISION]`` whose repository holds an ``oodfilter.json``.

Only the manifest is fetched first, so the name alone tells whether the repository is a bundle (and
whether its no-branch is trained) before any weights move. A bundle is then fetched as a snapshot of
exactly its files, pinned to the commit the manifest came from, and :func:`~oodfilter.model.bundle.load_bundle`
checks every file against the sha256 in the manifest. A repository without ``oodfilter.json`` stays
open_clip's ``hf-hub:`` form (an open_clip model with an untrained no-branch).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import hf_hub_download, snapshot_download
from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, HFValidationError

from oodfilter.errors import ModelLoadError
from oodfilter.model.manifest import BUNDLE_FILES, BUNDLE_MANIFEST, read_manifest
from oodfilter.model.names import HUB_PREFIX

_COMMIT = re.compile(r"[0-9a-f]{40}")


@dataclass(frozen=True)
class HubRef:
    """A repository on the model hub and an optional revision (branch, tag or commit)."""

    repo_id: str
    revision: str | None

    def __str__(self) -> str:
        return f"{HUB_PREFIX}{self.repo_id}" + (f"@{self.revision}" if self.revision else "")


def parse_hub_name(name: str) -> HubRef | None:
    """``hf-hub:ORG/REPO[@REVISION]`` → :class:`HubRef`; None for any other name."""
    if not name.startswith(HUB_PREFIX):
        return None
    repo_id, _, revision = name[len(HUB_PREFIX) :].partition("@")
    return HubRef(repo_id=repo_id, revision=revision or None)


def hub_bundle_manifest(ref: HubRef) -> Path | None:
    """Fetch only the repository's ``oodfilter.json``; None when it holds none (or, offline, none is cached).

    Raises:
        ModelLoadError: the repository or revision does not exist, or the hub refused the request.

    """
    try:
        return Path(hf_hub_download(ref.repo_id, BUNDLE_MANIFEST, revision=ref.revision))
    except EntryNotFoundError:  # also: offline and not cached
        if ref.revision is not None:
            raise ModelLoadError(
                f"{ref}: no {BUNDLE_MANIFEST} at revision {ref.revision} (or, offline, none in the local hub cache). "
                "Only oodfilter bundles take an @REVISION; open_clip's hf-hub form names a repository alone."
            ) from None
        return None
    except (HfHubHTTPError, HFValidationError, OSError) as error:
        raise ModelLoadError(f"{ref} cannot be read from the model hub: {error}") from error


def hub_no_branch_trained(ref: HubRef) -> bool:
    """Whether ``ref`` is a bundle with a trained no-branch (only its manifest is fetched)."""
    manifest = hub_bundle_manifest(ref)
    return manifest is not None and read_manifest(manifest.parent).no_branch_trained


def fetch_hub_bundle(ref: HubRef, manifest: Path) -> Path:
    """Fetch the bundle files of ``ref`` at the commit ``manifest`` came from; return the local folder.

    Raises:
        ModelLoadError: the files cannot be fetched.

    """
    commit = manifest.parent.name if _COMMIT.fullmatch(manifest.parent.name) else ref.revision
    try:
        folder = snapshot_download(ref.repo_id, revision=commit, allow_patterns=[BUNDLE_MANIFEST, *BUNDLE_FILES])
    except (HfHubHTTPError, HFValidationError, OSError) as error:
        raise ModelLoadError(f"{ref}: the bundle files cannot be fetched from the model hub: {error}") from error
    return Path(str(folder))
