//! A loaded embedding model: ONNX Runtime session, tokenizer and pooling.
//!
//! One job a file: [`load`] opens and probes a model directory, [`onnx`]
//! runs one padded micro-batch through the graph and pools it, [`batching`]
//! cuts many texts into micro-batches, and [`chunking`] runs the long-text
//! policy's windows.  This file declares the model and what it reports.

mod batching;
mod chunking;
mod load;
mod onnx;
mod rerank;
pub mod weights;

use std::path::PathBuf;

use ort::session::Session;

use crate::error::Result;
use crate::inference::chunk::ChunkOptions;
use crate::inference::identity::PinnedFile;
use crate::inference::settings::{ModelKind, Pooling};
use crate::inference::tokenize::{Encoded, Encoder};

pub use batching::{
    micro_batch_budget, BatchLimits, DEFAULT_MAX_TEXTS, DEFAULT_MAX_TOKENS,
    DEFAULT_MICRO_BATCH_TOKENS,
};
pub use chunking::NoteWindow;
pub use onnx::ARENA_KEEP_TOKENS;
pub use weights::{Weights, WeightsForm};

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

/// Intra-op threads for a session: `requested` (0: one per CPU) from
/// `clinembed.intra_op_threads`, never more than the `cpus` available to the
/// server (threads past the cores only take turns on them, and each one is
/// a thread of the backend that any role could otherwise multiply), and 1
/// for 0 in a parallel worker (the plan already spreads rows over
/// processes).
pub fn intra_op_threads(requested: i32, parallel_worker: bool, cpus: usize) -> usize {
    let cpus = cpus.max(1);
    match requested {
        n if n > 0 => (n as usize).min(cpus),
        _ if parallel_worker => 1,
        _ => cpus,
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

/// What a loaded model is, for reporting.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    pub dir: PathBuf,
    pub dimensions: usize,
    pub max_length: usize,
    pub pooling: Pooling,
    pub normalize: bool,
    /// What the model computes: vectors, or a score per (query, text) pair.
    pub kind: ModelKind,
    /// Text put before a search query when it is embedded.
    pub query_prefix: Option<String>,
    /// The installed model that embeds search queries for this one.
    pub query_model: Option<String>,
    pub inputs: Vec<String>,
    pub output: String,
    /// Whether texts embedded in a padded micro-batch equal texts embedded
    /// alone; if not, batched calls run one text at a time.
    pub batch_invariant: bool,
    /// Whether the weights are mapped from the shared cache or on the heap.
    pub weights: WeightsForm,
    /// Whether this load derived the shared form (the first load of this
    /// model on this server, or a rebuild).
    pub weights_built: bool,
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
    /// Run options that shrink the CPU arena after a run; `None` without
    /// an arena.
    shrink: Option<ort::session::RunOptions>,
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

    /// The model's identity (see [`crate::inference::identity`]), hashed on first use
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
            self.identity = Some(crate::inference::identity::model_identity(
                &name,
                &self.files,
                &settings,
            )?);
        }
        let base = self.identity.as_deref().unwrap_or_default();
        Ok(crate::inference::identity::with_long_text(base, long_text))
    }

    /// Tokenizes one text, truncated to the model's maximum length.
    pub fn encode(&self, text: &str) -> Result<Encoded> {
        self.encoder.encode(text)
    }

    /// Embeds one text.
    pub fn embed(&mut self, text: &str) -> Result<Vec<f32>> {
        self.require(ModelKind::Embedding)?;
        let enc = self.encode(text)?;
        Ok(self.embed_encoded(&[&enc])?.row(0).to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::intra_op_threads;

    #[test]
    fn intra_op_threads_never_pass_the_cpus() {
        assert_eq!(intra_op_threads(256, false, 2), 2);
        assert_eq!(intra_op_threads(1, false, 2), 1);
        assert_eq!(intra_op_threads(0, false, 16), 16);
        assert_eq!(intra_op_threads(0, true, 16), 1);
        assert_eq!(intra_op_threads(4, true, 16), 4);
        assert_eq!(intra_op_threads(3, false, 0), 1);
    }
}
