//! Property tests of the tokenize-and-pool core: whatever the input, no NaN
//! or infinity comes out, shapes hold, and a batch equals its texts embedded
//! one by one.  The pooling properties need nothing; the text properties run
//! the real installed default model (paths in `common/mod.rs`).

mod common;

use clinembed_core::inference::pool::{l2_normalize, mean_pool};
use clinembed_core::{BatchLimits, Embedder};
use common::load;
use ndarray::{Array2, Array3};
use proptest::prelude::*;

/// Any finite f32, weighted towards the extremes.
fn finite() -> impl Strategy<Value = f32> {
    prop_oneof![
        -10f32..10f32,
        Just(f32::MAX),
        Just(f32::MIN),
        Just(f32::MIN_POSITIVE),
        Just(0.0),
        Just(-0.0),
        any::<f32>().prop_filter("finite", |x| x.is_finite()),
    ]
}

/// Texts a clinical note column can hold, and some it should not.
fn texts() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[ \\t\\r\\n]{0,20}",
        "[\\x00-\\x1f\\x7f]{1,50}",
        "[a-zA-Z0-9 .,;:()/%-]{0,400}",
        "(\\PC){0,200}",
        ("[a-z ]{1,20}", 50usize..3000).prop_map(|(s, n)| s.repeat(n)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn pooling_is_finite_for_finite_states(
        (rows, len, dim) in (1usize..4, 1usize..9, 1usize..9),
        values in proptest::collection::vec(finite(), 4 * 9 * 9),
        mask_bits in proptest::collection::vec(any::<bool>(), 4 * 9),
    ) {
        let hidden = Array3::from_shape_fn((rows, len, dim), |(r, t, d)| values[(r * 9 + t) * 9 + d]);
        let mask = Array2::from_shape_fn((rows, len), |(r, t)| i64::from(mask_bits[r * 9 + t]));
        let mut pooled = mean_pool(hidden.view(), mask.view());
        prop_assert_eq!(pooled.dim(), (rows, dim));
        prop_assert!(pooled.iter().all(|x| x.is_finite()));
        l2_normalize(&mut pooled);
        for row in pooled.rows() {
            prop_assert!(row.iter().all(|x| x.is_finite()));
            let norm: f64 = row.iter().map(|&x| f64::from(x) * f64::from(x)).sum::<f64>().sqrt();
            prop_assert!(norm == 0.0 || (norm - 1.0).abs() < 1e-4, "norm {}", norm);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn any_text_embeds_to_a_finite_vector(text in texts()) {
        thread_local! { static MODEL: std::cell::RefCell<Embedder> = std::cell::RefCell::new(load()); }
        MODEL.with(|m| {
            let mut m = m.borrow_mut();
            let dims = m.info().dimensions;
            let enc = m.encode(&text).unwrap();
            prop_assert!(enc.len() >= 2 && enc.len() <= m.info().max_length);
            let v = m.embed(&text).unwrap();
            prop_assert_eq!(v.len(), dims);
            prop_assert!(v.iter().all(|x| x.is_finite()));
            Ok(())
        })?;
    }

    #[test]
    fn a_batch_equals_its_texts_one_by_one(
        batch in proptest::collection::vec(proptest::option::weighted(0.9, texts()), 0..12),
    ) {
        thread_local! { static MODEL: std::cell::RefCell<Embedder> = std::cell::RefCell::new(load()); }
        MODEL.with(|m| {
            let mut m = m.borrow_mut();
            let items: Vec<Option<&str>> = batch.iter().map(|t| t.as_deref()).collect();
            let limits = BatchLimits { micro_batch_tokens: 600, ..BatchLimits::default() };
            let out = m.embed_batch(&items, &limits, || {}).unwrap();
            prop_assert_eq!(out.len(), items.len());
            for (item, got) in items.iter().zip(&out) {
                match (item, got) {
                    (None, None) => {}
                    (Some(t), Some(v)) => {
                        let alone = m.embed(t).unwrap();
                        let diff = alone.iter().zip(v).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
                        prop_assert!(diff <= 1e-5, "max abs diff {}", diff);
                    }
                    _ => prop_assert!(false, "NULL mismatch"),
                }
            }
            Ok(())
        })?;
    }
}
