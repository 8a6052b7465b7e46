//! Model identity: which model produced a stored vector.
//!
//! The identity is `name@hash`, where `hash` is the first 16 hex digits of a
//! SHA-256 over the model graph, the tokenizer and the effective embedding
//! settings (pooling, normalization, maximum length).  Anything that changes
//! the vectors changes the identity; renaming nothing and copying the same
//! files elsewhere keeps it.  Triggers and the backfill store it beside each
//! vector and compare it to find stale rows.
//!
//! The hash is SHA-256 from the RustCrypto `sha2` crate (until 0.4.0 a copy
//! written here; the identities are the same, see the tests); it runs once
//! per model per backend, lazily.

use std::fs::File;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{Error, ErrorKind, Result};
use crate::inference::chunk::{ChunkOptions, WindowPooling};

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Identifies one version of a file: a file replaced by another (renamed
/// into place) or rewritten in place gets another stamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime_ns: i128,
}

impl FileStamp {
    pub fn of(meta: &std::fs::Metadata) -> Self {
        use std::os::unix::fs::MetadataExt;
        FileStamp {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
        }
    }
}

/// A model directory held open while a session is built from it.  Its
/// files are opened and read through [`PinnedDir::root`], a path through the
/// open directory (`/proc/self/fd/N`), never through its name: a directory
/// renamed or swapped for another (`renameat2(RENAME_EXCHANGE)`) during a
/// load does not mix one model's bytes into another's session or identity,
/// even when it is swapped back before the load ends.  Only the process's
/// own threads (ONNX Runtime's among them) resolve the path, and only while
/// this value lives.
#[derive(Debug)]
pub struct PinnedDir {
    dir: File,
}

impl PinnedDir {
    pub fn open(dir: &Path) -> Result<Self> {
        let dir = File::open(dir).map_err(|e| {
            Error::new(ErrorKind::NotFound, "cannot read model directory")
                .detail(format!("Opening \"{}\" failed: {e}.", dir.display()))
                .hint(
                    "The server's operating system user must be able to read the model directory.",
                )
        })?;
        Ok(PinnedDir { dir })
    }

    /// The directory as a path that names the open directory itself.
    pub fn root(&self) -> PathBuf {
        use std::os::fd::AsRawFd;
        PathBuf::from(format!("/proc/self/fd/{}", self.dir.as_raw_fd()))
    }
}

/// A model file held open from the moment its session was loaded, so the
/// identity hashes the bytes that were loaded even after the model directory
/// is replaced.
#[derive(Debug)]
pub struct PinnedFile {
    pub path: PathBuf,
    file: File,
    stamp: FileStamp,
    hash: once_cell::unsync::OnceCell<[u8; 32]>,
}

impl PinnedFile {
    pub fn open(path: &Path) -> Result<Self> {
        Self::open_through(path, path)
    }

    /// Opens the file at `read` (a path through a [`PinnedDir`]) as the file
    /// named `path`: [`replaced`](Self::replaced) and messages use `path`.
    pub fn open_through(read: &Path, path: &Path) -> Result<Self> {
        let unreadable = |e: std::io::Error| {
            Error::new(ErrorKind::NotFound, "cannot read model file")
                .detail(format!("Opening \"{}\" failed: {e}.", path.display()))
                .hint("The server's operating system user must be able to read every file of the model directory.")
        };
        let file = File::open(read).map_err(unreadable)?;
        let stamp = FileStamp::of(&file.metadata().map_err(unreadable)?);
        Ok(PinnedFile {
            path: path.to_path_buf(),
            file,
            stamp,
            hash: once_cell::unsync::OnceCell::new(),
        })
    }

    /// Whether the path now names another file, or the file was rewritten.
    pub fn replaced(&self) -> bool {
        std::fs::metadata(&self.path).map_or(true, |m| FileStamp::of(&m) != self.stamp)
    }

    /// A text naming this version of the file more strictly than its stamp:
    /// device, inode, length, modification and change time.  The change time
    /// moves on every write and cannot be set by a user, so two equal keys
    /// name the same bytes (the same trust as `git`'s index).
    pub fn version_key(&self) -> Result<String> {
        use std::os::unix::fs::MetadataExt;
        let m = self.file.metadata().map_err(|e| {
            Error::new(ErrorKind::NotFound, "cannot read model file")
                .detail(format!("Reading \"{}\" failed: {e}.", self.path.display()))
        })?;
        Ok(format!(
            "{}:{}:{}:{}.{:09}:{}.{:09}",
            m.dev(),
            m.ino(),
            m.len(),
            m.mtime(),
            m.mtime_nsec(),
            m.ctime(),
            m.ctime_nsec()
        ))
    }

