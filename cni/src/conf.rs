//! The network config on stdin: the spec's fields, netfast's keys, the runtime's
//! `runtimeConfig.portMappings`, prevResult, and GC's `cni.dev/valid-attachments`.
//!
//! Read from a `serde_json::Value`, key by key, so that a wrong type is answered with
//! code 7 naming the key and the fix, not serde's "invalid type" at a column.
//! Keys this plugin does not know are ignored, as portmap ignores them (Go's JSON
//! decoding drops unknown fields) and as the spec allows; `main` mentions them on stderr.

use std::{net::Ipv4Addr, ops::RangeInclusive};

use ipnet::Ipv4Net;
use netfast::{
    cni_instance::{CniNetwork, PortMapping},
    config::{
        CONNTRACK_CAPACITY_MAX, CONNTRACK_CAPACITY_MIN, CgroupSetting, DEFAULT_SNAT_PORTS,
        parse_cgroup,
    },
    publish::Protocol,
};
use netfast_common::names::CONNTRACK_CAPACITY;
use serde_json::{Map, Value};

use crate::spec::{CniError, Code, SUPPORTED_VERSIONS};

/// The keys this plugin reads (beside prevResult and the spec's own).
pub const KEYS: [&str; 7] = [
    "instance",
    "uplink",
    "masquerade",
    "snatPorts",
    "conntrack",
    "fastPath",
    "hostLocal",
];
/// The spec's keys of a plugin config, which libcni fills in.
const SPEC_KEYS: [&str; 8] = [
    "cniVersion",
    "name",
    "type",
    "capabilities",
    "runtimeConfig",
    "prevResult",
    "args",
    "cni.dev/valid-attachments",
];

/// A parsed plugin config.
#[derive(Clone, Debug, PartialEq)]
pub struct PluginConf {
    pub cni_version: String,
    pub network: CniNetwork,
    pub port_mappings: Vec<PortMapping>,
    /// Mappings left out, with why (IPv6 host IPs): for stderr.
    pub skipped: Vec<String>,
    /// prevResult as given, passed on unchanged by ADD.
    pub prev_result: Option<Value>,
    /// GC's `cni.dev/valid-attachments`: (containerID, ifname); None when the config
    /// has no such key.
    pub valid_attachments: Option<Vec<(String, String)>>,
    /// Keys this plugin ignored.
    pub unknown_keys: Vec<String>,
}

fn invalid(msg: String) -> CniError {
    CniError::new(Code::InvalidConfig, msg)
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The config's `cniVersion`, checked: code 1 when unsupported, naming the versions.
pub fn cni_version(obj: &Map<String, Value>) -> Result<String, CniError> {
    match obj.get("cniVersion") {
        Some(Value::String(v)) if SUPPORTED_VERSIONS.contains(&v.as_str()) => Ok(v.clone()),
        Some(Value::String(v)) => Err(CniError::new(
            Code::IncompatibleVersion,
            format!(
                "cniVersion \"{v}\" (cniVersion) is not supported by netfast-cni; use one of {}",
                SUPPORTED_VERSIONS.join(", ")
            ),
        )),
        Some(other) => Err(invalid(format!(
            "cniVersion (cniVersion) is {}, not a string; write a version such as \"1.0.0\"",
            kind(other)
        ))),
        None => Err(invalid(
            "cniVersion (cniVersion) is missing; write a version such as \"1.0.0\"".to_owned(),
        )),
    }
}

/// Decodes stdin: code 6 when it is not a JSON object.
pub fn decode(stdin: &str) -> Result<Map<String, Value>, CniError> {
    match serde_json::from_str::<Value>(stdin) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(other) => Err(CniError::new(
            Code::Decode,
            format!(
                "the network config on stdin is {}, not a JSON object",
                kind(&other)
            ),
        )),
        Err(e) => Err(CniError::new(
            Code::Decode,
            format!("the network config on stdin is not JSON: {e}"),
        )),
    }
}

