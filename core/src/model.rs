//! A loaded embedding model: ONNX Runtime session, tokenizer and pooling.

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use ndarray::{Array2, Ix2, Ix3};
use ort::environment::Environment;
use ort::session::builder::GraphOptimizationLevel;
use ort::session::{Session, SessionInputValue};
use ort::value::{Outlet, Tensor, TensorElementType};

use crate::batch::Batch;
use crate::chunk::{ChunkOptions, Window};
use crate::error::{Error, ErrorKind, Result};
use crate::identity::PinnedFile;
use crate::pool;
use crate::settings::{self, ModelSettings, Pooling};
use crate::signals::with_signals_blocked;
use crate::tokenize::{Encoded, Encoder};

pub const MODEL_FILE: &str = "model.onnx";
pub const TOKENIZER_FILE: &str = "tokenizer.json";

/// How ONNX Runtime should run a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SessionOptions {
    /// Intra-op threads.  Inter-op threads are always 1 and spinning is off.
    pub intra_threads: usize,
    /// Use ONNX Runtime's CPU arena allocator (the extension's default).
    pub memory_arena: bool,
    /// Let idle intra-op threads spin waiting for work instead of sleeping.
    pub spinning: bool,
}

impl Default for SessionOptions {
    fn default() -> Self {
        SessionOptions {
            intra_threads: 1,
            memory_arena: true,
            spinning: false,
        }
    }
}

/// Which graph output the vectors come from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Output {
    /// Per-token states `[batch, seq, dim]` (`last_hidden_state` or `token_embeddings`).
    Tokens(String),
    /// Already pooled `[batch, dim]` (`sentence_embedding`).
    Sentence(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IdType {
    I64,
    I32,
}

/// Bounds for one batched call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLimits {
    /// Padded tokens (rows × longest row) per micro-batch.
    pub micro_batch_tokens: usize,
    /// Texts per call.
    pub max_texts: usize,
    /// Tokens per call, after truncation.
    pub max_tokens: usize,
}

/// Padded tokens per micro-batch unless configured otherwise: on BERT-base
/// as fast as any budget from 512 to 8192, with less memory than larger ones,
/// and short enough for a cancel to land within about a second.
pub const DEFAULT_MICRO_BATCH_TOKENS: usize = 2048;

/// The padded tokens per micro-batch for a session that asks for `requested`
/// under a server's ceiling `ceiling`: the smaller, and at least one.
pub fn micro_batch_budget(requested: i32, ceiling: i32) -> usize {
    requested.min(ceiling).max(1) as usize
}

impl Default for BatchLimits {
    fn default() -> Self {
        BatchLimits {
            micro_batch_tokens: DEFAULT_MICRO_BATCH_TOKENS,
            max_texts: 100_000,
            max_tokens: 4_000_000,
        }
    }
}

/// How often, in texts, tokenizing a large call stops to run the caller's
/// check (for interrupts).
const TOKENIZE_CHECK_EVERY: usize = 256;

/// Largest difference between a text embedded alone and inside a padded
/// micro-batch for the model to count as batch-invariant.  Dynamically
/// quantized (int8) graphs compute one quantization scale over the whole batch
/// tensor, so their results depend on the other rows; such models run one
/// text per micro-batch.
const BATCH_INVARIANCE_TOLERANCE: f32 = 2e-6;

/// What a loaded model is, for reporting.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    pub dir: PathBuf,
    pub dimensions: usize,
    pub max_length: usize,
    pub pooling: Pooling,
    pub normalize: bool,
    pub inputs: Vec<String>,
    pub output: String,
    /// Whether texts embedded in a padded micro-batch equal texts embedded
    /// alone; if not, batched calls run one text at a time.
    pub batch_invariant: bool,
    /// Whether `model.onnx` was checked against the `sha256` recorded in
    /// `clinembed.json` at load (only when one is recorded).
    pub checksum_verified: bool,
}

/// What one loaded model has done since it loaded.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    /// Seconds the load took, probes included.
    pub load_seconds: f64,
    /// Texts run through the model (each row of each micro-batch).
    pub texts: u64,
    /// Tokens of those texts, after truncation, without padding.
    pub tokens: u64,
    /// ONNX Runtime runs (micro-batches).
    pub runs: u64,
}

