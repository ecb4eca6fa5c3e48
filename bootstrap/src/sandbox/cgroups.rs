//! Per-host cgroups: `sbx-<name>` in every hierarchy this process is in.
//!
//! Without them every nspawn host would share one cgroup tree and the
//! hosts' containerd/kubelet would trample each other. nspawn moves its own
//! processes into `supervisor`/`payload` children and the host's systemd
//! builds its tree under `payload`; removal walks the whole subtree.

use std::fs;
use std::path::{Path, PathBuf};
use std::thread::sleep;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Errors creating, joining or removing cgroups.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("failed to read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("failed to create cgroup {path}: {source}")]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("failed to move process {pid} into cgroup {path}: {source}")]
    Join {
        pid: u32,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "cgroup hierarchy {hierarchy:?} of this process is not mounted; mount the cgroup hierarchies under /sys/fs/cgroup"
    )]
    NotMounted { hierarchy: String },
    #[error(
        "failed to remove cgroup {path}: {source}; processes may still be in it (see {path}/cgroup.procs)"
    )]
    Remove {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// One mounted cgroup hierarchy: its mount point, the mount's root, and
/// whether it is cgroup2 and/or holds the cpuset controller.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Mount {
    mount_point: PathBuf,
    root: String,
    v2: bool,
    options: Vec<String>,
}

fn parse_mounts(mountinfo: &str) -> Vec<Mount> {
    let mut out = Vec::new();
    for line in mountinfo.lines() {
        // ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTS
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let l: Vec<&str> = left.split(' ').collect();
        let r: Vec<&str> = right.split(' ').collect();
        let ([_, _, _, root, mount_point, ..], [fstype, _, super_options, ..]) =
            (l.as_slice(), r.as_slice())
        else {
            continue;
        };
        let v2 = match *fstype {
            "cgroup2" => true,
            "cgroup" => false,
            _ => continue,
        };
        out.push(Mount {
            mount_point: PathBuf::from(unescape(mount_point)),
            root: unescape(root),
            v2,
            options: super_options.split(',').map(str::to_owned).collect(),
        });
    }
    out
}

fn unescape(s: &str) -> String {
    s.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\134", "\\")
}

/// The directories of this process's own cgroups, one per mounted
/// hierarchy, from `/proc/self/cgroup` and `/proc/self/mountinfo`.
fn own_cgroup_dirs(proc_cgroup: &str, mountinfo: &str) -> Result<Vec<PathBuf>, CgroupError> {
    let mounts = parse_mounts(mountinfo);
    let mut dirs = Vec::new();
    for line in proc_cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_id), Some(ctrls), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let wanted: Vec<&str> = ctrls.split(',').filter(|c| !c.is_empty()).collect();
        let mount = mounts.iter().find(|m| {
            if wanted.is_empty() {
                m.v2
            } else {
                !m.v2 && wanted.iter().all(|c| m.options.iter().any(|o| o == c))
            }
        });
        let Some(mount) = mount else {
            if wanted.is_empty() {
                // A cgroup2 line without a mounted unified hierarchy: pure v1.
                continue;
            }
            return Err(CgroupError::NotMounted {
                hierarchy: ctrls.to_owned(),
            });
        };
        let rel = path
            .strip_prefix(mount.root.as_str())
            .unwrap_or(path)
            .trim_start_matches('/');
        let dir = if rel.is_empty() {
            mount.mount_point.clone()
        } else {
            mount.mount_point.join(rel)
        };
        if !dirs.contains(&dir) {
            dirs.push(dir);
        }
    }
    Ok(dirs)
}

/// The `sbx-<name>` directories a host launched from this process gets.
pub fn host_cgroup_dirs(name: &str) -> Result<Vec<PathBuf>, CgroupError> {
    let read = |p: &str| {
        fs::read_to_string(p).map_err(|source| CgroupError::Read {
            path: p.into(),
            source,
        })
    };
    let dirs = own_cgroup_dirs(&read("/proc/self/cgroup")?, &read("/proc/self/mountinfo")?)?;
    Ok(dirs
        .into_iter()
        .map(|d| d.join(format!("sbx-{name}")))
        .collect())
}

