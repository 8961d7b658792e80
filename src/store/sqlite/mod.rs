//! SQLite storage: one writer thread that commits queued jobs in groups, a pool of
//! reader connections, `schema.sql` and its migrations, and a file per topic with its
//! queries, the same file names as `store/postgres/`.

pub mod accounts;
pub mod audit;
pub mod contacts;
pub mod courier;
pub mod files;
pub mod groups;
pub mod import;
pub mod links;
pub mod login;
pub mod operators;
pub mod outbox;
pub mod schema;
pub mod sessions;
pub mod users;

use rusqlite::{params, Connection, OptionalExtension};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::time::Duration;
use std::time::Instant;

use crate::domain::clock::Clock;
use crate::domain::keys::{MessageSeal, PhoneHasher, ServerKeys, LEGACY_SETTING};
use crate::domain::ratelimit::Admission;
use crate::store::allocator;
use crate::store::error::StorageError;

/// All writes go to one connection owned by a dedicated thread, because SQLite admits
/// one writer at a time: a queue in front of it is cheaper than SQLite's busy handler
/// (which sleeps whole milliseconds) and than handing the connection between threads.
/// The thread commits the jobs waiting in the queue together (group commit), each in a
/// savepoint of its own. Readers get their own pool and, thanks to WAL, never wait for
/// the writer.
pub struct SqliteStore {
    writer: mpsc::Sender<WriterMessage>,
    readers: Arc<Readers>,
    /// Set by [`SqliteStore::close`] at shutdown; later calls fail instead of waiting.
    closed: AtomicBool,
    /// The file the connections opened, when the database is a file on disk.
    file: Option<DatabaseFile>,
}

/// The reader connections, shared with the blocking threads that read on them.
struct Readers {
    idle: Mutex<Vec<Connection>>,
    returned: Condvar,
    /// One per reader connection: a read takes one before it takes a blocking thread.
    /// Closed by [`SqliteStore::close`] at shutdown.
    permits: tokio::sync::Semaphore,
}

/// The database file as it was at open. Removing or replacing it leaves the open
/// connections writing to a file nobody can reach any more, while every write still succeeds.
struct DatabaseFile {
    path: std::path::PathBuf,
    identity: FileIdentity,
}

/// Device and inode number: what stays the same while the path names the same file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileIdentity(u64, u64);

impl FileIdentity {
    fn of(path: &std::path::Path) -> std::io::Result<FileIdentity> {
        let metadata = std::fs::metadata(path)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            Ok(FileIdentity(metadata.dev(), metadata.ino()))
        }
        #[cfg(not(unix))]
        {
            let _ = metadata;
            Ok(FileIdentity(0, 0))
        }
    }
}

impl DatabaseFile {
    /// The file at `path` once SQLite has opened it; `None` for a database not on disk.
    fn opened(path: &str) -> Option<DatabaseFile> {
        let path = std::path::PathBuf::from(path);
        FileIdentity::of(&path).ok().map(|identity| DatabaseFile { path, identity })
    }

    /// Whether `path` still names the file the connections have open.
    fn still_linked(&self) -> Result<(), StorageError> {
        let unlinked = |what: &str| {
            StorageError::Unlinked(format!(
                "the database file {} {what} since it was opened: writes go to a file no longer at DATABASE_PATH; restore it and restart",
                self.path.display()
            ))
        };
        match FileIdentity::of(&self.path) {
            Ok(identity) if identity == self.identity => Ok(()),
            Ok(_) => Err(unlinked("was replaced")),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(unlinked("was removed")),
            Err(e) => Err(StorageError::Unlinked(format!("the database file {} cannot be checked: {e}", self.path.display()))),
        }
    }
}

/// Runs a job on the writer connection; answers `Err` if the job failed, or else a
/// reply to call with the outcome of the commit.
type Job = Box<dyn FnOnce(&mut Connection) -> Result<Reply, ()> + Send>;
type Reply = Box<dyn FnOnce(Result<(), StorageError>)>;

enum WriterMessage {
    Run(Job),
    /// Checkpoint, close the connection and stop; answers when done.
    Close(mpsc::Sender<Result<(), StorageError>>),
}