fn boolean(
    obj: &Map<String, Value>,
    key: &str,
    default: bool,
    meaning: &str,
) -> Result<bool, CniError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(other) => Err(invalid(format!(
            "{key} ({key}) is {}: {other}, not a boolean; write true or false ({meaning}; \
             default {default})",
            kind(other)
        ))),
    }
}

fn string<'a>(
    obj: &'a Map<String, Value>,
    key: &str,
    example: &str,
) -> Result<Option<&'a str>, CniError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(invalid(format!(
            "{key} ({key}) is {}: {other}, not a string; write it as a string, like \"{example}\"",
            kind(other)
        ))),
    }
}

/// `snatPorts`: "LO-HI", 1 to 65535, not inverted.
pub fn snat_ports(s: &str) -> Result<RangeInclusive<u16>, CniError> {
    let bad = |why: String| {
        invalid(format!(
            "snatPorts \"{s}\" (snatPorts): {why}; write a range like \"61000-65535\" outside \
             the host's ip_local_port_range"
        ))
    };
    let (lo, hi) = s
        .split_once('-')
        .ok_or_else(|| bad("is not a range LO-HI".to_owned()))?;
    let port = |p: &str| -> Result<u16, CniError> {
        match p.trim().parse::<u32>() {
            Ok(0) => Err(bad("port 0 is not a port".to_owned())),
            Ok(n) => u16::try_from(n).map_err(|_| bad(format!("{n} is above 65535"))),
            Err(_) => Err(bad(format!("\"{}\" is not a port number", p.trim()))),
        }
    };
    let (lo, hi) = (port(lo)?, port(hi)?);
    if lo > hi {
        return Err(bad("the range is inverted".to_owned()));
    }
    Ok(lo..=hi)
}

/// `conntrack`: an object with `capacity` (entries, two per flow).
fn conntrack_capacity(obj: &Map<String, Value>) -> Result<u32, CniError> {
    let table = match obj.get("conntrack") {
        None | Some(Value::Null) => return Ok(CONNTRACK_CAPACITY),
        Some(Value::Object(t)) => t,
        Some(other) => {
            return Err(invalid(format!(
                "conntrack (conntrack) is {}, not an object; write {{\"capacity\": {CONNTRACK_CAPACITY}}}",
                kind(other)
            )));
        }
    };
    if let Some(k) = table.keys().find(|k| *k != "capacity") {
        return Err(CniError::new(
            Code::UnsupportedField,
            format!(
                "conntrack.{k} (conntrack.{k}) is not supported by netfast-cni: flow timeouts are \
                 applied by the GC of `netfast run --instance NAME`, which uses nf_conntrack's \
                 defaults; remove the key (only conntrack.capacity is read)"
            ),
        ));
    }
    let (min, max) = (CONNTRACK_CAPACITY_MIN, CONNTRACK_CAPACITY_MAX);
    match table.get("capacity") {
        None | Some(Value::Null) => Ok(CONNTRACK_CAPACITY),
        Some(Value::Number(n)) => match n.as_u64() {
            Some(c) if (u64::from(min)..=u64::from(max)).contains(&c) => Ok(c as u32),
            _ => Err(invalid(format!(
                "conntrack capacity {n} (conntrack.capacity): out of range; use {min} to {max} \
                 entries (two per flow), like {CONNTRACK_CAPACITY}"
            ))),
        },
        Some(other) => Err(invalid(format!(
            "conntrack capacity (conntrack.capacity) is {}: {other}, not a number; write a whole \
             number from {min} to {max}, like {CONNTRACK_CAPACITY}",
            kind(other)
        ))),
    }
}