/// Creates the directories (a new cpuset group gets its parent's cpus and
/// mems, else no process may join it).
pub fn create(dirs: &[PathBuf]) -> Result<(), CgroupError> {
    for dir in dirs {
        match fs::create_dir(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(source) => {
                return Err(CgroupError::Create {
                    path: dir.clone(),
                    source,
                });
            }
        }
        if dir.join("cpuset.cpus").exists() {
            let parent = dir.parent().unwrap_or(Path::new("/"));
            for f in ["cpuset.cpus", "cpuset.mems"] {
                let cur = fs::read_to_string(dir.join(f)).unwrap_or_default();
                if !cur.trim().is_empty() {
                    continue;
                }
                let value =
                    fs::read_to_string(parent.join(f)).map_err(|source| CgroupError::Read {
                        path: parent.join(f),
                        source,
                    })?;
                fs::write(dir.join(f), value.trim()).map_err(|source| CgroupError::Create {
                    path: dir.join(f),
                    source,
                })?;
            }
        }
    }
    Ok(())
}

/// Moves process `pid` into every directory.
pub fn join(dirs: &[PathBuf], pid: u32) -> Result<(), CgroupError> {
    for dir in dirs {
        fs::write(dir.join("cgroup.procs"), pid.to_string()).map_err(|source| {
            CgroupError::Join {
                pid,
                path: dir.clone(),
                source,
            }
        })?;
    }
    Ok(())
}

/// Every directory of the subtree, children before parents.
fn subtree(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                out.extend(subtree(&e.path()));
            }
        }
    }
    if dir.is_dir() {
        out.push(dir.to_path_buf());
    }
    out
}

/// PIDs of every process in the subtrees.
pub fn procs(dirs: &[PathBuf]) -> Vec<u32> {
    let mut pids = Vec::new();
    for dir in dirs {
        for d in subtree(dir) {
            if let Ok(text) = fs::read_to_string(d.join("cgroup.procs")) {
                pids.extend(text.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
            }
        }
    }
    pids.sort_unstable();
    pids.dedup();
    pids
}

/// SIGKILLs every process in the subtrees until none is left (or `timeout`).
pub fn kill_all(dirs: &[PathBuf], timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let pids = procs(dirs);
        if pids.is_empty() || Instant::now() > deadline {
            return;
        }
        for pid in pids {
            if let Ok(p) = i32::try_from(pid) {
                let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
            }
        }
        sleep(Duration::from_millis(50));
    }
}

/// Removes the subtrees (children first), retrying briefly while the
/// kernel finishes tearing down killed processes. Missing dirs are fine.
pub fn remove(dirs: &[PathBuf], timeout: Duration) -> Result<(), CgroupError> {
    let deadline = Instant::now() + timeout;
    for dir in dirs {
        for d in subtree(dir) {
            loop {
                match fs::remove_dir(&d) {
                    Ok(()) => break,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                    Err(source) => {
                        if Instant::now() > deadline {
                            return Err(CgroupError::Remove { path: d, source });
                        }
                        kill_all(std::slice::from_ref(&d), Duration::from_millis(200));
                        sleep(Duration::from_millis(50));
                    }
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
50 31 0:39 / /sys/fs/cgroup/net_cls,net_prio rw,relatime shared:9 - cgroup cgroup rw,net_cls,net_prio
";

    #[test]
    fn short_mountinfo_lines_are_skipped() {
        assert_eq!(
            parse_mounts("1 2 3 - cgroup2 x\n - \n31 23 0:28 / /x rw - cgroup2\n"),
            vec![]
        );
        assert_eq!(parse_mounts(MOUNTINFO).len(), 7);
    }

    #[test]
    fn maps_proc_cgroup_lines_to_mounted_dirs() {
        let proc_cgroup = "\
9:name=systemd:/
4:memory:/process_api/301378d3
3:cpuset:/
2:cpuacct:/
1:cpu:/
7:net_cls,net_prio:/x
0::/
";
        let dirs = own_cgroup_dirs(proc_cgroup, MOUNTINFO).unwrap();
        assert_eq!(
            dirs,
            vec![
                PathBuf::from("/sys/fs/cgroup/systemd"),
                PathBuf::from("/sys/fs/cgroup/memory/process_api/301378d3"),
                PathBuf::from("/sys/fs/cgroup/cpuset"),
                PathBuf::from("/sys/fs/cgroup/cpuacct"),
                PathBuf::from("/sys/fs/cgroup/cpu"),
                PathBuf::from("/sys/fs/cgroup/net_cls,net_prio/x"),
                PathBuf::from("/sys/fs/cgroup/unified"),
            ]
        );
    }

    #[test]
    fn unmounted_hierarchy_is_an_error() {
        let err = own_cgroup_dirs("5:pids:/\n", MOUNTINFO).unwrap_err();
        assert!(err.to_string().contains("pids"), "{err}");
    }
}
