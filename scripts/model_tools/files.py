"""Helpers shared by the model tools."""

import hashlib
import json
import os


def sha256(path):
    """Hex SHA-256 of a file, as clinembed.json records it."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_settings(model_dir, settings):
    """MODEL_DIR/clinembed.json: SETTINGS, then the SHA-256 of MODEL_DIR's
    model.onnx, in the one format every model tool writes."""
    settings = dict(settings, sha256=sha256(os.path.join(model_dir, "model.onnx")))
    with open(os.path.join(model_dir, "clinembed.json"), "w") as out:
        json.dump(settings, out, indent=2)
        out.write("\n")
