//! Idle-point detection for graceful close at max TTL, reading only message headers.
//!
//! A Postgres session is at an idle point when the server's last message was ReadyForQuery with
//! status `I` (not in a transaction), every Query/Sync/FunctionCall the client sent has had its
//! ReadyForQuery, no extended-protocol message is waiting for a Sync, and neither stream is in
//! the middle of a message. Closing there never cuts a transaction or a reply. Only the 5-byte
//! headers are inspected; bodies are skipped by length.

use crate::net::hold::{Activity, SINCE_EVER, stamp};
use crate::net::pump::Observer;
use std::collections::VecDeque;
use std::sync::Arc;
use tokio::time::Instant;

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

/// Requests leasegate remembers the send time of (one per Query, Sync or FunctionCall not yet
/// answered); a client pipelining more is simply treated as busy since its oldest.
const MAX_REMEMBERED: usize = 1024;

/// The pump observer for Postgres sessions.
pub struct PgIdle {
    client: Headers,
    server: Headers,
    /// ReadyForQuery messages the server still owes (one per Query, Sync, FunctionCall).
    owed: u64,
    /// When each owed request was sent, oldest first ([`stamp`]; at most [`MAX_REMEMBERED`]).
    sent: VecDeque<u64>,
    /// When the first Parse/Bind/Describe/Execute/Close/Flush since the last Sync was sent (0: none).
    unsynced_since: u64,
    status: u8,
    /// Where the cancel path reads what runs and since when.
    activity: Arc<Activity>,
}

impl Default for PgIdle {
    /// A session whose greeting (ending in ReadyForQuery `I`) has just been relayed.
    fn default() -> Self {
        PgIdle::new(Arc::default())
    }
}

impl PgIdle {
    pub fn new(activity: Arc<Activity>) -> Self {
        PgIdle {
            client: Headers::default(),
            server: Headers::default(),
            owed: 0,
            sent: VecDeque::new(),
            unsynced_since: 0,
            status: b'I',
            activity,
        }
    }

    /// A tracker that lost the boundaries says busy all along: cancels are forwarded as they come.
    fn publish(&self) {
        let since = if self.client.broken || self.server.broken {
            SINCE_EVER
        } else {
            match (self.sent.front(), self.unsynced_since) {
                (Some(&first), _) => first,
                (None, batch) => batch,
            }
        };
        self.activity.set_running_since(since);
    }
}

impl Observer for PgIdle {
    fn client_bytes(&mut self, bytes: &[u8]) {
        let now = stamp(Instant::now());
        let (owed, sent, unsynced) = (&mut self.owed, &mut self.sent, &mut self.unsynced_since);
        self.client.feed(bytes, |e| {
            if let Event::End(tag) = e {
                let mut owe = |since: u64| {
                    *owed += 1;
                    if sent.len() < MAX_REMEMBERED {
                        sent.push_back(since);
                    }
                };
                match tag {
                    b'Q' | b'F' => owe(now),
                    b'S' => {
                        owe(if *unsynced != 0 { *unsynced } else { now });
                        *unsynced = 0;
                    }
                    b'P' | b'B' | b'D' | b'E' | b'C' | b'H' if *unsynced == 0 => *unsynced = now,
                    _ => {}
                }
            }
        });
        self.publish();
    }

    fn server_bytes(&mut self, bytes: &[u8]) {
        let (owed, sent, status) = (&mut self.owed, &mut self.sent, &mut self.status);
        self.server.feed(bytes, |e| match e {
            Event::Status(s) => *status = s,
            Event::End(b'Z') => {
                *owed = owed.saturating_sub(1);
                // Past MAX_REMEMBERED the oldest stamps stay: busy since then, until all are answered.
                if sent.len() as u64 > *owed {
                    sent.pop_front();
                }
            }
            Event::End(_) => {}
        });
        self.publish();
    }

    fn is_idle(&self) -> bool {
        self.client.at_boundary() && self.server.at_boundary() && self.owed == 0 && self.unsynced_since == 0 && self.status == b'I'
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

    #[tokio::test(start_paused = true)]
    async fn the_cancel_path_sees_what_runs_and_since_when() {
        let activity = Arc::new(Activity::default());
        let mut t = PgIdle::new(activity.clone());
        t.client_bytes(&msg(b'Q', b"SELECT pg_sleep(1)\0"));
        let first_sent = Instant::now();
        assert!(activity.is_busy());
        tokio::time::advance(std::time::Duration::from_millis(10)).await;
        let cancel_asked = Instant::now();
        tokio::time::advance(std::time::Duration::from_millis(10)).await;
        t.client_bytes(&msg(b'Q', b"SELECT 2\0"));
        assert!(activity.runs_request_sent_before(cancel_asked), "the first statement still runs");
        t.server_bytes(&[msg(b'C', b"SELECT 1\0"), msg(b'Z', b"I")].concat());
        assert!(activity.is_busy(), "the second one runs now");
        assert!(!activity.runs_request_sent_before(cancel_asked), "and it was sent after the cancel was asked for");
        assert!(!activity.runs_request_sent_before(Instant::now()), "read just now: taken for a next request");
        tokio::time::advance(crate::net::hold::MIN_REQUEST_AGE).await;
        assert!(activity.runs_request_sent_before(Instant::now()));
        assert!(!activity.runs_request_sent_before(first_sent - std::time::Duration::from_millis(1)));
        t.server_bytes(&msg(b'Z', b"T"));
        assert!(!activity.is_busy(), "idle inside a transaction: nothing to cancel");
        t.client_bytes(&msg(b'P', b"\0SELECT 1\0\0\0"));
        assert!(activity.is_busy(), "extended protocol before Sync");
    }

    #[test]
    fn a_corrupt_length_is_never_idle() {
        let mut t = PgIdle::default();
        t.server_bytes(&[b'Z', 0, 0, 0, 1]);
        assert!(!t.is_idle());
    }
}
