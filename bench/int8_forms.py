"""int8 forms of one fp32 model compared in one run, on one corpus.

Makes each form with ONNX Runtime's own tools, then runs fp32 and every form
on the same notes the way the extension runs a batch (texts sorted by token
count, micro-batches of at most --batch-tokens padded tokens, each padded to
its own longest text, attention-mask mean pooling), in Python onnxruntime
(the library the extension loads) with one session option set as the
extension's defaults are (intra-op threads = CPUs, full graph optimization).
Prints, per form: notes/s, the ratio to fp32 in this run, and agreement with
fp32 (mean and minimum cosine, 10-nearest-neighbour overlap).  Forms:

  dynamic        quantize_dynamic: s8 weights per output channel, u8
                 activations per batch (scripts/quantize-model.sh today)
  dynamic-fused  the transformer optimizer's fusions (attention, LayerNorm,
                 GELU) first, then dynamic
  dynamic-attn32 dynamic with the activation x activation MatMuls
                 (Q.K^T, attention.V) kept fp32
  dynamic-last32 dynamic with the last two layers kept fp32
  static-u8s8    QDQ calibrated on other notes (MinMax): s8 weights per
                 channel, u8 activations per tensor
  static-s8s8    the same with s8 activations
  nbits8         MatMulNBits, 8-bit weights in blocks of 32, accuracy
                 level 4 (int8 compute), written directly (ONNX Runtime's
                 MatMulNBitsQuantizer needs onnx_ir, not in the lock)

    .venv/bin/python bench/int8_forms.py MODEL_DIR [--notes 200] [--forms a,b]
"""

import argparse
import json
import os
import shutil
import tempfile
import time

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper
from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType, quantize_dynamic,
                                      quantize_static)
from tokenizers import Tokenizer

import gen_notes
from model_tools.reference import max_length

FORMS = ["dynamic", "dynamic-fused", "dynamic-attn32", "dynamic-last32", "static-u8s8", "static-s8s8", "nbits8"]


def encode(model_dir, texts):
    tok = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
    tok.no_padding()
    tok.enable_truncation(max_length=max_length(model_dir))
    return [tok.encode(t, add_special_tokens=True) for t in texts]


def batches(encs, batch_tokens):
    """Micro-batches as the extension plans them: by token count, each at
    most batch_tokens padded tokens (a longer text alone)."""
    order = sorted(range(len(encs)), key=lambda i: len(encs[i].ids))
    out, cur = [], []
    for i in order:
        longest = max([len(encs[j].ids) for j in cur] + [len(encs[i].ids)])
        if cur and longest * (len(cur) + 1) > batch_tokens:
            out.append(cur)
            cur = []
        cur.append(i)
    if cur:
        out.append(cur)
    return out


def feeds(encs, plan, inputs):
    result = []
    for rows in plan:
        width = max(len(encs[i].ids) for i in rows)
        ids = np.zeros((len(rows), width), np.int64)
        mask = np.zeros((len(rows), width), np.int64)
        for r, i in enumerate(rows):
            n = len(encs[i].ids)
            ids[r, :n] = encs[i].ids
            mask[r, :n] = 1
        feed = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in inputs:
            feed["token_type_ids"] = np.zeros_like(ids)
        result.append((rows, feed))
    return result


def session(path, threads):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])


def embed(path, encs, plan, threads, repeats):
    """(best seconds of `repeats` passes over the corpus, the vectors)."""
    sess = session(path, threads)
    inputs = {i.name for i in sess.get_inputs()}
    output = sess.get_outputs()[0].name
    work = feeds(encs, plan, inputs)
    sess.run([output], work[0][1])  # warm up
    vecs = None
    best = float("inf")
    for _ in range(repeats):
        got = {}
        t = time.perf_counter()
        for rows, feed in work:
            hidden = sess.run([output], feed)[0]
            m = feed["attention_mask"][..., None].astype(np.float32)
            pooled = (hidden * m).sum(axis=1) / np.clip(m.sum(axis=1), 1e-9, None)
            for r, i in enumerate(rows):
                got[i] = pooled[r]
        best = min(best, time.perf_counter() - t)
        vecs = np.array([got[i] for i in range(len(encs))], np.float32)
    return best, vecs


