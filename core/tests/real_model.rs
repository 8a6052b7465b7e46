//! The core against the real installed default model and ONNX Runtime, with no
//! Postgres.  Paths come from CLINEMBED_MODEL_DIR and CLINEMBED_ORT_LIBRARY, or
//! else from where scripts/setup.sh installs them (found with pg_config).

mod common;

use clinembed_core::{inference::runtime, Embedder, ErrorKind, SessionOptions, Weights};
use common::{library, load, model_dir};

#[test]
fn loads_default_model_with_expected_shape() {
    let e = load();
    let info = e.info();
    assert_eq!(info.dimensions, 384);
    assert_eq!(info.max_length, 512);
    assert_eq!(info.output, "last_hidden_state");
    assert!(info.inputs.iter().any(|i| i == "token_type_ids"));
}

#[test]
fn embeds_are_finite_and_deterministic() {
    let mut e = load();
    for text in [
        "",
        " ",
        "chest pain",
        "Pt c/o SOB x3d, O2 sat 91% RA. 🙂 café 胸痛",
    ] {
        let a = e.embed(text).unwrap();
        assert_eq!(a.len(), 384);
        assert!(
            a.iter().all(|x| x.is_finite()),
            "finite for a {}-byte text",
            text.len()
        );
        assert_eq!(a, e.embed(text).unwrap());
    }
}

#[test]
fn padded_batch_matches_single_rows() {
    let mut e = load();
    let texts = [
        "Patient denies chest pain.",
        "CT chest: no pulmonary embolism. Small bilateral pleural effusions, right greater than left.",
        "",
    ];
    let encs: Vec<_> = texts.iter().map(|t| e.encode(t).unwrap()).collect();
    let refs: Vec<_> = encs.iter().collect();
    let batch = e.embed_encoded(&refs).unwrap();
    for (i, t) in texts.iter().enumerate() {
        let single = e.embed(t).unwrap();
        let diff = single
            .iter()
            .zip(batch.row(i))
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(diff < 1e-4, "row {i}: max abs diff {diff}");
    }
}

#[test]
fn missing_library_is_not_found_and_does_not_poison() {
    let err =
        runtime::environment(std::path::Path::new("/nonexistent/libonnxruntime.so")).unwrap_err();
    // Either not found, or (if another test loaded the real one first) a
    // refusal to switch libraries; both leave the real library usable.
    assert!(matches!(err.kind, ErrorKind::NotFound | ErrorKind::Runtime));
    assert!(runtime::environment(&library()).is_ok());
}

#[test]
fn bad_model_dirs_are_clear_errors() {
    let env = runtime::environment(&library()).unwrap();
    let missing = Embedder::load(
        env,
        std::path::Path::new("/nonexistent/model"),
        &SessionOptions::default(),
        &Weights::Private,
    );
    assert_eq!(missing.err().unwrap().kind, ErrorKind::NotFound);

    let dir = std::env::temp_dir().join(format!("clinembed-core-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("model.onnx"), b"garbage").unwrap();
    std::fs::copy(
        model_dir().join("tokenizer.json"),
        dir.join("tokenizer.json"),
    )
    .unwrap();
    let corrupt = Embedder::load(env, &dir, &SessionOptions::default(), &Weights::Private);
    std::fs::remove_dir_all(&dir).unwrap();
    let err = corrupt.err().unwrap();
    assert_eq!(err.kind, ErrorKind::InvalidModel);
    assert!(err.hint.is_some());
}

#[test]
fn reports_onnx_runtime_version() {
    runtime::environment(&library()).unwrap();
    let version = runtime::loaded_version().unwrap();
    assert_eq!(version, clinembed_core::ORT_VERSION);
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max)
}

#[test]
fn batch_matches_single_and_keeps_order_and_nulls() {
    let mut e = load();
    let long = "Patient admitted with pneumonia, treated with antibiotics. ".repeat(80);
    let texts: Vec<Option<&str>> = vec![
        Some(long.as_str()),
        Some("Patient denies chest pain."),
        None,
        Some(""),
        Some("CT chest: no pulmonary embolism. Small bilateral pleural effusions."),
        Some("Patient denies chest pain."),
        None,
        Some("胸痛 🙂 café"),
    ];
    let limits = clinembed_core::BatchLimits {
        micro_batch_tokens: 64,
        ..Default::default()
    };
    let mut checks = 0;
    let out = e.embed_batch(&texts, &limits, || checks += 1).unwrap();
    assert_eq!(out.len(), texts.len());
    assert!(
        checks >= 2,
        "interrupt check ran between micro-batches ({checks})"
    );
    for (t, v) in texts.iter().zip(&out) {
        match (t, v) {
            (None, None) => {}
            (Some(t), Some(v)) => {
                let d = max_diff(&e.embed(t).unwrap(), v);
                assert!(
                    d <= 1e-5,
                    "batched differs from single by {d} for a {}-byte text",
                    t.len()
                );
            }
            _ => panic!("NULL in must be NULL out, and only then"),
        }
    }
    assert_eq!(out[1], out[5]);
}

#[test]
fn batch_limits_are_errors_not_crashes() {
    let mut e = load();
    let texts = vec![Some("chest pain"); 5];
    let few = clinembed_core::BatchLimits {
        max_texts: 4,
        ..Default::default()
    };
    let err = e.embed_batch(&texts, &few, || {}).unwrap_err();
    assert_eq!(err.kind, ErrorKind::LimitExceeded);
    assert!(err.hint.unwrap().contains("clinembed.batch_max_texts"));
    let small = clinembed_core::BatchLimits {
        max_tokens: 10,
        ..Default::default()
    };
    let err = e.embed_batch(&texts, &small, || {}).unwrap_err();
    assert_eq!(err.kind, ErrorKind::LimitExceeded);
    assert!(e
        .embed_batch(&[], &Default::default(), || {})
        .unwrap()
        .is_empty());
}

#[test]
fn default_model_is_batch_invariant() {
    // The load-time probe embeds a short text alone and beside a longer one.
    // all-MiniLM-L6-v2 int8 on ONNX Runtime 1.31 gives the same vector both
    // ways, so embed_texts batches it; a model that does not would run one
    // text per micro-batch instead.
    assert!(load().info().batch_invariant);
}

#[test]
fn usage_counts_runs_texts_and_tokens_but_not_load_probes() {
    let mut e = load();
    let u = e.usage();
    assert_eq!((u.runs, u.texts, u.tokens), (0, 0, 0));
    assert!(u.load_seconds > 0.0);
    let tokens = e.encoder().count_tokens("Patient stable.", || ()).unwrap() as u64;
    e.embed("Patient stable.").unwrap();
    let u = e.usage();
    assert_eq!((u.runs, u.texts, u.tokens), (1, 1, tokens));
    let texts = [Some("a"), None, Some("b c")];
    e.embed_batch(&texts, &clinembed_core::BatchLimits::default(), || {})
        .unwrap();
    assert_eq!(e.usage().texts, 3);
}

#[test]
fn identity_is_name_and_content_hash() {
    let mut e = load();
    let id = e.identity(None).unwrap();
    let name = model_dir()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert!(id.starts_with(&format!("{name}@")), "{id}");
    assert_eq!(id.len(), name.len() + 1 + 16);
    assert_eq!(id, load().identity(None).unwrap());
    let chunked = load()
        .identity(Some(
            clinembed_core::inference::chunk::ChunkOptions::default(),
        ))
        .unwrap();
    assert_eq!(chunked, format!("{id}+chunk128/32"));
}
