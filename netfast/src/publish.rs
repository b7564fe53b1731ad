//! Published ports (port mappings): Docker's `-p` syntax,
//! `[HOST_IP:]HOST_PORT[-END]:CONTAINER_IP:PORT[-END][/tcp|udp]`, and the one set of
//! rules a publish must pass, whether a config brings it to `up` or `publish add`
//! brings it live: a host IP of the host ([`PublishSpec::check_host_addr`]), a backend
//! the instance may reach ([`AllowedBackends`]), a host port nobody claims and room in
//! PUBLISHED_PORTS ([`PortMappings`]).
//!
//! Unlike Docker, the container is named by its IP address, because netfast has no
//! container registry to look a name up in.

use std::{collections::HashMap, fmt, net::Ipv4Addr, ops::RangeInclusive, str::FromStr};

use ipnet::Ipv4Net;
use netfast_common::{Backend, PublishKey, names::PUBLISHED_PORTS_CAPACITY, proto};

/// The syntax, quoted in error messages so the fix is on screen.
const SYNTAX: &str = "[HOST_IP:]HOST_PORT[-END]:CONTAINER_IP:PORT[-END][/tcp|udp]";
const EXAMPLE: &str = "8088:172.16.0.102:80/tcp";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    /// The IP protocol number, as the datapath's map keys hold it.
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => proto::TCP,
            Protocol::Udp => proto::UDP,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One published port or port range.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublishSpec {
    /// None publishes on the uplink's address.
    pub host_addr: Option<Ipv4Addr>,
    pub host_ports: RangeInclusive<u16>,
    pub backend_addr: Ipv4Addr,
    /// Either as long as `host_ports`, or a single port that every host port maps to.
    pub backend_ports: RangeInclusive<u16>,
    pub protocol: Protocol,
}

/// A spec that could not be parsed. `reason` says what is wrong and how to fix it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("publish spec \"{spec}\": {reason}")]
pub struct PublishSpecError {
    pub spec: String,
    pub reason: String,
}

impl PublishSpec {
    /// How many host ports (and so PUBLISHED_PORTS entries) this spec publishes.
    pub fn port_count(&self) -> usize {
        range_len(&self.host_ports)
    }

    /// The backend port that `host_port` leads to, if `host_port` is published here.
    pub fn backend_port_for(&self, host_port: u16) -> Option<u16> {
        if !self.host_ports.contains(&host_port) {
            return None;
        }
        if range_len(&self.backend_ports) == 1 {
            return Some(*self.backend_ports.start());
        }
        Some(self.backend_ports.start() + (host_port - self.host_ports.start()))
    }

    /// The one rule for a spec's host IP, for `up` and `publish add` alike: it must be
    /// an address of the host (`host`: the host namespace's addresses, plus those `up`
    /// is about to add), or absent for every address. A packet to any other address
    /// never reaches the host, so such a publish would never match.
    pub fn check_host_addr(&self, host: &[Ipv4Addr]) -> Result<(), String> {
        let Some(addr) = self.host_addr else {
            return Ok(());
        };
        if host.contains(&addr) {
            return Ok(());
        }
        // Each address once, in the order given: `up` passes the host's addresses and
        // those it is about to add, which overlap on a re-`up`.
        let mut known: Vec<String> = Vec::new();
        for a in host.iter().map(Ipv4Addr::to_string) {
            if !known.contains(&a) {
                known.push(a);
            }
        }
        Err(format!(
            "host IP {addr} is not an address of this host (it has {}); use one of those, \
             add {addr} to an interface first, or leave the host IP out to publish on every address",
            if known.is_empty() {
                "none".to_owned()
            } else {
                known.join(", ")
            }
        ))
    }

    /// The backend as `CONTAINER_IP:PORT[-END]`, for messages.
    pub fn backend(&self) -> String {
        format!("{}:{}", self.backend_addr, show_range(&self.backend_ports))
    }

    /// One PUBLISHED_PORTS entry per host port, in network byte order as the datapath reads them.
    pub fn entries(&self) -> impl Iterator<Item = (PublishKey, Backend)> + use<> {
        let host_addr = self.host_addr.map_or(0, |a| u32::from_ne_bytes(a.octets()));
        let backend_addr = u32::from_ne_bytes(self.backend_addr.octets());
        let proto = self.protocol.number();
        let spec = self.clone();
        self.host_ports.clone().map(move |host_port| {
            // backend_port_for is Some for every port of host_ports.
            let port = spec
                .backend_port_for(host_port)
                .unwrap_or(*spec.backend_ports.start());
            (
                PublishKey {
                    host_addr,
                    host_port: host_port.to_be(),
                    proto,
                    _pad: 0,
                },
                Backend {
                    addr: backend_addr,
                    port: port.to_be(),
                    _pad: [0; 2],
                },
            )
        })
    }
}

fn range_len(r: &RangeInclusive<u16>) -> usize {
    usize::from(r.end().saturating_sub(*r.start())) + 1
}