def unit(m):
    return m / np.clip(np.linalg.norm(m, axis=1, keepdims=True), 1e-12, None)


def agreement(a, b, k=10):
    cos = np.sum(unit(a) * unit(b), axis=1)

    def nn(m):
        s = unit(m) @ unit(m).T
        np.fill_diagonal(s, -np.inf)
        return np.argsort(-s, axis=1)[:, :k]

    na, nb = nn(a), nn(b)
    overlap = np.mean([len(set(x) & set(y)) / k for x, y in zip(na, nb)])
    return float(cos.mean()), float(cos.min()), float(overlap)


# ------------------------------------------------------------ the forms
def weight_matmuls(model):
    """MatMul nodes whose second input is an initializer (the Linear layers)."""
    inits = {i.name for i in model.graph.initializer}
    return [n for n in model.graph.node if n.op_type == "MatMul" and n.input[1] in inits]


def activation_matmuls(model):
    inits = {i.name for i in model.graph.initializer}
    return [n.name for n in model.graph.node if n.op_type == "MatMul" and n.input[1] not in inits]


def last_layers(model, count):
    layers = sorted({int(p.split(".")[1]) for n in model.graph.node for p in n.name.split("/") if p.startswith("layer.")})
    keep = [f"layer.{i}" for i in layers[-count:]]
    return [n.name for n in model.graph.node if any(f"/{k}/" in n.name for k in keep)]


def dynamic(src, dst, exclude=()):
    quantize_dynamic(src, dst, weight_type=QuantType.QInt8, per_channel=True,
                     op_types_to_quantize=["MatMul", "Gemm", "Attention"], nodes_to_exclude=list(exclude),
                     extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})


def fused(src, dst, heads, hidden):
    from onnxruntime.transformers.optimizer import optimize_model
    tmp = dst + ".fused.onnx"
    optimize_model(src, model_type="bert", num_heads=heads, hidden_size=hidden, opt_level=0).save_model_to_file(tmp)
    dynamic(tmp, dst)
    os.remove(tmp)


class Notes(CalibrationDataReader):
    def __init__(self, feeds_):
        self.it = iter([f for _, f in feeds_])

    def get_next(self):
        return next(self.it, None)


def static(src, dst, calibration, activation):
    quantize_static(src, dst, calibration, quant_format=QuantFormat.QDQ, per_channel=True,
                    weight_type=QuantType.QInt8, activation_type=activation,
                    op_types_to_quantize=["MatMul", "Gemm"],
                    extra_options={"ActivationSymmetric": activation == QuantType.QInt8})


def nbits8(src, dst, block=32, accuracy_level=4):
    """Every Linear MatMul as com.microsoft MatMulNBits with 8-bit weights:
    symmetric per block of `block` along K, zero point 128 (the default for 8
    bits when none is given)."""
    model = onnx.load(src)
    inits = {i.name: i for i in model.graph.initializer}
    used = {}
    new_nodes = []
    for n in model.graph.node:
        if n.op_type != "MatMul" or n.input[1] not in inits:
            new_nodes.append(n)
            continue
        w = numpy_helper.to_array(inits[n.input[1]]).astype(np.float32)  # [K, N]
        k, cols = w.shape
        pad = (-k) % block
        wt = np.pad(w.T, ((0, 0), (0, pad)))  # [N, K + pad]
        blocks = wt.reshape(cols, -1, block)
        scale = np.abs(blocks).max(axis=2) / 127.0
        scale[scale == 0] = 1.0
        q = np.clip(np.round(blocks / scale[..., None]), -127, 127).astype(np.int16) + 128
        name = n.input[1]
        if name not in used:
            model.graph.initializer.append(numpy_helper.from_array(q.astype(np.uint8), name + "_q8"))
            model.graph.initializer.append(numpy_helper.from_array(scale.reshape(-1).astype(np.float32), name + "_s8"))
            used[name] = True
        new_nodes.append(helper.make_node("MatMulNBits", [n.input[0], name + "_q8", name + "_s8"], list(n.output),
                                          name=n.name + "_nbits8", domain="com.microsoft", K=k, N=cols, bits=8,
                                          block_size=block, accuracy_level=accuracy_level))
    del model.graph.node[:]
    model.graph.node.extend(new_nodes)
    keep = [i for i in model.graph.initializer if i.name not in used]
    added = [i for i in model.graph.initializer if i.name.endswith(("_q8", "_s8"))]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep + [i for i in added if i not in keep])
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    onnx.save(model, dst)


