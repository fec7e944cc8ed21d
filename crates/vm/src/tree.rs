//! Building `processTree` from a flat process list.

use std::collections::{HashMap, HashSet};

use crate::types::{ProcessInfo, ProcessTreeNode};

/// A forest by parent pid: roots are processes whose parent is not in the list (init's direct
/// children, since init itself is not listed). Children are ordered by pid.
pub fn build_tree(mut list: Vec<ProcessInfo>) -> Vec<ProcessTreeNode> {
    list.sort_by_key(|p| p.pid);
    let pids: HashSet<i32> = list.iter().map(|p| p.pid).collect();
    let mut children: HashMap<i32, Vec<ProcessInfo>> = HashMap::new();
    let mut roots = Vec::new();
    for info in list {
        if info.ppid != info.pid && pids.contains(&info.ppid) {
            children.entry(info.ppid).or_default().push(info);
        } else {
            roots.push(info);
        }
    }
    roots.into_iter().map(|info| attach(info, &mut children)).collect()
}

fn attach(info: ProcessInfo, children: &mut HashMap<i32, Vec<ProcessInfo>>) -> ProcessTreeNode {
    let kids = children.remove(&info.pid).unwrap_or_default();
    ProcessTreeNode { children: kids.into_iter().map(|k| attach(k, children)).collect(), info }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pid: i32, ppid: i32) -> ProcessInfo {
        ProcessInfo {
            pid,
            ppid,
            pgid: pid,
            sid: pid,
            driver: "native".into(),
            command: "x".into(),
            args: vec![],
            cwd: "/".into(),
            status: "running".into(),
            exit_code: None,
            start_time: 0,
            exit_time: None,
        }
    }

    #[test]
    fn nests_by_parent() {
        let tree = build_tree(vec![p(5, 2), p(2, 1), p(6, 2), p(9, 5), p(3, 1)]);
        assert_eq!(tree.iter().map(|n| n.info.pid).collect::<Vec<_>>(), [2, 3]);
        let two = &tree[0];
        assert_eq!(two.children.iter().map(|n| n.info.pid).collect::<Vec<_>>(), [5, 6]);
        assert_eq!(two.children[0].children[0].info.pid, 9);
        let json = serde_json::to_value(&tree[1]).unwrap();
        assert_eq!(json["pid"], 3);
        assert!(json["children"].as_array().unwrap().is_empty());
    }
}