impl PublishSpec {
    /// Parses a spec given as one word (`SPEC`) or as the three columns of a
    /// `publish list` row (`PROTO HOST BACKEND`, e.g. `tcp *:8088 172.16.0.102:80`),
    /// so `publish del` takes what `publish list` prints.
    pub fn from_words<S: AsRef<str>>(words: &[S]) -> Result<PublishSpec, PublishSpecError> {
        match words {
            [spec] => spec.as_ref().parse(),
            [proto, host, backend] => {
                let (proto, host, backend) = (proto.as_ref(), host.as_ref(), backend.as_ref());
                let joined = format!("{host}:{backend}/{proto}");
                joined
                    .parse()
                    .map_err(|e: PublishSpecError| PublishSpecError {
                        spec: format!("{proto} {host} {backend}"),
                        reason: e.reason,
                    })
            }
            _ => Err(PublishSpecError {
                spec: words
                    .iter()
                    .map(AsRef::as_ref)
                    .collect::<Vec<_>>()
                    .join(" "),
                reason: format!(
                    "give one spec ({SYNTAX}, like \"{EXAMPLE}\") or the three columns of a \
                     `publish list` row (PROTO HOST BACKEND, like \"tcp *:8088 172.16.0.102:80\")"
                ),
            }),
        }
    }
}

impl FromStr for PublishSpec {
    type Err = PublishSpecError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse(s.trim()).map_err(|reason| PublishSpecError {
            spec: s.to_owned(),
            reason,
        })
    }
}

fn parse(s: &str) -> Result<PublishSpec, String> {
    if s.is_empty() {
        return Err(format!("it is empty; write {SYNTAX}, like \"{EXAMPLE}\""));
    }
    if s.contains('[') || s.matches(':').count() > 3 {
        return Err(format!(
            "netfast publishes IPv4 only; write {SYNTAX} with IPv4 addresses, like \"{EXAMPLE}\""
        ));
    }
    let (body, protocol) = match s.rsplit_once('/') {
        Some((body, p)) => (body, parse_protocol(p)?),
        None => (s, Protocol::Tcp),
    };
    let parts: Vec<&str> = body.split(':').collect();
    let (host_addr, host_ports, backend_addr, backend_ports) = match parts.as_slice() {
        [hp, ca, cp] => (None, *hp, *ca, *cp),
        [ha, hp, ca, cp] => (parse_host_addr(ha)?, *hp, *ca, *cp),
        [_, _] => {
            return Err(format!(
                "the container IP is missing; write {SYNTAX}, like \"{EXAMPLE}\""
            ));
        }
        _ => return Err(format!("write {SYNTAX}, like \"{EXAMPLE}\"")),
    };
    let host_ports = parse_range(host_ports, "host")?;
    let backend_addr = parse_backend_addr(backend_addr)?;
    let backend_ports = parse_range(backend_ports, "container")?;

    let (hl, bl) = (range_len(&host_ports), range_len(&backend_ports));
    if bl != 1 && hl != bl {
        return Err(format!(
            "host ports {} are {hl} ports but container ports {} are {bl}; \
             give both ranges the same length, or a single container port",
            show_range(&host_ports),
            show_range(&backend_ports),
        ));
    }
    Ok(PublishSpec {
        host_addr,
        host_ports,
        backend_addr,
        backend_ports,
        protocol,
    })
}

fn parse_protocol(p: &str) -> Result<Protocol, String> {
    match p.to_ascii_lowercase().as_str() {
        "tcp" => Ok(Protocol::Tcp),
        "udp" => Ok(Protocol::Udp),
        "" => Err("the protocol after '/' is empty; end with /tcp or /udp".into()),
        _ => Err(format!(
            "protocol \"{p}\" is not supported; end with /tcp or /udp"
        )),
    }
}

fn parse_host_addr(a: &str) -> Result<Option<Ipv4Addr>, String> {
    // `publish list` shows "every address" as `*:PORT`; take it back as given.
    if a == "*" {
        return Ok(None);
    }
    let addr: Ipv4Addr = a.parse().map_err(|_| {
        format!(
            "host IP \"{a}\" is not an IPv4 address; write one like 10.0.1.48, or leave it out to publish on every address"
        )
    })?;
    if addr.is_multicast() || addr.is_broadcast() {
        return Err(format!(
            "host IP {addr} is not a unicast address; use the uplink's address, or leave it out"
        ));
    }
    // Docker reads 0.0.0.0 as "every address"; keep one spelling of that.
    Ok((!addr.is_unspecified()).then_some(addr))
}

fn parse_backend_addr(a: &str) -> Result<Ipv4Addr, String> {
    let addr: Ipv4Addr = a.parse().map_err(|_| {
        format!("container IP \"{a}\" is not an IPv4 address; write one like 172.16.0.102")
    })?;
    if addr.is_unspecified() || addr.is_multicast() || addr.is_broadcast() {
        return Err(format!(
            "container IP {addr} is not a unicast address; use the container's own address"
        ));
    }
    Ok(addr)
}

