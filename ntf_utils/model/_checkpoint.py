"""Atomic, code-free persistence of fields and training checkpoints.

* A saved field is one safetensors file: tensors plus a JSON document in the header's metadata.
  safetensors holds raw arrays only, so loading cannot execute code. A sha256 of the JSON and every
  tensor is stored next to them, so any changed byte (disk damage, an edited file) is detected.
* A training checkpoint (optimizer state, RNG state, counters) is written with ``torch.save`` and
  read with ``torch.load(weights_only=True)``, which refuses anything but tensors and plain
  containers.
* Every write goes to a temporary file in the same directory, is flushed to disk, then renamed
  over the target: a reader sees the old file or the new one, never half of one.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from pathlib import Path

import torch

__all__ = ["atomic_write", "check_directory", "save_field_file", "load_field_file", "save_training_checkpoint", "load_training_checkpoint", "save_selection", "load_selection", "remove_stale_temporaries"]

FORMAT_VERSION = 2  # 2: the header holds "ntf_sha256", a digest of the JSON and the tensors
TRAINING_CHECKPOINT = "training_checkpoint.pt"
TRAINING_FINGERPRINT = "training_checkpoint.json"
RESOLUTION_SELECTION = "resolution_selection.json"


def check_directory(path, what: str = "checkpoint_dir") -> None:
    """Raise a clear error when ``path`` (a folder to write into) or one of its parents is a file."""
    path = Path(path)
    for parent in (path, *path.parents):
        if parent.exists() and not parent.is_dir():
            raise NotADirectoryError(f"{what}={str(path)!r}: {parent} is a file, not a folder; pass a folder "
                                     "(an existing one, or a new path that is then created)")


def atomic_write(path: Path, write) -> None:
    """Call ``write(file_path)`` on a temporary sibling of ``path``, fsync it, rename it into place."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a directory; pass a file path (e.g. {path / 'field.safetensors'})")
    check_directory(path.parent, "the folder")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = str(path.parent / f".{path.name}.{secrets.token_hex(8)}.tmp")
    # O_EXCL: never clobber another writer's file; mode 0o666 & ~umask, like a plain open() (mkstemp's
    # 0o600 would make a saved field unreadable to the rest of a lab group)
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    mode = os.stat(tmp).st_mode & 0o777
    try:
        write(tmp)
        os.chmod(tmp, mode)  # some writers (safetensors) replace the file with a 0o600 one
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def save_field_file(path: Path, tensors: dict[str, torch.Tensor], metadata: dict) -> None:
    """Write tensors and a JSON metadata document as one safetensors file, atomically."""
    from safetensors.torch import save_file

    document = json.dumps({"format_version": FORMAT_VERSION, **metadata})
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    header = {"ntf": document, "ntf_sha256": _digest(document, tensors)}
    atomic_write(Path(path), lambda tmp: save_file(tensors, tmp, metadata=header))


