//! The SQLite [`GateStore`]: one file, WAL journal, a busy timeout, and a single writer
//! connection, so every read-decide-write step runs alone and no client ever sees "database is
//! locked". The file and its directory are created readable by their owner only.

use std::fs::{DirBuilder, OpenOptions, Permissions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use sqlx::pool::PoolConnection;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Connection, Row, Sqlite, SqliteConnection, SqlitePool};

use super::policy::{GuessState, SendState};
use super::{
    BlockRecord, GateStore, GuessBudget, GuessClaim, GuessRefusal, Pruned, Retention, ScheduleRead,
    SendClaim, SendRecord, SendSchedule, SendWait, SessionRecord, StatsScope, StoreError,
};
use crate::abuse::{BlockKind, SendStats};
use crate::domain::{NumberHash, SessionHash};

/// Write-ahead log pages at which SQLite checkpoints inside a commit (its default is 1,000):
/// about 40 MiB of log, reached only when the checkpoint job falls behind.
const BACKSTOP_CHECKPOINT_PAGES: u32 = 10_000;

/// The per-number state kept in one SQLite file.
#[derive(Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    schedule: SendSchedule,
    guesses: GuessBudget,
    /// The file the store opened, to notice when it is deleted or replaced underneath.
    file: Option<FileIdentity>,
    /// How the pool connects, for the checkpoint job's own connection.
    options: SqliteConnectOptions,
}

/// A file's path and inode: a deleted file keeps working through the open handle, but its
/// writes would vanish at the next start, so the store refuses them instead.
#[derive(Clone, Debug)]
struct FileIdentity {
    path: std::path::PathBuf,
    device: u64,
    inode: u64,
}

impl FileIdentity {
    fn of(path: &Path) -> Option<FileIdentity> {
        use std::os::unix::fs::MetadataExt;
        let metadata = std::fs::metadata(path).ok()?;
        Some(FileIdentity {
            path: path.to_owned(),
            device: metadata.dev(),
            inode: metadata.ino(),
        })
    }

    fn check(&self) -> Result<(), sqlx::Error> {
        match FileIdentity::of(&self.path) {
            Some(now) if now.device == self.device && now.inode == self.inode => Ok(()),
            _ => Err(sqlx::Error::Io(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "the database file was deleted or replaced while the gate ran",
            ))),
        }
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database and brings its schema up to date.
    ///
    /// # Errors
    /// When the file cannot be created or opened, or a migration fails.
    pub async fn open(
        url: &str,
        busy_timeout: Duration,
        schedule: SendSchedule,
        guesses: GuessBudget,
    ) -> anyhow::Result<SqliteStore> {
        let options = SqliteConnectOptions::from_str(url)
            .with_context(|| format!("SIGNAL_GATE_DATABASE__URL is not a SQLite URL: {url}"))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            // Checkpoints are the job of `checkpoint_on_schedule`; SQLite's own, inside a
            // commit, is left as a backstop should that job fall behind.
            .pragma("wal_autocheckpoint", BACKSTOP_CHECKPOINT_PAGES.to_string())
            .busy_timeout(busy_timeout);
        prepare_owner_only_file(options.get_filename())?;
        let file = FileIdentity::of(options.get_filename());
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            // A local file needs no liveness ping before each use; the ping was a second trip
            // to SQLite's worker thread for every statement. A deleted or replaced file is
            // caught by `file_intact` instead.
            .test_before_acquire(false)
            .acquire_timeout(busy_timeout)
            .connect_with(options.clone())
            .await
            .context("could not open the database")?;
        sqlx::migrate!("./migrations")
            .run(&pool)
            .await
            .context("database migration failed")?;
        Ok(SqliteStore {
            pool,
            schedule,
            guesses,
            file,
            options,
        })
    }

