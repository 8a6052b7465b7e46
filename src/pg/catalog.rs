//! Catalog reads the rest of the crate shares: relation and role names for
//! messages and statements, the extension's schema, primary keys, relation
//! trees and column privileges, and a cache of what is worked out from them
//! ([`Cached`]).  The statements are in
//! `clinembed_core::rows::statements`; they run read-only, with
//! `search_path` pinned (`crate::pg::spi`).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::ffi::{CStr, CString};
use std::hash::Hash;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};

use clinembed_core::rows::columns as rule;
use clinembed_core::rows::statements;
use pgrx::prelude::*;

use crate::pg::security::pinned;
use crate::pg::spi::{select_one, select_two};

/// An identifier quoted only where PostgreSQL would (as `format('%I')`), for
/// messages.
pub(crate) fn shown(name: &str) -> String {
    let c = CString::new(name).unwrap_or_default();
    // SAFETY: quote_identifier reads a NUL-terminated string and returns it
    // or a palloc'd quoted copy, both valid for this call.
    unsafe { CStr::from_ptr(pg_sys::quote_identifier(c.as_ptr())) }
        .to_string_lossy()
        .into_owned()
}

/// A relation's name as `regclass` prints it, for messages.
pub(crate) fn relation_name(rel: pg_sys::Oid) -> String {
    select_one::<String>(statements::RELATION_NAME, &[rel.into()])
        .unwrap_or_else(|| format!("relation {}", rel.to_u32()))
}

/// A relation's name, schema-qualified and quoted, for statements.
pub(crate) fn qualified(rel: pg_sys::Oid) -> String {
    select_one::<String>(statements::QUALIFIED_NAME, &[rel.into()]).unwrap_or_else(|| {
        crate::errors::report(
            clinembed_core::Error::new(
                clinembed_core::ErrorKind::NotFound,
                "relation does not exist",
            )
            .detail(format!("No relation has oid {}.", rel.to_u32()))
            .hint("It was dropped while clinembed was using it."),
        )
    })
}

/// The extension's schema, quoted, for statements that call its functions.
pub(crate) fn extension_schema() -> String {
    select_one::<String>(statements::EXTENSION_SCHEMA, &[]).unwrap_or_else(|| "public".into())
}

/// The primary key's columns of `rel`, in key order, with their types as
/// `format_type` prints them; None without a primary key.
pub(crate) fn primary_key(rel: pg_sys::Oid) -> Option<Vec<(String, String)>> {
    let (names, types) =
        select_two::<Vec<String>, Vec<String>>(statements::PRIMARY_KEY, &[rel.into()]);
    let keys: Vec<(String, String)> = names?.into_iter().zip(types?).collect();
    (!keys.is_empty()).then_some(keys)
}

/// The oid of `rel`'s primary key index, if it has one, from the relation
/// cache (no catalog query): what the queue trigger compares as well.
pub(crate) fn primary_key_index(rel: pg_sys::Oid) -> Option<pg_sys::Oid> {
    // SAFETY: `rel` names a relation the caller has found (relation_open
    // raises an error otherwise); the index list fills `rd_pkindex`, and the
    // relation is closed again when `relation` drops.
    let index = unsafe {
        let relation =
            pgrx::PgRelation::with_lock(rel, pg_sys::AccessShareLock as pg_sys::LOCKMODE);
        pg_sys::list_free(pg_sys::RelationGetIndexList(relation.as_ptr()));
        (*relation.as_ptr()).rd_pkindex
    };
    (index != pg_sys::Oid::INVALID).then_some(index)
}

/// `rel` itself, its partitions and its inheritance children, by oid, as
/// the catalog describes them.
pub(crate) fn relation_tree(rel: pg_sys::Oid) -> Vec<rule::Member> {
    pinned(|| {
        Spi::connect(|c| {
            c.select(statements::RELATION_TREE, None, &[rel.into()])?
                .map(|row| {
                    Ok(rule::Member {
                        oid: row.get::<pg_sys::Oid>(1)?.unwrap_or_default().to_u32(),
                        name: row.get::<String>(2)?.unwrap_or_default(),
                        relkind: row
                            .get::<String>(3)?
                            .unwrap_or_default()
                            .chars()
                            .next()
                            .unwrap_or(' '),
                    })
                })
                .collect::<Result<Vec<_>, pgrx::spi::Error>>()
        })
    })
    .unwrap_or_else(|e| {
        crate::errors::report(
            clinembed_core::Error::new(
                clinembed_core::ErrorKind::Runtime,
                "the tables of a relation could not be read",
            )
            .detail(format!("SPI: {e}"))
            .hint("This is a bug in clinembed; please report it."),
        )
    })
}

