"""Helpers shared by the model tools."""

import hashlib


def sha256(path):
    """Hex SHA-256 of a file, as clinembed.json records it."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
