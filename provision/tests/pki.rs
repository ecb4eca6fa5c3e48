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
    // The controller's kubelet serving certificate, issued as `up` issues it
    // (the CA its plan names, from the CA set `up` loads).
    let cas = kubeup_provision::converge::CaSet::load(&pki_dir).unwrap();
    let plan = controller_kubelet_serving_plan();
    assert_eq!(plan.ca, CaKind::KubeletServing);
    let kubelet_serving = write_leaf(out, "kubelet-serving", cas.get(plan.ca), &plan.spec);

    let cas = [
        (pki_dir.join("ca.crt"), &admin),
        (pki_dir.join("etcd/ca.crt"), &etcd_server),
        (pki_dir.join("front-proxy-ca.crt"), &proxy_client),
        (pki_dir.join("kubelet-serving-ca.crt"), &kubelet_serving),
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

fn controller_kubelet_serving_plan() -> kubeup_provision::hostplan::certs::CertPlan {
    use kubeup_provision::hostplan::{ControllerInput, EtcdMember, EtcdPlacement, NodeInput};
    let c = ControllerInput {
        node: NodeInput {
            node_name: "ctl-1".into(),
            address: "192.0.2.10".into(),
            kubernetes_version: "v1.34.10".into(),
            api_backends: vec!["192.0.2.10".into()],
            cluster_dns: "10.96.0.10".into(),
            cluster_domain: "cluster.local".into(),
            pod_cidr: "10.244.0.0/16".into(),
            pause_image: "registry.k8s.io/pause:3.10.1".into(),
            register_taints: vec![],
        },
        cluster_name: "demo".into(),
        service_cidr: "10.96.0.0/12".into(),
        etcd: EtcdPlacement::Stacked(EtcdMember {
            name: "ctl-1".into(),
            address: "192.0.2.10".into(),
            kubernetes_version: "v1.34.10".into(),
            cluster_name: "demo".into(),
            members: vec![("ctl-1".into(), "192.0.2.10".into())],
            joins_existing: false,
        }),
        endpoint: None,
        vip: None,
    };
    kubeup_provision::hostplan::certs::controller_certs(&c, "10.96.0.1".parse().unwrap(), 365)
        .into_iter()
        .find(|p| p.name == "kubelet-serving")
        .expect("the controller has a kubelet serving certificate")
}

#[test]
fn the_kubelet_serving_ca_is_its_own() {
    let dir = tempfile::tempdir().unwrap();
    pki::init(dir.path(), &CertificateLifetimes::default()).unwrap();
    let pki_dir = dir.path().join("pki");
    assert_eq!(mode(&pki_dir.join("kubelet-serving-ca.key")), 0o600);
    assert_eq!(mode(&pki_dir.join("kubelet-serving-ca.crt")), 0o644);
    let serving = CertificateAuthority::load(&pki_dir, CaKind::KubeletServing).unwrap();
    let cluster = CertificateAuthority::load(&pki_dir, CaKind::Cluster).unwrap();
    assert_ne!(serving.cert_pem(), cluster.cert_pem());
    let subject =
        |path: &Path| openssl(&["x509", "-noout", "-subject", "-in", path.to_str().unwrap()]).1;
    let s = subject(&pki_dir.join("kubelet-serving-ca.crt"));
    assert!(s.contains("kubelet-serving-ca"), "{s}");
    assert!(!subject(&pki_dir.join("ca.crt")).contains("kubelet-serving-ca"));

    // The controller's kubelet serving certificate verifies against the
    // kubelet-serving CA and NOT against the cluster CA clients trust for
    // the apiserver: it can never pass as the apiserver.
    let plan = controller_kubelet_serving_plan();
    let cas = kubeup_provision::converge::CaSet::load(&pki_dir).unwrap();
    let leaf = write_leaf(dir.path(), "kubelet", cas.get(plan.ca), &plan.spec);
    assert!(verify(&pki_dir.join("kubelet-serving-ca.crt"), &leaf));
    assert!(!verify(&pki_dir.join("ca.crt"), &leaf));
    let (ok, text) = openssl(&[
        "verify",
        "-purpose",
        "sslserver",
        "-CAfile",
        pki_dir.join("kubelet-serving-ca.crt").to_str().unwrap(),
        leaf.to_str().unwrap(),
    ]);
    assert!(ok, "{text}");
    let (ok, _) = openssl(&[
        "verify",
        "-CAfile",
        pki_dir.join("ca.crt").to_str().unwrap(),
        leaf.to_str().unwrap(),
    ]);
    assert!(!ok);
    // Nor is the kubelet-serving CA's key able to make what the cluster CA
    // vouches for: an apiserver-named certificate from it fails there too.
    let fake = write_leaf(
        dir.path(),
        "fake-apiserver",
        &serving,
        &LeafSpec::server("kube-apiserver", vec!["kubernetes.default.svc".into()], 30),
    );
    assert!(!verify(&pki_dir.join("ca.crt"), &fake));
}

#[test]
fn up_adds_the_kubelet_serving_ca_to_an_older_cluster_directory() {
    let dir = tempfile::tempdir().unwrap();
    pki::init(dir.path(), &CertificateLifetimes::default()).unwrap();
    let pki_dir = dir.path().join("pki");
    std::fs::remove_file(pki_dir.join("kubelet-serving-ca.crt")).unwrap();
    std::fs::remove_file(pki_dir.join("kubelet-serving-ca.key")).unwrap();

    // `plan` (write: false): a CA in memory, nothing on disk.
    let planned = pki::kubelet_serving_ca(dir.path(), 3650, false).unwrap();
    assert!(planned.created);
    assert!(!pki_dir.join("kubelet-serving-ca.crt").exists());
    assert!(!pki_dir.join("kubelet-serving-ca.key").exists());
    assert!(kubeup_provision::converge::CaSet::load(&pki_dir).is_err());

    // `up` (write: true): saved, key 0600; the next run loads the same one.
    let made = pki::kubelet_serving_ca(dir.path(), 3650, true).unwrap();
    assert!(made.created);
    assert_eq!(mode(&pki_dir.join("kubelet-serving-ca.key")), 0o600);
    assert_eq!(mode(&pki_dir.join("kubelet-serving-ca.crt")), 0o644);
    let again = pki::kubelet_serving_ca(dir.path(), 3650, true).unwrap();
    assert!(!again.created);
    assert_eq!(again.ca.cert_pem(), made.ca.cert_pem());
    assert_eq!(again.key_pem.expose_secret(), made.key_pem.expose_secret());
    assert!(!format!("{again:?}").contains("BEGIN"), "no key in Debug");
    let cas = kubeup_provision::converge::CaSet::load(&pki_dir).unwrap();
    assert_eq!(cas.kubelet_serving.cert_pem(), made.ca.cert_pem());
    // `init` again keeps it.
    let report = pki::init(dir.path(), &CertificateLifetimes::default()).unwrap();
    assert!(report.items.iter().all(|i| i.outcome == InitOutcome::Kept));

    // Half a pair is an error, never a silent new CA.
    std::fs::remove_file(pki_dir.join("kubelet-serving-ca.key")).unwrap();
    let err = pki::kubelet_serving_ca(dir.path(), 3650, true)
        .unwrap_err()
        .to_string();
    assert!(err.contains("kubelet-serving-ca.key"), "{err}");
    assert!(pki_dir.join("kubelet-serving-ca.crt").exists());
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
        "kubelet-serving-ca.key",
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
        [
            "admin",
            "ca",
            "etcd/ca",
            "front-proxy-ca",
            "kubelet-serving-ca",
            "super-admin"
        ]
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
