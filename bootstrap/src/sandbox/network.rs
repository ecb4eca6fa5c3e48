//! The sandbox network: one bridge on the machine side with `198.18.0.1/24`,
//! one `ip netns` per host, a veth from the bridge whose inner end is the
//! host's `eth0`. No default route, no forwarding, no NAT: hosts reach each
//! other and the machine, nothing else.
//!
//! ARP entries are pinned (permanent neighbours), so a cut link behaves like
//! a pulled cable: packets vanish and connections time out instead of
//! failing fast with "no route to host".

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;

/// The range every sandbox uses (RFC 2544 benchmarking range).
pub const RANGE: &str = "198.18.0.0/24";
pub const PREFIX_LEN: u8 = 24;
/// The machine's address on the bridge.
pub const BRIDGE_ADDRESS: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
/// Host `i` (1-based) gets `198.18.0.(10+i)`.
pub const MAX_HOSTS: u32 = 200;
/// The control-plane virtual IP of a sandbox with several controllers:
/// past every host's address.
pub const VIRTUAL_IP: &str = "198.18.0.250";

/// Errors from `ip`.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("failed to run `ip {args}`: {source}; install iproute2")]
    Spawn {
        args: String,
        source: std::io::Error,
    },
    #[error("`ip {args}` failed: {stderr}")]
    Failed { args: String, stderr: String },
}

/// The address of host `index` (1-based); `None` past [`MAX_HOSTS`].
pub fn host_address(index: u32) -> Option<Ipv4Addr> {
    (1..=MAX_HOSTS)
        .contains(&index)
        .then(|| Ipv4Addr::new(198, 18, 0, 10 + index as u8))
}

/// Deterministic locally-administered MAC for a host (`n` ≥ 1) or the
/// bridge (`n` = 0).
pub fn mac(id: &str, n: u32) -> String {
    let mut b = [0u8; 3];
    if hex::decode_to_slice(id.get(..6).unwrap_or("000000"), &mut b).is_err() {
        b = [0; 3];
    }
    let [b0, b1, b2] = b;
    format!("02:6b:{b0:02x}:{b1:02x}:{b2:02x}:{:02x}", n as u8)
}

