//! `Keeper`: a server child process owned by a dedicated thread.
//!
//! The child gets PR_SET_PDEATHSIG so the kernel stops it if this process dies without running
//! `Drop`. That signal fires when the *thread* that forked the child exits, not the process, so
//! the fork happens on a thread that lives exactly as long as the server should.

use super::{DevDbError, io_err};
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitStatus};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub struct Keeper {
    stop: mpsc::Sender<()>,
    thread: Option<JoinHandle<()>>,
    status: Arc<Mutex<Option<ExitStatus>>>,
}

impl Keeper {
    /// Postgres: SIGINT is its fast shutdown, SIGQUIT its immediate one.
    pub fn spawn(cmd: Command) -> Result<Keeper, DevDbError> {
        Self::spawn_with(cmd, libc::SIGINT, libc::SIGQUIT)
    }

    /// `stop` is sent by [`Keeper::stop`]; `on_parent_death` by the kernel if we die first.
    /// The command's uid must be set with `Command::uid`, not by the server itself: a
    /// server that drops privileges on its own clears PR_SET_PDEATHSIG.
    pub fn spawn_with(mut cmd: Command, stop_signal: i32, on_parent_death: i32) -> Result<Keeper, DevDbError> {
        // SAFETY: prctl only sets a flag on the child; it is async-signal-safe.
        unsafe {
            cmd.pre_exec(move || {
                libc::prctl(libc::PR_SET_PDEATHSIG, on_parent_death);
                Ok(())
            });
        }
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let (started_tx, started_rx) = mpsc::channel();
        let status = Arc::new(Mutex::new(None));
        let seen = status.clone();
        let thread = std::thread::spawn(move || {
            let mut child = match cmd.spawn() {
                Ok(c) => c,
                Err(e) => {
                    let _ = started_tx.send(Err(e));
                    return;
                }
            };
            let _ = started_tx.send(Ok(()));
            loop {
                if let Ok(Some(s)) = child.try_wait() {
                    *seen.lock().unwrap_or_else(|e| e.into_inner()) = Some(s);
                    // Keep the thread until told to stop, so stop() has one path.
                    let _ = stop_rx.recv();
                    return;
                }
                match stop_rx.recv_timeout(Duration::from_millis(50)) {
                    Err(mpsc::RecvTimeoutError::Timeout) => continue,
                    _ => break,
                }
            }
            // SAFETY: kill with the pid of our own unreaped child.
            unsafe { libc::kill(child.id() as i32, stop_signal) };
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(10) {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        });
        match started_rx.recv() {
            Ok(Ok(())) => Ok(Keeper { stop: stop_tx, thread: Some(thread), status }),
            Ok(Err(e)) => Err(io_err("starting the server")(e)),
            Err(_) => Err(DevDbError::Missing("the server keeper thread died".into())),
        }
    }

    /// The exit status, if the child has exited on its own.
    pub fn exited(&self) -> Option<ExitStatus> {
        *self.status.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Fast shutdown (SIGINT), then SIGKILL after 10 s; returns when the child is gone.
    pub fn stop(mut self) {
        let _ = self.stop.send(());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Keeper {
    fn drop(&mut self) {
        let _ = self.stop.send(());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
