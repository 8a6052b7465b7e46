//! Which queue workers run, in a few kilobytes of shared memory that every
//! backend of the server sees: one slot per worker, with its database, its
//! state, its pid and latch, and what it is doing.
//!
//! The memory is taken with `ShmemInitStruct` the first time any process
//! asks for it: reserved at startup when clinembed is in
//! `shared_preload_libraries`, from the server's spare shared memory
//! otherwise.  Fresh shared memory is zeroed, and zero is a free slot, so it
//! needs no initialisation (and a crash restart, which makes new shared
//! memory, starts from free slots).
//!
//! The protocol that loses no wake-up: a backend that queued rows commits,
//! then reads the slots of its database (`wake`): a worker that is
//! `ACCEPTING` has its latch set, one that is `STARTING` will look at the
//! queue after it started; if there is neither, it launches one.  A worker
//! that wants to exit first marks itself `EXITING`, then looks at the queue
//! once more in a new transaction: either a backend's commit is visible to
//! that look, or the backend read `EXITING` after the mark and launched
//! another worker.  Slot words are read and written sequentially consistent.

use std::sync::atomic::Ordering::SeqCst;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicI64, AtomicU32, AtomicU64, AtomicUsize};
use std::time::Duration;

use pgrx::bgworkers::{BackgroundWorkerBuilder, BgWorkerStartTime};
use pgrx::pg_sys;

use crate::gucs;

/// Slots, so workers per server, at most.
pub const SLOTS: usize = clinembed_core::rows::queue::WORKER_SLOTS;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Free = 0,
    /// Reserved by a backend that launched the worker; not started yet.
    Starting = 1,
    /// Running; sees every queued row committed before it next looks.
    Accepting = 2,
    /// Deciding to exit after its last look at the queue.
    Exiting = 3,
}

impl State {
    fn from(v: u64) -> State {
        match v & 0xff {
            1 => State::Starting,
            2 => State::Accepting,
            3 => State::Exiting,
            _ => State::Free,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            State::Free => "free",
            State::Starting => "starting",
            State::Accepting => "running",
            State::Exiting => "exiting",
        }
    }
}

/// A slot's database and state, in one word, so they change together.
fn word(datid: u32, state: State) -> u64 {
    ((datid as u64) << 32) | state as u64
}

fn unword(w: u64) -> (u32, State) {
    ((w >> 32) as u32, State::from(w))
}

#[repr(C)]
pub struct Slot {
    word: AtomicU64,
    /// Which launch reserved it: a worker finds its own slot by this.
    launch: AtomicU64,
    pid: AtomicI32,
    latch: AtomicUsize,
    started: AtomicI64,
    /// The table of the batch in flight (0: none) and its rows.
    relid: AtomicU32,
    in_flight: AtomicU32,
    /// Rows written since the worker started.
    done: AtomicU64,
}

#[repr(C)]
struct Registry {
    lock: AtomicBool,
    launches: AtomicU64,
    /// Databases that wanted a worker when the server had none to spare.
    wanted: [AtomicU32; SLOTS],
    slots: [Slot; SLOTS],
}

const NAME: &std::ffi::CStr = c"clinembed queue workers";

/// Reserves the registry's memory at server start (`shmem_request_hook`,
/// when clinembed is preloaded).
pub fn request_memory() {
    // SAFETY: called from the shmem request hook, in the postmaster.
    unsafe { pg_sys::RequestAddinShmemSpace(std::mem::size_of::<Registry>()) };
}

thread_local! {
    static REGISTRY: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

fn registry() -> &'static Registry {
    REGISTRY.with(|cell| {
        if cell.get() == 0 {
            let mut found = false;
            // SAFETY: ShmemInitStruct returns shared memory of the asked size
            // (zeroed when new), valid for the life of the process; it raises
            // an error if there is none.
            let p = unsafe {
                pg_sys::ShmemInitStruct(NAME.as_ptr(), std::mem::size_of::<Registry>(), &mut found)
            };
            cell.set(p as usize);
        }
        // SAFETY: set above to the registry, which lives as long as the process.
        unsafe { &*(cell.get() as *const Registry) }
    })
}

