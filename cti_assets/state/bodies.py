"""Raw answer bodies in an object store, by digest: s3:// (s3fs) or any fsspec URL.

Bodies are what makes a score traceable to the exact bytes a provider sent; kept in an object
store, every host reads the lineage of an answer another host paid for, and the databases keep
only the small index. Objects are `<base>/<digest[:2]>/<digest>.zlib`, written once (the name is
the content's digest, so a rewrite is harmless).
"""

from __future__ import annotations

import zlib
from typing import Any

from cti_assets.state.pg import StateBackendError
from cti_assets.state.urls import redact_url


class ObjectBodies:
    """Compressed bodies under an fsspec URL (an S3-compatible endpoint: AWS_ENDPOINT_URL)."""

    def __init__(self, url: str) -> None:
        from fsspec.core import url_to_fs

        self.where = redact_url(url)
        try:
            fs, root = url_to_fs(url)
        except (ImportError, ValueError) as exc:
            raise StateBackendError(f"cannot open the bodies store {self.where}: "
                                    f"{type(exc).__name__}") from None
        self._fs: Any = fs
        self._root = root.rstrip("/")
        protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
        self.backend = f"object store ({protocol})"

    def check(self) -> None:
        """StateBackendError, in one line, when the store's bucket (or folder) is not there or
        cannot be read: checked when a cache opens, before any provider is paid for an answer
        whose body could not then be kept."""
        where = self._root.split("/")[0] if "://" not in self._root else self._root
        try:
            present = self._fs.exists(where or self._root)
        except Exception as exc:  # noqa: BLE001 - s3fs/botocore raise many types
            raise StateBackendError(f"cannot reach the bodies store {self.where}: "
                                    f"{type(exc).__name__}: {redact_url(str(exc))[:200]}"
                                    ) from None
        if not present and self._fs.protocol not in ("file", "local") \
                and "file" not in self._fs.protocol:
            raise StateBackendError(f"the bodies store {self.where} has no bucket "
                                    f"{where!r}: create it, or fix CTI_BODIES_URL")

    def _path(self, digest: str) -> str:
        if not digest.isalnum():
            raise ValueError("a body digest is hexadecimal")
        return f"{self._root}/{digest[:2]}/{digest}.zlib"

    def put(self, digest: str, body: bytes) -> None:
        path = self._path(digest)
        if self._fs.protocol in ("file", "local") or "file" in self._fs.protocol:
            self._fs.makedirs(path.rpartition("/")[0], exist_ok=True)
        self._fs.pipe_file(path, zlib.compress(body, 6))

    def get(self, digest: str) -> bytes | None:
        try:
            data = self._fs.cat_file(self._path(digest))
        except FileNotFoundError:
            return None
        return zlib.decompress(data)