    /// Records a SHA-256 computed earlier for this file's
    /// [`version_key`](Self::version_key), so it is not read again.
    pub fn remember_sha256(&self, hash: [u8; 32]) {
        let _ = self.hash.set(hash);
    }

    /// Whether the SHA-256 is known without reading the file.
    pub fn sha256_known(&self) -> bool {
        self.hash.get().is_some()
    }

    /// SHA-256 of the pinned file, computed once; an error if it was
    /// rewritten in place since it was opened.
    pub fn sha256(&self) -> Result<[u8; 32]> {
        self.hash.get_or_try_init(|| self.hash_now()).copied()
    }

    fn hash_now(&self) -> Result<[u8; 32]> {
        use std::os::unix::fs::FileExt;
        let changed = || {
            Error::new(ErrorKind::InvalidModel, "model file changed in place after loading")
                .detail(format!("\"{}\" was rewritten while this session held it.", self.path.display()))
                .hint("Install new model files as a new directory and rename it into place; then reconnect.")
        };
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut offset = 0u64;
        loop {
            let n = self.file.read_at(&mut buf, offset).map_err(|e| {
                Error::new(ErrorKind::NotFound, "cannot read model file")
                    .detail(format!("Reading \"{}\" failed: {e}.", self.path.display()))
            })?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            offset += n as u64;
        }
        let now = self.file.metadata().map(|m| FileStamp::of(&m)).ok();
        if now != Some(self.stamp) || offset != self.stamp.len {
            return Err(changed());
        }
        Ok(hasher.finalize().into())
    }
}

/// The identity of model `name` loaded from `files` with effective
/// `settings` (a canonical text of everything besides the files that shapes
/// the vectors).
pub fn model_identity(name: &str, files: &[PinnedFile], settings: &str) -> Result<String> {
    let mut h = Sha256::new();
    for f in files {
        let label = f
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        h.update(label.as_bytes());
        h.update([0]);
        h.update(f.sha256()?);
    }
    h.update(settings.as_bytes());
    Ok(format!("{name}@{}", &hex(&h.finalize())[..HASH_DIGITS]))
}

/// Digits of the hash in an identity.
const HASH_DIGITS: usize = 16;

/// The identity under a long-text policy: the model's own identity, with
/// `+chunkW/O` when windows of W tokens overlapping by O are pooled by
/// their mean, `+chunkW/O/max` or `+chunkW/O/mean_max` by another pooling
/// (the same files give other vectors then).
pub fn with_long_text(base: &str, long_text: Option<ChunkOptions>) -> String {
    match long_text {
        None => base.to_string(),
        Some(c) if c.pooling == WindowPooling::Mean => {
            format!("{base}+chunk{}/{}", c.window, c.overlap)
        }
        Some(c) => format!(
            "{base}+chunk{}/{}/{}",
            c.window,
            c.overlap,
            c.pooling.name()
        ),
    }
}

/// An identity as [`with_long_text`] writes it, taken apart: which
/// installed model it names and which long-text policy (`None`: truncation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pin<'a> {
    pub name: &'a str,
    pub long_text: Option<ChunkOptions>,
}