/// Most jobs one commit takes: enough to cover every waiting request, few enough that
/// a reply does not wait long for the others.
const MAX_GROUP: usize = 128;
/// Page cache of the writer. Its misses are served from the operating system's file
/// cache; a larger one raised the peak RSS without making writes measurably faster.
const WRITER_CACHE_KIB: i64 = 4 * 1024;
/// A WAL of this many pages (40 MB) is checkpointed and truncated by the writer right after
/// its commit, so the log starts over instead of growing. The background checkpointer has
/// copied and synced most of it by then, so the writer's checkpoint costs about the same at
/// any size, and a larger WAL makes it rarer than SQLite's default of 1000 pages.
pub const CHECKPOINT_PAGES: i64 = 10_000;
/// New WAL frames (4 KiB pages) that start a background checkpoint round: it copies frames
/// in batches instead of after every commit.
const BACKGROUND_CHECKPOINT_FRAMES: i64 = 1024;
/// A writer idle this long asks for a round for the frames it committed since the last one.
const BACKGROUND_CHECKPOINT_WHEN_IDLE: Duration = Duration::from_secs(1);
/// Pause of the background checkpointer between two rounds, so that under a heavy load
/// its rounds do not follow each other without a break.
const BACKGROUND_CHECKPOINT_PAUSE: Duration = Duration::from_millis(10);
/// After a checkpoint, a WAL file that grew larger (a long reader held it) is cut back to this.
const WAL_SIZE_LIMIT: i64 = 64 * 1024 * 1024;

/// More than the distinct statements of every job together (about 60), so none is prepared twice.
const STATEMENT_CACHE_CAPACITY: usize = 128;

fn connect(path: &str) -> Result<Connection, rusqlite::Error> {
    let conn = allocator::open(path, rusqlite::OpenFlags::default())?;
    // Other processes (an operator's sqlite3 shell, a second instance) may still hold locks.
    conn.busy_timeout(Duration::from_secs(5))?;
    // WAL lets readers run beside the writer; NORMAL sync is durable in WAL mode
    // except for the last transactions on power loss, and avoids an fsync per request.
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    // A deleted account's phone, name, linked addresses and push tokens are overwritten,
    // not left in free space of the file for anyone who copies it.
    conn.pragma_update(None, "secure_delete", "ON")?;
    // rusqlite keeps 16 statements by default, fewer than the writer uses per login:
    // it was preparing about 8 statements per login again.
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE_CAPACITY);
    Ok(conn)
}

impl SqliteStore {
    /// Opens the database file (created if missing), applies the schema, and opens
    /// the writer plus `readers` reader connections. `phones` hashes address books.
    pub fn open(path: &str, readers: usize, phones: &PhoneHasher) -> Result<Arc<SqliteStore>, StorageError> {
        SqliteStore::open_after(path, readers, phones, |_| Ok(()))
    }

    /// [`SqliteStore::open`] with the server's keys, leaving no secret in clear in the database
    /// (see [`remove_secrets_in_clear`]); `had_key` says that it holds a key an earlier release kept.
    pub fn open_without_secrets(path: &str, readers: usize, keys: &ServerKeys, had_key: bool) -> Result<Arc<SqliteStore>, StorageError> {
        SqliteStore::open_after(path, readers, &keys.phones, |conn| remove_secrets_in_clear(conn, &keys.seal, had_key))
    }

