//! Idle-point detection for MySQL sessions (graceful close at max TTL), from packet headers and
//! the first few payload bytes only.
//!
//! A MySQL session is at an idle point when every command the client sent has had its whole
//! response, the last status flags the server sent say no transaction is open, and neither
//! stream is inside a packet. Responses are followed with the small state machine below: OK /
//! ERR / EOF, result sets (column count, column definitions, the EOF unless DEPRECATE_EOF,
//! rows, the terminator, more results), COM_STMT_PREPARE's answer, LOCAL INFILE. Anything it does
//! not know (replication commands, MariaDB's metadata cache) makes it give up: such a session is
//! never called idle and closes at `max_ttl + hard_close_grace`, as before.

use super::packet::{self, MAX_PAYLOAD, command as cmd};
use crate::net::hold::{Activity, SINCE_EVER, stamp};
use crate::net::pump::Observer;
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicUsize, Ordering};
use tokio::time::Instant;

/// What the tracker knows that the command gate needs (same task; atomics only to be `Send`).
#[derive(Debug, Default)]
pub struct Shared {
    /// The server's latest status flags (for the OK leasegate sends in the server's place).
    status: AtomicU16,
    /// A LOAD DATA LOCAL INFILE transfer is running: client packets are file data, not commands.
    infile: AtomicBool,
    /// Commands sent and not yet fully answered, counting one just read from the client.
    pending: AtomicUsize,
    /// The tracker gave up: the numbers above mean nothing.
    lost: AtomicBool,
}

impl Shared {
    pub fn status(&self) -> u16 {
        self.status.load(Ordering::Relaxed)
    }

    pub fn in_infile(&self) -> bool {
        self.infile.load(Ordering::Relaxed)
    }

    /// A state as the tracker would leave it (unit tests and the gate's fuzz target).
    pub(crate) fn for_test(status: u16, pending: usize) -> Arc<Shared> {
        let s = Shared::default();
        s.status.store(status, Ordering::Relaxed);
        s.pending.store(pending, Ordering::Relaxed);
        Arc::new(s)
    }

    /// True when `n` commands are outstanding, or when that is not known.
    pub fn outstanding_is(&self, n: usize) -> bool {
        self.lost.load(Ordering::Relaxed) || self.pending.load(Ordering::Relaxed) == n
    }
}

/// Payload bytes kept from the start of each packet: enough for a length-encoded integer and
/// the fields before an OK packet's status flags.
const HEAD: usize = 24;
/// Commands the client may send ahead of their answers (pipelining) before tracking gives up.
const MAX_PIPELINED: usize = 256;

/// Server status flags leasegate reads.
const IN_TRANS: u16 = 0x0001;
const MORE_RESULTS: u16 = 0x0008;
const CURSOR_EXISTS: u16 = 0x0040;
const IN_TRANS_READONLY: u16 = 0x2000;

/// One logical packet (continuations of 16 MB+ packets folded in), seen at its end.
struct Packet {
    seq: u8,
    len: usize,
    head: [u8; HEAD],
}

impl Packet {
    fn first(&self) -> Option<u8> {
        (self.len > 0).then_some(self.head[0])
    }
}

/// Follows one direction's packet boundaries.
#[derive(Default)]
struct Packets {
    header: [u8; 4],
    have: usize,
    head: [u8; HEAD],
    head_len: usize,
    /// Payload bytes left in the current packet.
    left: usize,
    /// The current packet continues a maximal one.
    continuation: bool,
    seq: u8,
    len: usize,
    /// The logical packet started by the first part.
    first: Option<(u8, usize, [u8; HEAD])>,
}

impl Packets {
    fn at_boundary(&self) -> bool {
        self.have == 0 && self.left == 0 && self.first.is_none()
    }

