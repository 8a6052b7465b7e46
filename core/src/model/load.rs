//! Loading a model directory: checks its files, builds the ONNX Runtime
//! session, checks the graph's inputs and outputs, and probes it.

use std::path::Path;

use ort::environment::Environment;
use ort::session::builder::GraphOptimizationLevel;
use ort::session::Session;
use ort::value::{Outlet, TensorElementType};

use super::{
    Embedder, IdType, ModelInfo, Output, SessionOptions, Usage, MODEL_FILE, TOKENIZER_FILE,
};
use crate::error::{Error, ErrorKind, Result};
use crate::identity::PinnedFile;
use crate::settings::{self, ModelSettings, Pooling};
use crate::signals::with_signals_blocked;
use crate::tokenize::Encoder;

/// Largest difference between a text embedded alone and inside a padded
/// micro-batch for the model to count as batch-invariant.  Dynamically
/// quantized (int8) graphs compute one quantization scale over the whole batch
/// tensor, so their results depend on the other rows; such models run one
/// text per micro-batch.
const BATCH_INVARIANCE_TOLERANCE: f32 = 2e-6;

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