    /// [`SqliteStore::open`], running `startup` on the writer connection once the schema is
    /// applied, outside any transaction and before anything else uses the database.
    fn open_after(
        path: &str,
        readers: usize,
        phones: &PhoneHasher,
        startup: impl FnOnce(&mut Connection) -> rusqlite::Result<()>,
    ) -> Result<Arc<SqliteStore>, StorageError> {
        let mut writer = connect(path)?;
        let fresh: bool = writer.query_row("SELECT count(*) = 0 FROM sqlite_master", [], |r| r.get(0))?;
        schema::apply(&mut writer, phones)?;
        if fresh {
            // Created by this release: no secret or code was ever written in clear, nothing to rewrite.
            set_setting(&writer, REWRITTEN_SETTING, &now().to_le_bytes())?;
        }
        startup(&mut writer)?;
        // A WAL left large by a crash or a bulk load is copied back now, not by the first request.
        writer.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        writer.pragma_update(None, "journal_size_limit", WAL_SIZE_LIMIT)?;
        writer.pragma_update(None, "cache_size", -WRITER_CACHE_KIB)?;
        // Each job's savepoint keeps the original of every page it changes in a
        // sub-journal: in memory, not in a temporary file written page by page.
        writer.pragma_update(None, "temp_store", "MEMORY")?;
        let writer = Writer::new(writer);
        let readers = (0..readers.max(1)).map(|_| connect(path)).collect::<Result<Vec<_>, _>>()?;
        let checkpointer = Checkpointer::start(connect(path)?)?;
        let (messages, queue) = mpsc::channel::<WriterMessage>();
        std::thread::Builder::new()
            .name("otpgate-db-writer".into())
            .spawn(move || run_writer(writer, queue, checkpointer))
            .map_err(|e| StorageError::ThreadNotStarted { thread: "writer", error: Arc::new(e) })?;
        Ok(Arc::new(SqliteStore {
            writer: messages,
            readers: Arc::new(Readers {
                permits: tokio::sync::Semaphore::new(readers.len()),
                idle: Mutex::new(readers),
                returned: Condvar::new(),
            }),
            closed: AtomicBool::new(false),
            file: DatabaseFile::opened(path),
        }))
    }

    /// Runs `f` on the writer connection and waits for it without blocking the async worker.
    pub async fn call<R, F>(&self, f: F) -> Result<R, StorageError>
    where
        R: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<R, rusqlite::Error> + Send + 'static,
    {
        let (done, result) = tokio::sync::oneshot::channel();
        self.submit(f, move |r| {
            let _ = done.send(r);
        })?;
        result.await.map_err(|_| self.writer_stopped())?
    }

    /// Runs `f` on the writer connection, blocking this thread until it is done.
    pub fn blocking<R, F>(&self, f: F) -> Result<R, StorageError>
    where
        R: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<R, rusqlite::Error> + Send + 'static,
    {
        let (done, result) = mpsc::channel();
        self.submit(f, move |r| {
            let _ = done.send(r);
        })?;
        result.recv().map_err(|_| self.writer_stopped())?
    }

    fn submit<R: 'static, F>(&self, f: F, reply: impl FnOnce(Result<R, StorageError>) + Send + 'static) -> Result<(), StorageError>
    where
        F: FnOnce(&mut Connection) -> Result<R, rusqlite::Error> + Send + 'static,
    {
        if self.closed.load(Ordering::SeqCst) {
            return Err(closed());
        }
        let queued = Instant::now();
        // What a job logs (the spent SMS budget, say) belongs to the request that queued it.
        let span = tracing::Span::current();
        let job: Job = Box::new(move |conn: &mut Connection| {
            let _request = span.enter();
            crate::domain::metrics::DB_POOL_WAIT.observe(queued.elapsed().as_secs_f64());
            // A panicking job must not take the writer thread, and every later write, with it.
            match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(conn))) {
                Ok(Ok(value)) => Ok(Box::new(move |committed: Result<(), StorageError>| reply(committed.map(|()| value))) as Reply),
                Ok(Err(e)) => {
                    reply(Err(e.into()));
                    Err(())
                }
                Err(_) => {
                    reply(Err(StorageError::Panicked));
                    Err(())
                }
            }
        });
        self.writer.send(WriterMessage::Run(job)).map_err(|_| self.writer_stopped())
    }

    /// Closes the database at shutdown: finishes the queued writes, checkpoints the WAL
    /// into the database file and closes every connection (SQLite then removes the WAL).
    /// Later calls fail at once.
    pub fn close(&self) -> Result<(), StorageError> {
        self.closed.store(true, Ordering::SeqCst);
        for conn in self.readers.close() {
            conn.close().map_err(|(_, e)| StorageError::from(e))?;
        }
        let (done, result) = mpsc::channel();
        self.writer.send(WriterMessage::Close(done)).map_err(|_| self.writer_stopped())?;
        result.recv().map_err(|_| self.writer_stopped())?
    }

    /// Why the writer thread did not take or answer a job: the database was closed, or
    /// else the thread stopped on its own.
    fn writer_stopped(&self) -> StorageError {
        match self.closed.load(Ordering::SeqCst) {
            true => closed(),
            false => StorageError::WriterStopped,
        }
    }

    /// Runs `f` with a reader connection on the blocking thread pool; `f` must not write.
    pub async fn read<R, F>(&self, f: F) -> Result<R, StorageError>
    where
        R: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<R, rusqlite::Error> + Send + 'static,
    {
        let pool_wait = crate::domain::metrics::DB_POOL_WAIT.start_timer();
        // No more blocking threads at a time than reader connections: the others would
        // only wait for a connection, each with its own stack and allocator arena.
        let _permit = self.readers.permits.acquire().await.map_err(|_| closed())?;
        let readers = Arc::clone(&self.readers);
        tokio::task::spawn_blocking(move || readers.read(f, pool_wait))
            .await
            .map_err(|e| StorageError::TaskFailed { task: "database read", error: Arc::new(e) })?
    }

    /// A real write, so readiness fails when the file is read-only, locked or full, and a
    /// look at the file, since a write to a removed or replaced one still succeeds.
    pub async fn probe_write(&self) -> Result<(), StorageError> {
        if let Some(file) = &self.file {
            file.still_linked()?;
        }
        self.call(|conn| {
            conn.execute("INSERT OR REPLACE INTO settings (key, value) VALUES ('readyz_probe', ?1)", [now()])?;
            Ok(())
        })
        .await
    }
}

