//! Networks and their IP leases.

use std::collections::HashSet;
use std::net::Ipv4Addr;

use rusqlite::params;

use super::{Db, DbError};

/// One lease: a container's address on a network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub network: String,
    pub container_id: String,
    pub address: String,
}

impl Db {
    /// Every stored network record (JSON), by name.
    pub fn networks(&self) -> Result<Vec<(String, String)>, DbError> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached("SELECT name, record FROM networks ORDER BY name")?;
        let rows = stmt
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Stores a new network; false when the name is taken.
    pub fn insert_network(&self, name: &str, record: &str) -> Result<bool, DbError> {
        let conn = self.lock();
        let inserted = conn.execute(
            "INSERT INTO networks (name, record) VALUES (?1, ?2) ON CONFLICT (name) DO NOTHING",
            params![name, record],
        )?;
        Ok(inserted == 1)
    }

    /// Deletes a network with whatever leases are left on it.
    pub fn delete_network(&self, name: &str) -> Result<(), DbError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        tx.execute("DELETE FROM network_leases WHERE network = ?1", [name])?;
        tx.execute("DELETE FROM networks WHERE name = ?1", [name])?;
        tx.commit()?;
        Ok(())
    }

    /// Leases an address on `network` to a container, in one transaction: `pick` chooses
    /// among the addresses not taken. A container holding a lease there keeps it.
    pub fn lease(
        &self,
        network: &str,
        container_id: &str,
        pick: impl FnOnce(&HashSet<Ipv4Addr>) -> Option<Ipv4Addr>,
    ) -> Result<Option<Ipv4Addr>, DbError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let mut taken = HashSet::new();
        let mut own = None;
        {
            let mut stmt = tx.prepare_cached(
                "SELECT container_id, address FROM network_leases WHERE network = ?1",
            )?;
            let rows = stmt.query_map([network], |row| {
                Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
            })?;
            for row in rows {
                let (holder, address) = row?;
                if let Ok(address) = address.parse::<Ipv4Addr>() {
                    if holder == container_id {
                        own = Some(address);
                    }
                    taken.insert(address);
                }
            }
        }
        if own.is_some() {
            return Ok(own);
        }
        let Some(address) = pick(&taken) else {
            return Ok(None);
        };
        tx.execute(
            "INSERT INTO network_leases (network, container_id, address) VALUES (?1, ?2, ?3)",
            params![network, container_id, address.to_string()],
        )?;
        tx.commit()?;
        Ok(Some(address))
    }

    /// Gives back every lease of a container.
    pub fn release_leases(&self, container_id: &str) -> Result<(), DbError> {
        let conn = self.lock();
        conn.execute(
            "DELETE FROM network_leases WHERE container_id = ?1",
            [container_id],
        )?;
        Ok(())
    }

    /// Every lease, by network and address.
    pub fn leases(&self) -> Result<Vec<Lease>, DbError> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT network, container_id, address FROM network_leases ORDER BY network, address",
        )?;
        let rows = stmt
            .query_map([], |row| {
                Ok(Lease {
                    network: row.get(0)?,
                    container_id: row.get(1)?,
                    address: row.get(2)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_are_unique_per_network_and_released_with_their_container() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("berth.db")).unwrap();
        let first = |taken: &HashSet<Ipv4Addr>| {
            (2..250u8)
                .map(|n| Ipv4Addr::new(10, 90, 0, n))
                .find(|a| !taken.contains(a))
        };
        assert_eq!(
            db.lease("n", "a", first).unwrap(),
            Some(Ipv4Addr::new(10, 90, 0, 2))
        );
        assert_eq!(
            db.lease("n", "b", first).unwrap(),
            Some(Ipv4Addr::new(10, 90, 0, 3))
        );
        assert_eq!(
            db.lease("n", "a", first).unwrap(),
            Some(Ipv4Addr::new(10, 90, 0, 2)),
            "a container keeps its lease"
        );
        db.release_leases("a").unwrap();
        assert_eq!(db.leases().unwrap().len(), 1);
        assert_eq!(
            db.lease("n", "c", first).unwrap(),
            Some(Ipv4Addr::new(10, 90, 0, 2))
        );
    }
}
