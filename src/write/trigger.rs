//! What the row triggers (`embed_trigger`, `embed_queue_trigger`) share:
//! their C entry point, the check of how they were created, their arguments,
//! and reading the row that fired them through the relation's tuple
//! descriptor, decided by the one rule (`columns::row_action`).

use clinembed_core::rows::columns::Action;
use clinembed_core::{Error, ErrorKind};
use pgrx::prelude::*;
use pgrx::{pg_sys, PgTupleDesc};

use crate::errors::report;
use crate::pg::catalog::{self, shown};
use crate::pg::tuple::{output, value};
use crate::write::columns;

/// Defines the C entry point `$wrapper` of a trigger function whose pgrx
/// wrapper is `$body`: pgrx's wrapper panics (XX000) when the function is
/// called other than as a trigger (`SELECT embed_trigger()`); this one
/// refuses such a call first, with the SQLSTATE of the other misuses.
macro_rules! trigger_entry {
    ($finfo:ident, $wrapper:ident, $body:ident, $function:literal, $detail:literal, $hint:literal) => {
        #[unsafe(no_mangle)]
        #[doc(hidden)]
        pub extern "C" fn $finfo() -> &'static pgrx::pg_sys::Pg_finfo_record {
            const V1: pgrx::pg_sys::Pg_finfo_record =
                pgrx::pg_sys::Pg_finfo_record { api_version: 1 };
            &V1
        }

        /// The function manager's entry point (see `trigger_entry!`).
        ///
        /// # Safety
        /// Called by PostgreSQL's function manager with a valid `fcinfo`.
        #[unsafe(no_mangle)]
        #[doc(hidden)]
        pub unsafe extern "C-unwind" fn $wrapper(
            fcinfo: pgrx::pg_sys::FunctionCallInfo,
        ) -> pgrx::pg_sys::Datum {
            // SAFETY: `fcinfo` is the function manager's; the check reads
            // its context.
            if unsafe { pgrx::trigger_support::called_as_trigger(fcinfo) } {
                // SAFETY: a trigger call, which pgrx's wrapper expects.
                unsafe { $body(fcinfo) }
            } else {
                pgrx::pg_sys::submodules::panic::pgrx_extern_c_guard(|| -> pgrx::pg_sys::Datum {
                    $crate::errors::report(
                        clinembed_core::Error::new(
                            clinembed_core::ErrorKind::TriggerProtocol,
                            concat!($function, " can only be called as a trigger"),
                        )
                        .detail($detail)
                        .hint($hint),
                    )
                })
            }
        }
    };
}
pub(crate) use trigger_entry;

/// How a trigger function must be created to work.
pub(crate) struct Fires {
    /// BEFORE (else AFTER).
    pub before: bool,
    /// FOR EACH ROW (else STATEMENT).
    pub row: bool,
}

/// Refuses (`39P01`) a trigger that fired other than `fires` says, on
/// INSERT or UPDATE; returns whether it fired on INSERT.
pub(crate) fn refuse_misfire(
    trigger: &PgTrigger<'_>,
    function: &str,
    fires: Fires,
    hint: &str,
) -> Result<bool, PgTriggerError> {
    let op = trigger.op()?;
    let when = trigger.when()?;
    let row = matches!(trigger.level(), PgTriggerLevel::Row);
    let insert = matches!(op, PgTriggerOperation::Insert);
    let before = matches!(when, PgTriggerWhen::Before);
    let when_ok = if fires.before {
        before
    } else {
        matches!(when, PgTriggerWhen::After)
    };
    if when_ok && row == fires.row && (insert || matches!(op, PgTriggerOperation::Update)) {
        return Ok(insert);
    }
    let (rel, name) = (trigger.relid()?, trigger.name()?);
    report(
        Error::new(
            ErrorKind::TriggerProtocol,
            if fires.before {
                format!("{function} must fire BEFORE INSERT OR UPDATE FOR EACH ROW")
            } else {
                format!("{function} must fire AFTER INSERT or AFTER UPDATE FOR EACH STATEMENT")
            },
        )
        .detail(format!(
            "Trigger {} on {} fired {} {} FOR EACH {}.",
            shown(name),
            catalog::relation_name(rel),
            match when {
                PgTriggerWhen::Before => "BEFORE",
                PgTriggerWhen::After => "AFTER",
                PgTriggerWhen::InsteadOf => "INSTEAD OF",
            },
            match op {
                PgTriggerOperation::Insert => "INSERT",
                PgTriggerOperation::Update => "UPDATE",
                PgTriggerOperation::Delete => "DELETE",
                PgTriggerOperation::Truncate => "TRUNCATE",
            },
            if row { "ROW" } else { "STATEMENT" }
        ))
        .hint(hint),
    )
}