impl Readers {
    /// Runs `f` on an idle reader connection, waiting for one to come back if need be.
    fn read<R>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<R, rusqlite::Error>,
        pool_wait: prometheus::HistogramTimer,
    ) -> Result<R, StorageError> {
        let mut conn = {
            let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            loop {
                if self.permits.is_closed() {
                    return Err(closed());
                }
                match idle.pop() {
                    Some(conn) => break conn,
                    // A permit usually means an idle connection, but a cancelled read gives its
                    // permit back while its blocking thread still holds the connection.
                    None => idle = self.returned.wait(idle).unwrap_or_else(|p| p.into_inner()),
                }
            }
        };
        pool_wait.observe_duration();
        let result = f(&mut conn);
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).push(conn);
        self.returned.notify_one();
        Ok(result?)
    }

    /// Refuses every later read and hands back the idle connections, to be closed.
    fn close(&self) -> Vec<Connection> {
        self.permits.close();
        let idle = std::mem::take(&mut *self.idle.lock().unwrap_or_else(|p| p.into_inner()));
        self.returned.notify_all();
        idle
    }
}

/// The writer connection, with the size of its WAL as SQLite reports it after each commit.
struct Writer {
    // Declared first so that it is closed before the counter its WAL hook writes to is freed.
    conn: Connection,
    wal_frames: Box<AtomicI64>,
    /// The WAL's frames when the background checkpointer was last asked for a round.
    frames_at_last_round: i64,
}

impl Writer {
    /// Replaces SQLite's automatic checkpoint, itself a WAL hook, with a count of the WAL's
    /// frames: the automatic one gives up without a word when another connection is
    /// checkpointing, and the WAL then grows for as long as that checkpoint takes.
    fn new(conn: Connection) -> Writer {
        let wal_frames = Box::new(AtomicI64::new(0));
        // SAFETY: the counter is boxed, so its address is stable, and it is freed only after
        // the connection is closed (field order), so the hook never writes to freed memory.
        unsafe {
            rusqlite::ffi::sqlite3_wal_hook(
                conn.handle(),
                Some(record_wal_frames),
                std::ptr::from_ref::<AtomicI64>(&wal_frames).cast_mut().cast(),
            );
        }
        Writer { conn, wal_frames, frames_at_last_round: 0 }
    }