fn parse_range(r: &str, side: &str) -> Result<RangeInclusive<u16>, String> {
    match r.split_once('-') {
        Some((lo, hi)) => {
            let (lo, hi) = (parse_port(lo, side)?, parse_port(hi, side)?);
            if lo > hi {
                return Err(format!(
                    "{side} port range {lo}-{hi} is inverted; write the lower port first ({hi}-{lo})"
                ));
            }
            Ok(lo..=hi)
        }
        None => {
            let p = parse_port(r, side)?;
            Ok(p..=p)
        }
    }
}

fn parse_port(p: &str, side: &str) -> Result<u16, String> {
    if p.is_empty() {
        return Err(format!(
            "the {side} port is missing; write {SYNTAX}, like \"{EXAMPLE}\""
        ));
    }
    // Digits only: u32's parser would also take "+80".
    if !p.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "{side} port \"{p}\" is not a number; use a port from 1 to 65535"
        ));
    }
    match p.parse::<u32>() {
        Ok(0) => Err(format!(
            "{side} port 0 is not a port; use a port from 1 to 65535"
        )),
        Ok(n) => u16::try_from(n)
            .map_err(|_| format!("{side} port {n} is above 65535; use a port from 1 to 65535")),
        Err(_) => Err(format!(
            "{side} port {p} is above 65535; use a port from 1 to 65535"
        )),
    }
}

fn show_range(r: &RangeInclusive<u16>) -> String {
    if r.start() == r.end() {
        r.start().to_string()
    } else {
        format!("{}-{}", r.start(), r.end())
    }
}

impl fmt::Display for PublishSpec {
    /// The canonical form: `[HOST_IP:]HOST_PORT[-END]:CONTAINER_IP:PORT[-END]/PROTO`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(a) = self.host_addr {
            write!(f, "{a}:")?;
        }
        write!(
            f,
            "{}:{}:{}/{}",
            show_range(&self.host_ports),
            self.backend_addr,
            show_range(&self.backend_ports),
            self.protocol
        )
    }
}

/// A PUBLISHED_PORTS entry written back as a spec (`[HOST_IP:]PORT:BACKEND:PORT/PROTO`),
/// as `publish list` shows it and `publish del` takes it.
pub fn entry_spec(key: &PublishKey, backend: &Backend) -> String {
    let host = match key.host_addr {
        0 => String::new(),
        a => format!("{}:", raw_to_addr(a)),
    };
    format!(
        "{host}{}:{}:{}/{}",
        u16::from_be(key.host_port),
        raw_to_addr(backend.addr),
        u16::from_be(backend.port),
        protocol_name(key.proto)
    )
}

fn raw_to_addr(raw: u32) -> Ipv4Addr {
    Ipv4Addr::from(raw.to_ne_bytes())
}

pub(crate) fn protocol_name(p: u8) -> &'static str {
    match p {
        proto::TCP => "tcp",
        proto::UDP => "udp",
        _ => "?",
    }
}

/// Whether two keys claim the same host port: one protocol, one port, and the same
/// host address, or either one on every address (0). "Every address" claims the port
/// on each address, so it clashes with a specific one too; otherwise the datapath
/// would have to guess which wins.
pub(crate) fn claims_same_port(a: &PublishKey, b: &PublishKey) -> bool {
    a.proto == b.proto
        && a.host_port == b.host_port
        && (a.host_addr == b.host_addr || a.host_addr == 0 || b.host_addr == 0)
}

/// The backends an instance may publish: an address in its masquerade subnet, or
/// one of its containers'.
#[derive(Clone, Copy, Debug)]
pub struct AllowedBackends<'a> {
    /// The masquerade subnet, if the instance has one.
    pub subnet: Option<Ipv4Net>,
    /// The containers' addresses; None when they are not known (`publish add`
    /// without `--config`).
    pub containers: Option<&'a [Ipv4Addr]>,
    /// The host's own addresses (the bridge's, point-to-point host ends, the host
    /// namespace's), which are never a backend: a packet DNAT-ed to one is the host's
    /// own, and its reply would leave masqueraded.
    pub host: &'a [Ipv4Addr],
}

impl AllowedBackends<'_> {
    /// Why `spec`'s backend is not allowed, with the fix; the text reads after
    /// `publish spec "...": `.
    pub fn check(&self, spec: &PublishSpec) -> Result<(), String> {
        let backend = spec.backend_addr;
        if self.host.contains(&backend) {
            return Err(format!(
                "backend {backend} is an address of this host, not of a container; \
                 use a container address (a service of the host itself needs no publish)"
            ));
        }
        // A /31 or /32 has no network or broadcast address (RFC 3021).
        if let Some(s) = self.subnet.filter(|s| s.prefix_len() <= 30) {
            for (what, addr) in [("network", s.network()), ("broadcast", s.broadcast())] {
                if backend == addr {
                    return Err(format!(
                        "backend {backend} is the {what} address of masquerade subnet {s}, \
                         not a container's; use a container address"
                    ));
                }
            }
        }
        if self.subnet.is_some_and(|s| s.contains(&backend))
            || self.containers.is_some_and(|c| c.contains(&backend))
        {
            return Ok(());
        }
        Err(match (self.subnet, self.containers) {
            (Some(subnet), _) => format!(
                "backend {backend} is outside masquerade subnet {subnet}; use a container address"
            ),
            (None, Some(_)) => format!(
                "backend {backend} is not a container address, and there is no [masquerade] subnet; use a container address"
            ),
            (None, None) => format!(
                "there is no masquerade subnet to check backend {backend} against; \
                 give --config FILE so netfast checks it against the containers"
            ),
        })
    }
}

