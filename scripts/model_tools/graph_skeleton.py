"""A model.onnx as a small graph skeleton plus its checkpoint's weights.

  strip MODEL.onnx CHECKPOINT_DIR SKELETON.onnx MANIFEST.json
      Empties every initializer of MODEL.onnx whose data is exactly a tensor
      of CHECKPOINT_DIR/model.safetensors, as it is or transposed (a Linear
      weight as MatMul takes it), keeping its name, type and shape; writes
      what is left as SKELETON.onnx and, in MANIFEST.json, which tensor fills
      which initializer and the sha256 of MODEL.onnx and of the safetensors
      file.  Initializers no tensor matches stay in the skeleton.  Refuses
      unless filling the skeleton gives MODEL.onnx back byte for byte.
  fill SKELETON.onnx MANIFEST.json CHECKPOINT_DIR OUT.onnx
      Puts the checkpoint's tensors back and writes OUT.onnx, only if the
      safetensors file and the result have the manifest's sha256.

scripts/setup.sh makes the default model with fill, so it needs neither
PyTorch nor an exporter: only onnx and numpy (scripts/python-env.sh build).
"""

import argparse
import hashlib
import json
import os
import sys

import numpy as np
import onnx

from files import sha256

SAFETENSORS = "model.safetensors"
# safetensors' dtypes as ONNX's TensorProto data types and numpy's
# little-endian dtypes.
DTYPES = {
    "F64": (onnx.TensorProto.DOUBLE, "<f8"),
    "F32": (onnx.TensorProto.FLOAT, "<f4"),
    "F16": (onnx.TensorProto.FLOAT16, "<f2"),
    "I64": (onnx.TensorProto.INT64, "<i8"),
    "I32": (onnx.TensorProto.INT32, "<i4"),
    "I8": (onnx.TensorProto.INT8, "i1"),
    "U8": (onnx.TensorProto.UINT8, "u1"),
}
HOWS = ("as-is", "transpose")


def read_safetensors(path):
    """{name: (ONNX data type, numpy array)} of a safetensors file: an 8-byte
    little-endian header length, a JSON header, then the tensors' bytes."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 8:
        sys.exit(f"{path}: not a safetensors file")
    n = int.from_bytes(data[:8], "little")
    try:
        header = json.loads(data[8:8 + n])
    except ValueError:
        sys.exit(f"{path}: not a safetensors file (unreadable header)")
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] not in DTYPES:
            continue  # nothing in an ONNX export this tool can compare it with
        kind, dtype = DTYPES[info["dtype"]]
        start, end = info["data_offsets"]
        array = np.frombuffer(data, dtype=dtype, count=(end - start) // np.dtype(dtype).itemsize,
                              offset=8 + n + start)
        tensors[name] = (kind, array.reshape(info["shape"]))
    return tensors


def tensor_bytes(array, how):
    """The raw_data of an initializer filled from ARRAY: little-endian, C order."""
    return np.ascontiguousarray(array.T if how == "transpose" else array).tobytes()


def fill_model(model, tensors, initializers):
    """Puts the tensors back into MODEL's initializers, in place."""
    by_name = {t.name: t for t in model.graph.initializer}
    for name, (source, how) in sorted(initializers.items()):
        if name not in by_name:
            sys.exit(f"the skeleton has no initializer {name!r}")
        if source not in tensors:
            sys.exit(f"the checkpoint has no tensor {source!r} (for initializer {name!r})")
        init, (kind, array) = by_name[name], tensors[source]
        shape = array.shape[::-1] if how == "transpose" else array.shape
        if init.data_type != kind or tuple(init.dims) != tuple(shape):
            sys.exit(f"checkpoint tensor {source!r} ({how}) has type {kind} shape {list(shape)}, "
                     f"initializer {name!r} wants type {init.data_type} shape {list(init.dims)}")
        init.raw_data = tensor_bytes(array, how)