/// Attaches this process to the registry (taking its memory if no process
/// has yet), so that later calls raise no error.
pub fn attach() {
    registry();
}

/// Serialises the decisions that count slots (launch, claim): they are rare,
/// and only atomics run while it is held.
struct Guard<'a>(&'a AtomicBool);

fn lock(r: &Registry) -> Guard<'_> {
    while r
        .lock
        .compare_exchange_weak(false, true, SeqCst, SeqCst)
        .is_err()
    {
        std::thread::yield_now();
    }
    Guard(&r.lock)
}

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        self.0.store(false, SeqCst);
    }
}

fn counts(r: &Registry, datid: u32) -> (usize, usize) {
    let (mut total, mut here) = (0, 0);
    for s in &r.slots {
        let (d, state) = unword(s.word.load(SeqCst));
        if matches!(state, State::Starting | State::Accepting) {
            total += 1;
            if d == datid {
                here += 1;
            }
        }
    }
    (total, here)
}

/// Makes sure a worker will look at database `datid`'s queue: sets the latch
/// of each running worker of it, or launches one when none is running or
/// starting.  Never raises an error: it runs after commit.
pub fn wake(datid: u32) {
    let r = registry();
    let mut live = 0;
    for s in &r.slots {
        let (d, state) = unword(s.word.load(SeqCst));
        if d != datid {
            continue;
        }
        match state {
            State::Accepting => {
                live += 1;
                let latch = s.latch.load(SeqCst);
                if latch != 0 {
                    // SAFETY: a latch in shared memory (a PGPROC's); setting
                    // one whose process has gone only wakes its successor.
                    unsafe { pg_sys::SetLatch(latch as *mut pg_sys::Latch) };
                }
            }
            State::Starting => live += 1,
            _ => {}
        }
    }
    if live == 0 {
        launch(datid);
    }
}

/// Launches a worker for `datid` if the limits allow; otherwise notes that
/// the database wants one (a worker that exits launches it).
pub fn launch(datid: u32) -> bool {
    let r = registry();
    let (max, per_db) = (
        gucs::queue_max_workers(),
        gucs::queue_max_workers_per_database(),
    );
    let reserved = {
        let _g = lock(r);
        let (total, here) = counts(r, datid);
        if total >= max || here >= per_db {
            None
        } else {
            r.slots.iter().enumerate().find_map(|(i, s)| {
                s.word
                    .compare_exchange(0, word(datid, State::Starting), SeqCst, SeqCst)
                    .ok()
                    .map(|_| {
                        let launch = r.launches.fetch_add(1, SeqCst) + 1;
                        s.launch.store(launch, SeqCst);
                        (i, launch)
                    })
            })
        }
    };
    let Some((i, launch)) = reserved else {
        if counts(r, datid).1 == 0 {
            want(r, datid);
        }
        return false;
    };
    let started =
        BackgroundWorkerBuilder::new(&format!("clinembed queue worker for database {datid}"))
            .set_type("clinembed queue worker")
            .set_library("clinembed")
            .set_function("clinembed_queue_worker")
            .set_argument(Some(pg_sys::Datum::from(i)))
            .set_extra(&format!("{datid} {launch}"))
            .enable_spi_access()
            .set_start_time(BgWorkerStartTime::RecoveryFinished)
            .set_restart_time(Some(Duration::from_secs(
                clinembed_core::rows::queue::RESTART_SECONDS,
            )))
            .set_notify_pid(0)
            .load_dynamic()
            .is_ok();
    if !started {
        r.slots[i].word.store(0, SeqCst);
        want(r, datid);
    }
    started
}

fn want(r: &Registry, datid: u32) {
    if r.wanted.iter().any(|w| w.load(SeqCst) == datid) {
        return;
    }
    for w in &r.wanted {
        if w.compare_exchange(0, datid, SeqCst, SeqCst).is_ok() {
            return;
        }
    }
}

