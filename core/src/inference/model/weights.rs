//! Weights shared between backends through the page cache.
//!
//! A `model.onnx` with its weights inside the protobuf is copied onto every
//! backend's heap when a session loads it, and ONNX Runtime then packs the
//! matrix weights into a second private copy.  A model whose weights sit in
//! an external-data file is mapped instead (read-only, file-backed pages the
//! kernel shares between processes), and ONNX Runtime can save its packed
//! matrices into that file too and map them on the next load.
//!
//! So the first backend to load a model derives that form once: ONNX
//! Runtime optimizes the graph and writes `model.onnx` plus `model.data`
//! (weights and packed weights) into a cache entry.  Every backend then loads
//! the entry, and each one costs its activations, not the weights.
//!
//! An entry is keyed by what decides its bytes: the source model's SHA-256,
//! the ONNX Runtime version and the CPU (packed layouts follow the CPU's
//! kernels).  It is built in a private directory and renamed into place
//! while a lock file is held, so two backends never build the same entry at
//! once and nobody sees half an entry.  A file is never rewritten in place:
//! other backends map it.  An entry is used only while its manifest matches
//! the key and every file's length, inode, modification and change time are
//! those recorded when it was built; anything else (a truncated or edited
//! file, a missing manifest) makes the next load rebuild it.
//!
//! The source model's SHA-256 is remembered per file version (device, inode,
//! length, times; see [`PinnedFile::version_key`]), so a new connection does
//! not read the whole model to find its entry.

use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, ErrorKind, Result};
use crate::inference::identity::{hex, PinnedFile};

/// Bump when the way entries are built changes: old entries are then
/// rebuilt, never reused.
const FORMAT: u32 = 1;
/// The derived graph, and the file its weights and packed weights are in.
pub const DERIVED_MODEL: &str = "model.onnx";
pub const DERIVED_DATA: &str = "model.data";
const MANIFEST: &str = "manifest.json";
const SOURCES: &str = "sources";
/// Touched when an entry is loaded (at most hourly): when it was last used.
const USED: &str = "used";

/// An entry no backend loaded for this long is removed when another entry
/// is built, so models replaced or dropped do not fill the disk.  Removing
/// is safe for a backend that still maps the files (they are unlinked, not
/// rewritten); one that loads the model again rebuilds it.
pub const UNUSED_ENTRY_DAYS: u64 = 7;
/// A build directory left this long by a builder that died is removed.
const STALE_BUILD_HOURS: u64 = 24;

/// Where a session's weights live.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Weights {
    /// Loaded from `model.onnx` onto the backend's heap.
    Private,
    /// Mapped from a derived entry under this cache directory.
    Shared(PathBuf),
}

/// What a loaded session's weights turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WeightsForm {
    /// On the heap: asked for, or the shared form failed (the reason).
    Private(Option<String>),
    /// Mapped from this derived model file.
    Mapped(PathBuf),
}

impl WeightsForm {
    pub fn as_str(&self) -> &'static str {
        match self {
            WeightsForm::Private(_) => "private",
            WeightsForm::Mapped(_) => "shared",
        }
    }

    /// The mapped file, or why the weights are private when sharing was
    /// asked for.
    pub fn detail(&self) -> Option<String> {
        match self {
            WeightsForm::Mapped(path) => Some(path.display().to_string()),
            WeightsForm::Private(why) => why.clone(),
        }
    }
}

/// What decides the bytes of a derived entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryKey {
    pub format: u32,
    pub model_sha256: String,
    pub ort_version: String,
    pub cpu: String,
}

impl EntryKey {
    pub fn new(model_sha256: &[u8; 32], ort_version: &str, cpu: &str) -> Self {
        EntryKey {
            format: FORMAT,
            model_sha256: hex(model_sha256),
            ort_version: ort_version.to_string(),
            cpu: cpu.to_string(),
        }
    }

    /// The entry's directory name: a hash of the whole key.
    pub fn entry_name(&self) -> String {
        let mut h = Sha256::new();
        for part in [
            FORMAT.to_string().as_str(),
            &self.model_sha256,
            &self.ort_version,
            &self.cpu,
        ] {
            h.update(part.as_bytes());
            h.update([0]);
        }
        hex(&h.finalize())[..32].to_string()
    }
}