/// `hostLocal`: an object with `cgroup`, `"auto"` (the cgroup2 mount's root: every
/// process of the host) or the absolute path of a cgroup2 directory, as
/// `[host_local] cgroup` of a config file. Whether the path is a cgroup2 directory
/// ADD checks, on the machine.
fn host_local(obj: &Map<String, Value>) -> Result<Option<CgroupSetting>, CniError> {
    const FIX: &str = "write {\"cgroup\": \"auto\"} (every process of the host), or a cgroup2 \
                       directory's path for \"cgroup\"";
    let table = match obj.get("hostLocal") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Object(t)) => t,
        Some(other) => {
            return Err(invalid(format!(
                "hostLocal is {}: {other}, not an object; {FIX}",
                kind(other)
            )));
        }
    };
    if let Some(k) = table.keys().find(|k| *k != "cgroup") {
        return Err(invalid(format!(
            "hostLocal.{k} is not a key of hostLocal; {FIX}"
        )));
    }
    match table.get("cgroup") {
        Some(Value::String(text)) => parse_cgroup(text, "hostLocal.cgroup")
            .map(Some)
            .map_err(invalid),
        None | Some(Value::Null) => Err(invalid(format!("hostLocal.cgroup is missing; {FIX}"))),
        Some(other) => Err(invalid(format!(
            "hostLocal.cgroup is {}: {other}, not a string; {FIX}",
            kind(other)
        ))),
    }
}

fn port_number(m: &Map<String, Value>, i: usize, key: &str) -> Result<u16, CniError> {
    let at = format!("runtimeConfig.portMappings[{i}].{key}");
    match m.get(key) {
        Some(Value::Number(n)) => match n.as_u64() {
            Some(p @ 1..=65535) => Ok(p as u16),
            _ => Err(invalid(format!(
                "{key} {n} ({at}) is not a port; use 1 to 65535"
            ))),
        },
        Some(other) => Err(invalid(format!(
            "{key} ({at}) is {}: {other}, not a number; write a port from 1 to 65535",
            kind(other)
        ))),
        None => Err(invalid(format!(
            "{key} ({at}) is missing; every port mapping needs hostPort and containerPort"
        ))),
    }
}

/// `runtimeConfig.portMappings` (the `portMappings` capability, as portmap reads it).
/// Returns the IPv4 mappings, and a note for each IPv6 one left out.
fn port_mappings(obj: &Map<String, Value>) -> Result<(Vec<PortMapping>, Vec<String>), CniError> {
    let list = match obj.get("runtimeConfig") {
        None | Some(Value::Null) => return Ok((Vec::new(), Vec::new())),
        Some(Value::Object(rc)) => match rc.get("portMappings") {
            None | Some(Value::Null) => return Ok((Vec::new(), Vec::new())),
            Some(Value::Array(list)) => list,
            Some(other) => {
                return Err(invalid(format!(
                    "runtimeConfig.portMappings (runtimeConfig.portMappings) is {}, not an array",
                    kind(other)
                )));
            }
        },
        Some(other) => {
            return Err(invalid(format!(
                "runtimeConfig (runtimeConfig) is {}, not an object",
                kind(other)
            )));
        }
    };
    let mut out = Vec::new();
    let mut skipped = Vec::new();
    for (i, m) in list.iter().enumerate() {
        let Value::Object(m) = m else {
            return Err(invalid(format!(
                "runtimeConfig.portMappings[{i}] is {}, not an object like \
                 {{\"hostPort\": 8088, \"containerPort\": 80, \"protocol\": \"tcp\"}}",
                kind(m)
            )));
        };
        let host_port = port_number(m, i, "hostPort")?;
        let container_port = port_number(m, i, "containerPort")?;
        let protocol = match m.get("protocol") {
            None | Some(Value::Null) => Protocol::Tcp,
            Some(Value::String(p)) => match p.to_ascii_lowercase().as_str() {
                "" | "tcp" => Protocol::Tcp,
                "udp" => Protocol::Udp,
                _ => {
                    return Err(invalid(format!(
                        "protocol \"{p}\" (runtimeConfig.portMappings[{i}].protocol) is not \
                         supported; netfast publishes \"tcp\" and \"udp\""
                    )));
                }
            },
            Some(other) => {
                return Err(invalid(format!(
                    "protocol (runtimeConfig.portMappings[{i}].protocol) is {}, not a string; \
                     write \"tcp\" or \"udp\"",
                    kind(other)
                )));
            }
        };
        let host_ip = match m.get("hostIP") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s.is_empty() || s == "0.0.0.0" => None,
            Some(Value::String(s)) => match s.parse::<std::net::IpAddr>() {
                Ok(std::net::IpAddr::V4(a)) => Some(a),
                Ok(std::net::IpAddr::V6(_)) => {
                    skipped.push(format!(
                        "runtimeConfig.portMappings[{i}]: host IP {s} is IPv6, which netfast \
                         does not translate; left out"
                    ));
                    continue;
                }
                Err(_) => {
                    return Err(invalid(format!(
                        "hostIP \"{s}\" (runtimeConfig.portMappings[{i}].hostIP) is not an IP \
                         address; give an address of the host, or leave it out for every address"
                    )));
                }
            },
            Some(other) => {
                return Err(invalid(format!(
                    "hostIP (runtimeConfig.portMappings[{i}].hostIP) is {}, not a string",
                    kind(other)
                )));
            }
        };
        out.push(PortMapping {
            host_port,
            container_port,
            protocol,
            host_ip,
        });
    }
    Ok((out, skipped))
}

