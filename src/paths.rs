//! Installation directories of the running server, and model-name resolution.

use std::ffi::CStr;
use std::path::PathBuf;

use pgrx::pg_sys;

use clinembed_core::{Error, ErrorKind};

use crate::errors::report;

/// `$libdir`: PostgreSQL's package library directory.
pub fn pkglib_dir() -> String {
    // SAFETY: pkglib_path is a NUL-terminated buffer the server fills at start.
    unsafe { CStr::from_ptr(std::ptr::addr_of!(pg_sys::pkglib_path).cast()) }
        .to_string_lossy()
        .into_owned()
}

/// `$sharedir`: PostgreSQL's share directory.
pub fn share_dir() -> String {
    let mut buf = [0 as std::ffi::c_char; pg_sys::MAXPGPATH as usize];
    // SAFETY: my_exec_path is set at process start; buf is MAXPGPATH long.
    unsafe {
        pg_sys::get_share_path(
            std::ptr::addr_of!(pg_sys::my_exec_path).cast(),
            buf.as_mut_ptr(),
        );
        CStr::from_ptr(buf.as_ptr()).to_string_lossy().into_owned()
    }
}

/// Where installed models live: `$sharedir/clinembed/models`.
pub fn models_dir() -> PathBuf {
    PathBuf::from(share_dir()).join("clinembed").join("models")
}

/// Resolves `clinembed.model`: an absolute path is used as is; a name must be
/// a plain directory name and resolves under [`models_dir`].
pub fn resolve_model(setting: &str) -> PathBuf {
    if setting.starts_with('/') {
        return PathBuf::from(setting);
    }
    let plain = !setting.is_empty()
        && !setting.starts_with('.')
        && setting
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !plain {
        report(
            Error::new(ErrorKind::InvalidArgument, "invalid model name")
                .detail(format!("clinembed.model is {} characters long and is neither a plain name nor an absolute path.", setting.chars().count()))
                .hint("Use an installed model name (letters, digits, '.', '_', '-') or the absolute path of a model directory."),
        );
    }
    models_dir().join(setting)
}