pub struct Embedder {
    session: Session,
    encoder: Encoder,
    has_token_type_ids: bool,
    id_type: IdType,
    output: Output,
    info: ModelInfo,
    usage: Usage,
    /// `model.onnx` and `tokenizer.json` as they were when the session loaded.
    files: Vec<PinnedFile>,
    identity: Option<String>,
}

impl Embedder {
    /// Loads the model directory `dir`: `model.onnx`, `tokenizer.json`, and
    /// optionally `clinembed.json` and `config.json`.  Validates the graph's
    /// inputs and outputs and runs one tiny input through it, so a model that
    /// loads is a model that runs.
    pub fn load(env: &Environment, dir: &Path, opts: &SessionOptions) -> Result<Self> {
        let started = std::time::Instant::now();
        if !dir.is_dir() {
            return Err(Error::new(ErrorKind::NotFound, "model directory not found")
                .detail(format!("No directory at \"{}\".", dir.display()))
                .hint("Set clinembed.model to an installed model name or to the absolute path of a directory holding model.onnx and tokenizer.json."));
        }
        let model_path = dir.join(MODEL_FILE);
        if !model_path.is_file() {
            return Err(Error::new(ErrorKind::NotFound, "model.onnx not found")
                .detail(format!("No readable file at \"{}\".", model_path.display()))
                .hint("A model directory holds model.onnx and tokenizer.json."));
        }
        // Held open from before the session reads them: the identity is
        // hashed from these, whatever happens to the directory later.
        let files = vec![
            PinnedFile::open(&model_path)?,
            PinnedFile::open(&dir.join(TOKENIZER_FILE))?,
        ];
        let settings = ModelSettings::load(dir)?;
        if let Some(want) = &settings.sha256 {
            let got = crate::identity::hex(&files[0].sha256()?);
            if !got.eq_ignore_ascii_case(want.trim()) {
                return Err(Error::new(
                    ErrorKind::InvalidModel,
                    "model.onnx does not match its recorded checksum",
                )
                .detail(format!(
                    "clinembed.json in \"{}\" records sha256 {}; the file has {got}.",
                    dir.display(),
                    want.trim()
                ))
                .hint("Reinstall the model files, or update sha256 in clinembed.json if the model was changed on purpose."));
            }
        }
        let max_length =
            settings::effective_max_length(settings.max_length, settings::position_limit(dir)?);
        let encoder = Encoder::from_file(&dir.join(TOKENIZER_FILE), max_length)?;

        let session = with_signals_blocked(|| build_session(env, &model_path, opts))?;
        let (has_token_type_ids, id_type) = check_inputs(session.inputs())?;
        let output = pick_output(session.outputs(), settings.pooling)?;
        let pooling = match (&output, settings.pooling) {
            (Output::Sentence(_), _) => Pooling::Model,
            (Output::Tokens(_), p) => p.unwrap_or(Pooling::Mean),
        };
        let info = ModelInfo {
            dir: dir.to_path_buf(),
            dimensions: 0,
            max_length,
            pooling,
            normalize: settings.normalize.unwrap_or(false),
            inputs: session
                .inputs()
                .iter()
                .map(|i| i.name().to_string())
                .collect(),
            output: match &output {
                Output::Tokens(n) | Output::Sentence(n) => n.clone(),
            },
            batch_invariant: false,
            checksum_verified: settings.sha256.is_some(),
        };
        let mut embedder = Embedder {
            session,
            encoder,
            has_token_type_ids,
            id_type,
            output,
            info,
            usage: Usage::default(),
            files,
            identity: None,
        };
        let probe = embedder.encode("clinembed")?;
        let alone = embedder.embed_encoded(&[&probe])?;
        if alone.ncols() == 0 {
            return Err(Error::new(
                ErrorKind::InvalidModel,
                "model produced zero-width vectors",
            ));
        }
        embedder.info.dimensions = alone.ncols();
        let longer =
            embedder.encode("a longer probe text, padded beside the short one: 1, 2, 3.")?;
        let batched = embedder.embed_encoded(&[&probe, &longer])?;
        let diff = alone
            .row(0)
            .iter()
            .zip(batched.row(0))
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        embedder.info.batch_invariant = diff <= BATCH_INVARIANCE_TOLERANCE;
        if embedder.files_replaced() {
            return Err(
                Error::new(ErrorKind::Runtime, "model files changed while loading")
                    .detail(format!(
                        "The files in \"{}\" were replaced during the load.",
                        dir.display()
                    ))
                    .hint("Try again once the model directory is in place."),
            );
        }
        // The probes are part of loading, not work done for a caller.
        embedder.usage = Usage {
            load_seconds: started.elapsed().as_secs_f64(),
            ..Usage::default()
        };
        Ok(embedder)
    }

    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    pub fn encoder(&self) -> &Encoder {
        &self.encoder
    }

