//! Opening client sockets, optionally from a chosen loopback source address.
//!
//! One destination port and one source address give at most ~28,000 client ports; a million
//! connections need many source addresses. `IP_BIND_ADDRESS_NO_PORT` lets bind() pick the
//! address only and defer the port choice to connect(), so the same port can be reused for
//! different destinations and bind() never runs out of ports first.

use monoio::net::TcpStream;
use socket2::{Domain, Socket, Type};
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd};

/// Connects to `target`, from `source` if given, with TCP_NODELAY (every batch goes out now).
pub async fn connect(target: SocketAddr, source: Option<Ipv4Addr>) -> io::Result<TcpStream> {
    let Some(src) = source else {
        let s = TcpStream::connect_addr(target).await?;
        s.set_nodelay(true)?;
        return Ok(s);
    };
    let sock = Socket::new(Domain::for_address(target), Type::STREAM, None)?;
    sock.set_nonblocking(true)?;
    sock.set_tcp_nodelay(true)?;
    set_bind_address_no_port(&sock)?;
    sock.bind(&SocketAddr::from((src, 0)).into())?;
    match sock.connect(&target.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    // SAFETY: the fd is a connected (or connecting) TCP socket we own; ownership moves along.
    let std = unsafe { std::net::TcpStream::from_raw_fd(sock.into_raw_fd()) };
    let stream = TcpStream::from_std(std)?;
    stream.writable(false).await?;
    // The outcome of a non-blocking connect is in SO_ERROR.
    let err = so_error(stream.as_raw_fd())?;
    if err != 0 {
        return Err(io::Error::from_raw_os_error(err));
    }
    Ok(stream)
}

fn set_bind_address_no_port(sock: &Socket) -> io::Result<()> {
    let one: libc::c_int = 1;
    // SAFETY: valid fd, option value is a c_int of the given size.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn so_error(fd: i32) -> io::Result<i32> {
    let mut err: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: valid fd; err/len point to a c_int and its size.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ERROR,
            (&mut err as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc == 0 {
        Ok(err)
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Raises this process's open-file soft limit to its hard limit; returns the limit in force.
pub fn raise_nofile() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: valid pointer to an rlimit.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        if lim.rlim_cur < lim.rlim_max {
            let want = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                lim = want;
            }
        }
    }
    #[allow(clippy::unnecessary_cast)] // rlim_t is u64 on Linux x86-64, not on every target
    let cur = lim.rlim_cur as u64;
    cur
}
