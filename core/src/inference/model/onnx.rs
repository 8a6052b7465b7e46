//! One micro-batch through the graph: padded input tensors in, pooled
//! vectors out.

use std::borrow::Cow;

use ndarray::{Array2, Ix2, Ix3};
use ort::session::SessionInputValue;
use ort::value::Tensor;

use super::{Embedder, IdType, Output};
use crate::error::{Error, ErrorKind, Result};
use crate::inference::batch::Batch;
use crate::inference::plan::padded_tokens;
use crate::inference::pool;
use crate::inference::settings::Pooling;
use crate::inference::tokenize::Encoded;

/// Padded tokens of the largest run whose activations the CPU arena keeps
/// between calls: one text at the usual maximum length.  A call that ran
/// anything larger (a batch) hands the arena's free regions back to the
/// operating system when it ends, so an idle backend holds the weights'
/// share and a small arena, not the peak of the largest batch it ever ran.
/// Calls at or below it reuse their arena with no allocation.
pub const ARENA_KEEP_TOKENS: usize = 512;

/// Whether a call whose largest micro-batch had `peak` padded tokens ends
/// by shrinking the arena (see [`ARENA_KEEP_TOKENS`]).
pub fn shrink_after(peak: usize) -> bool {
    peak > ARENA_KEEP_TOKENS
}

impl Embedder {
    /// Runs one micro-batch, padded to its longest row, and pools it.  Returns
    /// one row per input, in input order.  As a call of its own, it shrinks
    /// the arena afterwards if it was large (see [`ARENA_KEEP_TOKENS`]).
    pub fn embed_encoded(&mut self, rows: &[&Encoded]) -> Result<Array2<f32>> {
        self.run_encoded(
            rows,
            shrink_after(padded_tokens(rows.iter().map(|r| r.len()))),
        )
    }

    /// Runs one micro-batch; with `shrink`, ONNX Runtime frees the arena's
    /// unused regions when the run ends.
    pub(super) fn run_encoded(&mut self, rows: &[&Encoded], shrink: bool) -> Result<Array2<f32>> {
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
        let ran = match (&self.shrink, shrink) {
            (Some(options), true) => self.session.run_with_options(inputs, options),
            _ => self.session.run(inputs),
        };
        let outputs = ran.map_err(|e| {
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
