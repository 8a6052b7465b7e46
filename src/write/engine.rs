//! The step every path that writes many rows shares (the statement trigger,
//! the backfill, the queue workers): the texts of one call's rows in, their
//! vectors out as the one `real[]` parameter of the one prepared UPDATE that
//! writes them all (`clinembed_core::rows::statements::vector_set`).  The
//! dimension check runs once per call; vectors and the model identity come
//! from `backend`.

use clinembed_core::rows::columns::Target;
use pgrx::pg_sys;

use crate::errors::OrReport;
use crate::{backend, gucs, write::columns};

/// One call's vectors, one after another (zeros for a row whose text is
/// NULL, which the write clears instead), each `dims` long.
pub(crate) struct Vectors {
    pub flat: Vec<f32>,
    pub dims: i32,
}

/// Embeds `texts` for the target column `target_column` of `rel`, after
/// checking that the model's vectors fit it.  No text: nothing is loaded.
pub(crate) fn embed(
    rel: pg_sys::Oid,
    target_column: &str,
    target: &Target,
    texts: &[Option<String>],
) -> Vectors {
    if texts.iter().all(Option::is_none) {
        return Vectors {
            flat: Vec::new(),
            dims: 0,
        };
    }
    columns::check_dims(
        rel,
        target_column,
        &target.type_name,
        target.dims,
        gucs::long_text(),
    );
    let items: Vec<Option<&str>> = texts.iter().map(Option::as_deref).collect();
    let vectors =
        backend::with_embedder(|e| backend::vectors_of(e, &items, gucs::long_text())).or_report();
    let dims = vectors.iter().flatten().map(Vec::len).next().unwrap_or(0);
    let mut flat = Vec::with_capacity(dims * vectors.len());
    for v in &vectors {
        match v {
            Some(v) => flat.extend_from_slice(v),
            None => flat.resize(flat.len() + dims, 0.0),
        }
    }
    Vectors {
        flat,
        dims: dims as i32,
    }
}