/// The CPU as far as packed weights care: vendor, family, model and feature
/// flags of the first processor in `/proc/cpuinfo` (x86), or implementer,
/// part and features (Arm).  Frequencies, core ids and bug lists are left
/// out so every core of a machine gives the same text.
pub fn cpu_signature(cpuinfo: &str) -> String {
    const KEYS: [&str; 8] = [
        "vendor_id",
        "cpu family",
        "model",
        "flags",
        "CPU implementer",
        "CPU architecture",
        "CPU part",
        "Features",
    ];
    let mut parts = Vec::new();
    for line in cpuinfo.lines() {
        if line.trim().is_empty() && !parts.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            let k = k.trim();
            if KEYS.contains(&k) {
                parts.push(format!("{k}={}", v.trim()));
            }
        }
    }
    parts.join(";")
}

/// This machine's [`cpu_signature`], read once per process.
pub fn this_cpu() -> &'static str {
    static CPU: once_cell::sync::OnceCell<String> = once_cell::sync::OnceCell::new();
    CPU.get_or_init(|| {
        let text = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let sig = cpu_signature(&text);
        if sig.is_empty() {
            std::env::consts::ARCH.to_string()
        } else {
            sig
        }
    })
}

/// One built file as the manifest records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Recorded {
    name: String,
    len: u64,
    ino: u64,
    mtime_ns: i64,
    ctime_ns: i64,
}

impl Recorded {
    fn of(dir: &Path, name: &str) -> std::io::Result<Self> {
        let m = fs::symlink_metadata(dir.join(name))?;
        Ok(Recorded {
            name: name.to_string(),
            len: m.len(),
            ino: m.ino(),
            mtime_ns: m.mtime() * 1_000_000_000 + m.mtime_nsec(),
            ctime_ns: m.ctime() * 1_000_000_000 + m.ctime_nsec(),
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Manifest {
    key: EntryKey,
    files: Vec<Recorded>,
}

fn cache_error(what: &str, path: &Path, e: impl std::fmt::Display) -> Error {
    Error::new(ErrorKind::Runtime, "could not use the shared weights cache")
        .detail(format!("{what} \"{}\": {e}.", path.display()))
        .hint("clinembed.weights_cache must name a directory the server's operating system user can create and write; or set clinembed.shared_weights = off.")
}

/// Why an entry cannot be used, or `None` if it can.
pub fn entry_problem(entry: &Path, key: &EntryKey) -> Option<String> {
    let text = match fs::read_to_string(entry.join(MANIFEST)) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !entry.exists() => {
            return Some("not built".into())
        }
        Err(e) => return Some(format!("manifest unreadable: {e}")),
    };
    let manifest: Manifest = match serde_json::from_str(&text) {
        Ok(m) => m,
        Err(e) => return Some(format!("manifest malformed: {e}")),
    };
    if &manifest.key != key {
        return Some("manifest is for another key".into());
    }
    for want in &manifest.files {
        match Recorded::of(entry, &want.name) {
            Ok(got) if &got == want => {}
            Ok(got) if got.len != want.len => {
                return Some(format!(
                    "{} has {} bytes, {} when built",
                    want.name, got.len, want.len
                ))
            }
            Ok(_) => return Some(format!("{} changed since it was built", want.name)),
            Err(e) => return Some(format!("{}: {e}", want.name)),
        }
    }
    let names: Vec<&str> = manifest.files.iter().map(|f| f.name.as_str()).collect();
    if !names.contains(&DERIVED_MODEL) {
        return Some("manifest lists no model".into());
    }
    None
}

/// A directory of the cache made if missing, readable by the server only.
fn ensure_dir(path: &Path) -> Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(|e| cache_error("Creating", path, e))
}

/// Refuses a cache directory that another user owns or may write: whoever
/// can write there decides which graphs the server runs.
fn check_private(path: &Path) -> Result<()> {
    let meta = fs::metadata(path).map_err(|e| cache_error("Reading", path, e))?;
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me || meta.mode() & 0o022 != 0 {
        return Err(cache_error(
            "Refusing",
            path,
            format!(
                "owned by uid {} with mode {:o}; it must belong to the server's user (uid {me}) and be writable by no one else",
                meta.uid(),
                meta.mode() & 0o777
            ),
        ));
    }
    Ok(())
}

fn fsync_dir(path: &Path) {
    if let Ok(d) = File::open(path) {
        let _ = d.sync_all();
    }
}

/// Writes `bytes` to `path` through a temporary file renamed into place.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut f = File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    fs::rename(&tmp, path)
}

/// The SHA-256 of `model`, from the cache's memo of file versions when this
/// version was hashed before, else read now (or already, for the checksum
/// that `clinembed.json` records) and remembered, so the next backend reads
/// the memo and not the model.
fn model_sha256(cache: &Path, model: &PinnedFile) -> Result<[u8; 32]> {
    let version = model.version_key()?;
    let memo = memo_path(cache, &version);
    if let Some(hash) = memo_lookup(&memo, &version) {
        model.remember_sha256(hash);
        return Ok(hash);
    }
    // Known already when the load checked clinembed.json's sha256.
    let hash = model.sha256()?;
    ensure_dir(&cache.join(SOURCES))?;
    // A memo that cannot be written costs the next backend a re-read only.
    let _ = write_atomically(&memo, format!("{version} {}\n", hex(&hash)).as_bytes());
    Ok(hash)
}

/// Seeds `model`'s SHA-256 from the cache's memo if this file version was
/// hashed before; reads nothing else.
pub fn recall_sha256(cache: &Path, model: &PinnedFile) {
    if let Ok(version) = model.version_key() {
        if let Some(hash) = memo_lookup(&memo_path(cache, &version), &version) {
            model.remember_sha256(hash);
        }
    }
}

fn memo_path(cache: &Path, version: &str) -> PathBuf {
    cache
        .join(SOURCES)
        .join(&hex(&Sha256::digest(version.as_bytes()))[..32])
}

fn memo_lookup(memo: &Path, version: &str) -> Option<[u8; 32]> {
    let text = fs::read_to_string(memo).ok()?;
    let (v, h) = text.trim().split_once(' ')?;
    (v == version).then(|| unhex32(h)).flatten()
}

/// What loading measured of a derived form, kept beside it so later loads
/// of the same entry skip the measurement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Probe {
    pub dimensions: usize,
    pub batch_invariant: bool,
}

