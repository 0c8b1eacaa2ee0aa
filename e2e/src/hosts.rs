//! Several "hosts" on one machine for multi-host tests. As root, each host is a network
//! namespace of its own (`ip netns`) with one interface on a bridge that lives in a
//! further namespace (the "LAN"), and the test process reaches the LAN through one more
//! veth pair: the hosts share no loopback and no listening sockets, so a process that
//! assumed `127.0.0.1` for another component would fail. The LAN bridge sits in a
//! namespace of its own so that the root namespace's firewall never filters bridged
//! traffic. Everything is created when the [`Network`] is and removed when it is dropped.
//! Not root: the hosts are the loopback aliases `127.0.0.2`, `127.0.0.3`, … instead
//! (Linux routes all of 127.0.0.0/8 to `lo`), which still proves no address is hard-coded.
//!
//! Traffic stays on this machine either way: the LAN's subnet (10.213.N.0/24) is routed
//! only to the test's own veth.

use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// One host: the address its processes listen on and, under namespaces, the namespace
/// they run in.
#[derive(Debug, Clone)]
pub struct Host {
    pub ip: IpAddr,
    pub netns: Option<String>,
}

impl Host {
    /// The loopback host everything runs on when a cluster is not spread out.
    pub fn loopback() -> Host {
        Host {
            ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            netns: None,
        }
    }

    /// A command that runs `program` on this host (`ip netns exec <ns> program` under
    /// namespaces; `ip netns exec` execs the program, so the child's pid is the program's).
    pub fn command(&self, program: &std::path::Path) -> Command {
        match &self.netns {
            Some(netns) => {
                let mut command = Command::new("ip");
                command.args(["netns", "exec", netns]).arg(program);
                command
            }
            None => Command::new(program),
        }
    }
}

/// Hosts created for one test; removed (namespaces and links) when dropped.
#[derive(Debug)]
pub struct Network {
    pub hosts: Vec<Host>,
    /// Namespaces to delete, the LAN's last.
    namespaces: Vec<String>,
}

static NETWORKS: AtomicU32 = AtomicU32::new(0);

impl Network {
    /// `count` hosts: namespaces when running as root, else loopback aliases.
    ///
    /// # Panics
    /// As root, when `ip` fails (the message says which command and why).
    pub fn create(count: usize) -> Network {
        if is_root() {
            Network::namespaces(count)
        } else {
            Network::loopback_aliases(count)
        }
    }

    fn loopback_aliases(count: usize) -> Network {
        let hosts = (0..count)
            .map(|i| Host {
                ip: IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + i as u8)),
                netns: None,
            })
            .collect();
        Network {
            hosts,
            namespaces: Vec::new(),
        }
    }

    fn namespaces(count: usize) -> Network {
        assert!(count < 200, "at most 200 hosts");
        let seq = NETWORKS.fetch_add(1, Ordering::Relaxed);
        // Short and unique per process and network: interface names have 15 bytes at most.
        let id = format!("{:x}", (std::process::id() & 0xffff) << 8 | (seq & 0xff));
        let subnet = free_subnet(std::process::id().wrapping_mul(31).wrapping_add(seq));
        let lan = format!("herald-{id}-lan");
        let mut network = Network {
            hosts: Vec::new(),
            namespaces: Vec::new(),
        };
        // Left behind by a test process that was killed: start clean.
        for i in 0..count {
            let _ = quiet_ip(&["netns", "del", &format!("herald-{id}-h{i}")]);
        }
        let _ = quiet_ip(&["netns", "del", &lan]);
        ip(&["netns", "add", &lan]);
        network.namespaces.push(lan.clone());
        ip(&["-n", &lan, "link", "set", "lo", "up"]);
        ip(&["-n", &lan, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &lan, "link", "set", "br0", "up"]);
        // The test process's own leg, 10.213.N.1.
        let uplink = format!("hr{id}");
        ip(&[
            "link", "add", &uplink, "type", "veth", "peer", "name", "test", "netns", &lan,
        ]);
        ip(&["-n", &lan, "link", "set", "test", "master", "br0", "up"]);
        ip(&[
            "addr",
            "add",
            &format!("10.213.{subnet}.1/24"),
            "dev",
            &uplink,
        ]);
        ip(&["link", "set", &uplink, "up"]);
        for i in 0..count {
            let netns = format!("herald-{id}-h{i}");
            ip(&["netns", "add", &netns]);
            network.namespaces.insert(0, netns.clone());
            let leg = format!("hh{id}{i}");
            let port = format!("h{i}");
            ip(&[
                "link", "add", &leg, "type", "veth", "peer", "name", &port, "netns", &lan,
            ]);
            ip(&["-n", &lan, "link", "set", &port, "master", "br0", "up"]);
            ip(&["link", "set", &leg, "netns", &netns]);
            ip(&["-n", &netns, "link", "set", &leg, "name", "eth0"]);
            let address = Ipv4Addr::new(10, 213, subnet, 10 + i as u8);
            ip(&[
                "-n",
                &netns,
                "addr",
                "add",
                &format!("{address}/24"),
                "dev",
                "eth0",
            ]);
            ip(&["-n", &netns, "link", "set", "eth0", "up"]);
            ip(&["-n", &netns, "link", "set", "lo", "up"]);
            network.hosts.push(Host {
                ip: IpAddr::V4(address),
                netns: Some(netns),
            });
        }
        network
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        // Deleting a namespace deletes the veth ends inside it, and with them their peers
        // (the test's uplink included).
        for netns in &self.namespaces {
            let _ = quiet_ip(&["netns", "del", netns]);
        }
    }
}

fn is_root() -> bool {
    #[allow(unsafe_code)]
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    euid == 0
}

/// A third octet N for 10.213.N.0/24 that no route of this namespace uses yet.
fn free_subnet(seed: u32) -> u8 {
    let routes = Command::new("ip")
        .args(["-4", "route", "show"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    (0..250)
        .map(|k| ((seed + k) % 250 + 1) as u8)
        .find(|n| !routes.contains(&format!("10.213.{n}.")))
        .expect("a free 10.213.N.0/24 subnet")
}

/// Runs `ip args`, panicking with its stderr when it fails.
fn ip(args: &[&str]) {
    if let Err(error) = quiet_ip(args) {
        panic!("`ip {}` failed: {error}", args.join(" "));
    }
}

fn quiet_ip(args: &[&str]) -> Result<(), String> {
    let output = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run ip (iproute2): {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).trim().to_owned())
    }
}
