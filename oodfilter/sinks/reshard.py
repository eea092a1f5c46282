"""Writing filtered WebDataset shards: each input shard without the left-out samples, into a new shard.

``scan shards/*.tar --action reshard --dest DIR`` writes ``DIR/<shard name>`` for each input shard: its
members in order, byte for byte with their tar headers (files, links, every field of a sample), except
those of the samples left out: the ones whose decision is the selected one (``--select ood``, the default,
leaves the OOD samples out) and the ones that could not be scored. Samples that were not scanned (no image
field) are kept and counted. A shard damaged part-way is written up to the damage, and the report says so.
The input shards are only read. An output shard is written under a temporary name, flushed, and published
without replacing anything: an existing file at its name stops the run before anything is written, so a
second run never overwrites a first.
"""

from __future__ import annotations

import io
import os
import secrets
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from oodfilter.data.remote import is_url
from oodfilter.data.shards import open_shard, sample_name, shard_index, split_member_name, split_sample_name
from oodfilter.errors import InputError
from oodfilter.real_path import real_path
from oodfilter.sinks.manifest import iter_manifest
from oodfilter.sinks.rows import ManifestRow

RESHARD = "reshard"


@dataclass
class ShardOutput:
    """One output shard: where it goes, how many scanned samples it keeps, unscanned ones it keeps, damage."""

    source: str
    destination: Path
    kept: int = 0
    scanned: int = 0
    unscanned: int = 0
    damage: str | None = None


@dataclass
class ReshardReport:
    """What ``--action reshard`` wrote (or, in a dry run, would write).

    Attributes:
        shards: One entry per input shard.
        dropped_selected: Samples left out because their decision was the selected one.
        dropped_errors: Samples left out because they could not be scored (error rows).
        written: Whether the shards were written (False for a dry run).

    """

    shards: list[ShardOutput] = field(default_factory=list)
    dropped_selected: int = 0
    dropped_errors: int = 0
    written: bool = False

    @property
    def kept(self) -> int:
        """Samples written to the output shards."""
        return sum(shard.kept for shard in self.shards)


def plan_reshard(samples: Iterable[str], dest: str | Path) -> list[ShardOutput]:
    """Return the output shard of each input shard of ``samples`` (``<shard>#<key>`` names), in input order.

    Raises:
        InputError: an input that is not a shard's sample, two input shards with the same file name, an
            output that would be an input shard, or an output shard that already exists.

    """
    outputs: dict[str, ShardOutput] = {}
    names: dict[str, str] = {}
    folder = Path(dest)
    for name in samples:
        parts = split_sample_name(name)
        if parts is None:
            raise InputError(f"--action reshard writes WebDataset shards and {name} is not a shard's sample; scan "
                             ".tar shards only, or use another --action")
        shard = parts[0]
        if shard in outputs:
            outputs[shard].scanned += 1
            continue
        base = shard.rsplit("/", 1)[-1]
        if base in names:
            raise InputError(f"shards {names[base]} and {shard} have the same file name, so their filtered copies "
                             f"would both be {folder / base}; reshard them into separate --dest folders")
        names[base] = shard
        destination = folder / base
        if os.path.lexists(destination):
            raise InputError(f"{destination} already exists and is never overwritten; choose an empty --dest")
        if not is_url(shard) and real_path(shard) == real_path(destination):
            raise InputError(f"--dest {dest} holds the input shard {shard}; choose another folder")
        outputs[shard] = ShardOutput(shard, destination, scanned=1)
    return list(outputs.values())


def reshard(manifest: str | Path, samples: list[str], dest: str | Path, *, select_ood: bool,
            dry_run: bool = False) -> ReshardReport:
    """Write each input shard's samples that are kept by the manifest's decisions into ``dest``.

    Args:
        manifest: The scan's manifest (one row per sample; a sample's first row counts).
        samples: The scan's inputs, ``<shard>#<key>`` names.
        dest: The folder of the output shards (created).
        select_ood: Leave out the samples decided OOD (True) or in-distribution (False).
        dry_run: Count only; write nothing.

    Raises:
        InputError: see :func:`plan_reshard`; a manifest row without a decision.

    """
    return reshard_rows(iter_manifest(manifest), samples, dest, select_ood=select_ood, dry_run=dry_run)