    /// What this model has done since it loaded.
    pub fn usage(&self) -> Usage {
        self.usage
    }

    /// Whether the model directory now holds other files than the ones this
    /// session loaded (two `stat` calls).
    pub fn files_replaced(&self) -> bool {
        self.files.iter().any(PinnedFile::replaced)
    }

    /// The model's identity (see [`crate::identity`]), hashed on first use
    /// from the files as they were loaded (held open since), then remembered:
    /// it describes this session even if the directory is replaced later.
    ///
    /// With the chunked long-text policy, the identity says so
    /// (`name@hash+chunk128/32`): the same files give other vectors.
    pub fn identity(&mut self, long_text: Option<ChunkOptions>) -> Result<String> {
        if self.identity.is_none() {
            let settings = format!(
                "pooling={};normalize={};max_length={}",
                self.info.pooling.as_str(),
                self.info.normalize,
                self.info.max_length
            );
            let name = self
                .info
                .dir
                .file_name()
                .map_or_else(|| "model".to_string(), |n| n.to_string_lossy().into_owned());
            self.identity = Some(crate::identity::model_identity(
                &name,
                &self.files,
                &settings,
            )?);
        }
        let base = self.identity.as_deref().unwrap_or_default();
        Ok(crate::identity::with_long_text(base, long_text))
    }

    /// The windows of `text` (see [`crate::chunk`]) with their vectors, in
    /// text order, run in micro-batches like [`Embedder::embed_batch`].
    pub fn embed_windows(
        &mut self,
        text: &str,
        opts: ChunkOptions,
        limits: &BatchLimits,
        mut between: impl FnMut(),
    ) -> Result<Vec<(Window, Vec<f32>)>> {
        let specials = self.encoder.specials();
        opts.check(specials, self.info.max_length)?;
        let tokens = self.encoder.tokens(text, &mut between)?;
        if tokens.ids.len() > limits.max_tokens {
            return Err(
                Error::new(ErrorKind::LimitExceeded, "text too long to chunk")
                    .detail(format!(
                        "The text has {} tokens; the limit is {}.",
                        tokens.ids.len(),
                        limits.max_tokens
                    ))
                    .hint("Raise clinembed.batch_max_tokens, or split the text."),
            );
        }
        let windows = crate::chunk::windows(&tokens, specials, opts);
        let lengths: Vec<usize> = windows.iter().map(|w| w.encoded.len()).collect();
        let max_rows = if self.info.batch_invariant {
            usize::MAX
        } else {
            1
        };
        let mut vectors = vec![Vec::new(); windows.len()];
        for batch in crate::plan::micro_batches(&lengths, limits.micro_batch_tokens, max_rows) {
            between();
            let rows: Vec<&Encoded> = batch.iter().map(|&i| &windows[i].encoded).collect();
            let pooled = self.embed_encoded(&rows)?;
            for (r, &i) in batch.iter().enumerate() {
                vectors[i] = pooled.row(r).to_vec();
            }
        }
        Ok(windows.into_iter().zip(vectors).collect())
    }

    /// [`Embedder::embed_batch`] under the chunked policy: each text's
    /// windows, pooled by [`Embedder::embed_chunked`].
    pub fn embed_batch_chunked(
        &mut self,
        texts: &[Option<&str>],
        opts: ChunkOptions,
        limits: &BatchLimits,
        mut between: impl FnMut(),
    ) -> Result<Vec<Option<Vec<f32>>>> {
        check_text_count(texts.len(), limits)?;
        texts
            .iter()
            .map(|t| {
                t.map(|t| self.embed_chunked(t, opts, limits, &mut between))
                    .transpose()
            })
            .collect()
    }

