//! How every node reaches the API without depending on one controller,
//! and how clients find a healthy apiserver.
//!
//! - Every node (controllers too) runs haproxy on loopback
//!   ([`LOCAL_URL`]) with every controller's apiserver as a backend, each
//!   health-checked on its `/readyz` over verified TLS. The node's kubelet,
//!   kube-proxy and flanneld dial only that address, so adding or removing
//!   a controller changes one file and reloads haproxy (existing
//!   connections carry on), never a kubelet restart. A backend marked down
//!   has its connections cut, so watches move to a healthy apiserver at once.
//! - With a `VirtualIP` endpoint, each controller runs keepalived (VRRP over
//!   unicast to the other controllers). The address sits on one controller
//!   whose local `/readyz` answers; keepalived on a stopping machine gives
//!   it up at once (priority 0), and a vanished holder is replaced after
//!   three missed adverts.
//!
//! Both are Debian's packages (`haproxy`, `keepalived`); kubeup runs them
//! under units of its own with its own configuration, so the packages'
//! default services are left as they are.

use super::layout::{PKI, SYSTEMD};
use super::{HostFile, NodeInput, Unit};

/// Where the local load balancer listens: loopback only.
pub const LOCAL_PORT: u16 = 7443;
/// What a node's components use as the API's address.
pub const LOCAL_URL: &str = "https://127.0.0.1:7443";
pub const HAPROXY_CONFIG: &str = "/etc/kubernetes/apiserver-lb.cfg";
pub const HAPROXY_BIN: &str = "/usr/sbin/haproxy";
pub const KEEPALIVED_CONFIG: &str = "/etc/kubernetes/keepalived.conf";
pub const KEEPALIVED_BIN: &str = "/usr/sbin/keepalived";
/// keepalived's health probe of the local apiserver.
pub const CURL_BIN: &str = "/usr/bin/curl";

/// The VRRP instance a controller takes part in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VipInput {
    pub address: String,
    pub router_id: u8,
    /// The network interface holding the controller's own address (found on
    /// the host, checked by [`is_interface_name`]).
    pub interface: String,
    /// The other controllers' addresses (unicast peers).
    pub peers: Vec<String>,
}

/// An interface name as the kernel allows it, and nothing that could end a
/// line or a word in keepalived's configuration.
pub fn is_interface_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 15
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

/// haproxy's configuration: one TCP frontend on loopback, every apiserver a
/// backend. TLS passes through (clients verify the apiserver and present
/// their own certificates); only the health check speaks TLS itself.
pub fn haproxy_config(backends: &[String]) -> HostFile {
    let mut servers = String::new();
    for (i, address) in backends.iter().enumerate() {
        servers.push_str(&format!("  server apiserver-{i} {address}:6443\n"));
    }
    let content = format!(
        "# Written by kubeup; changes are overwritten. The node's own way to the API:\n\
         # the kubelet, kube-proxy and flanneld dial {LOCAL_URL}.\n\
         global\n  maxconn 4000\n  log stderr format short local0 notice\n\n\
         defaults\n  log global\n  mode tcp\n  option dontlognull\n  timeout connect 2s\n  timeout client 1h\n  timeout server 1h\n  timeout tunnel 24h\n  retries 2\n  option redispatch\n\n\
         frontend apiserver\n  bind 127.0.0.1:{LOCAL_PORT}\n  default_backend apiservers\n\n\
         backend apiservers\n  option httpchk GET /readyz\n  http-check expect status 200\n  \
         default-server check check-ssl verify required ca-file {PKI}/ca.crt inter 1s fastinter 500ms downinter 1s fall 2 rise 1 on-marked-down shutdown-sessions\n\
         {servers}"
    );
    HostFile::new(HAPROXY_CONFIG, content, 0o644, &[Unit::ApiLb])
}

