//! `allProcesses` and `processTree` (acceptance 3 of the VM core issue).
mod common;

use agentvm_vm::{ProcessTreeNode, SpawnOptions};
use common::*;

#[tokio::test]
async fn background_jobs_of_a_shell_are_listed_nested_and_killed_with_it() {
    let h = host();
    let vm = h.vm("tree").await;
    assert!(vm.all_processes().await.unwrap().is_empty(), "a fresh VM lists no process");

    let args: Vec<String> = ["-c", "sleep 30 & sleep 31 & wait"].map(String::from).to_vec();
    let sh_pid = vm.spawn("sh", &args, SpawnOptions::default()).await.unwrap();
    eventually(10, "both sleeps running", || async {
        vm.all_processes().await.unwrap().iter().filter(|p| p.command == "sleep").count() == 2
    })
    .await;

    let all = vm.all_processes().await.unwrap();
    let shell = all.iter().find(|p| p.pid == sh_pid).expect("sh listed");
    assert_eq!((shell.command.as_str(), shell.args.as_slice()), ("sh", &args[..]));
    assert_eq!((shell.ppid, shell.pgid, shell.sid), (1, sh_pid, sh_pid));
    assert_eq!((shell.driver.as_str(), shell.status.as_str(), shell.exit_code), ("native", "running", None));
    assert_eq!(shell.cwd, "/home/user");
    assert!(shell.start_time > 1_600_000_000_000);
    let sleeps: Vec<_> = all.iter().filter(|p| p.command == "sleep").collect();
    for sleep in &sleeps {
        assert_eq!((sleep.ppid, sleep.pgid), (sh_pid, sh_pid), "{sleep:?}");
    }
    let mut sleep_args: Vec<&str> = sleeps.iter().map(|p| p.args[0].as_str()).collect();
    sleep_args.sort();
    assert_eq!(sleep_args, ["30", "31"]);

    let tree = vm.process_tree().await.unwrap();
    let root: &ProcessTreeNode = tree.iter().find(|n| n.info.pid == sh_pid).expect("sh is a root");
    let mut children: Vec<i32> = root.children.iter().map(|c| c.info.pid).collect();
    children.sort();
    let mut expected: Vec<i32> = sleeps.iter().map(|p| p.pid).collect();
    expected.sort();
    assert_eq!(children, expected);

    vm.kill_process(sh_pid).unwrap();
    assert_eq!(vm.wait_process(sh_pid).await.unwrap(), 137);
    eventually(10, "no process of the group alive", || async {
        vm.all_processes().await.unwrap().iter().all(|p| p.pgid != sh_pid || p.status == "exited")
    })
    .await;
    let left = sh(&vm, "pgrep -c -x sleep || true").await;
    assert_eq!(left.trim(), "0");
}
