"""int8 forms of one fp32 model compared in one run, on one corpus.

Makes each form with ONNX Runtime's own tools, then runs fp32 and every form
on the same notes the way the extension runs a batch (texts sorted by token
count, micro-batches of at most --batch-tokens padded tokens, each padded to
its own longest text, attention-mask mean pooling), in Python onnxruntime
(the library the extension loads) with one session option set as the
extension's defaults are (intra-op threads = CPUs, full graph optimization).
Prints, per form: notes/s, the ratio to fp32 in this run, and agreement with
fp32 (mean and minimum cosine, 10-nearest-neighbour overlap).  A form whose
vectors change with what a text is batched with runs one text per
micro-batch, as the extension runs it (its load-time probe: one short text
alone and beside a longer one, at core's tolerance of 2e-6; "batched" says
which).  Forms:

  dynamic        quantize_dynamic: s8 weights per output channel, u8
                 activations per batch (scripts/quantize-model.sh's default)
  dynamic-per-token
                 s8 weights per output channel, u8 activations per token
                 (quantize-model.sh --per-token: model_tools/quantize.py)
  dynamic-fused  the transformer optimizer's fusions (attention, LayerNorm,
                 GELU) first, then dynamic
  dynamic-attn8  dynamic with the activation x activation MatMuls
                 (Q.K^T, attention.V) quantized too (MatMulConstBOnly off)
  dynamic-attn32 dynamic with those MatMuls excluded by name (the same
                 graph as dynamic, whose default leaves them fp32)
  dynamic-last32 dynamic with the last two layers kept fp32
  static-u8s8    QDQ calibrated on other notes (MinMax): s8 weights per
                 channel, u8 activations per tensor
  static-s8s8    the same with s8 activations
  static-pct     static-u8s8 calibrated by percentile (99.999th of |x|)
  static-entropy static-u8s8 calibrated by entropy (KL divergence)
  nbits8         MatMulNBits, 8-bit weights in blocks of 32, accuracy
                 level 4 (int8 compute), written directly (ONNX Runtime's
                 MatMulNBitsQuantizer needs onnx_ir, not in the lock)
  nbits8-b256    the same in blocks of 256, its fastest kernel here

First it measures the GEMM ceilings (gemm_rates): how fast int8 multiplies
on this machine against fp32, the bound on what any form can gain.  With
--profile fp32 it also prints Amdahl's bound: fp32's time with its weight
MatMuls (the only ones int8 weights replace) sped up to the int8 ceiling and
everything else unchanged.  --keep DIR keeps each form as a model directory
(DIR/FORM, with the source's tokenizer and settings and the new sha256) for
bench/int8_pg.sh to run in PostgreSQL.

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
from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                      quantize_dynamic, quantize_static)

import gen_notes
from model_tools.quantize import per_token
from model_tools.agreement import compare
from model_tools.reference import max_length, tokenizer

FORMS = ["dynamic", "dynamic-per-token", "dynamic-fused", "dynamic-attn8", "dynamic-attn32", "dynamic-last32", "static-u8s8", "static-s8s8",
         "static-pct", "static-entropy", "nbits8", "nbits8-b256"]
NBITS_BLOCKS = (32, 128, 256)


def encode(model_dir, texts):
    tok = tokenizer(model_dir, max_length(model_dir))
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


def batch_invariant(path, model_dir, threads, tolerance=2e-6):
    """The extension's load-time probe (core/src/inference/model/load.rs,
    BATCH_INVARIANCE_TOLERANCE): is a short text's vector the same alone and
    padded beside a longer one?"""
    encs = encode(model_dir, ["probe", "a longer probe text, padded beside the short one: 1, 2, 3."])
    sess = session(path, threads)
    inputs = {i.name for i in sess.get_inputs()}
    output = sess.get_outputs()[0].name
    (_, alone), = feeds(encs[:1], [[0]], inputs)
    (_, both), = feeds(encs, [[0, 1]], inputs)
    a = sess.run([output], alone)[0][0, :len(encs[0].ids)].mean(axis=0)
    b = sess.run([output], both)[0][0, :len(encs[0].ids)].mean(axis=0)
    return float(np.abs(a - b).max()) <= tolerance


def session(path, threads):
    """A session of `path` (a file, or a model's bytes) as the extension
    opens one: `threads` intra-op threads, full graph optimization."""
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


def profile(path, encs, plan, threads, top=None):
    """Where one pass over the corpus spends its time, by operator type:
    ONNX Runtime's own profiler (kernel times summed over the nodes of each
    type, their share of all kernel time)."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.enable_profiling = True
    opts.profile_file_prefix = os.path.join(tempfile.gettempdir(), "clinembed-int8-profile")
    sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    inputs = {i.name for i in sess.get_inputs()}
    output = sess.get_outputs()[0].name
    for _, feed in feeds(encs, plan, inputs):
        sess.run([output], feed)
    trace = sess.end_profiling()
    by_type = {}
    for event in json.load(open(trace)):
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            op = event["args"].get("op_name", "?")
            if op in ("MatMul", "FusedMatMul"):
                # A Linear layer's MatMul multiplies by a 2-D weight matrix,
                # which ONNX Runtime prepacks and the profile then leaves out
                # of the inputs; attention's (FusedMatMul: Q.K^T with its
                # scale) multiply two activations.
                shapes = [list(d.values())[0] for d in event["args"].get("input_type_shape", [])]
                op += " (weights)" if len(shapes) < 2 or len(shapes[1]) == 2 else " (activations)"
            by_type[op] = by_type.get(op, 0) + event["dur"]
    os.remove(trace)
    total = sum(by_type.values())
    return [(op, us / 1e6, us / total) for op, us in sorted(by_type.items(), key=lambda x: -x[1])][:top]


