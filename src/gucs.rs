//! Every clinembed setting, in one place.
//!
//! Settings that name files or libraries are `PGC_SUSET`: a user-settable path
//! is a file-read and code-execution route (PostgreSQL made PL/Java's path
//! settings superuser-only for this reason).  Settings that only shape work
//! done for the current session are `PGC_USERSET`.

use std::ffi::{CStr, CString};
use std::path::PathBuf;

use pgrx::{GucContext, GucFlags, GucRegistry, GucSetting};

/// Name of the model used when nothing is configured
/// ([`clinembed_core::DEFAULT_MODEL`]); `scripts/setup.sh` installs it under
/// `$sharedir/clinembed/models/`.
pub const DEFAULT_MODEL: &CStr = c_str(concat!(clinembed_core::default_model!(), "\0"));

/// The ONNX Runtime library that `scripts/setup.sh` installs.
pub const DEFAULT_ORT_LIBRARY: &CStr = c_str(concat!(
    "$libdir/clinembed/libonnxruntime.so.",
    clinembed_core::ort_version!(),
    "\0"
));

/// A NUL-terminated literal as a `CStr`, at compile time.
const fn c_str(s: &'static str) -> &'static CStr {
    match CStr::from_bytes_with_nul(s.as_bytes()) {
        Ok(c) => c,
        Err(_) => panic!("not a NUL-terminated string without interior NULs"),
    }
}

/// `clinembed.model`: an installed model name, resolved under
/// `clinembed.models_root`, or an absolute path to a model directory.
/// Default: the installed all-MiniLM-L6-v2 int8, so the demo needs no setup.
/// Superuser-only because it names files the server reads.
pub static MODEL: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(DEFAULT_MODEL));

/// `clinembed.rerank_model`: the installed cross-encoder that `embed_rerank`
/// and `embed_search(..., rerank => n)` score with when no model is named
/// in the call.  Empty, the default, means none: reranking then needs a
/// model named per call.  Any role may set it (installed names only, like
/// `embed_text(..., model => name)`).
pub static RERANK_MODEL: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);

/// `clinembed.models_root`: the directory installed model names resolve in.
/// Empty, the default, means `$sharedir/clinembed/models`, where
/// `scripts/setup.sh` installs models.  Set in postgresql.conf (or ALTER
/// SYSTEM and a reload), so every session of a server, and only a
/// superuser, decides where model names lead; several servers that share one
/// PostgreSQL installation can hold different models under one name.
pub static MODELS_ROOT: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);

/// `clinembed.onnxruntime_library`: path of `libonnxruntime.so`.  A leading
/// `$libdir` means PostgreSQL's package library directory.  Loaded once per
/// process, so a change takes effect in new sessions.  Superuser-only because
/// it names a library the server loads and runs.
pub static ORT_LIBRARY: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(DEFAULT_ORT_LIBRARY));

/// `clinembed.intra_op_threads`: ONNX Runtime intra-op threads per backend;
/// 0, the default, means one per CPU available to the server.  The common
/// query, `SELECT embed_text(exp_text) FROM notes`, runs one row at a time in
/// one backend: a table of a few thousand notes is below
/// `min_parallel_table_scan_size`, so parallel workers do not start, and only
/// intra-op threads put the other cores to work.  Inter-op threads are always
/// 1 and spinning is off, so a pool whose threads find no work sleeps instead
/// of burning the CPU that other backends need (bench/RESULTS.md has the
/// concurrent figures).  Set 1 for many concurrent embedding connections.
/// A value above the CPUs available to the server is capped at them (any
/// role may set it, and threads past the cores only take turns).
/// In a parallel worker, 0 means 1: a parallel plan already spreads rows
/// over processes, one per core at most, and each worker's pool of one per
/// CPU would ask for workers × CPUs threads.
pub static INTRA_OP_THREADS: GucSetting<i32> = GucSetting::<i32>::new(0);

/// `clinembed.memory_arena`: use ONNX Runtime's CPU arena allocator.  Default
/// on: without it, activation buffers go through glibc, which keeps freed
/// buffers in its free lists, so a backend stays larger after a call (the
/// figures are in bench/RESULTS.md).  The arena gives its free regions back
/// after a large call (see [`clinembed_core::ARENA_KEEP_TOKENS`]).
pub static MEMORY_ARENA: GucSetting<bool> = GucSetting::<bool>::new(true);

