"""Which local folders a model version may name as its model (``path``) or adapter (``adapter_path``).

    real = check_model_folder("qwen3-8b", roots=[MODEL_DIR, MEDIA_ROOT / "training"])  # ValueError if not

A model folder is read by the workers with ``from_pretrained`` (and tokenizer files, chat
templates, and for some formats code): a path typed into the API must not reach the rest of
the server's disk. The folder must lie, after ``..`` and every symlink are resolved, under one
of the roots (settings.MODEL_FOLDER_ROOTS: MODEL_DIR and where training saves adapters). A
relative path is relative to the first root (MODEL_DIR). The check runs when the path is given
and again when the folder is loaded, since a symlink may change in between.

Standard library only.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path


def check_model_folder(path: str, roots: Iterable[str | os.PathLike]) -> str:
    """The folder's real path (absolute, symlinks resolved) when it lies under one of ``roots``;
    ValueError with a message saying why otherwise."""
    text = str(path or "").strip()
    roots = [Path(r) for r in roots]
    if not text:
        raise ValueError("no folder given")
    if text.startswith("~"):
        raise ValueError("a path starting with ~ is not taken: give the folder's absolute path")
    if "\x00" in text:
        raise ValueError("the path holds a NUL character")
    if not roots:
        raise ValueError("no model folder is configured (settings.MODEL_FOLDER_ROOTS)")
    given = Path(text) if Path(text).is_absolute() else roots[0] / text
    real = Path(os.path.realpath(given))
    for root in roots:
        real_root = Path(os.path.realpath(root))
        if real == real_root or real_root in real.parents:
            return str(real)
    where = " or ".join(str(r) for r in roots)
    through = (
        " (through a symlink)" if Path(os.path.abspath(given)) != real and ".." not in given.parts else ""
    )
    raise ValueError(f"{text!r} is not a folder under {where}{through}; model folders must lie there")