def amdahl(rows, ceiling):
    """The most any int8-weight form can gain over the fp32 profile `rows`:
    its weight MatMuls `ceiling` times faster, the rest unchanged."""
    total = sum(sec for _, sec, _ in rows)
    weights = sum(sec for op, sec, _ in rows if op in ("MatMul (weights)", "FusedMatMul (weights)", "Gemm"))
    return weights / total, total / (total - weights + weights / ceiling)


def agreement(a, b, k=10):
    cos, overlap = compare(a, b, k)
    return float(cos.mean()), float(cos.min()), overlap


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


def dynamic(src, dst, exclude=(), const_b_only=True):
    quantize_dynamic(src, dst, weight_type=QuantType.QInt8, per_channel=True,
                     op_types_to_quantize=["MatMul", "Gemm", "Attention"], nodes_to_exclude=list(exclude),
                     extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT,
                                    "MatMulConstBOnly": const_b_only})


def fused(src, dst, heads, hidden):
    from onnxruntime.transformers.optimizer import optimize_model
    tmp = dst + ".fused.onnx"
    optimize_model(src, model_type="bert", num_heads=heads, hidden_size=hidden, opt_level=0).save_model_to_file(tmp)
    dynamic(tmp, dst)
    os.remove(tmp)


def windows(encs, inputs, width=128, rows=8):
    """Calibration feeds of one shape, [rows, width]: the first `width`
    tokens of every note that has as many ([SEP] kept last, no padding).
    ONNX Runtime's histogram calibrators (percentile, entropy) stack every
    batch's activations and so refuse batches of different lengths; every
    static form calibrates on these, so they differ only in the method."""
    picked = [e.ids[:width - 1] + e.ids[-1:] for e in encs if len(e.ids) >= width]
    out = []
    for i in range(0, len(picked) - rows + 1, rows):
        ids = np.array(picked[i:i + rows], np.int64)
        feed = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
        if "token_type_ids" in inputs:
            feed["token_type_ids"] = np.zeros_like(ids)
        out.append((None, feed))
    return out


class Notes(CalibrationDataReader):
    def __init__(self, feeds_):
        self.it = iter([f for _, f in feeds_])

    def get_next(self):
        return next(self.it, None)


