//! `#[pg_test]`s: what only a test inside the backend sees.  Error cases call
//! the Rust function directly inside `PgTryBuilder`, so the caught error is a
//! Rust unwind with its SQLSTATE and the same transaction goes on to embed;
//! and a session rebuilt for a new thread count gives the same vectors.
//! Everything else is tested once, in the regress tier (tests/regress).

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

    #[pg_test]
    fn bad_model_path_errors_then_recovers() {
        Spi::run("SET clinembed.model = '/nonexistent/clinembed-model'").unwrap();
        assert_eq!(
            sqlstate_of(|| {
                crate::api::embed::embed_text("chest pain");
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
            crate::api::embed::embed_text("chest pain");
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
            crate::api::embed::embed_text("x");
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

    /// The SQL signatures' window, section and pooling defaults (literals,
    /// as pgrx needs them) are the core's, and so are the settings' boot
    /// values.
    #[pg_test]
    fn window_defaults_are_the_cores() {
        use clinembed_core::inference::chunk::{
            WindowPooling, DEFAULT_HEADER_CONTEXT, DEFAULT_OVERLAP_TOKENS, DEFAULT_WINDOW_TOKENS,
        };
        let want = format!("{DEFAULT_WINDOW_TOKENS}, {DEFAULT_OVERLAP_TOKENS}");
        let defaults: Vec<(String, String)> = Spi::connect(|c| {
            c.select(
                "SELECT proname::text, pg_get_expr(proargdefaults, 0) FROM pg_proc \
                  WHERE proname IN ('embed_chunks', 'embed_text_chunked')",
                None,
                &[],
            )?
            .map(|row| {
                Ok((
                    row.get::<String>(1)?.unwrap_or_default(),
                    row.get::<String>(2)?.unwrap_or_default(),
                ))
            })
            .collect::<Result<Vec<_>, pgrx::spi::SpiError>>()
        })
        .unwrap();
        assert_eq!(defaults.len(), 4);
        for (name, d) in &defaults {
            let wanted = if name == "embed_chunks" {
                // windows inside sections by default, led by their headers
                format!("{want}, true, {DEFAULT_HEADER_CONTEXT}")
            } else {
                format!("{want}, '{}'::text", WindowPooling::default().name())
            };
            assert_eq!(d, &wanted, "{name}");
        }
        let boot = Spi::get_one::<String>(
            "SELECT string_agg(boot_val, ', ' ORDER BY name DESC) FROM pg_settings \
              WHERE name IN ('clinembed.chunk_tokens', 'clinembed.chunk_overlap')",
        )
        .unwrap();
        assert_eq!(boot.as_deref(), Some(want.as_str()));
    }
}