    /// Copies the write-ahead log into the database file every `interval`, on a connection of
    /// its own, for as long as the process runs.
    ///
    /// SQLite otherwise checkpoints inside whichever commit fills the log past its threshold,
    /// and a checkpoint syncs the file to disk: about 5 ms added to one approved register in a
    /// hundred on the benchmark machine, which was most of its p99 (docs/benchmarks.md). A
    /// passive checkpoint never waits for the pool's connection, nor holds it up.
    pub async fn checkpoint_on_schedule(self, interval: Duration) {
        let mut ticks = tokio::time::interval(interval);
        let mut connection = None;
        loop {
            ticks.tick().await;
            if connection.is_none() {
                connection = SqliteConnection::connect_with(&self.options)
                    .await
                    .inspect_err(|error| {
                        tracing::warn!(error = %error, "could not open the checkpoint connection");
                    })
                    .ok();
            }
            let Some(open) = connection.as_mut() else {
                continue;
            };
            let checkpoint = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)");
            if let Err(error) = checkpoint.execute(open).await {
                tracing::warn!(error = %error, "checkpoint failed; will reconnect and try again");
                connection = None;
            }
        }
    }

    /// Fails when the database file is no longer the one opened.
    fn file_intact(&self) -> Result<(), sqlx::Error> {
        self.file.as_ref().map_or(Ok(()), FileIdentity::check)
    }

    /// The pool, for maintenance jobs and health checks.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}

/// Creates the directory (0700) and the file (0600) before SQLite does, so neither is ever
/// readable by others, whatever the umask.
fn prepare_owner_only_file(path: &Path) -> anyhow::Result<()> {
    let name = path.to_string_lossy();
    if name.is_empty() || name == ":memory:" {
        return Ok(());
    }
    if let Some(dir) = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty() && !d.exists())
    {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| {
                format!("could not create the database directory {}", dir.display())
            })?;
    }
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("could not create the database file {}", path.display()))?;
    std::fs::set_permissions(path, Permissions::from_mode(0o600))
        .with_context(|| format!("could not make {} owner-only", path.display()))
}

fn as_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn as_u64(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

/// Replaces the number's schedule `before` with `after` in one statement, if the row still
/// holds `before`; `None` is no row. False when the row holds something else. Claims write a
/// new state this way, and a release puts back the one its claim replaced.
async fn swap_send_state(
    conn: &mut SqliteConnection,
    number: &NumberHash,
    before: Option<SendState>,
    after: Option<SendState>,
) -> Result<bool, sqlx::Error> {
    // Both states are bound whatever the statement uses; a missing one is the other's copy.
    let (Some(seen), Some(new)) = (before.or(after), after.or(before)) else {
        return Ok(true);
    };
    let statement = match (before, after) {
        (None, _) => {
            "INSERT INTO send_schedules (number_hash, window_start, sends, next_send_at)
             VALUES (?1, ?2, ?3, ?4) ON CONFLICT (number_hash) DO NOTHING"
        }
        (Some(_), Some(_)) => {
            "UPDATE send_schedules SET window_start = ?2, sends = ?3, next_send_at = ?4
             WHERE number_hash = ?1 AND window_start = ?5 AND sends = ?6 AND next_send_at = ?7"
        }
        (Some(_), None) => {
            "DELETE FROM send_schedules
             WHERE number_hash = ?1 AND window_start = ?5 AND sends = ?6 AND next_send_at = ?7"
        }
    };
    let written = sqlx::query(statement)
        .bind(&number.as_bytes()[..])
        .bind(as_i64(new.window_start))
        .bind(i64::from(new.sends))
        .bind(as_i64(new.next_send_at))
        .bind(as_i64(seen.window_start))
        .bind(i64::from(seen.sends))
        .bind(as_i64(seen.next_send_at))
        .execute(&mut *conn)
        .await?;
    Ok(written.rows_affected() == 1)
}

fn send_state(row: &sqlx::sqlite::SqliteRow) -> Result<SendState, sqlx::Error> {
    Ok(SendState {
        window_start: as_u64(row.try_get("window_start")?),
        sends: row
            .try_get::<i64, _>("sends")?
            .clamp(0, i64::from(u32::MAX)) as u32,
        next_send_at: as_u64(row.try_get("next_send_at")?),
    })
}

/// One write transaction on the pool's connection.
///
/// It begins with `BEGIN IMMEDIATE`, which takes the write lock at once, where SQLite's busy
/// timeout applies; a deferred transaction that reads and then writes gets `SQLITE_BUSY`
/// without waiting when another process holds the lock.
///
/// A transaction that is neither committed nor rolled back (an error, a failed `COMMIT`, a
/// cancelled request) closes its connection instead of returning it to the pool, and SQLite
/// rolls back on close. After a failed `COMMIT` (a full disk, an I/O error) SQLite may or may
/// not have rolled back already; sqlx's own transactions then lose count of what is open, and
/// every later write went into a transaction that was never committed, while clients were told
/// 200. A fresh connection starts clean.
struct WriteTransaction {
    connection: PoolConnection<Sqlite>,
    open: bool,
}

impl WriteTransaction {
    async fn begin(pool: &SqlitePool) -> Result<WriteTransaction, sqlx::Error> {
        let mut transaction = WriteTransaction {
            connection: pool.acquire().await?,
            open: true,
        };
        sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut *transaction.connection)
            .await?;
        Ok(transaction)
    }

    async fn commit(mut self) -> Result<(), sqlx::Error> {
        sqlx::query("COMMIT").execute(&mut *self.connection).await?;
        self.open = false;
        Ok(())
    }

    async fn rollback(mut self) -> Result<(), sqlx::Error> {
        sqlx::query("ROLLBACK")
            .execute(&mut *self.connection)
            .await?;
        self.open = false;
        Ok(())
    }
}

