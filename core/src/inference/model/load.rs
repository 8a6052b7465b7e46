//! Loading a model directory: checks its files, builds the ONNX Runtime
//! session, checks the graph's inputs and outputs, and probes it.

use std::path::Path;

use ort::environment::Environment;
use ort::session::builder::GraphOptimizationLevel;
use ort::session::Session;
use ort::value::{Outlet, TensorElementType};

use super::weights::{self, Weights, WeightsForm};
use super::{
    Embedder, IdType, ModelInfo, Output, SessionOptions, Usage, MODEL_FILE, TOKENIZER_FILE,
};
use crate::error::{Error, ErrorKind, Result};
use crate::inference::identity::{PinnedDir, PinnedFile};
use crate::inference::settings::{self, ModelKind, ModelSettings, Pooling};
use crate::inference::signals::with_signals_blocked;
use crate::inference::tokenize::Encoder;

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
    ///
    /// With [`Weights::Shared`], the session maps its weights from a form
    /// derived once per server (see [`weights`]); if that form cannot be
    /// built or loaded, the model loads from `model.onnx` as with
    /// [`Weights::Private`] and [`ModelInfo::weights`] says why.
    pub fn load(
        env: &Environment,
        dir: &Path,
        opts: &SessionOptions,
        weights: &Weights,
    ) -> Result<Self> {
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
        // The directory is held open and its model and tokenizer are opened
        // and read through it, never by name: the session, the derived
        // weights and the identity are all made of the same bytes, whatever
        // happens to the directory's name during the load.
        let pinned = PinnedDir::open(dir)?;
        let root = pinned.root();
        let files = vec![
            PinnedFile::open_through(&root.join(MODEL_FILE), &model_path)?,
            PinnedFile::open_through(&root.join(TOKENIZER_FILE), &dir.join(TOKENIZER_FILE))?,
        ];
        if let Weights::Shared(cache) = weights {
            // A hash remembered for this file version spares the checksum
            // below (and later the identity) a read of the whole model.
            weights::recall_sha256(cache, &files[0]);
        }
        let settings = ModelSettings::load(dir)?;
        if let Some(want) = &settings.sha256 {
            let got = crate::inference::identity::hex(&files[0].sha256()?);
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
        // The tokenizer is parsed on a thread of its own while ONNX Runtime
        // builds the session: both are pure work on files, no Postgres.
        let tokenizer = root.join(TOKENIZER_FILE);
        let source = Source {
            read: root.join(MODEL_FILE),
            shown: &model_path,
        };
        let (encoder, opened) = with_signals_blocked(|| {
            std::thread::scope(|scope| {
                let parsing = scope.spawn(|| {
                    Encoder::from_file_as(&tokenizer, &dir.join(TOKENIZER_FILE), max_length)
                });
                let opened = open_session(env, &source, &files[0], opts, weights);
                let encoder = parsing.join().unwrap_or_else(|_| {
                    Err(
                        Error::new(ErrorKind::InvalidModel, "could not read tokenizer.json")
                            .detail("The tokenizer parser failed."),
                    )
                });
                (encoder, opened)
            })
        });
        let (session, weights, weights_built) = opened?;
        let encoder = encoder?;
        let (has_token_type_ids, id_type) = check_inputs(session.inputs())?;
        let kind = settings.kind.unwrap_or_default();
        let output = match kind {
            ModelKind::Embedding => pick_output(session.outputs(), settings.pooling)?,
            ModelKind::CrossEncoder => pick_logits(session.outputs())?,
        };
        let pooling = match (&output, settings.pooling) {
            (Output::Sentence(_), _) => Pooling::Model,
            (Output::Tokens(_), p) => p.unwrap_or(Pooling::Mean),
        };
        let info = ModelInfo {
            dir: dir.to_path_buf(),
            dimensions: 0,
            max_length,
            pooling,
            // A cross-encoder's one logit is a score, not a direction.
            normalize: kind == ModelKind::Embedding && settings.normalize.unwrap_or(false),
            kind,
            query_prefix: settings.query_prefix.clone(),
            query_model: settings.query_model.clone(),
            inputs: session
                .inputs()
                .iter()
                .map(|i| i.name().to_string())
                .collect(),
            output: match &output {
                Output::Tokens(n) | Output::Sentence(n) => n.clone(),
            },
            batch_invariant: false,
            weights,
            weights_built,
        };
        let shrink = if opts.memory_arena {
            let mut o = ort::session::RunOptions::new().map_err(|e| {
                Error::new(ErrorKind::Runtime, "could not create onnx run options")
                    .detail(e.to_string())
            })?;
            o.set("memory.enable_memory_arena_shrinkage", "cpu:0")
                .map_err(|e| {
                    Error::new(ErrorKind::Runtime, "could not set onnx run options")
                        .detail(e.to_string())
                })?;
            Some(o)
        } else {
            None
        };
        let mut embedder = Embedder {
            session,
            shrink,
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
        if kind == ModelKind::CrossEncoder && alone.ncols() != 1 {
            return Err(Error::new(
                ErrorKind::InvalidModel,
                "a cross-encoder must give one logit per pair",
            )
            .detail(format!("Its logits have {} columns.", alone.ncols()))
            .hint("Export a sequence-classification model with num_labels = 1, as scripts/export-model.sh --cross-encoder does."));
        }
        // Whether padding changes a row is a property of the derived form's
        // key (graph, runtime, CPU): measured once per entry, then recalled.
        let mapped = match &embedder.info.weights {
            WeightsForm::Mapped(path) => Some(path.clone()),
            WeightsForm::Private(_) => None,
        };
        let recalled = mapped
            .as_deref()
            .and_then(weights::read_probe)
            .filter(|p| p.dimensions == embedder.info.dimensions);
        embedder.info.batch_invariant = match recalled {
            Some(p) => p.batch_invariant,
            None => {
                let longer = embedder
                    .encode("a longer probe text, padded beside the short one: 1, 2, 3.")?;
                let batched = embedder.embed_encoded(&[&probe, &longer])?;
                let diff = alone
                    .row(0)
                    .iter()
                    .zip(batched.row(0))
                    .map(|(a, b)| (a - b).abs())
                    .fold(0f32, f32::max);
                let invariant = diff <= BATCH_INVARIANCE_TOLERANCE;
                if let Some(path) = &mapped {
                    weights::write_probe(
                        path,
                        &weights::Probe {
                            dimensions: embedder.info.dimensions,
                            batch_invariant: invariant,
                        },
                    );
                }
                invariant
            }
        };
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

/// A graph to build a session from: the path it is read through and the
/// one its errors name.
struct Source<'a> {
    read: std::path::PathBuf,
    shown: &'a Path,
}

/// The session for `model_path`, with its weights where `weights` asks.
fn open_session(
    env: &Environment,
    model_path: &Source<'_>,
    model: &crate::inference::identity::PinnedFile,
    opts: &SessionOptions,
    weights: &Weights,
) -> Result<(Session, WeightsForm, bool)> {
    let Weights::Shared(cache) = weights else {
        let session = build_session(env, model_path, opts, GraphOptimizationLevel::All, None)?;
        return Ok((session, WeightsForm::Private(None), false));
    };
    let version = crate::inference::runtime::loaded_version().unwrap_or_else(|| "unknown".into());
    let derived = weights::derived_model(cache, model, &version, weights::this_cpu(), |out| {
        // Optimized as a private session would be, then saved with its
        // weights and ONNX Runtime's packed copies of them in one
        // external-data file, which later sessions map.
        build_session(
            env,
            model_path,
            opts,
            GraphOptimizationLevel::All,
            Some(&out.join(weights::DERIVED_MODEL)),
        )
        .map(drop)
    });
    let reason = match derived {
        // Already optimized: loading skips the optimizer.
        Ok((path, built)) => {
            let derived = Source {
                read: path.clone(),
                shown: &path,
            };
            match build_session(env, &derived, opts, GraphOptimizationLevel::Disable, None) {
                Ok(session) => return Ok((session, WeightsForm::Mapped(path), built)),
                Err(e) => {
                    weights::discard_entry(&path);
                    e
                }
            }
        }
        Err(e) => e,
    };
    let why = match &reason.detail {
        Some(d) => format!("{} ({d})", reason.message),
        None => reason.message.clone(),
    };
    let session = build_session(env, model_path, opts, GraphOptimizationLevel::All, None)?;
    Ok((session, WeightsForm::Private(Some(why)), false))
}

/// A session over `model_path`; with `save_to`, ONNX Runtime also writes the
/// optimized graph there, its initializers and their pre-packed forms in
/// [`weights::DERIVED_DATA`] beside it.
fn build_session(
    env: &Environment,
    model_path: &Source<'_>,
    opts: &SessionOptions,
    level: GraphOptimizationLevel,
    save_to: Option<&Path>,
) -> Result<Session> {
    let fail = |stage: &str, e: String| {
        Error::new(ErrorKind::InvalidModel, "could not load the onnx model")
            .detail(format!("{}: {stage}: {e}", model_path.shown.display()))
            .hint("model.onnx must be a valid ONNX graph that this ONNX Runtime can run; re-export it or check the file is complete.")
    };
    let opt = |e: ort::Error<ort::session::builder::SessionBuilder>| {
        fail("session options", e.to_string())
    };
    let mut b = Session::builder(env).map_err(|e| fail("session options", e.to_string()))?;
    b = b.with_optimization_level(level).map_err(opt)?;
    b = b
        .with_intra_threads(opts.intra_threads.max(1))
        .map_err(opt)?;
    b = b.with_inter_threads(1).map_err(opt)?;
    b = b.with_parallel_execution(false).map_err(opt)?;
    b = b.with_intra_op_spinning(opts.spinning).map_err(opt)?;
    b = b.with_inter_op_spinning(false).map_err(opt)?;
    b = b.with_memory_pattern(false).map_err(opt)?;
    // Weights are packed on the session's intra-op threads, not one: the
    // larger part of a load with shared weights (the same packed bytes).
    b = b
        .with_config_entry("session.prepack.enable_parallel", "1")
        .map_err(opt)?;
    if let Some(out) = save_to {
        b = b.with_optimized_model_path(out).map_err(opt)?;
        for (key, value) in [
            (
                "session.optimized_model_external_initializers_file_name",
                weights::DERIVED_DATA,
            ),
            (
                "session.optimized_model_external_initializers_min_size_in_bytes",
                "1024",
            ),
            ("session.save_external_prepacked_constant_initializers", "1"),
        ] {
            b = b.with_config_entry(key, value).map_err(opt)?;
        }
    }
    let cpu = ort::ep::CPU::default()
        .with_arena_allocator(opts.memory_arena)
        .build();
    let mut builder = b.with_execution_providers([cpu]).map_err(opt)?;
    builder
        .commit_from_file(&model_path.read)
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

/// A cross-encoder's output: `logits`, `[batch, 1]`, read as is.
fn pick_logits(outputs: &[Outlet]) -> Result<Output> {
    if outputs.iter().any(|o| o.name() == "logits") {
        return Ok(Output::Sentence("logits".into()));
    }
    let names: Vec<&str> = outputs.iter().map(|o| o.name()).collect();
    Err(Error::new(
        ErrorKind::InvalidModel,
        "model outputs are not those of a cross-encoder",
    )
    .detail(format!(
        "expected output logits; the graph has: {}.",
        names.join(", ")
    ))
    .hint("Export a sequence-classification model (scripts/export-model.sh --cross-encoder), or drop \"kind\" from clinembed.json."))
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
