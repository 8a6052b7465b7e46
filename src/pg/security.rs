//! Whose rights and which settings clinembed's own statements run with.
//!
//! Every statement clinembed runs on anyone's behalf (in a trigger, a
//! function, or a queue worker) runs inside [`Settings::pin`]: a GUC nest
//! level with `search_path` set to [`PINNED_SEARCH_PATH`] that is rolled
//! back when it ends, on success and on error alike, the way PostgreSQL's
//! own maintenance commands run index expressions.  So neither the caller's
//! `search_path` (a database owner's `ALTER DATABASE ... SET`, a role's
//! default) nor a setting changed by user code that runs inside (a table
//! owner's trigger calling `set_config(..., false)`) reaches the statements
//! clinembed runs after it.  The statements also name every operator and
//! function by schema, so they stay right even where a path is not pinned.
//!
//! [`as_role`] adds the switch to another role, with a restricted security
//! context (no `SET ROLE`, no temporary objects, no session-level changes
//! that outlive it), as `VACUUM` and `REFRESH MATERIALIZED VIEW` run a
//! table owner's code.

use std::ffi::CString;

use pgrx::pg_sys;

pub(crate) use clinembed_core::rows::queue::{
    KEY_TEXT_SETTINGS, PINNED_SEARCH_PATH, PINNED_VISIBILITY,
};

/// A GUC nest level with some settings changed; dropping it rolls back every
/// setting changed at or below it, by clinembed or by code it ran.
#[must_use = "the settings are rolled back when this is dropped"]
pub(crate) struct Settings {
    nest: i32,
}

impl Settings {
    /// A new nest level with `search_path` pinned.
    pub(crate) fn pin() -> Self {
        Self::with(&[("search_path", PINNED_SEARCH_PATH)])
    }

    /// A new nest level with `settings` (name, value) set for it.
    pub(crate) fn with(settings: &[(&str, &str)]) -> Self {
        // SAFETY: opens a GUC nest level, as a function with SET clauses
        // does; it is closed by Drop.
        let nest = unsafe { pg_sys::NewGUCNestLevel() };
        let guard = Settings { nest };
        for (name, value) in settings {
            set(name, value);
        }
        // Wherever the search path is pinned, the catalog is seen whole.
        if settings.iter().any(|(name, _)| *name == "search_path") {
            for (name, value) in PINNED_VISIBILITY {
                if defined(name) {
                    set(name, value);
                }
            }
        }
        guard
    }
}

impl Drop for Settings {
    fn drop(&mut self) {
        // SAFETY: closes the nest level opened in `with`, rolling back (not
        // committing) what was set in it, as vacuum.c does after running
        // index functions: a session-level SET by user code inside does not
        // survive either.  Also right while unwinding from an error: the
        // transaction's abort pops the outer levels later.
        unsafe { pg_sys::AtEOXact_GUC(false, self.nest) };
    }
}

/// Whether the server defines setting `name` now (an extension's setting
/// exists once its library is loaded).
fn defined(name: &str) -> bool {
    let name = CString::new(name).expect("a setting's name has no NUL");
    // SAFETY: looks a setting up by name, without raising an error when
    // there is none.
    !unsafe { pg_sys::GetConfigOption(name.as_ptr(), true, false) }.is_null()
}

/// Sets `name` to `value` in the current nest level (GUC_ACTION_SAVE: the
/// prior value comes back when the level ends).
fn set(name: &str, value: &str) {
    let (name, value) = (
        CString::new(name).expect("a setting's name has no NUL"),
        CString::new(value).expect("a setting's value has no NUL"),
    );
    // SAFETY: sets a GUC as a SET clause of a function does; an invalid
    // value raises an ordinary error.
    unsafe {
        pg_sys::set_config_option(
            name.as_ptr(),
            value.as_ptr(),
            pg_sys::GucContext::PGC_USERSET,
            pg_sys::GucSource::PGC_S_SESSION,
            pg_sys::GucAction::GUC_ACTION_SAVE,
            true,
            0,
            false,
        );
    }
}

/// Runs `f` with `search_path` pinned (see [`Settings::pin`]).
pub(crate) fn pinned<R>(f: impl FnOnce() -> R) -> R {
    let _settings = Settings::pin();
    f()
}

/// The current role and security context, restored when dropped.
struct Identity {
    user: pg_sys::Oid,
    context: i32,
}

impl Drop for Identity {
    fn drop(&mut self) {
        // SAFETY: puts back what `as_role` read.
        unsafe { pg_sys::SetUserIdAndSecContext(self.user, self.context) };
    }
}

/// Runs `f` as `role` in a restricted security context with `settings` (and
/// always `search_path` pinned), then returns to the current role and rolls
/// back every setting `f`, or code it ran, changed; on error too.
pub(crate) fn as_role_with<R>(
    role: pg_sys::Oid,
    settings: &[(&str, &str)],
    f: impl FnOnce() -> R,
) -> R {
    let (mut user, mut context) = (pg_sys::Oid::INVALID, 0);
    // SAFETY: reads and sets this backend's current user and security
    // context, as SECURITY DEFINER functions and maintenance commands do.
    unsafe {
        pg_sys::GetUserIdAndSecContext(&mut user, &mut context);
        pg_sys::SetUserIdAndSecContext(
            role,
            context
                | pg_sys::SECURITY_LOCAL_USERID_CHANGE as i32
                | pg_sys::SECURITY_RESTRICTED_OPERATION as i32,
        );
    }
    // Dropped in reverse order: the settings first, then the role.
    let _identity = Identity { user, context };
    let mut all = vec![("search_path", PINNED_SEARCH_PATH)];
    all.extend_from_slice(settings);
    let _settings = Settings::with(&all);
    f()
}

/// Runs `f` as `role` (see [`as_role_with`]) with `search_path` pinned.
pub(crate) fn as_role<R>(role: pg_sys::Oid, f: impl FnOnce() -> R) -> R {
    as_role_with(role, &[], f)
}