def _digest(document: str, tensors: dict[str, torch.Tensor]) -> str:
    """sha256 of the JSON document and of every tensor's name, dtype, shape and bytes."""
    h = hashlib.sha256(document.encode())
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"\n{name}|{t.dtype}|{tuple(t.shape)}\n".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def load_field_file(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """Read a file written by :func:`save_field_file`; a damaged file gives a clear ``ValueError``."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no saved field at {path}; save one with field.save(path)")
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            header = handle.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise ValueError(
            f"{path} is not a readable ntf_utils field file (truncated, tampered with, or another format): {err}"
        ) from err
    if "ntf" not in header:
        raise ValueError(f"{path} is a safetensors file but not an ntf_utils field (no 'ntf' metadata)")
    try:
        metadata = json.loads(header["ntf"])
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: the field's JSON metadata is damaged: {err}") from err
    version = metadata.get("format_version", 0) if isinstance(metadata, dict) else None
    if not isinstance(version, int):
        raise ValueError(f"{path}: the field's JSON metadata is damaged (no integer format_version)")
    if version > FORMAT_VERSION:
        raise ValueError(f"{path} was written by a newer ntf_utils (format {version}); upgrade ntf_utils")
    if version >= 2 and header.get("ntf_sha256") != _digest(header["ntf"], tensors):
        raise ValueError(
            f"{path} fails its checksum: the file was damaged or modified after it was saved; "
            "restore it from a backup or save the field again"
        )
    return tensors, metadata


def save_training_checkpoint(directory: Path, payload: dict, fingerprint: str) -> None:
    """Write the resumable training state and its run fingerprint, atomically."""
    directory = Path(directory)
    payload = {**payload, "fingerprint": fingerprint}
    atomic_write(directory / TRAINING_CHECKPOINT, lambda tmp: torch.save(payload, tmp))
    note = {"fingerprint": fingerprint, "step": payload["state"]["step"]}
    atomic_write(directory / TRAINING_FINGERPRINT, lambda tmp: Path(tmp).write_text(json.dumps(note)))


def load_training_checkpoint(directory: Path, fingerprint: str) -> dict | None:
    """The checkpoint in ``directory`` when it belongs to this run; None when there is none.

    Raises
    ------
    ValueError
        When the directory holds a checkpoint of a different run (other data or config), or a
        damaged checkpoint.
    """
    directory = Path(directory)
    ckpt_path = directory / TRAINING_CHECKPOINT
    if not ckpt_path.exists():
        return None
    try:
        payload = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated zip, unpickling refused, ...
        raise ValueError(
            f"the training checkpoint {ckpt_path} cannot be read ({type(err).__name__}: {err}); "
            "delete it to start the fit from scratch"
        ) from err
    # the fingerprint inside the checkpoint is authoritative; the JSON note next to it is written
    # after it (a kill between the two leaves the note missing or one checkpoint behind)
    if not isinstance(payload, dict) or "state" not in payload:
        raise ValueError(f"{ckpt_path} is not an ntf_utils training checkpoint; delete it to start the fit from scratch")
    stored = payload.get("fingerprint")
    if stored is None:
        stored = _stored_fingerprint(directory)
    if stored != fingerprint:
        raise _different_run(directory)
    return payload


def save_selection(directory: Path, table: list[dict], fingerprint: str) -> None:
    """Record the outcome of ``tl.fit``'s resolution selection, so that a resumed fit skips it."""
    document = json.dumps({"fingerprint": fingerprint, "table": table})
    atomic_write(Path(directory) / RESOLUTION_SELECTION, lambda tmp: Path(tmp).write_text(document))


def load_selection(directory: Path, fingerprint: str) -> list[dict] | None:
    """The recorded selection table of this run; None when there is none.

    Raises
    ------
    ValueError
        When the directory holds the selection of a different run, or a damaged record.
    """
    path = Path(directory) / RESOLUTION_SELECTION
    if not path.exists():
        return None
    try:
        record = json.loads(path.read_text())
        stored, table = record["fingerprint"], record["table"]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise ValueError(f"{path} is damaged ({err}); delete it to choose the resolution again") from err
    if stored != fingerprint:
        raise _different_run(directory)
    return table


def _different_run(directory: Path) -> ValueError:
    return ValueError(
        f"checkpoint_dir {directory} holds a checkpoint of a different run (other data, genes or config); "
        "use a new checkpoint_dir, or delete the old checkpoint to start over"
    )


def remove_stale_temporaries(directory: Path) -> list[Path]:
    """Delete temporary checkpoint files left by a writer that was killed mid-write; returns them.

    They are never read (only complete files are renamed into place); this only frees the space.
    """
    stale = []
    for name in (TRAINING_CHECKPOINT, TRAINING_FINGERPRINT, RESOLUTION_SELECTION):
        for tmp in Path(directory).glob(f".{name}.*.tmp"):
            tmp.unlink(missing_ok=True)
            stale.append(tmp)
    return stale


def _stored_fingerprint(directory: Path) -> str | None:
    path = Path(directory) / TRAINING_FINGERPRINT
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())["fingerprint"]
    except (json.JSONDecodeError, KeyError) as err:
        raise ValueError(f"{path} is damaged ({err}); delete the checkpoint directory's files to start over") from err