/// GC's `cni.dev/valid-attachments`: [{"containerID", "ifname"}].
fn valid_attachments(obj: &Map<String, Value>) -> Result<Option<Vec<(String, String)>>, CniError> {
    const KEY: &str = "cni.dev/valid-attachments";
    let list = match obj.get(KEY) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Array(l)) => l,
        Some(other) => {
            return Err(invalid(format!(
                "{KEY} ({KEY}) is {}, not an array",
                kind(other)
            )));
        }
    };
    list.iter()
        .enumerate()
        .map(|(i, a)| {
            let field = |k: &str| match a.get(k) {
                Some(Value::String(s)) => Ok(s.clone()),
                _ => Err(invalid(format!(
                    "{KEY}[{i}].{k} is missing or not a string; each valid attachment is \
                     {{\"containerID\": ID, \"ifname\": NAME}}"
                ))),
            };
            Ok((field("containerID")?, field("ifname")?))
        })
        .collect::<Result<_, _>>()
        .map(Some)
}

/// The instance a config names, read leniently for DEL: `instance` if it is a valid
/// name, else the network's name if it is one; None when neither is.
pub fn instance_name(obj: &Map<String, Value>) -> Option<String> {
    let valid = |v: Option<&Value>| {
        v.and_then(Value::as_str)
            .filter(|n| netfast::cni_instance::check_instance_name(n, "instance").is_ok())
            .map(str::to_owned)
    };
    match obj.get("instance") {
        Some(Value::Null) | None => valid(obj.get("name")),
        given => valid(given),
    }
}