/// A BEFORE INSERT OR UPDATE ... FOR EACH ROW trigger as it fires: its
/// relation, arguments, tuples and the numbers and types of the columns it
/// names.
pub(crate) struct RowFire<'a> {
    pub trigger: &'a PgTrigger<'a>,
    pub rel: pg_sys::Oid,
    pub name: &'a str,
    pub insert: bool,
    pub source: Option<String>,
    pub target: Option<String>,
    pub model: Option<String>,
    /// The relation's descriptor, valid while the trigger runs.
    pub desc: pg_sys::TupleDesc,
    pub new: pg_sys::HeapTuple,
    /// NULL on INSERT.
    pub old: pg_sys::HeapTuple,
    /// (attnum, type, typmod) of source, target and model column, in that
    /// order; (0, InvalidOid, -1) for a name the table lacks.
    pub shape: Vec<(i16, pg_sys::Oid, i32)>,
}

/// What the rule reads of a row.
pub(crate) struct RowRead {
    pub text: Option<pg_sys::Datum>,
    pub has_vector: bool,
    pub label: Option<String>,
    /// UPDATE only: the text differs from OLD's, as printed.
    pub changed: bool,
}

impl<'a> RowFire<'a> {
    /// Refuses a trigger not created BEFORE INSERT OR UPDATE FOR EACH ROW,
    /// then reads its arguments (as `columns::trigger_args` checks them).
    pub(crate) fn new(
        trigger: &'a PgTrigger<'a>,
        function: &str,
        hint: &str,
    ) -> Result<Self, PgTriggerError> {
        let rel = trigger.relid()?;
        let name = trigger.name()?;
        let insert = refuse_misfire(
            trigger,
            function,
            Fires {
                before: true,
                row: true,
            },
            hint,
        )?;
        let args = trigger.extra_args()?.into_iter().map(Some).collect();
        let (source, target, model) = columns::trigger_args(function, rel, name, args);
        let td = trigger.trigger_data();
        let (new, old) = if insert {
            (td.tg_trigtuple, std::ptr::null_mut())
        } else {
            (td.tg_newtuple, td.tg_trigtuple)
        };
        // SAFETY: the open relation's own descriptor, valid while the
        // trigger runs.
        let desc = unsafe { (*td.tg_relation).rd_att };
        // SAFETY: as above; not freed by this wrapper.
        let tupdesc = unsafe { PgTupleDesc::from_pg_unchecked(desc) };
        let shape = [source.as_deref(), target.as_deref(), model.as_deref()]
            .iter()
            .flatten()
            .map(|n| {
                tupdesc
                    .iter()
                    .find(|a| !a.is_dropped() && a.name() == *n)
                    .map(|a| (a.attnum, a.atttypid, a.atttypmod))
                    .unwrap_or((0, pg_sys::Oid::INVALID, -1))
            })
            .collect();
        Ok(RowFire {
            trigger,
            rel,
            name,
            insert,
            source,
            target,
            model,
            desc,
            new,
            old,
            shape,
        })
    }

    /// The trigger's oid, for per-backend caches of its checks.
    pub(crate) fn oid(&self) -> pg_sys::Oid {
        self.trigger.trigger().tgoid
    }

    /// The model column's (attnum, type, typmod), if the trigger names one.
    pub(crate) fn model_column(&self) -> Option<(i16, pg_sys::Oid, i32)> {
        self.model.as_ref().map(|_| self.shape[2])
    }