    /// One vector for a text by the chunked policy: the token-weighted mean
    /// of its windows' vectors, L2-normalized again if the model normalizes.
    pub fn embed_chunked(
        &mut self,
        text: &str,
        opts: ChunkOptions,
        limits: &BatchLimits,
        between: impl FnMut(),
    ) -> Result<Vec<f32>> {
        let parts = self.embed_windows(text, opts, limits, between)?;
        let weights: Vec<usize> = parts.iter().map(|(w, _)| w.tokens.max(1)).collect();
        let vectors: Vec<Vec<f32>> = parts.into_iter().map(|(_, v)| v).collect();
        let mean = crate::chunk::weighted_mean(&vectors, &weights);
        if !self.info.normalize {
            return Ok(mean);
        }
        let mut rows = Array2::from_shape_vec((1, mean.len()), mean).map_err(|e| {
            Error::new(ErrorKind::Inference, "pooling failed").detail(e.to_string())
        })?;
        pool::l2_normalize(&mut rows);
        Ok(rows.row(0).to_vec())
    }

    /// Tokenizes one text, truncated to the model's maximum length.
    pub fn encode(&self, text: &str) -> Result<Encoded> {
        self.encoder.encode(text)
    }

    /// Embeds one text.
    pub fn embed(&mut self, text: &str) -> Result<Vec<f32>> {
        let enc = self.encode(text)?;
        Ok(self.embed_encoded(&[&enc])?.row(0).to_vec())
    }

    /// Embeds many texts: tokenizes them, sorts them by token count, runs
    /// micro-batches bounded by `limits.micro_batch_tokens` padded tokens, and
    /// returns the vectors in input order, `None` for `None` inputs.
    /// `between` runs before each micro-batch and periodically while
    /// tokenizing; the extension checks for query cancel there.
    pub fn embed_batch(
        &mut self,
        texts: &[Option<&str>],
        limits: &BatchLimits,
        mut between: impl FnMut(),
    ) -> Result<Vec<Option<Vec<f32>>>> {
        check_text_count(texts.len(), limits)?;
        let mut encoded: Vec<Option<Encoded>> = Vec::with_capacity(texts.len());
        let mut total = 0usize;
        for (i, text) in texts.iter().enumerate() {
            if i % TOKENIZE_CHECK_EVERY == 0 {
                between();
            }
            let enc = text.map(|t| self.encode(t)).transpose()?;
            total += enc.as_ref().map_or(0, Encoded::len);
            if total > limits.max_tokens {
                return Err(Error::new(ErrorKind::LimitExceeded, "too many tokens in one call")
                    .detail(format!(
                        "The first {} of {} texts already have {total} tokens after truncation; the limit is {}.",
                        i + 1,
                        texts.len(),
                        limits.max_tokens
                    ))
                    .hint("Embed the texts in several calls, or raise clinembed.batch_max_tokens."));
            }
            encoded.push(enc);
        }
        let present: Vec<usize> = (0..texts.len()).filter(|&i| encoded[i].is_some()).collect();
        let lengths: Vec<usize> = present
            .iter()
            .map(|&i| encoded[i].as_ref().map_or(0, Encoded::len))
            .collect();
        let max_rows = if self.info.batch_invariant {
            usize::MAX
        } else {
            1
        };
        let mut out: Vec<Option<Vec<f32>>> = vec![None; texts.len()];
        for batch in crate::plan::micro_batches(&lengths, limits.micro_batch_tokens, max_rows) {
            between();
            let rows: Vec<&Encoded> = batch
                .iter()
                .filter_map(|&j| encoded[present[j]].as_ref())
                .collect();
            let pooled = self.embed_encoded(&rows)?;
            for (r, &j) in batch.iter().enumerate() {
                out[present[j]] = Some(pooled.row(r).to_vec());
            }
        }
        Ok(out)
    }

