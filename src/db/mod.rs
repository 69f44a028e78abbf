//! The SQLite store: one database file, WAL with `synchronous=FULL`, one transaction per
//! container state transition together with the events it produces.

mod migrations;
mod networks;
mod volumes;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension};

pub use migrations::MIGRATIONS;

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database {path}: {source}")]
    Open {
        path: String,
        source: rusqlite::Error,
    },
    #[error("database: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("name {0:?} is already in use")]
    NameInUse(String),
    /// Events after the asked sequence number were trimmed from the bounded log; every event
    /// after `through` is kept.
    #[error("events through seq {through} were trimmed from the log: ask for events after seq {through}")]
    EventsTrimmed { through: u64 },
}

/// An event as stored in the durable log.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct EventRecord {
    pub seq: u64,
    /// Microseconds since the Unix epoch.
    pub timestamp: u64,
    pub container_id: String,
    pub kind: String,
    pub attributes: BTreeMap<String, String>,
}

/// An event about to be written; the database gives it its sequence number.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub kind: &'static str,
    pub attributes: BTreeMap<String, String>,
}

/// A container row: its id, name and the two JSON documents the engine owns.
#[derive(Debug, Clone)]
pub struct ContainerRow {
    pub id: String,
    pub name: String,
    pub config: String,
    pub status: String,
}

