"""A local write-ahead spool for fresh tokens the database could not take yet.

The provider has already spent the old refresh token when its answer arrives: from then on
the new tokens exist nowhere else. If their commit fails, they are written here, sealed
(the same bound ciphertexts the row will hold; no plain text), and kept until the commit
succeeds. A process that stops before then leaves the file behind, and the next process to
start on this spool stores it, if the row still holds the refresh token that was spent.

Each entry is one file, locked (flock) by the process that wrote it for as long as it
lives: a replay takes only files whose writer is gone.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import logging
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

_SUFFIX = ".spool.json"


@dataclass(frozen=True)
class SpooledOutcome:
    """A refresh outcome waiting to be stored: sealed tokens and columns, and its event."""

    connection_id: uuid.UUID
    user_id: uuid.UUID
    platform: str
    spent_refresh_token: str  # the ciphertext the row held when the refresh began
    values: dict[str, Any]  # the row's new columns; tokens are bound ciphertexts
    topic: str
    event_id: uuid.UUID
    key: bytes
    payload: bytes

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "connection_id": str(self.connection_id),
                "user_id": str(self.user_id),
                "platform": self.platform,
                "spent_refresh_token": self.spent_refresh_token,
                "values": {name: _encode(value) for name, value in self.values.items()},
                "topic": self.topic,
                "event_id": str(self.event_id),
                "key": base64.b64encode(self.key).decode(),
                "payload": base64.b64encode(self.payload).decode(),
            }
        ).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> SpooledOutcome:
        data = json.loads(raw)
        return cls(
            connection_id=uuid.UUID(data["connection_id"]),
            user_id=uuid.UUID(data["user_id"]),
            platform=data["platform"],
            spent_refresh_token=data["spent_refresh_token"],
            values={name: _decode(value) for name, value in data["values"].items()},
            topic=data["topic"],
            event_id=uuid.UUID(data["event_id"]),
            key=base64.b64decode(data["key"]),
            payload=base64.b64decode(data["payload"]),
        )


def _encode(value: Any) -> Any:
    return {"datetime": value.isoformat()} if isinstance(value, datetime) else value


def _decode(value: Any) -> Any:
    return datetime.fromisoformat(value["datetime"]) if isinstance(value, dict) else value


class SpoolEntry:
    """A written entry, locked by this process until it is discarded (stored, or moot)."""

    def __init__(self, path: Path, descriptor: int) -> None:
        self.path = path
        self._descriptor = descriptor

    def discard(self) -> None:
        """The outcome is stored (or moot): remove the entry."""
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self.release()

    def release(self) -> None:
        """Leave the entry for another process (this one is stopping): unlock, keep the file."""
        with contextlib.suppress(OSError):
            os.close(self._descriptor)


class TokenSpool:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def write(self, outcome: SpooledOutcome) -> SpoolEntry:
        """Durably write ``outcome`` (fsynced, then renamed into place) and keep it locked."""
        self.directory.mkdir(parents=True, exist_ok=True)
        name = f"{outcome.connection_id}-{outcome.event_id}"
        temporary = self.directory / f".{name}.tmp"
        final = self.directory / f"{name}{_SUFFIX}"
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX)
            os.write(descriptor, outcome.to_json())
            os.fsync(descriptor)
            os.rename(temporary, final)
            _fsync_directory(self.directory)
        except BaseException:
            os.close(descriptor)
            with contextlib.suppress(FileNotFoundError):
                temporary.unlink()
            raise
        return SpoolEntry(final, descriptor)

    def waiting(self) -> int:
        """Entries in the spool: rotated tokens whose commit has not succeeded yet."""
        if not self.directory.is_dir():
            return 0
        return sum(1 for _ in self.directory.glob(f"*{_SUFFIX}"))

    def orphans(self) -> Iterator[tuple[SpoolEntry, SpooledOutcome]]:
        """Entries whose writer is gone, each locked by this process while it is handled (an
        unreadable file is logged and left for an operator)."""
        if not self.directory.is_dir():
            return
        for path in sorted(self.directory.glob(f"*{_SUFFIX}")):
            try:
                descriptor = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                continue
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(descriptor)  # its writer still lives and is storing it
                continue
            entry = SpoolEntry(path, descriptor)
            if not path.exists():  # stored and removed between listing and locking
                entry.discard()
                continue
            try:
                outcome = SpooledOutcome.from_json(path.read_bytes())
            except (ValueError, KeyError, TypeError):
                log.error("Unreadable spool entry %s; left for an operator", path.name)
                os.close(descriptor)
                continue
            yield entry, outcome


def _fsync_directory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
