//! The running server's directories, as PostgreSQL set them at start.

use std::ffi::CStr;
use std::path::PathBuf;

use pgrx::pg_sys;

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