/// Why a publish cannot join the ports already published.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PortClash {
    /// `port`/`protocol` is published already, by the entry `by`.
    Taken {
        /// Host order.
        port: u16,
        protocol: Protocol,
        by: (PublishKey, Backend),
    },
    /// `more` ports would make `total`, above PUBLISHED_PORTS' capacity.
    Full { more: usize, total: usize },
}

impl fmt::Display for PortClash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PortClash::Taken { port, protocol, by } => write!(
                f,
                "host port {port}/{protocol} is already published by \"{}\"",
                entry_spec(&by.0, &by.1)
            ),
            PortClash::Full { more, total } => {
                write!(
                    f,
                    "{} would be more than the PUBLISHED_PORTS map holds ({PUBLISHED_PORTS_CAPACITY} entries)",
                    crate::count(*total as u64, "published port", "published ports")
                )?;
                if total != more {
                    write!(f, ": {} already, {more} more", total - more)?;
                }
                f.write_str("; publish fewer ports")
            }
        }
    }
}

/// Every rule for one more publish on a running instance (`publish add`), in the
/// order a reader would check them: the host IP (`host`: the host's addresses), the
/// backend, then the host ports against what is `published`. The text starts with the
/// spec, names the value and the fix. `up` applies the same three rules to a config
/// (`Config::validate` and `instance::address_problems`).
pub fn check_add(
    spec: &PublishSpec,
    host: &[Ipv4Addr],
    backends: AllowedBackends<'_>,
    published: &PortMappings,
) -> Result<(), String> {
    let refused = |why: String| format!("publish spec \"{spec}\": {why}");
    spec.check_host_addr(host).map_err(refused)?;
    backends.check(spec).map_err(refused)?;
    published.check_add(spec).map_err(|clash| {
        refused(match clash {
            PortClash::Taken { .. } => format!(
                "{clash}; pick another host port, or remove that one with `netfast publish del`"
            ),
            PortClash::Full { .. } => clash.to_string(),
        })
    })
}

/// An instance's published ports, indexed by protocol and host port: what
/// PUBLISHED_PORTS holds, or what a config is about to write. Every check is one hash
/// lookup per port, so a config with thousands of ports is checked in linear time.
#[derive(Clone, Debug, Default)]
pub struct PortMappings {
    by_port: HashMap<(u8, u16), Vec<(PublishKey, Backend)>>,
    len: usize,
}

impl PortMappings {
    /// The mappings `entries` make, as they are (no checks: PUBLISHED_PORTS' content).
    pub fn new(entries: impl IntoIterator<Item = (PublishKey, Backend)>) -> Self {
        let mut m = Self::default();
        for e in entries {
            m.insert(e);
        }
        m
    }

    fn insert(&mut self, (key, backend): (PublishKey, Backend)) {
        self.by_port
            .entry((key.proto, key.host_port))
            .or_default()
            .push((key, backend));
        self.len += 1;
    }

    /// How many entries (host ports) are published.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The entry that already claims `key`'s host port, if any.
    pub fn claimant(&self, key: &PublishKey) -> Option<(PublishKey, Backend)> {
        self.by_port
            .get(&(key.proto, key.host_port))?
            .iter()
            .find(|(k, _)| claims_same_port(k, key))
            .copied()
    }