    fn feed(&mut self, mut bytes: &[u8], mut on: impl FnMut(Packet)) {
        while !bytes.is_empty() {
            if self.have < 4 {
                let n = (4 - self.have).min(bytes.len());
                self.header[self.have..self.have + n].copy_from_slice(&bytes[..n]);
                self.have += n;
                bytes = &bytes[n..];
                if self.have < 4 {
                    return;
                }
                self.len = u32::from_le_bytes([self.header[0], self.header[1], self.header[2], 0]) as usize;
                self.seq = self.header[3];
                self.left = self.len;
                self.head_len = 0;
                if self.len == 0 {
                    self.end(&mut on);
                }
                continue;
            }
            let n = self.left.min(bytes.len());
            if !self.continuation && self.head_len < HEAD {
                let k = (HEAD - self.head_len).min(n);
                self.head[self.head_len..self.head_len + k].copy_from_slice(&bytes[..k]);
                self.head_len += k;
            }
            self.left -= n;
            bytes = &bytes[n..];
            if self.left == 0 {
                self.end(&mut on);
            }
        }
    }

    fn end(&mut self, on: &mut impl FnMut(Packet)) {
        self.have = 0;
        if !self.continuation {
            self.first = Some((self.seq, self.len, self.head));
        }
        // A maximal packet continues in the next one: the logical packet ends later.
        self.continuation = self.len == MAX_PAYLOAD;
        if !self.continuation
            && let Some((seq, len, head)) = self.first.take()
        {
            on(Packet { seq, len, head });
        }
    }
}

/// Where the server is in answering the oldest outstanding command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reply {
    /// Its first packet (or the first packet of its next result).
    Start,
    /// Column definitions still to come, then the EOF (unless DEPRECATE_EOF) and rows.
    Columns(u64),
    /// The EOF after the column definitions.
    ColumnsEof,
    /// Rows until the terminator.
    Rows,
    /// COM_STMT_PREPARE's answer: parameter definitions and their EOF, then column definitions
    /// and theirs (an EOF follows a non-empty section unless DEPRECATE_EOF).
    Prepare { params: u64, params_eof: bool, columns: u64, columns_eof: bool },
}

/// The pump observer for MySQL sessions.
pub struct MyIdle {
    client: Packets,
    server: Packets,
    state: Tracker,
}

/// Commands and responses, apart from the packet framing (so both can be borrowed at once).
struct Tracker {
    /// Commands sent whose responses have not ended, oldest first.
    pending: VecDeque<u8>,
    /// When each of them was sent ([`stamp`]), in the same order.
    sent: VecDeque<u64>,
    /// The stamp of the client bytes being read now.
    now: u64,
    reply: Reply,
    status: u16,
    deprecate_eof: bool,
    infile: bool,
    /// Tracking gave up: never idle again.
    lost: bool,
    shared: Arc<Shared>,
    /// Where a KILL QUERY from another connection reads whether a command runs.
    activity: Arc<Activity>,
}

impl MyIdle {
    /// `status`: the flags of the login OK; `deprecate_eof`: the negotiated capability;
    /// `trackable`: false when something the tracker cannot follow was negotiated.
    pub fn new(status: u16, deprecate_eof: bool, trackable: bool) -> Self {
        let shared = Arc::new(Shared::default());
        let activity = Arc::new(Activity::default());
        let state = Tracker {
            pending: VecDeque::new(),
            sent: VecDeque::new(),
            now: 0,
            reply: Reply::Start,
            status,
            deprecate_eof,
            infile: false,
            lost: !trackable,
            shared,
            activity,
        };
        state.publish();
        MyIdle { client: Packets::default(), server: Packets::default(), state }
    }

    /// The state the command gate reads.
    pub fn shared(&self) -> Arc<Shared> {
        self.state.shared.clone()
    }

    /// Whether a command runs, for the cancel path (busy whenever the tracker cannot tell).
    pub fn activity(&self) -> Arc<Activity> {
        self.state.activity.clone()
    }
}

impl Tracker {
    fn publish(&self) {
        self.shared.status.store(self.status, Ordering::Relaxed);
        self.shared.infile.store(self.infile, Ordering::Relaxed);
        self.shared.pending.store(self.pending.len(), Ordering::Relaxed);
        self.shared.lost.store(self.lost, Ordering::Relaxed);
        // A tracker that cannot follow the session says busy all along (KILLs run as they come).
        let since = if self.lost || self.infile { SINCE_EVER } else { self.sent.front().copied().unwrap_or(0) };
        self.activity.set_running_since(since);
    }

    fn command(&mut self, p: Packet) {
        self.command_inner(p);
        self.publish();
    }

