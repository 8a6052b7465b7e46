//! Model-name resolution: where installed models live, and which directory
//! a model setting names.

use std::path::{Path, PathBuf};

use clinembed_core::{Error, ErrorKind};

use crate::errors::report;

/// Where installed models live: `clinembed.models_root`, by default
/// `$sharedir/clinembed/models`.
pub fn models_dir() -> PathBuf {
    match crate::gucs::models_root() {
        None => PathBuf::from(crate::server_dirs::share_dir())
            .join("clinembed")
            .join("models"),
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