/// Launches workers for databases that wanted one while the server had
/// none to spare (called by a worker that has just freed its slot).
pub fn launch_wanted() {
    let r = registry();
    for w in &r.wanted {
        let datid = w.swap(0, SeqCst);
        if datid != 0 && !launch(datid) {
            return;
        }
    }
}

/// The calling worker takes its slot: the one its launch reserved, or, after
/// a crash restart or a restart by the postmaster, any free one if the limits
/// allow.  None: no room, the worker should exit.
pub fn claim(hint: usize, datid: u32, launch: u64) -> Option<usize> {
    let r = registry();
    let mine = r.slots.get(hint).filter(|s| {
        s.launch.load(SeqCst) == launch && s.word.load(SeqCst) == word(datid, State::Starting)
    });
    let i = match mine {
        Some(_) => hint,
        None => {
            let _g = lock(r);
            let (total, here) = counts(r, datid);
            if total >= gucs::queue_max_workers() || here >= gucs::queue_max_workers_per_database()
            {
                return None;
            }
            r.slots.iter().position(|s| {
                s.word
                    .compare_exchange(0, word(datid, State::Starting), SeqCst, SeqCst)
                    .is_ok()
            })?
        }
    };
    let s = &r.slots[i];
    // SAFETY: this process's own pid, latch and clock.
    unsafe {
        s.pid.store(pg_sys::MyProcPid, SeqCst);
        s.latch.store(pg_sys::MyLatch as usize, SeqCst);
        s.started.store(pg_sys::GetCurrentTimestamp(), SeqCst);
    }
    s.relid.store(0, SeqCst);
    s.in_flight.store(0, SeqCst);
    s.done.store(0, SeqCst);
    s.word.store(word(datid, State::Accepting), SeqCst);
    Some(i)
}

/// Frees slot `i` if this process holds it (the worker is leaving).  Called
/// again at process exit, by when the slot may already be reserved for
/// another launch, which must stay.
pub fn release(i: usize) {
    let s = &registry().slots[i];
    // SAFETY: this process's pid.
    if s.pid.load(SeqCst) != unsafe { pg_sys::MyProcPid } {
        return;
    }
    s.latch.store(0, SeqCst);
    s.pid.store(0, SeqCst);
    s.relid.store(0, SeqCst);
    s.in_flight.store(0, SeqCst);
    s.word.store(0, SeqCst);
}

/// Marks slot `i` exiting (or accepting again): see the module's protocol.
pub fn set_exiting(i: usize, datid: u32, exiting: bool) {
    let state = if exiting {
        State::Exiting
    } else {
        State::Accepting
    };
    registry().slots[i].word.store(word(datid, state), SeqCst);
}

/// Records the batch in flight of slot `i` (relid 0: none), and adds
/// `written` rows to its count.
pub fn set_batch(i: usize, relid: u32, rows: u32, written: u64) {
    let s = &registry().slots[i];
    s.relid.store(relid, SeqCst);
    s.in_flight.store(rows, SeqCst);
    s.done.fetch_add(written, SeqCst);
}

/// A worker, as `embed_queue_workers()` shows it.
pub struct Worker {
    pub pid: i32,
    pub datid: u32,
    pub state: State,
    pub relid: u32,
    pub in_flight: u32,
    pub done: u64,
    pub started: i64,
}

/// Every slot in use.
pub fn workers() -> Vec<Worker> {
    registry()
        .slots
        .iter()
        .filter_map(|s| {
            let (datid, state) = unword(s.word.load(SeqCst));
            (state != State::Free).then(|| Worker {
                pid: s.pid.load(SeqCst),
                datid,
                state,
                relid: s.relid.load(SeqCst),
                in_flight: s.in_flight.load(SeqCst),
                done: s.done.load(SeqCst),
                started: s.started.load(SeqCst),
            })
        })
        .collect()
}