    fn command_inner(&mut self, p: Packet) {
        if self.infile {
            // File data (its sequence ids wrap through 0); an empty packet ends it.
            self.infile = p.len != 0;
            return;
        }
        if p.seq != 0 {
            return;
        }
        match p.first() {
            Some(cmd::QUIT | cmd::STMT_SEND_LONG_DATA | cmd::STMT_CLOSE) | None => {}
            // Replication streams and MariaDB's COM_MULTI: not followed.
            Some(cmd::BINLOG_DUMP | cmd::TABLE_DUMP | cmd::BINLOG_DUMP_GTID | cmd::MULTI) => self.lost = true,
            Some(c) if self.pending.len() < MAX_PIPELINED => {
                self.pending.push_back(c);
                self.sent.push_back(self.now);
            }
            Some(_) => self.lost = true,
        }
    }

    fn done(&mut self, status: Option<u16>) {
        if let Some(s) = status {
            self.status = s;
            if s & MORE_RESULTS != 0 {
                self.reply = Reply::Start;
                return;
            }
        }
        self.pending.pop_front();
        self.sent.pop_front();
        self.reply = Reply::Start;
    }

    fn response(&mut self, p: Packet) {
        if !self.lost {
            self.response_inner(p);
            self.publish();
        }
    }

    fn response_inner(&mut self, p: Packet) {
        let Some(&command) = self.pending.front() else {
            self.lost = true; // the server spoke unasked
            return;
        };
        let first = p.first();
        let head = &p.head[..p.len.min(HEAD)];
        let terminator = first == Some(packet::EOF_OR_SWITCH) && p.len < if self.deprecate_eof { MAX_PAYLOAD } else { 9 };
        // MariaDB progress reports (ERR with code 0xFFFF) come in the middle of a command.
        if first == Some(packet::ERR) && head.get(1..3) == Some(&[0xFF, 0xFF]) {
            return;
        }
        match self.reply {
            Reply::Start => match first {
                Some(packet::ERR) => self.done(None),
                // COM_STMT_FETCH answers with rows, and binary rows start with 0x00: not an OK.
                _ if command == cmd::STMT_FETCH && terminator => self.done(eof_status(&p)),
                _ if command == cmd::STMT_FETCH => self.reply = Reply::Rows,
                Some(packet::OK) if command == cmd::STMT_PREPARE => {
                    let (Some(c), Some(n)) = (head.get(5..7), head.get(7..9)) else { return self.lost = true };
                    let (columns, params) = (u16::from_le_bytes([c[0], c[1]]) as u64, u16::from_le_bytes([n[0], n[1]]) as u64);
                    let eof = !self.deprecate_eof;
                    self.reply = Reply::Prepare { params, params_eof: eof && params > 0, columns, columns_eof: eof && columns > 0 };
                    self.prepare_step(false);
                }
                Some(packet::OK) => self.done(ok_status(head)),
                // LOCAL INFILE request: the client sends the file, then the OK/ERR follows.
                Some(0xFB) if command == cmd::QUERY => self.infile = true,
                _ if terminator => self.done(eof_status(&p)),
                _ if command == cmd::STATISTICS => self.done(None),
                _ if command == cmd::FIELD_LIST => self.reply = Reply::Rows,
                _ if [cmd::QUERY, cmd::STMT_EXECUTE, cmd::STMT_BULK_EXECUTE, cmd::PROCESS_INFO].contains(&command) => match lenenc(head) {
                    Some(n) if n > 0 => self.reply = Reply::Columns(n),
                    _ => self.lost = true,
                },
                _ if cmd::SIMPLE.contains(&command) => self.done(None),
                _ => self.lost = true,
            },
            Reply::Columns(n) => {
                self.reply = match (n - 1, self.deprecate_eof) {
                    (0, true) => Reply::Rows,
                    (0, false) => Reply::ColumnsEof,
                    (left, _) => Reply::Columns(left),
                }
            }
            Reply::ColumnsEof if terminator => match eof_status(&p) {
                // A cursor was opened: rows come with COM_STMT_FETCH.
                Some(s) if s & CURSOR_EXISTS != 0 => self.done(Some(s & !MORE_RESULTS)),
                _ => self.reply = Reply::Rows,
            },
            Reply::ColumnsEof => self.lost = true,
            Reply::Rows if terminator => self.done(eof_status(&p)),
            Reply::Rows if first == Some(packet::ERR) => self.done(None),
            Reply::Rows => {}
            Reply::Prepare { .. } => self.prepare_step(true),
        }
    }

