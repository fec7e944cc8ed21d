//! Files: visible to later commands, and `/home/user` survives re-creating the VM from its
//! directory (acceptance 5 of the VM core issue).
mod common;

use std::time::Duration;

use agentvm_vm::{HostConfig, VmHost};
use common::*;

#[tokio::test]
async fn files_are_visible_to_later_commands() {
    let h = host();
    let vm = h.vm("files-later").await;
    sh(&vm, "echo home > /home/user/a.txt && mkdir -p /home/user/dir && echo tmp > /tmp/b.txt").await;
    assert_eq!(sh(&vm, "cat /home/user/a.txt /tmp/b.txt; ls /home/user").await, "home\ntmp\na.txt\ndir\n");
}

#[tokio::test]
async fn home_survives_destroying_and_recreating_the_vm() {
    let h = host();
    let vm = h.vm("durable").await;
    sh(&vm, "echo kept > /home/user/notes.txt && echo gone > /tmp/scratch && mkdir -p /home/user/.config/x").await;
    vm.shutdown(Duration::from_secs(1)).await;
    assert!(!vm.is_running());
    drop(vm);

    let vm = h.vm("durable").await;
    assert_eq!(sh(&vm, "cat /home/user/notes.txt").await, "kept\n");
    assert!(sh(&vm, "ls -d /home/user/.config/x").await.contains("x"));
    assert_ne!(run(&vm, "cat /tmp/scratch").await.exit_code, 0, "/tmp is not durable");
    // Changes the VM made elsewhere in its root also live in its own layer.
    sh(&vm, "echo 'export FOO=1' >> /home/user/.profile").await;
    drop(vm);

    // A new host on the same data directory (a server restart) finds the VM's files.
    let data = h.dir.path().join("data");
    let TestHost { host, dir } = h;
    drop(host);
    let again = VmHost::new(HostConfig::new(&data, env!("CARGO_BIN_EXE_agentvm"))).unwrap();
    let vm = again.create_vm("durable", Default::default()).await.unwrap();
    assert_eq!(sh(&vm, "cat /home/user/notes.txt; tail -1 /home/user/.profile").await, "kept\nexport FOO=1\n");
    drop(vm);
    drop(dir);
}

#[tokio::test]
async fn two_hosts_cannot_share_a_data_directory() {
    let h = host();
    let err = VmHost::new(HostConfig::new(h.dir.path().join("data"), env!("CARGO_BIN_EXE_agentvm"))).err().unwrap();
    assert!(err.to_string().contains("in use by another agentvm process"), "{err}");
}

#[tokio::test]
async fn removing_a_vms_data_gives_a_fresh_vm() {
    let h = host();
    let vm = h.vm("fresh").await;
    sh(&vm, "echo x > /home/user/x").await;
    vm.shutdown(Duration::ZERO).await;
    drop(vm);
    h.host.remove_vm_data("fresh").unwrap();
    assert!(!h.host.vm_dir("fresh").exists());
    let vm = h.vm("fresh").await;
    assert_eq!(sh(&vm, "ls -A /home/user").await, "");
    assert!(h.host.remove_vm_data("../escape").is_err());
}