/// Reads an identity given by a caller (the pinned functions' argument).
/// Only the form is checked here; [`check_pin`] compares it with the model.
pub fn parse_pin(id: &str) -> Result<Pin<'_>> {
    let malformed = || {
        Error::new(ErrorKind::InvalidArgument, "malformed model identity")
            .detail(format!(
                "A model identity is name@hash with {HASH_DIGITS} hex digits, and +chunkW/O[/max|/mean_max] for the chunked long-text policy; this one has {} characters.",
                id.chars().count()
            ))
            .hint("Pass what embed_model_id('name') returns for the installed model.")
    };
    let (base, long_text) = match id.split_once("+chunk") {
        None => (id, None),
        Some((base, policy)) => {
            let mut parts = policy.split('/');
            let (w, o) = (
                parts.next().ok_or_else(malformed)?,
                parts.next().ok_or_else(malformed)?,
            );
            let pooling = match (parts.next(), parts.next()) {
                (None, _) => WindowPooling::Mean,
                (Some(p), None) if p != "mean" => {
                    WindowPooling::parse(p).map_err(|_| malformed())?
                }
                _ => return Err(malformed()),
            };
            let number = |s: &str| {
                (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                    .then(|| s.parse::<usize>().ok())
                    .flatten()
                    .ok_or_else(malformed)
            };
            let opts = ChunkOptions {
                window: number(w)?,
                overlap: number(o)?,
                pooling,
            };
            (base, Some(opts))
        }
    };
    let (name, hash) = base.rsplit_once('@').ok_or_else(malformed)?;
    let hex_digits = hash
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if name.is_empty() || hash.len() != HASH_DIGITS || !hex_digits {
        return Err(malformed());
    }
    Ok(Pin { name, long_text })
}

