//! Where the real installed default model and ONNX Runtime are: from
//! CLINEMBED_MODEL_DIR and CLINEMBED_ORT_LIBRARY, or else where
//! scripts/setup.sh installs them (found with pg_config).
#![allow(dead_code)] // each test crate uses its own subset

use std::path::PathBuf;
use std::process::Command;

use clinembed_core::{inference::runtime, Embedder, SessionOptions, Weights};

fn pg_dir(flag: &str) -> PathBuf {
    let out = Command::new("pg_config")
        .arg(flag)
        .output()
        .expect("pg_config not found: run scripts/setup.sh or set CLINEMBED_MODEL_DIR and CLINEMBED_ORT_LIBRARY");
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

pub fn model_dir() -> PathBuf {
    std::env::var_os("CLINEMBED_MODEL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            pg_dir("--sharedir")
                .join("clinembed/models")
                .join(clinembed_core::DEFAULT_MODEL)
        })
}

pub fn library() -> PathBuf {
    std::env::var_os("CLINEMBED_ORT_LIBRARY")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            pg_dir("--pkglibdir")
                .join("clinembed")
                .join(clinembed_core::ORT_LIBRARY_FILE)
        })
}

pub fn load() -> Embedder {
    let env = runtime::environment(&library()).expect("onnx runtime loads");
    Embedder::load(
        env,
        &model_dir(),
        &SessionOptions::default(),
        &Weights::Private,
    )
    .expect("model loads")
}