/// `clinembed.batch_tokens`: padded tokens (rows × longest row) per
/// micro-batch in `embed_texts`.  Memory and the time before a cancel lands
/// grow with the budget, speed does not beyond the default (the settings
/// sweep in bench/RESULTS.md); interrupts are checked between micro-batches.
pub static BATCH_TOKENS: GucSetting<i32> =
    GucSetting::<i32>::new(clinembed_core::DEFAULT_MICRO_BATCH_TOKENS as i32);

/// `clinembed.batch_tokens_limit`: the most padded tokens per micro-batch,
/// whatever a session sets `clinembed.batch_tokens` to.  A micro-batch's
/// memory, and the time before a cancel lands, grow with its size (one role
/// that set `batch_tokens` to 1048576 made a backend take 15.5 GB for 120 s
/// without a chance to cancel), so only a superuser may raise the ceiling.
/// Default: the default budget, so an ordinary role can only lower it.
pub static BATCH_TOKENS_LIMIT: GucSetting<i32> =
    GucSetting::<i32>::new(clinembed_core::DEFAULT_MICRO_BATCH_TOKENS as i32);

/// `clinembed.batch_max_texts`: texts per `embed_texts` call.  Default
/// 100000; over it the call fails with a hint instead of exhausting memory.
pub static BATCH_MAX_TEXTS: GucSetting<i32> =
    GucSetting::<i32>::new(clinembed_core::DEFAULT_MAX_TEXTS as i32);

/// `clinembed.batch_max_tokens`: tokens per `embed_texts` call, after
/// truncation.  Default 4000000 (about 64 MB of token ids and ~14000 notes of
/// 290 tokens).
pub static BATCH_MAX_TOKENS: GucSetting<i32> =
    GucSetting::<i32>::new(clinembed_core::DEFAULT_MAX_TOKENS as i32);

/// `clinembed.intra_op_spinning`: let idle intra-op threads spin between
/// operators instead of sleeping.  Default off: spinning threads of many
/// backends would take the CPU from the threads doing work.
pub static INTRA_OP_SPINNING: GucSetting<bool> = GucSetting::<bool>::new(false);

/// What `embed_text`, `embed_texts`, the triggers and the backfill do with a
/// text longer than the model's maximum length.
#[derive(pgrx::PostgresGucEnum, Clone, Copy, PartialEq, Eq, Debug)]
pub enum LongText {
    /// Keep the first `max_length` tokens (the notebook's behaviour).
    #[name = c"truncate"]
    Truncate,
    /// Embed overlapping windows and take their token-weighted mean.
    #[name = c"chunk"]
    Chunk,
}

/// `clinembed.long_text`: `truncate` (default, the notebook's behaviour; see
/// `embed_truncation` for which notes lose text) or `chunk`: every text is
/// cut into windows of `clinembed.chunk_tokens` tokens overlapping by
/// `clinembed.chunk_overlap`, never splitting a word, embedded, and pooled by
/// a token-weighted mean.  The model identity records the choice, so a
/// backfill after a change re-embeds.
pub static LONG_TEXT: GucSetting<LongText> = GucSetting::<LongText>::new(LongText::Truncate);

/// How the chunked policy pools a text's windows (`clinembed.chunk_pooling`).
#[derive(pgrx::PostgresGucEnum, Clone, Copy, PartialEq, Eq, Debug)]
pub enum ChunkPooling {
    /// The token-weighted mean.
    #[name = c"mean"]
    Mean,
    /// The element-wise maximum.
    #[name = c"max"]
    Max,
    /// The mean and the maximum one after the other (twice the dimensions).
    #[name = c"mean_max"]
    MeanMax,
}

