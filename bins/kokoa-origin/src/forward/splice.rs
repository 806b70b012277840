//! Relaying between two sockets with `splice(2)` (Linux): the bytes go socket → pipe →
//! socket inside the kernel and are never copied into this process.
//!
//! One pipe per direction. A direction fills its pipe from the source only when the pipe
//! is empty and drains it completely before reading again, so a `splice` that would block
//! always does so on the socket, whose readiness tokio tracks. At the source's end of
//! stream the destination's write side is shut down (the other direction goes on, as
//! with `copy_bidirectional`).
//!
//! Making a pipe costs four system calls (and closing it two more), a large part of a short
//! connection's cost: empty pipes are kept for the next connections, up to [`POOL`].

use std::{
    io,
    os::fd::OwnedFd,
    sync::{Mutex, PoisonError},
};

use rustix::{
    net::Shutdown,
    pipe::{PipeFlags, SpliceFlags},
};
use tokio::{io::Interest, net::TcpStream};

/// Bytes moved per `splice` call at most, and the pipe size asked for.
const CHUNK: usize = 1 << 16;
/// Empty pipes kept for later connections at most.
const POOL: usize = 256;

static PIPES: Mutex<Vec<Pipe>> = Mutex::new(Vec::new());

struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    /// Bytes in the pipe now.
    held: usize,
}

impl Pipe {
    /// A kept pipe, or a new one.
    fn take() -> io::Result<Self> {
        let kept = PIPES.lock().unwrap_or_else(PoisonError::into_inner).pop();
        kept.map_or_else(Self::new, Ok)
    }

    /// Keeps the pipe for another connection if it is empty and the pool has room.
    fn give_back(self) {
        if self.held == 0 {
            let mut pool = PIPES.lock().unwrap_or_else(PoisonError::into_inner);
            if pool.len() < POOL {
                pool.push(self);
            }
        }
    }

    fn new() -> io::Result<Self> {
        let (read, write) = rustix::pipe::pipe_with(PipeFlags::CLOEXEC | PipeFlags::NONBLOCK)?;
        // A larger pipe moves more per call; the default (16 pages) is kept if refused.
        let _ = rustix::pipe::fcntl_setpipe_size(&write, CHUNK);
        Ok(Self {
            read,
            write,
            held: 0,
        })
    }
}

const FLAGS: SpliceFlags = SpliceFlags::MOVE.union(SpliceFlags::NONBLOCK);

/// Moves everything `from` sends to `to` until `from` ends; returns the byte count.
async fn one_way(from: &TcpStream, to: &TcpStream, pipe: &mut Pipe) -> io::Result<u64> {
    let mut total = 0u64;
    loop {
        if pipe.held == 0 {
            let n = from
                .async_io(Interest::READABLE, || {
                    Ok(rustix::pipe::splice(
                        from,
                        None,
                        &pipe.write,
                        None,
                        CHUNK,
                        FLAGS,
                    )?)
                })
                .await?;
            if n == 0 {
                // End of stream: pass it on, as a half close.
                match rustix::net::shutdown(to, Shutdown::Write) {
                    Ok(()) | Err(rustix::io::Errno::NOTCONN) => return Ok(total),
                    Err(e) => return Err(e.into()),
                }
            }
            pipe.held = n;
        }
        let n = to
            .async_io(Interest::WRITABLE, || {
                Ok(rustix::pipe::splice(
                    &pipe.read, None, to, None, pipe.held, FLAGS,
                )?)
            })
            .await?;
        pipe.held -= n;
        total += n as u64;
    }
}

/// Relays between `a` and `b` until both directions ended; returns the bytes moved each
/// way (a to b, b to a).
pub(super) async fn relay(a: &TcpStream, b: &TcpStream) -> io::Result<(u64, u64)> {
    let (mut ab, mut ba) = (Pipe::take()?, Pipe::take()?);
    let moved = tokio::try_join!(one_way(a, b, &mut ab), one_way(b, a, &mut ba));
    // A pipe that still holds bytes (the relay failed midway) is closed, never reused.
    ab.give_back();
    ba.give_back();
    moved
}
