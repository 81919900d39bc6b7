"""Checkpoints: written atomically with a checksum, read without unpickling arbitrary objects.

A checkpoint is a ``torch.save`` payload of plain containers of tensors, numbers and strings
(the model and optimiser state dicts, the step, RNG states, the config as JSON), read back
with ``torch.load(weights_only=True)``, which refuses anything else.

File layout (``persp3d-checkpoint`` version 2): one ASCII header line, then the payload::

    persp3d-checkpoint sha256=<64 hex digits> bytes=<payload length>\\n
    <the bytes of torch.save(state)>

:func:`load_checkpoint` checks the length and the SHA-256 before ``torch.load`` sees a byte,
so a truncated file or a flipped bit anywhere (header, tensors, pickle) is refused with an
error naming the file. Files written before the header existed (a bare ``torch.save`` zip)
still load, with a :class:`CheckpointWarning` that they carry no checksum.

Saving writes the whole file to a temporary name in the same folder, fsyncs it and renames
it over the old one: a crash or a full disk (``OSError``) at any moment leaves the previous
checkpoint whole. :func:`load_checkpoint_with_fallback` reads a run folder's ``last.pt``,
or its ``best.pt`` when that is missing or corrupt (or the other way round), with a warning.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "CheckpointWarning",
    "load_checkpoint",
    "load_checkpoint_with_fallback",
    "save_checkpoint",
]

_MAGIC = b"persp3d-checkpoint "
_HEADER = re.compile(rb"persp3d-checkpoint sha256=([0-9a-f]{64}) bytes=([0-9]{1,15})\n")
_HEADER_MAX = 128
_ZIP = b"PK\x03\x04"


class CheckpointWarning(UserWarning):
    """A checkpoint without a checksum was read, or a corrupt one was passed over."""


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically with a SHA-256 header.

    The file goes to a temporary name in the same folder, is flushed and fsync'ed, then
    renamed over ``path``: a crash or an ``OSError`` (a full disk) leaves the old file or the
    new one, never a part, and removes the temporary file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    torch.save(state, buf)
    payload = buf.getvalue()
    header = b"%ssha256=%s bytes=%d\n" % (
        _MAGIC,
        hashlib.sha256(payload).hexdigest().encode(),
        len(payload),
    )
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(header)
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _payload(path: Path, raw: bytes) -> bytes:
    """The verified ``torch.save`` bytes of a checkpoint file's contents ``raw``."""
    if raw.startswith(_MAGIC):
        match = _HEADER.match(raw[:_HEADER_MAX])
        if match is None:
            raise ValueError(f"{path}: corrupt checkpoint header (a damaged persp3d checkpoint)")
        digest, n = match.group(1).decode(), int(match.group(2))
        payload = raw[match.end() :]
        if len(payload) != n:
            raise ValueError(
                f"{path}: truncated or padded checkpoint: {len(payload)} bytes of payload, "
                f"the header says {n}"
            )
        if hashlib.sha256(payload).hexdigest() != digest:
            raise ValueError(
                f"{path}: checksum mismatch: the checkpoint is corrupt (bytes changed on disk)"
            )
        return payload
    if raw.startswith(_ZIP):
        warnings.warn(
            f"{path}: a checkpoint without a checksum (written by an older persp3d); "
            "corruption inside it cannot be detected",
            CheckpointWarning,
            stacklevel=3,
        )
        return raw
    if not raw:
        raise ValueError(f"{path}: empty file, not a persp3d checkpoint")
    raise ValueError(f"{path} is not a readable persp3d checkpoint (unknown file header)")


def load_checkpoint(
    path: str | os.PathLike, map_location: str | torch.device = "cpu"
) -> dict[str, Any]:
    """Read a checkpoint after checking its length and SHA-256, without unpickling arbitrary
    objects (``weights_only=True``).

    Raises:
        FileNotFoundError: there is no file at ``path``.
        ValueError: the file is truncated, fails its checksum, is not a checkpoint, or holds
            objects other than tensors and plain containers (a malicious pickle).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise ValueError(f"{path}: cannot read checkpoint ({err.strerror or err})") from err
    payload = _payload(path, raw)
    try:
        state = torch.load(io.BytesIO(payload), map_location=map_location, weights_only=True)
    except Exception as err:  # corrupt file or a pickle of foreign objects
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"{path} is not a readable persp3d checkpoint: {first}") from err
    if not isinstance(state, dict):
        raise ValueError(f"{path} is not a persp3d checkpoint (holds {type(state).__name__})")
    return state


def load_checkpoint_with_fallback(
    run_dir: str | os.PathLike,
    prefer: Sequence[str] = ("last.pt", "best.pt"),
    map_location: str | torch.device = "cpu",
    warn_missing: bool = True,
) -> tuple[dict[str, Any], Path]:
    """The first readable checkpoint of a run folder among ``prefer``, and its path.

    A truncated or corrupt file is passed over with a :class:`CheckpointWarning` naming it
    and the one used instead; so is a missing one unless ``warn_missing`` is false (a run
    that never validated has no ``best.pt``, and using its ``last.pt`` is expected).
    Resume prefers ``("last.pt", "best.pt")``, evaluation ``("best.pt", "last.pt")``.

    Raises:
        FileNotFoundError: ``run_dir`` is not a folder, or holds none of ``prefer``.
        ValueError: every one of them that exists is unreadable (the message lists why).
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"{run_dir}: no such run folder")
    problems: list[str] = []
    for name in prefer:
        path = run_dir / name
        if not path.is_file():
            problems.append(f"{name}: missing")
            continue
        try:
            state = load_checkpoint(path, map_location)
        except ValueError as err:
            problems.append(str(err))
            continue
        if problems and (warn_missing or not all(p.endswith(": missing") for p in problems)):
            warnings.warn(
                f"{run_dir}: using {name} instead ({'; '.join(problems)})",
                CheckpointWarning,
                stacklevel=2,
            )
        return state, path
    if all(p.endswith(": missing") for p in problems):
        raise FileNotFoundError(f"{run_dir}: no checkpoint ({', '.join(prefer)}) in the run folder")
    raise ValueError(f"{run_dir}: no readable checkpoint: {'; '.join(problems)}")
