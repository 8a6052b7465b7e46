//! `#[pg_test]`s: the extension inside a real PostgreSQL with the installed
//! default model.  Error cases call the Rust function directly inside
//! `PgTryBuilder`, so the caught error is a Rust unwind and the transaction
//! stays usable; the SQL regression suite checks the same cases through psql.

use pgrx::prelude::*;

#[pg_schema]
mod tests {
    use pgrx::pg_sys::errcodes::PgSqlErrorCode;
    use pgrx::pg_sys::panic::CaughtError;
    use pgrx::prelude::*;

    fn embed(text: &str) -> Vec<f32> {
        Spi::get_one_with_args::<Vec<f32>>("SELECT embed_text($1)", &[text.into()])
            .expect("spi")
            .expect("not null")
    }

    fn cosine(a: &[f32], b: &[f32]) -> f64 {
        let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
        let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
        let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
        dot / (na * nb)
    }

    /// The SQLSTATE raised by `f`, or None if it succeeded.
    fn sqlstate_of(f: impl FnOnce() + std::panic::UnwindSafe) -> Option<PgSqlErrorCode> {
        PgTryBuilder::new(|| {
            f();
            None
        })
        .catch_others(|e| match e {
            CaughtError::PostgresError(r) | CaughtError::ErrorReport(r) => Some(r.sql_error_code()),
            CaughtError::RustPanic { ereport, .. } => Some(ereport.sql_error_code()),
        })
        .execute()
    }

