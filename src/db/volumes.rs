//! The `volumes` table: one JSON record per named volume, keyed by name.

use rusqlite::params;

use super::{Db, DbError};

impl Db {
    /// Every stored volume record (JSON), by name.
    pub fn volumes(&self) -> Result<Vec<(String, String)>, DbError> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached("SELECT name, record FROM volumes ORDER BY name")?;
        let rows = stmt
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Records a new volume; `NameInUse` if one has that name.
    pub fn insert_volume(&self, name: &str, record: &str) -> Result<(), DbError> {
        let conn = self.lock();
        let inserted = conn.execute(
            "INSERT INTO volumes (name, record) VALUES (?1, ?2) ON CONFLICT (name) DO NOTHING",
            params![name, record],
        )?;
        if inserted == 0 {
            return Err(DbError::NameInUse(name.to_string()));
        }
        Ok(())
    }

    /// Rewrites a volume's record.
    pub fn update_volume(&self, name: &str, record: &str) -> Result<(), DbError> {
        self.lock().execute(
            "UPDATE volumes SET record = ?2 WHERE name = ?1",
            params![name, record],
        )?;
        Ok(())
    }

    pub fn delete_volume(&self, name: &str) -> Result<(), DbError> {
        self.lock()
            .execute("DELETE FROM volumes WHERE name = ?1", [name])?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_volume_name_is_recorded_once_and_can_be_removed() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("berth.db")).unwrap();
        db.insert_volume("v", "{}").unwrap();
        assert!(matches!(
            db.insert_volume("v", "{\"x\":1}"),
            Err(DbError::NameInUse(name)) if name == "v"
        ));
        db.update_volume("v", "{\"y\":2}").unwrap();
        assert_eq!(
            db.volumes().unwrap(),
            vec![("v".into(), "{\"y\":2}".into())]
        );
        db.delete_volume("v").unwrap();
        assert!(db.volumes().unwrap().is_empty());
    }
}
