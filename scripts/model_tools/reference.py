"""The notebook's method in Python, written once: the independent reference
the parity tier, the int8 agreement report and the export check compare with.

`Reference(model_dir)` embeds with a clinembed model directory the way the
notebook did and clinembed does, from Python onnxruntime and HF tokenizers:
special tokens added, truncation at min(max_length, the position limit, 2
less for RoBERTa-family models), no padding for one text, then the pooling
and normalisation of its clinembed.json over last_hidden_state (or
token_embeddings).  `framework_vectors(checkpoint, texts)` embeds with the
checkpoint itself in PyTorch (the original framework, not ONNX), mean
pooling; it imports torch only when called.

For cross-encoders (clinembed.json "kind": "cross-encoder"),
`PairReference(model_dir).score(query, text)` is the exported graph's one
logit for the pair, tokenized together and truncated longest first, and
`framework_scores(checkpoint, pairs)` the checkpoint's, run in PyTorch
through AutoModelForSequenceClassification.
"""

import inspect
import json
import os

import numpy as np

DEFAULT_MAX_LENGTH = 512
ROBERTA_FAMILY = ("roberta", "xlm-roberta", "camembert", "longformer")


def settings(model_dir):
    """The model's clinembed.json, or {}."""
    path = os.path.join(model_dir, "clinembed.json")
    return json.load(open(path)) if os.path.exists(path) else {}


def position_limit(model_dir):
    """Tokens the model can position (config.json), or None."""
    path = os.path.join(model_dir, "config.json")
    if not os.path.exists(path):
        return None
    cfg = json.load(open(path))
    limit = cfg.get("max_position_embeddings")
    if limit is not None and cfg.get("model_type") in ROBERTA_FAMILY:
        limit -= 2
    return limit


def max_length(model_dir):
    """The truncation length clinembed uses for this model."""
    wanted = settings(model_dir).get("max_length", DEFAULT_MAX_LENGTH)
    limit = position_limit(model_dir)
    return min(wanted, limit) if limit else wanted


def tokenizer(model_dir, max_length):
    """The model's tokenizer.json as clinembed uses it: truncation at
    `max_length`, no padding (one text at a time)."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
    tok.no_padding()
    tok.enable_truncation(max_length=max_length)
    return tok


def session(model_dir, threads=1):
    """Python onnxruntime's session of the model, on `threads` intra-op
    threads, with its input names."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    sess = ort.InferenceSession(os.path.join(model_dir, "model.onnx"), opts, providers=["CPUExecutionProvider"])
    return sess, {i.name for i in sess.get_inputs()}


class Reference:
    """The notebook's method, one text at a time.  `pooling` and `normalize`
    override the model's clinembed.json."""

    def __init__(self, model_dir, threads=1, pooling=None, normalize=None):
        s = settings(model_dir)
        self.pooling = pooling or s.get("pooling", "mean")
        self.normalize = s.get("normalize", False) if normalize is None else normalize
        assert self.pooling in ("mean", "cls", "max"), "the reference implements mean, cls and max pooling"
        self.max_length = max_length(model_dir)
        self.tok = tokenizer(model_dir, self.max_length)
        self.sess, self.inputs = session(model_dir, threads)
        outputs = [o.name for o in self.sess.get_outputs()]
        self.output = "last_hidden_state" if "last_hidden_state" in outputs else "token_embeddings"

    def embed(self, text):
        """(the text's vector as float32, its token count)."""
        enc = self.tok.encode(text, add_special_tokens=True)
        ids = np.array([enc.ids], dtype=np.int64)
        mask = np.array([enc.attention_mask], dtype=np.int64)
        feed = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self.inputs:
            feed["token_type_ids"] = np.array([enc.type_ids], dtype=np.int64)
        hidden = self.sess.run([self.output], feed)[0]
        m = mask[..., None].astype(np.float32)
        if self.pooling == "cls":
            pooled = hidden[:, 0, :]
        elif self.pooling == "max":
            # sentence-transformers: padding set to a large negative value
            pooled = np.where(m > 0, hidden, -1e9).max(axis=1)
        else:
            pooled = (hidden * m).sum(axis=1) / np.clip(m.sum(axis=1), 1e-9, None)
        if self.normalize:
            norm = np.linalg.norm(pooled.astype(np.float64), axis=1, keepdims=True)
            pooled = (pooled / np.clip(norm, 1e-12, None)).astype(np.float32)
        return pooled[0], len(enc.ids)


def framework_vectors(checkpoint, texts, max_length=DEFAULT_MAX_LENGTH, tokenizer_dir=None):
    """Mean-pooled vectors of `texts` from the checkpoint run in PyTorch
    through HF transformers, one text at a time, tokenized as the reference
    tokenizes (`tokenizer`) with the tokenizer.json in `tokenizer_dir`
    (default: the checkpoint's own)."""
    import torch
    from transformers import AutoModel

    torch.set_num_threads(1)
    tok = tokenizer(tokenizer_dir or checkpoint, max_length)
    model = AutoModel.from_pretrained(checkpoint).eval()
    # token type ids only for models that take them (not DistilBERT)
    types = "token_type_ids" in inspect.signature(model.forward).parameters
    out = []
    for text in texts:
        enc = tok.encode(text, add_special_tokens=True)
        feed = {"input_ids": torch.tensor([enc.ids]), "attention_mask": torch.tensor([enc.attention_mask])}
        if types:
            feed["token_type_ids"] = torch.tensor([enc.type_ids])
        with torch.no_grad():
            hidden = model(**feed).last_hidden_state
        m = feed["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        out.append(((hidden * m).sum(1) / m.sum(1).clamp(min=1e-9))[0].numpy())
    return out


def _pair_feed(tok, query, text, inputs, tensor):
    enc = tok.encode(query, pair=text, add_special_tokens=True)
    feed = {"input_ids": tensor([enc.ids]), "attention_mask": tensor([enc.attention_mask])}
    if "token_type_ids" in inputs:
        feed["token_type_ids"] = tensor([enc.type_ids])
    return feed


class PairReference:
    """A cross-encoder's score of one (query, text) pair: its `logits`."""

    def __init__(self, model_dir, threads=1):
        self.max_length = max_length(model_dir)
        self.tok = tokenizer(model_dir, self.max_length)
        self.sess, self.inputs = session(model_dir, threads)
        self.outputs = [o.name for o in self.sess.get_outputs()]

    def score(self, query, text):
        feed = _pair_feed(self.tok, query, text, self.inputs, lambda a: np.array(a, dtype=np.int64))
        return float(self.sess.run(["logits"], feed)[0][0][0])


def framework_scores(checkpoint, pairs, max_length=DEFAULT_MAX_LENGTH, tokenizer_dir=None):
    """The one logit of each (query, text) pair from the checkpoint run in
    PyTorch (AutoModelForSequenceClassification), one pair at a time,
    tokenized as `PairReference` tokenizes."""
    import torch
    from transformers import AutoModelForSequenceClassification

    torch.set_num_threads(1)
    tok = tokenizer(tokenizer_dir or checkpoint, max_length)
    model = AutoModelForSequenceClassification.from_pretrained(checkpoint).eval()
    inputs = set(inspect.signature(model.forward).parameters)
    out = []
    for query, text in pairs:
        feed = _pair_feed(tok, query, text, inputs, torch.tensor)
        with torch.no_grad():
            out.append(float(model(**feed).logits[0][0]))
    return out
