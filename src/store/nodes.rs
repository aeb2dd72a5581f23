//! Where sessions run on engines with nodes (Docker Swarm): the node holding each user's home,
//! so that the user's sessions stay there while homes are local to a node, and the node each
//! session runs on, whose address users connect to. Tables of their own, so that single-host
//! installs never touch them.

use rusqlite::{OptionalExtension, params};

use super::Store;
use crate::error::Result;

pub(super) const SCHEMA: &str = "CREATE TABLE user_nodes (user_name TEXT PRIMARY KEY, node_id TEXT NOT NULL);
     CREATE TABLE session_nodes (
        session_id TEXT PRIMARY KEY,
        node_id TEXT NOT NULL,
        address TEXT NOT NULL);";

impl Store {
    /// The swarm node holding the user's home, once a session placed it.
    pub fn user_node(&self, user: &str) -> Result<Option<String>> {
        self.run(|conn| {
            Ok(conn
                .query_row("SELECT node_id FROM user_nodes WHERE user_name = ?1", [user], |r| r.get(0))
                .optional()?)
        })
    }

    /// Records the node holding the user's home; the first one recorded stays.
    pub fn set_user_node(&self, user: &str, node_id: &str) -> Result<()> {
        self.run(|conn| {
            conn.execute(
                "INSERT OR IGNORE INTO user_nodes (user_name, node_id) VALUES (?1, ?2)",
                params![user, node_id],
            )?;
            Ok(())
        })
    }

    /// Records the node a session runs on (and forgets those of sessions that are gone).
    pub fn set_session_node(&self, session: &str, node_id: &str, address: &str) -> Result<()> {
        self.run(|conn| {
            conn.execute("DELETE FROM session_nodes WHERE session_id NOT IN (SELECT id FROM sessions)", [])?;
            conn.execute(
                "INSERT OR REPLACE INTO session_nodes (session_id, node_id, address) VALUES (?1, ?2, ?3)",
                params![session, node_id, address],
            )?;
            Ok(())
        })
    }

    /// The node a session runs on and its address.
    pub fn session_node(&self, session: &str) -> Result<Option<(String, String)>> {
        self.run(|conn| {
            Ok(conn
                .query_row("SELECT node_id, address FROM session_nodes WHERE session_id = ?1", [session], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .optional()?)
        })
    }

    pub fn delete_session_node(&self, session: &str) -> Result<()> {
        self.run(|conn| {
            conn.execute("DELETE FROM session_nodes WHERE session_id = ?1", [session])?;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_users_home_node_is_recorded_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.db")).unwrap();
        assert_eq!(store.user_node("alice").unwrap(), None);
        store.set_user_node("alice", "n1").unwrap();
        store.set_user_node("alice", "n2").unwrap();
        assert_eq!(store.user_node("alice").unwrap().as_deref(), Some("n1"));
        store.set_session_node("s1", "n1", "10.0.0.1").unwrap();
        // s1 has no row, so the next record forgets it.
        store.set_session_node("s2", "n1", "10.0.0.1").unwrap();
        assert_eq!(store.session_node("s1").unwrap(), None);
        assert_eq!(store.session_node("s2").unwrap(), Some(("n1".into(), "10.0.0.1".into())));
        store.delete_session_node("s2").unwrap();
        assert_eq!(store.session_node("s2").unwrap(), None);
    }
}