    /// Asks the background checkpointer for a round once `BACKGROUND_CHECKPOINT_FRAMES` more
    /// frames are in the WAL: while writes come, rounds follow them, not the clock, so the
    /// work a write costs is the same on a fast machine and a slow one.
    fn wake_checkpointer_if_grown(&mut self, checkpointer: &Checkpointer) {
        let (due, at_last_round) = background_round_due(self.wal_frames.load(Ordering::Relaxed), self.frames_at_last_round);
        self.frames_at_last_round = at_last_round;
        if due {
            checkpointer.wake();
        }
    }

    /// Whether frames were committed since the background checkpointer's last round.
    fn has_uncopied_frames(&self) -> bool {
        self.wal_frames.load(Ordering::Relaxed) > self.frames_at_last_round
    }

    /// Asks for a round for the frames committed since the last one: once the writes stop,
    /// the database file catches up with them.
    fn wake_checkpointer_now(&mut self, checkpointer: &Checkpointer) {
        self.frames_at_last_round = self.wal_frames.load(Ordering::Relaxed);
        checkpointer.wake();
    }

    /// Checkpoints and truncates the WAL once it holds `CHECKPOINT_PAGES`. Between two of
    /// the writer's commits no write is under way, and the background checkpointer waits for
    /// its turn, so the checkpoint completes and the WAL starts over.
    fn checkpoint_if_full(&self, checkpointer: &Checkpointer) {
        if self.wal_frames.load(Ordering::Relaxed) < CHECKPOINT_PAGES {
            return;
        }
        let _turn = checkpointer.turn();
        // TRUNCATE waits (busy timeout) for readers still on older frames; a reader that holds
        // on past that leaves the WAL as it is, and the next commit tries again.
        match self.conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get::<_, i64>(0)) {
            Ok(0) => self.wal_frames.store(0, Ordering::Relaxed),
            Ok(_) => tracing::debug!("WAL checkpoint postponed: a reader is still using the WAL"),
            Err(e) => tracing::warn!("WAL checkpoint failed: {e}"),
        }
    }
}

/// Whether a WAL of `frames` frames is due a background round, `at_last_round` frames
/// having been there at the last one; and the frames to count the next round from.
fn background_round_due(frames: i64, at_last_round: i64) -> (bool, i64) {
    // Fewer frames than at the last round: the WAL started over.
    let at_last_round = if frames < at_last_round { 0 } else { at_last_round };
    if frames - at_last_round >= BACKGROUND_CHECKPOINT_FRAMES {
        (true, frames)
    } else {
        (false, at_last_round)
    }
}

unsafe extern "C" fn record_wal_frames(
    counter: *mut std::ffi::c_void,
    _db: *mut rusqlite::ffi::sqlite3,
    _schema: *const std::ffi::c_char,
    frames: std::ffi::c_int,
) -> std::ffi::c_int {
    // SAFETY: `counter` is the boxed counter registered in `Writer::new`, alive while the connection is.
    unsafe { (*counter.cast::<AtomicI64>()).store(i64::from(frames), Ordering::Relaxed) };
    rusqlite::ffi::SQLITE_OK
}

/// The writer thread: takes every job waiting in the queue and commits them together.
fn run_writer(mut writer: Writer, queue: mpsc::Receiver<WriterMessage>, checkpointer: Checkpointer) {
    let mut group: Vec<Job> = Vec::with_capacity(MAX_GROUP);
    loop {
        let message = if writer.has_uncopied_frames() {
            match queue.recv_timeout(BACKGROUND_CHECKPOINT_WHEN_IDLE) {
                Ok(message) => message,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    writer.wake_checkpointer_now(&checkpointer);
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            }
        } else {
            match queue.recv() {
                Ok(message) => message,
                Err(_) => return,
            }
        };
        let mut close = None;
        let mut next = Some(message);
        while let Some(message) = next.take() {
            match message {
                WriterMessage::Run(job) => group.push(job),
                WriterMessage::Close(done) => {
                    close = Some(done);
                    break;
                }
            }
            if group.len() < MAX_GROUP {
                next = queue.try_recv().ok();
            }
        }
        commit_group(&mut writer.conn, group.drain(..));
        writer.checkpoint_if_full(&checkpointer);
        writer.wake_checkpointer_if_grown(&checkpointer);
        if let Some(done) = close {
            checkpointer.stop();
            let _ = done.send(checkpoint_and_close(writer.conn));
            return;
        }
    }
}