const PROBE: &str = "probe.json";

/// The probe recorded beside `derived_model`, if any can be read.
pub fn read_probe(derived_model: &Path) -> Option<Probe> {
    let text = fs::read_to_string(derived_model.parent()?.join(PROBE)).ok()?;
    serde_json::from_str(&text).ok()
}

/// Records a probe beside `derived_model`; a failure only costs the next
/// load the measurement.
pub fn write_probe(derived_model: &Path, probe: &Probe) {
    if let (Some(dir), Ok(text)) = (derived_model.parent(), serde_json::to_string(probe)) {
        let _ = write_atomically(&dir.join(PROBE), text.as_bytes());
    }
}

fn unhex32(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Moves a directory out of the way and removes it.  Backends that mapped
/// its files keep their mappings: the files are unlinked, not rewritten.
fn discard(entry: &Path) {
    if !entry.exists() {
        return;
    }
    let trash = entry.with_extension(format!("trash{}", std::process::id()));
    if fs::rename(entry, &trash).is_ok() {
        let _ = fs::remove_dir_all(&trash);
    }
}

/// The derived model for `model` in the cache at `cache`, built by `build`
/// if no valid entry exists.  `build` writes [`DERIVED_MODEL`] (and
/// [`DERIVED_DATA`]) into the directory it is given.  Returns the derived
/// model's path and whether this call built it.
pub fn derived_model(
    cache: &Path,
    model: &PinnedFile,
    ort_version: &str,
    cpu: &str,
    build: impl FnOnce(&Path) -> Result<()>,
) -> Result<(PathBuf, bool)> {
    if !cache.is_absolute() {
        return Err(cache_error(
            "Not an absolute path:",
            cache,
            "relative paths are refused",
        ));
    }
    ensure_dir(cache)?;
    check_private(cache)?;
    let key = EntryKey::new(&model_sha256(cache, model)?, ort_version, cpu);
    let name = key.entry_name();
    let entry = cache.join(&name);
    if entry_problem(&entry, &key).is_none() {
        mark_used(&entry);
        return Ok((entry.join(DERIVED_MODEL), false));
    }
    let lock_path = cache.join(format!("{name}.lock"));
    let lock = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| cache_error("Opening", &lock_path, e))?;
    // Another backend building this entry holds the lock until it is in
    // place (seconds for a large model); waiting beats building it twice.
    lock.lock()
        .map_err(|e| cache_error("Locking", &lock_path, e))?;
    if entry_problem(&entry, &key).is_none() {
        mark_used(&entry);
        return Ok((entry.join(DERIVED_MODEL), false));
    }
    discard(&entry);
    let tmp = cache.join(format!(".build-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&tmp);
    ensure_dir(&tmp)?;
    let built = (|| {
        build(&tmp)?;
        let mut files = Vec::new();
        for n in [DERIVED_MODEL, DERIVED_DATA] {
            let p = tmp.join(n);
            if !p.exists() {
                if n == DERIVED_MODEL {
                    return Err(cache_error("Building", &p, "no model was written"));
                }
                continue;
            }
            File::open(&p)
                .and_then(|f| f.sync_all())
                .map_err(|e| cache_error("Syncing", &p, e))?;
            files.push(Recorded::of(&tmp, n).map_err(|e| cache_error("Reading", &p, e))?);
        }
        let manifest = Manifest {
            key: key.clone(),
            files,
        };
        let text = serde_json::to_string_pretty(&manifest).unwrap_or_default();
        write_atomically(&tmp.join(MANIFEST), text.as_bytes())
            .map_err(|e| cache_error("Writing", &tmp.join(MANIFEST), e))?;
        fsync_dir(&tmp);
        fs::rename(&tmp, &entry).map_err(|e| cache_error("Renaming into", &entry, e))?;
        fsync_dir(cache);
        Ok(())
    })();
    if built.is_err() {
        let _ = fs::remove_dir_all(&tmp);
    }
    built?;
    drop(lock);
    mark_used(&entry);
    prune(cache, &entry, std::time::SystemTime::now());
    Ok((entry.join(DERIVED_MODEL), true))
}

/// Notes that `entry` was just used, unless that was noted within the hour.
fn mark_used(entry: &Path) {
    let used = entry.join(USED);
    let recent = fs::metadata(&used)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|age| age < std::time::Duration::from_secs(3600));
    if !recent {
        let _ = File::create(&used);
    }
}

fn age_of(path: &Path, now: std::time::SystemTime) -> Option<std::time::Duration> {
    let modified = fs::metadata(path).and_then(|m| m.modified()).ok()?;
    now.duration_since(modified).ok()
}

/// Removes entries unused for [`UNUSED_ENTRY_DAYS`] and build directories
/// older than a day, keeping `keep`.  Runs after a build, which is rare.
pub fn prune(cache: &Path, keep: &Path, now: std::time::SystemTime) {
    let Ok(dir) = fs::read_dir(cache) else {
        return;
    };
    let day = 24 * 3600;
    for item in dir.flatten() {
        let path = item.path();
        let name = item.file_name().to_string_lossy().into_owned();
        if path == keep || !path.is_dir() {
            continue;
        }
        if name.starts_with(".build-") || name.contains(".trash") {
            if age_of(&path, now).is_some_and(|a| a.as_secs() > STALE_BUILD_HOURS * 3600) {
                let _ = fs::remove_dir_all(&path);
            }
        } else if name.len() == 32 && name.bytes().all(|b| b.is_ascii_hexdigit()) {
            let last = age_of(&path.join(USED), now).or_else(|| age_of(&path, now));
            if last.is_some_and(|a| a.as_secs() > UNUSED_ENTRY_DAYS * day) {
                discard(&path);
            }
        }
    }
}

/// Removes a derived entry that failed to load, so the next load rebuilds it.
pub fn discard_entry(derived_model: &Path) {
    if let Some(entry) = derived_model.parent() {
        discard(entry);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "clinembed-weights-{tag}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    fn fake_build(dir: &Path) -> Result<()> {
        fs::write(dir.join(DERIVED_MODEL), b"graph").unwrap();
        fs::write(dir.join(DERIVED_DATA), vec![7u8; 4096]).unwrap();
        Ok(())
    }

    #[test]
    fn cpu_signature_keeps_what_decides_packing() {
        let x86 = "processor\t: 0\nvendor_id\t: GenuineIntel\ncpu family\t: 6\nmodel\t\t: 143\nmodel name\t: Xeon\ncpu MHz\t\t: 2100.000\nflags\t\t: fpu avx512f avx512_vnni\nbugs\t\t: spectre\n\nprocessor\t: 1\nvendor_id\t: GenuineIntel\ncpu MHz\t\t: 1900.000\n";
        assert_eq!(
            cpu_signature(x86),
            "vendor_id=GenuineIntel;cpu family=6;model=143;flags=fpu avx512f avx512_vnni"
        );
        let other = x86.replace("avx512_vnni", "");
        assert_ne!(cpu_signature(x86), cpu_signature(&other));
        let arm = "processor\t: 0\nFeatures\t: fp asimd sve\nCPU implementer\t: 0x41\nCPU part\t: 0xd40\n";
        assert_eq!(
            cpu_signature(arm),
            "Features=fp asimd sve;CPU implementer=0x41;CPU part=0xd40"
        );
        assert!(!this_cpu().is_empty());
    }

    #[test]
    fn every_part_of_the_key_names_another_entry() {
        let k = EntryKey::new(&[1; 32], "1.31.1", "cpu");
        assert_eq!(k.entry_name().len(), 32);
        assert_eq!(
            k.entry_name(),
            EntryKey::new(&[1; 32], "1.31.1", "cpu").entry_name()
        );
        for other in [
            EntryKey::new(&[2; 32], "1.31.1", "cpu"),
            EntryKey::new(&[1; 32], "1.31.2", "cpu"),
            EntryKey::new(&[1; 32], "1.31.1", "cpu2"),
        ] {
            assert_ne!(k.entry_name(), other.entry_name());
        }
    }

    #[test]
    fn built_once_then_reused_and_rebuilt_when_damaged() {
        let root = scratch("cycle");
        fs::write(root.join("src.onnx"), b"source graph").unwrap();
        let src = PinnedFile::open(&root.join("src.onnx")).unwrap();
        let cache = root.join("cache");
        let (path, built) = derived_model(&cache, &src, "1", "c", fake_build).unwrap();
        assert!(built && path.is_file());
        // Remembered: the same file version is not hashed again, and the
        // second load builds nothing.
        let again = PinnedFile::open(&root.join("src.onnx")).unwrap();
        let (path2, built2) = derived_model(&cache, &again, "1", "c", |_| {
            panic!("must not rebuild a valid entry")
        })
        .unwrap();
        assert_eq!((path2.clone(), built2), (path.clone(), false));
        assert!(again.sha256_known());
        let entry = path.parent().unwrap().to_path_buf();
        let key = EntryKey::new(&src.sha256().unwrap(), "1", "c");
        assert_eq!(entry_problem(&entry, &key), None);

        // Truncated: detected, rebuilt.
        let data = entry.join(DERIVED_DATA);
        File::options()
            .write(true)
            .open(&data)
            .unwrap()
            .set_len(100)
            .unwrap();
        assert!(entry_problem(&entry, &key).unwrap().contains("bytes"));
        let (_, rebuilt) = derived_model(&cache, &src, "1", "c", fake_build).unwrap();
        assert!(rebuilt);
        assert_eq!(entry_problem(&entry, &key), None);

        // Edited in place, same length: detected, rebuilt.
        std::thread::sleep(std::time::Duration::from_millis(20));
        let mut f = File::options().write(true).open(&data).unwrap();
        f.write_all(b"corrupt").unwrap();
        drop(f);
        assert!(entry_problem(&entry, &key).unwrap().contains("changed"));
        assert!(derived_model(&cache, &src, "1", "c", fake_build).unwrap().1);

        // No manifest, or one for another key: rebuilt.
        fs::remove_file(entry.join(MANIFEST)).unwrap();
        assert!(entry_problem(&entry, &key).is_some());
        assert!(derived_model(&cache, &src, "1", "c", fake_build).unwrap().1);
        assert!(entry_problem(&entry, &EntryKey::new(&[0; 32], "1", "c")).is_some());

        // Another runtime or CPU: another entry.
        let (other, built) = derived_model(&cache, &src, "2", "c", fake_build).unwrap();
        assert!(built && other != path);

        // A failed build leaves nothing behind and builds next time.
        fs::write(root.join("src2.onnx"), b"another graph").unwrap();
        let src2 = PinnedFile::open(&root.join("src2.onnx")).unwrap();
        let failed = derived_model(&cache, &src2, "1", "c", |_| {
            Err(Error::new(ErrorKind::InvalidModel, "no"))
        });
        assert!(failed.is_err());
        assert!(fs::read_dir(&cache).unwrap().all(|e| !e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with(".build")));
        assert!(
            derived_model(&cache, &src2, "1", "c", fake_build)
                .unwrap()
                .1
        );
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_hash_known_from_the_checksum_is_remembered_too() {
        // A model whose clinembed.json records a sha256 is hashed by the
        // load's checksum before the cache is asked: the memo must still be
        // written, or every new backend reads the whole model again.
        let root = scratch("checksummed");
        fs::write(root.join("src.onnx"), b"checksummed graph").unwrap();
        let cache = root.join("cache");
        let first = PinnedFile::open(&root.join("src.onnx")).unwrap();
        let hash = first.sha256().unwrap(); // the checksum's read
        derived_model(&cache, &first, "1", "c", fake_build).unwrap();
        let next = PinnedFile::open(&root.join("src.onnx")).unwrap();
        recall_sha256(&cache, &next);
        assert!(next.sha256_known(), "the next backend must recall the hash");
        assert_eq!(next.sha256().unwrap(), hash);
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_new_file_version_is_hashed_again() {
        let root = scratch("memo");
        let cache = root.join("cache");
        fs::write(root.join("src.onnx"), b"one").unwrap();
        let a = PinnedFile::open(&root.join("src.onnx")).unwrap();
        let (pa, _) = derived_model(&cache, &a, "1", "c", fake_build).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        fs::write(root.join("src.onnx"), b"two").unwrap();
        let b = PinnedFile::open(&root.join("src.onnx")).unwrap();
        let (pb, built) = derived_model(&cache, &b, "1", "c", fake_build).unwrap();
        assert!(built && pa != pb);
        assert_ne!(a.sha256().unwrap(), b.sha256().unwrap());
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn racing_builders_build_once() {
        let root = scratch("race");
        fs::write(root.join("src.onnx"), b"raced graph").unwrap();
        let cache = root.join("cache");
        let builds = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    let src = PinnedFile::open(&root.join("src.onnx")).unwrap();
                    derived_model(&cache, &src, "1", "c", |d| {
                        builds.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        std::thread::sleep(std::time::Duration::from_millis(200));
                        fake_build(d)
                    })
                    .unwrap()
                });
            }
        });
        assert_eq!(builds.load(std::sync::atomic::Ordering::SeqCst), 1);
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn unused_entries_and_dead_builds_are_pruned_when_another_is_built() {
        let root = scratch("prune");
        let cache = root.join("cache");
        let open = |name: &str, bytes: &[u8]| {
            fs::write(root.join(name), bytes).unwrap();
            PinnedFile::open(&root.join(name)).unwrap()
        };
        let old = derived_model(&cache, &open("old.onnx", b"old"), "1", "c", fake_build)
            .unwrap()
            .0;
        let recent = derived_model(
            &cache,
            &open("recent.onnx", b"recent"),
            "1",
            "c",
            fake_build,
        )
        .unwrap()
        .0;
        let dead = cache.join(".build-0123-99");
        fs::create_dir_all(&dead).unwrap();
        let long_ago = std::time::SystemTime::now()
            - std::time::Duration::from_secs((UNUSED_ENTRY_DAYS + 1) * 24 * 3600);
        let set_age = |p: &Path| File::open(p).unwrap().set_modified(long_ago).unwrap();
        set_age(&old.parent().unwrap().join(USED));
        set_age(&dead);
        // Another model's first load prunes: the old entry and the dead
        // build go, the recently used entry stays.
        let new = derived_model(&cache, &open("new.onnx", b"new"), "1", "c", fake_build)
            .unwrap()
            .0;
        assert!(!old.exists() && !dead.exists());
        assert!(recent.exists() && new.exists());
        // A later load of the pruned model rebuilds it.
        let (again, built) =
            derived_model(&cache, &open("old.onnx", b"old"), "1", "c", fake_build).unwrap();
        assert!(built && again == old && again.exists());
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_cache_others_may_write_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let root = scratch("shared-dir");
        fs::write(root.join("src.onnx"), b"g").unwrap();
        let src = PinnedFile::open(&root.join("src.onnx")).unwrap();
        let cache = root.join("cache");
        fs::create_dir_all(&cache).unwrap();
        fs::set_permissions(&cache, fs::Permissions::from_mode(0o777)).unwrap();
        let e = derived_model(&cache, &src, "1", "c", fake_build).unwrap_err();
        assert!(e.detail.unwrap().contains("writable by no one else"));
        fs::set_permissions(&cache, fs::Permissions::from_mode(0o700)).unwrap();
        assert!(derived_model(&cache, &src, "1", "c", fake_build).is_ok());
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn relative_cache_paths_are_refused() {
        let root = scratch("relative");
        fs::write(root.join("src.onnx"), b"g").unwrap();
        let src = PinnedFile::open(&root.join("src.onnx")).unwrap();
        let e = derived_model(Path::new("cache"), &src, "1", "c", fake_build).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Runtime);
        fs::remove_dir_all(&root).unwrap();
    }
}
