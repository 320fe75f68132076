"""A snapshot's files: the JSONL under MEDIA_ROOT, its row index beside it (``*.rows.bin``,
INDEX_DTYPE), its download bundle (``*.bundle.tar.gz`` and its record ``*.bundle.json``, see
bundle/), the temp files of a build in flight, and the preview read back from the JSONL and index.

The row index keeps, per row, its source, conversation, prompt hash (stable: the leakage
check compares it across snapshots), duplicate hashes (valid within one build only) and
token counts.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from django.conf import settings
from django.db import transaction
from django.db.models.signals import post_delete
from django.dispatch import receiver

from annotator.models import (
    Project,
)

from ..models import DatasetSnapshot
from .layouts import display_row

State = DatasetSnapshot.State


SOURCE_CODES = {"correction": 1, "reasonable": 2, "preference": 3, "both_bad": 4, "online": 5}


SOURCE_NAMES = {v: k for k, v in SOURCE_CODES.items()}


INDEX_DTYPE = np.dtype(
    [
        ("conversation", "<i8"),
        ("source_id", "<i8"),
        ("prompt", "<u8"),
        ("exact", "<u8"),
        ("normalised", "<u8"),
        ("prompt_tokens", "<u4"),
        ("target_tokens", "<u4"),
        ("rejected_tokens", "<u4"),
        ("source", "u1"),
    ]
)


def media_path(name: str) -> Path:
    return Path(settings.MEDIA_ROOT) / name


def file_name_for(snapshot: DatasetSnapshot) -> str:
    return f"datasets/{snapshot.project.slug}/{snapshot.pk}-{snapshot.kind}-v{snapshot.version}.jsonl"


def index_path(path: Path) -> Path:
    return path.with_name(path.name.removesuffix(".jsonl") + ".rows.bin")


def bundle_path(path: Path) -> Path:
    """The download bundle beside the JSONL (training/snapshots/bundle)."""
    return path.with_name(path.name.removesuffix(".jsonl") + ".bundle.tar.gz")


def bundle_info_path(path: Path) -> Path:
    """The bundle's record (manifest, size, sha256); present only once the bundle is complete."""
    return path.with_name(path.name.removesuffix(".jsonl") + ".bundle.json")


def bundle_temp(path: Path, token: str) -> Path:
    """A temp file of a bundle in the making (removed with the snapshot's other temp files)."""
    return path.with_name(f".{path.name}.{token}.bundle.tmp")


def _temp_paths(final: Path, token: str) -> tuple[Path, Path]:
    return final.with_name(f".{final.name}.{token}.tmp"), final.with_name(
        f".{index_path(final).name}.{token}.tmp"
    )


def _remove_temps(final: Path):
    for pattern in (
        f".{final.name}.*.tmp",
        f".{index_path(final).name}.*.tmp",
        f".{bundle_path(final).name}.*.tmp",
        f".{bundle_info_path(final).name}.*.tmp",
    ):
        for p in final.parent.glob(pattern):
            p.unlink(missing_ok=True)


def remove_files(snapshot: DatasetSnapshot):
    """The snapshot's file, its row index and any temp file of a build in flight."""
    final = media_path(snapshot.file.name) if snapshot.file else None
    if snapshot.project_id and snapshot.pk:
        try:
            final = final or media_path(file_name_for(snapshot))
        except Project.DoesNotExist:
            pass
    if final is None:
        return
    final.unlink(missing_ok=True)
    index_path(final).unlink(missing_ok=True)
    bundle_info_path(final).unlink(missing_ok=True)  # first: a bundle without its record is no bundle
    bundle_path(final).unlink(missing_ok=True)
    if final.parent.exists():
        _remove_temps(final)


def _map_index(path: Path) -> np.ndarray:
    """The row index, memory-mapped: a column read touches only that column's bytes."""
    if not path.exists() or path.stat().st_size == 0:
        return np.zeros(0, INDEX_DTYPE)
    return np.memmap(path, dtype=INDEX_DTYPE, mode="r")


def read_index(snapshot: DatasetSnapshot) -> np.ndarray:
    """A ready snapshot's row index (see INDEX_DTYPE), memory-mapped."""
    return _map_index(index_path(media_path(snapshot.file.name)))


def _fsync_dir(path: Path):
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def preview(snapshot: DatasetSnapshot, n: int = 20) -> list[dict]:
    """The first n rows of a ready snapshot as {row, source, …, context, target, rejected}."""
    if snapshot.status != State.READY or not snapshot.file:
        return []
    index = read_index(snapshot)[:n]
    rows = []
    with open(media_path(snapshot.file.name), "rb") as fh:
        for i, line in enumerate(fh):
            if i >= n:
                break
            item = {"row": i + 1, **display_row(snapshot.layout, json.loads(line))}
            if i < len(index):
                item.update(
                    source=SOURCE_NAMES.get(int(index["source"][i]), "?"),
                    source_id=int(index["source_id"][i]),
                    conversation_id=int(index["conversation"][i]),
                    prompt_tokens=int(index["prompt_tokens"][i]),
                    target_tokens=int(index["target_tokens"][i]),
                )
            rows.append(item)
    return rows


@receiver(post_delete, sender=DatasetSnapshot)
def remove_snapshot_files(sender, instance, **kwargs):
    """The file goes with the row, once the deletion is committed (a rolled-back delete keeps it)."""
    transaction.on_commit(lambda: remove_files(instance))