/// Copies committed WAL frames into the database file on a thread of its own, with the
/// two fsyncs a checkpoint makes. The writer's own checkpoint (at `CHECKPOINT_PAGES`)
/// then finds most frames copied and synced already, instead of stalling every request
/// behind the copy and its fsyncs. The writer still makes the last
/// checkpoint, because only a checkpoint between two of its commits can complete, and
/// only a complete one lets the WAL start over.
struct Checkpointer {
    wake: mpsc::SyncSender<()>,
    thread: std::thread::JoinHandle<()>,
    /// Held by whichever checkpoints, the background thread or the writer: SQLite runs one
    /// checkpoint at a time and refuses a second one instead of waiting for the first.
    turn: Arc<Mutex<()>>,
}

impl Checkpointer {
    fn start(conn: Connection) -> Result<Checkpointer, StorageError> {
        // One pending wake-up is enough: a round copies everything committed before it.
        let (wake, woken) = mpsc::sync_channel::<()>(1);
        let turn = Arc::new(Mutex::new(()));
        let background_turn = Arc::clone(&turn);
        let thread = std::thread::Builder::new()
            .name("otpgate-db-checkpoint".into())
            .spawn(move || {
                // (frames in the WAL, frames copied) after the last round.
                let mut last = (0, 0);
                while woken.recv().is_ok() {
                    // PASSIVE: never waits for the writer or readers; it copies what it can.
                    let copied = {
                        let _turn = background_turn.lock().unwrap_or_else(|p| p.into_inner());
                        conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| Ok((r.get::<_, i64>(1)?, r.get::<_, i64>(2)?)))
                    };
                    let round = copied.map_err(|e| e.to_string()).and_then(|copied| {
                        if copied == last {
                            Ok(copied)
                        } else {
                            sync_database_file(&conn).map(|()| copied)
                        }
                    });
                    match round {
                        Ok(copied) => last = copied,
                        Err(e) => tracing::warn!("background checkpoint failed: {e}"),
                    }
                    std::thread::sleep(BACKGROUND_CHECKPOINT_PAUSE);
                }
            })
            .map_err(|e| StorageError::ThreadNotStarted { thread: "checkpointer", error: Arc::new(e) })?;
        Ok(Checkpointer { wake, thread, turn })
    }

    /// Waits for a background round under way to end, and keeps the next one from starting.
    fn turn(&self) -> std::sync::MutexGuard<'_, ()> {
        self.turn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Asks for a round after a commit; does nothing if one is pending already.
    fn wake(&self) {
        let _ = self.wake.try_send(());
    }

    /// Ends the thread and closes its connection, so that the writer's connection is the
    /// last one open and SQLite removes the WAL when it closes.
    fn stop(self) {
        // Without a sender left, the thread's wait for a wake-up ends.
        drop(self.wake);
        let _ = self.thread.join();
    }
}

/// Syncs the database file of `conn` through SQLite's own file handle. A checkpoint syncs
/// the file only when it has copied every frame, which one beside a busy writer never has;
/// without this, the writer's checkpoint synced all that the background rounds copied.
/// (Opening the file here would not do: closing a second descriptor of it drops every
/// POSIX lock SQLite holds on it in this process.)
fn sync_database_file(conn: &Connection) -> Result<(), String> {
    use rusqlite::ffi;
    let mut file: *mut ffi::sqlite3_file = std::ptr::null_mut();
    // SAFETY: the connection is open and used by this thread only. FILE_POINTER hands back
    // the main database's open file, valid while the connection is, and xSync is the VFS
    // method SQLite calls on it for the same purpose.
    let rc = unsafe {
        let found = ffi::sqlite3_file_control(conn.handle(), c"main".as_ptr(), ffi::SQLITE_FCNTL_FILE_POINTER, (&raw mut file).cast());
        match (found, file.as_ref().and_then(|f| f.pMethods.as_ref()).and_then(|m| m.xSync)) {
            (ffi::SQLITE_OK, Some(sync)) => sync(file, ffi::SQLITE_SYNC_NORMAL),
            (ffi::SQLITE_OK, None) => return Err("the database file has no sync method".into()),
            (rc, _) => rc,
        }
    };
    match rc {
        ffi::SQLITE_OK => Ok(()),
        rc => Err(format!("syncing the database file failed: {}", ffi::Error::new(rc))),
    }
}