fn ip(args: &[&str]) -> Result<String, NetError> {
    let joined = args.join(" ");
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|source| NetError::Spawn {
            args: joined.clone(),
            source,
        })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(NetError::Failed {
            args: joined,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}

/// Like [`ip`], but "does not exist" is success (for removal).
fn ip_absent_ok(args: &[&str]) -> Result<(), NetError> {
    match ip(args) {
        Ok(_) => Ok(()),
        Err(NetError::Failed { stderr, .. })
            if stderr.contains("Cannot find device")
                || stderr.contains("No such file")
                || stderr.contains("does not exist")
                || stderr.contains("not found") =>
        {
            Ok(())
        }
        Err(e) => Err(e),
    }
}

pub fn link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

pub fn netns_exists(name: &str) -> bool {
    Path::new("/run/netns").join(name).exists()
}

/// Whether the link is administratively up (`None`: no such link).
pub fn link_is_up(name: &str) -> Option<bool> {
    let flags =
        std::fs::read_to_string(Path::new("/sys/class/net").join(name).join("flags")).ok()?;
    let flags = u32::from_str_radix(flags.trim().trim_start_matches("0x"), 16).ok()?;
    Some(flags & 1 == 1)
}

/// No IPv6 link-local address (no router solicitations, nothing to leave
/// the bridge); best effort, since the kernel may not offer it.
fn no_ipv6(netns: Option<&str>, dev: &str) {
    let mut args: Vec<&str> = Vec::new();
    if let Some(ns) = netns {
        args.extend(["-n", ns]);
    }
    args.extend(["link", "set", dev, "addrgenmode", "none"]);
    let _ = ip(&args);
}

/// Creates the bridge with `198.18.0.1/24` (no IPv6 addresses), or
/// completes a half-made one.
pub fn ensure_bridge(name: &str, mac: &str) -> Result<(), NetError> {
    if !link_exists(name) {
        ip(&["link", "add", name, "address", mac, "type", "bridge"])?;
    }
    no_ipv6(None, name);
    let cidr = format!("{BRIDGE_ADDRESS}/{PREFIX_LEN}");
    ip(&["addr", "replace", &cidr, "dev", name])?;
    ip(&["link", "set", name, "up"])?;
    Ok(())
}

/// Creates the host's namespace and veth, addresses `eth0`, and enslaves
/// the machine end to the bridge. Idempotent.
pub fn ensure_host_link(
    netns: &str,
    veth: &str,
    mac: &str,
    address: Ipv4Addr,
    bridge: &str,
) -> Result<(), NetError> {
    if !netns_exists(netns) {
        ip(&["netns", "add", netns])?;
    }
    if !link_exists(veth) {
        ip(&[
            "link", "add", veth, "type", "veth", "peer", "name", "eth0", "address", mac, "netns",
            netns,
        ])?;
    }
    no_ipv6(None, veth);
    no_ipv6(Some(netns), "eth0");
    ip(&["link", "set", veth, "master", bridge, "up"])?;
    let cidr = format!("{address}/{PREFIX_LEN}");
    ip(&["-n", netns, "addr", "replace", &cidr, "dev", "eth0"])?;
    ip(&["-n", netns, "link", "set", "lo", "up"])?;
    ip(&["-n", netns, "link", "set", "eth0", "up"])?;
    Ok(())
}

/// Pins `address → mac` as a permanent neighbour: on the bridge when
/// `netns` is `None`, else on `eth0` inside that namespace.
pub fn pin_neighbour(
    netns: Option<&str>,
    address: Ipv4Addr,
    mac: &str,
    dev: &str,
) -> Result<(), NetError> {
    let addr = address.to_string();
    let mut args: Vec<&str> = Vec::new();
    if let Some(ns) = netns {
        args.extend(["-n", ns]);
    }
    args.extend([
        "neigh",
        "replace",
        &addr,
        "lladdr",
        mac,
        "dev",
        dev,
        "nud",
        "permanent",
    ]);
    ip(&args).map(|_| ())
}

/// Link down (`up` = false) or up on the machine side.
pub fn set_link(name: &str, up: bool) -> Result<(), NetError> {
    ip(&["link", "set", name, if up { "up" } else { "down" }]).map(|_| ())
}

/// Deletes a link (and a veth's peer); absent is fine.
pub fn delete_link(name: &str) -> Result<(), NetError> {
    if !link_exists(name) {
        return Ok(());
    }
    ip_absent_ok(&["link", "del", name])
}

/// Deletes a network namespace; absent is fine.
pub fn delete_netns(name: &str) -> Result<(), NetError> {
    if !netns_exists(name) {
        return Ok(());
    }
    ip_absent_ok(&["netns", "del", name])
}

/// The interface (other than `except`) holding an address inside the
/// sandbox range, if any.
pub fn range_holder(except: &str) -> Result<Option<(String, String)>, NetError> {
    let out = ip(&["-o", "-4", "addr", "show"])?;
    Ok(parse_range_holder(&out, except))
}

fn parse_range_holder(out: &str, except: &str) -> Option<(String, String)> {
    for line in out.lines() {
        // 5: kbabc123    inet 198.18.0.1/24 scope global kbabc123\ ...
        let f: Vec<&str> = line.split_whitespace().collect();
        let [_, dev, "inet", addr, ..] = f.as_slice() else {
            continue;
        };
        let dev = dev.trim_end_matches(':');
        let ip: Option<Ipv4Addr> = addr.split('/').next().and_then(|a| a.parse().ok());
        if let Some(ip) = ip
            && matches!(ip.octets(), [198, 18, 0, _])
            && dev != except
        {
            return Some((dev.to_owned(), (*addr).to_owned()));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_macs() {
        assert_eq!(host_address(1), Some(Ipv4Addr::new(198, 18, 0, 11)));
        assert_eq!(host_address(3), Some(Ipv4Addr::new(198, 18, 0, 13)));
        assert_eq!(host_address(0), None);
        assert_eq!(host_address(MAX_HOSTS + 1), None);
        assert_eq!(mac("a1b2c3", 0), "02:6b:a1:b2:c3:00");
        assert_eq!(mac("a1b2c3", 12), "02:6b:a1:b2:c3:0c");
        assert_eq!(mac("zz", 1), "02:6b:00:00:00:01");
        assert_eq!(mac("é1b2c3", 1), "02:6b:00:00:00:01");
    }

    #[test]
    fn finds_who_holds_the_range() {
        let out = "1: lo    inet 127.0.0.1/8 scope host lo\\       valid_lft forever\n\
                   4: eth0    inet 10.0.0.5/24 brd 10.0.0.255 scope global eth0\n\
                   9: kbabc123    inet 198.18.0.1/24 scope global kbabc123\n";
        assert_eq!(parse_range_holder(out, "kbabc123"), None);
        assert_eq!(parse_range_holder("9: kb inet\n\n", "x"), None);
        assert_eq!(
            parse_range_holder(out, "kbffffff"),
            Some(("kbabc123".into(), "198.18.0.1/24".into()))
        );
    }
}
