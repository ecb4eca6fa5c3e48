//! SSH transport figures against a loopback OpenSSH sshd (not a timed test;
//! prints numbers). Run: `cargo bench -p kubeup-provision --bench ssh`.
//! Needs root, openssh-server and openssh-client (hack/apt/ssh.txt).
//!
//! - 256 MiB upload: kubeup (connect + upload) vs `scp` (its own connect
//!   included), best of 3 each, ratio printed (goal ≤ 1.1);
//! - re-upload of the unchanged file (goal ≤ 1 s);
//! - 100 small commands over one connection vs `ssh` with ControlMaster.
//!
//! `KUBEUP_BENCH_MIB` changes the file size.

// A benchmark, not product code: a panic here is a failed measurement.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::string_slice,
    clippy::panic
)]

use std::io::Write;
use std::path::Path;
use std::process::Command as Proc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kubeup_provision::ssh::{
    Auth, Command, HostKeyPolicy, HostKeyTrust, MemoryHostKeyStore, Session, SshOptions, SshTarget,
    UploadOutcome,
};
use kubeup_testsupport::sshd::{Sshd, keygen};

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(bench());
}

fn write_file(path: &Path, size: usize) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut block = vec![0u8; 1 << 20];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for chunk in block.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes());
    }
    let mut left = size;
    let mut i = 0u8;
    while left > 0 {
        // Vary each MiB so nothing on the way can dedupe or compress it.
        block[0] = i;
        i = i.wrapping_add(1);
        let n = left.min(block.len());
        f.write_all(&block[..n]).unwrap();
        left -= n;
    }
}

fn best(times: &[Duration]) -> Duration {
    *times.iter().min().unwrap()
}

fn mib_s(bytes: usize, d: Duration) -> f64 {
    bytes as f64 / (1 << 20) as f64 / d.as_secs_f64()
}