/// Runs the jobs in one transaction, each inside a savepoint that is rolled back if the
/// job fails, and answers the jobs that succeeded only once the transaction is committed.
fn commit_group(conn: &mut Connection, jobs: impl Iterator<Item = Job>) {
    let mut waiting: Vec<Reply> = Vec::new();
    let mut grouped = false;
    for job in jobs {
        // Without the group transaction (another process held the write lock past the busy
        // timeout), the job's savepoint is a transaction of its own, committed by RELEASE.
        grouped = grouped || run(conn, "BEGIN IMMEDIATE").is_ok();
        if let Err(e) = run(conn, "SAVEPOINT job") {
            tracing::error!("database savepoint failed: {e}");
        }
        match job(conn) {
            Ok(reply) => match run(conn, "RELEASE job") {
                Ok(()) if grouped => waiting.push(reply),
                released => reply(released.map_err(StorageError::from)),
            },
            // The job has answered with its error already.
            Err(()) => {
                let _ = run(conn, "ROLLBACK TO job").and_then(|()| run(conn, "RELEASE job"));
            }
        }
        // Some errors (disk full, I/O) make SQLite roll the whole transaction back: the
        // jobs run in it so far are lost and are told so.
        if grouped && conn.is_autocommit() {
            answer(&mut waiting, Err(StorageError::RolledBack));
            grouped = false;
        }
    }
    if grouped {
        let committed = run(conn, "COMMIT").map_err(StorageError::from);
        if committed.is_err() {
            let _ = run(conn, "ROLLBACK");
        }
        answer(&mut waiting, committed);
    }
}

/// Runs an admission check (a rate limit) inside a writer job. A local limit answers at
/// once; a shared one (Redis) holds the writer for its round trip, driven by the runtime
/// of the request that asked.
pub(in crate::store) fn admitted<E>(runtime: &tokio::runtime::Handle, mut admission: Admission<E>) -> Result<(), E> {
    // Inside the runtime's context: a shared check sets a timer on it.
    let polled = {
        let _context = runtime.enter();
        futures_util::FutureExt::now_or_never(&mut admission)
    };
    match polled {
        Some(answer) => answer,
        None => runtime.block_on(admission),
    }
}

/// Runs one statement from the statement cache: these run several times per request.
fn run(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(|_| ())
}