def make(form, src, dst, calibration, heads, hidden):
    model = onnx.load(src, load_external_data=False)
    if form == "dynamic":
        dynamic(src, dst)
    elif form == "dynamic-fused":
        fused(src, dst, heads, hidden)
    elif form == "dynamic-attn32":
        dynamic(src, dst, activation_matmuls(model))
    elif form == "dynamic-last32":
        dynamic(src, dst, last_layers(model, 2))
    elif form == "static-u8s8":
        static(src, dst, calibration(), QuantType.QUInt8)
    elif form == "static-s8s8":
        static(src, dst, calibration(), QuantType.QInt8)
    elif form == "nbits8":
        nbits8(src, dst)
    else:
        raise SystemExit(f"unknown form {form}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", help="fp32 model directory")
    ap.add_argument("--notes", type=int, default=200)
    ap.add_argument("--calibration-notes", type=int, default=64)
    ap.add_argument("--forms", default=",".join(FORMS))
    ap.add_argument("--batch-tokens", type=int, default=2048)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()

    src = os.path.join(args.model, "model.onnx")
    heads = hidden = 0
    cfg = os.path.join(args.model, "config.json")
    if os.path.exists(cfg):
        c = json.load(open(cfg))
        heads, hidden = c.get("num_attention_heads", 0), c.get("hidden_size", 0)
    texts = [row[4] for row in gen_notes.notes(args.notes, 20261126)]
    encs = encode(args.model, texts)
    plan = batches(encs, args.batch_tokens)
    # Calibration notes: another seed, so no note is both calibrated on and measured.
    cal_texts = [row[4] for row in gen_notes.notes(args.calibration_notes, 20261207)]
    cal_encs = encode(args.model, cal_texts)
    cal_inputs = {i.name for i in ort.InferenceSession(src, providers=["CPUExecutionProvider"]).get_inputs()}

    def calibration():
        return Notes(feeds(cal_encs, batches(cal_encs, args.batch_tokens), cal_inputs))

    tokens = sum(len(e.ids) for e in encs)
    print(f"model: {args.model}; {len(texts)} notes of scripts/gen_notes.py (seed 20261126), {tokens} tokens, "
          f"{len(plan)} micro-batches of at most {args.batch_tokens} padded tokens; {args.threads} threads; "
          f"onnxruntime {ort.__version__}; best of {args.repeats}")
    work = tempfile.mkdtemp(prefix="clinembed-int8-forms.")
    try:
        t32, v32 = embed(src, encs, plan, args.threads, args.repeats)
        print(f"{'form':<16} {'notes/s':>8} {'x fp32':>7} {'cos mean':>9} {'cos min':>8} {'10-NN':>6} {'MB':>5} {'make s':>7}")
        print(f"{'fp32':<16} {len(texts) / t32:8.2f} {1.0:7.2f} {1.0:9.5f} {1.0:8.5f} {1.0:6.3f} "
              f"{os.path.getsize(src) / 1e6:5.0f} {0.0:7.1f}", flush=True)
        for form in [f for f in args.forms.split(",") if f]:
            dst = os.path.join(work, form + ".onnx")
            t = time.perf_counter()
            try:
                make(form, src, dst, calibration, heads, hidden)
                made = time.perf_counter() - t
                ti, vi = embed(dst, encs, plan, args.threads, args.repeats)
            except Exception as e:  # a form ONNX Runtime cannot make or run is a result too
                print(f"{form:<16} failed: {type(e).__name__}: {str(e).splitlines()[0][:160]}", flush=True)
                continue
            mean, low, overlap = agreement(v32, vi)
            print(f"{form:<16} {len(texts) / ti:8.2f} {t32 / ti:7.2f} {mean:9.5f} {low:8.5f} {overlap:6.3f} "
                  f"{os.path.getsize(dst) / 1e6:5.0f} {made:7.1f}", flush=True)
            os.remove(dst)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
