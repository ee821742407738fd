//! The data path: after authentication, bytes are copied both ways untouched.
//!
//! One future drives both directions (like `tokio::io::copy_bidirectional`) with one fixed
//! buffer each, allocated once per connection: no per-message parsing or allocation. Unlike
//! `copy_bidirectional`, the pump ends as soon as either side closes — a Postgres or MySQL
//! session is over when either peer hangs up — after delivering everything read before the close.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

const BUF_SIZE: usize = 16 * 1024;

/// Which side closed first, or that the pump stopped at an idle point on request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    Client,
    Server,
    /// [`Pump::close_at_idle`] was asked and the observer reported an idle point.
    Idle,
}

/// Sees every chunk the pump moves, to follow protocol message boundaries (headers only).
/// The pump never parses anything itself.
pub trait Observer {
    fn client_bytes(&mut self, _bytes: &[u8]) {}
    fn server_bytes(&mut self, _bytes: &[u8]) {}
    /// True when the session could be closed without cutting a transaction or a reply.
    fn is_idle(&self) -> bool {
        false
    }
}

/// No observation: the pump only copies.
impl Observer for () {}

/// Bytes moved in each direction.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Transferred {
    pub client_to_server: u64,
    pub server_to_client: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum PumpError {
    #[error("client connection: {0}")]
    Client(io::Error),
    #[error("server connection: {0}")]
    Server(io::Error),
}

struct Half {
    buf: Box<[u8]>,
    pos: usize,
    cap: usize,
    eof: bool,
    unflushed: bool,
    bytes: u64,
}

/// Why one half stopped.
enum HalfError {
    Read(io::Error),
    Write(io::Error),
}

impl Half {
    fn new() -> Self {
        Half { buf: vec![0; BUF_SIZE].into_boxed_slice(), pos: 0, cap: 0, eof: false, unflushed: false, bytes: 0 }
    }

    /// Everything read has been written.
    fn drained(&self) -> bool {
        self.pos == self.cap
    }

    /// Copies until the reader's EOF has been reached and everything before it written.
    fn poll_copy<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        mut r: Pin<&mut R>,
        mut w: Pin<&mut W>,
        mut seen: impl FnMut(&[u8]),
    ) -> Poll<Result<(), HalfError>>
    where
        R: AsyncRead + ?Sized,
        W: AsyncWrite + ?Sized,
    {
        loop {
            if self.pos == self.cap && !self.eof {
                let mut rb = ReadBuf::new(&mut self.buf);
                match r.as_mut().poll_read(cx, &mut rb) {
                    Poll::Ready(Ok(())) => {
                        let n = rb.filled().len();
                        if n == 0 {
                            self.eof = true;
                        } else {
                            seen(rb.filled());
                            self.pos = 0;
                            self.cap = n;
                            self.bytes += n as u64;
                        }
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(HalfError::Read(e))),
                    Poll::Pending => {
                        // Nothing more to read now: push out what TLS may still hold.
                        if self.unflushed {
                            ready!(w.as_mut().poll_flush(cx)).map_err(HalfError::Write)?;
                            self.unflushed = false;
                        }
                        return Poll::Pending;
                    }
                }
            }
            while self.pos < self.cap {
                let n = ready!(w.as_mut().poll_write(cx, &self.buf[self.pos..self.cap])).map_err(HalfError::Write)?;
                if n == 0 {
                    return Poll::Ready(Err(HalfError::Write(io::ErrorKind::WriteZero.into())));
                }
                self.pos += n;
                self.unflushed = true;
            }
            if self.eof {
                ready!(w.as_mut().poll_flush(cx)).map_err(HalfError::Write)?;
                return Poll::Ready(Ok(()));
            }
        }
    }
}

/// Copies between `client` and `server` until one side closes or fails.
pub struct Pump<'a, C: ?Sized, S: ?Sized, O = ()> {
    client: &'a mut C,
    server: &'a mut S,
    up: Half,
    down: Half,
    observer: O,
    close_at_idle: bool,
}

