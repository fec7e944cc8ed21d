//! Giving freed memory back to the system.
//!
//! glibc's allocator keeps freed memory in its arenas (one per thread that allocated, and
//! tokio has many) instead of returning it, so after a burst of output the server's resident
//! size stays at its peak even once every buffer is freed. When VMs go to sleep, what they held
//! is free: [`release_free_memory`] asks glibc to return free pages of every arena
//! (`malloc_trim(3)`). There is no crate for this one call.

/// Returns free heap pages to the system. Blocking (it walks every arena): call it from a
/// blocking thread. A no-op on C libraries other than glibc.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim only inspects and releases the allocator's own free memory; it
        // takes the arenas' locks itself and is safe to call from any thread at any time.
        unsafe {
            libc::malloc_trim(0);
        }
    }
}