    fn long_note(words: usize) -> String {
        let vocab = [
            "patient",
            "denies",
            "chest",
            "pain",
            "afebrile",
            "lungs",
            "clear",
            "bilaterally",
            "plan",
            "follow",
            "up",
        ];
        (0..words)
            .map(|i| vocab[i % vocab.len()])
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[pg_test]
    fn dimension_matches_model_info() {
        let dims = Spi::get_one::<i32>("SELECT dimensions FROM embed_model_info()")
            .unwrap()
            .unwrap();
        assert_eq!(dims, 384, "default model is all-MiniLM-L6-v2");
        assert_eq!(embed("chest pain").len(), 384);
        let max_len = Spi::get_one::<i32>("SELECT max_length FROM embed_model_info()")
            .unwrap()
            .unwrap();
        assert_eq!(max_len, 512);
    }

    #[pg_test]
    fn deterministic_within_and_across_calls() {
        let a = embed("Patient reports intermittent chest pain on exertion.");
        let b = embed("Patient reports intermittent chest pain on exertion.");
        assert_eq!(a, b);
        let same = Spi::get_one::<bool>("SELECT embed_text('x') = embed_text('x')")
            .unwrap()
            .unwrap();
        assert!(same);
    }

    #[pg_test]
    fn null_in_null_out() {
        let isnull = Spi::get_one::<bool>("SELECT embed_text(NULL) IS NULL")
            .unwrap()
            .unwrap();
        assert!(isnull);
        let isnull = Spi::get_one::<bool>("SELECT embed_token_count(NULL) IS NULL")
            .unwrap()
            .unwrap();
        assert!(isnull);
    }

    #[pg_test]
    fn empty_and_whitespace_are_finite_and_equal() {
        let empty = embed("");
        let blank = embed("   \n\t  ");
        assert_eq!(empty.len(), 384);
        assert!(empty.iter().all(|x| x.is_finite()));
        assert!(
            empty.iter().any(|x| *x != 0.0),
            "empty text embeds [CLS] [SEP], not zeros"
        );
        assert_eq!(empty, blank);
        let n = Spi::get_one::<i32>("SELECT embed_token_count('')")
            .unwrap()
            .unwrap();
        assert_eq!(n, 2);
    }

    #[pg_test]
    fn long_text_is_truncated_without_error() {
        let long = long_note(900);
        let n =
            Spi::get_one_with_args::<i32>("SELECT embed_token_count($1)", &[long.as_str().into()])
                .unwrap()
                .unwrap();
        assert!(n > 512, "note has {n} tokens");
        let a = embed(&long);
        assert!(a.iter().all(|x| x.is_finite()));
        // Everything past token 512 is cut, so a longer tail changes nothing.
        let b = embed(&format!("{long} pneumonia sepsis intubated"));
        assert_eq!(a, b);
    }

    #[pg_test]
    fn similar_notes_are_closer_than_unrelated() {
        let anchor = embed("Patient presents with crushing substernal chest pain radiating to the left arm; troponin elevated.");
        let similar = embed(
            "Acute myocardial infarction suspected: chest pain, diaphoresis, ST elevation on ECG.",
        );
        let unrelated = embed("Right distal radius fracture after a fall; cast applied, orthopedics follow-up in two weeks.");
        assert!(cosine(&anchor, &similar) > cosine(&anchor, &unrelated) + 0.05);
    }

    #[pg_test]
    fn bad_model_path_errors_then_recovers() {
        Spi::run("SET clinembed.model = '/nonexistent/clinembed-model'").unwrap();
        assert_eq!(
            sqlstate_of(|| {
                crate::embed_text("chest pain");
            }),
            Some(PgSqlErrorCode::ERRCODE_UNDEFINED_FILE)
        );
        Spi::run("RESET clinembed.model").unwrap();
        assert_eq!(embed("chest pain").len(), 384);
    }

    #[pg_test]
    fn corrupt_model_errors_then_recovers() {
        let dir = std::env::temp_dir().join(format!("clinembed-corrupt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("model.onnx"), b"this is not an onnx graph").unwrap();
        let installed = crate::paths::models_dir().join(clinembed_core::DEFAULT_MODEL);
        std::fs::copy(installed.join("tokenizer.json"), dir.join("tokenizer.json")).unwrap();
        Spi::run(&format!("SET clinembed.model = '{}'", dir.display())).unwrap();
        let code = sqlstate_of(|| {
            crate::embed_text("chest pain");
        });
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(code, Some(PgSqlErrorCode::ERRCODE_CONFIG_FILE_ERROR));
        Spi::run("RESET clinembed.model").unwrap();
        assert_eq!(embed("chest pain").len(), 384);
    }

    #[pg_test]
    fn model_name_cannot_escape_models_dir() {
        Spi::run("SET clinembed.model = '../../etc'").unwrap();
        let code = sqlstate_of(|| {
            crate::embed_text("x");
        });
        Spi::run("RESET clinembed.model").unwrap();
        assert_eq!(code, Some(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE));
    }

    #[pg_test]
    fn thread_setting_reloads_session() {
        let a = embed("shortness of breath");
        Spi::run("SET clinembed.intra_op_threads = 2").unwrap();
        let threads = Spi::get_one::<i32>("SELECT intra_op_threads FROM embed_model_info()")
            .unwrap()
            .unwrap();
        assert_eq!(threads, 2);
        let b = embed("shortness of breath");
        let max_diff = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(
            max_diff < 1e-5,
            "thread count changed results by {max_diff}"
        );
    }

    #[pg_test]
    fn embed_texts_matches_embed_text_in_order() {
        let texts = [
            Some("Patient denies chest pain."),
            None,
            Some(""),
            Some("CT chest: small bilateral pleural effusions, no pulmonary embolism."),
        ];
        let long = long_note(700);
        let mut all: Vec<Option<&str>> = texts.to_vec();
        all.push(Some(long.as_str()));
        Spi::run("SET clinembed.batch_tokens = 32").unwrap();
        let rows: Vec<(i32, Option<Vec<f32>>)> = Spi::connect(|client| {
            client
                .select(
                    "SELECT ord, embedding FROM embed_texts($1) ORDER BY ord",
                    None,
                    &[all.clone().into()],
                )
                .unwrap()
                .map(|r| {
                    (
                        r.get::<i32>(1).unwrap().unwrap(),
                        r.get::<Vec<f32>>(2).unwrap(),
                    )
                })
                .collect()
        });
        assert_eq!(rows.len(), all.len());
        for (i, (ord, v)) in rows.iter().enumerate() {
            assert_eq!(*ord as usize, i + 1);
            match (all[i], v) {
                (None, None) => {}
                (Some(t), Some(v)) => {
                    let single = embed(t);
                    let d = single
                        .iter()
                        .zip(v)
                        .map(|(a, b)| (a - b).abs())
                        .fold(0f32, f32::max);
                    assert!(d <= 1e-5, "row {ord} differs by {d}");
                }
                _ => panic!("NULL element must give a NULL embedding (row {ord})"),
            }
        }
    }
}
