"""Object storage behind an S3-shaped interface: put/get/exists by bucket and key.

Proof-of-delivery photos and product images go through this, so a deployment can move
from the local filesystem (the default) to any S3-compatible store without touching the
domains. Keys are content-addressed by the callers (SHA-256), which makes uploads
idempotent: the same photo uploaded twice is stored once.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path
from typing import Protocol

_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,510}$")


class ObjectStore(Protocol):
    def put(self, bucket: str, key: str, data: bytes, *, content_type: str = "application/octet-stream") -> str: ...
    def get(self, bucket: str, key: str) -> bytes: ...
    def exists(self, bucket: str, key: str) -> bool: ...


class LocalObjectStore:
    """Files under `root/bucket/key`, written atomically (temp file + rename)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def _path(self, bucket: str, key: str) -> Path:
        if not _KEY.match(bucket) or not _KEY.match(key) or ".." in key.split("/"):
            raise ValueError(f"invalid object name {bucket}/{key}")
        return self.root / bucket / key

    def put(self, bucket: str, key: str, data: bytes, *, content_type: str = "application/octet-stream") -> str:
        path = self._path(bucket, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            return key
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".upload-")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        return key

    def get(self, bucket: str, key: str) -> bytes:
        return self._path(bucket, key).read_bytes()

    def exists(self, bucket: str, key: str) -> bool:
        return self._path(bucket, key).exists()


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def content_key(data: bytes, *, suffix: str = "") -> str:
    """A content-addressed key: aa/bb/<sha256><suffix>."""
    digest = sha256_hex(data)
    return f"{digest[:2]}/{digest[2:4]}/{digest}{suffix}"