    /// Counts one packet of COM_STMT_PREPARE's answer (`consume`) and ends it when complete.
    fn prepare_step(&mut self, consume: bool) {
        let Reply::Prepare { mut params, mut params_eof, mut columns, mut columns_eof } = self.reply else { return };
        if consume {
            if params > 0 {
                params -= 1;
            } else if params_eof {
                params_eof = false;
            } else if columns > 0 {
                columns -= 1;
            } else {
                columns_eof = false;
            }
        }
        if params == 0 && !params_eof && columns == 0 && !columns_eof {
            self.done(None);
        } else {
            self.reply = Reply::Prepare { params, params_eof, columns, columns_eof };
        }
    }
}

/// The status flags of an OK packet's payload without its header byte (the login OK).
pub fn ok_status_after_header(body: &[u8]) -> Option<u16> {
    let mut at = 0;
    for _ in 0..2 {
        at += lenenc_len(*body.get(at)?)?;
    }
    Some(u16::from_le_bytes([*body.get(at)?, *body.get(at + 1)?]))
}

/// The status flags of an OK packet's head: header, affected rows, last insert id, status.
fn ok_status(head: &[u8]) -> Option<u16> {
    ok_status_after_header(head.get(1..)?)
}

/// Status flags of an EOF (0xFE, warnings, status) or of an OK with the 0xFE header.
fn eof_status(p: &Packet) -> Option<u16> {
    let head = &p.head[..p.len.min(HEAD)];
    if p.len < 9 && p.len >= 5 { Some(u16::from_le_bytes([head[3], head[4]])) } else { ok_status(head) }
}

fn lenenc_len(first: u8) -> Option<usize> {
    match first {
        0..=0xFA => Some(1),
        0xFC => Some(3),
        0xFD => Some(4),
        0xFE => Some(9),
        _ => None,
    }
}

fn lenenc(head: &[u8]) -> Option<u64> {
    let first = *head.first()?;
    let n = lenenc_len(first)?;
    if n == 1 {
        return Some(first as u64);
    }
    let bytes = head.get(1..n)?;
    let mut v = [0u8; 8];
    v[..bytes.len()].copy_from_slice(bytes);
    Some(u64::from_le_bytes(v))
}

impl Observer for MyIdle {
    fn client_bytes(&mut self, bytes: &[u8]) {
        let state = &mut self.state;
        state.now = stamp(Instant::now());
        self.client.feed(bytes, |p| state.command(p));
    }

    fn server_bytes(&mut self, bytes: &[u8]) {
        let state = &mut self.state;
        self.server.feed(bytes, |p| state.response(p));
    }