/// `clinembed.chunk_pooling`: how the chunked policy (`clinembed.long_text
/// = 'chunk'`) makes a text's one vector of its windows' vectors: `mean`
/// (default, token-weighted), `max` or `mean_max` (twice the model's
/// dimensions).  The model identity names it (`+chunk128/32/max`), so a
/// backfill after a change re-embeds.
pub static CHUNK_POOLING: GucSetting<ChunkPooling> =
    GucSetting::<ChunkPooling>::new(ChunkPooling::Mean);

/// `clinembed.chunk_tokens`: window size in tokens, special tokens included.
/// Default 128, the sequence length Bio_ClinicalBERT was trained at.
pub static CHUNK_TOKENS: GucSetting<i32> =
    GucSetting::<i32>::new(clinembed_core::inference::chunk::DEFAULT_WINDOW_TOKENS as i32);

/// `clinembed.chunk_overlap`: tokens shared by consecutive windows, at most.
/// Default 32, a quarter of the default window.
pub static CHUNK_OVERLAP: GucSetting<i32> =
    GucSetting::<i32>::new(clinembed_core::inference::chunk::DEFAULT_OVERLAP_TOKENS as i32);

/// `clinembed.max_loaded_models`: models one backend keeps loaded at once; the
/// least recently used is dropped to load another.  Default 2: a model and
/// its replacement during a migration, or two models compared side by side,
/// without a reload per call.  Each costs its own memory (see docs/models.md, "Several models").
pub static MAX_LOADED_MODELS: GucSetting<i32> = GucSetting::<i32>::new(2);

/// `clinembed.allow_model_links`: let an installed model name resolve to a
/// directory outside `$sharedir/clinembed/models` through a symbolic link.
/// Off by default: a link planted under the model root must not make the
/// server read files elsewhere.  Superuser-only.
pub static ALLOW_MODEL_LINKS: GucSetting<bool> = GucSetting::<bool>::new(false);

/// `clinembed.shared_weights`: map model weights from a form derived once
/// per server (ONNX Runtime's optimized graph with its weights and packed
/// weights in an external-data file, under `clinembed.weights_cache`), so
/// every backend shares one copy through the page cache instead of holding
/// its own.  Default on: the vectors are the same, a backend costs its
/// activations instead of the whole model, and a new connection loads in a
/// fraction of the time.  Off loads `model.onnx` onto each backend's heap,
/// as releases before 0.6.0 did.  Superuser-only: it decides which files the
/// server writes and maps.
pub static SHARED_WEIGHTS: GucSetting<bool> = GucSetting::<bool>::new(true);

/// `clinembed.weights_cache`: the directory derived forms are kept in.
/// Empty, the default, means `clinembed_cache` in the data directory: owned
/// by the server's user, on the server's own disk, and kept per server
/// because packed weights follow its CPU.  Set in postgresql.conf (or ALTER
/// SYSTEM and a reload): the server writes there and maps what it finds.
pub static WEIGHTS_CACHE: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);

/// What [`WEIGHTS_CACHE`] means when empty: this directory in the data directory.
pub const DEFAULT_WEIGHTS_CACHE_DIR: &str = "clinembed_cache";

/// `clinembed.queue_max_workers`: queue workers per server, at most.  Each
/// is a background worker (from `max_worker_processes`) holding its own
/// model session, so its own memory (bench/RESULTS.md has the figures).
pub static QUEUE_MAX_WORKERS: GucSetting<i32> =
    GucSetting::<i32>::new(clinembed_core::rows::queue::DEFAULT_MAX_WORKERS);

/// `clinembed.queue_max_workers_per_database`: queue workers per database,
/// at most.  One worker already uses every core through its intra-op
/// threads; more help only when inference is a small part of the work.
pub static QUEUE_MAX_WORKERS_PER_DATABASE: GucSetting<i32> =
    GucSetting::<i32>::new(clinembed_core::rows::queue::DEFAULT_MAX_WORKERS_PER_DATABASE);

/// `clinembed.queue_idle_exit`: seconds a queue worker with nothing to do
/// waits before it exits and gives its memory back.
pub static QUEUE_IDLE_EXIT: GucSetting<i32> =
    GucSetting::<i32>::new(clinembed_core::rows::queue::DEFAULT_IDLE_EXIT_SECONDS);

