//! Idle-point detection for graceful close at max TTL, reading only message headers.
//!
//! A Postgres session is at an idle point when the server's last message was ReadyForQuery with
//! status `I` (not in a transaction), every Query/Sync/FunctionCall the client sent has had its
//! ReadyForQuery, no extended-protocol message is waiting for a Sync, and neither stream is in
//! the middle of a message. Closing there never cuts a transaction or a reply. Only the 5-byte
//! headers are inspected; bodies are skipped by length.

use crate::net::pump::Observer;

/// Follows one direction's message boundaries.
#[derive(Default)]
struct Headers {
    header: [u8; 5],
    have: usize,
    /// Body bytes left in the current message.
    skip: usize,
    tag: u8,
    /// The first body byte of a ReadyForQuery (its status) has not been seen yet.
    want_status: bool,
    /// A length below 4 was seen: boundaries are lost, never call this idle again.
    broken: bool,
}

/// One thing `Headers::feed` found.
enum Event {
    /// A whole message with this tag ended.
    End(u8),
    /// ReadyForQuery's status byte.
    Status(u8),
}

impl Headers {
    fn at_boundary(&self) -> bool {
        self.have == 0 && self.skip == 0 && !self.broken
    }

    fn feed(&mut self, mut bytes: &[u8], mut on: impl FnMut(Event)) {
        while !bytes.is_empty() && !self.broken {
            if self.skip > 0 {
                if self.want_status {
                    on(Event::Status(bytes[0]));
                    self.want_status = false;
                }
                let n = self.skip.min(bytes.len());
                self.skip -= n;
                bytes = &bytes[n..];
                if self.skip == 0 {
                    on(Event::End(self.tag));
                }
                continue;
            }
            let n = (5 - self.have).min(bytes.len());
            self.header[self.have..self.have + n].copy_from_slice(&bytes[..n]);
            self.have += n;
            bytes = &bytes[n..];
            if self.have == 5 {
                self.have = 0;
                self.tag = self.header[0];
                let len = u32::from_be_bytes([self.header[1], self.header[2], self.header[3], self.header[4]]) as usize;
                if len < 4 {
                    self.broken = true;
                    return;
                }
                self.skip = len - 4;
                self.want_status = self.tag == b'Z' && self.skip == 1;
                if self.skip == 0 {
                    on(Event::End(self.tag));
                }
            }
        }
    }
}

/// The pump observer for Postgres sessions.
pub struct PgIdle {
    client: Headers,
    server: Headers,
    /// ReadyForQuery messages the server still owes (one per Query, Sync, FunctionCall).
    owed: u64,
    /// Parse/Bind/Describe/Execute/Close/Flush sent since the last Sync.
    unsynced: bool,
    status: u8,
}

impl Default for PgIdle {
    /// A session whose greeting (ending in ReadyForQuery `I`) has just been relayed.
    fn default() -> Self {
        PgIdle { client: Headers::default(), server: Headers::default(), owed: 0, unsynced: false, status: b'I' }
    }
}

impl Observer for PgIdle {
    fn client_bytes(&mut self, bytes: &[u8]) {
        let (owed, unsynced) = (&mut self.owed, &mut self.unsynced);
        self.client.feed(bytes, |e| {
            if let Event::End(tag) = e {
                match tag {
                    b'Q' | b'F' => *owed += 1,
                    b'S' => {
                        *owed += 1;
                        *unsynced = false;
                    }
                    b'P' | b'B' | b'D' | b'E' | b'C' | b'H' => *unsynced = true,
                    _ => {}
                }
            }
        });
    }

    fn server_bytes(&mut self, bytes: &[u8]) {
        let (owed, status) = (&mut self.owed, &mut self.status);
        self.server.feed(bytes, |e| match e {
            Event::Status(s) => *status = s,
            Event::End(b'Z') => *owed = owed.saturating_sub(1),
            Event::End(_) => {}
        });
    }

    fn is_idle(&self) -> bool {
        self.client.at_boundary() && self.server.at_boundary() && self.owed == 0 && !self.unsynced && self.status == b'I'
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![tag];
        v.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn idle_only_after_the_ready_for_query_that_ends_a_transaction() {
        let mut t = PgIdle::default();
        assert!(t.is_idle(), "right after the greeting");
        t.client_bytes(&msg(b'Q', b"BEGIN\0"));
        assert!(!t.is_idle());
        t.server_bytes(&[msg(b'C', b"BEGIN\0"), msg(b'Z', b"T")].concat());
        assert!(!t.is_idle(), "in a transaction");
        t.client_bytes(&msg(b'Q', b"COMMIT\0"));
        let reply = [msg(b'C', b"COMMIT\0"), msg(b'Z', b"I")].concat();
        // Byte by byte: idle only once the last byte of ReadyForQuery arrived.
        for (i, b) in reply.iter().enumerate() {
            assert!(!t.is_idle(), "at byte {i}");
            t.server_bytes(&[*b]);
        }
        assert!(t.is_idle());
    }

    #[test]
    fn pipelined_queries_are_not_idle_until_the_last_reply() {
        let mut t = PgIdle::default();
        t.client_bytes(&[msg(b'Q', b"SELECT 1\0"), msg(b'Q', b"SELECT 2\0")].concat());
        t.server_bytes(&[msg(b'D', b"..."), msg(b'Z', b"I")].concat());
        assert!(!t.is_idle(), "the second query is still running");
        t.server_bytes(&msg(b'Z', b"I"));
        assert!(t.is_idle());
    }

    #[test]
    fn extended_protocol_waits_for_sync() {
        let mut t = PgIdle::default();
        t.client_bytes(&[msg(b'P', b"\0SELECT 1\0\0\0"), msg(b'B', b"\0\0\0\0\0\0\0\0")].concat());
        assert!(!t.is_idle(), "Parse/Bind without Sync");
        t.client_bytes(&[msg(b'E', b"\0\0\0\0\0"), msg(b'S', b"")].concat());
        t.server_bytes(&[msg(b'1', b""), msg(b'2', b""), msg(b'C', b"SELECT 1\0")].concat());
        assert!(!t.is_idle());
        t.server_bytes(&msg(b'Z', b"I"));
        assert!(t.is_idle());
    }

    #[test]
    fn a_message_split_across_reads_is_not_a_boundary() {
        let mut t = PgIdle::default();
        let q = msg(b'Q', b"SELECT 1\0");
        t.client_bytes(&q[..3]);
        assert!(!t.is_idle());
        t.client_bytes(&q[3..]);
        t.server_bytes(&msg(b'Z', b"I"));
        assert!(t.is_idle());
    }

    #[test]
    fn a_corrupt_length_is_never_idle() {
        let mut t = PgIdle::default();
        t.server_bytes(&[b'Z', 0, 0, 0, 1]);
        assert!(!t.is_idle());
    }
}
