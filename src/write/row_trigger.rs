//! The row trigger, `embed_trigger`, in Rust: NEW is read through the
//! relation's tuple descriptor, the rule decides, the vector is embedded and
//! cast to the target column's type as `$1::type` would cast it, and the
//! tuple is modified, with no SQL run per row.
//!
//! The column checks run on a trigger's first fire and again only when the
//! columns it names change number, type or type modifier (a per-backend
//! cache keyed by trigger and shape, as the queue trigger keeps its own).

use std::cell::RefCell;

use clinembed_core::rows::columns::Action;
use clinembed_core::{Error, ErrorKind};
use pgrx::prelude::*;
use pgrx::{pg_sys, IntoDatum, PgBox};

use crate::errors::{report, OrReport};
use crate::pg::tuple::output;
use crate::write::trigger::{trigger_entry, RowFire};
use crate::{backend, gucs, write::columns};

const TRIGGER: &str = "embed_trigger";

/// What a trigger's column checks found, valid while its columns keep the
/// numbers and types they had.
struct Checked {
    trigger: pg_sys::Oid,
    shape: Vec<(i16, pg_sys::Oid, i32)>,
    target_type: String,
    target_dims: Option<i32>,
}

/// Triggers checked in this backend, at most this many (the oldest goes).
const CHECKED_MAX: usize = 64;

thread_local! {
    static CHECKED: RefCell<Vec<Checked>> = const { RefCell::new(Vec::new()) };
}

trigger_entry!(
    pg_finfo_embed_trigger_wrapper,
    embed_trigger_wrapper,
    embed_trigger_body_wrapper,
    "embed_trigger",
    "It was called as a function, with no row to embed.",
    "CREATE TRIGGER ... BEFORE INSERT OR UPDATE ON t FOR EACH ROW EXECUTE FUNCTION embed_trigger('source', 'target'); to embed stored rows, CALL embed_backfill(...)."
);

/// Row trigger: BEFORE INSERT OR UPDATE [OF source] ... FOR EACH ROW
/// EXECUTE FUNCTION embed_trigger('source', 'target' [, 'model_column']).
/// Embeds one row at a time, so RETURNING shows the vector; for bulk loads
/// use embed_batch_trigger.  `search_path` is pinned by the function's own
/// SET clause, for the casts and the type functions it calls.
#[pg_trigger(
    sql = r#"CREATE FUNCTION "embed_trigger"() RETURNS TRIGGER LANGUAGE c SET search_path = pg_catalog, pg_temp AS 'MODULE_PATHNAME', 'embed_trigger_wrapper';"#
)]
fn embed_trigger_body<'a>(
    trigger: &'a PgTrigger<'a>,
) -> Result<Option<PgHeapTuple<'a, AllocatedByPostgres>>, PgTriggerError> {
    let fire = RowFire::new(
        trigger,
        TRIGGER,
        "For batched inserts use embed_batch_trigger, an AFTER ... FOR EACH STATEMENT trigger.",
    )?;
    let tgoid = fire.oid();
    let known = CHECKED.with(|c| {
        c.borrow()
            .iter()
            .find(|k| k.trigger == tgoid && k.shape == fire.shape)
            .map(|k| (k.target_type.clone(), k.target_dims))
    });
    let (target_type, target_dims) = match known {
        Some(found) => found,
        None => {
            let t = columns::target(
                fire.rel,
                fire.source.as_deref(),
                fire.target.as_deref(),
                fire.model.as_deref(),
            );
            CHECKED.with(|c| {
                let mut c = c.borrow_mut();
                c.retain(|k| k.trigger != tgoid);
                if c.len() >= CHECKED_MAX {
                    c.remove(0);
                }
                c.push(Checked {
                    trigger: tgoid,
                    shape: fire.shape.clone(),
                    target_type: t.type_name.clone(),
                    target_dims: t.dims,
                });
            });
            (t.type_name, t.dims)
        }
    };
    let row = fire.read();
    let (vector, model_id) = match fire.action(&row) {
        Action::Keep => return Ok(trigger.new()),
        Action::Clear => (None, None),
        Action::Embed => {
            let target_name = fire.target.as_deref().unwrap_or_default();
            columns::check_dims(
                fire.rel,
                target_name,
                &target_type,
                target_dims,
                gucs::long_text(),
            );
            let (_, source_type, _) = fire.shape[0];
            let text = row.text.map(|d| output(source_type, d)).unwrap_or_default();
            let vector =
                backend::with_embedder(|e| backend::vector_of(e, &text, gucs::long_text()))
                    .or_report();
            (Some(vector), Some(backend::model_id()))
        }
    };
    let (target_att, target_typid, target_typmod) = fire.shape[1];
    let mut cols = vec![target_att];
    // SAFETY: casts of values this function made, in the trigger's memory
    // context.
    let mut values = vec![vector
        .and_then(|v| v.into_datum())
        .map(|d| unsafe { cast(d, pg_sys::FLOAT4ARRAYOID, target_typid, target_typmod) })];
    if let Some((att, typid, typmod)) = fire.model_column() {
        cols.push(att);
        // SAFETY: as above.
        values.push(
            model_id
                .and_then(|id| id.into_datum())
                .map(|d| unsafe { cast(d, pg_sys::TEXTOID, typid, typmod) }),
        );
    }
    Ok(Some(fire.modified(&cols, &values)))
}

/// `datum` (of type `from`) cast to type `to` with type modifier `typmod`,
/// exactly as `$1::to(typmod)` casts it in SQL (an explicit cast, length
/// and dimension checks included); the result in the current memory context.
///
/// # Safety
/// `datum` must be a valid, non-null value of type `from`.
unsafe fn cast(
    datum: pg_sys::Datum,
    from: pg_sys::Oid,
    to: pg_sys::Oid,
    typmod: i32,
) -> pg_sys::Datum {
    if from == to && typmod < 0 {
        return datum;
    }
    // SAFETY: a parse-tree node allocated here, read by the coercion code.
    unsafe {
        let mut input = PgBox::<pg_sys::CaseTestExpr>::alloc_node(pg_sys::NodeTag::T_CaseTestExpr);
        input.typeId = from;
        input.typeMod = -1;
        input.collation = pg_sys::get_typcollation(from);
        let expr = pg_sys::coerce_to_target_type(
            std::ptr::null_mut(),
            input.into_pg() as *mut pg_sys::Node,
            from,
            to,
            typmod,
            pg_sys::CoercionContext::COERCION_EXPLICIT,
            pg_sys::CoercionForm::COERCE_EXPLICIT_CAST,
            -1,
        );
        if expr.is_null() {
            report(
                Error::new(ErrorKind::InvalidTable, "no cast to the target column's type")
                    .detail(format!(
                        "PostgreSQL finds no cast from type oid {} to type oid {}.",
                        from.to_u32(),
                        to.to_u32()
                    ))
                    .hint("The target column must be real[], vector(N) or halfvec(N), and the model column text."),
            );
        }
        let planned = pg_sys::expression_planner(expr as *mut pg_sys::Expr);
        let state = pg_sys::ExecInitExpr(planned, std::ptr::null_mut());
        let econtext = pg_sys::CreateStandaloneExprContext();
        (*econtext).caseValue_datum = datum;
        (*econtext).caseValue_isNull = false;
        let mut isnull = false;
        // Evaluated in the current memory context (not the expression
        // context's per-tuple one, which is freed below), so the result
        // outlives it.
        let out = pg_sys::ExecEvalExpr(state, econtext, &mut isnull);
        pg_sys::FreeExprContext(econtext, true);
        out
    }
}
