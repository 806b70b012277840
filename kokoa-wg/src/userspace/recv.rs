//! Datagrams received in batches: one `recvmmsg(2)` takes every datagram already queued
//! (up to [`BATCH`]), so a busy tunnel pays one system call for many packets.

use std::{
    io,
    mem::{self, MaybeUninit},
    net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket},
    os::fd::AsRawFd,
};

/// Datagrams taken per system call at most.
const BATCH: usize = 32;
/// Largest datagram: a 65 535-byte packet plus WireGuard's overhead.
const SIZE: usize = 65_535 + 32;

/// Receive buffers and their addresses, reused for every call.
pub(crate) struct Batch {
    buffers: Vec<Vec<u8>>,
    addresses: Vec<libc::sockaddr_storage>,
    lengths: [usize; BATCH],
}

impl Batch {
    pub(crate) fn new() -> Self {
        Self {
            // Only the pages a datagram touches become resident.
            buffers: (0..BATCH).map(|_| vec![0u8; SIZE]).collect(),
            // SAFETY: an all-zero sockaddr_storage is a valid (unspecified) address.
            addresses: vec![unsafe { MaybeUninit::zeroed().assume_init() }; BATCH],
            lengths: [0; BATCH],
        }
    }

    /// Waits for at least one datagram (as long as the socket's read timeout allows) and
    /// takes every one already queued; returns how many.
    pub(crate) fn receive(&mut self, socket: &UdpSocket) -> io::Result<usize> {
        let mut iovecs: Vec<libc::iovec> = self
            .buffers
            .iter_mut()
            .map(|b| libc::iovec {
                iov_base: b.as_mut_ptr().cast(),
                iov_len: b.len(),
            })
            .collect();
        let mut headers: Vec<libc::mmsghdr> = iovecs
            .iter_mut()
            .zip(self.addresses.iter_mut())
            .map(|(iov, addr)| {
                // SAFETY: msghdr is plain data; zero is a valid start for every field.
                let mut hdr: libc::msghdr = unsafe { mem::zeroed() };
                hdr.msg_name = (addr as *mut libc::sockaddr_storage).cast();
                hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
                hdr.msg_iov = iov;
                hdr.msg_iovlen = 1;
                libc::mmsghdr {
                    msg_hdr: hdr,
                    msg_len: 0,
                }
            })
            .collect();
        // SAFETY: every header points at a live buffer and address of `self`, sized as
        // declared; the kernel writes at most that much.
        let n = unsafe {
            libc::recvmmsg(
                socket.as_raw_fd(),
                headers.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = n as usize;
        for (length, header) in self.lengths.iter_mut().zip(&headers[..n]) {
            *length = header.msg_len as usize;
        }
        Ok(n)
    }

    /// Datagram `i` of the last batch and its sender.
    pub(crate) fn get(&self, i: usize) -> (&[u8], SocketAddr) {
        (
            &self.buffers[i][..self.lengths[i]],
            address(&self.addresses[i]),
        )
    }
}

fn address(storage: &libc::sockaddr_storage) -> SocketAddr {
    match storage.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: the kernel wrote a sockaddr_in for an AF_INET sender.
            let a: &libc::sockaddr_in = unsafe { &*(storage as *const _ as *const _) };
            SocketAddr::new(
                Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)).into(),
                u16::from_be(a.sin_port),
            )
        }
        _ => {
            // SAFETY: the socket is IPv4 or IPv6; anything not IPv4 is a sockaddr_in6.
            let a: &libc::sockaddr_in6 = unsafe { &*(storage as *const _ as *const _) };
            SocketAddr::new(
                Ipv6Addr::from(a.sin6_addr.s6_addr).into(),
                u16::from_be(a.sin6_port),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Datagrams queued on a socket come out of one call, in order, with their senders.
    #[test]
    fn one_call_takes_every_queued_datagram() {
        let receiver = UdpSocket::bind("127.0.0.1:0").unwrap();
        let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
        for i in 0..5u8 {
            sender
                .send_to(
                    &vec![i; 100 + usize::from(i)],
                    receiver.local_addr().unwrap(),
                )
                .unwrap();
        }
        let mut batch = Batch::new();
        let mut got = Vec::new();
        while got.len() < 5 {
            let n = batch.receive(&receiver).unwrap();
            for i in 0..n {
                let (data, from) = batch.get(i);
                assert_eq!(from, sender.local_addr().unwrap());
                got.push(data.to_vec());
            }
        }
        for (i, data) in got.iter().enumerate() {
            assert_eq!(data.len(), 100 + i);
            assert!(data.iter().all(|b| usize::from(*b) == i));
        }
    }
}
