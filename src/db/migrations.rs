//! Schema migrations, applied in order on `PRAGMA user_version` (containerd's habit).

use rusqlite::Connection;

/// Each entry upgrades the schema from version `index` to `index + 1`. Never edit a released
/// entry; append a new one.
pub const MIGRATIONS: &[&str] = &[
    // 1: containers with their immutable config and their runtime status; the event log.
    "CREATE TABLE containers (
         id         TEXT PRIMARY KEY NOT NULL,
         name       TEXT NOT NULL UNIQUE,
         config     TEXT NOT NULL,
         status     TEXT NOT NULL,
         created_at INTEGER NOT NULL
     );
     CREATE TABLE events (
         seq          INTEGER PRIMARY KEY AUTOINCREMENT,
         timestamp    INTEGER NOT NULL,
         container_id TEXT NOT NULL,
         type         TEXT NOT NULL,
         attributes   TEXT NOT NULL
     );
     CREATE INDEX events_by_container ON events (container_id, seq);",
    // 2: the image store's records (layers live on disk, keyed by diff id).
    "CREATE TABLE images (
         id     TEXT PRIMARY KEY NOT NULL,
         record TEXT NOT NULL
     );",
    // 3: how far the bounded event log has been trimmed (one row).
    "CREATE TABLE event_log (
         id              INTEGER PRIMARY KEY CHECK (id = 1),
         trimmed_through INTEGER NOT NULL
     );
     INSERT INTO event_log VALUES (1, 0);",
    // 4: named volumes by name (their content lives on disk under volumes/).
    "CREATE TABLE volumes (
         name   TEXT PRIMARY KEY NOT NULL,
         record TEXT NOT NULL
     );",
    // 5: bridge networks (their record as JSON) and the IP leases of containers on
    // them (netavark leaves allocation to its caller).
    "CREATE TABLE networks (
         name   TEXT PRIMARY KEY NOT NULL,
         record TEXT NOT NULL
     );
     CREATE TABLE network_leases (
         network      TEXT NOT NULL,
         container_id TEXT NOT NULL,
         address      TEXT NOT NULL,
         PRIMARY KEY (network, address),
         UNIQUE (network, container_id)
     );",
];

/// Brings the database up to the latest schema, each step in its own transaction.
pub fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    let current: u32 = conn.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    for (version, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", version as u32 + 1)?;
        tx.commit()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrating_a_new_database_reaches_the_latest_version() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn).unwrap();
        let version: u32 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version as usize, MIGRATIONS.len());
    }

    #[test]
    fn migrating_twice_changes_nothing() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn).unwrap();
        conn.execute(
            "INSERT INTO containers VALUES ('a', 'n', '{}', '{}', 1)",
            [],
        )
        .unwrap();
        migrate(&mut conn).unwrap();
        let rows: i64 = conn
            .query_row("SELECT count(*) FROM containers", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 1);
    }

    #[test]
    fn migration_two_adds_the_image_table_to_a_version_one_database() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(MIGRATIONS[0]).unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
        conn.execute(
            "INSERT INTO containers VALUES ('a', 'n', '{}', '{}', 1)",
            [],
        )
        .unwrap();
        migrate(&mut conn).unwrap();
        conn.execute("INSERT INTO images VALUES ('i', '{}')", [])
            .unwrap();
        let containers: i64 = conn
            .query_row("SELECT count(*) FROM containers", [], |r| r.get(0))
            .unwrap();
        assert_eq!(containers, 1, "the migration kept the containers");
    }

    #[test]
    fn migration_three_starts_the_event_log_untrimmed_and_keeps_the_events() {
        let mut conn = Connection::open_in_memory().unwrap();
        for sql in &MIGRATIONS[..2] {
            conn.execute_batch(sql).unwrap();
        }
        conn.pragma_update(None, "user_version", 2).unwrap();
        conn.execute(
            "INSERT INTO events (timestamp, container_id, type, attributes) VALUES (1, 'a', 'create', '{}')",
            [],
        )
        .unwrap();
        migrate(&mut conn).unwrap();
        let trimmed: i64 = conn
            .query_row("SELECT trimmed_through FROM event_log", [], |r| r.get(0))
            .unwrap();
        let events: i64 = conn
            .query_row("SELECT count(*) FROM events", [], |r| r.get(0))
            .unwrap();
        assert_eq!((trimmed, events), (0, 1));
    }

    #[test]
    fn the_volume_migration_keeps_containers_and_images() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(MIGRATIONS[0]).unwrap();
        conn.execute_batch(MIGRATIONS[1]).unwrap();
        conn.pragma_update(None, "user_version", 2).unwrap();
        conn.execute("INSERT INTO images VALUES ('i', '{}')", [])
            .unwrap();
        migrate(&mut conn).unwrap();
        conn.execute("INSERT INTO volumes VALUES ('v', '{}')", [])
            .unwrap();
        let images: i64 = conn
            .query_row("SELECT count(*) FROM images", [], |r| r.get(0))
            .unwrap();
        assert_eq!(images, 1);
        assert!(conn
            .execute("INSERT INTO volumes VALUES ('v', '{}')", [])
            .is_err());
    }

    #[test]
    fn migration_one_creates_the_event_log_with_increasing_sequence_numbers() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn).unwrap();
        for kind in ["create", "start"] {
            conn.execute(
                "INSERT INTO events (timestamp, container_id, type, attributes) VALUES (1, 'a', ?1, '{}')",
                [kind],
            )
            .unwrap();
        }
        let seqs: Vec<i64> = conn
            .prepare("SELECT seq FROM events ORDER BY seq")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(seqs, vec![1, 2]);
    }
}
