//! Model identity: which model produced a stored vector.
//!
//! The identity is `name@hash`, where `hash` is the first 16 hex digits of a
//! SHA-256 over the model graph, the tokenizer and the effective embedding
//! settings (pooling, normalization, maximum length).  Anything that changes
//! the vectors changes the identity; renaming nothing and copying the same
//! files elsewhere keeps it.  Triggers and the backfill store it beside each
//! vector and compare it to find stale rows.
//!
//! SHA-256 is implemented here (FIPS 180-4) rather than pulled in as a
//! dependency; it runs once per model per backend, lazily.

use std::fs::File;
use std::path::{Path, PathBuf};

use crate::chunk::ChunkOptions;
use crate::error::{Error, ErrorKind, Result};

const K: [u32; 64] = [
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
];

/// Streaming SHA-256.
#[derive(Clone)]
pub struct Sha256 {
    state: [u32; 8],
    block: [u8; 64],
    filled: usize,
    length: u64,
}

impl Default for Sha256 {
    fn default() -> Self {
        Sha256 {
            state: [
                0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab,
                0x5be0cd19,
            ],
            block: [0; 64],
            filled: 0,
            length: 0,
        }
    }
}

impl Sha256 {
    pub fn update(&mut self, mut data: &[u8]) {
        self.length = self.length.wrapping_add(data.len() as u64);
        if self.filled > 0 {
            let take = (64 - self.filled).min(data.len());
            self.block[self.filled..self.filled + take].copy_from_slice(&data[..take]);
            self.filled += take;
            data = &data[take..];
            if self.filled < 64 {
                return;
            }
            let block = self.block;
            self.compress(&block);
            self.filled = 0;
        }
        let mut chunks = data.chunks_exact(64);
        for chunk in &mut chunks {
            self.compress(chunk.try_into().expect("64-byte chunk"));
        }
        let rest = chunks.remainder();
        self.block[..rest.len()].copy_from_slice(rest);
        self.filled = rest.len();
    }

    pub fn finish(mut self) -> [u8; 32] {
        let bits = self.length.wrapping_mul(8);
        self.update(&[0x80]);
        while self.filled != 56 {
            self.update(&[0]);
        }
        self.update(&bits.to_be_bytes());
        let mut out = [0u8; 32];
        for (o, s) in out.chunks_exact_mut(4).zip(self.state) {
            o.copy_from_slice(&s.to_be_bytes());
        }
        out
    }

    fn compress(&mut self, block: &[u8; 64]) {
        let mut w = [0u32; 64];
        for (i, word) in block.chunks_exact(4).enumerate() {
            w[i] = u32::from_be_bytes(word.try_into().expect("4-byte word"));
        }
        for i in 16..64 {
            let s0 = w[i - 15].rotate_right(7) ^ w[i - 15].rotate_right(18) ^ (w[i - 15] >> 3);
            let s1 = w[i - 2].rotate_right(17) ^ w[i - 2].rotate_right(19) ^ (w[i - 2] >> 10);
            w[i] = w[i - 16]
                .wrapping_add(s0)
                .wrapping_add(w[i - 7])
                .wrapping_add(s1);
        }
        let [mut a, mut b, mut c, mut d, mut e, mut f, mut g, mut h] = self.state;
        for i in 0..64 {
            let s1 = e.rotate_right(6) ^ e.rotate_right(11) ^ e.rotate_right(25);
            let ch = (e & f) ^ (!e & g);
            let t1 = h
                .wrapping_add(s1)
                .wrapping_add(ch)
                .wrapping_add(K[i])
                .wrapping_add(w[i]);
            let s0 = a.rotate_right(2) ^ a.rotate_right(13) ^ a.rotate_right(22);
            let maj = (a & b) ^ (a & c) ^ (b & c);
            let t2 = s0.wrapping_add(maj);
            h = g;
            g = f;
            f = e;
            e = d.wrapping_add(t1);
            d = c;
            c = b;
            b = a;
            a = t1.wrapping_add(t2);
        }
        for (s, v) in self.state.iter_mut().zip([a, b, c, d, e, f, g, h]) {
            *s = s.wrapping_add(v);
        }
    }
}

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
        let unreadable = |e: std::io::Error| {
            Error::new(ErrorKind::NotFound, "cannot read model file")
                .detail(format!("Opening \"{}\" failed: {e}.", path.display()))
                .hint("The server's operating system user must be able to read every file of the model directory.")
        };
        let file = File::open(path).map_err(unreadable)?;
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
        let mut hasher = Sha256::default();
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
        Ok(hasher.finish())
    }
}

/// The identity of model `name` loaded from `files` with effective
/// `settings` (a canonical text of everything besides the files that shapes
/// the vectors).
pub fn model_identity(name: &str, files: &[PinnedFile], settings: &str) -> Result<String> {
    let mut h = Sha256::default();
    for f in files {
        let label = f
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        h.update(label.as_bytes());
        h.update(&[0]);
        h.update(&f.sha256()?);
    }
    h.update(settings.as_bytes());
    Ok(format!("{name}@{}", &hex(&h.finish())[..HASH_DIGITS]))
}

/// Digits of the hash in an identity.
const HASH_DIGITS: usize = 16;

/// The identity under a long-text policy: the model's own identity, with
/// `+chunkW/O` when windows of W tokens overlapping by O are pooled (the
/// same files give other vectors then).
pub fn with_long_text(base: &str, long_text: Option<ChunkOptions>) -> String {
    match long_text {
        None => base.to_string(),
        Some(c) => format!("{base}+chunk{}/{}", c.window, c.overlap),
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
                "A model identity is name@hash with {HASH_DIGITS} hex digits, and +chunkW/O for the chunked long-text policy; this one has {} characters.",
                id.chars().count()
            ))
            .hint("Pass what embed_model_id('name') returns for the installed model.")
    };
    let (base, long_text) = match id.split_once("+chunk") {
        None => (id, None),
        Some((base, policy)) => {
            let (w, o) = policy.split_once('/').ok_or_else(malformed)?;
            let number = |s: &str| {
                (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                    .then(|| s.parse::<usize>().ok())
                    .flatten()
                    .ok_or_else(malformed)
            };
            let opts = ChunkOptions {
                window: number(w)?,
                overlap: number(o)?,
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
    let name = actual.split('@').next().unwrap_or(actual);
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

    fn sha(data: &[u8]) -> String {
        let mut h = Sha256::default();
        h.update(data);
        hex(&h.finish())
    }

    #[test]
    fn fips_vectors() {
        assert_eq!(
            sha(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            sha(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            sha(b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"
        );
        assert_eq!(
            sha(&vec![b'a'; 1_000_000]),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"
        );
    }

    #[test]
    fn pieces_equal_whole() {
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 7 % 251) as u8).collect();
        for split in [0, 1, 55, 56, 63, 64, 65, 500, 999] {
            let mut h = Sha256::default();
            h.update(&data[..split]);
            h.update(&data[split..]);
            assert_eq!(hex(&h.finish()), sha(&data), "split at {split}");
        }
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
        };
        for long_text in [None, Some(chunked)] {
            let id = with_long_text(base, long_text);
            let pin = parse_pin(&id).unwrap();
            assert_eq!(pin.name, "bio_clinicalbert");
            assert_eq!(pin.long_text, long_text);
        }
        assert_eq!(
            with_long_text(base, Some(chunked)),
            format!("{base}+chunk128/32")
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