    /// A column of NEW (`new`) or OLD.
    pub(crate) fn value(&self, new: bool, attnum: i16) -> Option<pg_sys::Datum> {
        // SAFETY: the trigger's tuples, of this relation's descriptor.
        unsafe { value(if new { self.new } else { self.old }, self.desc, attnum) }
    }

    /// What the rule needs of the row: call only after the column checks
    /// passed, so that every named column exists.
    pub(crate) fn read(&self) -> RowRead {
        let (source_att, source_type, _) = self.shape[0];
        let text = self.value(true, source_att);
        let changed = !self.insert
            && match (text, self.value(false, source_att)) {
                (Some(n), Some(o)) => output(source_type, n) != output(source_type, o),
                (n, o) => n.is_some() != o.is_some(),
            };
        RowRead {
            text,
            has_vector: self.value(true, self.shape[1].0).is_some(),
            label: self
                .model_column()
                .and_then(|(a, t, _)| self.value(true, a).map(|d| output(t, d))),
            changed,
        }
    }

    /// The one rule, applied to `row`.
    pub(crate) fn action(&self, row: &RowRead) -> Action {
        columns::row_action(
            if self.insert { "INSERT" } else { "UPDATE" },
            row.text.is_some(),
            row.has_vector,
            row.label.as_deref(),
            row.changed,
            self.model.is_some(),
        )
    }

    /// NEW with the columns `cols` replaced by `values` (None: NULL), a copy
    /// in the trigger's memory context.
    pub(crate) fn modified(
        &self,
        cols: &[i16],
        values: &[Option<pg_sys::Datum>],
    ) -> PgHeapTuple<'a, AllocatedByPostgres> {
        let mut cols: Vec<i32> = cols.iter().map(|&c| c as i32).collect();
        let nulls: Vec<bool> = values.iter().map(|v| v.is_none()).collect();
        let datums: Vec<pg_sys::Datum> = values
            .iter()
            .map(|v| v.unwrap_or(pg_sys::Datum::from(0)))
            .collect();
        // SAFETY: NEW of this relation's descriptor, with as many values and
        // nulls as column numbers; the copy is palloc'd in the current
        // (trigger) context.
        unsafe {
            let t = pg_sys::heap_modify_tuple_by_cols(
                self.new,
                self.desc,
                cols.len() as i32,
                cols.as_mut_ptr(),
                datums.as_ptr() as *mut _,
                nulls.as_ptr() as *mut _,
            );
            PgHeapTuple::from_heap_tuple(PgTupleDesc::from_pg_unchecked(self.desc), t)
        }
    }
}

/// A trigger's `UPDATE OF` columns (attnums); None when it fires on every
/// update.
pub(crate) fn update_of_list(trigger: &pg_sys::Trigger) -> Option<&[i16]> {
    if trigger.tgnattr <= 0 || trigger.tgattr.is_null() {
        return None;
    }
    // SAFETY: tgattr holds tgnattr column numbers, as long as the trigger.
    Some(unsafe { std::slice::from_raw_parts(trigger.tgattr, trigger.tgnattr as usize) })
}

/// Refuses (39P01) a trigger of `function` declared `UPDATE OF` columns
/// that leave out a key column: an UPDATE of the key alone would not fire
/// it, with the consequence `why`.
pub(crate) fn refuse_update_of_without_keys(
    trigger: &pg_sys::Trigger,
    function: &str,
    rel: pg_sys::Oid,
    name: &str,
    keys: &[i16],
    why: &str,
) {
    let Some(listed) = update_of_list(trigger) else {
        return;
    };
    if keys.iter().all(|k| listed.contains(k)) {
        return;
    }
    report(
        Error::new(
            ErrorKind::TriggerProtocol,
            format!("{function}'s UPDATE OF list must name the primary key's columns"),
        )
        .detail(format!(
            "Trigger {} on {} fires on UPDATE OF some columns only; {why}.",
            shown(name),
            catalog::relation_name(rel)
        ))
        .hint("Add the key columns to the UPDATE OF list, or fire the trigger on every UPDATE (BEFORE INSERT OR UPDATE)."),
    );
}