    /// Runs one micro-batch, padded to its longest row, and pools it.  Returns
    /// one row per input, in input order.
    pub fn embed_encoded(&mut self, rows: &[&Encoded]) -> Result<Array2<f32>> {
        if rows.is_empty() {
            return Ok(Array2::zeros((0, self.info.dimensions)));
        }
        let batch = Batch::pad(rows, self.encoder.pad_id());
        let mut inputs: Vec<(Cow<'_, str>, SessionInputValue<'_>)> = vec![
            ("input_ids".into(), self.tensor(&batch.input_ids)?),
            ("attention_mask".into(), self.tensor(&batch.attention_mask)?),
        ];
        if self.has_token_type_ids {
            inputs.push(("token_type_ids".into(), self.tensor(&batch.token_type_ids)?));
        }
        let (name, tokens) = match &self.output {
            Output::Tokens(n) => (n.clone(), true),
            Output::Sentence(n) => (n.clone(), false),
        };
        let outputs = self.session.run(inputs).map_err(|e| {
            Error::new(ErrorKind::Inference, "onnx runtime failed to run the model").detail(
                format!(
                    "{e} (batch of {} rows, {} tokens wide)",
                    rows.len(),
                    batch.input_ids.ncols()
                ),
            )
        })?;
        let value = outputs.get(&name).ok_or_else(|| {
            Error::new(ErrorKind::InvalidModel, "model did not return its output")
                .detail(format!("Missing \"{name}\"."))
        })?;
        let array = value.try_extract_array::<f32>().map_err(|e| {
            Error::new(
                ErrorKind::InvalidModel,
                "model output is not a float32 tensor",
            )
            .detail(format!("\"{name}\": {e}"))
        })?;
        let mut pooled = if tokens {
            let hidden = array.into_dimensionality::<Ix3>().map_err(|_| {
                Error::new(
                    ErrorKind::InvalidModel,
                    "token output is not three-dimensional",
                )
                .detail(format!("\"{name}\" should be [batch, sequence, hidden]."))
            })?;
            if hidden.dim().0 != rows.len() || hidden.dim().1 != batch.input_ids.ncols() {
                return Err(Error::new(
                    ErrorKind::InvalidModel,
                    "token output has an unexpected shape",
                )
                .detail(format!(
                    "\"{name}\" is {:?} for an input of {:?}.",
                    hidden.dim(),
                    batch.input_ids.dim()
                )));
            }
            match self.info.pooling {
                Pooling::Cls => pool::cls_pool(hidden),
                Pooling::Max => pool::max_pool(hidden, batch.attention_mask.view()),
                _ => pool::mean_pool(hidden, batch.attention_mask.view()),
            }
        } else {
            array
                .into_dimensionality::<Ix2>()
                .map_err(|_| {
                    Error::new(
                        ErrorKind::InvalidModel,
                        "sentence output is not two-dimensional",
                    )
                    .detail(format!("\"{name}\" should be [batch, hidden]."))
                })?
                .to_owned()
        };
        if self.info.normalize {
            pool::l2_normalize(&mut pooled);
        }
        self.usage.runs += 1;
        self.usage.texts += rows.len() as u64;
        self.usage.tokens += rows.iter().map(|r| r.len() as u64).sum::<u64>();
        Ok(pooled)
    }

    fn tensor(&self, a: &Array2<i64>) -> Result<SessionInputValue<'static>> {
        let shape = [a.nrows(), a.ncols()];
        let made = match self.id_type {
            IdType::I64 => {
                Tensor::from_array((shape, a.iter().copied().collect::<Vec<i64>>())).map(Into::into)
            }
            IdType::I32 => {
                Tensor::from_array((shape, a.iter().map(|&x| x as i32).collect::<Vec<i32>>()))
                    .map(Into::into)
            }
        };
        made.map_err(|e| {
            Error::new(ErrorKind::Inference, "could not build an input tensor")
                .detail(e.to_string())
        })
    }
}

fn build_session(env: &Environment, model_path: &Path, opts: &SessionOptions) -> Result<Session> {
    let fail = |stage: &str, e: String| {
        Error::new(ErrorKind::InvalidModel, "could not load the onnx model")
            .detail(format!("{}: {stage}: {e}", model_path.display()))
            .hint("model.onnx must be a valid ONNX graph that this ONNX Runtime can run; re-export it or check the file is complete.")
    };
    let opt = |e: ort::Error<ort::session::builder::SessionBuilder>| {
        fail("session options", e.to_string())
    };
    let mut b = Session::builder(env).map_err(|e| fail("session options", e.to_string()))?;
    b = b
        .with_optimization_level(GraphOptimizationLevel::All)
        .map_err(opt)?;
    b = b
        .with_intra_threads(opts.intra_threads.max(1))
        .map_err(opt)?;
    b = b.with_inter_threads(1).map_err(opt)?;
    b = b.with_parallel_execution(false).map_err(opt)?;
    b = b.with_intra_op_spinning(opts.spinning).map_err(opt)?;
    b = b.with_inter_op_spinning(false).map_err(opt)?;
    b = b.with_memory_pattern(false).map_err(opt)?;
    let cpu = ort::ep::CPU::default()
        .with_arena_allocator(opts.memory_arena)
        .build();
    let mut builder = b.with_execution_providers([cpu]).map_err(opt)?;
    builder
        .commit_from_file(model_path)
        .map_err(|e| fail("load", e.to_string()))
}

