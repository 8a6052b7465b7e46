//! The optional per-model settings file, `clinembed.json`, and the position
//! limit read from a Hugging Face `config.json` when the model ships one.

use std::path::Path;

use serde::Deserialize;

use crate::error::{Error, ErrorKind, Result};

/// Name of the optional settings file inside a model directory.
pub const SETTINGS_FILE: &str = "clinembed.json";

/// The notebook's truncation length, and the cap clinembed applies by default.
pub const DEFAULT_MAX_LENGTH: usize = 512;

/// How token vectors become one note vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pooling {
    /// Attention-mask-weighted mean of the token vectors (the notebook's method).
    Mean,
    /// The first token's vector (`[CLS]`).
    Cls,
    /// The element-wise maximum over the attended tokens (sentence-transformers'
    /// max pooling).
    Max,
    /// The graph's own `sentence_embedding` output, used as is.
    Model,
}

impl Pooling {
    pub fn as_str(self) -> &'static str {
        match self {
            Pooling::Mean => "mean",
            Pooling::Cls => "cls",
            Pooling::Max => "max",
            Pooling::Model => "model",
        }
    }
}

/// What a model computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ModelKind {
    /// One vector per text (`last_hidden_state`, `token_embeddings` or
    /// `sentence_embedding`).
    #[default]
    Embedding,
    /// One relevance score per (query, text) pair: a sequence-classification
    /// graph whose `logits` output has one column.
    CrossEncoder,
}

impl ModelKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ModelKind::Embedding => "embedding",
            ModelKind::CrossEncoder => "cross-encoder",
        }
    }
}

/// Contents of `clinembed.json`.  Every field is optional.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSettings {
    /// Pooling method; `mean` unless the graph only has `sentence_embedding`.
    pub pooling: Option<Pooling>,
    /// Truncation length in tokens, special tokens included.  Capped by the
    /// model's position limit.  Default: 512.
    pub max_length: Option<usize>,
    /// L2-normalise each vector.  Default: false, as in the notebook.
    pub normalize: Option<bool>,
    /// SHA-256 of `model.onnx`, hex.  When present, checked at every load.
    pub sha256: Option<String>,
    /// What the model computes.  Default: `embedding`.
    pub kind: Option<ModelKind>,
    /// Text put before a search query (not before stored texts) when it is
    /// embedded: e5-style models are trained with `"query: "`.
    pub query_prefix: Option<String>,
    /// Another installed model that embeds search queries for this one's
    /// stored vectors (MedCPT ships a query and an article encoder).
    pub query_model: Option<String>,
}

impl ModelSettings {
    pub fn load(dir: &Path) -> Result<Self> {
        let path = dir.join(SETTINGS_FILE);
        if !path.exists() {
            return Ok(ModelSettings::default());
        }
        let text = std::fs::read_to_string(&path).map_err(|e| {
            Error::new(ErrorKind::NotFound, "could not read model settings")
                .detail(format!("{}: {e}", path.display()))
        })?;
        serde_json::from_str(&text).map_err(|e| {
            Error::new(ErrorKind::InvalidModel, "invalid model settings file")
                .detail(format!("{}: {e}", path.display()))
                .hint("Known keys: pooling (\"mean\", \"cls\", \"max\" or \"model\"), max_length (integer), normalize (boolean), sha256 (hex string), kind (\"embedding\" or \"cross-encoder\"), query_prefix (string), query_model (installed model name).")
        })
    }
}

/// What a model directory says about itself, read without loading the model.
#[derive(Debug, Clone)]
pub struct Description {
    pub dimensions: Option<usize>,
    pub max_length: usize,
    /// `None`: mean, unless the graph only has `sentence_embedding`.
    pub pooling: Option<Pooling>,
    pub normalize: bool,
    /// The recorded SHA-256 of `model.onnx`, checked at every load.
    pub sha256: Option<String>,
    pub kind: ModelKind,
}

