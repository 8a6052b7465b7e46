//! The process-wide ONNX Runtime environment.
//!
//! ort allows exactly one `Environment` per process, so it is created once and
//! kept for the life of the process, apart from any model session: a model that
//! fails to load must not poison the environment for the next attempt.  A
//! library that fails to load leaves nothing behind, so a later call with a
//! corrected path can still succeed.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use once_cell::sync::OnceCell;
use ort::environment::Environment;

use crate::error::{Error, ErrorKind, Result};
use crate::inference::signals::with_signals_blocked;

struct Runtime {
    library: PathBuf,
    version: String,
    env: Environment,
}

static RUNTIME: OnceCell<Runtime> = OnceCell::new();
static INIT_LOCK: Mutex<()> = Mutex::new(());

/// Loads the ONNX Runtime shared library at `library` (once per process) and
/// returns the environment.  Asking for a different library after one was
/// loaded is an error: a process cannot unload ONNX Runtime.
pub fn environment(library: &Path) -> Result<&'static Environment> {
    if let Some(rt) = RUNTIME.get() {
        return check_same(rt, library).map(|_| &rt.env);
    }
    let _guard = INIT_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(rt) = RUNTIME.get() {
        return check_same(rt, library).map(|_| &rt.env);
    }
    if !library.is_file() {
        return Err(Error::new(ErrorKind::NotFound, "onnx runtime library not found")
            .detail(format!("No readable file at \"{}\".", library.display()))
            .hint("Run scripts/setup.sh as root, or point clinembed.onnxruntime_library at libonnxruntime.so."));
    }
    let rt = with_signals_blocked(|| -> Result<Runtime> {
        let builder = ort::init_from(library).map_err(|e| {
            Error::new(
                ErrorKind::Runtime,
                "could not load the onnx runtime library",
            )
            .detail(e.to_string())
            .hint(format!(
                "clinembed needs ONNX Runtime 1.{} or newer; scripts/setup.sh installs {}.",
                ort::MINOR_VERSION,
                crate::ORT_VERSION
            ))
        })?;
        let env = builder
            .with_name("clinembed")
            .with_telemetry(false)
            .build()
            .map_err(|e| {
                Error::new(
                    ErrorKind::Runtime,
                    "could not create the onnx runtime environment",
                )
                .detail(e.to_string())
            })?;
        Ok(Runtime {
            library: library.to_path_buf(),
            version: runtime_version(library),
            env,
        })
    })?;
    Ok(&RUNTIME.get_or_init(|| rt).env)
}

fn check_same(rt: &Runtime, library: &Path) -> Result<()> {
    if rt.library == library {
        Ok(())
    } else {
        Err(Error::new(
            ErrorKind::Runtime,
            "a different onnx runtime library is already loaded",
        )
        .detail(format!(
            "This process loaded \"{}\"; the setting now names \"{}\".",
            rt.library.display(),
            library.display()
        ))
        .hint("A process cannot unload ONNX Runtime: reconnect to use the new library."))
    }
}

/// The version string of the loaded library, from `OrtGetApiBase()`.
fn runtime_version(library: &Path) -> String {
    use std::ffi::{CStr, CString};
    use std::os::unix::ffi::OsStrExt;
    let Ok(path) = CString::new(library.as_os_str().as_bytes()) else {
        return "unknown".into();
    };
    // SAFETY: RTLD_NOLOAD only returns a handle to the library ort already
    // loaded; OrtGetApiBase has this signature in every ONNX Runtime release
    // and returns a static struct whose version string is static.
    unsafe {
        let handle = libc::dlopen(path.as_ptr(), libc::RTLD_NOW | libc::RTLD_NOLOAD);
        if handle.is_null() {
            return "unknown".into();
        }
        let sym = libc::dlsym(handle, c"OrtGetApiBase".as_ptr());
        let version = if sym.is_null() {
            "unknown".into()
        } else {
            let get: unsafe extern "C" fn() -> *const ort::sys::OrtApiBase =
                std::mem::transmute(sym);
            let base = get();
            CStr::from_ptr(((*base).GetVersionString)())
                .to_string_lossy()
                .into_owned()
        };
        libc::dlclose(handle);
        version
    }
}

/// The loaded ONNX Runtime's version, if it was loaded.
pub fn loaded_version() -> Option<String> {
    RUNTIME.get().map(|rt| rt.version.clone())
}
