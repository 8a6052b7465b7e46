//! The shared-weights form against the real default model: the same vectors
//! as the private form, built once, rebuilt when damaged.  Paths as in
//! `real_model.rs`.

mod common;

use std::path::{Path, PathBuf};

use clinembed_core::inference::model::weights::DERIVED_DATA;
use clinembed_core::{
    inference::runtime, BatchLimits, Embedder, SessionOptions, Weights, WeightsForm,
};
use common::{library, model_dir};

const TEXTS: [&str; 5] = [
    "",
    "chest pain",
    "Pt c/o SOB x3d, O2 sat 91% RA. 🙂 café 胸痛",
    "CT chest: no pulmonary embolism. Small bilateral pleural effusions, right greater than left.",
    "Discharge summary. Admitted with community-acquired pneumonia, treated with ceftriaxone and azithromycin, afebrile since day two, ambulating without oxygen, discharged home with follow-up in one week.",
];

fn cache(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "clinembed-core-shared-{tag}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn load(weights: &Weights) -> Embedder {
    let env = runtime::environment(&library()).expect("onnx runtime loads");
    Embedder::load(env, &model_dir(), &SessionOptions::default(), weights).expect("model loads")
}

fn vectors(e: &mut Embedder) -> Vec<Vec<f32>> {
    let texts: Vec<Option<&str>> = TEXTS.iter().map(|t| Some(*t)).collect();
    let mut out: Vec<Vec<f32>> = e
        .embed_batch(&texts, &BatchLimits::default(), || {})
        .unwrap()
        .into_iter()
        .map(Option::unwrap)
        .collect();
    out.extend(TEXTS.iter().map(|t| e.embed(t).unwrap()));
    out
}

fn max_diff(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    a.iter()
        .flatten()
        .zip(b.iter().flatten())
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max)
}

fn mapped(e: &Embedder) -> PathBuf {
    match &e.info().weights {
        WeightsForm::Mapped(p) => p.clone(),
        other => panic!("expected mapped weights, got {other:?}"),
    }
}

#[test]
fn shared_form_gives_the_private_forms_vectors() {
    let root = cache("same");
    let mut private = load(&Weights::Private);
    assert_eq!(private.info().weights, WeightsForm::Private(None));
    let mut shared = load(&Weights::Shared(root.clone()));
    let path = mapped(&shared);
    assert!(path.starts_with(&root));
    let (a, b) = (vectors(&mut private), vectors(&mut shared));
    let diff = max_diff(&a, &b);
    assert!(diff <= 1e-6, "max abs diff {diff}");
    // The identity is the source model's, whatever form it loaded in.
    assert_eq!(
        private.identity(None).unwrap(),
        shared.identity(None).unwrap()
    );
    // A second session maps the same entry.
    assert_eq!(mapped(&load(&Weights::Shared(root.clone()))), path);
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn a_damaged_entry_is_rebuilt_never_used() {
    let root = cache("damaged");
    let first = load(&Weights::Shared(root.clone()));
    let path = mapped(&first);
    let data = path.parent().unwrap().join(DERIVED_DATA);
    type Damage = fn(&Path);
    let damage: [(&str, Damage); 2] = [
        ("truncated", |p: &Path| {
            let len = std::fs::metadata(p).unwrap().len();
            std::fs::OpenOptions::new()
                .write(true)
                .open(p)
                .unwrap()
                .set_len(len / 2)
                .unwrap();
        }),
        ("overwritten", |p: &Path| {
            use std::os::unix::fs::FileExt;
            std::thread::sleep(std::time::Duration::from_millis(20));
            let f = std::fs::OpenOptions::new().write(true).open(p).unwrap();
            f.write_all_at(&[0xff; 4096], 8192).unwrap();
        }),
    ];
    let mut reference = load(&Weights::Private);
    let want = vectors(&mut reference);
    for (what, damage) in damage {
        // Unlink-free damage of the file the first session still maps is
        // what an operator's mistake looks like; the new session must not
        // see it.
        let stamp = std::fs::metadata(&data).unwrap();
        damage(&data);
        let mut again = load(&Weights::Shared(root.clone()));
        assert_eq!(mapped(&again), path, "{what}: same entry name");
        // Rebuilt: whole again, without the damage (inode numbers may be
        // reused, so the bytes are what is compared).
        let now = std::fs::read(&data).unwrap();
        assert_eq!(now.len() as u64, stamp.len(), "{what}: full length again");
        assert_ne!(
            &now[8192..8192 + 4096],
            &[0xff; 4096][..],
            "{what}: damage gone"
        );
        let diff = max_diff(&want, &vectors(&mut again));
        assert!(diff <= 1e-6, "{what}: max abs diff {diff}");
    }
    drop(first);
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn an_unusable_cache_falls_back_to_private_weights() {
    // A cache path under a file cannot be created: the model still loads,
    // privately, and says why.
    let root = cache("unusable");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("file"), b"x").unwrap();
    let e = load(&Weights::Shared(root.join("file/cache")));
    match &e.info().weights {
        WeightsForm::Private(Some(why)) => assert!(why.contains("cache"), "{why}"),
        other => panic!("expected a private fallback, got {other:?}"),
    }
    std::fs::remove_dir_all(&root).unwrap();
}