async fn bench() {
    let mib: usize = std::env::var("KUBEUP_BENCH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    let size = mib << 20;
    let sshd = Sshd::start().expect("start sshd (root, openssh-server)");
    let work = tempfile::tempdir().unwrap();
    let key = keygen(work.path(), "bench", "ed25519", "").unwrap();
    sshd.authorize("root", &key.public).unwrap();
    let known_hosts = work.path().join("known_hosts");
    std::fs::write(
        &known_hosts,
        format!("[127.0.0.1]:{} {}\n", sshd.port(), sshd.host_key("ed25519")),
    )
    .unwrap();
    let ssh_opts = |cmd: &mut Proc| {
        cmd.arg("-i")
            .arg(&key.private)
            .arg("-o")
            .arg(format!("UserKnownHostsFile={}", known_hosts.display()))
            .args(["-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes"]);
    };
    let local = work.path().join("blob");
    write_file(&local, size);
    let remote_dir = tempfile::tempdir().unwrap();

    let mut target = SshTarget::new(
        "127.0.0.1",
        sshd.port(),
        "root",
        Auth::KeyFile {
            path: key.private.clone(),
            passphrase: None,
        },
    );
    target.host_key = HostKeyTrust {
        policy: HostKeyPolicy::Pin,
        key: Some(sshd.host_key("ed25519")),
    };
    let opts = SshOptions::default();

    println!("SSH transport vs OpenSSH, loopback sshd, {mib} MiB file, best of 3");
    let (mut ours, mut scp) = (vec![], vec![]);
    for round in 0..3 {
        let dest = remote_dir.path().join(format!("kubeup-{round}"));
        let started = Instant::now();
        let s = Session::connect(&target, Arc::new(MemoryHostKeyStore::new()), &opts)
            .await
            .unwrap();
        let o = s
            .upload(&local, dest.to_str().unwrap(), 0o644, None)
            .await
            .unwrap();
        ours.push(started.elapsed());
        assert!(matches!(o, UploadOutcome::Uploaded { .. }));
        std::fs::remove_file(&dest).unwrap();

        let dest = remote_dir.path().join(format!("scp-{round}"));
        let mut cmd = Proc::new("scp");
        ssh_opts(&mut cmd);
        cmd.args(["-q", "-P", &sshd.port().to_string()])
            .arg(&local)
            .arg(format!("root@127.0.0.1:{}", dest.display()));
        let started = Instant::now();
        let st = cmd.status().expect("scp (openssh-client)");
        scp.push(started.elapsed());
        assert!(st.success(), "scp failed");
        std::fs::remove_file(&dest).unwrap();
    }
    let (o, c) = (best(&ours), best(&scp));
    println!(
        "upload   kubeup {:>8.3} s ({:>6.0} MiB/s)   scp {:>8.3} s ({:>6.0} MiB/s)   ratio {:.2} (goal <= 1.1)",
        o.as_secs_f64(),
        mib_s(size, o),
        c.as_secs_f64(),
        mib_s(size, c),
        o.as_secs_f64() / c.as_secs_f64()
    );

    // Re-upload of an unchanged file: two sha256 (local, remote) in parallel.
    let s = Session::connect(&target, Arc::new(MemoryHostKeyStore::new()), &opts)
        .await
        .unwrap();
    let dest = remote_dir.path().join("unchanged");
    s.upload(&local, dest.to_str().unwrap(), 0o644, None)
        .await
        .unwrap();
    let mut again = vec![];
    for _ in 0..3 {
        let started = Instant::now();
        let o = s
            .upload(&local, dest.to_str().unwrap(), 0o644, None)
            .await
            .unwrap();
        again.push(started.elapsed());
        assert_eq!(o, UploadOutcome::Unchanged);
    }
    println!(
        "re-upload unchanged  kubeup {:>8.3} s (goal <= 1 s)",
        best(&again).as_secs_f64()
    );

    // 100 small commands over one connection vs ssh -S (ControlMaster).
    let n = 100;
    let mut ours = vec![];
    for _ in 0..3 {
        let started = Instant::now();
        for _ in 0..n {
            s.run(&Command::new("true")).await.unwrap();
        }
        ours.push(started.elapsed());
    }
    let control = work.path().join("cm.sock");
    let mut master = Proc::new("ssh");
    ssh_opts(&mut master);
    master.args(["-M", "-N", "-f", "-S"]).arg(&control).args([
        "-p",
        &sshd.port().to_string(),
        "root@127.0.0.1",
    ]);
    assert!(master.status().unwrap().success(), "ssh ControlMaster");
    let mut theirs = vec![];
    for _ in 0..3 {
        let started = Instant::now();
        for _ in 0..n {
            let mut c = Proc::new("ssh");
            ssh_opts(&mut c);
            c.arg("-S").arg(&control).args([
                "-p",
                &sshd.port().to_string(),
                "root@127.0.0.1",
                "true",
            ]);
            assert!(c.status().unwrap().success());
        }
        theirs.push(started.elapsed());
    }
    let mut exit = Proc::new("ssh");
    exit.arg("-S")
        .arg(&control)
        .args(["-O", "exit", "root@127.0.0.1"]);
    let _ = exit.output();
    let (o, c) = (best(&ours), best(&theirs));
    println!(
        "{n} commands  kubeup {:>8.3} s ({:.1} ms each)   ssh ControlMaster {:>8.3} s ({:.1} ms each)   ratio {:.2}",
        o.as_secs_f64(),
        o.as_secs_f64() * 1000.0 / n as f64,
        c.as_secs_f64(),
        c.as_secs_f64() * 1000.0 / n as f64,
        o.as_secs_f64() / c.as_secs_f64()
    );

    compressed(&s, &sshd, &ssh_opts, remote_dir.path()).await;
}

/// A bundle binary (the worker's kubenode when the bundle is built, else a
/// compressible stand-in) sent plain and as its zstd copy, next to the
/// same bytes through `ssh … 'zstd -d'` (OpenSSH and the zstd CLI).
async fn compressed(s: &Session, sshd: &Sshd, ssh_opts: &dyn Fn(&mut Proc), remote: &Path) {
    use kubeup_provision::artifacts::{self, BundleFile, CompressedCache};
    let work = tempfile::tempdir().unwrap();
    let bundled = artifacts::default_bundle_dir("v1.34.10").join("bin/kubenode");
    let local = if bundled.is_file() {
        bundled
    } else {
        let p = work.path().join("stand-in");
        let text: Vec<u8> = (0..80u32 << 20)
            .map(|i| ((i / 7) % 251) as u8 ^ ((i % 13) as u8))
            .collect();
        std::fs::write(&p, text).unwrap();
        p
    };
    let (size, sha256) = artifacts::sha256_file(&local).unwrap();
    let file = BundleFile {
        version: String::new(),
        sha256: sha256.to_string(),
        size,
        source: String::new(),
        executable: true,
        image: None,
        recipe: None,
    };
    let cache = CompressedCache::new(work.path().join("zst"));
    let started = Instant::now();
    let packed = cache.get(&local, &file).await.unwrap();
    let made = started.elapsed();
    let packed_len = std::fs::metadata(&packed).unwrap().len();
    let (mut plain, mut zst, mut cli) = (vec![], vec![], vec![]);
    for round in 0..3 {
        let dest = remote.join(format!("plain-{round}"));
        let started = Instant::now();
        s.upload(&local, dest.to_str().unwrap(), 0o755, None)
            .await
            .unwrap();
        plain.push(started.elapsed());
        let dest = remote.join(format!("zst-{round}"));
        let started = Instant::now();
        let src = kubeup_provision::ssh::CompressedSource {
            path: &packed,
            decoder: "zstd",
            size,
            sha256: &file.sha256,
            keep_as: None,
        };
        s.upload_compressed(&src, dest.to_str().unwrap(), 0o755, None)
            .await
            .unwrap();
        zst.push(started.elapsed());
        assert_eq!(
            artifacts::sha256_file(&dest).unwrap().1.to_string(),
            file.sha256
        );
        let dest = remote.join(format!("cli-{round}"));
        let mut cmd = Proc::new("ssh");
        ssh_opts(&mut cmd);
        cmd.args(["-p", &sshd.port().to_string(), "root@127.0.0.1"])
            .arg(format!("zstd -d -c -q > {}", dest.display()))
            .stdin(std::fs::File::open(&packed).unwrap());
        let started = Instant::now();
        assert!(cmd.status().unwrap().success(), "ssh zstd -d");
        cli.push(started.elapsed());
    }
    let (p, z, c) = (best(&plain), best(&zst), best(&cli));
    println!(
        "{} ({} MiB, zstd copy {} MiB made in {:.2} s): plain {:.3} s, compressed {:.3} s ({:.2}x plain), ssh+zstd CLI {:.3} s",
        local.file_name().unwrap().to_string_lossy(),
        size >> 20,
        packed_len >> 20,
        made.as_secs_f64(),
        p.as_secs_f64(),
        z.as_secs_f64(),
        z.as_secs_f64() / p.as_secs_f64(),
        c.as_secs_f64(),
    );
}