    /// The exact entry for `key`, if published.
    pub fn get(&self, key: &PublishKey) -> Option<Backend> {
        self.by_port
            .get(&(key.proto, key.host_port))?
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, b)| *b)
    }

    /// Whether `spec` can join: none of its host ports claimed, and room left.
    pub fn check_add(&self, spec: &PublishSpec) -> Result<(), PortClash> {
        for (key, _) in spec.entries() {
            if let Some(by) = self.claimant(&key) {
                return Err(PortClash::Taken {
                    port: u16::from_be(key.host_port),
                    protocol: spec.protocol,
                    by,
                });
            }
        }
        let total = self.len + spec.port_count();
        if total > PUBLISHED_PORTS_CAPACITY as usize {
            return Err(PortClash::Full {
                more: spec.port_count(),
                total,
            });
        }
        Ok(())
    }

    /// [`check_add`](Self::check_add), then adds `spec`'s entries.
    pub fn add(&mut self, spec: &PublishSpec) -> Result<(), PortClash> {
        self.check_add(spec)?;
        for e in spec.entries() {
            self.insert(e);
        }
        Ok(())
    }

    /// Whether `spec` can be unpublished: each of its entries is published exactly so.
    /// The text names the value and the fix.
    pub fn check_del(&self, spec: &PublishSpec) -> Result<(), String> {
        for (key, backend) in spec.entries() {
            let port = u16::from_be(key.host_port);
            match self.get(&key) {
                None => {
                    return Err(format!(
                        "host port {}{port}/{} is not published; see `netfast publish list`",
                        match key.host_addr {
                            0 => String::new(),
                            a => format!("{}:", raw_to_addr(a)),
                        },
                        spec.protocol
                    ));
                }
                Some(b) if b != backend => {
                    return Err(format!(
                        "host port {port}/{} leads to {}:{}, not {}:{}; give the spec as `netfast publish list` shows it (\"{}\")",
                        spec.protocol,
                        raw_to_addr(b.addr),
                        u16::from_be(b.port),
                        raw_to_addr(backend.addr),
                        u16::from_be(backend.port),
                        entry_spec(&key, &b)
                    ));
                }
                Some(_) => {}
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// "Any" (0) meets every address; two addresses meet only when equal; protocol
    /// and port must match.
    #[test]
    fn host_ports_clash_on_a_shared_address() {
        let key = |addr: [u8; 4], port: u16, proto: u8| PublishKey {
            host_addr: u32::from_ne_bytes(addr),
            host_port: port.to_be(),
            proto,
            _pad: 0,
        };
        let any = key([0; 4], 8088, proto::TCP);
        let lo = key([127, 0, 0, 1], 8088, proto::TCP);
        let uplink = key([10, 0, 1, 48], 8088, proto::TCP);
        assert!(claims_same_port(&any, &lo) && claims_same_port(&uplink, &any));
        assert!(claims_same_port(&lo, &lo) && !claims_same_port(&lo, &uplink));
        assert!(!claims_same_port(&any, &key([0; 4], 8089, proto::TCP)));
        assert!(!claims_same_port(&any, &key([0; 4], 8088, proto::UDP)));
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    /// (input, host IP, host ports, container IP, container ports, protocol, canonical form)
    type Case = (
        &'static str,
        Option<&'static str>,
        RangeInclusive<u16>,
        &'static str,
        RangeInclusive<u16>,
        Protocol,
        &'static str,
    );

    #[test]
    fn parses_valid_specs() {
        #[rustfmt::skip]
        let cases: &[Case] = &[
            ("8088:172.16.0.102:80/tcp", None, 8088..=8088, "172.16.0.102", 80..=80, Protocol::Tcp, "8088:172.16.0.102:80/tcp"),
            ("8088:172.16.0.102:80", None, 8088..=8088, "172.16.0.102", 80..=80, Protocol::Tcp, "8088:172.16.0.102:80/tcp"),
            ("53:172.16.0.103:53/udp", None, 53..=53, "172.16.0.103", 53..=53, Protocol::Udp, "53:172.16.0.103:53/udp"),
            ("53:172.16.0.103:53/UDP", None, 53..=53, "172.16.0.103", 53..=53, Protocol::Udp, "53:172.16.0.103:53/udp"),
            ("10.0.1.48:8088:172.16.0.102:80", Some("10.0.1.48"), 8088..=8088, "172.16.0.102", 80..=80, Protocol::Tcp, "10.0.1.48:8088:172.16.0.102:80/tcp"),
            ("0.0.0.0:8088:172.16.0.102:80", None, 8088..=8088, "172.16.0.102", 80..=80, Protocol::Tcp, "8088:172.16.0.102:80/tcp"),
            ("8000-8009:172.16.0.102:9000-9009/udp", None, 8000..=8009, "172.16.0.102", 9000..=9009, Protocol::Udp, "8000-8009:172.16.0.102:9000-9009/udp"),
            ("8000-8009:172.16.0.102:80", None, 8000..=8009, "172.16.0.102", 80..=80, Protocol::Tcp, "8000-8009:172.16.0.102:80/tcp"),
            ("1:172.16.0.102:65535", None, 1..=1, "172.16.0.102", 65535..=65535, Protocol::Tcp, "1:172.16.0.102:65535/tcp"),
            ("80-80:172.16.0.102:80-80", None, 80..=80, "172.16.0.102", 80..=80, Protocol::Tcp, "80:172.16.0.102:80/tcp"),
            ("*:8088:172.16.0.102:80/tcp", None, 8088..=8088, "172.16.0.102", 80..=80, Protocol::Tcp, "8088:172.16.0.102:80/tcp"),
            (" 8088:172.16.0.102:80 ", None, 8088..=8088, "172.16.0.102", 80..=80, Protocol::Tcp, "8088:172.16.0.102:80/tcp"),
        ];
        for (input, host, hp, backend, bp, proto, canonical) in cases {
            let spec: PublishSpec = input
                .parse()
                .unwrap_or_else(|e| panic!("{input:?} should parse: {e}"));
            assert_eq!(spec.host_addr, host.map(ip), "{input}");
            assert_eq!(&spec.host_ports, hp, "{input}");
            assert_eq!(spec.backend_addr, ip(backend), "{input}");
            assert_eq!(&spec.backend_ports, bp, "{input}");
            assert_eq!(spec.protocol, *proto, "{input}");
            assert_eq!(spec.to_string(), *canonical, "{input}");
            // Display is canonical: it parses back to the same spec.
            assert_eq!(canonical.parse::<PublishSpec>().unwrap(), spec, "{input}");
        }
    }

    #[test]
    fn refuses_invalid_specs_naming_the_value() {
        // (input, text the error must contain)
        #[rustfmt::skip]
        let cases: &[(&str, &[&str])] = &[
            ("", &["empty", "8088:172.16.0.102:80/tcp"]),
            ("8088:80", &["container IP is missing"]),
            ("8088", &["write [HOST_IP:]HOST_PORT"]),
            ("a:b:c:d:e", &["IPv4 only"]),
            ("[::1]:80:172.16.0.102:80", &["IPv4 only"]),
            ("0:172.16.0.102:80", &["host port 0", "1 to 65535"]),
            ("8088:172.16.0.102:0", &["container port 0"]),
            ("70000:172.16.0.102:80", &["host port 70000", "above 65535"]),
            ("8088:172.16.0.102:99999999999", &["99999999999", "above 65535"]),
            ("+80:172.16.0.102:80", &["\"+80\"", "not a number"]),
            ("http:172.16.0.102:80", &["\"http\"", "not a number"]),
            ("9000-8000:172.16.0.102:80", &["9000-8000", "inverted", "(8000-9000)"]),
            ("8000-:172.16.0.102:80", &["host port is missing"]),
            ("8000-8009:172.16.0.102:80-84", &["8000-8009", "10 ports", "80-84", "5", "same length"]),
            ("8000:172.16.0.102:80-84", &["8000", "80-84", "same length"]),
            ("8088:172.16.0.102:80/sctp", &["\"sctp\"", "/tcp or /udp"]),
            ("8088:172.16.0.102:80/", &["empty", "/tcp or /udp"]),
            ("8088:container2:80", &["\"container2\"", "not an IPv4 address"]),
            ("8088:0.0.0.0:80", &["0.0.0.0", "not a unicast"]),
            ("8088:224.0.0.1:80", &["224.0.0.1", "not a unicast"]),
            ("localhost:8088:172.16.0.102:80", &["\"localhost\"", "host IP"]),
            ("**:8088:172.16.0.102:80", &["\"**\"", "host IP"]),
            ("255.255.255.255:8088:172.16.0.102:80", &["255.255.255.255", "host IP"]),
        ];
        for (input, needles) in cases {
            let err = input
                .parse::<PublishSpec>()
                .expect_err(&format!("{input:?} should be refused"));
            let text = err.to_string();
            assert!(
                text.starts_with(&format!("publish spec \"{input}\"")),
                "{input:?}: {text}"
            );
            for n in *needles {
                assert!(text.contains(n), "{input:?}: {text:?} lacks {n:?}");
            }
        }
    }

    #[test]
    fn host_ip_must_be_the_hosts() {
        let host = [ip("10.0.1.48"), ip("172.16.0.100")];
        for ok in [
            "8088:172.16.0.102:80",
            "10.0.1.48:8088:172.16.0.102:80",
            "172.16.0.100:53:172.16.0.103:53/udp",
        ] {
            let spec: PublishSpec = ok.parse().unwrap();
            spec.check_host_addr(&host)
                .unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        let spec: PublishSpec = "10.9.9.9:8088:172.16.0.102:80".parse().unwrap();
        let err = spec.check_host_addr(&host).expect_err("not the host's");
        for n in [
            "host IP 10.9.9.9",
            "not an address of this host",
            "10.0.1.48, 172.16.0.100",
            "leave the host IP out",
        ] {
            assert!(err.contains(n), "{err:?} lacks {n:?}");
        }
        // Addresses named twice (the host's, and those `up` adds) are listed once.
        let twice = [host[0], host[1], host[1], host[0]];
        let err = spec.check_host_addr(&twice).expect_err("not the host's");
        assert!(err.contains("(it has 10.0.1.48, 172.16.0.100)"), "{err}");
    }

    /// What `publish list` prints, row by row, parses back to the entry it shows.
    #[test]
    fn list_rows_parse_back() {
        for (words, canonical) in [
            (
                &["tcp", "*:8088", "172.16.0.102:80"][..],
                "8088:172.16.0.102:80/tcp",
            ),
            (
                &["udp", "10.0.1.48:5353", "172.16.0.103:53"],
                "10.0.1.48:5353:172.16.0.103:53/udp",
            ),
            (&["*:8088:172.16.0.102:80/tcp"], "8088:172.16.0.102:80/tcp"),
        ] {
            let spec = PublishSpec::from_words(words).unwrap_or_else(|e| panic!("{words:?}: {e}"));
            assert_eq!(spec.to_string(), canonical);
        }
        let err = PublishSpec::from_words(&["tcp", "*:8088"]).expect_err("two words");
        assert!(err.to_string().contains("\"tcp *:8088\""), "{err}");
        assert!(err.to_string().contains("PROTO HOST BACKEND"), "{err}");
        let err =
            PublishSpec::from_words(&["sctp", "*:8088", "172.16.0.102:80"]).expect_err("sctp");
        assert!(
            err.to_string().contains("\"sctp *:8088 172.16.0.102:80\""),
            "{err}"
        );
    }

    #[test]
    fn entries_expand_one_per_port_in_network_order() {
        let spec: PublishSpec = "10.0.1.48:8000-8002:172.16.0.102:9000-9002/udp"
            .parse()
            .unwrap();
        let got: Vec<_> = spec.entries().collect();
        assert_eq!(got.len(), 3);
        for (i, (k, b)) in got.iter().enumerate() {
            let i = i as u16;
            assert_eq!(k.host_addr.to_ne_bytes(), [10, 0, 1, 48]);
            assert_eq!(k.host_port.to_ne_bytes(), (8000 + i).to_be_bytes());
            assert_eq!(k.proto, proto::UDP);
            assert_eq!(k._pad, 0);
            assert_eq!(b.addr.to_ne_bytes(), [172, 16, 0, 102]);
            assert_eq!(b.port.to_ne_bytes(), (9000 + i).to_be_bytes());
            assert_eq!(b._pad, [0, 0]);
        }
    }

    #[test]
    fn entries_map_a_host_range_to_a_single_port() {
        let spec: PublishSpec = "8000-8003:172.16.0.102:80".parse().unwrap();
        let got: Vec<_> = spec.entries().collect();
        assert_eq!(got.len(), 4);
        assert_eq!(spec.port_count(), 4);
        for (k, b) in &got {
            assert_eq!(k.host_addr, 0, "no host IP means any");
            assert_eq!(k.proto, proto::TCP);
            assert_eq!(u16::from_be(b.port), 80);
        }
        assert_eq!(u16::from_be(got[3].0.host_port), 8003);
    }

    #[test]
    fn entries_cover_the_top_port_without_overflow() {
        let spec: PublishSpec = "65534-65535:172.16.0.102:65534-65535".parse().unwrap();
        let ports: Vec<_> = spec
            .entries()
            .map(|(k, b)| (u16::from_be(k.host_port), u16::from_be(b.port)))
            .collect();
        assert_eq!(ports, [(65534, 65534), (65535, 65535)]);
    }

    /// The lab host's addresses.
    fn host() -> Vec<Ipv4Addr> {
        vec![ip("10.0.1.48"), ip("10.0.1.49")]
    }

    fn subnet() -> AllowedBackends<'static> {
        AllowedBackends {
            subnet: Some("172.16.0.0/24".parse().unwrap()),
            containers: None,
            host: &[],
        }
    }

    fn mappings(specs: &[&str]) -> PortMappings {
        PortMappings::new(
            specs
                .iter()
                .flat_map(|s| s.parse::<PublishSpec>().unwrap().entries()),
        )
    }

    #[test]
    fn a_port_is_claimed_per_protocol_and_address() {
        #[rustfmt::skip]
        let cases: &[(&str, &str, bool)] = &[
            ("8088:172.16.0.102:80", "8088:172.16.0.103:80", true),
            ("8088:172.16.0.102:80/tcp", "8088:172.16.0.102:80/udp", false),
            ("8000-8010:172.16.0.102:80", "8010-8020:172.16.0.103:80", true),
            ("8000-8010:172.16.0.102:80", "8011-8020:172.16.0.103:80", false),
            ("10.0.1.48:8088:172.16.0.102:80", "10.0.1.49:8088:172.16.0.102:80", false),
            ("10.0.1.48:8088:172.16.0.102:80", "8088:172.16.0.102:80", true),
        ];
        for (a, b, want) in cases {
            let (pa, pb): (PublishSpec, PublishSpec) = (a.parse().unwrap(), b.parse().unwrap());
            assert_eq!(
                mappings(&[a]).check_add(&pb).is_err(),
                *want,
                "{a} then {b}"
            );
            assert_eq!(
                mappings(&[b]).check_add(&pa).is_err(),
                *want,
                "{b} then {a}"
            );
        }
    }

    /// Every refused `publish add`/`publish del` names the value and the fix.
    #[test]
    fn refused_live_changes_name_value_and_fix() {
        let published = mappings(&[
            "8088:172.16.0.102:80/tcp",
            "10.0.1.48:9000-9001:172.16.0.103:90/udp",
        ]);
        #[rustfmt::skip]
        let add_cases: &[(&str, &[&str])] = &[
            ("8089:172.16.9.9:80", &["172.16.9.9", "outside masquerade subnet 172.16.0.0/24", "use a container address"]),
            ("8088:172.16.0.103:80", &["8088/tcp", "already published", "8088:172.16.0.102:80/tcp", "publish del"]),
            ("10.0.1.48:8088:172.16.0.103:80", &["8088/tcp", "already published"]),
            ("9000-9005:172.16.0.103:90/udp", &["9000/udp", "10.0.1.48:9000:172.16.0.103:90/udp"]),
            ("10.9.9.9:8089:172.16.0.102:80", &["\"10.9.9.9:8089:172.16.0.102:80/tcp\"", "host IP 10.9.9.9 is not an address of this host", "10.0.1.48, 10.0.1.49"]),
        ];
        for (spec, needles) in add_cases {
            let parsed: PublishSpec = spec.parse().expect("spec");
            let err = check_add(&parsed, &host(), subnet(), &published)
                .expect_err(&format!("{spec} must be refused"));
            for n in *needles {
                assert!(err.contains(n), "{spec}: {err:?} lacks {n:?}");
            }
        }
        // Different protocol, different address from a specific one: fine.
        for ok in [
            "8088:172.16.0.102:80/udp",
            "10.0.1.49:9000:172.16.0.103:90/udp",
            "8089:172.16.0.102:80",
        ] {
            let parsed: PublishSpec = ok.parse().expect("spec");
            check_add(&parsed, &host(), subnet(), &published)
                .unwrap_or_else(|e| panic!("{ok} refused: {e}"));
        }
        // No masquerade: only the containers can vouch for a backend.
        let spec: PublishSpec = "8089:172.16.0.102:80".parse().expect("spec");
        let unknown = AllowedBackends {
            subnet: None,
            containers: None,
            host: &[],
        };
        let err = check_add(&spec, &host(), unknown, &published).expect_err("refused");
        assert!(err.contains("--config"), "{err}");
        let none = AllowedBackends {
            subnet: None,
            containers: Some(&[]),
            host: &[],
        };
        let err = check_add(&spec, &host(), none, &published).expect_err("refused");
        assert!(err.contains("not a container address"), "{err}");
        let containers = [ip("172.16.0.102")];
        let known = AllowedBackends {
            subnet: None,
            containers: Some(&containers),
            host: &[],
        };
        check_add(&spec, &host(), known, &published).expect("a container address is fine");

        // Never a backend: the subnet's network and broadcast addresses, and the
        // host's own addresses, although they lie in the subnet.
        let bridge = [ip("172.16.0.100")];
        let with_host = AllowedBackends {
            host: &bridge,
            ..subnet()
        };
        #[rustfmt::skip]
        let never: &[(&str, &[&str])] = &[
            ("8091:172.16.0.0:80", &["172.16.0.0 is the network address of masquerade subnet 172.16.0.0/24", "use a container address"]),
            ("8091:172.16.0.255:80", &["172.16.0.255 is the broadcast address of masquerade subnet 172.16.0.0/24"]),
            ("8091:172.16.0.100:80", &["172.16.0.100 is an address of this host", "use a container address"]),
        ];
        for (spec, needles) in never {
            let parsed: PublishSpec = spec.parse().expect("spec");
            let err = check_add(&parsed, &host(), with_host, &published)
                .expect_err(&format!("{spec} must be refused"));
            for n in *needles {
                assert!(err.contains(n), "{spec}: {err:?} lacks {n:?}");
            }
        }

        #[rustfmt::skip]
        let del_cases: &[(&str, &[&str])] = &[
            ("8090:172.16.0.102:80", &["host port 8090/tcp is not published", "publish list"]),
            ("8088:172.16.0.102:80/udp", &["8088/udp is not published"]),
            ("8088:172.16.0.103:80", &["leads to 172.16.0.102:80, not 172.16.0.103:80", "\"8088:172.16.0.102:80/tcp\""]),
            ("10.0.1.48:9000-9002:172.16.0.103:90/udp", &["host port 10.0.1.48:9002/udp is not published"]),
            // Published on one address only: "every address" is another entry.
            ("9000:172.16.0.103:90/udp", &["host port 9000/udp is not published"]),
        ];
        for (spec, needles) in del_cases {
            let parsed: PublishSpec = spec.parse().expect("spec");
            let err = published
                .check_del(&parsed)
                .expect_err(&format!("{spec} must be refused"));
            for n in *needles {
                assert!(err.contains(n), "{spec}: {err:?} lacks {n:?}");
            }
        }
        published
            .check_del(&"8088:172.16.0.102:80".parse().expect("spec"))
            .expect("exact match removes");
    }

    #[test]
    fn capacity_is_checked() {
        let mut published = PortMappings::default();
        for p in 1..=PUBLISHED_PORTS_CAPACITY as u16 {
            published
                .add(&format!("{p}:172.16.0.102:80/udp").parse().unwrap())
                .expect("room");
        }
        assert_eq!(published.len(), PUBLISHED_PORTS_CAPACITY as usize);
        let spec: PublishSpec = "8088:172.16.0.102:80/tcp".parse().expect("spec");
        let err = check_add(&spec, &host(), subnet(), &published).expect_err("full");
        assert!(
            err.contains("16385 published ports would be more than the PUBLISHED_PORTS map holds (16384 entries): 16384 already, 1 more"),
            "{err}"
        );
        assert!(err.contains("16384"), "{err}");
    }

    #[test]
    fn entry_spec_round_trips() {
        for s in [
            "8088:172.16.0.102:80/tcp",
            "10.0.1.48:53:172.16.0.103:5353/udp",
        ] {
            let spec: PublishSpec = s.parse().unwrap();
            let (k, b) = spec.entries().next().unwrap();
            assert_eq!(entry_spec(&k, &b), s);
        }
    }
}
