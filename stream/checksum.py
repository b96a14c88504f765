"""SHA-256 of a file: how a worker proves it runs the pipeline's model, how a batch job trusts a
finished piece or output, and how a converted model records its sources."""
from __future__ import annotations

import hashlib
import os

BLOCK_BYTES = 1 << 20


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 (hex) of a file's bytes, read in 1 MiB blocks. Raises OSError when it cannot be read."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(BLOCK_BYTES), b""):
            digest.update(block)
    return digest.hexdigest()
