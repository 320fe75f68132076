"""Which folders a ModelVersion is made of: a base model folder plus the LoRA adapters of its lineage.

A version with `path` and no adapter is a full model (a base, or merged weights). A version
with `adapter_path` applies on top of what its parent resolves to (or on its own `path`
when that is set). So base -> SFT (adapter) -> DPO (adapter trained on the merged SFT model)
loads as: base weights, merge the SFT adapter, merge the DPO adapter.

    base, adapters = model_paths(version)        # ModelNotFound when no ancestor has a base
    loaded = inference.loading.load_model(base, adapters)

Only attribute access on the versions (path, adapter_path, parent, pk, name): loading itself
is Django-free and lives in inference/.
"""

from pathlib import Path

from django.conf import settings

from inference.model_folders import check_model_folder


class ModelNotFound(ValueError):
    pass


def resolve(version) -> tuple[str, list[str]]:
    """(base model folder, adapter folders to apply in order), as stored on the versions."""
    adapters: list[str] = []
    node, seen = version, set()
    while node is not None and node.pk not in seen:
        seen.add(node.pk)
        if node.adapter_path:
            adapters.append(node.adapter_path)
            if node.path:
                return node.path, list(reversed(adapters))
        elif node.path:
            return node.path, list(reversed(adapters))
        node = node.parent
    raise ModelNotFound(f"Model version {version.name!r} has no base model folder in its lineage.")


def resolve_path(path: str) -> str:
    """Model folders are absolute or relative to MODEL_DIR (then to the working directory). A folder
    present here must lie under settings.MODEL_FOLDER_ROOTS, symlinks resolved (ModelNotFound if not):
    its real path comes back, so the loader opens what was checked."""
    if not path:
        return ""
    p = Path(path).expanduser()
    if not (p.is_absolute() or p.exists()):
        candidate = Path(settings.MODEL_DIR) / p
        p = candidate if candidate.exists() else p
    if not p.exists():
        return str(p)
    try:
        return check_model_folder(str(p.absolute()), settings.MODEL_FOLDER_ROOTS)
    except ValueError as exc:
        raise ModelNotFound(f"Model folder refused: {exc}") from None


def model_paths(version) -> tuple[str, list[str]]:
    """(base folder, adapter folders to merge in order) on this machine, ready for load_model."""
    base, adapters = resolve(version)
    return resolve_path(base), [resolve_path(a) for a in adapters]


def check_folders(version) -> list[str]:
    """Human-readable problems with the folders a version needs (empty list when loadable)."""
    try:
        base, adapters = model_paths(version)
    except ModelNotFound as exc:
        return [str(exc)]
    problems = []
    if not (Path(base) / "config.json").is_file():
        problems.append(f"The base model folder {base} is missing or has no config.json.")
    for adapter in adapters:
        if not (Path(adapter) / "adapter_config.json").is_file():
            problems.append(f"The adapter folder {adapter} is missing or has no adapter_config.json.")
    return problems