    fn is_idle(&self) -> bool {
        let s = &self.state;
        !s.lost
            && s.pending.is_empty()
            && self.client.at_boundary()
            && self.server.at_boundary()
            && s.status & (IN_TRANS | IN_TRANS_READONLY) == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(seq: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        packet::frame(seq, payload, &mut out);
        out
    }

    fn ok(status: u16) -> Vec<u8> {
        let mut p = vec![0x00, 0x00, 0x00];
        p.extend_from_slice(&status.to_le_bytes());
        p.extend_from_slice(&[0, 0]);
        p
    }

    fn eof(status: u16) -> Vec<u8> {
        let mut p = vec![0xFE, 0, 0];
        p.extend_from_slice(&status.to_le_bytes());
        p
    }

    /// Feeds the server's answer one byte at a time, checking it is not idle before the end.
    fn answer(idle: &mut MyIdle, packets: &[Vec<u8>]) {
        let wire: Vec<u8> = packets.iter().enumerate().flat_map(|(i, p)| frame(i as u8 + 1, p)).collect();
        for b in &wire {
            assert!(!idle.is_idle(), "idle in the middle of a response");
            idle.server_bytes(std::slice::from_ref(b));
        }
    }

    #[test]
    fn follows_result_sets_with_and_without_deprecate_eof() {
        for deprecate in [false, true] {
            let mut idle = MyIdle::new(0x0002, deprecate, true);
            assert!(idle.is_idle());
            idle.client_bytes(&frame(0, b"\x03SELECT a, b FROM t"));
            assert!(!idle.is_idle());
            let mut packets = vec![vec![2u8], b"\x03defcol1".to_vec(), b"\x03defcol2".to_vec()];
            if !deprecate {
                packets.push(eof(0x0002));
            }
            // A row whose first column is empty starts with 0x00 and is not an OK.
            packets.extend([b"\x00\x01x".to_vec(), b"\x01a\x01b".to_vec()]);
            let mut end = if deprecate { ok(0x0002) } else { eof(0x0002) };
            if deprecate {
                end[0] = 0xFE;
            }
            packets.push(end);
            answer(&mut idle, &packets);
            assert!(idle.is_idle(), "deprecate_eof = {deprecate}");
        }
    }

    #[test]
    fn an_open_transaction_and_more_results_are_not_idle() {
        let mut idle = MyIdle::new(0x0002, true, true);
        idle.client_bytes(&frame(0, b"\x03BEGIN"));
        answer(&mut idle, &[ok(0x0003)]);
        assert!(!idle.is_idle(), "in a transaction");
        idle.client_bytes(&frame(0, b"\x03COMMIT; SELECT 1"));
        // OK with MORE_RESULTS, then a one-column result set.
        answer(
            &mut idle,
            &[ok(0x000A), vec![1], b"\x03def".to_vec(), b"\x011".to_vec(), {
                let mut t = ok(0x0002);
                t[0] = 0xFE;
                t
            }],
        );
        assert!(idle.is_idle());
        // Pipelined commands: idle only after both answers.
        idle.client_bytes(&[frame(0, b"\x0e"), frame(0, b"\x0e")].concat());
        answer(&mut idle, &[ok(0x0002)]);
        assert!(!idle.is_idle());
        idle.server_bytes(&frame(1, &ok(0x0002)));
        assert!(idle.is_idle());
    }

    #[test]
    fn follows_prepare_and_errors_and_gives_up_on_the_unknown() {
        let mut idle = MyIdle::new(0x0002, false, true);
        idle.client_bytes(&frame(0, b"\x16SELECT ?, ?"));
        // stmt id 1, 1 column, 2 params.
        let prepare_ok = vec![0x00, 1, 0, 0, 0, 1, 0, 2, 0, 0, 0, 0];
        answer(&mut idle, &[prepare_ok, b"\x03defp1".to_vec(), b"\x03defp2".to_vec(), eof(2), b"\x03defc".to_vec(), eof(2)]);
        assert!(idle.is_idle());
        idle.client_bytes(&frame(0, b"\x03SELEC"));
        answer(&mut idle, &[b"\xff\x28\x04#42000syntax".to_vec()]);
        assert!(idle.is_idle());
        idle.client_bytes(&frame(0, b"\x12binlog"));
        answer(&mut idle, &[b"\x00event".to_vec(), b"\x00event".to_vec()]);
        assert!(!idle.is_idle(), "a binlog stream is never idle");
        assert!(!MyIdle::new(0, true, false).is_idle(), "untrackable from the start");
    }

    #[test]
    fn fetched_binary_rows_are_not_oks_and_infile_data_is_not_commands() {
        let mut idle = MyIdle::new(0x0002, false, true);
        idle.client_bytes(&frame(0, b"\x1c\x01\x00\x00\x00\x0a\x00\x00\x00"));
        // Binary rows (0x00 header, null bitmap, values), then the EOF.
        answer(&mut idle, &[b"\x00\x00\x05\x00\x00\x00".to_vec(), b"\x00\x00\x06\x00\x00\x00".to_vec(), eof(0x0002)]);
        assert!(idle.is_idle());

        let shared = idle.shared();
        idle.client_bytes(&frame(0, b"\x03LOAD DATA LOCAL INFILE 'f' INTO TABLE t"));
        idle.server_bytes(&frame(1, b"\xfbf"));
        assert!(shared.in_infile());
        // File data whose sequence id wrapped to 0 and starts like a command.
        idle.client_bytes(&frame(0, b"\x11looks like COM_CHANGE_USER"));
        idle.client_bytes(&frame(1, b""));
        assert!(!shared.in_infile());
        assert!(!idle.is_idle());
        idle.server_bytes(&frame(3, &ok(0x0002)));
        assert!(idle.is_idle(), "one command, answered");
        assert!(shared.outstanding_is(0));
    }
}
