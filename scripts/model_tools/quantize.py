"""Dynamic int8 quantization of a clinembed model directory.

Quantizes model.onnx's weights to int8 with onnxruntime's own tooling
(quantize_dynamic: int8 weights, activations quantized per batch at run time),
copies the tokenizer, config and settings, and records the new file's SHA-256
in clinembed.json, so the result is a model directory clinembed loads as is.

--per-token instead gives every token's activations a scale of its own
(per_token below): closer to fp32 and batch-invariant, but slower (bench/RESULTS.md, issue 29).
"""

import argparse
import json
import os
import shutil

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import QuantType, quantize_dynamic

from model_tools.files import sha256, write_settings


def per_token(src, dst):
    """Every Linear layer's MatMul (a MatMul by a 2-D initializer) as int8
    with one scale per token: the weights s8, symmetric, one scale per
    output channel; each row of the activations (one token) u8 with zero
    point 128 and the scale max|row| / 127, computed at run time.  The
    product runs in onnxruntime's MatMulIntegerToFloat (u8 x s8, VNNI's
    fast case, the weights' scales applied in the kernel), then one Mul by
    the rows' scales.  A token's result depends on its own row only, so the
    model is batch-invariant, unlike quantize_dynamic's one scale per batch.
    Everything else (attention's activation MatMuls, normalization, GELU,
    softmax) stays fp32."""
    model = onnx.load(src)
    inits = {i.name: i for i in model.graph.initializer}
    consts = {"per_token_inv127": np.array(1 / 127, np.float32), "per_token_eps": np.array(1e-12, np.float32),
              "per_token_offset": np.array(128.5, np.float32), "per_token_one": np.array(1.0, np.float32),
              "per_token_zero_point": np.array(128, np.uint8)}
    # ReduceMax takes its axes as an attribute before opset 18, as an input from it.
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    if opset >= 18:
        consts["per_token_axes"] = np.array([-1], np.int64)
    nodes, quantized, added = [], set(), []
    for n in model.graph.node:
        if n.op_type != "MatMul" or n.input[1] not in inits or len(inits[n.input[1]].dims) != 2:
            nodes.append(n)
            continue
        x, w_name, y = n.input[0], n.input[1], n.output[0]
        if w_name not in quantized:
            w = numpy_helper.to_array(inits[w_name]).astype(np.float32)  # [K, N]
            w_scale = np.abs(w).max(axis=0) / 127
            w_scale[w_scale == 0] = 1
            added += [numpy_helper.from_array(np.clip(np.round(w / w_scale), -127, 127).astype(np.int8), w_name + "_s8"),
                      numpy_helper.from_array(w_scale.astype(np.float32), w_name + "_scale")]
            quantized.add(w_name)
        p = n.name + "_per_token/"
        nodes += [
            helper.make_node("Abs", [x], [p + "abs"], name=p + "Abs"),
            helper.make_node("ReduceMax", [p + "abs", "per_token_axes"], [p + "max"], name=p + "ReduceMax", keepdims=1)
            if opset >= 18 else
            helper.make_node("ReduceMax", [p + "abs"], [p + "max"], name=p + "ReduceMax", axes=[-1], keepdims=1),
            helper.make_node("Mul", [p + "max", "per_token_inv127"], [p + "scale0"], name=p + "Mul0"),
            helper.make_node("Max", [p + "scale0", "per_token_eps"], [p + "scale"], name=p + "Max"),
            helper.make_node("Div", [x, p + "scale"], [p + "scaled"], name=p + "Div"),
            # + 128.5, then Cast's truncation: round half up, into 1..255
            helper.make_node("Add", [p + "scaled", "per_token_offset"], [p + "offset"], name=p + "Add"),
            helper.make_node("Cast", [p + "offset"], [p + "u8"], name=p + "Cast", to=TensorProto.UINT8),
            helper.make_node("MatMulIntegerToFloat", [p + "u8", w_name + "_s8", "per_token_one", w_name + "_scale",
                                                      "per_token_zero_point"], [p + "product"],
                             name=p + "MatMulIntegerToFloat", domain="com.microsoft"),
            helper.make_node("Mul", [p + "product", p + "scale"], [y], name=p + "Mul1"),
        ]
    if not quantized:
        raise SystemExit(f"{src}: no MatMul by a weight matrix to quantize")
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    keep = [i for i in model.graph.initializer if i.name not in quantized]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep + added + [numpy_helper.from_array(v, k) for k, v in consts.items()])
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    onnx.save(model, dst)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("src", help="fp32 model directory (model.onnx, tokenizer.json, ...)")
    ap.add_argument("dst", help="new int8 model directory")
    ap.add_argument("--per-tensor", action="store_true",
                    help="one scale per weight matrix instead of one per output channel (the default); on "
                         "trained all-MiniLM-L6-v2 it agreed at mean cosine 0.930, per channel 0.993")
    ap.add_argument("--fuse", action="store_true",
                    help="first fuse BERT's attention, layer norms and GELU with onnxruntime's transformer "
                         "optimizer (int8 attention as one QAttention operator); measured no faster here")
    ap.add_argument("--per-token", action="store_true",
                    help="one activation scale per token instead of per batch: on trained all-MiniLM-L6-v2 mean "
                         "cosine 0.997 (minimum 0.995) where the default gives 0.993 (0.985), batch-invariant, "
                         "and about 20%% slower")
    args = ap.parse_args()
    if args.per_token and (args.fuse or args.per_tensor):
        ap.error("--per-token quantizes the Linear layers itself: no --fuse or --per-tensor with it")

    os.makedirs(args.dst, exist_ok=True)
    src = os.path.join(args.src, "model.onnx")
    if args.fuse:
        # onnxruntime's BERT fusions first: quantization then produces fused
        # int8 attention (QAttention) instead of separate int8 MatMuls.
        from onnxruntime.transformers.optimizer import optimize_model
        fused = os.path.join(args.dst, "fused.onnx")
        optimize_model(src, model_type="bert", num_heads=0, hidden_size=0, opt_level=0).save_model_to_file(fused)
        src = fused
    if args.per_token:
        per_token(src, os.path.join(args.dst, "model.onnx"))
    else:
        quantize_dynamic(
            src,
            os.path.join(args.dst, "model.onnx"),
            weight_type=QuantType.QInt8,
            per_channel=not args.per_tensor,
            op_types_to_quantize=["MatMul", "Gemm", "Attention"],
            # the fused graph has com.microsoft operators that shape inference
            # cannot type
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )
    if args.fuse:
        os.remove(src)
    for f in ("tokenizer.json", "config.json"):
        if os.path.exists(os.path.join(args.src, f)):
            shutil.copy(os.path.join(args.src, f), args.dst)
    cfg = os.path.join(args.src, "clinembed.json")
    write_settings(args.dst, json.load(open(cfg)) if os.path.exists(cfg) else {})
    before = os.path.getsize(os.path.join(args.src, "model.onnx"))
    after = os.path.getsize(os.path.join(args.dst, "model.onnx"))
    print(f"quantized {args.src} -> {args.dst}: {before / 1e6:.0f} MB -> {after / 1e6:.0f} MB, "
          f"sha256 {sha256(os.path.join(args.dst, 'model.onnx'))}")


if __name__ == "__main__":
    main()
