//! The one look leasegate takes at a MySQL session's traffic after login: the first bytes of
//! each client command (a client packet with sequence id 0; data packets of LOAD DATA LOCAL
//! and the continuations of 16 MB+ packets never have id 0, and compression is never
//! negotiated). Everything else is forwarded untouched.
//!
//! - `COM_CHANGE_USER` would log in to the server as any real account, bypassing leasegate: it
//!   is answered with an ERR and the session ends, as a server ends a session whose
//!   COM_CHANGE_USER fails.
//! - `KILL [QUERY|CONNECTION] n` aimed at another session of the same client (what the mariadb
//!   and mysql clients send on Ctrl-C, and JDBC on a query timeout, from a second connection
//!   that has its own minted user) would fail with error 1095: leasegate runs it through its
//!   admin connection and answers OK. A KILL for any other thread goes to the server as sent.
//!
//! The gate wraps the server stream: it sits where the pump writes client bytes, and a reply it
//! makes itself comes out where the pump reads server bytes, so the pump needs no change.

use super::idle::Shared;
use super::packet::{self, command};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Longest COM_QUERY payload looked at for a KILL (`KILL CONNECTION 4294967295;` and spaces).
const MAX_KILL_QUERY: usize = 64;

/// What a gated command becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kill {
    pub thread: u32,
    /// `KILL QUERY` (true) or the whole connection.
    pub query_only: bool,
}

/// What an intercepted KILL comes to: `Ok` (the client gets an OK) or an ERR payload.
pub type KillOutcome = Pin<Box<dyn Future<Output = Result<(), Vec<u8>>> + Send>>;
/// Decides what to do with a client's KILL: `None` forwards it to the server; `Some(future)`
/// answers it with what the future yields.
pub type KillHandler = Box<dyn FnMut(Kill) -> Option<KillOutcome> + Send>;

enum Verdict {
    Forward,
    Swallow,
}

/// The payload length in a packet header.
fn payload_len(h: &[u8]) -> usize {
    u32::from_le_bytes([h[0], h[1], h[2], 0]) as usize
}

/// Bytes of a packet's start needed to decide on it, given the first bytes `h` seen so far.
fn needed(h: &[u8]) -> usize {
    if h.len() < 4 {
        return 4;
    }
    let len = payload_len(h);
    if h[3] != 0 || len == 0 {
        return 4;
    }
    if h.len() < 5 {
        return 5;
    }
    if h[4] == command::QUERY && len <= MAX_KILL_QUERY { 4 + len } else { 5 }
}

enum Up {
    /// At a packet boundary, collecting the header and the first payload bytes.
    Boundary,
    /// Inside a forwarded packet: this many bytes still pass.
    Forwarding(usize),
    /// Inside a swallowed packet: this many bytes are dropped.
    Skipping(usize),
}

pub struct Gate<S> {
    inner: S,
    up: Up,
    held: Vec<u8>,
    /// Held bytes decided to be forwarded, not yet written.
    out: Vec<u8>,
    out_pos: usize,
    /// A reply leasegate makes, framed, for the client.
    reply: Vec<u8>,
    reply_pos: usize,
    pending: Option<KillOutcome>,
    /// After the reply, the "server" side ends (COM_CHANGE_USER).
    end_after_reply: bool,
    /// COM_QUERY carries a parameter count first (CLIENT_QUERY_ATTRIBUTES).
    query_attributes: bool,
    /// OK packets end with a length-encoded info string (CLIENT_SESSION_TRACK).
    session_track: bool,
    /// The response tracker's view: server status, LOCAL INFILE, commands outstanding.
    session: Arc<Shared>,
    on_kill: KillHandler,
}

