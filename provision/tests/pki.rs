//! The PKI written by `kubeup init`, checked with the real `openssl`.

// An integration test, not product code: a panic here is a test failure.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::string_slice,
    clippy::panic
)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use kubeup_crds::cluster::CertificateLifetimes;
use kubeup_provision::pki::{self, CaKind, CertificateAuthority, InitOutcome, LeafSpec, Usage};
use secrecy::ExposeSecret;

fn openssl(args: &[&str]) -> (bool, String) {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl is installed (hack/setup.sh)");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

fn verify(ca: &Path, leaf: &Path) -> bool {
    openssl(&[
        "verify",
        "-CAfile",
        ca.to_str().unwrap(),
        leaf.to_str().unwrap(),
    ])
    .0
}

fn write_leaf(
    dir: &Path,
    name: &str,
    ca: &CertificateAuthority,
    spec: &LeafSpec,
) -> std::path::PathBuf {
    let issued = ca.issue(spec).unwrap();
    let path = dir.join(format!("{name}.crt"));
    std::fs::write(&path, &issued.cert_pem).unwrap();
    path
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn each_ca_verifies_its_own_leaves_and_not_the_others() {
    let dir = tempfile::tempdir().unwrap();
    pki::init(dir.path(), &CertificateLifetimes::default()).unwrap();
    let pki_dir = dir.path().join("pki");
    let etcd = CertificateAuthority::load(&pki_dir, CaKind::Etcd).unwrap();
    let proxy = CertificateAuthority::load(&pki_dir, CaKind::FrontProxy).unwrap();

    let out = dir.path();
    let etcd_server = write_leaf(
        out,
        "etcd-server",
        &etcd,
        &LeafSpec::server("etcd", vec!["127.0.0.1".into(), "localhost".into()], 365),
    );
    let proxy_client = write_leaf(
        out,
        "front-proxy-client",
        &proxy,
        &LeafSpec::client("front-proxy-client", &[], 365),
    );
    let admin = pki_dir.join("admin.crt");

    let cas = [
        (pki_dir.join("ca.crt"), &admin),
        (pki_dir.join("etcd/ca.crt"), &etcd_server),
        (pki_dir.join("front-proxy-ca.crt"), &proxy_client),
    ];
    for (i, (ca, _)) in cas.iter().enumerate() {
        for (j, (_, leaf)) in cas.iter().enumerate() {
            assert_eq!(
                verify(ca, leaf),
                i == j,
                "{} verifying {}: expected {}",
                ca.display(),
                leaf.display(),
                i == j
            );
        }
    }
}

#[test]
fn key_usages_match_the_purpose() {
    let dir = tempfile::tempdir().unwrap();
    pki::init(dir.path(), &CertificateLifetimes::default()).unwrap();
    let pki_dir = dir.path().join("pki");
    let ca = CertificateAuthority::load(&pki_dir, CaKind::Etcd).unwrap();
    let peer = write_leaf(
        dir.path(),
        "peer",
        &ca,
        &LeafSpec {
            common_name: "etcd-peer".into(),
            organizations: vec![],
            sans: vec!["10.0.0.1".into()],
            usage: Usage::ServerAndClient,
            days: 30,
        },
    );
    let ext = |p: &Path| {
        openssl(&[
            "x509",
            "-noout",
            "-in",
            p.to_str().unwrap(),
            "-ext",
            "basicConstraints,keyUsage,extendedKeyUsage,subjectAltName",
        ])
        .1
    };

    let ca_ext = ext(&pki_dir.join("ca.crt"));
    assert!(ca_ext.contains("CA:TRUE"), "{ca_ext}");
    assert!(ca_ext.contains("Certificate Sign"), "{ca_ext}");

    let admin_ext = ext(&pki_dir.join("admin.crt"));
    assert!(
        admin_ext.contains("TLS Web Client Authentication"),
        "{admin_ext}"
    );
    assert!(
        !admin_ext.contains("TLS Web Server Authentication"),
        "{admin_ext}"
    );
    assert!(!admin_ext.contains("CA:TRUE"), "{admin_ext}");
    let subject = openssl(&[
        "x509",
        "-noout",
        "-subject",
        "-in",
        pki_dir.join("admin.crt").to_str().unwrap(),
    ])
    .1;
    assert!(
        subject.contains("O = kubeup:cluster-admins") && subject.contains("CN = kubernetes-admin"),
        "{subject}"
    );

    let peer_ext = ext(&peer);
    assert!(
        peer_ext.contains("TLS Web Server Authentication, TLS Web Client Authentication"),
        "{peer_ext}"
    );
    assert!(peer_ext.contains("IP Address:10.0.0.1"), "{peer_ext}");
    assert!(peer_ext.contains("Digital Signature"), "{peer_ext}");
}

#[test]
fn files_are_private_and_a_rerun_keeps_them() {
    let dir = tempfile::tempdir().unwrap();
    let first = pki::init(dir.path(), &CertificateLifetimes::default()).unwrap();
    assert!(
        first
            .items
            .iter()
            .all(|i| i.outcome == InitOutcome::Created)
    );
    let pki_dir = dir.path().join("pki");
    assert_eq!(mode(&pki_dir), 0o700);
    assert_eq!(mode(&pki_dir.join("etcd")), 0o700);
    for key in [
        "ca.key",
        "etcd/ca.key",
        "front-proxy-ca.key",
        "sa.key",
        "admin.key",
        "encryption-key",
    ] {
        assert_eq!(mode(&pki_dir.join(key)), 0o600, "{key}");
    }
    let before = std::fs::read(pki_dir.join("ca.key")).unwrap();
    let second = pki::init(dir.path(), &CertificateLifetimes::default()).unwrap();
    assert!(second.items.iter().all(|i| i.outcome == InitOutcome::Kept));
    assert_eq!(
        before,
        std::fs::read(pki_dir.join("ca.key")).unwrap(),
        "the CA key was rewritten"
    );
    // The service-account key pair is a real pair openssl can read.
    let (ok, text) = openssl(&[
        "pkey",
        "-in",
        pki_dir.join("sa.key").to_str().unwrap(),
        "-pubout",
    ]);
    assert!(ok, "{text}");
    assert_eq!(
        text.trim(),
        std::fs::read_to_string(pki_dir.join("sa.pub"))
            .unwrap()
            .trim()
    );
}

#[test]
fn damaged_incomplete_and_mismatched_files_are_reported_not_replaced() {
    let dir = tempfile::tempdir().unwrap();
    pki::init(dir.path(), &CertificateLifetimes::default()).unwrap();
    let pki_dir = dir.path().join("pki");

    std::fs::write(pki_dir.join("front-proxy-ca.crt"), "garbage").unwrap();
    let err = pki::init(dir.path(), &CertificateLifetimes::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("front-proxy-ca.crt") && err.contains("damaged"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(pki_dir.join("front-proxy-ca.crt")).unwrap(),
        "garbage"
    );

    let dir = tempfile::tempdir().unwrap();
    pki::init(dir.path(), &CertificateLifetimes::default()).unwrap();
    let pki_dir = dir.path().join("pki");
    std::fs::remove_file(pki_dir.join("etcd/ca.key")).unwrap();
    let err = pki::init(dir.path(), &CertificateLifetimes::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("etcd/ca.key") && err.contains("missing"),
        "{err}"
    );
    assert!(
        !pki_dir.join("etcd/ca.key").exists(),
        "a lone half was completed silently"
    );

    // A CA replaced under an existing admin certificate.
    let dir = tempfile::tempdir().unwrap();
    pki::init(dir.path(), &CertificateLifetimes::default()).unwrap();
    let pki_dir = dir.path().join("pki");
    let (other, key) = CertificateAuthority::generate(CaKind::Cluster, 10).unwrap();
    std::fs::write(pki_dir.join("ca.crt"), other.cert_pem()).unwrap();
    std::fs::write(pki_dir.join("ca.key"), key.expose_secret()).unwrap();
    let err = pki::init(dir.path(), &CertificateLifetimes::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("admin.crt") && err.contains("not issued by"),
        "{err}"
    );

    // A key that does not belong to its certificate.
    let dir = tempfile::tempdir().unwrap();
    pki::init(dir.path(), &CertificateLifetimes::default()).unwrap();
    let pki_dir = dir.path().join("pki");
    std::fs::copy(pki_dir.join("sa.key"), pki_dir.join("ca.key")).unwrap();
    let err = pki::init(dir.path(), &CertificateLifetimes::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("does not belong"), "{err}");
}

#[test]
fn inspect_reports_expiry() {
    let dir = tempfile::tempdir().unwrap();
    pki::init(
        dir.path(),
        &CertificateLifetimes {
            ca_days: 100,
            leaf_days: 10,
        },
    )
    .unwrap();
    let certs = pki::inspect_dir(&dir.path().join("pki")).unwrap();
    let names: Vec<&str> = certs.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        ["admin", "ca", "etcd/ca", "front-proxy-ca", "super-admin"]
    );
    let admin = &certs[0];
    assert!((9..=10).contains(&admin.days_left), "{admin:?}");
    assert_eq!(admin.issuer, "CN=kubernetes");
}

#[test]
fn a_huge_lifetime_is_an_error_not_a_panic() {
    let Err(err) = CertificateAuthority::generate(CaKind::Cluster, u32::MAX) else {
        panic!("a CA for u32::MAX days is refused");
    };
    assert_eq!(err.category(), "Lifetime", "{err}");
    let (ca, _) = CertificateAuthority::generate(CaKind::Cluster, 36500).unwrap();
    let Err(err) = ca.issue(&LeafSpec::client("x", &[], u32::MAX)) else {
        panic!("a leaf for u32::MAX days is refused");
    };
    assert_eq!(err.category(), "Lifetime", "{err}");
    let dir = tempfile::tempdir().unwrap();
    let lifetimes = CertificateLifetimes {
        ca_days: u32::MAX,
        leaf_days: u32::MAX,
    };
    let Err(err) = pki::init(dir.path(), &lifetimes) else {
        panic!("init refuses");
    };
    assert!(err.to_string().contains("out of range"), "{err}");
}

fn subject(path: &Path) -> String {
    let (ok, text) = openssl(&[
        "x509",
        "-noout",
        "-subject",
        "-nameopt",
        "RFC2253",
        "-in",
        path.to_str().unwrap(),
    ]);
    assert!(ok, "{text}");
    text.trim().to_string()
}

#[test]
fn init_makes_an_everyday_admin_and_a_break_glass_super_admin() {
    let dir = tempfile::tempdir().unwrap();
    let report = pki::init(dir.path(), &CertificateLifetimes::default()).unwrap();
    let pki_dir = dir.path().join("pki");
    assert_eq!(
        subject(&pki_dir.join("admin.crt")),
        "subject=CN=kubernetes-admin,O=kubeup:cluster-admins"
    );
    assert_eq!(
        subject(&pki_dir.join("super-admin.crt")),
        "subject=CN=kubernetes-super-admin,O=system:masters"
    );
    assert_eq!(mode(&pki_dir.join("super-admin.key")), 0o600);
    assert_eq!(mode(&pki_dir.join("admin.key")), 0o600);
    for leaf in ["admin.crt", "super-admin.crt"] {
        assert!(
            verify(&pki_dir.join("ca.crt"), &pki_dir.join(leaf)),
            "{leaf}"
        );
    }
    let names: Vec<&str> = report.items.iter().map(|i| i.name).collect();
    assert!(names.contains(&"super-admin"), "{names:?}");
    // A second init keeps both.
    let again = pki::init(dir.path(), &CertificateLifetimes::default()).unwrap();
    assert!(again.items.iter().all(|i| i.outcome == InitOutcome::Kept));
    assert_eq!(
        pki::ensure_admin_credentials(dir.path(), 365).unwrap(),
        Vec::<&str>::new()
    );
}

#[test]
fn an_old_system_masters_admin_is_replaced_by_up_and_kept_by_init() {
    let dir = tempfile::tempdir().unwrap();
    pki::init(dir.path(), &CertificateLifetimes::default()).unwrap();
    let pki_dir = dir.path().join("pki");
    // A cluster directory of an older kubeup: admin in system:masters, no
    // super-admin.
    let ca = CertificateAuthority::load(&pki_dir, CaKind::Cluster).unwrap();
    let old = ca
        .issue(&LeafSpec::client(
            "kubernetes-admin",
            &["system:masters"],
            365,
        ))
        .unwrap();
    std::fs::write(pki_dir.join("admin.crt"), &old.cert_pem).unwrap();
    std::fs::write(pki_dir.join("admin.key"), old.key_pem.expose_secret()).unwrap();
    std::fs::remove_file(pki_dir.join("super-admin.crt")).unwrap();
    std::fs::remove_file(pki_dir.join("super-admin.key")).unwrap();

    // init keeps what exists (the old admin still works until up runs).
    pki::init(dir.path(), &CertificateLifetimes::default()).unwrap();
    assert_eq!(
        subject(&pki_dir.join("admin.crt")),
        "subject=CN=kubernetes-admin,O=system:masters"
    );
    std::fs::remove_file(pki_dir.join("super-admin.crt")).unwrap();
    std::fs::remove_file(pki_dir.join("super-admin.key")).unwrap();

    let issued = pki::ensure_admin_credentials(dir.path(), 365).unwrap();
    assert_eq!(issued, ["super-admin", "admin"]);
    assert_eq!(
        subject(&pki_dir.join("admin.crt")),
        "subject=CN=kubernetes-admin,O=kubeup:cluster-admins"
    );
    assert_eq!(
        subject(&pki_dir.join("super-admin.crt")),
        "subject=CN=kubernetes-super-admin,O=system:masters"
    );
    assert_eq!(mode(&pki_dir.join("admin.key")), 0o600);
    assert_eq!(
        pki::ensure_admin_credentials(dir.path(), 365).unwrap(),
        Vec::<&str>::new()
    );
}