def reshard_rows(rows: Iterable[ManifestRow], samples: list[str], dest: str | Path, *, select_ood: bool,
                 dry_run: bool = False) -> ReshardReport:
    """Write each input shard's samples that ``rows``' decisions keep into ``dest`` (see :func:`reshard`).

    ``rows`` are a manifest's rows (a sample's first row counts), named as in ``samples``.

    Raises:
        InputError: see :func:`reshard`.

    """
    plan = plan_reshard(samples, dest)
    wanted = set(samples)
    dropped: set[str] = set()
    report = ReshardReport(plan)
    for row in rows:
        if row.path not in wanted:
            continue
        wanted.discard(row.path)
        if not row.ok:
            report.dropped_errors += 1
            dropped.add(row.path)
        elif row.is_ood is None:
            raise InputError(f"{row.path} has no decision, so it can be neither kept nor left out; give a "
                             "--threshold, --id-recall or --keep-fraction")
        elif row.is_ood is select_ood:
            report.dropped_selected += 1
            dropped.add(row.path)
    dropped |= wanted  # a sample without a row (none, after a complete scan) is not known to be clean
    scanned = set(samples)
    for output in plan:
        keys = [key for key in shard_index(output.source).samples if sample_name(output.source, key) not in dropped]
        output.kept = sum(sample_name(output.source, key) in scanned for key in keys)
        output.unscanned = len(keys) - output.kept
    if dry_run:
        return report
    Path(dest).mkdir(parents=True, exist_ok=True)
    for output in plan:
        _write_shard(output, dropped)
    report.written = True
    return report


def _write_shard(output: ShardOutput, dropped: set[str]) -> None:
    """Copy ``output``'s input shard without the dropped samples to a temporary file, then publish it (no replace)."""
    temporary = output.destination.with_name(f".{output.destination.name}.{secrets.token_hex(4)}.partial")
    try:
        with open(temporary, "xb") as handle:
            output.damage = _copy_members(output.source, handle, dropped) or shard_index(output.source).error
            handle.flush()
            os.fsync(handle.fileno())
        os.link(temporary, output.destination)  # fails if the name was taken meanwhile: nothing is replaced
    except FileExistsError as error:
        raise InputError(f"{output.destination} appeared during the run and is never overwritten; choose an empty "
                         "--dest") from error
    finally:
        temporary.unlink(missing_ok=True)


def _copy_members(shard: str, handle: IO[bytes], dropped: set[str]) -> str | None:
    """Stream ``shard``'s members into a tar on ``handle``, headers and bytes as they are, skipping ``dropped``.

    Returns why the copy stopped early (a damaged shard), or None.
    """
    copied = 0
    with open_shard(shard) as source_handle, tarfile.open(fileobj=source_handle, mode="r:") as source, \
            tarfile.open(fileobj=handle, mode="w", format=tarfile.PAX_FORMAT) as archive:
        try:
            while (member := source.next()) is not None:
                key, _ = split_member_name(member.name)
                if sample_name(shard, key) in dropped:
                    continue
                if member.isfile():
                    stream = source.extractfile(member)
                    data = stream.read() if stream is not None else b""
                    if len(data) != member.size:
                        raise tarfile.ReadError(f"{member.name} ends early")
                    archive.addfile(member, io.BytesIO(data))
                else:  # links and folders: their header is all they are
                    archive.addfile(member)
                copied += 1
        except (tarfile.TarError, EOFError, OSError) as failure:
            return f"the input shard is damaged after {copied} copied members ({failure}); the rest was not copied"
    return None