/// Runs `f` atomically: in a savepoint that is released when `f` succeeds and rolled
/// back when it fails. Unlike rusqlite's `savepoint()`, whose statements are prepared
/// anew each time, these come from the statement cache: they run several times per login.
pub fn atomically<T>(conn: &Connection, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> rusqlite::Result<T> {
    run(conn, "SAVEPOINT atomically")?;
    match f(conn) {
        Ok(value) => run(conn, "RELEASE atomically").map(|()| value),
        Err(e) => {
            let _ = run(conn, "ROLLBACK TO atomically").and_then(|()| run(conn, "RELEASE atomically"));
            Err(e)
        }
    }
}

/// Like [`atomically`], but a refusal (`Ok(Err(_))`) also rolls back what `f` wrote:
/// `f` may write first and decide from what its writes changed.
pub fn atomically_unless_refused<T, E>(
    conn: &Connection,
    f: impl FnOnce(&Connection) -> rusqlite::Result<Result<T, E>>,
) -> rusqlite::Result<Result<T, E>> {
    run(conn, "SAVEPOINT atomically")?;
    let outcome = f(conn);
    if let Ok(Ok(_)) = outcome {
        return run(conn, "RELEASE atomically").and(outcome);
    }
    let undone = run(conn, "ROLLBACK TO atomically").and_then(|()| run(conn, "RELEASE atomically"));
    match outcome {
        Ok(refused) => undone.map(|()| refused),
        Err(e) => Err(e),
    }
}

fn answer(waiting: &mut Vec<Reply>, outcome: Result<(), StorageError>) {
    for reply in waiting.drain(..) {
        reply(outcome.clone());
    }
}

fn checkpoint_and_close(conn: Connection) -> Result<(), StorageError> {
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    conn.close().map_err(|(_, e)| StorageError::from(e))
}

fn closed() -> StorageError {
    StorageError::Closed
}

/// Wall-clock unix seconds, for the markers the store writes.
fn now() -> i64 {
    Clock::system().now()
}

/// The value stored under `key` in the database at `path`, read before the database is
/// opened for service; `None` when there is no database or no such setting yet.
pub fn setting_before_open(path: &str, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
    let conn = match allocator::open(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE) {
        Ok(conn) => conn,
        Err(rusqlite::Error::SqliteFailure(e, _)) if e.code == rusqlite::ErrorCode::CannotOpen => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    let has_settings: bool =
        conn.query_row("SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = 'settings'", [], |r| r.get(0))?;
    if !has_settings {
        return Ok(None);
    }
    Ok(setting(&conn, key)?)
}

/// The value stored under `key`, if any.
pub(in crate::store) fn setting(conn: &Connection, key: &str) -> rusqlite::Result<Option<Vec<u8>>> {
    conn.prepare_cached("SELECT value FROM settings WHERE key = ?1")?.query_row([key], |r| r.get(0)).optional()
}

pub(in crate::store) fn set_setting(conn: &Connection, key: &str, value: &[u8]) -> rusqlite::Result<()> {
    conn.prepare_cached("INSERT OR REPLACE INTO settings (key, value) VALUES (?1, ?2)")?.execute(params![key, value])?;
    Ok(())
}

pub(in crate::store) fn remove_setting(conn: &Connection, key: &str) -> rusqlite::Result<()> {
    conn.prepare_cached("DELETE FROM settings WHERE key = ?1")?.execute([key])?;
    Ok(())
}

/// Rewrites the database file and empties the WAL, so that nothing deleted before
/// (a secret, text once kept in clear) survives in a free page or an old WAL frame.
pub(in crate::store) fn rewrite_file(conn: &mut Connection) -> rusqlite::Result<()> {
    conn.execute_batch("VACUUM")?;
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
}

/// Marks a database whose file was rewritten once no secret or code was left in clear in it.
const REWRITTEN_SETTING: &str = "rewritten_without_secrets";

/// Leaves no secret in clear in the database: deletes a key kept there by an earlier
/// release (once it is in its key file), encrypts messages queued in clear, and rewrites
/// the file once so no old page keeps either.
fn remove_secrets_in_clear(conn: &mut rusqlite::Connection, seal: &MessageSeal, had_key: bool) -> rusqlite::Result<()> {
    let sealed = courier::seal_rows_in_clear(conn, seal)?;
    remove_setting(conn, LEGACY_SETTING)?;
    if had_key || sealed > 0 || setting(conn, REWRITTEN_SETTING)?.is_none() {
        rewrite_file(conn)?;
        set_setting(conn, REWRITTEN_SETTING, &now().to_le_bytes())?;
    }
    if sealed > 0 {
        tracing::info!(messages = sealed, "encrypted the messages an earlier release kept in clear, and rewrote the database file");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn background_rounds_follow_the_frames_written() {
        let step = BACKGROUND_CHECKPOINT_FRAMES;
        assert_eq!(background_round_due(0, 0), (false, 0));
        assert_eq!(background_round_due(step - 1, 0), (false, 0));
        assert_eq!(background_round_due(step, 0), (true, step));
        // Counted from the last round, not from the start of the WAL.
        assert_eq!(background_round_due(2 * step - 1, step), (false, step));
        assert_eq!(background_round_due(2 * step + 5, step), (true, 2 * step + 5));
        // After the writer's checkpoint the WAL starts over: counting does too.
        assert_eq!(background_round_due(3, 2 * step), (false, 0));
        assert_eq!(background_round_due(step, 2 * step), (true, step));
    }
}
