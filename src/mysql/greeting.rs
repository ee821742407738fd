//! The server greeting leasegate shows MySQL clients before any server connection exists.
//!
//! A MySQL server speaks first, and its greeting carries what a client keeps: version,
//! capabilities, collation, status, connection id. Connecting upstream to get one for every TCP
//! connection would let anyone who can reach the listener hold server connections without
//! logging in. So the greeting of the last server connection is kept, and a client is greeted
//! from it with a connection id of leasegate's own; it authenticates, a lease is granted, and
//! only then is the server connection opened, as on Postgres. Until a first server connection
//! has been made (just after start), a client is greeted the old way: connect, then greet.
//!
//! The connection ids leasegate hands out are virtual: [`Threads`](super::threads::Threads)
//! maps each to the session's real server thread, so a client's `KILL QUERY <id>` from another
//! connection still reaches the right thread. They start at a random point of the upper half
//! of the 32-bit range: a real server would need two billion connections to reach one.

use super::frontend::{ClientHello, ServerHello};
use mysql_common::constants::CapabilityFlags;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

pub struct GreetingCache {
    last: Mutex<Option<ServerHello>>,
    next_id: AtomicU32,
}

impl Default for GreetingCache {
    fn default() -> Self {
        GreetingCache { last: Mutex::new(None), next_id: AtomicU32::new(FIRST_VIRTUAL | (rand::random::<u32>() >> 2)) }
    }
}

/// The lowest virtual connection id: they are all in the upper half of the 32-bit range.
const FIRST_VIRTUAL: u32 = 1 << 31;

impl GreetingCache {
    /// The greeting to show a new client, with a fresh virtual connection id; `None` until a
    /// server connection has been made.
    pub fn greeting(&self) -> Option<ServerHello> {
        let mut hello = self.last.lock().unwrap_or_else(|e| e.into_inner()).clone()?;
        // Wraps within the upper half: never an id a real server hands out early.
        hello.connection_id = FIRST_VIRTUAL | self.next_id.fetch_add(1, Ordering::Relaxed);
        Some(hello)
    }

    /// Keeps `hello`, the greeting a server connection just got.
    pub fn remember(&self, hello: &ServerHello) {
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = Some(hello.clone());
    }
}

/// What a client that was greeted from the cache agreed to, checked against the server it is
/// connected to at last: every capability the client took (other than TLS and compression,
/// which are per leg) must be one the server has, or the two would frame packets differently.
/// `Err` names what the server lacks.
pub fn fits(client: &ClientHello, server: &ServerHello) -> Result<(), String> {
    let per_leg = CapabilityFlags::CLIENT_SSL | CapabilityFlags::CLIENT_COMPRESS;
    let missing = (client.capabilities - per_leg) - server.capabilities;
    let missing_mariadb = client.mariadb_capabilities - server.mariadb_capabilities;
    if missing.is_empty() && missing_mariadb.is_empty() {
        Ok(())
    } else {
        Err(format!("the server no longer offers {missing:?} {missing_mariadb:?} (it changed since its greeting was kept); reconnect"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mysql_common::constants::MariadbCapabilities;

    #[test]
    fn greets_from_the_last_server_with_ids_of_its_own() {
        let cache = GreetingCache::default();
        assert!(cache.greeting().is_none(), "no greeting before a server was seen");
        let server = crate::mysql::frontend::sample_server_hello();
        cache.remember(&server);
        let (a, b) = (cache.greeting().unwrap(), cache.greeting().unwrap());
        assert!(a.connection_id >= FIRST_VIRTUAL && b.connection_id >= FIRST_VIRTUAL);
        assert_ne!(a.connection_id, b.connection_id);
        assert_eq!(a.version, server.version);
    }

    #[test]
    fn a_client_fits_a_server_with_every_capability_it_took() {
        let server = crate::mysql::frontend::sample_server_hello();
        let mut client = ClientHello {
            capabilities: CapabilityFlags::CLIENT_PROTOCOL_41 | CapabilityFlags::CLIENT_DEPRECATE_EOF | CapabilityFlags::CLIENT_SSL,
            mariadb_capabilities: MariadbCapabilities::MARIADB_CLIENT_PROGRESS,
            max_packet_size: 1 << 24,
            collation: 45,
            user: "ci".into(),
            database: None,
            attributes: None,
        };
        assert_eq!(fits(&client, &server), Ok(()));
        client.capabilities.insert(CapabilityFlags::CLIENT_SESSION_TRACK);
        assert!(fits(&client, &server).unwrap_err().contains("CLIENT_SESSION_TRACK"));
    }
}