def strip(args):
    with open(args.model, "rb") as f:
        original = f.read()
    st_path = os.path.join(args.checkpoint, SAFETENSORS)
    tensors = read_safetensors(st_path)
    # Every tensor, as it is and transposed, by what an initializer would hold.
    index = {}
    for source, (kind, array) in sorted(tensors.items()):
        for how in HOWS if array.ndim == 2 else HOWS[:1]:
            shape = array.shape[::-1] if how == "transpose" else array.shape
            digest = hashlib.sha256(tensor_bytes(array, how)).digest()
            index.setdefault((kind, tuple(shape), digest), []).append((source, how))

    model = onnx.load_from_string(original)
    initializers, kept = {}, []
    for init in model.graph.initializer:
        key = (init.data_type, tuple(init.dims), hashlib.sha256(init.raw_data).digest())
        matches = index.get(key) if init.HasField("raw_data") else None
        if not matches:
            kept.append(init.name)
            continue
        # Equal data under several names: the initializer's own name first.
        source, how = next((m for m in matches if m[0] == init.name), matches[0])
        initializers[init.name] = [source, how]
        init.ClearField("raw_data")
    skeleton = model.SerializeToString()

    check = onnx.load_from_string(skeleton)
    fill_model(check, tensors, initializers)
    if check.SerializeToString() != original:
        sys.exit(f"filling the skeleton does not give {args.model} back byte for byte; nothing written")

    manifest = {
        "initializers": initializers,
        "sha256": {"model.onnx": hashlib.sha256(original).hexdigest(), SAFETENSORS: sha256(st_path)},
    }
    write_atomically(args.skeleton, skeleton)
    write_atomically(args.manifest, (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode())
    print(f"wrote {args.skeleton}: {len(skeleton)} bytes, {len(initializers)} initializers from the "
          f"checkpoint, {len(kept)} kept inline{': ' + ', '.join(kept) if kept else ''}")


def fill(args):
    with open(args.manifest) as f:
        manifest = json.load(f)
    try:
        want = {k: manifest["sha256"][k] for k in ("model.onnx", SAFETENSORS)}
        manifest["initializers"].items()
    except (KeyError, TypeError, AttributeError):
        sys.exit(f"{args.manifest}: not a manifest written by graph_skeleton.py strip")
    st_path = os.path.join(args.checkpoint, SAFETENSORS)
    if not os.path.isfile(st_path):
        sys.exit(f"no {SAFETENSORS} in {args.checkpoint}")
    got = sha256(st_path)
    if got != want[SAFETENSORS]:
        sys.exit(f"{st_path} is not the checkpoint the skeleton was made from: "
                 f"sha256 {got}, the manifest says {want[SAFETENSORS]}")
    with open(args.skeleton, "rb") as f:
        model = onnx.load_from_string(f.read())
    fill_model(model, read_safetensors(st_path), manifest["initializers"])
    data = model.SerializeToString()
    got = hashlib.sha256(data).hexdigest()
    if got != want["model.onnx"]:
        sys.exit(f"the filled model has sha256 {got}, the manifest says {want['model.onnx']}; "
                 f"{args.out} not written (another onnx or protobuf version serialises differently?)")
    write_atomically(args.out, data)
    print(f"wrote {args.out}: {len(data)} bytes, sha256 {got}")


def write_atomically(path, data):
    """PATH with DATA, renamed into place only when complete."""
    tmp = f"{path}.tmp.{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    s = sub.add_parser("strip", help="model.onnx to skeleton + manifest")
    s.add_argument("model")
    s.add_argument("checkpoint", help="directory with model.safetensors")
    s.add_argument("skeleton")
    s.add_argument("manifest")
    s.set_defaults(run=strip)
    f = sub.add_parser("fill", help="skeleton + manifest + checkpoint to model.onnx")
    f.add_argument("skeleton")
    f.add_argument("manifest")
    f.add_argument("checkpoint", help="directory with model.safetensors")
    f.add_argument("out")
    f.set_defaults(run=fill)
    args = ap.parse_args()
    args.run(args)


if __name__ == "__main__":
    main()