pub fn describe(dir: &Path) -> Result<Description> {
    let s = ModelSettings::load(dir)?;
    Ok(Description {
        dimensions: hidden_size(dir),
        max_length: effective_max_length(s.max_length, position_limit(dir)?),
        pooling: s.pooling,
        normalize: s.normalize.unwrap_or(false),
        sha256: s.sha256,
        kind: s.kind.unwrap_or_default(),
    })
}

/// The width of the model's vectors from `config.json` (`hidden_size`), when
/// the directory has one; known without loading the model.
pub fn hidden_size(dir: &Path) -> Option<usize> {
    let text = std::fs::read_to_string(dir.join("config.json")).ok()?;
    let config: serde_json::Value = serde_json::from_str(&text).ok()?;
    config
        .get("hidden_size")
        .and_then(|v| v.as_u64())
        .map(|v| v as usize)
}

/// The number of positions the model can embed, from `config.json` when the
/// model directory has one.  RoBERTa-family models reserve two positions for
/// the padding offset, so their limit is `max_position_embeddings - 2`.
pub fn position_limit(dir: &Path) -> Result<Option<usize>> {
    let path = dir.join("config.json");
    if !path.exists() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&path).map_err(|e| {
        Error::new(ErrorKind::NotFound, "could not read model config")
            .detail(format!("{}: {e}", path.display()))
    })?;
    let config: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
        Error::new(ErrorKind::InvalidModel, "invalid model config.json")
            .detail(format!("{}: {e}", path.display()))
    })?;
    let Some(max_pos) = config
        .get("max_position_embeddings")
        .and_then(|v| v.as_u64())
    else {
        return Ok(None);
    };
    let offset = match config.get("model_type").and_then(|v| v.as_str()) {
        Some("roberta" | "xlm-roberta" | "camembert" | "longformer") => 2,
        _ => 0,
    };
    Ok(Some((max_pos as usize).saturating_sub(offset)))
}

/// The truncation length: the requested length (512 by default), capped by the
/// position limit.
pub fn effective_max_length(requested: Option<usize>, limit: Option<usize>) -> usize {
    let wanted = requested.unwrap_or(DEFAULT_MAX_LENGTH);
    limit.map_or(wanted, |l| wanted.min(l)).max(2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_length_is_capped_by_position_limit() {
        assert_eq!(effective_max_length(None, None), 512);
        assert_eq!(effective_max_length(None, Some(512)), 512);
        assert_eq!(effective_max_length(None, Some(128)), 128);
        assert_eq!(effective_max_length(Some(256), Some(512)), 256);
        assert_eq!(effective_max_length(Some(4096), Some(512)), 512);
    }

    #[test]
    fn settings_parse_and_reject_unknown_keys() {
        let dir = std::env::temp_dir().join(format!("clinembed-settings-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join(SETTINGS_FILE),
            r#"{"pooling":"cls","max_length":128}"#,
        )
        .unwrap();
        let s = ModelSettings::load(&dir).unwrap();
        assert_eq!(s.pooling, Some(Pooling::Cls));
        assert_eq!(s.max_length, Some(128));
        assert_eq!(s.kind, None);
        std::fs::write(
            dir.join(SETTINGS_FILE),
            r#"{"kind":"cross-encoder","query_prefix":"query: ","query_model":"q"}"#,
        )
        .unwrap();
        let s = ModelSettings::load(&dir).unwrap();
        assert_eq!(s.kind, Some(ModelKind::CrossEncoder));
        assert_eq!(s.query_prefix.as_deref(), Some("query: "));
        assert_eq!(s.query_model.as_deref(), Some("q"));
        std::fs::write(dir.join(SETTINGS_FILE), r#"{"kind":"reranker"}"#).unwrap();
        assert!(ModelSettings::load(&dir).is_err());
        std::fs::write(dir.join(SETTINGS_FILE), r#"{"poling":"cls"}"#).unwrap();
        let e = ModelSettings::load(&dir).unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidModel);
        std::fs::write(
            dir.join("config.json"),
            r#"{"model_type":"roberta","max_position_embeddings":514}"#,
        )
        .unwrap();
        assert_eq!(position_limit(&dir).unwrap(), Some(512));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