fn check_inputs(inputs: &[Outlet]) -> Result<(bool, IdType)> {
    let names: Vec<&str> = inputs.iter().map(|i| i.name()).collect();
    let expected = "expected inputs input_ids and attention_mask, and optionally token_type_ids";
    let unknown: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| !matches!(*n, "input_ids" | "attention_mask" | "token_type_ids"))
        .collect();
    if !names.contains(&"input_ids") || !names.contains(&"attention_mask") || !unknown.is_empty() {
        return Err(Error::new(
            ErrorKind::InvalidModel,
            "model inputs are not those of a BERT-style encoder",
        )
        .detail(format!("{expected}; the graph has: {}.", names.join(", ")))
        .hint(
            "Export the encoder with transformers or optimum (feature \"feature-extraction\").",
        ));
    }
    let mut id_type = None;
    for input in inputs {
        let ty = match input.dtype().tensor_type() {
            Some(TensorElementType::Int64) => IdType::I64,
            Some(TensorElementType::Int32) => IdType::I32,
            other => {
                return Err(Error::new(
                    ErrorKind::InvalidModel,
                    "model input has an unsupported type",
                )
                .detail(format!(
                    "\"{}\" is {other:?}; expected int64 or int32.",
                    input.name()
                )))
            }
        };
        if *id_type.get_or_insert(ty) != ty {
            return Err(Error::new(
                ErrorKind::InvalidModel,
                "model inputs mix int32 and int64",
            ));
        }
    }
    Ok((
        names.contains(&"token_type_ids"),
        id_type.unwrap_or(IdType::I64),
    ))
}

fn check_text_count(n: usize, limits: &BatchLimits) -> Result<()> {
    if n <= limits.max_texts {
        return Ok(());
    }
    Err(
        Error::new(ErrorKind::LimitExceeded, "too many texts in one call")
            .detail(format!(
                "The call has {n} texts; the limit is {}.",
                limits.max_texts
            ))
            .hint("Embed the texts in several calls, or raise clinembed.batch_max_texts."),
    )
}

fn pick_output(outputs: &[Outlet], pooling: Option<Pooling>) -> Result<Output> {
    let has = |n: &str| outputs.iter().any(|o| o.name() == n);
    let tokens = ["last_hidden_state", "token_embeddings"]
        .into_iter()
        .find(|n| has(n));
    let sentence = has("sentence_embedding").then_some("sentence_embedding");
    let chosen = match pooling {
        Some(Pooling::Model) => sentence.map(|n| Output::Sentence(n.into())),
        Some(_) => tokens.map(|n| Output::Tokens(n.into())),
        None => tokens
            .map(|n| Output::Tokens(n.into()))
            .or(sentence.map(|n| Output::Sentence(n.into()))),
    };
    chosen.ok_or_else(|| {
        let names: Vec<&str> = outputs.iter().map(|o| o.name()).collect();
        let wanted = match pooling {
            Some(Pooling::Model) => "expected output sentence_embedding for pooling \"model\"",
            Some(_) => "expected output last_hidden_state or token_embeddings",
            None => "expected output last_hidden_state, token_embeddings or sentence_embedding",
        };
        Error::new(
            ErrorKind::InvalidModel,
            "model outputs are not those of an encoder",
        )
        .detail(format!("{wanted}; the graph has: {}.", names.join(", ")))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn micro_batch_budget_never_passes_the_ceiling() {
        assert_eq!(micro_batch_budget(1 << 20, 2048), 2048);
        assert_eq!(micro_batch_budget(512, 2048), 512);
        assert_eq!(micro_batch_budget(8192, 8192), 8192);
        assert_eq!(micro_batch_budget(0, 2048), 1);
        assert_eq!(
            BatchLimits::default().micro_batch_tokens,
            DEFAULT_MICRO_BATCH_TOKENS
        );
    }
}
