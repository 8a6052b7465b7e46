//! Reading a trigger's tuples: columns by name, values as their types print
//! them.

use std::ffi::CStr;

use pgrx::pg_sys;
use pgrx::PgTupleDesc;

/// A live column's number and type, by name.
pub(crate) fn attribute(desc: &PgTupleDesc<'_>, name: &str) -> Option<(i16, pg_sys::Oid)> {
    desc.iter()
        .find(|a| !a.is_dropped() && a.name() == name)
        .map(|a| (a.attnum, a.atttypid))
}

/// A value as its type's output function prints it.
pub(crate) fn output(typid: pg_sys::Oid, datum: pg_sys::Datum) -> String {
    let (mut func, mut varlena) = (pg_sys::Oid::INVALID, false);
    // SAFETY: a datum of type `typid`, printed by that type's output
    // function into a palloc'd C string.
    unsafe {
        pg_sys::getTypeOutputInfo(typid, &mut func, &mut varlena);
        CStr::from_ptr(pg_sys::OidOutputFunctionCall(func, datum))
            .to_string_lossy()
            .into_owned()
    }
}

/// A column of a trigger tuple: its datum, or None when NULL.
///
/// # Safety
/// `tuple` must be a valid tuple of `desc`.
pub(crate) unsafe fn value(
    tuple: pg_sys::HeapTuple,
    desc: pg_sys::TupleDesc,
    attnum: i16,
) -> Option<pg_sys::Datum> {
    if tuple.is_null() {
        return None;
    }
    pgrx::heap_getattr_raw(tuple, std::num::NonZeroUsize::new(attnum as usize)?, desc)
}
