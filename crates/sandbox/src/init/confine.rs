//! The last step of boot: init confines itself, and through inheritance every process of the
//! VM, before it serves the first request.
//!
//! In order:
//! 1. the VM's namespace limits and the resource limits ([`super::limits`]), while init still
//!    holds the capabilities to write them;
//! 2. an empty capability bounding set: init keeps the capabilities it holds (it needs them to
//!    switch ids and own terminals), but no process it starts can ever gain one back, not even by
//!    executing a file with capabilities or a set-user-id root program;
//! 3. `no_new_privs` and the [`crate::seccomp`] policy.
//!
//! Each command then drops the capabilities it inherited from init as it starts ([`super::spawn`]),
//! so it runs with all five capability sets empty.

use crate::config::InitConfig;
use crate::seccomp::{self, Policy, SeccompError};

use super::limits::{self, LimitError};

#[derive(Debug, thiserror::Error)]
pub enum ConfineError {
    #[error(transparent)]
    Limits(#[from] LimitError),
    #[error("dropping capability {cap} from the bounding set: {source}")]
    BoundingSet { cap: u32, source: std::io::Error },
    #[error(transparent)]
    Seccomp(#[from] SeccompError),
}

/// Applies every layer; see the module documentation.
pub fn confine(config: &InitConfig) -> Result<(), ConfineError> {
    let confinement = &config.confinement;
    limits::apply_namespace_limits(confinement, config.init_is_root)?;
    limits::apply_rlimits(confinement)?;
    drop_bounding_set()?;
    let filters = seccomp::build(Policy { allow_nested_userns: confinement.allow_nested_userns })?;
    filters.install()?;
    Ok(())
}

/// Empties the calling process's capability bounding set (`PR_CAPBSET_DROP` for every
/// capability the kernel knows; it answers `EINVAL` past the last one).
fn drop_bounding_set() -> Result<(), ConfineError> {
    for cap in 0..64u32 {
        // SAFETY: prctl with integer arguments only.
        let r = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
        if r != 0 {
            let source = std::io::Error::last_os_error();
            if source.raw_os_error() == Some(libc::EINVAL) {
                return Ok(());
            }
            return Err(ConfineError::BoundingSet { cap, source });
        }
    }
    Ok(())
}