/// The load balancer's unit: haproxy in master-worker mode, so a reload
/// starts new workers with the new backends while the old ones finish
/// their connections. No privileges: it binds a high port on loopback and
/// reads a public certificate.
pub fn haproxy_unit() -> HostFile {
    let content = format!(
        "# Written by kubeup; changes are overwritten by `kubeup up`.\n\
         [Unit]\nDescription=Node-local load balancer for the Kubernetes API (kubeup)\n\
         After=network-online.target\nWants=network-online.target\n\
         # Every node component depends on it: never stop retrying.\n\
         StartLimitIntervalSec=0\n\n\
         [Service]\nType=notify\n\
         ExecStartPre={HAPROXY_BIN} -c -q -f {HAPROXY_CONFIG}\n\
         ExecStart={HAPROXY_BIN} -Ws -f {HAPROXY_CONFIG}\n\
         ExecReload={HAPROXY_BIN} -c -q -f {HAPROXY_CONFIG}\n\
         ExecReload=/bin/kill -USR2 $MAINPID\n\
         Restart=always\nRestartSec=1\nKillMode=mixed\nLimitNOFILE=16384\n\
         DynamicUser=yes\nNoNewPrivileges=yes\nProtectSystem=strict\nProtectHome=yes\nPrivateTmp=yes\n\n\
         [Install]\nWantedBy=multi-user.target\n"
    );
    HostFile::new(
        format!("{SYSTEMD}/{}", Unit::ApiLb.service()),
        content,
        0o644,
        &[Unit::ApiLb],
    )
}

/// keepalived's configuration for the virtual IP. Every controller starts
/// as BACKUP with its own [`vrrp_priority`], and none preempts: a
/// controller coming back does not move the address again. The probe
/// fails while the local apiserver is not ready, which puts this
/// controller in FAULT and gives the address up.
pub fn keepalived_config(node_name: &str, own_address: &str, vip: &VipInput) -> HostFile {
    // Alone (a cluster shrunk to one controller), keepalived holds the
    // address by itself: no peer block (an empty one is refused).
    let peers: String = if vip.peers.is_empty() {
        String::new()
    } else {
        let list: String = vip.peers.iter().map(|p| format!("    {p}\n")).collect();
        format!("  unicast_peer {{\n{list}  }}\n")
    };
    let content = format!(
        "# Written by kubeup; changes are overwritten by `kubeup up`.\n\
         global_defs {{\n  router_id {node_name}\n  enable_script_security\n  script_user root\n  vrrp_garp_master_delay 0\n  vrrp_garp_master_refresh 10\n}}\n\n\
         vrrp_script apiserver_ready {{\n  script \"{CURL_BIN} --silent --fail --max-time 1 --cacert {PKI}/ca.crt https://127.0.0.1:6443/readyz\"\n  interval 1\n  timeout 2\n  fall 2\n  rise 1\n}}\n\n\
         vrrp_instance apiserver {{\n  state BACKUP\n  nopreempt\n  interface {iface}\n  virtual_router_id {id}\n  priority {priority}\n  advert_int 1\n  unicast_src_ip {own_address}\n{peers}  virtual_ipaddress {{\n    {address}/32 dev {iface}\n  }}\n  track_script {{\n    apiserver_ready\n  }}\n}}\n",
        iface = vip.interface,
        id = vip.router_id,
        priority = vrrp_priority(own_address, &vip.peers),
        address = vip.address,
    );
    HostFile::new(KEEPALIVED_CONFIG, content, 0o644, &[Unit::Vip])
}

/// This controller's VRRP priority: 200 for the lowest address, then 40
/// less for each controller ahead of it (at most five: 200…40).
///
/// Distinct on purpose. With one priority for all, the backups' timers
/// (3 adverts + (256 − priority)/256 s) run out at the same moment when
/// the holder stops: both take the address and announce it by gratuitous
/// ARP, then the tie's loser gives it back, and a client whose ARP entry
/// it set last sends to a host without the address until that entry is
/// probed again (seconds). 40 apart puts ~156 ms between the timers: the
/// new holder's first advert reaches the next backup before its own
/// timer ends.
pub fn vrrp_priority(own_address: &str, peers: &[String]) -> u8 {
    let key = |a: &str| a.parse::<std::net::IpAddr>().map_err(|_| a.to_string());
    let own = key(own_address);
    let ahead = peers.iter().filter(|p| key(p) < own).count();
    let ahead = u8::try_from(ahead.min(4)).unwrap_or(4);
    200 - 40 * ahead
}

