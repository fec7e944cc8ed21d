//! Creating a VM: the host-wide budgets it needs, its directory and cgroups, launching init,
//! the environment every program starts with, and waiting for init to report ready.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex, OnceLock};

use agentvm_sandbox::config::{Bind, Confinement, InitConfig, RootfsSpec};
use agentvm_sandbox::launch::{describe_early_exit, launch, LaunchSpec, Launched};
use agentvm_sandbox::launcher::CgroupRequest;
use tokio::sync::oneshot;

use crate::control;
use crate::error::{Result, VmError};
use crate::events::EventLog;
use crate::host::VmHost;
use crate::process::ProcessTable;
use crate::shell::ShellTable;
use crate::types::VmOptions;

use super::teardown::teardown;
use super::{Shared, Vm, VmInner, DEFAULT_PATH};

impl Vm {
    pub(crate) async fn create(host: VmHost, id: String, options: VmOptions) -> Result<Vm> {
        let create_failed = |message: String| VmError::CreateFailed { vm: id.clone(), message };
        // Host-wide budgets first: a VM that cannot have its terminals does not boot.
        let terminals = crate::terminal_budget::TerminalBudget::global().reserve(options.max_ptys)?;
        let (upper, work, ids, range_lease) = host.prepare_vm_dir(&id)?;
        // The quota is lifted while init mounts the root filesystem (overlayfs needs a little
        // room in `work`: a VM at its quota would otherwise boot read-only and could not free
        // space) and set once init is ready, before any program of the VM runs.
        host.apply_disk_quota(&id, None)?;
        let inner = &host.inner;
        let hostname = options.hostname.clone().unwrap_or_else(|| hostname_for(&id));
        let config = InitConfig {
            hostname: hostname.clone(),
            rootfs: RootfsSpec {
                base: inner.base.dir.clone(),
                upper,
                work,
                readonly_binds: inner.base.readonly_binds.clone(),
                data_binds: vec![Bind { source: inner.software_dir.clone(), target: agentvm_agents::VM_MOUNT.into() }],
                max_ptys: options.max_ptys,
            },
            user: inner.user.clone(),
            init_is_root: ids.init_is_root(),
            confinement: options
                .confinement
                .clone()
                .unwrap_or_else(|| Confinement::sized_for(options.limits.memory_bytes, options.limits.pids)),
            resolv_conf: options.resolv_conf.clone(),
        };

        // Creating cgroups and launching are a few blocking system calls.
        let launch_host = host.clone();
        let limits = options.limits;
        let launched = tokio::task::spawn_blocking(move || -> Result<Launched> {
            let h = &launch_host.inner;
            let cgroup = CgroupRequest { limits: &limits, cpus: &config.confinement.proc_view.cpus };
            let spec = LaunchSpec { launcher: &h.launcher, ids, cgroup: Some(cgroup), config: &config };
            launch(&spec).map_err(|e| VmError::io("starting the VM", e))
        })
        .await
        .map_err(|e| create_failed(format!("launcher task failed: {e}")))??;
        let Launched { init, control, cgroup } = launched;

        let (ready_tx, ready_rx) = oneshot::channel();
        let owns_events = options.events.is_none();
        let shared = Arc::new(Shared {
            id: id.clone(),
            events: options.events.clone().unwrap_or_else(|| EventLog::new(options.event_log)),
            owns_events,
            processes: Mutex::new(ProcessTable::default()),
            shells: Arc::new(Mutex::new(ShellTable::default())),
            pending: Mutex::new(HashMap::new()),
            next_request: AtomicU64::new(1),
            alive: AtomicBool::new(true),
            stopped: tokio::sync::watch::Sender::new(false),
            ready: Mutex::new(Some(ready_tx)),
            outgoing: OnceLock::new(),
            process_log_bytes: options.process_log_bytes,
            replay_budget: crate::replay_log::Budget::new(crate::replay_log::REPLAY_BYTES_PER_VM),
        });
        let started = nix::fcntl::fcntl(&control, nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK))
            .map_err(std::io::Error::from)
            .and_then(|_| {
                let on_event = Arc::clone(&shared);
                let on_close = Arc::clone(&shared);
                control::start(control, move |e, fds| on_event.handle(e, fds), move || on_close.init_gone())
            });
        let outgoing = match started {
            Ok(tx) => tx,
            Err(e) => {
                teardown(&init, cgroup.as_ref());
                return Err(VmError::io("watching the VM's control socket", e));
            }
        };
        let _ = shared.outgoing.set(outgoing.clone());

        let mut env = BTreeMap::new();
        let user = &inner.user;
        let login_shell = inner.base.shell.clone();
        for (k, v) in [
            ("HOME", user.home.as_str()),
            ("USER", user.name.as_str()),
            ("LOGNAME", user.name.as_str()),
            ("SHELL", inner.base.shell.as_str()),
            ("PATH", DEFAULT_PATH),
            ("LANG", "C.UTF-8"),
            ("HOSTNAME", hostname.as_str()),
        ] {
            env.insert(k.to_string(), v.to_string());
        }
        env.extend(options.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        let vm = Vm {
            inner: Arc::new(VmInner {
                shared,
                outgoing,
                init,
                cgroup,
                env,
                home: user.home.clone(),
                login_shell,
                exec_output_bytes: options.exec_output_bytes,
                torn_down: AtomicBool::new(false),
                _range_lease: range_lease,
                _terminals: terminals,
            }),
        };
        match ready_rx.await {
            Ok(Ok(())) => match host.apply_disk_quota(&id, options.disk_bytes) {
                Ok(()) => Ok(vm),
                Err(e) => {
                    vm.inner.teardown();
                    Err(e)
                }
            },
            Ok(Err(message)) => {
                vm.inner.teardown();
                Err(create_failed(message))
            }
            Err(_) => {
                // Init exited before it was ready; its exit status says why.
                let status = vm.inner.init.wait_blocking().ok().flatten();
                vm.inner.teardown();
                Err(create_failed(
                    status.map_or_else(|| "init exited before the VM was ready".into(), describe_early_exit),
                ))
            }
        }
    }
}

/// A valid host name from any text (a VM id, an actor key): at most 63 characters of
/// lowercase letters, digits and `-`; `agentvm` when nothing usable remains.
pub fn hostname_for(id: &str) -> String {
    let name: String =
        id.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).take(63).collect();
    let name = name.trim_matches('-').to_string();
    if name.is_empty() {
        "agentvm".into()
    } else {
        name
    }
}
