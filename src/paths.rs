//! Installation directories of the running server, and model-name resolution.

use std::ffi::CStr;
use std::path::{Path, PathBuf};

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

/// The server's data directory, absolute.
pub fn data_dir() -> PathBuf {
    // SAFETY: DataDir is set before any backend runs SQL and never changes;
    // the postmaster makes it absolute.
    let dir = unsafe { CStr::from_ptr(pg_sys::DataDir) };
    PathBuf::from(dir.to_string_lossy().into_owned())
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

/// Where installed models live: `clinembed.models_root`, by default
/// `$sharedir/clinembed/models`.
pub fn models_dir() -> PathBuf {
    match crate::gucs::models_root() {
        None => PathBuf::from(share_dir()).join("clinembed").join("models"),
        Some(root) if root.is_absolute() => root,
        Some(root) => report(
            Error::new(
                ErrorKind::InvalidArgument,
                "clinembed.models_root is not an absolute path",
            )
            .detail(format!("It is set to \"{}\".", root.display()))
            .hint(
                "Set it to an absolute path, or to '' for $sharedir/clinembed/models, and reload.",
            ),
        ),
    }
}

/// Resolves `clinembed.model`: an absolute path is used as is (only a
/// superuser can set it); a name must be an installed model.
pub fn resolve_model(setting: &str) -> PathBuf {
    if setting.starts_with('/') {
        return PathBuf::from(setting);
    }
    resolve_installed(setting)
}

/// Resolves an installed model name under [`models_dir`]; the name must be a
/// plain directory name.  Where the directory leads is checked when the model
/// loads ([`check_inside_root`]), not on every call.
pub fn resolve_installed(name: &str) -> PathBuf {
    let plain = !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !plain {
        report(
            Error::new(ErrorKind::InvalidArgument, "invalid model name")
                .detail(format!("The model name is {} characters long and is neither a plain name nor an absolute path.", name.chars().count()))
                .hint("Use an installed model name (letters, digits, '.', '_', '-'); see embed_models()."),
        );
    }
    models_dir().join(name)
}

/// A directory under the model root must stay inside it once symbolic links
/// are followed, unless a superuser set `clinembed.allow_model_links`; other
/// directories (an absolute `clinembed.model`, superuser-only) are not
/// checked.
pub fn check_inside_root(dir: &Path) -> Result<(), Error> {
    let root = models_dir();
    if crate::gucs::ALLOW_MODEL_LINKS.get() || !dir.starts_with(&root) {
        return Ok(());
    }
    match (root.canonicalize(), dir.canonicalize()) {
        (Ok(real_root), Ok(real_dir)) if !real_dir.starts_with(&real_root) => {
            Err(Error::new(ErrorKind::Forbidden, "model directory is outside the model root")
                .detail(format!("\"{}\" links to a directory outside \"{}\".", dir.display(), root.display()))
                .hint("Install the model files under the model root, or have a superuser set clinembed.allow_model_links."))
        }
        _ => Ok(()),
    }
}