impl std::ops::Deref for WriteTransaction {
    type Target = SqliteConnection;

    fn deref(&self) -> &SqliteConnection {
        &self.connection
    }
}

impl std::ops::DerefMut for WriteTransaction {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        &mut self.connection
    }
}

impl Drop for WriteTransaction {
    fn drop(&mut self) {
        if self.open {
            self.connection.close_on_drop();
        }
    }
}

impl SqliteStore {
    async fn read_send_state(
        &self,
        conn: &mut sqlx::SqliteConnection,
        number: &NumberHash,
    ) -> Result<Option<SendState>, sqlx::Error> {
        let row = sqlx::query(
            "SELECT window_start, sends, next_send_at FROM send_schedules WHERE number_hash = ?",
        )
        .bind(&number.as_bytes()[..])
        .fetch_optional(&mut *conn)
        .await?;
        row.as_ref().map(send_state).transpose()
    }

    /// Claims the slot after `before` if the row still holds `before`: `Err(Some(wait))` when
    /// the schedule refuses, `Err(None)` when the row holds something else.
    async fn claim_from(
        &self,
        conn: &mut SqliteConnection,
        number: &NumberHash,
        now: u64,
        before: Option<SendState>,
    ) -> Result<Result<SendClaim, Option<SendWait>>, sqlx::Error> {
        let after = match self.schedule.decide(before, now) {
            Ok(after) => after,
            Err(wait) => return Ok(Err(Some(wait))),
        };
        if !swap_send_state(conn, number, before, Some(after)).await? {
            return Ok(Err(None));
        }
        Ok(Ok(SendClaim {
            number: *number,
            before,
            after,
        }))
    }

    /// The claim as one write transaction, for when the row changed between read and write.
    async fn claim_send_in_transaction(
        &self,
        number: &NumberHash,
        now: u64,
    ) -> Result<Result<SendClaim, SendWait>, StoreError> {
        let mut tx = WriteTransaction::begin(&self.pool).await?;
        let before = self.read_send_state(&mut tx, number).await?;
        let after = match self.schedule.decide(before, now) {
            Ok(after) => after,
            Err(wait) => {
                tx.rollback().await?;
                return Ok(Err(wait));
            }
        };
        sqlx::query(
            "INSERT INTO send_schedules (number_hash, window_start, sends, next_send_at)
             VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (number_hash) DO UPDATE
             SET window_start = ?2, sends = ?3, next_send_at = ?4",
        )
        .bind(&number.as_bytes()[..])
        .bind(as_i64(after.window_start))
        .bind(i64::from(after.sends))
        .bind(as_i64(after.next_send_at))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Ok(SendClaim {
            number: *number,
            before,
            after,
        }))
    }
}

#[async_trait]
impl GateStore for SqliteStore {
    async fn read_schedule(
        &self,
        number: &NumberHash,
        now: u64,
    ) -> Result<ScheduleRead, StoreError> {
        self.file_intact()?;
        let mut conn = self.pool.acquire().await?;
        let state = self.read_send_state(&mut conn, number).await?;
        Ok(ScheduleRead {
            state,
            wait: self.schedule.decide(state, now).err(),
        })
    }