impl<'a, C, S, O> Pump<'a, C, S, O>
where
    C: AsyncRead + AsyncWrite + Unpin + ?Sized,
    S: AsyncRead + AsyncWrite + Unpin + ?Sized,
    O: Observer + Unpin,
{
    pub fn new(client: &'a mut C, server: &'a mut S, observer: O) -> Self {
        Pump { client, server, up: Half::new(), down: Half::new(), observer, close_at_idle: false }
    }

    pub fn transferred(&self) -> Transferred {
        Transferred { client_to_server: self.up.bytes, server_to_client: self.down.bytes }
    }

    /// From now on, end with [`Closed::Idle`] at the first idle point (max-TTL rollover).
    pub fn close_at_idle(&mut self) {
        self.close_at_idle = true;
    }

    pub fn closing_at_idle(&self) -> bool {
        self.close_at_idle
    }

    fn idle_now(&self) -> bool {
        self.close_at_idle && self.up.drained() && self.down.drained() && self.observer.is_idle()
    }
}

impl<C, S, O> Future for Pump<'_, C, S, O>
where
    C: AsyncRead + AsyncWrite + Unpin + ?Sized,
    S: AsyncRead + AsyncWrite + Unpin + ?Sized,
    O: Observer + Unpin,
{
    type Output = Result<Closed, PumpError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if this.idle_now() {
            return Poll::Ready(Ok(Closed::Idle));
        }
        let observer = &mut this.observer;
        let up = this.up.poll_copy(cx, Pin::new(&mut *this.client), Pin::new(&mut *this.server), |b| observer.client_bytes(b));
        if let Poll::Ready(r) = up {
            return Poll::Ready(match r {
                Ok(()) => Ok(Closed::Client),
                Err(HalfError::Read(e)) => Err(PumpError::Client(e)),
                Err(HalfError::Write(e)) => Err(PumpError::Server(e)),
            });
        }
        let observer = &mut this.observer;
        let down = this.down.poll_copy(cx, Pin::new(&mut *this.server), Pin::new(&mut *this.client), |b| observer.server_bytes(b));
        if let Poll::Ready(r) = down {
            return Poll::Ready(match r {
                Ok(()) => Ok(Closed::Server),
                Err(HalfError::Read(e)) => Err(PumpError::Server(e)),
                Err(HalfError::Write(e)) => Err(PumpError::Client(e)),
            });
        }
        if this.idle_now() {
            return Poll::Ready(Ok(Closed::Idle));
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, duplex};

    #[tokio::test]
    async fn copies_both_ways_and_ends_when_one_side_closes() {
        let (mut app, mut client_side) = duplex(64);
        let (mut server_side, mut db) = duplex(64);
        let task = tokio::spawn(async move {
            let mut pump = Pump::new(&mut client_side, &mut server_side, ());
            let closed = (&mut pump).await;
            (closed.unwrap(), pump.transferred())
        });
        let payload = vec![7u8; 100_000];
        let writer = {
            let payload = payload.clone();
            tokio::spawn(async move {
                app.write_all(&payload).await.unwrap();
                let mut back = vec![0u8; 5];
                app.read_exact(&mut back).await.unwrap();
                assert_eq!(&back, b"hello");
                app
            })
        };
        let mut got = vec![0u8; payload.len()];
        db.read_exact(&mut got).await.unwrap();
        assert_eq!(got, payload);
        db.write_all(b"hello").await.unwrap();
        let _app = writer.await.unwrap();
        drop(db);
        let (closed, t) = task.await.unwrap();
        assert_eq!(closed, Closed::Server);
        assert_eq!(t, Transferred { client_to_server: 100_000, server_to_client: 5 });
    }

    /// A server that stops reading (it failed a pipelined batch and is sending its error) stops
    /// the pump from reading the client too: leasegate holds at most one buffer of the client's
    /// bytes, so the client learns of the error about when it would without leasegate.
    #[tokio::test]
    async fn read_ahead_stops_while_the_server_does_not_read() {
        let (mut app, mut client_side) = duplex(1024);
        let (mut server_side, _db) = duplex(1024);
        let pump = tokio::spawn(async move {
            let mut pump = Pump::new(&mut client_side, &mut server_side, ());
            let _ = tokio::time::timeout(std::time::Duration::from_millis(300), &mut pump).await;
            pump.transferred()
        });
        let mut written = 0usize;
        let chunk = [b'B'; 512];
        while let Ok(Ok(n)) = tokio::time::timeout(std::time::Duration::from_millis(100), app.write(&chunk)).await {
            written += n;
        }
        let moved = pump.await.unwrap();
        // What the client could write: the pump's buffer plus what the two pipes hold.
        assert!(written <= BUF_SIZE + 4 * 1024, "the client wrote {written} bytes into a stalled server");
        assert!(moved.client_to_server <= 2 * 1024, "{moved:?}");
    }
}