/// Parses a plugin config (one entry of a conflist, as libcni hands it over).
pub fn parse(obj: &Map<String, Value>) -> Result<PluginConf, CniError> {
    let cni_version = cni_version(obj)?;
    let network = match obj.get("name") {
        Some(Value::String(n)) if !n.is_empty() => n.clone(),
        Some(Value::String(_)) | None => {
            return Err(invalid(
                "name (name) is missing or empty; the network config must name its network"
                    .to_owned(),
            ));
        }
        Some(other) => {
            return Err(invalid(format!(
                "name (name) is {}, not a string",
                kind(other)
            )));
        }
    };
    let instance = match string(obj, "instance", "mynet")? {
        Some(i) => {
            netfast::cni_instance::check_instance_name(i, "instance")
                .map_err(|e| invalid(e.to_string()))?;
            i.to_owned()
        }
        None => {
            // The network's name, unless netfast cannot use it as an instance name.
            netfast::cni_instance::check_instance_name(&network, "name").map_err(|e| {
                invalid(format!(
                    "{e}; or set \"instance\" to a name netfast accepts (the default is the \
                     network's name)"
                ))
            })?;
            network.clone()
        }
    };
    let uplink = string(obj, "uplink", "eth0")?.map(str::to_owned);
    if let Some(u) = &uplink
        && (u.is_empty()
            || u.len() > 15
            || u.contains(['/', ':'])
            || u.contains(char::is_whitespace))
    {
        return Err(invalid(format!(
            "uplink \"{u}\" (uplink) is not an interface name; give the host interface that \
             leads out, like \"eth0\", or leave it out for the default route's"
        )));
    }
    let masquerade = boolean(
        obj,
        "masquerade",
        true,
        "true masquerades the container subnet from prevResult behind the uplink's address",
    )?;
    let fast_path = boolean(
        obj,
        "fastPath",
        true,
        "true sends translated packets straight between the uplink and the containers' veths",
    )?;
    let snat_ports = match string(obj, "snatPorts", "61000-65535")? {
        Some(s) => snat_ports(s)?,
        None => DEFAULT_SNAT_PORTS,
    };
    let conntrack_capacity = conntrack_capacity(obj)?;
    let host_local = host_local(obj)?;
    let (port_mappings, skipped) = port_mappings(obj)?;
    let prev_result = match obj.get("prevResult") {
        None | Some(Value::Null) => None,
        Some(v @ Value::Object(_)) => Some(v.clone()),
        Some(other) => {
            return Err(invalid(format!(
                "prevResult (prevResult) is {}, not an object",
                kind(other)
            )));
        }
    };
    let unknown_keys = obj
        .keys()
        .filter(|k| !KEYS.contains(&k.as_str()) && !SPEC_KEYS.contains(&k.as_str()))
        .cloned()
        .collect();
    Ok(PluginConf {
        cni_version,
        network: CniNetwork {
            instance,
            network,
            uplink,
            masquerade,
            snat_ports,
            conntrack_capacity,
            fast_path,
            host_local,
        },
        port_mappings,
        skipped,
        prev_result,
        valid_attachments: valid_attachments(obj)?,
        unknown_keys,
    })
}

/// What ADD and CHECK need from prevResult about the container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrevContainer {
    /// The container's IPv4 address with its prefix.
    pub address: Ipv4Net,
    pub gateway: Option<Ipv4Addr>,
    pub mac: [u8; 6],
    /// Host-side interfaces (no `sandbox`): the bridge and the veth, or the veth.
    pub host_side: Vec<String>,
}

fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let bytes: Vec<u8> = s
        .split(':')
        .map(|b| u8::from_str_radix(b, 16))
        .collect::<Result<_, _>>()
        .ok()?;
    bytes.try_into().ok()
}