    /// One statement on one connection when `seen` still holds, two when the schedule must be
    /// read: the new state is written only if the row holds what was read. The four of a
    /// write transaction (BEGIN, SELECT, UPSERT, COMMIT) were half of an approved register's
    /// time in the gate (docs/benchmarks.md). The pool's one connection is held throughout,
    /// so within the process only this request can change the row; when another process
    /// (`signal-gate admin`) did, the claim is made again inside a transaction.
    async fn claim_send(
        &self,
        number: &NumberHash,
        now: u64,
        seen: Option<&ScheduleRead>,
    ) -> Result<Result<SendClaim, SendWait>, StoreError> {
        self.file_intact()?;
        let mut conn = self.pool.acquire().await?;
        if let Some(read) = seen {
            if let Ok(claim) = self.claim_from(&mut conn, number, now, read.state).await? {
                return Ok(Ok(claim));
            }
        }
        let before = self.read_send_state(&mut conn, number).await?;
        match self.claim_from(&mut conn, number, now, before).await? {
            Ok(claim) => Ok(Ok(claim)),
            Err(Some(wait)) => Ok(Err(wait)),
            Err(None) => {
                drop(conn);
                self.claim_send_in_transaction(number, now).await
            }
        }
    }

    async fn release_send(&self, claim: &SendClaim) -> Result<(), StoreError> {
        // Only undo our own write: the row must still hold exactly what the claim wrote.
        let mut conn = self.pool.acquire().await?;
        swap_send_state(&mut conn, &claim.number, Some(claim.after), claim.before).await?;
        Ok(())
    }

