//! Inference: a model's files and session (`model`), tokenizing (`tokenize`),
//! a note's sections (`sections`), windows over long texts (`chunk`),
//! batches and their padding (`batch`, `plan`), pooling (`pool`), a model's
//! identity (`identity`), its `clinembed.json` (`settings`), the ONNX
//! Runtime library (`runtime`), and the process's signals and memory while
//! it runs (`signals`, `memory`).

pub mod batch;
pub mod chunk;
pub mod identity;
pub mod memory;
pub mod model;
pub mod plan;
pub mod pool;
pub mod runtime;
pub mod sections;
pub mod settings;
pub mod signals;
pub mod tokenize;
