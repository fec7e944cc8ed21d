//! Attaching a file to a loop block device, so that a filesystem image can be mounted.
//!
//! Two ioctls: `LOOP_CTL_GET_FREE` on `/dev/loop-control` names a free device (creating one if
//! all are taken), and `LOOP_CONFIGURE` binds our file to it in one step. Another process may
//! take the same free device between the two calls; `LOOP_CONFIGURE` then fails with `EBUSY`
//! and we ask again. Devices are configured with `LO_FLAGS_AUTOCLEAR`: the kernel detaches the
//! file when the last user (the mounted filesystem) lets go, so an unmount leaves no loop
//! device behind.
//!
//! Written here rather than with the `loopdev` crate, which generates its bindings with bindgen
//! (libclang at build time) for these two calls and two structs.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::PathBuf;

const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
const LOOP_CONFIGURE: libc::c_ulong = 0x4C0A;
const LO_FLAGS_AUTOCLEAR: u32 = 4;
/// Block size of the device: btrfs' sector size, so no I/O is split or read-modify-written.
const BLOCK_SIZE: u32 = 4096;

/// `struct loop_info64` from `<linux/loop.h>`.
#[repr(C)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; 64],
    lo_crypt_name: [u8; 64],
    lo_encrypt_key: [u8; 32],
    lo_init: [u64; 2],
}

/// `struct loop_config` from `<linux/loop.h>`.
#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

/// An attached loop device. The attachment outlives this handle while the device is in use
/// (mounted); once nothing uses it any more the kernel detaches it (autoclear).
#[derive(Debug)]
pub struct LoopDevice {
    pub path: PathBuf,
    _device: File,
}

/// Binds `image` to a free loop device.
pub fn attach(image: &File, name_hint: &str) -> io::Result<LoopDevice> {
    let control = OpenOptions::new().read(true).write(true).open("/dev/loop-control")?;
    let mut last_error = None;
    for _ in 0..16 {
        // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns a device number.
        let number = unsafe { libc::ioctl(control.as_raw_fd(), LOOP_CTL_GET_FREE) };
        if number < 0 {
            return Err(io::Error::last_os_error());
        }
        let path = PathBuf::from(format!("/dev/loop{number}"));
        let device = OpenOptions::new().read(true).write(true).open(&path)?;
        let mut info = LoopInfo64 {
            lo_device: 0,
            lo_inode: 0,
            lo_rdevice: 0,
            lo_offset: 0,
            lo_sizelimit: 0,
            lo_number: 0,
            lo_encrypt_type: 0,
            lo_encrypt_key_size: 0,
            lo_flags: LO_FLAGS_AUTOCLEAR,
            lo_file_name: [0; 64],
            lo_crypt_name: [0; 64],
            lo_encrypt_key: [0; 32],
            lo_init: [0; 2],
        };
        // Shown by `losetup -l` as the backing file; informational only.
        let hint = name_hint.as_bytes();
        let len = hint.len().min(info.lo_file_name.len() - 1);
        info.lo_file_name[..len].copy_from_slice(&hint[..len]);
        let config = LoopConfig { fd: image.as_raw_fd() as u32, block_size: BLOCK_SIZE, info, reserved: [0; 8] };
        // SAFETY: LOOP_CONFIGURE reads a `struct loop_config`, which `config` is, laid out as C.
        let rc = unsafe { libc::ioctl(device.as_raw_fd(), LOOP_CONFIGURE, &config as *const LoopConfig) };
        if rc == 0 {
            return Ok(LoopDevice { path, _device: device });
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EBUSY) {
            return Err(io::Error::new(err.kind(), format!("configuring {}: {err}", path.display())));
        }
        last_error = Some(err);
    }
    Err(last_error.unwrap_or_else(|| io::Error::other("no free loop device")))
}