/// Whether the model found under a pin's name is the one it pins: `actual`
/// is that model's identity under the pin's long-text policy.
pub fn check_pin(pinned: &str, actual: &str) -> Result<()> {
    if pinned == actual {
        return Ok(());
    }
    let name = actual.rsplit_once('@').map_or(actual, |(name, _)| name);
    Err(Error::new(
        ErrorKind::IdentityMismatch,
        format!("installed model \"{name}\" is not the pinned model"),
    )
    .detail(format!(
        "The call pins {pinned}; the model installed under that name is {actual}."
    ))
    .hint(format!(
        "Reinstall the pinned model's files, or re-embed with the installed model's identity, embed_model_id('{name}')."
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Stored vectors carry identities: a change of the hash's code must not
    /// change them.  Computed by the hand-written SHA-256 of 0.3.0.
    #[test]
    fn identities_are_those_of_earlier_releases() {
        let dir =
            std::env::temp_dir().join(format!("clinembed-identity-fixed-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("model.onnx"), b"graph").unwrap();
        std::fs::write(dir.join("tokenizer.json"), b"{}").unwrap();
        let files = vec![
            PinnedFile::open(&dir.join("model.onnx")).unwrap(),
            PinnedFile::open(&dir.join("tokenizer.json")).unwrap(),
        ];
        let id = model_identity("m", &files, "pooling=mean;normalize=false;max_length=512");
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(id.unwrap(), "m@52aa8a17cd772911");
    }

    #[test]
    fn a_pinned_directory_reads_its_own_files_across_swaps() {
        // Two model directories swapped while one is pinned, then swapped
        // back: what is read through the pin is always the first's, and the
        // pinned file knows its name meant another file for a while only
        // until the swap back (which is why reads go through the pin).
        let base = std::env::temp_dir().join(format!("clinembed-pindir-{}", std::process::id()));
        let (a, b, tmp) = (base.join("a"), base.join("b"), base.join("tmp"));
        for (d, bytes) in [(&a, b"model a"), (&b, b"model b")] {
            std::fs::create_dir_all(d).unwrap();
            std::fs::write(d.join("model.onnx"), bytes).unwrap();
        }
        let swap = || {
            std::fs::rename(&a, &tmp).unwrap();
            std::fs::rename(&b, &a).unwrap();
            std::fs::rename(&tmp, &b).unwrap();
        };
        let pin = PinnedDir::open(&a).unwrap();
        let root = pin.root();
        let file =
            PinnedFile::open_through(&root.join("model.onnx"), &a.join("model.onnx")).unwrap();
        swap();
        assert!(file.replaced(), "the name now holds model b");
        assert_eq!(std::fs::read(root.join("model.onnx")).unwrap(), b"model a");
        assert_eq!(std::fs::read(a.join("model.onnx")).unwrap(), b"model b");
        swap();
        assert_eq!(std::fs::read(root.join("model.onnx")).unwrap(), b"model a");
        assert_eq!(file.sha256().unwrap(), sha256_of(b"model a"));
        drop(pin);
        std::fs::remove_dir_all(&base).unwrap();
    }

    fn sha256_of(bytes: &[u8]) -> [u8; 32] {
        use sha2::Digest;
        sha2::Sha256::digest(bytes).into()
    }

    #[test]
    fn identity_follows_content_and_settings_and_survives_replacement() {
        let dir = std::env::temp_dir().join(format!("clinembed-identity-{}", std::process::id()));
        let model = dir.join("m");
        std::fs::create_dir_all(&model).unwrap();
        std::fs::write(model.join("model.onnx"), b"graph").unwrap();
        std::fs::write(model.join("tokenizer.json"), b"{}").unwrap();
        let pin = || {
            vec![
                PinnedFile::open(&model.join("model.onnx")).unwrap(),
                PinnedFile::open(&model.join("tokenizer.json")).unwrap(),
            ]
        };
        let pinned = pin();
        let a = model_identity("m", &pinned, "mean").unwrap();
        assert!(a.starts_with("m@") && a.len() == 2 + 16, "{a}");
        assert_eq!(a, model_identity("m", &pin(), "mean").unwrap());
        assert_ne!(a, model_identity("m", &pin(), "cls").unwrap());
        assert!(!pinned[0].replaced());

        // A new file renamed into place: the pinned one still hashes the old
        // bytes, and knows it was replaced.
        std::fs::write(dir.join("new.onnx"), b"graph2").unwrap();
        std::fs::rename(dir.join("new.onnx"), model.join("model.onnx")).unwrap();
        assert!(pinned[0].replaced());
        assert_eq!(a, model_identity("m", &pinned, "mean").unwrap());
        assert_ne!(a, model_identity("m", &pin(), "mean").unwrap());

        // Rewritten in place: an error, never a hash of other bytes.
        let pinned = pin();
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(model.join("model.onnx"), b"graph3!").unwrap();
        let e = model_identity("m", &pinned, "mean").unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidModel);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn pins_read_what_identities_write() {
        let base = "bio_clinicalbert@0123456789abcdef";
        let chunked = ChunkOptions {
            window: 128,
            overlap: 32,
            pooling: WindowPooling::Mean,
        };
        let max = ChunkOptions {
            pooling: WindowPooling::Max,
            ..chunked
        };
        let mean_max = ChunkOptions {
            pooling: WindowPooling::MeanMax,
            ..chunked
        };
        for long_text in [None, Some(chunked), Some(max), Some(mean_max)] {
            let id = with_long_text(base, long_text);
            let pin = parse_pin(&id).unwrap();
            assert_eq!(pin.name, "bio_clinicalbert");
            assert_eq!(pin.long_text, long_text);
        }
        // mean, the first pooling, keeps the identities vectors already carry
        assert_eq!(
            with_long_text(base, Some(chunked)),
            format!("{base}+chunk128/32")
        );
        assert_eq!(
            with_long_text(base, Some(mean_max)),
            format!("{base}+chunk128/32/mean_max")
        );
        // A name may hold an @: the hash is what follows the last one.
        assert_eq!(parse_pin("a@b@0123456789abcdef").unwrap().name, "a@b");
    }

    #[test]
    fn malformed_pins_are_refused() {
        for id in [
            "",
            "bio_clinicalbert",
            "@0123456789abcdef",
            "m@0123456789abcde",
            "m@0123456789abcdef0",
            "m@0123456789ABCDEF",
            "m@0123456789abcdeg",
            "m@0123456789abcdef+chunk",
            "m@0123456789abcdef+chunk128",
            "m@0123456789abcdef+chunk128/",
            "m@0123456789abcdef+chunk-1/2",
            "m@0123456789abcdef+chunk1/2x",
            "m@0123456789abcdef+chunk1/2/mean",
            "m@0123456789abcdef+chunk1/2/min",
            "m@0123456789abcdef+chunk1/2/max/max",
            "m@0123456789abcdef+chunk99999999999999999999999/1",
        ] {
            let e = parse_pin(id).unwrap_err();
            assert_eq!(e.kind, ErrorKind::InvalidArgument, "{id}");
        }
    }

    #[test]
    fn a_pin_matches_only_its_own_identity() {
        let id = "m@0123456789abcdef";
        assert!(check_pin(id, id).is_ok());
        let e = check_pin(id, "m@fedcba9876543210").unwrap_err();
        assert_eq!(e.kind, ErrorKind::IdentityMismatch);
        let detail = e.detail.unwrap();
        assert!(detail.contains(id) && detail.contains("m@fedcba9876543210"));
        assert!(check_pin(id, &with_long_text(id, Some(ChunkOptions::default()))).is_err());
    }
}