/// Which of the column privileges `wanted` ((privilege, column) pairs) the
/// current role lacks on `rel`, as `SELECT (col)`, in the order given.
pub(crate) fn missing_privileges(rel: pg_sys::Oid, wanted: &[(&str, &str)]) -> Vec<String> {
    wanted
        .iter()
        .filter(|(privilege, column)| {
            !select_one::<bool>(
                statements::COLUMN_PRIVILEGE,
                &[rel.into(), (*column).into(), (*privilege).into()],
            )
            .unwrap_or(false)
        })
        .map(|(privilege, column)| format!("{privilege} ({})", shown(column)))
        .collect()
}

/// Which of the privileges `wanted` ((privilege, column) pairs; an empty
/// column: the privilege on the table) `role` (None: the current role)
/// lacks on `rel`, as `SELECT (col)`, in the order given.  One statement.
pub(crate) fn missing_privileges_of(
    role: Option<pg_sys::Oid>,
    rel: pg_sys::Oid,
    wanted: &[(&str, &str)],
) -> Vec<String> {
    // SAFETY: the current role.
    let role = role.unwrap_or_else(|| unsafe { pg_sys::GetUserId() });
    let privileges: Vec<String> = wanted.iter().map(|w| w.0.to_string()).collect();
    let columns: Vec<String> = wanted.iter().map(|w| w.1.to_string()).collect();
    let lacked = select_one::<Vec<i32>>(
        statements::PRIVILEGES_LACKED,
        &[role.into(), rel.into(), privileges.into(), columns.into()],
    )
    .unwrap_or_default();
    lacked
        .into_iter()
        .filter_map(|n| wanted.get((n - 1) as usize))
        .map(|(p, c)| {
            if c.is_empty() {
                p.to_string()
            } else {
                format!("{p} ({})", shown(c))
            }
        })
        .collect()
}

/// A role's name, for messages.
pub(crate) fn role_name(role: pg_sys::Oid) -> String {
    select_one::<String>(statements::ROLE_NAME, &[role.into()])
        .unwrap_or_else(|| format!("role {}", role.to_u32()))
}

/// The current role's name, quoted as `%I` would.
pub(crate) fn current_role() -> String {
    select_one::<String>(statements::CURRENT_ROLE, &[]).unwrap_or_default()
}

/// Values worked out from the catalog (a table's columns, key, statements),
/// kept in this backend until PostgreSQL invalidates any relation's cache
/// entry: ALTER TABLE, GRANT and REVOKE, CREATE or DROP TRIGGER, a partition
/// attached or detached, a new owner, ALTER EXTENSION ... SET SCHEMA all
/// do, and a transaction accepts them as it takes its first lock.  What is
/// not a relation's (a function's owner, a role's rights) must not be
/// cached here.  One per use, in a `thread_local!`.
pub(crate) struct Cached<K, V> {
    entries: RefCell<HashMap<K, Rc<V>>>,
    epoch: Cell<u64>,
}

/// Bumped by the relation cache callback.
static EPOCH: AtomicU64 = AtomicU64::new(0);

#[pg_guard]
unsafe extern "C-unwind" fn relcache_invalidated(_arg: pg_sys::Datum, _relid: pg_sys::Oid) {
    EPOCH.fetch_add(1, Ordering::Relaxed);
}

/// The relation cache's epoch, with the callback that bumps it registered
/// (once per backend).
fn epoch() -> u64 {
    static REGISTERED: std::sync::Once = std::sync::Once::new();
    REGISTERED.call_once(|| {
        // SAFETY: registers a function of this library for the life of the
        // backend, once.
        unsafe {
            pg_sys::CacheRegisterRelcacheCallback(
                Some(relcache_invalidated),
                pg_sys::Datum::from(0),
            )
        }
    });
    EPOCH.load(Ordering::Relaxed)
}

impl<K: Hash + Eq, V> Cached<K, V> {
    pub(crate) fn new() -> Self {
        Cached {
            entries: RefCell::new(HashMap::new()),
            epoch: Cell::new(0),
        }
    }

    /// The value kept for `key`, or `make()`'s, kept from now on.  A `make`
    /// that raises an error keeps nothing.
    pub(crate) fn get(&self, key: K, make: impl FnOnce() -> V) -> Rc<V> {
        let now = epoch();
        if self.epoch.replace(now) != now {
            self.entries.borrow_mut().clear();
        }
        if let Some(v) = self.entries.borrow().get(&key) {
            return v.clone();
        }
        let v = Rc::new(make());
        // `make` ran catalog reads: anything they invalidated is stale.
        if epoch() == now {
            self.entries.borrow_mut().insert(key, v.clone());
        }
        v
    }
}