impl<S> Gate<S> {
    pub fn new(inner: S, query_attributes: bool, session_track: bool, session: Arc<Shared>, on_kill: KillHandler) -> Self {
        Gate {
            inner,
            up: Up::Boundary,
            held: Vec::with_capacity(4 + MAX_KILL_QUERY),
            out: Vec::new(),
            out_pos: 0,
            reply: Vec::new(),
            reply_pos: 0,
            pending: None,
            end_after_reply: false,
            query_attributes,
            session_track,
            session,
            on_kill,
        }
    }

    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Decides on a command from its first bytes (`needed(h)` of them); for a swallowed one,
    /// sets up the reply.
    fn judge(&mut self, h: &[u8]) -> Verdict {
        if self.session.in_infile() {
            return Verdict::Forward; // file data, whatever its sequence id and first byte
        }
        match (h[3], h.get(4).copied()) {
            (0, Some(command::CHANGE_USER)) => {
                self.say(packet::err_payload(
                    super::errcode::ACCESS_DENIED,
                    "28000",
                    "COM_CHANGE_USER is not available through leasegate; open a new connection as the other client",
                ));
                self.end_after_reply = true;
                Verdict::Swallow
            }
            // MariaDB's COM_MULTI carries other commands (COM_CHANGE_USER among them) inside
            // it. leasegate never offers it (the greeting drops the capability); a client sending
            // it anyway gets what a server without it says, and the session goes on.
            (0, Some(command::MULTI)) => {
                self.say(packet::err_payload(super::errcode::UNKNOWN_COMMAND, "08S01", "Unknown command"));
                Verdict::Swallow
            }
            // Answered here only when nothing else is outstanding: the reply must not overtake
            // (or land inside) an earlier command's response. Otherwise the server answers.
            (0, Some(command::QUERY)) if h.len() == 4 + payload_len(h) && self.session.outstanding_is(1) => {
                let kill = parse_kill(query_text(&h[5..], self.query_attributes));
                match kill.and_then(|k| (self.on_kill)(k)) {
                    Some(fut) => {
                        self.pending = Some(fut);
                        Verdict::Swallow
                    }
                    None => Verdict::Forward,
                }
            }
            _ => Verdict::Forward,
        }
    }

    /// Queues `payload` as the answer to the swallowed command (sequence id 1).
    fn say(&mut self, payload: Vec<u8>) {
        self.reply.clear();
        packet::frame(1, &payload, &mut self.reply);
        self.reply_pos = 0;
    }
}

/// The SQL text of a COM_QUERY payload (after the command byte).
fn query_text(body: &[u8], query_attributes: bool) -> &[u8] {
    // With query attributes the text follows a parameter count and a parameter-set count;
    // leasegate only looks at queries without attributes (0 parameters, 1 set).
    match (query_attributes, body) {
        (true, [0, 1, rest @ ..]) => rest,
        (true, _) => b"",
        (false, _) => body,
    }
}

/// `KILL [HARD|SOFT] [QUERY|CONNECTION] <id>[;]`, case-insensitive.
pub fn parse_kill(sql: &[u8]) -> Option<Kill> {
    let text = std::str::from_utf8(sql).ok()?.trim().trim_end_matches(';').to_ascii_lowercase();
    let mut words = text.split_whitespace().peekable();
    if words.next()? != "kill" {
        return None;
    }
    if matches!(words.peek(), Some(&"hard" | &"soft")) {
        words.next();
    }
    let query_only = match words.peek() {
        Some(&"query") => {
            words.next();
            true
        }
        Some(&"connection") => {
            words.next();
            false
        }
        _ => false,
    };
    let thread = words.next()?.parse().ok()?;
    if words.next().is_some() {
        return None;
    }
    Some(Kill { thread, query_only })
}

