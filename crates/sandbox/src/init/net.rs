//! Network setup inside the VM: a new network namespace has only `lo`, and it is down.

use std::io;

/// Sets `IFF_UP` on `lo` with the classic `SIOCSIFFLAGS` ioctl (no netlink needed for one flag).
pub fn loopback_up() -> io::Result<()> {
    // SAFETY: plain socket(2); the descriptor is closed below.
    let sock = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if sock < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: ifreq is plain data; we fill the name and read/write the flags union member.
    let result = unsafe {
        let mut req: libc::ifreq = std::mem::zeroed();
        for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
            *dst = *src as libc::c_char;
        }
        if libc::ioctl(sock, libc::SIOCGIFFLAGS as _, &mut req) < 0 {
            Err(io::Error::last_os_error())
        } else {
            req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            if libc::ioctl(sock, libc::SIOCSIFFLAGS as _, &req) < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(())
            }
        }
    };
    // SAFETY: closing the socket we opened.
    unsafe { libc::close(sock) };
    result
}
