//! Drives the sandbox layer directly (no async runtime): launch a VM, run a command, read it.
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;

use agentvm_sandbox::base::{self, BaseOptions};
use agentvm_sandbox::config::{InitConfig, RootfsSpec, UserSpec};
use agentvm_sandbox::idmap::IdMapping;
use agentvm_sandbox::launch::{launch, LaunchSpec};
use agentvm_sandbox::protocol::{self, Event, Received, Request, SpawnRequest, Stdio};

fn next_event(rx: &mut protocol::Receiver, fd: &OwnedFd) -> Event {
    loop {
        match rx.receive::<Event>(fd.as_fd()).unwrap() {
            Received::Message(e, _) => return e,
            Received::Partial => continue,
            Received::Closed => panic!("init closed the control socket"),
        }
    }
}

#[test]
fn launch_and_run_a_command() {
    let data = tempfile::tempdir().unwrap();
    let ids = IdMapping::for_current_process(agentvm_sandbox::idmap::DEFAULT_PRIVILEGED_BASE);
    let base = base::build(
        &data.path().join("base"),
        &BaseOptions { host_root: Path::new("/"), owner: ids.base_layer_owner(), user_name: "user", user_id: 1000 },
    )
    .unwrap();
    let vm = data.path().join("vm");
    for d in ["upper", "work"] {
        std::fs::create_dir_all(vm.join(d)).unwrap();
        let (u, g) = ids.host_ids_of_vm_owner();
        std::os::unix::fs::chown(vm.join(d), Some(u), Some(g)).unwrap();
    }
    let config = InitConfig {
        hostname: "smoke".into(),
        rootfs: RootfsSpec {
            base: base.dir.clone(),
            upper: vm.join("upper"),
            work: vm.join("work"),
            readonly_binds: base.readonly_binds.clone(),
            data_binds: Vec::new(),
            max_ptys: 64,
        },
        user: UserSpec { name: "user".into(), uid: 1000, gid: 1000, home: "/home/user".into() },
        init_is_root: ids.init_is_root(),
        confinement: Default::default(),
        resolv_conf: None,
    };
    let t = std::time::Instant::now();
    let launcher = agentvm_sandbox::launcher::Launcher::start(
        Path::new(env!("CARGO_BIN_EXE_agentvm")),
        agentvm_sandbox::cgroup::CgroupHost::Unavailable("this test needs none".into()),
    )
    .unwrap();
    let agentvm_sandbox::launch::Launched { init, control, .. } =
        launch(&LaunchSpec { launcher: &launcher, ids, cgroup: None, config: &config }).unwrap();
    let mut rx = protocol::Receiver::new();
    match rx.receive::<Event>(control.as_fd()) {
        Ok(Received::Message(Event::Ready, _)) => {}
        Ok(Received::Message(other, _)) => panic!("{other:?}"),
        _ => {
            let status = init.wait_blocking().unwrap().unwrap_or(-1);
            panic!("init ended before it was ready: {}", agentvm_sandbox::launch::describe_early_exit(status));
        }
    }
    eprintln!("ready after {:?}", t.elapsed());
    let (in_r, in_w) = nix::unistd::pipe().unwrap();
    let (out_r, out_w) = nix::unistd::pipe().unwrap();
    let (err_r, err_w) = nix::unistd::pipe().unwrap();
    let request = Request::Spawn(SpawnRequest {
        id: 1,
        argv: vec![
            "/bin/sh".into(),
            "-c".into(),
            "echo hello; id; hostname; pwd; ls /; echo $$; ip link 2>/dev/null || cat /proc/net/dev".into(),
        ],
        env: vec!["PATH=/usr/bin:/bin".into(), "HOME=/home/user".into()],
        cwd: "/home/user".into(),
        stdio: Stdio::Pipes,
    });
    for (i, d) in protocol::encode(&request).unwrap().iter().enumerate() {
        let fds = [in_r.as_raw_fd(), out_w.as_raw_fd(), err_w.as_raw_fd()];
        protocol::send_datagram(control.as_fd(), d, if i == 0 { &fds } else { &[] }).unwrap();
    }
    drop((in_r, out_w, err_w, in_w));
    let pid = match next_event(&mut rx, &control) {
        Event::Spawned { pid, .. } => pid,
        other => panic!("{other:?}"),
    };
    let mut out = String::new();
    std::fs::File::from(out_r).read_to_string(&mut out).unwrap();
    let mut err = String::new();
    std::fs::File::from(err_r).read_to_string(&mut err).unwrap();
    eprintln!("pid {pid}\nstdout:\n{out}\nstderr:\n{err}");
    match next_event(&mut rx, &control) {
        Event::Exited { code, .. } => assert_eq!(code, 0),
        other => panic!("{other:?}"),
    }
    eprintln!("total {:?}", t.elapsed());
    assert!(out.starts_with("hello\nuid=1000(user)"));
    init.kill();
    init.wait_blocking().unwrap();
}