/// `clinembed.queue_batch_rows`: queued rows a worker embeds and writes per
/// transaction.
pub static QUEUE_BATCH_ROWS: GucSetting<i32> =
    GucSetting::<i32>::new(clinembed_core::rows::queue::DEFAULT_BATCH_ROWS);

/// `clinembed.queue_worker_nice`: the queue workers' scheduling priority
/// (nice value, 0-19), set when a worker starts: above 0, the backends that
/// write and read notes win the CPUs over the embedding when both want
/// them (bench/RESULTS.md has the figures).
pub static QUEUE_WORKER_NICE: GucSetting<i32> =
    GucSetting::<i32>::new(clinembed_core::rows::queue::DEFAULT_WORKER_NICE);

/// `clinembed.queue_max_attempts`: failed tries before a queued row is
/// parked in `embed_queue_failures`.
pub static QUEUE_MAX_ATTEMPTS: GucSetting<i32> =
    GucSetting::<i32>::new(clinembed_core::rows::queue::DEFAULT_MAX_ATTEMPTS);

pub fn init() {
    GucRegistry::define_string_guc(
        c"clinembed.model",
        c"Embedding model: an installed model name or an absolute path to a model directory.",
        c"A model directory holds model.onnx and tokenizer.json, optionally clinembed.json and config.json. Names resolve under clinembed.models_root.",
        &MODEL,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"clinembed.rerank_model",
        c"Installed cross-encoder that reranks when a call names none; empty means none.",
        c"An installed model name whose clinembed.json says \"kind\": \"cross-encoder\".",
        &RERANK_MODEL,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"clinembed.models_root",
        c"Directory where installed model names resolve; empty means $sharedir/clinembed/models.",
        c"Server-wide: set it in postgresql.conf or with ALTER SYSTEM, then reload.",
        &MODELS_ROOT,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"clinembed.onnxruntime_library",
        c"Path of the ONNX Runtime shared library; $libdir means PostgreSQL's library directory.",
        c"Loaded once per backend process, on the first embedding call.",
        &ORT_LIBRARY,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"clinembed.intra_op_threads",
        c"ONNX Runtime intra-op threads per backend; 0 means one per available CPU.",
        c"Every backend that embeds has its own pool; inter-op threads are 1 and spinning is off.",
        &INTRA_OP_THREADS,
        0,
        256,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_bool_guc(
        c"clinembed.intra_op_spinning",
        c"Let idle ONNX Runtime intra-op threads spin instead of sleeping.",
        c"Faster for one connection alone; off by default so concurrent backends do not steal CPU from each other.",
        &INTRA_OP_SPINNING,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_bool_guc(
        c"clinembed.memory_arena",
        c"Use ONNX Runtime's CPU arena allocator.",
        c"On by default: it held less memory than glibc malloc for mixed note lengths.",
        &MEMORY_ARENA,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"clinembed.batch_tokens",
        c"Padded tokens per micro-batch in embed_texts.",
        c"Texts are sorted by length and grouped so that rows times the longest row stays within this budget.",
        &BATCH_TOKENS,
        16,
        1 << 20,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"clinembed.batch_tokens_limit",
        c"Most padded tokens per micro-batch, whatever clinembed.batch_tokens says.",
        c"Bounds the memory of one micro-batch and the time before a cancel lands; superuser-only.",
        &BATCH_TOKENS_LIMIT,
        16,
        1 << 20,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"clinembed.batch_max_texts",
        c"Most texts one embed_texts call accepts.",
        c"",
        &BATCH_MAX_TEXTS,
        1,
        i32::MAX,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"clinembed.batch_max_tokens",
        c"Most tokens, after truncation, one embed_texts call accepts.",
        c"",
        &BATCH_MAX_TOKENS,
        1,
        i32::MAX,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_enum_guc(
        c"clinembed.long_text",
        c"What to do with texts longer than the model's maximum length: truncate or chunk.",
        c"chunk embeds overlapping windows of clinembed.chunk_tokens tokens and pools them by a token-weighted mean.",
        &LONG_TEXT,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_enum_guc(
        c"clinembed.chunk_pooling",
        c"How the chunk policy pools a text's windows: mean, max or mean_max.",
        c"mean_max gives vectors of twice the model's dimensions.",
        &CHUNK_POOLING,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"clinembed.chunk_tokens",
        c"Window size in tokens, special tokens included, for the chunk policy and embed_chunks.",
        c"",
        &CHUNK_TOKENS,
        3,
        8192,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"clinembed.chunk_overlap",
        c"Most tokens consecutive windows share, for the chunk policy and embed_chunks.",
        c"",
        &CHUNK_OVERLAP,
        0,
        8191,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"clinembed.max_loaded_models",
        c"Models one backend keeps loaded at once.",
        c"The least recently used is dropped to load another.",
        &MAX_LOADED_MODELS,
        1,
        16,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_bool_guc(
        c"clinembed.shared_weights",
        c"Map model weights from a form derived once per server, shared by every backend.",
        c"Off loads model.onnx onto each backend's heap. Takes effect at the next model load.",
        &SHARED_WEIGHTS,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"clinembed.weights_cache",
        c"Directory for derived shared-weights forms; empty means clinembed_cache in the data directory.",
        c"Server-wide: set it in postgresql.conf or with ALTER SYSTEM, then reload.",
        &WEIGHTS_CACHE,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_bool_guc(
        c"clinembed.allow_model_links",
        c"Let installed model names resolve through symbolic links to directories outside the model root.",
        c"Off by default; superuser-only.",
        &ALLOW_MODEL_LINKS,
        GucContext::Suset,
        GucFlags::default(),
    );
    for (name, short, setting, min, max) in [
        (
            c"clinembed.queue_max_workers",
            c"Most embedding queue workers per server.",
            &QUEUE_MAX_WORKERS,
            0,
            clinembed_core::rows::queue::WORKER_SLOTS as i32,
        ),
        (
            c"clinembed.queue_max_workers_per_database",
            c"Most embedding queue workers per database.",
            &QUEUE_MAX_WORKERS_PER_DATABASE,
            0,
            clinembed_core::rows::queue::WORKER_SLOTS as i32,
        ),
        (
            c"clinembed.queue_idle_exit",
            c"Seconds an idle embedding queue worker waits before it exits.",
            &QUEUE_IDLE_EXIT,
            1,
            86_400,
        ),
        (
            c"clinembed.queue_batch_rows",
            c"Queued rows a worker embeds per transaction.",
            &QUEUE_BATCH_ROWS,
            1,
            clinembed_core::rows::columns::ROWS_PER_CALL as i32,
        ),
        (
            c"clinembed.queue_worker_nice",
            c"Scheduling priority (nice value) of embedding queue workers.",
            &QUEUE_WORKER_NICE,
            0,
            19,
        ),
        (
            c"clinembed.queue_max_attempts",
            c"Failed tries before a queued row is parked.",
            &QUEUE_MAX_ATTEMPTS,
            1,
            1000,
        ),
    ] {
        GucRegistry::define_int_guc(
            name,
            short,
            c"Server-wide: set in postgresql.conf or with ALTER SYSTEM and a reload.",
            setting,
            min,
            max,
            GucContext::Sighup,
            GucFlags::default(),
        );
    }
    // Last: every setting is defined by now.
    // SAFETY: called from _PG_init on the main thread with a static string.
    unsafe { pgrx::pg_sys::MarkGUCPrefixReserved(c"clinembed".as_ptr()) };
}

fn string(setting: &GucSetting<Option<CString>>) -> String {
    setting
        .get()
        .map(|c| c.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The configured models root, if one is set.
pub fn models_root() -> Option<PathBuf> {
    Some(PathBuf::from(string(&MODELS_ROOT))).filter(|p| !p.as_os_str().is_empty())
}

/// Where sessions take their weights from: the shared cache (see
/// [`SHARED_WEIGHTS`]) or their own heap.
pub fn weights() -> clinembed_core::Weights {
    if !SHARED_WEIGHTS.get() {
        return clinembed_core::Weights::Private;
    }
    let raw = PathBuf::from(string(&WEIGHTS_CACHE));
    let dir = if raw.as_os_str().is_empty() {
        crate::server_dirs::data_dir().join(DEFAULT_WEIGHTS_CACHE_DIR)
    } else {
        // A relative path is refused by the cache, and the model then loads
        // privately with the reason in embed_model_info().
        raw
    };
    clinembed_core::Weights::Shared(dir)
}

/// The configured reranker, if one is set.
pub fn rerank_model() -> Option<String> {
    Some(string(&RERANK_MODEL)).filter(|s| !s.is_empty())
}

/// The configured model setting, unresolved.
pub fn model_setting() -> String {
    string(&MODEL)
}

/// The configured library path with `$libdir` expanded.
pub fn ort_library() -> PathBuf {
    let raw = string(&ORT_LIBRARY);
    match raw.strip_prefix("$libdir") {
        Some(rest) => PathBuf::from(format!("{}{rest}", crate::server_dirs::pkglib_dir())),
        None => PathBuf::from(raw),
    }
}

/// CPUs available to this process, read once: `available_parallelism` reads
/// cgroup files, and session options are built on every embedding call.
fn available_cpus() -> usize {
    static CPUS: once_cell::sync::OnceCell<usize> = once_cell::sync::OnceCell::new();
    *CPUS.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// Whether this process is a parallel worker of a parallel query.
fn in_parallel_worker() -> bool {
    // SAFETY: a backend-local integer, -1 outside parallel workers; read on
    // the main thread.
    unsafe { pgrx::pg_sys::ParallelWorkerNumber >= 0 }
}

pub fn session_options() -> clinembed_core::SessionOptions {
    clinembed_core::SessionOptions {
        intra_threads: clinembed_core::intra_op_threads(
            INTRA_OP_THREADS.get(),
            in_parallel_worker(),
            available_cpus(),
        ),
        memory_arena: MEMORY_ARENA.get(),
        spinning: INTRA_OP_SPINNING.get(),
    }
}

pub fn batch_limits() -> clinembed_core::BatchLimits {
    clinembed_core::BatchLimits {
        micro_batch_tokens: clinembed_core::micro_batch_budget(
            BATCH_TOKENS.get(),
            BATCH_TOKENS_LIMIT.get(),
        ),
        max_texts: BATCH_MAX_TEXTS.get().max(1) as usize,
        max_tokens: BATCH_MAX_TOKENS.get().max(1) as usize,
    }
}

/// The window settings from `clinembed.chunk_tokens`,
/// `clinembed.chunk_overlap` and `clinembed.chunk_pooling`.
pub fn chunk_options() -> clinembed_core::inference::chunk::ChunkOptions {
    use clinembed_core::inference::chunk::WindowPooling;
    clinembed_core::inference::chunk::ChunkOptions {
        window: CHUNK_TOKENS.get().max(1) as usize,
        overlap: CHUNK_OVERLAP.get().max(0) as usize,
        pooling: match CHUNK_POOLING.get() {
            ChunkPooling::Mean => WindowPooling::Mean,
            ChunkPooling::Max => WindowPooling::Max,
            ChunkPooling::MeanMax => WindowPooling::MeanMax,
        },
    }
}

/// The chunk options when `clinembed.long_text` is `chunk`, else `None`.
pub fn long_text() -> Option<clinembed_core::inference::chunk::ChunkOptions> {
    (LONG_TEXT.get() == LongText::Chunk).then(chunk_options)
}

pub fn max_loaded_models() -> usize {
    MAX_LOADED_MODELS.get().clamp(1, 16) as usize
}

pub fn queue_max_workers() -> usize {
    QUEUE_MAX_WORKERS.get().max(0) as usize
}

pub fn queue_max_workers_per_database() -> usize {
    QUEUE_MAX_WORKERS_PER_DATABASE.get().max(0) as usize
}

pub fn queue_idle_exit() -> std::time::Duration {
    std::time::Duration::from_secs(QUEUE_IDLE_EXIT.get().max(1) as u64)
}

pub fn queue_batch_rows() -> usize {
    QUEUE_BATCH_ROWS.get().max(1) as usize
}

pub fn queue_max_attempts() -> i32 {
    QUEUE_MAX_ATTEMPTS.get()
}

pub fn queue_worker_nice() -> i32 {
    QUEUE_WORKER_NICE.get()
}