pub fn keepalived_unit() -> HostFile {
    let content = format!(
        "# Written by kubeup; changes are overwritten by `kubeup up`.\n\
         [Unit]\nDescription=Control-plane virtual IP (kubeup)\n\
         After=network-online.target kube-apiserver.service\nWants=network-online.target\n\
         StartLimitIntervalSec=0\n\n\
         [Service]\nType=simple\n\
         ExecStart={KEEPALIVED_BIN} --dont-fork --vrrp --log-console --use-file={KEEPALIVED_CONFIG} --pid=/run/kubeup-vip.pid --vrrp_pid=/run/kubeup-vip-vrrp.pid\n\
         ExecReload=/bin/kill -HUP $MAINPID\n\
         Restart=always\nRestartSec=1\nKillMode=process\n\n\
         [Install]\nWantedBy=multi-user.target\n"
    );
    HostFile::new(
        format!("{SYSTEMD}/{}", Unit::Vip.service()),
        content,
        0o644,
        &[Unit::Vip],
    )
}

/// The files of the load balancer every node runs.
pub fn node_files(n: &NodeInput) -> [HostFile; 2] {
    [haproxy_config(&n.api_backends), haproxy_unit()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_controller_is_a_checked_backend_behind_loopback() {
        let backends = ["198.18.0.11".to_string(), "198.18.0.12".to_string()];
        let text = String::from_utf8(haproxy_config(&backends).content).unwrap();
        assert!(text.contains("bind 127.0.0.1:7443\n"));
        assert!(text.contains("server apiserver-0 198.18.0.11:6443\n"));
        assert!(text.contains("server apiserver-1 198.18.0.12:6443\n"));
        assert!(text.contains("option httpchk GET /readyz"));
        assert!(text.contains("verify required ca-file /etc/kubernetes/pki/ca.crt"));
        assert!(text.contains("on-marked-down shutdown-sessions"));
    }

    #[test]
    fn keepalived_holds_the_address_on_the_named_interface_with_unicast_peers() {
        let vip = VipInput {
            address: "198.18.0.100".into(),
            router_id: 51,
            interface: "host0".into(),
            peers: vec!["198.18.0.12".into(), "198.18.0.13".into()],
        };
        let text =
            String::from_utf8(keepalived_config("ctl-1", "198.18.0.11", &vip).content).unwrap();
        assert!(text.contains("198.18.0.100/32 dev host0"));
        assert!(text.contains("unicast_src_ip 198.18.0.11"));
        assert!(text.contains("    198.18.0.12\n    198.18.0.13\n"));
        assert!(text.contains("virtual_router_id 51"));
        assert!(text.contains("priority 200\n"));
        assert!(text.contains("https://127.0.0.1:6443/readyz"));
    }

    #[test]
    fn each_controller_has_its_own_priority_lowest_address_highest() {
        let all = ["198.18.0.9", "198.18.0.11", "198.18.0.10"];
        let priorities: Vec<u8> = all
            .iter()
            .map(|own| {
                let peers: Vec<String> = all
                    .iter()
                    .filter(|a| *a != own)
                    .map(|a| a.to_string())
                    .collect();
                vrrp_priority(own, &peers)
            })
            .collect();
        // Compared as addresses, not text (".9" is below ".10").
        assert_eq!(priorities, [200, 120, 160]);
        let five: Vec<String> = (1..=5).map(|i| format!("192.0.2.{i}")).collect();
        assert_eq!(vrrp_priority("192.0.2.6", &five), 40, "never below 40");
        assert_eq!(vrrp_priority("192.0.2.1", &[]), 200, "alone");
    }

    #[test]
    fn interface_names_are_plain_words() {
        assert!(is_interface_name("eth0"));
        assert!(is_interface_name("host0"));
        assert!(is_interface_name("br-lan.10"));
        for bad in ["", "eth0 }", "a\nb", "averyveryverylongname", "e\"th"] {
            assert!(!is_interface_name(bad), "{bad:?}");
        }
    }
}