impl<S: AsyncWrite + Unpin> Gate<S> {
    fn poll_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.out_pos < self.out.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.out[self.out_pos..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.out_pos += n;
        }
        self.out.clear();
        self.out_pos = 0;
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Gate<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_out(cx))?;
        if this.end_after_reply {
            return Poll::Ready(Ok(buf.len())); // the session is ending; nothing more goes up
        }
        match this.up {
            Up::Forwarding(left) if left > 0 => {
                let n = ready!(Pin::new(&mut this.inner).poll_write(cx, &buf[..left.min(buf.len())]))?;
                this.up = Up::Forwarding(left - n);
                return Poll::Ready(Ok(n));
            }
            Up::Skipping(left) if left > 0 => {
                let n = left.min(buf.len());
                this.up = Up::Skipping(left - n);
                return Poll::Ready(Ok(n));
            }
            _ => this.up = Up::Boundary,
        }
        if this.held.is_empty() && buf.len() >= needed(buf) {
            // The usual case: the command's start is all in this write; decide without copying,
            // and forward header and payload in one write.
            let total = 4 + payload_len(buf);
            this.up = match this.judge(&buf[..needed(buf)]) {
                Verdict::Forward => Up::Forwarding(total),
                Verdict::Swallow => Up::Skipping(total),
            };
            return Pin::new(this).poll_write(cx, buf);
        }
        // The start straddles writes: collect it.
        let mut taken = 0;
        while taken < buf.len() && this.held.len() < needed(&this.held) {
            let n = (needed(&this.held) - this.held.len()).min(buf.len() - taken);
            this.held.extend_from_slice(&buf[taken..taken + n]);
            taken += n;
        }
        if this.held.len() >= needed(&this.held) {
            let held = std::mem::replace(&mut this.held, Vec::with_capacity(4 + MAX_KILL_QUERY));
            let rest = 4 + payload_len(&held) - held.len();
            match this.judge(&held) {
                Verdict::Forward => {
                    this.out = held;
                    this.out_pos = 0;
                    this.up = Up::Forwarding(rest);
                }
                Verdict::Swallow => this.up = Up::Skipping(rest),
            }
        }
        Poll::Ready(Ok(taken))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_out(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Gate<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(fut) = this.pending.as_mut()
            && let Poll::Ready(outcome) = fut.as_mut().poll(cx)
        {
            this.pending = None;
            let payload = match outcome {
                Ok(()) => {
                    // The server's own current status: the session's transaction state is unchanged.
                    let mut ok = packet::ok_payload(this.session.status());
                    if this.session_track {
                        ok.push(0); // empty info string
                    }
                    ok
                }
                Err(err) => err,
            };
            this.say(payload);
        }
        if this.reply_pos < this.reply.len() {
            let n = (this.reply.len() - this.reply_pos).min(buf.remaining());
            buf.put_slice(&this.reply[this.reply_pos..this.reply_pos + n]);
            this.reply_pos += n;
            return Poll::Ready(Ok(()));
        }
        if this.end_after_reply {
            return Poll::Ready(Ok(())); // EOF: the pump ends the session
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, duplex};

    #[test]
    fn parses_the_kill_forms_clients_send() {
        assert_eq!(parse_kill(b"KILL QUERY 42"), Some(Kill { thread: 42, query_only: true }));
        assert_eq!(parse_kill(b"  kill 7 ;"), Some(Kill { thread: 7, query_only: false }));
        assert_eq!(parse_kill(b"KILL HARD CONNECTION 9"), Some(Kill { thread: 9, query_only: false }));
        assert_eq!(parse_kill(b"KILL QUERY ID 9"), None);
        assert_eq!(parse_kill(b"KILL USER bob"), None);
        assert_eq!(parse_kill(b"SELECT 1"), None);
        assert_eq!(parse_kill(b"KILL 1 2"), None);
    }

    /// A gate whose KILLs succeed (`intercept`) or go to the server, with one command
    /// outstanding (the KILL itself) and server status 2.
    fn gate(server: tokio::io::DuplexStream, intercept: bool) -> Gate<tokio::io::DuplexStream> {
        let session = Shared::for_test(2, 1);
        Gate::new(server, false, false, session, Box::new(move |_k| intercept.then(|| Box::pin(async { Ok(()) }) as KillOutcome)))
    }

    /// COM_MULTI could carry COM_CHANGE_USER inside it: answered "Unknown command" by the gate,
    /// never forwarded, and the session goes on.
    #[tokio::test]
    async fn com_multi_never_reaches_the_server() {
        let (near, mut far) = duplex(1 << 16);
        let mut g = gate(near, false);
        let mut inner = Vec::new();
        packet::frame(0, b"\x11root\0\x14aaaaaaaaaaaaaaaaaaaa\0", &mut inner);
        let mut multi = vec![command::MULTI];
        multi.extend_from_slice(&inner);
        let mut wire = Vec::new();
        packet::frame(0, &multi, &mut wire);
        g.write_all(&wire).await.unwrap();
        g.flush().await.unwrap();
        let mut reply = [0u8; 4 + 9 + 15];
        tokio::time::timeout(std::time::Duration::from_secs(5), g.read_exact(&mut reply)).await.expect("answered by the gate").unwrap();
        assert_eq!(packet::parse_err(&reply[4..]), Some((crate::mysql::errcode::UNKNOWN_COMMAND, "Unknown command".into())));
        let mut next = Vec::new();
        packet::frame(0, b"\x03SELECT 1", &mut next);
        g.write_all(&next).await.unwrap();
        g.flush().await.unwrap();
        let mut got = vec![0; next.len()];
        far.read_exact(&mut got).await.unwrap();
        assert_eq!(got, next, "only the next command reached the server");
    }

    #[tokio::test]
    async fn forwards_commands_byte_by_byte_and_answers_change_user_itself() {
        let (near, mut far) = duplex(1 << 16);
        let mut g = gate(near, false);
        let mut wire = Vec::new();
        packet::frame(0, b"\x03SELECT 1", &mut wire);
        packet::frame(0, b"\x03KILL QUERY 5", &mut wire);
        // Dribbled one byte at a time: boundaries found anyway.
        for b in &wire {
            g.write_all(std::slice::from_ref(b)).await.unwrap();
        }
        g.flush().await.unwrap();
        let mut got = vec![0; wire.len()];
        far.read_exact(&mut got).await.unwrap();
        assert_eq!(got, wire);

        let mut change = Vec::new();
        packet::frame(0, b"\x11root\0\x14aaaaaaaaaaaaaaaaaaaa\0", &mut change);
        g.write_all(&change).await.unwrap();
        g.flush().await.unwrap();
        let mut reply = Vec::new();
        g.read_to_end(&mut reply).await.unwrap();
        assert_eq!(reply[3], 1, "sequence id 1");
        assert_eq!(packet::parse_err(&reply[4..]).unwrap().0, crate::mysql::errcode::ACCESS_DENIED);
        drop(g);
        let mut rest = Vec::new();
        far.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty(), "COM_CHANGE_USER never reaches the server");
    }

    #[tokio::test]
    async fn answers_an_intercepted_kill_and_passes_split_packets() {
        let (near, mut far) = duplex(1 << 16);
        let mut g = gate(near, true);
        let mut kill = Vec::new();
        packet::frame(0, b"\x03KILL QUERY 77", &mut kill);
        g.write_all(&kill).await.unwrap();
        let mut reply = [0u8; 11];
        g.read_exact(&mut reply).await.unwrap();
        assert_eq!(&reply[..4], &[7, 0, 0, 1]);
        assert_eq!(&reply[4..], &packet::ok_payload(2)[..]);

        // A 16 MB+ command whose continuation starts with a 0x11 byte is still forwarded whole.
        let mut big = vec![0x11u8; packet::MAX_PAYLOAD + 3];
        big[0] = command::QUERY;
        let mut wire = Vec::new();
        packet::frame(0, &big, &mut wire);
        let writer = tokio::spawn(async move {
            g.write_all(&wire).await.unwrap();
            g.flush().await.unwrap();
            wire.len()
        });
        let mut got = Vec::new();
        let mut chunk = vec![0u8; 1 << 16];
        while got.len() < packet::MAX_PAYLOAD + 3 + 8 {
            let n = far.read(&mut chunk).await.unwrap();
            got.extend_from_slice(&chunk[..n]);
        }
        assert_eq!(writer.await.unwrap(), got.len());
        assert_eq!(&got[got.len() - 7..got.len() - 3], &[3, 0, 0, 1]);
    }
}