/// Reads the container's interface (the one named `ifname` with a `sandbox`), its
/// IPv4 address and gateway, and the host-side interfaces from prevResult (0.4.0 and
/// 1.x shapes: `ips[].interface` is an index into `interfaces`).
pub fn prev_container(prev: &Value, ifname: &str) -> Result<PrevContainer, CniError> {
    let bad = |msg: String| {
        invalid(format!(
            "prevResult: {msg}; chain netfast-cni after an interface plugin (bridge or ptp) with IPAM"
        ))
    };
    let interfaces = prev
        .get("interfaces")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("has no interfaces".to_owned()))?;
    let sandboxed = |i: &Value| {
        i.get("sandbox")
            .and_then(Value::as_str)
            .is_some_and(|s| !s.is_empty())
    };
    let index = interfaces
        .iter()
        .position(|i| sandboxed(i) && i.get("name").and_then(Value::as_str) == Some(ifname))
        .ok_or_else(|| {
            bad(format!(
                "has no interface {ifname} inside the container (with a sandbox)"
            ))
        })?;
    let mac_text = interfaces[index]
        .get("mac")
        .and_then(Value::as_str)
        .unwrap_or("");
    let mac = parse_mac(mac_text).ok_or_else(|| {
        bad(format!(
            "interface {ifname} has no MAC address (mac \"{mac_text}\")"
        ))
    })?;
    let host_side = interfaces
        .iter()
        .filter(|i| !sandboxed(i))
        .filter_map(|i| i.get("name").and_then(Value::as_str).map(str::to_owned))
        .collect();
    let ips = prev
        .get("ips")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("has no ips".to_owned()))?;
    for ip in ips {
        let on_it = ip.get("interface").and_then(Value::as_u64) == Some(index as u64);
        let Some(Ok(address)) = ip
            .get("address")
            .and_then(Value::as_str)
            .map(str::parse::<Ipv4Net>)
        else {
            continue;
        };
        if !on_it {
            continue;
        }
        let gateway = ip
            .get("gateway")
            .and_then(Value::as_str)
            .and_then(|g| g.parse().ok());
        return Ok(PrevContainer {
            address,
            gateway,
            mac,
            host_side,
        });
    }
    Err(bad(format!("has no IPv4 address on interface {ifname}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(extra: &str) -> Result<PluginConf, CniError> {
        let text =
            format!(r#"{{"cniVersion":"1.0.0","name":"mynet","type":"netfast-cni"{extra}}}"#);
        parse(&decode(&text)?)
    }

    #[test]
    fn defaults() {
        let c = conf("").expect("parse");
        assert_eq!(c.network.instance, "mynet");
        assert_eq!(c.network.uplink, None);
        assert!(c.network.masquerade && c.network.fast_path);
        assert_eq!(c.network.snat_ports, DEFAULT_SNAT_PORTS);
        assert_eq!(c.network.conntrack_capacity, CONNTRACK_CAPACITY);
        assert!(c.port_mappings.is_empty() && c.prev_result.is_none());
        assert_eq!(c.network.host_local, None);
    }

    #[test]
    fn host_local_takes_auto_or_a_path() {
        let cgroup = |extra: &str| conf(extra).expect(extra).network.host_local;
        assert_eq!(
            cgroup(r#","hostLocal":{"cgroup":"auto"}"#),
            Some(CgroupSetting::Auto)
        );
        assert_eq!(
            cgroup(r#","hostLocal":{"cgroup":"/sys/fs/cgroup/netfast"}"#),
            Some(CgroupSetting::Path("/sys/fs/cgroup/netfast".into()))
        );
        assert_eq!(cgroup(r#","hostLocal":null"#), None);
    }

    /// Each bad value is code 7 (1 for the version, 2 for an unsupported conntrack
    /// key) with a message naming the key.
    #[test]
    fn bad_values_name_their_key() {
        #[rustfmt::skip]
        let cases: &[(&str, u32, &[&str])] = &[
            (r#","masquerade":"yes""#, 7, &["(masquerade)", "true or false"]),
            (r#","fastPath":1"#, 7, &["(fastPath)", "true or false"]),
            (r#","instance":"a/b""#, 7, &["(instance)", "a/b"]),
            (r#","instance":7"#, 7, &["(instance)", "not a string"]),
            (r#","uplink":"has space""#, 7, &["(uplink)"]),
            (r#","snatPorts":"70000-80000""#, 7, &["(snatPorts)", "70000"]),
            (r#","snatPorts":"9-1""#, 7, &["(snatPorts)", "inverted"]),
            (r#","snatPorts":[1,2]"#, 7, &["(snatPorts)", "not a string"]),
            (r#","conntrack":{"capacity":5}"#, 7, &["(conntrack.capacity)", "1024"]),
            (r#","conntrack":{"capacity":"big"}"#, 7, &["(conntrack.capacity)", "not a number"]),
            (r#","conntrack":{"udp":30}"#, 2, &["(conntrack.udp)"]),
            (r#","hostLocal":true"#, 7, &["hostLocal is a boolean: true, not an object", r#"{"cgroup": "auto"}"#]),
            (r#","hostLocal":{}"#, 7, &["hostLocal.cgroup is missing"]),
            (r#","hostLocal":{"cgroup":5}"#, 7, &["hostLocal.cgroup is a number: 5, not a string"]),
            (r#","hostLocal":{"cgroup":"netfast"}"#, 7, &["\"netfast\" (hostLocal.cgroup)", "not an absolute path", "\"auto\""]),
            (r#","hostLocal":{"cgroups":"auto"}"#, 7, &["hostLocal.cgroups is not a key of hostLocal"]),
            (r#","runtimeConfig":{"portMappings":[{"hostPort":"80","containerPort":80}]}"#, 7, &["portMappings[0].hostPort", "not a number"]),
            (r#","runtimeConfig":{"portMappings":[{"hostPort":70000,"containerPort":80}]}"#, 7, &["portMappings[0].hostPort", "1 to 65535"]),
            (r#","runtimeConfig":{"portMappings":[{"hostPort":80,"containerPort":80,"protocol":"sctp"}]}"#, 7, &["portMappings[0].protocol", "sctp"]),
            (r#","runtimeConfig":{"portMappings":[{"hostPort":80,"containerPort":80,"hostIP":"nope"}]}"#, 7, &["portMappings[0].hostIP", "nope"]),
        ];
        for (extra, code, needles) in cases {
            let e = conf(extra).expect_err(extra);
            assert_eq!(e.code.number(), *code, "{extra}: {}", e.msg);
            for n in *needles {
                assert!(e.msg.contains(n), "{extra}: {:?} lacks {n:?}", e.msg);
            }
        }
        let e = parse(&decode(r#"{"cniVersion":"9.9.9","name":"n"}"#).expect("json")).unwrap_err();
        assert_eq!(e.code, Code::IncompatibleVersion);
        assert!(
            e.msg.contains("9.9.9") && e.msg.contains("1.1.0"),
            "{}",
            e.msg
        );
        assert_eq!(decode("{nope").unwrap_err().code, Code::Decode);
    }

    #[test]
    fn del_finds_the_instance_leniently() {
        let obj = |t: &str| decode(t).expect("json");
        assert_eq!(
            instance_name(&obj(r#"{"name":"mynet","masquerade":"yes"}"#)).as_deref(),
            Some("mynet")
        );
        assert_eq!(
            instance_name(&obj(r#"{"name":"mynet","instance":"other"}"#)).as_deref(),
            Some("other")
        );
        assert_eq!(instance_name(&obj(r#"{"name":"my.net"}"#)), None);
        assert_eq!(
            instance_name(&obj(r#"{"name":"mynet","instance":"a/b"}"#)),
            None
        );
    }

    #[test]
    fn mappings_and_unknown_keys() {
        let c = conf(
            r#","typo":1,"runtimeConfig":{"portMappings":[
                {"hostPort":8088,"containerPort":80,"protocol":"tcp","hostIP":""},
                {"hostPort":5353,"containerPort":53,"protocol":"UDP","hostIP":"10.0.0.1"},
                {"hostPort":8088,"containerPort":80,"hostIP":"::"}]}"#,
        )
        .expect("parse");
        assert_eq!(c.port_mappings.len(), 2);
        assert_eq!(c.port_mappings[0].host_ip, None);
        assert_eq!(c.port_mappings[1].protocol, Protocol::Udp);
        assert_eq!(c.port_mappings[1].host_ip, Some(Ipv4Addr::new(10, 0, 0, 1)));
        assert_eq!(c.skipped.len(), 1);
        assert_eq!(c.unknown_keys, vec!["typo".to_owned()]);
    }

    #[test]
    fn prev_result_gives_the_container() {
        let prev: Value = serde_json::from_str(
            r#"{"cniVersion":"1.0.0",
                "interfaces":[{"name":"cni0","mac":"aa:aa:aa:aa:aa:aa"},
                              {"name":"veth1234","mac":"bb:bb:bb:bb:bb:bb"},
                              {"name":"eth0","mac":"0a:58:0a:58:00:05","sandbox":"/run/netns/x"}],
                "ips":[{"address":"10.88.0.5/16","gateway":"10.88.0.1","interface":2}]}"#,
        )
        .expect("json");
        let c = prev_container(&prev, "eth0").expect("container");
        assert_eq!(c.address, "10.88.0.5/16".parse::<Ipv4Net>().expect("net"));
        assert_eq!(c.gateway, Some(Ipv4Addr::new(10, 88, 0, 1)));
        assert_eq!(c.mac, [0x0a, 0x58, 0x0a, 0x58, 0, 5]);
        assert_eq!(c.host_side, vec!["cni0".to_owned(), "veth1234".to_owned()]);
        let e = prev_container(&prev, "eth1").unwrap_err();
        assert!(e.msg.contains("eth1"), "{}", e.msg);
    }
}