    async fn create_session(
        &self,
        session: &SessionHash,
        number: &NumberHash,
        now: u64,
        expires_at: u64,
    ) -> Result<(), StoreError> {
        self.file_intact()?;
        // signal-server may hand out the same id again only for the same session; keep the
        // first owner rather than letting a second number take it over.
        sqlx::query(
            "INSERT INTO sessions (session_hash, number_hash, created_at, expires_at)
             VALUES (?, ?, ?, ?) ON CONFLICT (session_hash) DO NOTHING",
        )
        .bind(&session.as_bytes()[..])
        .bind(&number.as_bytes()[..])
        .bind(as_i64(now))
        .bind(as_i64(expires_at))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn find_session(
        &self,
        session: &SessionHash,
    ) -> Result<Option<SessionRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT number_hash, expires_at, wrong_codes, verified_at
             FROM sessions WHERE session_hash = ?",
        )
        .bind(&session.as_bytes()[..])
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let number: Vec<u8> = row.try_get("number_hash")?;
        let Some(number) = NumberHash::from_bytes(&number) else {
            return Ok(None);
        };
        Ok(Some(SessionRecord {
            number,
            expires_at: as_u64(row.try_get("expires_at")?),
            wrong_codes: row.try_get::<i64, _>("wrong_codes")?.clamp(0, 1 << 20) as u32,
            verified: row.try_get::<Option<i64>, _>("verified_at")?.is_some(),
        }))
    }

    async fn claim_guess(
        &self,
        session: &SessionHash,
        number: &NumberHash,
        now: u64,
    ) -> Result<Result<GuessClaim, GuessRefusal>, StoreError> {
        self.file_intact()?;
        let mut tx = WriteTransaction::begin(&self.pool).await?;
        let session_wrong: i64 =
            sqlx::query_scalar("SELECT wrong_codes FROM sessions WHERE session_hash = ?")
                .bind(&session.as_bytes()[..])
                .fetch_optional(&mut *tx)
                .await?
                .unwrap_or(0);
        let number_row =
            sqlx::query("SELECT window_start, count FROM wrong_codes WHERE number_hash = ?")
                .bind(&number.as_bytes()[..])
                .fetch_optional(&mut *tx)
                .await?;
        let number_state = match number_row {
            Some(row) => Some(GuessState {
                window_start: as_u64(row.try_get("window_start")?),
                count: row.try_get::<i64, _>("count")?.clamp(0, 1 << 20) as u32,
            }),
            None => None,
        };
        let session_wrong = session_wrong.clamp(0, 1 << 20) as u32;
        let after = match self.guesses.decide(number_state, session_wrong, now) {
            Ok(after) => after,
            Err(refusal) => {
                tx.rollback().await?;
                return Ok(Err(refusal));
            }
        };
        sqlx::query("UPDATE sessions SET wrong_codes = wrong_codes + 1 WHERE session_hash = ?")
            .bind(&session.as_bytes()[..])
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO wrong_codes (number_hash, window_start, count) VALUES (?1, ?2, ?3)
             ON CONFLICT (number_hash) DO UPDATE SET window_start = ?2, count = ?3",
        )
        .bind(&number.as_bytes()[..])
        .bind(as_i64(after.window_start))
        .bind(i64::from(after.count))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Ok(GuessClaim {
            session: *session,
            number: *number,
            after,
        }))
    }

    async fn release_guess(&self, claim: &GuessClaim) -> Result<(), StoreError> {
        let mut tx = WriteTransaction::begin(&self.pool).await?;
        sqlx::query(
            "UPDATE sessions SET wrong_codes = wrong_codes - 1
             WHERE session_hash = ? AND wrong_codes > 0",
        )
        .bind(&claim.session.as_bytes()[..])
        .execute(&mut *tx)
        .await?;
        // A window that has rolled over since the claim has nothing of ours to give back.
        sqlx::query(
            "UPDATE wrong_codes SET count = count - 1
             WHERE number_hash = ? AND window_start = ? AND count > 0",
        )
        .bind(&claim.number.as_bytes()[..])
        .bind(as_i64(claim.after.window_start))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn mark_verified(&self, session: &SessionHash, now: u64) -> Result<(), StoreError> {
        self.file_intact()?;
        let mut tx = WriteTransaction::begin(&self.pool).await?;
        sqlx::query(
            "UPDATE sessions SET verified_at = ? WHERE session_hash = ? AND verified_at IS NULL",
        )
        .bind(as_i64(now))
        .bind(&session.as_bytes()[..])
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE sends SET verified = 1 WHERE session_hash = ?")
            .bind(&session.as_bytes()[..])
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn number_state(
        &self,
        number: &NumberHash,
    ) -> Result<(Option<SendState>, Option<GuessState>), StoreError> {
        let mut conn = self.pool.acquire().await?;
        let schedule = self.read_send_state(&mut conn, number).await?;
        let row = sqlx::query("SELECT window_start, count FROM wrong_codes WHERE number_hash = ?")
            .bind(&number.as_bytes()[..])
            .fetch_optional(&mut *conn)
            .await?;
        let wrong = match row {
            Some(row) => Some(GuessState {
                window_start: as_u64(row.try_get("window_start")?),
                count: row.try_get::<i64, _>("count")?.clamp(0, 1 << 20) as u32,
            }),
            None => None,
        };
        Ok((schedule, wrong))
    }

    async fn probe_write(&self, probe: &NumberHash) -> Result<(), StoreError> {
        self.file_intact()?;
        let mut tx = WriteTransaction::begin(&self.pool).await?;
        sqlx::query(
            "INSERT INTO wrong_codes (number_hash, window_start, count) VALUES (?1, 0, 0)
             ON CONFLICT (number_hash) DO UPDATE SET count = 0",
        )
        .bind(&probe.as_bytes()[..])
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM wrong_codes WHERE number_hash = ?")
            .bind(&probe.as_bytes()[..])
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn clear_number(&self, number: &NumberHash) -> Result<bool, StoreError> {
        self.file_intact()?;
        let mut tx = WriteTransaction::begin(&self.pool).await?;
        let mut cleared = 0;
        for statement in [
            "DELETE FROM send_schedules WHERE number_hash = ?",
            "DELETE FROM wrong_codes WHERE number_hash = ?",
            "UPDATE sessions SET wrong_codes = 0 WHERE number_hash = ? AND wrong_codes > 0",
        ] {
            let done = sqlx::query(statement)
                .bind(&number.as_bytes()[..])
                .execute(&mut *tx)
                .await?;
            cleared += done.rows_affected();
        }
        tx.commit().await?;
        Ok(cleared > 0)
    }

    async fn put_block(&self, block: &BlockRecord) -> Result<(), StoreError> {
        self.file_intact()?;
        sqlx::query(
            "INSERT INTO blocks (kind, key, until, reason, created_at) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (kind, key) DO UPDATE
             SET until = max(until, ?3), reason = ?4",
        )
        .bind(block.kind.as_str())
        .bind(&block.key)
        .bind(as_i64(block.until))
        .bind(&block.reason)
        .bind(as_i64(block.created_at))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn delete_block(&self, kind: BlockKind, key: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM blocks WHERE kind = ? AND key = ?")
            .bind(kind.as_str())
            .bind(key)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn active_blocks(&self, now: u64) -> Result<Vec<BlockRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT kind, key, until, reason, created_at FROM blocks WHERE until > ?
             ORDER BY kind, key",
        )
        .bind(as_i64(now))
        .fetch_all(&self.pool)
        .await?;
        let mut blocks = Vec::with_capacity(rows.len());
        for row in rows {
            let kind: String = row.try_get("kind")?;
            // A kind this version does not know is skipped rather than failing every load.
            let Ok(kind) = kind.parse() else { continue };
            blocks.push(BlockRecord {
                kind,
                key: row.try_get("key")?,
                until: as_u64(row.try_get("until")?),
                reason: row.try_get("reason")?,
                created_at: as_u64(row.try_get("created_at")?),
            });
        }
        Ok(blocks)
    }

    async fn prune(&self, retention: Retention) -> Result<Pruned, StoreError> {
        let now = as_i64(retention.now);
        let stale = as_i64(retention.now.saturating_sub(retention.longest_window_ms));
        let old_sends = as_i64(retention.now.saturating_sub(retention.sends_max_age_ms));
        let run = |sql: &'static str, bound: i64| {
            let pool = self.pool.clone();
            async move {
                let done = sqlx::query(sql).bind(bound).execute(&pool).await?;
                Ok::<u64, sqlx::Error>(done.rows_affected())
            }
        };
        let mut pruned = Pruned {
            sessions: run("DELETE FROM sessions WHERE expires_at < ?", now).await?,
            // A schedule or count whose window started before the longest window is over.
            schedules: run("DELETE FROM send_schedules WHERE window_start < ?", stale).await?,
            wrong_codes: run("DELETE FROM wrong_codes WHERE window_start < ?", stale).await?,
            blocks: run("DELETE FROM blocks WHERE until < ?", now).await?,
            sends: run("DELETE FROM sends WHERE sent_at < ?", old_sends).await?,
        };
        // However young, no more than the bound: the oldest go first.
        let bound = i64::try_from(retention.sends_max_rows).unwrap_or(i64::MAX);
        pruned.sends += run(
            "DELETE FROM sends WHERE session_hash IN
             (SELECT session_hash FROM sends ORDER BY sent_at DESC LIMIT -1 OFFSET ?)",
            bound,
        )
        .await?;
        Ok(pruned)
    }

    async fn record_send(&self, send: &SendRecord) -> Result<(), StoreError> {
        self.file_intact()?;
        sqlx::query(
            "INSERT INTO sends (session_hash, sent_at, calling_code, prefix_hash, block_hash)
             VALUES (?, ?, ?, ?, ?) ON CONFLICT (session_hash) DO NOTHING",
        )
        .bind(&send.session.as_bytes()[..])
        .bind(as_i64(send.sent_at))
        .bind(i64::from(send.calling_code))
        .bind(&send.prefix[..])
        .bind(&send.address_block[..])
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn forget_send(&self, session: &SessionHash) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM sends WHERE session_hash = ?")
            .bind(&session.as_bytes()[..])
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// One statement for all the scopes: each is a round trip to SQLite's thread otherwise.
    async fn send_stats_each(
        &self,
        scopes: &[StatsScope],
        from: u64,
        to: u64,
    ) -> Result<Vec<SendStats>, StoreError> {
        if scopes.is_empty() {
            return Ok(Vec::new());
        }
        let sql = scopes
            .iter()
            .enumerate()
            .map(|(position, scope)| {
                format!(
                    "SELECT {position} AS position, count(*) AS sent, \
                     coalesce(sum(verified), 0) AS verified FROM sends \
                     WHERE {} AND sent_at >= ? AND sent_at < ?",
                    scope_filter(scope)
                )
            })
            .collect::<Vec<_>>()
            .join(" UNION ALL ")
            + " ORDER BY position";
        let mut query = sqlx::query(&sql);
        for scope in scopes {
            query = match scope {
                StatsScope::All => query,
                StatsScope::Country(code) => query.bind(i64::from(*code)),
                StatsScope::Prefix(hash) | StatsScope::AddressBlock(hash) => {
                    query.bind(hash.to_vec())
                }
            };
            query = query.bind(as_i64(from)).bind(as_i64(to));
        }
        let rows = query.fetch_all(&self.pool).await?;
        rows.iter()
            .map(|row| {
                Ok(SendStats {
                    sent: as_u64(row.try_get("sent")?),
                    verified: as_u64(row.try_get("verified")?),
                })
            })
            .collect()
    }
}

/// The `WHERE` condition that picks a scope's sends; its value, if any, is bound first.
fn scope_filter(scope: &StatsScope) -> &'static str {
    match scope {
        StatsScope::All => "1",
        StatsScope::Country(_) => "calling_code = ?",
        StatsScope::Prefix(_) => "prefix_hash = ?",
        StatsScope::AddressBlock(_) => "block_hash = ?",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{NumberKey, PhoneNumber};
    use crate::limits::Rate;

    const DAY: u64 = 86_400_000;

    async fn store_in(dir: &Path) -> SqliteStore {
        let url = format!("sqlite://{}", dir.join("gate.db").display());
        let schedule = SendSchedule::new(
            &[Duration::from_secs(60)],
            Rate::new(5, Duration::from_secs(86_400)),
        );
        let guesses = GuessBudget::new(Rate::new(5, Duration::from_secs(3600)), 3);
        SqliteStore::open(&url, Duration::from_secs(5), schedule, guesses)
            .await
            .expect("opens")
    }

    #[tokio::test]
    async fn a_claim_from_an_outdated_read_is_made_from_what_the_row_holds_now() {
        let dir = tempfile::tempdir().expect("dir");
        let store = store_in(dir.path()).await;
        let number = NumberKey::new("a key for the claim test, long enough to use")
            .hash_number(&PhoneNumber::parse("+447400123456").expect("valid"));
        let empty = store.read_schedule(&number, 0).await.expect("read");
        assert_eq!(
            empty,
            ScheduleRead {
                state: None,
                wait: None
            }
        );

        let first = store
            .claim_send(&number, 0, Some(&empty))
            .await
            .expect("ran");
        let first = first.expect("the first code may go");
        // The same outdated read again: a blind write would start the schedule over.
        let second = store
            .claim_send(&number, 100_000, Some(&empty))
            .await
            .expect("ran")
            .expect("the cooldown is over");
        assert_eq!(second.before, Some(first.after));
        assert_eq!(second.after.sends, 2);
        let third = store.claim_send(&number, 100_001, Some(&empty)).await;
        assert!(
            matches!(third, Ok(Err(SendWait::Cooldown { .. }))),
            "{third:?}"
        );

        // An outdated read that refuses does not stand once the row has been cleared.
        let waiting = store.read_schedule(&number, 100_001).await.expect("read");
        assert!(waiting.wait.is_some());
        assert!(store.clear_number(&number).await.expect("cleared"));
        let after_clear = store.claim_send(&number, 100_002, Some(&waiting)).await;
        let claim = after_clear
            .expect("ran")
            .expect("a cleared number may get a code");
        assert_eq!((claim.before, claim.after.sends), (None, 1));
    }

    #[tokio::test]
    async fn counting_several_scopes_at_once_matches_counting_each() {
        let dir = tempfile::tempdir().expect("dir");
        let store = store_in(dir.path()).await;
        let key = NumberKey::new("a key for the statistics test, long enough");
        for i in 0..30u64 {
            let record = SendRecord {
                session: key.hash_session(&format!("session-{i}")),
                sent_at: 1_000 + i,
                calling_code: if i % 3 == 0 { 44 } else { 33 },
                prefix: [(i % 2) as u8; 32],
                address_block: [(i % 5) as u8; 32],
            };
            store.record_send(&record).await.expect("recorded");
        }
        let session = key.hash_session("session-6");
        store.mark_verified(&session, 2_000).await.expect("marked");
        let scopes = [
            StatsScope::Prefix([0; 32]),
            StatsScope::AddressBlock([4; 32]),
            StatsScope::All,
            StatsScope::Country(44),
            StatsScope::Prefix([9; 32]),
        ];
        let together = store
            .send_stats_each(&scopes, 1_005, 1_025)
            .await
            .expect("counted");
        let mut apart = Vec::new();
        for scope in scopes {
            apart.push(
                store
                    .send_stats(scope, 1_005, 1_025)
                    .await
                    .expect("counted"),
            );
        }
        assert_eq!(together, apart);
        let sent: Vec<u64> = together.iter().map(|s| s.sent).collect();
        assert_eq!(sent, [10, 4, 20, 7, 0]);
        let verified: Vec<u64> = together.iter().map(|s| s.verified).collect();
        assert_eq!(
            verified,
            [1, 0, 1, 1, 0],
            "session-6: prefix 0, block 1, country 44"
        );
    }

    #[tokio::test]
    async fn the_checkpoint_job_copies_the_log_into_the_database_file() {
        let dir = tempfile::tempdir().expect("dir");
        let store = store_in(dir.path()).await;
        let key = NumberKey::new("a key for the checkpoint test, long enough");
        for i in 0..400u64 {
            let record = SendRecord {
                session: key.hash_session(&format!("session-{i}")),
                sent_at: i,
                calling_code: 44,
                prefix: [1; 32],
                address_block: [2; 32],
            };
            store.record_send(&record).await.expect("recorded");
        }
        let file_size = || {
            std::fs::metadata(dir.path().join("gate.db"))
                .expect("file")
                .len()
        };
        let before = file_size();
        let job = tokio::spawn(
            store
                .clone()
                .checkpoint_on_schedule(Duration::from_millis(20)),
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        job.abort();
        // The rows reach the database file only through a checkpoint: the commits themselves
        // stay below SQLite's backstop threshold.
        assert!(
            file_size() > before,
            "checkpointed: {before} bytes before, {} after",
            file_size()
        );
    }

    #[tokio::test]
    async fn pruning_removes_what_has_expired_and_bounds_the_send_records() {
        let dir = tempfile::tempdir().expect("dir");
        let store = store_in(dir.path()).await;
        let key = NumberKey::new("a key for the pruning test, long enough");
        let number = key.hash_number(&PhoneNumber::parse("+447400123456").expect("valid"));
        let session = key.hash_session("session-one");
        store
            .claim_send(&number, 0, None)
            .await
            .expect("db")
            .expect("slot");
        store
            .create_session(&session, &number, 0, DAY)
            .await
            .expect("db");
        store
            .claim_guess(&session, &number, 0)
            .await
            .expect("db")
            .expect("unit");
        let block = BlockRecord {
            kind: BlockKind::Prefix,
            key: "+447400".into(),
            until: DAY,
            reason: "test".into(),
            created_at: 0,
        };
        store.put_block(&block).await.expect("db");
        for i in 0..5u64 {
            let send = SendRecord {
                session: key.hash_session(&format!("s{i}")),
                sent_at: i,
                calling_code: 44,
                prefix: [0; 32],
                address_block: [0; 32],
            };
            store.record_send(&send).await.expect("db");
        }

        let young = Retention {
            now: 10,
            longest_window_ms: DAY,
            sends_max_age_ms: DAY,
            sends_max_rows: 3,
        };
        let first = store.prune(young).await.expect("db");
        assert_eq!(
            first,
            Pruned {
                sends: 2,
                ..Pruned::default()
            },
            "only the row bound applies"
        );

        let later = Retention {
            now: 2 * DAY + 1,
            ..young
        };
        let second = store.prune(later).await.expect("db");
        assert_eq!(
            second,
            Pruned {
                sessions: 1,
                schedules: 1,
                wrong_codes: 1,
                blocks: 1,
                sends: 3
            }
        );
    }
}