/// What a transition writes besides its events.
pub enum Change<'a> {
    Insert(&'a ContainerRow, u64),
    Status(&'a str, &'a str),
    Delete(&'a str),
    /// Events only (e.g. `wait`, `sync` with no change).
    Nothing,
    /// Stores an image record (new or updated), by id.
    PutImage(&'a str, &'a str),
    DeleteImage(&'a str),
}

/// The database handle. SQLite serialises writers anyway; one connection behind a mutex means
/// no "database is locked" however many callers there are.
pub struct Db {
    conn: Mutex<Connection>,
    /// The most events the log keeps (0: no bound); see [`Db::set_event_limit`].
    event_limit: AtomicU64,
}

impl Db {
    pub fn open(path: &Path) -> Result<Db, DbError> {
        let open_error = |source| DbError::Open {
            path: path.display().to_string(),
            source,
        };
        let mut conn = Connection::open(path).map_err(open_error)?;
        conn.busy_timeout(Duration::from_secs(30))
            .map_err(open_error)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(open_error)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(open_error)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(open_error)?;
        migrations::migrate(&mut conn).map_err(open_error)?;
        Ok(Db {
            conn: Mutex::new(conn),
            event_limit: AtomicU64::new(0),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the connection leaves SQLite consistent (the transaction
        // rolls back on drop), so a poisoned lock is still safe to use.
        self.conn
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn containers(&self) -> Result<Vec<ContainerRow>, DbError> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT id, name, config, status FROM containers ORDER BY created_at, id",
        )?;
        let rows = stmt
            .query_map([], |row| {
                Ok(ContainerRow {
                    id: row.get(0)?,
                    name: row.get(1)?,
                    config: row.get(2)?,
                    status: row.get(3)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Every stored image record (JSON), by id.
    pub fn images(&self) -> Result<Vec<(String, String)>, DbError> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached("SELECT id, record FROM images ORDER BY id")?;
        let rows = stmt
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Writes one transition atomically: the row change and its events. `published` runs
    /// after the commit while the connection is still held, so whatever it announces leaves in
    /// sequence-number order.
    pub fn commit(
        &self,
        container_id: &str,
        change: Change<'_>,
        events: &[NewEvent],
        timestamp: u64,
        published: impl FnOnce(Vec<EventRecord>),
    ) -> Result<(), DbError> {
        self.commit_many(container_id, vec![change], events, timestamp, published)
    }

    /// As [`Db::commit`], with several row changes in the one transaction.
    pub fn commit_many(
        &self,
        container_id: &str,
        changes: Vec<Change<'_>>,
        events: &[NewEvent],
        timestamp: u64,
        published: impl FnOnce(Vec<EventRecord>),
    ) -> Result<(), DbError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        // Events become trimmable when their container goes (or when they belong to none).
        let trimmable = container_id.is_empty()
            || changes
                .iter()
                .any(|change| matches!(change, Change::Delete(_)));
        for change in changes {
            apply(&tx, change)?;
        }
        let mut records = Vec::with_capacity(events.len());
        for event in events {
            let attributes = serde_json::to_string(&event.attributes).unwrap_or_default();
            tx.execute(
                "INSERT INTO events (timestamp, container_id, type, attributes) VALUES (?1, ?2, ?3, ?4)",
                params![timestamp as i64, container_id, event.kind, attributes],
            )?;
            records.push(EventRecord {
                seq: tx.last_insert_rowid() as u64,
                timestamp,
                container_id: container_id.to_string(),
                kind: event.kind.to_string(),
                attributes: event.attributes.clone(),
            });
        }
        if trimmable {
            trim_events(&tx, self.event_limit.load(Ordering::Relaxed))?;
        }
        tx.commit()?;
        published(records);
        Ok(())
    }

    /// Bounds the event log to `limit` events (0: no bound) and trims it now. Only events of
    /// containers that are gone (and events of no container) are trimmed, oldest first, so
    /// the log may hold more while live containers own the rest.
    pub fn set_event_limit(&self, limit: u64) -> Result<(), DbError> {
        self.event_limit.store(limit, Ordering::Relaxed);
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        trim_events(&tx, limit)?;
        tx.commit()?;
        Ok(())
    }

    /// Events with a sequence number above `after`, oldest first; `limit` 0 means all.
    /// `EventsTrimmed` when some of those were trimmed from the bounded log.
    pub fn events_after(&self, after: u64, limit: u32) -> Result<Vec<EventRecord>, DbError> {
        let conn = self.lock();
        let through: i64 = conn.query_row("SELECT trimmed_through FROM event_log", [], |row| {
            row.get(0)
        })?;
        if after < through as u64 {
            return Err(DbError::EventsTrimmed {
                through: through as u64,
            });
        }
        // Sequence numbers are SQLite integers (below 2^63): a larger `after` has nothing after it.
        let after = i64::try_from(after).unwrap_or(i64::MAX);
        let limit = if limit == 0 { -1 } else { i64::from(limit) };
        let mut stmt = conn.prepare_cached(
            "SELECT seq, timestamp, container_id, type, attributes FROM events
             WHERE seq > ?1 ORDER BY seq LIMIT ?2",
        )?;
        let rows = stmt
            .query_map(params![after, limit], |row| {
                let attributes: String = row.get(4)?;
                Ok(EventRecord {
                    seq: row.get::<_, i64>(0)? as u64,
                    timestamp: row.get::<_, i64>(1)? as u64,
                    container_id: row.get(2)?,
                    kind: row.get(3)?,
                    attributes: serde_json::from_str(&attributes).unwrap_or_default(),
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }
}

/// One row change inside a transaction.
/// Deletes the oldest events of containers that are gone until the log holds at most
/// `limit` events (or nothing more can go), and records how far it was trimmed.
fn trim_events(tx: &rusqlite::Transaction<'_>, limit: u64) -> Result<(), DbError> {
    if limit == 0 {
        return Ok(());
    }
    let count: i64 = tx.query_row("SELECT count(*) FROM events", [], |row| row.get(0))?;
    let excess = (count as u64).saturating_sub(limit);
    if excess == 0 {
        return Ok(());
    }
    let through: Option<i64> = tx.query_row(
        "SELECT max(seq) FROM (SELECT seq FROM events
             WHERE container_id NOT IN (SELECT id FROM containers)
             ORDER BY seq LIMIT ?1)",
        params![i64::try_from(excess).unwrap_or(i64::MAX)],
        |row| row.get(0),
    )?;
    let Some(through) = through else {
        return Ok(());
    };
    tx.execute(
        "DELETE FROM events WHERE seq <= ?1 AND container_id NOT IN (SELECT id FROM containers)",
        params![through],
    )?;
    tx.execute(
        "UPDATE event_log SET trimmed_through = max(trimmed_through, ?1)",
        params![through],
    )?;
    Ok(())
}

fn apply(tx: &rusqlite::Transaction<'_>, change: Change<'_>) -> Result<(), DbError> {
    match change {
        Change::Insert(row, created_at) => {
            let taken: Option<String> = tx
                .query_row(
                    "SELECT id FROM containers WHERE name = ?1",
                    [&row.name],
                    |r| r.get(0),
                )
                .optional()?;
            if taken.is_some() {
                return Err(DbError::NameInUse(row.name.clone()));
            }
            tx.execute(
                "INSERT INTO containers (id, name, config, status, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![row.id, row.name, row.config, row.status, created_at as i64],
            )?;
        }
        Change::Status(id, status) => {
            tx.execute(
                "UPDATE containers SET status = ?2 WHERE id = ?1",
                params![id, status],
            )?;
        }
        Change::Delete(id) => {
            tx.execute("DELETE FROM containers WHERE id = ?1", [id])?;
        }
        Change::Nothing => {}
        Change::PutImage(id, record) => {
            tx.execute(
                "INSERT INTO images (id, record) VALUES (?1, ?2)
                 ON CONFLICT (id) DO UPDATE SET record = excluded.record",
                params![id, record],
            )?;
        }
        Change::DeleteImage(id) => {
            tx.execute("DELETE FROM images WHERE id = ?1", [id])?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, name: &str) -> ContainerRow {
        ContainerRow {
            id: id.into(),
            name: name.into(),
            config: "{}".into(),
            status: "{}".into(),
        }
    }

    fn event(kind: &'static str) -> NewEvent {
        NewEvent {
            kind,
            attributes: BTreeMap::from([("name".to_string(), "n".to_string())]),
        }
    }

    #[test]
    fn a_transition_commits_its_row_and_events_together() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("berth.db")).unwrap();
        let mut seen = Vec::new();
        db.commit(
            "a",
            Change::Insert(&row("a", "one"), 1),
            &[event("create")],
            5,
            |r| seen = r,
        )
        .unwrap();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].kind, "create");
        assert_eq!(db.containers().unwrap().len(), 1);
        assert_eq!(db.events_after(0, 0).unwrap(), seen);
    }

    #[test]
    fn a_duplicate_name_is_refused_and_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("berth.db")).unwrap();
        db.commit(
            "a",
            Change::Insert(&row("a", "one"), 1),
            &[event("create")],
            5,
            |_| {},
        )
        .unwrap();
        let err = db
            .commit(
                "b",
                Change::Insert(&row("b", "one"), 1),
                &[event("create")],
                6,
                |_| {},
            )
            .unwrap_err();
        assert!(matches!(err, DbError::NameInUse(name) if name == "one"));
        assert_eq!(db.containers().unwrap().len(), 1);
        assert_eq!(db.events_after(0, 0).unwrap().len(), 1);
    }

    #[test]
    fn the_bounded_log_trims_only_gone_containers_and_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("berth.db")).unwrap();
        db.set_event_limit(3).unwrap();
        let two = [event("create"), event("start")];
        db.commit("a", Change::Insert(&row("a", "one"), 1), &two, 5, |_| {})
            .unwrap();
        db.commit("b", Change::Insert(&row("b", "two"), 1), &two, 5, |_| {})
            .unwrap();
        // Four events, but both containers live: nothing may go.
        assert_eq!(db.events_after(0, 0).unwrap().len(), 4);
        db.commit("a", Change::Delete("a"), &[event("remove")], 6, |_| {})
            .unwrap();
        // Five events; the two oldest of the gone container go (seq 1, 2).
        let kept: Vec<_> = db
            .events_after(2, 0)
            .unwrap()
            .iter()
            .map(|e| (e.seq, e.container_id.clone()))
            .collect();
        assert_eq!(kept, [(3, "b".into()), (4, "b".into()), (5, "a".into())]);
        let error = db.events_after(0, 0).unwrap_err();
        assert!(
            matches!(error, DbError::EventsTrimmed { through: 2 }),
            "{error}"
        );
        assert!(db.events_after(1, 0).is_err());
        // Past every sequence number, nothing wraps around.
        assert!(db.events_after(u64::MAX, 0).unwrap().is_empty());
        assert!(db.events_after(1 << 63, 0).unwrap().is_empty());
    }

    #[test]
    fn events_replay_after_a_sequence_number_with_a_limit() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("berth.db")).unwrap();
        let kinds = [
            event("create"),
            event("init"),
            event("start"),
            event("died"),
        ];
        db.commit("a", Change::Insert(&row("a", "one"), 1), &kinds, 5, |_| {})
            .unwrap();
        let replay = db.events_after(1, 2).unwrap();
        let names: Vec<_> = replay.iter().map(|e| (e.seq, e.kind.as_str())).collect();
        assert_eq!(names, vec![(2, "init"), (3, "start")]);
    }

    #[test]
    fn the_store_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("berth.db");
        {
            let db = Db::open(&path).unwrap();
            db.commit(
                "a",
                Change::Insert(&row("a", "one"), 1),
                &[event("create")],
                5,
                |_| {},
            )
            .unwrap();
            db.commit("a", Change::Status("a", "{\"x\":1}"), &[], 6, |_| {})
                .unwrap();
        }
        let db = Db::open(&path).unwrap();
        let rows = db.containers().unwrap();
        assert_eq!(rows[0].status, "{\"x\":1}");
    }
}
