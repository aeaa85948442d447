"""The object-storage interface product images live behind, and a local-directory implementation.

Commerce stores only an image's key; bytes go through `ObjectStorage`, so an S3-compatible
store can replace the directory without touching the catalog. `public_url` is what pages
and the API show (settings.commerce_image_base_url + key).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Protocol


class ObjectStorage(Protocol):
    def put(self, key: str, data: bytes, *, content_type: str) -> str: ...
    def get(self, key: str) -> bytes: ...
    def public_url(self, key: str) -> str: ...


class LocalStorage:
    """Files under `root`; keys are relative paths (no '..')."""

    def __init__(self, root: Path, base_url: str = "/media/") -> None:
        self.root = Path(root)
        self.base_url = base_url if base_url.endswith("/") else base_url + "/"

    def _path(self, key: str) -> Path:
        if key.startswith("/") or ".." in Path(key).parts:
            raise ValueError(f"bad storage key {key!r}")
        return self.root / key

    def put(self, key: str, data: bytes, *, content_type: str) -> str:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return key

    def get(self, key: str) -> bytes:
        return self._path(key).read_bytes()

    def public_url(self, key: str) -> str:
        return self.base_url + key


def content_key(prefix: str, data: bytes, ext: str) -> str:
    """A content-addressed key, so re-uploading the same image stores it once."""
    return f"{prefix}/{hashlib.sha256(data).hexdigest()[:24]}.{ext.lstrip('.')}"