def static(src, dst, calibration, activation, method=CalibrationMethod.MinMax):
    extra = {"ActivationSymmetric": activation == QuantType.QInt8}
    if method == CalibrationMethod.Percentile:
        extra.update(CalibPercentile=99.999)
    quantize_static(src, dst, calibration, quant_format=QuantFormat.QDQ, per_channel=True,
                    weight_type=QuantType.QInt8, activation_type=activation,
                    op_types_to_quantize=["MatMul", "Gemm"], calibrate_method=method, extra_options=extra)


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
    # The fp32 weights the MatMulNBits nodes replaced go.
    keep = [i for i in model.graph.initializer if i.name not in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    onnx.save(model, dst)


def gemm_rates(threads, m=4096, k=768, n=3072, repeats=8):
    """The GEMM ceilings, measured as bench/run.py measures the fp32 one: one
    ONNX Runtime operator of BERT-base's FFN shape (M x K by K x N) on
    `threads` threads, best of `repeats`, in G(FL)OP/s (2MKN per call):
    fp32 MatMul; int8 MatMulInteger (u8 activations, s8 weights); the
    operator dynamic quantization becomes after graph optimization,
    DynamicQuantizeMatMul (activations quantized in the call); and 8-bit
    MatMulNBits at accuracy level 4 in blocks of NBITS_BLOCKS."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((m, k), dtype=np.float32)
    w = rng.standard_normal((k, n), dtype=np.float32)
    wq = rng.integers(-127, 128, (k, n), dtype=np.int8)
    aq = rng.integers(0, 256, (m, k), dtype=np.uint8)
    fin = helper.make_tensor_value_info("a", onnx.TensorProto.FLOAT, [m, k])
    qin = helper.make_tensor_value_info("a", onnx.TensorProto.UINT8, [m, k])
    fout = helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [m, n])
    iout = helper.make_tensor_value_info("y", onnx.TensorProto.INT32, [m, n])
    scale = numpy_helper.from_array(np.full((n,), 0.01, np.float32), "ws")
    cases = {
        "fp32 MatMul": ([helper.make_node("MatMul", ["a", "w"], ["y"])], fin, fout,
                        [numpy_helper.from_array(w, "w")], a),
        "int8 MatMulInteger (u8s8)": ([helper.make_node("MatMulInteger", ["a", "w"], ["y"])], qin, iout,
                                      [numpy_helper.from_array(wq, "w")], aq),
        "int8 DynamicQuantizeMatMul": ([helper.make_node("DynamicQuantizeMatMul", ["a", "w", "ws"], ["y"],
                                                          domain="com.microsoft")], fin, fout,
                                       [numpy_helper.from_array(wq, "w"), scale], a),
    }
    for block in NBITS_BLOCKS:
        blocks = (k + block - 1) // block
        cases[f"8-bit MatMulNBits, level 4, b{block}"] = (
            [helper.make_node("MatMulNBits", ["a", "q", "s"], ["y"], domain="com.microsoft", K=k, N=n, bits=8,
                              block_size=block, accuracy_level=4)], fin, fout,
            [numpy_helper.from_array(rng.integers(0, 256, (n, blocks, block), dtype=np.uint8), "q"),
             numpy_helper.from_array(np.full((n * blocks,), 0.01, np.float32), "s")], a)
    rates = {}
    for name, (nodes, inp, out, inits, feed) in cases.items():
        graph = helper.make_graph(nodes, "gemm", [inp], [out], inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                        helper.make_opsetid("com.microsoft", 1)])
        model.ir_version = 8  # opset 17's; onnx 1.23 writes 14, which ONNX Runtime 1.31 refuses
        try:
            sess = session(model.SerializeToString(), threads)
            sess.run(None, {"a": feed})
            times = []
            for _ in range(repeats):
                t = time.perf_counter()
                sess.run(None, {"a": feed})
                times.append(time.perf_counter() - t)
            rates[name] = 2 * m * k * n / min(times) / 1e9
        except Exception as e:
            rates[name] = f"failed: {type(e).__name__}: {str(e).splitlines()[0][-160:]}"
    return rates


def keep(src_dir, model, dst_dir):
    """`model` as a model directory clinembed installs: the source's
    tokenizer, config and settings, the new sha256."""
    from model_tools.files import write_settings
    os.makedirs(dst_dir, exist_ok=True)
    shutil.copy(model, os.path.join(dst_dir, "model.onnx"))
    for f in ("tokenizer.json", "config.json"):
        if os.path.exists(os.path.join(src_dir, f)):
            shutil.copy(os.path.join(src_dir, f), dst_dir)
    cfg = os.path.join(src_dir, "clinembed.json")
    write_settings(dst_dir, json.load(open(cfg)) if os.path.exists(cfg) else {})


def make(form, src, dst, calibration, heads, hidden):
    model = onnx.load(src, load_external_data=False) if form in ("dynamic-attn32", "dynamic-last32") else None
    if form == "dynamic":
        dynamic(src, dst)
    elif form == "dynamic-per-token":
        per_token(src, dst)
    elif form == "dynamic-fused":
        fused(src, dst, heads, hidden)
    elif form == "dynamic-attn8":
        dynamic(src, dst, const_b_only=False)
    elif form == "dynamic-attn32":
        dynamic(src, dst, activation_matmuls(model))
    elif form == "dynamic-last32":
        dynamic(src, dst, last_layers(model, 2))
    elif form == "static-u8s8":
        static(src, dst, calibration(), QuantType.QUInt8)
    elif form == "static-s8s8":
        static(src, dst, calibration(), QuantType.QInt8)
    elif form == "static-pct":
        static(src, dst, calibration(), QuantType.QUInt8, CalibrationMethod.Percentile)
    elif form == "static-entropy":
        static(src, dst, calibration(), QuantType.QUInt8, CalibrationMethod.Entropy)
    elif form == "nbits8":
        nbits8(src, dst)
    elif form == "nbits8-b256":
        nbits8(src, dst, block=256)
    else:
        raise SystemExit(f"unknown form {form}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", help="fp32 model directory")
    ap.add_argument("--notes", type=int, default=200)
    ap.add_argument("--calibration-notes", type=int, default=128)
    ap.add_argument("--forms", default=",".join(FORMS))
    ap.add_argument("--batch-tokens", type=int, default=2048)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--profile", default="", help="comma-separated forms (fp32 too) to profile by operator type")
    ap.add_argument("--keep", help="keep each form as a model directory DIR/FORM (for bench/int8_pg.sh)")
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

    cal_feeds = windows(cal_encs, cal_inputs)

    def calibration():
        return Notes(cal_feeds)

    tokens = sum(len(e.ids) for e in encs)
    print(f"model: {args.model}; {len(texts)} notes of scripts/gen_notes.py (seed 20261126), {tokens} tokens, "
          f"{len(plan)} micro-batches of at most {args.batch_tokens} padded tokens; {args.threads} threads; "
          f"onnxruntime {ort.__version__}; best of {args.repeats}; static forms calibrated on {len(cal_feeds)} "
          f"batches of 8 x 128 tokens from {args.calibration_notes} other notes")
    rates = gemm_rates(args.threads)
    fp32 = rates["fp32 MatMul"]
    print("GEMM ceilings, BERT-base's FFN shape (4096x768 by 768x3072):")
    for name, rate in rates.items():
        print(f"  {name:<30} " + (f"{rate:7.0f} G(FL)OP/s  {rate / fp32:5.2f}x fp32" if isinstance(rate, float) else rate))
    work = tempfile.mkdtemp(prefix="clinembed-int8-forms.")
    profiled = {}
    try:
        t32, v32 = embed(src, encs, plan, args.threads, args.repeats)
        print(f"{'form':<18} {'notes/s':>8} {'x fp32':>7} {'cos mean':>9} {'cos min':>8} {'10-NN':>6} {'MB':>5} "
              f"{'make s':>7} batched")
        print(f"{'fp32':<18} {len(texts) / t32:8.2f} {1.0:7.2f} {1.0:9.5f} {1.0:8.5f} {1.0:6.3f} "
              f"{os.path.getsize(src) / 1e6:5.0f} {0.0:7.1f} {'yes' if batch_invariant(src, args.model, args.threads) else 'no'}",
              flush=True)
        # One text per micro-batch, in the same order, for a form the
        # extension would run so.
        alone = [[i] for rows in plan for i in rows]
        for form in [f for f in args.forms.split(",") if f]:
            dst = os.path.join(work, form + ".onnx")
            t = time.perf_counter()
            try:
                make(form, src, dst, calibration, heads, hidden)
                made = time.perf_counter() - t
                batched = batch_invariant(dst, args.model, args.threads)
                ti, vi = embed(dst, encs, plan if batched else alone, args.threads, args.repeats)
            except Exception as e:  # a form ONNX Runtime cannot make or run is a result too
                print(f"{form:<18} failed: {type(e).__name__}: {str(e).splitlines()[0][:160]}", flush=True)
                continue
            if args.keep:
                keep(args.model, dst, os.path.join(args.keep, form))
            if form in args.profile.split(","):
                profiled[form] = profile(dst, encs, plan if batched else alone, args.threads)
            mean, low, overlap = agreement(v32, vi)
            print(f"{form:<18} {len(texts) / ti:8.2f} {t32 / ti:7.2f} {mean:9.5f} {low:8.5f} {overlap:6.3f} "
                  f"{os.path.getsize(dst) / 1e6:5.0f} {made:7.1f} {'yes' if batched else 'no'}", flush=True)
            os.remove(dst)
        # The same fp32 pass again: how far this VM drifted during the run.
        again, _ = embed(src, encs, plan, args.threads, args.repeats)
        print(f"fp32 again at the end: {len(texts) / again:.2f} notes/s ({t32 / again - 1:+.1%} against the start)")
        if "fp32" in args.profile.split(","):
            profiled["fp32"] = profile(src, encs, plan, args.threads)
        for form, rows in profiled.items():
            print(f"profile of {form}, one pass, kernel time by operator type:")
            for op, sec, share in rows[:12]:
                print(f"  {op:<28} {sec:7.2f} s {share:6.1%}")
        if "fp32" in profiled:
            ceiling = rates["int8 DynamicQuantizeMatMul"] / fp32
            share, bound = amdahl(profiled["fp32"], ceiling)
            print(f"Amdahl's bound: fp32's weight MatMuls are {share:.1%} of its kernel time; at the int8 "
                  f"ceiling ({ceiling:.2f}x) and the rest unchanged, int8 weights gain at most {bound:.2f}x")
            total = sum(sec for _, sec, _ in profiled["fp32"])
            for form, rows in profiled.items():
                if form != "fp32":
                    print(f"  {form}: kernel time {total / sum(sec for _, sec, _ in rows):.2f}x less than fp32's")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
