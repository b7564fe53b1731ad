//! What the read commands print: one serde view per command, shown either as an
//! aligned table for people or as JSON (`--json`) for machines. The views are built
//! from [`netfast::bpf::pinned`] data by pure functions, so the output is tested golden.

use std::{fmt, net::Ipv4Addr};

use netfast_common::{Backend, Counter, DatapathConfig, PublishKey, ct::KIND_SNAT};
use serde::Serialize;

use netfast::{
    bpf::{
        features::Features,
        loader::FALLBACK_NOTE,
        pinned::{LinkStatus, MapFill},
    },
    conntrack::{Flow, Tuple, addr, kind_name, proto_name},
    host::topology::HostAddress,
};

/// Column alignment: text left, numbers right.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Align {
    Left,
    Right,
}

/// An aligned table: columns two spaces apart, no trailing blanks.
#[derive(Clone, Debug)]
pub struct Table {
    columns: Vec<(&'static str, Align)>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(columns: &[(&'static str, Align)]) -> Self {
        Self {
            columns: columns.to_vec(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut widths: Vec<usize> = self.columns.iter().map(|(h, _)| h.len()).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let headers: Vec<String> = self.columns.iter().map(|(h, _)| h.to_string()).collect();
        for row in std::iter::once(&headers).chain(&self.rows) {
            let mut line = String::new();
            for (i, ((_, align), w)) in self.columns.iter().zip(&widths).enumerate() {
                let cell = row.get(i).map_or("", String::as_str);
                if i > 0 {
                    line.push_str("  ");
                }
                match align {
                    Align::Left => line.push_str(&format!("{cell:<w$}")),
                    Align::Right => line.push_str(&format!("{cell:>w$}")),
                }
            }
            writeln!(f, "{}", line.trim_end())?;
        }
        Ok(())
    }
}

/// `ADDR:PORT`.
fn endpoint(a: Ipv4Addr, port: u16) -> String {
    format!("{a}:{port}")
}

/// `1h02m`, `3m04s`, `12.3s`, `450ms`: short and sortable by eye.
pub fn duration_ms(ms: u64) -> String {
    match ms {
        0..1_000 => format!("{ms}ms"),
        1_000..60_000 => format!("{:.1}s", ms as f64 / 1000.0),
        60_000..3_600_000 => format!("{}m{:02}s", ms / 60_000, ms / 1000 % 60),
        _ => format!("{}h{:02}m", ms / 3_600_000, ms / 60_000 % 60),
    }
}

// ---- publish list ----

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PublishRow {
    pub proto: &'static str,
    /// None: every address of the uplink.
    pub host_addr: Option<Ipv4Addr>,
    pub host_port: u16,
    pub backend_addr: Ipv4Addr,
    pub backend_port: u16,
    /// The container that owns the mapping, on an instance a CNI network brought up;
    /// None for a port published by `up --config` or `publish add`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<PublishOwner>,
}

/// A CNI container, as `publish list` names the owner of a port mapping.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PublishOwner {
    pub container_id: String,
    pub netns: String,
    pub ifname: String,
}

/// Sets each row's owner from the CNI owner records: the record whose mappings hold
/// the row's (protocol, host address, host port) with the row's backend.
pub fn with_owners(rows: &mut [PublishRow], records: &[netfast::cni_instance::ContainerRecord]) {
    for row in rows.iter_mut() {
        row.owner = records.iter().find_map(|r| {
            let owns = r.specs().ok()?.iter().any(|spec| {
                spec.protocol.as_str() == row.proto
                    && spec.host_addr == row.host_addr
                    && spec.host_ports.contains(&row.host_port)
                    && spec.backend_addr == row.backend_addr
                    && spec.backend_port_for(row.host_port) == Some(row.backend_port)
            });
            owns.then(|| PublishOwner {
                container_id: r.container_id.clone(),
                netns: r.netns.clone(),
                ifname: r.ifname.clone(),
            })
        });
    }
}

pub fn publish_rows(entries: &[(PublishKey, Backend)]) -> Vec<PublishRow> {
    entries
        .iter()
        .map(|(k, b)| PublishRow {
            proto: proto_name(k.proto),
            host_addr: (k.host_addr != 0).then(|| addr(k.host_addr)),
            host_port: u16::from_be(k.host_port),
            backend_addr: addr(b.addr),
            backend_port: u16::from_be(b.port),
            owner: None,
        })
        .collect()
}

/// The `publish list` table; an OWNER column (CNI container id and netns) when any
/// row has an owner.
pub fn publish_table(rows: &[PublishRow]) -> Table {
    let owners = rows.iter().any(|r| r.owner.is_some());
    let mut columns = vec![
        ("PROTO", Align::Left),
        ("HOST", Align::Left),
        ("BACKEND", Align::Left),
    ];
    if owners {
        columns.push(("OWNER", Align::Left));
    }
    let mut t = Table::new(&columns);
    for r in rows {
        let host = r.host_addr.map_or_else(
            || format!("*:{}", r.host_port),
            |a| endpoint(a, r.host_port),
        );
        let mut cells = vec![
            r.proto.to_string(),
            host,
            endpoint(r.backend_addr, r.backend_port),
        ];
        if owners {
            cells.push(r.owner.as_ref().map_or_else(
                || "-".to_owned(),
                |o| {
                    format!(
                        "container {} ({}, netns {})",
                        o.container_id, o.ifname, o.netns
                    )
                },
            ));
        }
        t.row(cells);
    }
    t
}

// ---- ct list ----

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct TupleView {
    pub src: Ipv4Addr,
    pub sport: u16,
    pub dst: Ipv4Addr,
    pub dport: u16,
}

impl From<Tuple> for TupleView {
    fn from(t: Tuple) -> Self {
        Self {
            src: t.src,
            sport: t.src_port,
            dst: t.dst,
            dport: t.dst_port,
        }
    }
}

impl fmt::Display for TupleView {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{} -> {}:{}",
            self.src, self.sport, self.dst, self.dport
        )
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FlowRow {
    pub proto: &'static str,
    /// "DNAT" or "SNAT".
    pub kind: &'static str,
    /// The first packet as it arrived.
    pub original: TupleView,
    /// The first packet after translation.
    pub translated: TupleView,
    /// TCP only: nf_conntrack's state name (`netfast_common::tcp::tcp_state`).
    pub tcp_state: Option<&'static str>,
    /// False while the flow waits in `CONNTRACK_UNASSURED` (no TCP handshake or UDP
    /// reply yet); the table shows it as `[UNASSURED]`.
    pub assured: bool,
    pub age_ms: u64,
    pub idle_ms: u64,
    /// Time left until the GC removes the flow: its timeout (protocol and TCP state,
    /// [`netfast::gc::Timeouts::for_flow`]) minus its idle time; 0 once it is due.
    pub expires_ms: u64,
    pub packets_original: u64,
    pub packets_reply: u64,
    pub bytes_original: u64,
    pub bytes_reply: u64,
    /// False when the LRU evicted one half.
    pub complete: bool,
}

/// One `ct list` row for `f` at `now_ns`, its EXPIRES from `timeouts`.
pub fn flow_row(f: &Flow, now_ns: u64, timeouts: &netfast::gc::Timeouts) -> FlowRow {
    let (po, pr) = f.packets();
    let (bo, br) = f.bytes();
    let idle_ms = now_ns.saturating_sub(f.last_seen_ns()) / 1_000_000;
    let timeout_ms =
        u64::try_from(timeouts.for_flow(f.proto(), f.tcp_state()).as_millis()).unwrap_or(u64::MAX);
    FlowRow {
        proto: proto_name(f.proto()),
        kind: kind_name(f.kind()),
        original: Tuple::from(&f.original_key()).into(),
        translated: Tuple::from(&f.translated_key()).into(),
        tcp_state: f.tcp_state().map(|s| s.as_str()),
        assured: f.table == netfast::conntrack::Table::Assured,
        age_ms: now_ns.saturating_sub(f.created_ns()) / 1_000_000,
        idle_ms,
        expires_ms: timeout_ms.saturating_sub(idle_ms),
        packets_original: po,
        packets_reply: pr,
        bytes_original: bo,
        bytes_reply: br,
        complete: f.is_complete(),
    }
}

/// `ct list`'s last line, like conntrack's "N flow entries have been shown":
/// "3 flows (2 assured, 1 unassured)".
pub fn flow_count(rows: &[FlowRow]) -> String {
    let assured = rows.iter().filter(|r| r.assured).count();
    format!(
        "{} ({assured} assured, {} unassured)",
        netfast::count(rows.len() as u64, "flow", "flows"),
        rows.len() - assured
    )
}

/// `ct list`'s table: one row per flow.
pub fn flow_table(rows: &[FlowRow]) -> Table {
    let mut t = Table::new(&[
        ("PROTO", Align::Left),
        ("KIND", Align::Left),
        ("ORIGINAL", Align::Left),
        ("TRANSLATED", Align::Left),
        ("STATE", Align::Left),
        ("AGE", Align::Right),
        ("IDLE", Align::Right),
        ("EXPIRES", Align::Right),
        ("PACKETS", Align::Right),
        ("BYTES", Align::Right),
    ]);
    for r in rows {
        let mut state = r.tcp_state.unwrap_or("-").to_owned();
        if !r.assured {
            state.push_str(" [UNASSURED]");
        }
        if !r.complete {
            state.push_str(" (half)");
        }
        t.row(vec![
            r.proto.to_string(),
            r.kind.to_string(),
            r.original.to_string(),
            r.translated.to_string(),
            state,
            duration_ms(r.age_ms),
            duration_ms(r.idle_ms),
            match r.expires_ms {
                // Past its timeout: the next GC pass removes it.
                0 => "due".to_owned(),
                ms => duration_ms(ms),
            },
            format!("{}/{}", r.packets_original, r.packets_reply),
            format!("{}/{}", r.bytes_original, r.bytes_reply),
        ]);
    }
    t
}

// ---- nat list ----

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NatBinding {
    pub proto: &'static str,
    pub container: String,
    pub uplink: String,
    pub remote: String,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PortUse {
    pub proto: &'static str,
    pub used: u32,
    pub total: u32,
    pub percent: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NatView {
    pub snat_ports: String,
    pub bindings: Vec<NatBinding>,
    pub port_use: Vec<PortUse>,
}

/// Masquerade bindings from SNAT flows, and per protocol how many distinct SNAT ports
/// (ports of the uplink side of SNAT flows) are in use out of the configured range.
pub fn nat_view(flows: &[Flow], config: &DatapathConfig) -> NatView {
    let mut bindings = Vec::new();
    let mut used: std::collections::BTreeSet<(u8, u16)> = Default::default();
    for f in flows.iter().filter(|f| f.kind() == KIND_SNAT) {
        let o = Tuple::from(&f.original_key());
        let t = Tuple::from(&f.translated_key());
        used.insert((f.proto(), t.src_port));
        bindings.push(NatBinding {
            proto: proto_name(f.proto()),
            container: endpoint(o.src, o.src_port),
            uplink: endpoint(t.src, t.src_port),
            remote: endpoint(o.dst, o.dst_port),
        });
    }
    bindings.sort_by(|a, b| (a.proto, &a.uplink).cmp(&(b.proto, &b.uplink)));
    let total = u32::from(config.snat_port_max.saturating_sub(config.snat_port_min)) + 1;
    let port_use = [
        netfast_common::proto::TCP,
        netfast_common::proto::UDP,
        netfast_common::proto::ICMP,
    ]
    .into_iter()
    .map(|p| {
        let n = used.iter().filter(|(q, _)| *q == p).count() as u32;
        PortUse {
            proto: proto_name(p),
            used: n,
            total,
            percent: percent(n.into(), total.into()),
        }
    })
    .collect();
    NatView {
        snat_ports: format!("{}-{}", config.snat_port_min, config.snat_port_max),
        bindings,
        port_use,
    }
}

fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        (part as f64 * 1000.0 / whole as f64).round() / 10.0
    }
}

impl fmt::Display for NatView {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut t = Table::new(&[
            ("PROTO", Align::Left),
            ("CONTAINER", Align::Left),
            ("UPLINK", Align::Left),
            ("REMOTE", Align::Left),
        ]);
        for b in &self.bindings {
            t.row(vec![
                b.proto.to_string(),
                b.container.clone(),
                b.uplink.clone(),
                b.remote.clone(),
            ]);
        }
        write!(f, "{t}")?;
        writeln!(f)?;
        let mut u = Table::new(&[
            ("PROTO", Align::Left),
            ("SNAT PORTS", Align::Left),
            ("USED", Align::Right),
            ("TOTAL", Align::Right),
            ("USE", Align::Right),
        ]);
        for p in &self.port_use {
            u.row(vec![
                p.proto.to_string(),
                self.snat_ports.clone(),
                p.used.to_string(),
                p.total.to_string(),
                format!("{:.1}%", p.percent),
            ]);
        }
        write!(f, "{u}")
    }
}

// ---- stats ----

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CounterRow {
    pub name: &'static str,
    /// "pass", "drop", "redirect" (to a container's veth), "info" (not a per-packet
    /// decision), or "socket" (a host-local program's decision on a socket call).
    pub decision: &'static str,
    pub value: u64,
    /// Per second over the last `--watch` interval.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate: Option<f64>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MapFillRow {
    pub name: &'static str,
    pub kind: &'static str,
    pub entries: u32,
    pub capacity: u32,
    pub percent: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StatsView {
    pub instance: String,
    pub counters: Vec<CounterRow>,
    pub maps: Vec<MapFillRow>,
    pub snat_port_retries: u64,
}

pub fn decision(c: Counter) -> &'static str {
    if c.is_host_local() {
        "socket"
    } else if !c.is_decision() {
        "info"
    } else if c.is_drop() {
        "drop"
    } else if c.is_redirect() {
        "redirect"
    } else {
        "pass"
    }
}

/// `previous` and `seconds` give rates: (value - previous) / seconds.
pub fn stats_view(
    instance: &str,
    counters: &[(Counter, u64)],
    previous: Option<(&[(Counter, u64)], f64)>,
    maps: &[MapFill],
) -> StatsView {
    let rows = counters
        .iter()
        .map(|&(c, v)| CounterRow {
            name: c.name(),
            decision: decision(c),
            value: v,
            rate: previous.and_then(|(prev, secs)| {
                let before = prev.iter().find(|(p, _)| *p == c).map(|(_, v)| *v)?;
                (secs > 0.0).then(|| (v.saturating_sub(before) as f64 / secs * 10.0).round() / 10.0)
            }),
        })
        .collect();
    StatsView {
        instance: instance.to_owned(),
        counters: rows,
        maps: maps
            .iter()
            .map(|m| MapFillRow {
                name: m.name,
                kind: m.kind,
                entries: m.entries,
                capacity: m.capacity,
                percent: percent(m.entries.into(), m.capacity.into()),
            })
            .collect(),
        snat_port_retries: counters
            .iter()
            .find(|(c, _)| *c == Counter::SnatPortRetries)
            .map_or(0, |(_, v)| *v),
    }
}

impl fmt::Display for StatsView {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let with_rate = self.counters.iter().any(|c| c.rate.is_some());
        let mut cols = vec![
            ("COUNTER", Align::Left),
            ("DECISION", Align::Left),
            ("VALUE", Align::Right),
        ];
        if with_rate {
            cols.push(("PER SEC", Align::Right));
        }
        let mut t = Table::new(&cols);
        for c in &self.counters {
            let mut row = vec![
                c.name.to_string(),
                c.decision.to_string(),
                c.value.to_string(),
            ];
            if let Some(r) = c.rate {
                row.push(format!("{r:.1}"));
            }
            t.row(row);
        }
        write!(f, "{t}")?;
        writeln!(f)?;
        let mut m = Table::new(&[
            ("MAP", Align::Left),
            ("TYPE", Align::Left),
            ("ENTRIES", Align::Right),
            ("CAPACITY", Align::Right),
            ("FILL", Align::Right),
        ]);
        for r in &self.maps {
            m.row(vec![
                r.name.to_string(),
                r.kind.to_string(),
                r.entries.to_string(),
                r.capacity.to_string(),
                format!("{:.1}%", r.percent),
            ]);
        }
        write!(f, "{m}")?;
        writeln!(f)?;
        writeln!(f, "snat port retries: {}", self.snat_port_retries)
    }
}

// ---- live counters (`netfast lab`, `netfast run`) ----

/// How wide the live views wrap: the terminal's width when stdout is one (60 to 200
/// columns), else 100.
pub fn live_width() -> usize {
    // SAFETY: TIOCGWINSZ writes a winsize into `ws`, which lives for the whole call.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut ws) };
    if rc == 0 && ws.ws_col > 0 {
        usize::from(ws.ws_col).clamp(60, 200)
    } else {
        100
    }
}

/// The counters of a live view, one `name=value` item each: without an earlier
/// sample every counter that is not 0; after one, only those that moved, each with
/// its change as `change` writes it (`+3`, `+1/s`). A counter that did not move is
/// left out, so a quiet datapath prints little.
pub fn live_counter_items(
    now: &[(Counter, u64)],
    before: Option<&[(Counter, u64)]>,
    change: impl Fn(u64) -> String,
) -> Vec<String> {
    now.iter()
        .enumerate()
        .filter_map(|(i, (counter, value))| match before {
            None => (*value != 0).then(|| format!("{}={value}", counter.name())),
            Some(before) => {
                let was = before.get(i).map_or(0, |(_, v)| *v);
                (*value != was).then(|| {
                    format!(
                        "{}={value} ({})",
                        counter.name(),
                        change(value.saturating_sub(was))
                    )
                })
            }
        })
        .collect()
}

/// `items` after `first` (the first line's start, such as `[    4s] `), separated by
/// two spaces and wrapped at `width` columns; later lines are indented to where the
/// items start. An item longer than a line gets a line of its own.
pub fn wrap_items(first: &str, items: &[String], width: usize) -> Vec<String> {
    let indent = " ".repeat(first.chars().count());
    let mut lines = Vec::new();
    let mut line = first.to_owned();
    let mut empty = true;
    for item in items {
        if !empty && line.chars().count() + 2 + item.chars().count() > width {
            lines.push(std::mem::replace(&mut line, indent.clone()));
            empty = true;
        }
        if !empty {
            line.push_str("  ");
        }
        line.push_str(item);
        empty = false;
    }
    if !empty {
        lines.push(line);
    }
    lines
}

// ---- status ----

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ProgramView {
    pub pin: String,
    pub program: Option<String>,
    pub interface: Option<String>,
    pub ifindex: u32,
    /// "tcx", "xdp" or "cgroup".
    pub attach: String,
    /// "ingress" or "egress"; for cgroup links the socket hook ("connect4", ...).
    pub hook: &'static str,
    /// cgroup links: the cgroup2 directory they are attached to (absent when it
    /// was removed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<String>,
    /// cgroup links: the kernel's id of that cgroup (0 once the kernel detached the
    /// link from a removed cgroup).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup_id: Option<u64>,
    /// cgroup links: true when no directory has that id any more.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup_gone: Option<bool>,
    /// True for the tc ingress program behind XDP (XDP mode only): it translates the
    /// frames with partial checksums that XDP leaves to it.
    pub fallback: bool,
    /// XDP: "native", "skb" or "hw"; absent for tcx.
    pub mode: Option<&'static str>,
    /// A netlink TC filter (attach "tc"): its priority (`tc filter show`'s pref).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tc_priority: Option<u16>,
    /// A netlink TC filter: its handle, `major << 16 | minor`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tc_handle: Option<u32>,
    /// A netlink TC filter: false when the kernel no longer has it; absent when
    /// status could not ask (another network namespace).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tc_live: Option<bool>,
    pub prog_id: u32,
    /// 0 for a netlink TC filter, which is no bpf_link.
    pub link_id: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ConfigView {
    pub enabled: bool,
    pub uplink_addr: Ipv4Addr,
    /// `ADDR/PREFIX`, or None without masquerade.
    pub masquerade: Option<String>,
    pub snat_ports: String,
    /// CONFIG's `allow_direct_routing`: whether packets from the uplink routed straight
    /// to the masquerade subnet pass without a flow or a publish (always false
    /// without masquerade, where nothing is dropped for it).
    pub allow_direct_routing: bool,
    /// CONFIG's `fast_path`: whether translated packets go straight between the
    /// uplink and the containers' veths.
    pub fast_path: bool,
    /// Published ports (PUBLISHED_PORTS entries).
    pub published_ports: usize,
    /// The same count under its old name, for scripts written against it.
    pub forwards: usize,
    pub conntrack_entries: usize,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StatusView {
    pub instance: String,
    /// The instance's host namespace as `up` recorded it: its `/run/netns` name,
    /// "root", or "unnamed (inode N)"; None when the manifest does not say (an
    /// instance from an older build).
    pub netns: Option<String>,
    /// Set when status ran in another namespace: whether it entered the instance's.
    pub netns_note: Option<String>,
    /// The CNI network whose netfast-cni brought the instance up; None for an
    /// instance of `netfast up --config`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cni_network: Option<String>,
    pub pin_dir: String,
    pub programs: Vec<ProgramView>,
    pub config: ConfigView,
    /// The addresses in force, read from the kernel now; None when no program is
    /// attached (no uplink to ask about).
    pub addresses: Option<AddressesView>,
    pub host_local: HostLocalView,
    /// What this kernel offers, probed by this command.
    pub features: Features,
    /// How the tc programs are attached: "tcx", "netlink" (TC filters on a clsact
    /// qdisc), or None when no tc program is.
    pub tc_attach: Option<&'static str>,
}

/// How the tc programs of `programs` are attached: "netlink" when any is a netlink
/// TC filter, "tcx" when any is a tcx link, None when none is attached.
pub fn tc_attach_of(programs: &[ProgramView]) -> Option<&'static str> {
    if programs.iter().any(|p| p.attach == "tc") {
        Some("netlink")
    } else if programs.iter().any(|p| p.attach == "tcx") {
        Some("tcx")
    } else {
        None
    }
}

/// Host-local access to published ports, as the pins say.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HostLocalView {
    /// True when the host-local programs' links are pinned.
    pub enabled: bool,
    /// The cgroup2 directory they are attached to; None when it was removed.
    pub cgroup: Option<String>,
    /// True when the links are pinned but their cgroup was removed: no process can
    /// be in it, so the programs never run.
    pub cgroup_gone: bool,
    /// The kernel's id of that cgroup (0 once it detached the links from a removed
    /// cgroup).
    pub cgroup_id: Option<u64>,
    /// What they take for the host, besides 127.0.0.0/8 (`HOST_ADDRS`, as of `up`).
    pub host_addrs: Vec<Ipv4Addr>,
}

/// How `status` tells an operator to turn host-local access on.
pub const HOST_LOCAL_HINT: &str = "add [host_local] cgroup = \"auto\" to the config and run \
     `netfast up` again, so processes of this host reach published ports";

/// [`HOST_LOCAL_HINT`] for a CNI network's instance, whose settings its first ADD
/// decided.
pub const CNI_HOST_LOCAL_HINT: &str = "add \"hostLocal\": {\"cgroup\": \"auto\"} to the \
     netfast-cni entry of the network config; it applies when the instance next comes up, \
     at the first ADD after `netfast down --instance NAME`";

pub fn host_local_view(links: &[LinkStatus], host_addrs: &[(Ipv4Addr, u32)]) -> HostLocalView {
    let first = links.iter().find(|l| l.cgroup_id.is_some());
    HostLocalView {
        enabled: first.is_some(),
        cgroup: first.and_then(|l| l.cgroup.clone()),
        cgroup_gone: first.is_some_and(|l| l.cgroup.is_none()),
        cgroup_id: first.and_then(|l| l.cgroup_id),
        host_addrs: host_addrs.iter().map(|(a, _)| *a).collect(),
    }
}

/// How a cgroup link's cgroup reads when its directory is gone.
fn removed_cgroup(id: Option<u64>) -> String {
    match id {
        Some(id) if id != 0 => format!("cgroup id {id} (removed)"),
        _ => "(cgroup removed)".to_owned(),
    }
}

/// The addresses the datapath takes from the kernel when a flow starts, as they are
/// now (`route.rs` in the datapath): CONFIG's `uplink_addr` is only the address of
/// `up`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AddressesView {
    /// The uplink's name, or `ifindex N`.
    pub uplink: String,
    /// Every IPv4 address of the uplink, primaries first.
    pub uplink_addresses: Vec<UplinkAddress>,
    /// What a new masqueraded flow takes through a route without a `src` of its own:
    /// the uplink's first primary address (`inet_select_addr`, as MASQUERADE takes
    /// it); toward a subnet of another primary address of the uplink, that one. None
    /// when the uplink has no address: new flows then take the address of `up`.
    pub masquerade_source: Option<Ipv4Addr>,
    /// Where a publish without a host address answers: every address of the host
    /// namespace except loopback ones, and the address of `up`, which the datapath
    /// takes without asking.
    pub any_publish: Vec<Ipv4Addr>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct UplinkAddress {
    /// `ADDR/LEN`.
    pub address: String,
    /// IFA_F_SECONDARY: never taken as a source by `inet_select_addr`.
    pub secondary: bool,
}

impl fmt::Display for UplinkAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let suffix = if self.secondary { " (secondary)" } else { "" };
        write!(f, "{}{suffix}", self.address)
    }
}

/// Builds the view of the uplink `uplink_index` from every address of the namespace.
pub fn addresses_view(
    uplink: String,
    uplink_index: u32,
    up_addr: Ipv4Addr,
    host: &[HostAddress],
) -> AddressesView {
    let on_uplink: Vec<&HostAddress> = host.iter().filter(|a| a.index == uplink_index).collect();
    let mut any_publish: Vec<Ipv4Addr> = host
        .iter()
        .map(|a| a.local.addr())
        .filter(|a| !a.is_loopback())
        .collect();
    if !any_publish.contains(&up_addr) {
        any_publish.push(up_addr);
    }
    AddressesView {
        uplink,
        uplink_addresses: on_uplink
            .iter()
            .map(|a| UplinkAddress {
                address: a.local.to_string(),
                secondary: a.secondary,
            })
            .collect(),
        masquerade_source: on_uplink
            .iter()
            .find(|a| !a.secondary)
            .map(|a| a.local.addr()),
        any_publish,
    }
}

pub fn program_views(links: &[LinkStatus]) -> Vec<ProgramView> {
    links
        .iter()
        .map(|l| ProgramView {
            pin: l.pin.clone(),
            program: l.prog_name.clone(),
            interface: l.interface.clone(),
            ifindex: l.ifindex,
            attach: l.kind.clone(),
            hook: l.hook,
            cgroup: l.cgroup.clone(),
            cgroup_id: l.cgroup_id,
            cgroup_gone: l.cgroup_id.map(|_| l.cgroup.is_none()),
            fallback: l.fallback,
            mode: l.mode,
            tc_priority: l.netlink.map(|n| n.priority),
            tc_handle: l.netlink.map(|n| n.handle),
            tc_live: l.netlink.and_then(|n| n.live),
            prog_id: l.prog_id,
            link_id: l.link_id,
        })
        .collect()
}

pub fn config_view(
    c: &DatapathConfig,
    published_ports: usize,
    conntrack_entries: usize,
) -> ConfigView {
    ConfigView {
        enabled: c.enabled != 0,
        uplink_addr: addr(c.uplink_addr),
        masquerade: (c.masquerade != 0).then(|| {
            format!(
                "{}/{}",
                addr(c.subnet_addr),
                u32::from_be(c.subnet_mask).count_ones()
            )
        }),
        snat_ports: format!("{}-{}", c.snat_port_min, c.snat_port_max),
        allow_direct_routing: c.masquerade != 0 && c.allow_direct_routing != 0,
        fast_path: c.fast_path != 0,
        published_ports,
        forwards: published_ports,
        conntrack_entries,
    }
}

impl fmt::Display for StatusView {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "instance:    {}", self.instance)?;
        if let Some(ns) = &self.netns {
            match &self.netns_note {
                Some(note) => writeln!(f, "netns:       {ns} ({note})")?,
                None => writeln!(f, "netns:       {ns}")?,
            }
        }
        if let Some(network) = &self.cni_network {
            writeln!(f, "cni network: {network} (brought up by netfast-cni)")?;
        }
        writeln!(f, "pins:        {}", self.pin_dir)?;
        let c = &self.config;
        writeln!(
            f,
            "datapath:    {}",
            if c.enabled {
                "enabled"
            } else {
                "not configured"
            }
        )?;
        writeln!(f, "uplink addr: {} (at up)", c.uplink_addr)?;
        if let Some(a) = &self.addresses {
            let list = |addrs: &[Ipv4Addr]| {
                addrs
                    .iter()
                    .map(Ipv4Addr::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            writeln!(
                f,
                "uplink now:  {} {}",
                a.uplink,
                if a.uplink_addresses.is_empty() {
                    "(no IPv4 address)".to_string()
                } else {
                    a.uplink_addresses
                        .iter()
                        .map(UplinkAddress::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            )?;
            writeln!(
                f,
                "new SNAT:    {}",
                a.masquerade_source.map_or_else(
                    || format!(
                        "{} (the uplink has no address; the one of up)",
                        c.uplink_addr
                    ),
                    |s| format!("{s} (the uplink's primary address now; a route's own src wins)")
                )
            )?;
            writeln!(f, "any publish: {}", list(&a.any_publish))?;
        }
        writeln!(
            f,
            "masquerade:  {}",
            c.masquerade.as_deref().map_or_else(
                || "off".to_string(),
                |s| format!("{s}, SNAT ports {}", c.snat_ports)
            )
        )?;
        if let Some(subnet) = &c.masquerade {
            writeln!(
                f,
                "routed in:   {}",
                if c.allow_direct_routing {
                    format!(
                        "{subnet} open to peers routing it via the host (allow_direct_routing = true)"
                    )
                } else {
                    format!(
                        "{subnet} closed but for flows and publishes (allow_direct_routing = false)"
                    )
                }
            )?;
        }
        writeln!(f, "features:    {}", self.features.summary())?;
        match self.tc_attach {
            Some("netlink") if self.features.tcx.on => writeln!(
                f,
                "tc attach:   netlink TC filters on a clsact qdisc (tc_attach = \"netlink\"; \
                 tcx is available)"
            )?,
            Some("netlink") => writeln!(
                f,
                "tc attach:   netlink TC filters on a clsact qdisc, because tcx is off ({})",
                self.features.tcx.why.as_deref().unwrap_or("")
            )?,
            Some(mode) => writeln!(f, "tc attach:   {mode} links")?,
            None => {}
        }
        let fast_path = if c.fast_path {
            "on (bpf_redirect_peer into containers, fib lookup + redirect to the uplink)".to_owned()
        } else if !self.features.redirect_peer.on {
            format!(
                "off (no bpf_redirect_peer: {}; through the bridge and the host's routing)",
                self.features.redirect_peer.why.as_deref().unwrap_or("")
            )
        } else {
            "off (fast_path = false: through the bridge and the host's routing)".to_owned()
        };
        writeln!(f, "fast path:   {fast_path}")?;
        writeln!(f, "published:   {}", c.published_ports)?;
        let h = &self.host_local;
        if h.cgroup_gone {
            let fix = if self.cni_network.is_some() {
                format!(
                    "take the instance down (`netfast down --instance {}`) once no container \
                     uses it; the next ADD attaches them to the network config's \
                     hostLocal.cgroup",
                    self.instance
                )
            } else {
                "point [host_local] cgroup at an existing cgroup2 directory, or \"auto\", and \
                 run `netfast up` again, or remove [host_local] from the config"
                    .to_owned()
            };
            writeln!(
                f,
                "host-local:  on, but its cgroup is gone ({}), so no process can be in it \
                 and the programs never run; {fix}",
                match h.cgroup_id {
                    Some(id) if id != 0 => format!("cgroup id {id}: no directory has it"),
                    _ => "removed: the kernel detached the links from it".to_owned(),
                }
            )?;
        } else if h.enabled {
            let mut host: Vec<String> = vec!["127.0.0.0/8".to_owned()];
            host.extend(h.host_addrs.iter().map(Ipv4Addr::to_string));
            writeln!(
                f,
                "host-local:  on for the processes in cgroup {}; \"any\" publishes answer there on {}",
                h.cgroup.as_deref().unwrap_or("?"),
                host.join(", ")
            )?;
        } else if !self.features.sock_addr.on {
            writeln!(
                f,
                "host-local:  unavailable on this kernel ({})",
                self.features.sock_addr.why.as_deref().unwrap_or("")
            )?;
        } else {
            let hint = if self.cni_network.is_some() {
                CNI_HOST_LOCAL_HINT
            } else {
                HOST_LOCAL_HINT
            };
            writeln!(f, "host-local:  off ({hint})")?;
        }
        writeln!(
            f,
            "conntrack:   {}",
            netfast::count(c.conntrack_entries as u64, "entry", "entries")
        )?;
        writeln!(f)?;
        let mut t = Table::new(&[
            ("PROGRAM", Align::Left),
            ("INTERFACE", Align::Left),
            ("ATTACH", Align::Left),
            ("MODE", Align::Left),
            ("PROG ID", Align::Right),
            ("LINK ID", Align::Right),
        ]);
        for p in &self.programs {
            t.row(vec![
                p.program.clone().unwrap_or_else(|| "?".into()),
                match (&p.cgroup, p.cgroup_id, &p.interface) {
                    (Some(cgroup), _, _) => cgroup.clone(),
                    (None, Some(id), _) => removed_cgroup(Some(id)),
                    (None, None, Some(interface)) => interface.clone(),
                    (None, None, None) => format!("ifindex {}", p.ifindex),
                },
                if p.fallback {
                    format!("{} {} ({FALLBACK_NOTE})", p.attach, p.hook)
                } else {
                    format!("{} {}", p.attach, p.hook)
                },
                match (p.tc_priority, p.tc_handle, p.tc_live) {
                    (Some(pref), Some(handle), live) => format!(
                        "pref {pref} handle {handle:#x}{}",
                        if live == Some(false) { " (gone)" } else { "" }
                    ),
                    _ => p.mode.unwrap_or("-").to_string(),
                },
                p.prog_id.to_string(),
                if p.attach == "tc" {
                    "-".to_owned()
                } else {
                    p.link_id.to_string()
                },
            ]);
        }
        if t.is_empty() {
            writeln!(f, "no pinned links: nothing is attached")
        } else {
            write!(f, "{t}")
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use netfast::bpf::features::Feature;
    use netfast_common::{
        CtEntry, CtTuple,
        ct::{DIR_ORIGINAL, DIR_REPLY, KIND_DNAT, KIND_ROUTED},
        proto,
    };

    use super::*;
    use netfast::{conntrack::pair_flows, conntrack::raw_addr, publish::PublishSpec};

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().expect("test address")
    }

    fn key(src: &str, sp: u16, dst: &str, dp: u16, p: u8) -> CtTuple {
        CtTuple {
            src_addr: raw_addr(ip(src)),
            dst_addr: raw_addr(ip(dst)),
            src_port: sp.to_be(),
            dst_port: dp.to_be(),
            proto: p,
            _pad: [0; 3],
        }
    }

    fn st(nat: &str, port: u16, kind: u8, dir: u8, flags: u8, pkts: u64) -> CtEntry {
        CtEntry {
            nat_addr: raw_addr(ip(nat)),
            nat_port: port.to_be(),
            kind,
            direction: dir,
            tcp_flags: flags,
            created_ns: 1_000_000_000,
            last_seen_ns: 3_000_000_000,
            packets: pkts,
            bytes: pkts * 60,
            ..CtEntry::default()
        }
    }

    fn sample_flows() -> Vec<Flow> {
        pair_flows([
            (
                key("10.0.1.26", 40000, "10.0.1.48", 8088, proto::TCP),
                st("172.16.0.102", 80, KIND_DNAT, DIR_ORIGINAL, 0x12, 5),
            ),
            (
                key("172.16.0.102", 80, "10.0.1.26", 40000, proto::TCP),
                st("10.0.1.48", 8088, KIND_DNAT, DIR_REPLY, 0x12, 4),
            ),
            (
                key("172.16.0.102", 5555, "10.0.1.26", 9001, proto::UDP),
                st("10.0.1.48", 61000, KIND_SNAT, DIR_ORIGINAL, 0, 1),
            ),
            (
                key("10.0.1.26", 9001, "10.0.1.48", 61000, proto::UDP),
                st("172.16.0.102", 5555, KIND_SNAT, DIR_REPLY, 0, 1),
            ),
            // Routed in with allow_direct_routing: tracked, not translated.
            (
                key("10.0.1.26", 41000, "172.16.0.103", 7000, proto::UDP),
                st("172.16.0.103", 7000, KIND_ROUTED, DIR_ORIGINAL, 0, 2),
            ),
            (
                key("172.16.0.103", 7000, "10.0.1.26", 41000, proto::UDP),
                st("172.16.0.103", 7000, KIND_ROUTED, DIR_REPLY, 0, 1),
            ),
        ])
    }

    fn seed_config() -> DatapathConfig {
        DatapathConfig {
            uplink_addr: raw_addr(ip("10.0.1.48")),
            subnet_addr: raw_addr(ip("172.16.0.0")),
            subnet_mask: raw_addr(ip("255.255.255.0")),
            snat_port_min: 61000,
            snat_port_max: 65535,
            enabled: 1,
            masquerade: 1,
            ephemeral_min: 32_768,
            ephemeral_max: 60_999,
            allow_direct_routing: 0,
            fast_path: 1,
            host_netns_cookie: 0,
            uplink_ifindex: 2,
            _pad: [0; 4],
        }
    }

    #[test]
    fn addresses_in_force() {
        let host = |index, cidr: &str, secondary| HostAddress {
            index,
            local: cidr.parse().expect("cidr"),
            secondary,
        };
        let all = [
            host(1, "127.0.0.1/8", false),
            host(2, "10.0.1.51/24", false),
            host(2, "10.0.1.52/24", true),
            host(3, "172.16.0.100/24", false),
        ];
        let view = addresses_view("eth0".into(), 2, ip("10.0.1.48"), &all);
        let shown: Vec<String> = view
            .uplink_addresses
            .iter()
            .map(|a| a.to_string())
            .collect();
        assert_eq!(shown, ["10.0.1.51/24", "10.0.1.52/24 (secondary)"]);
        assert!(view.uplink_addresses[1].secondary);
        assert_eq!(view.masquerade_source, Some(ip("10.0.1.51")));
        assert_eq!(
            view.any_publish,
            [
                ip("10.0.1.51"),
                ip("10.0.1.52"),
                ip("172.16.0.100"),
                ip("10.0.1.48")
            ]
        );
        let bare = addresses_view("eth0".into(), 9, ip("10.0.1.48"), &all);
        assert_eq!(bare.masquerade_source, None);
        assert!(bare.uplink_addresses.is_empty());
    }

    #[test]
    fn publish_table_and_json() {
        let entries: Vec<_> = [
            "8088:172.16.0.102:80/tcp",
            "10.0.1.48:5353:172.16.0.103:53/udp",
        ]
        .iter()
        .flat_map(|s| {
            s.parse::<PublishSpec>()
                .expect("spec")
                .entries()
                .collect::<Vec<_>>()
        })
        .collect();
        let rows = publish_rows(&entries);
        assert_eq!(
            publish_table(&rows).to_string(),
            "\
PROTO  HOST            BACKEND
tcp    *:8088          172.16.0.102:80
udp    10.0.1.48:5353  172.16.0.103:53
"
        );
        assert_eq!(
            serde_json::to_string(&rows).expect("json"),
            r#"[{"proto":"tcp","host_addr":null,"host_port":8088,"backend_addr":"172.16.0.102","backend_port":80},{"proto":"udp","host_addr":"10.0.1.48","host_port":5353,"backend_addr":"172.16.0.103","backend_port":53}]"#
        );
    }

    #[test]
    fn flow_table_and_json() {
        let rows: Vec<FlowRow> = sample_flows()
            .iter()
            .map(|f| flow_row(f, 5_000_000_000, &netfast::gc::Timeouts::default()))
            .collect();
        assert_eq!(
            flow_table(&rows).to_string(),
            "\
PROTO  KIND    ORIGINAL                              TRANSLATED                            STATE         AGE  IDLE  EXPIRES  PACKETS    BYTES
tcp    DNAT    10.0.1.26:40000 -> 10.0.1.48:8088     10.0.1.26:40000 -> 172.16.0.102:80    ESTABLISHED  4.0s  2.0s  119h59m      5/4  300/240
udp    SNAT    172.16.0.102:5555 -> 10.0.1.26:9001   10.0.1.48:61000 -> 10.0.1.26:9001     -            4.0s  2.0s    58.0s      1/1    60/60
udp    ROUTED  10.0.1.26:41000 -> 172.16.0.103:7000  10.0.1.26:41000 -> 172.16.0.103:7000  -            4.0s  2.0s    58.0s      2/1   120/60
"
        );
        assert_eq!(flow_count(&rows), "3 flows (3 assured, 0 unassured)");
        assert_eq!(flow_count(&rows[..1]), "1 flow (1 assured, 0 unassured)");
        // Idle past the UDP timeout (60 s): due at the next GC pass.
        let late = flow_row(
            &sample_flows()[1],
            70_000_000_000,
            &netfast::gc::Timeouts::default(),
        );
        assert_eq!(late.expires_ms, 0);
        assert!(flow_table(&[late]).to_string().contains(" due "));
        assert_eq!(
            serde_json::to_string(&rows[0]).expect("json"),
            r#"{"proto":"tcp","kind":"DNAT","original":{"src":"10.0.1.26","sport":40000,"dst":"10.0.1.48","dport":8088},"translated":{"src":"10.0.1.26","sport":40000,"dst":"172.16.0.102","dport":80},"tcp_state":"ESTABLISHED","assured":true,"age_ms":4000,"idle_ms":2000,"expires_ms":431998000,"packets_original":5,"packets_reply":4,"bytes_original":300,"bytes_reply":240,"complete":true}"#
        );
    }

    #[test]
    fn nat_view_counts_ports() {
        let view = nat_view(&sample_flows(), &seed_config());
        assert_eq!(
            view.to_string(),
            "\
PROTO  CONTAINER          UPLINK           REMOTE
udp    172.16.0.102:5555  10.0.1.48:61000  10.0.1.26:9001

PROTO  SNAT PORTS   USED  TOTAL   USE
tcp    61000-65535     0   4536  0.0%
udp    61000-65535     1   4536  0.0%
icmp   61000-65535     0   4536  0.0%
"
        );
        let json = serde_json::to_value(&view).expect("json");
        assert_eq!(json["bindings"][0]["uplink"], "10.0.1.48:61000");
        assert_eq!(json["port_use"][1]["used"], 1);
        assert_eq!(json["port_use"][1]["total"], 4536);
    }

    #[test]
    fn stats_table_with_rates_and_json() {
        let counters: Vec<(Counter, u64)> =
            Counter::ALL.iter().map(|&c| (c, c as u64 * 10)).collect();
        let previous: Vec<(Counter, u64)> = Counter::ALL.iter().map(|&c| (c, 0)).collect();
        let maps = [MapFill {
            name: "CONNTRACK",
            kind: "lru_hash",
            entries: 4,
            capacity: 65536,
        }];
        let view = stats_view("demo", &counters, Some((&previous, 2.0)), &maps);
        let text = view.to_string();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "COUNTER                          DECISION  VALUE  PER SEC"
        );
        assert_eq!(
            lines[1],
            "dnat_new                         pass          0      0.0"
        );
        assert_eq!(
            lines[2],
            "dnat_established                 pass         10      5.0"
        );
        assert_eq!(
            lines[9],
            "fragment_translated              pass         80     40.0"
        );
        assert_eq!(
            lines[10],
            "hairpin_new                      redirect     90     45.0"
        );
        assert_eq!(
            lines[13..16],
            [
                "routed_new                       pass        120     60.0",
                "routed_established               pass        130     65.0",
                "routed_reply                     pass        140     70.0",
            ]
        );
        assert_eq!(
            lines[23],
            "pass_from_host                   pass        220    110.0"
        );
        assert_eq!(
            lines[30],
            "drop_truncated                   drop        290    145.0"
        );
        assert_eq!(
            lines[37],
            "drop_tcp_rst_out_of_window       drop        360    180.0"
        );
        assert_eq!(
            &lines[38..],
            [
                "drop_loopback_publish            drop        370    185.0",
                "drop_routed_to_container         drop        380    190.0",
                "snat_port_retries                info        390    195.0",
                "snat_port_host_socket            info        400    200.0",
                "conntrack_half_restored          info        410    205.0",
                "conntrack_restore_failed         info        420    210.0",
                "fragment_record_failed           info        430    215.0",
                "xdp_mark_failed                  info        440    220.0",
                "conntrack_reopened               info        450    225.0",
                "conntrack_assured                info        460    230.0",
                "conntrack_assure_failed          info        470    235.0",
                "host_local_rewritten             socket      480    240.0",
                "host_local_reply_rewritten       socket      490    245.0",
                "host_local_not_published         socket      500    250.0",
                "host_local_reverse_miss          socket      510    255.0",
                "host_local_other_netns           socket      520    260.0",
                "host_local_other_protocol        socket      530    265.0",
                "host_local_not_configured        socket      540    270.0",
                "host_local_reverse_failed        socket      550    275.0",
                "fast_path_to_container           info        560    280.0",
                "fast_path_to_uplink              info        570    285.0",
                "fast_path_fallback_no_endpoint   info        580    290.0",
                "fast_path_fallback_ttl           info        590    295.0",
                "fast_path_fallback_mtu           info        600    300.0",
                "fast_path_fallback_not_host      info        610    305.0",
                "fast_path_fallback_no_neigh      info        620    310.0",
                "pass_container_to_uplink         pass        630    315.0",
                "pass_hairpin_unavailable         pass        640    320.0",
                "pass_fast_path_translated        pass        650    325.0",
                "",
                "MAP        TYPE      ENTRIES  CAPACITY  FILL",
                "CONNTRACK  lru_hash        4     65536  0.0%",
                "",
                "snat port retries: 390",
            ]
        );
        let json = serde_json::to_value(&view).expect("json");
        assert_eq!(json["counters"][1]["name"], "dnat_established");
        assert_eq!(json["counters"][1]["rate"], 5.0);
        assert_eq!(json["snat_port_retries"], 390);
        assert_eq!(json["maps"][0]["capacity"], 65536);
        // Without --watch there is no rate at all.
        let plain = stats_view("demo", &counters, None, &maps);
        assert!(!plain.to_string().contains("PER SEC"));
        assert!(
            serde_json::to_value(&plain).expect("json")["counters"][0]
                .get("rate")
                .is_none()
        );
    }

    #[test]
    fn status_text_and_json() {
        let links = [
            LinkStatus {
                pin: "link_uplink_ingress".into(),
                fallback: false,
                link_id: 7,
                prog_id: 42,
                prog_name: Some("uplink_ingress_".into()),
                kind: "xdp".into(),
                ifindex: 2,
                interface: Some("eth0".into()),
                hook: "ingress",
                cgroup: None,
                cgroup_id: None,
                mode: Some("native"),
                netlink: None,
            },
            LinkStatus {
                pin: "link_uplink_ingress_fallback".into(),
                fallback: true,
                link_id: 9,
                prog_id: 44,
                prog_name: Some("uplink_ingress_tc".into()),
                kind: "tcx".into(),
                ifindex: 2,
                interface: Some("eth0".into()),
                hook: "ingress",
                cgroup: None,
                cgroup_id: None,
                mode: None,
                netlink: None,
            },
            LinkStatus {
                pin: "link_uplink_egress".into(),
                fallback: false,
                link_id: 8,
                prog_id: 43,
                prog_name: Some("uplink_egress_t".into()),
                kind: "tcx".into(),
                ifindex: 2,
                interface: Some("eth0".into()),
                hook: "egress",
                cgroup: None,
                cgroup_id: None,
                mode: None,
                netlink: None,
            },
            LinkStatus {
                pin: "link_host_connect4".into(),
                fallback: false,
                link_id: 10,
                prog_id: 45,
                prog_name: Some("host_connect4".into()),
                kind: "cgroup".into(),
                ifindex: 0,
                interface: None,
                hook: "connect4",
                cgroup: Some("/sys/fs/cgroup/unified/lab".into()),
                cgroup_id: Some(4242),
                mode: None,
                netlink: None,
            },
        ];
        let view = StatusView {
            instance: "demo".into(),
            cni_network: None,
            netns: Some("lab-host".into()),
            netns_note: Some("entered it: this command ran in the root network namespace".into()),
            pin_dir: "/sys/fs/bpf/netfast/demo".into(),
            programs: program_views(&links),
            config: config_view(&seed_config(), 1, 4),
            addresses: Some(addresses_view(
                "eth0".into(),
                2,
                ip("10.0.1.48"),
                &[HostAddress {
                    index: 2,
                    local: "10.0.1.49/24".parse().expect("cidr"),
                    secondary: false,
                }],
            )),
            host_local: host_local_view(&links, &[(ip("10.0.1.49"), 2), (ip("172.16.0.100"), 0)]),
            features: features_all_on(),
            tc_attach: Some("tcx"),
        };
        assert_eq!(
            view.to_string(),
            "\
instance:    demo
netns:       lab-host (entered it: this command ran in the root network namespace)
pins:        /sys/fs/bpf/netfast/demo
datapath:    enabled
uplink addr: 10.0.1.48 (at up)
uplink now:  eth0 10.0.1.49/24
new SNAT:    10.0.1.49 (the uplink's primary address now; a route's own src wins)
any publish: 10.0.1.49, 10.0.1.48
masquerade:  172.16.0.0/24, SNAT ports 61000-65535
routed in:   172.16.0.0/24 closed but for flows and publishes (allow_direct_routing = false)
features:    kernel 6.18.0: tcx on; bpf_redirect_peer on; bpf_redirect_neigh on; cgroup sock_addr on; native XDP unknown until XDP attaches (no netdev xdp-features before Linux 6.3)
tc attach:   tcx links
fast path:   on (bpf_redirect_peer into containers, fib lookup + redirect to the uplink)
published:   1
host-local:  on for the processes in cgroup /sys/fs/cgroup/unified/lab; \"any\" publishes answer there on 127.0.0.0/8, 10.0.1.49, 172.16.0.100
conntrack:   4 entries

PROGRAM            INTERFACE                   ATTACH                          MODE    PROG ID  LINK ID
uplink_ingress_    eth0                        xdp ingress                     native       42        7
uplink_ingress_tc  eth0                        tcx ingress (fallback for XDP)  -            44        9
uplink_egress_t    eth0                        tcx egress                      -            43        8
host_connect4      /sys/fs/cgroup/unified/lab  cgroup connect4                 -            45       10
"
        );
        let json = serde_json::to_value(&view).expect("json");
        assert_eq!(json["programs"][0]["mode"], "native");
        assert_eq!(json["programs"][0]["fallback"], false);
        assert_eq!(json["programs"][1]["fallback"], true);
        assert_eq!(json["programs"][1]["pin"], "link_uplink_ingress_fallback");
        assert_eq!(json["programs"][2]["mode"], serde_json::Value::Null);
        assert_eq!(json["config"]["masquerade"], "172.16.0.0/24");
        assert_eq!(json["config"]["allow_direct_routing"], false);
        assert_eq!(json["netns"], "lab-host");

        let open = StatusView {
            config: config_view(
                &DatapathConfig {
                    allow_direct_routing: 1,
                    ..seed_config()
                },
                1,
                4,
            ),
            ..view.clone()
        };
        assert!(
            open.to_string().contains(
                "routed in:   172.16.0.0/24 open to peers routing it via the host \
                 (allow_direct_routing = true)\n"
            ),
            "{open}"
        );
        assert_eq!(
            serde_json::to_value(&open).expect("json")["config"]["allow_direct_routing"],
            true
        );
        assert_eq!(json["programs"][3]["cgroup"], "/sys/fs/cgroup/unified/lab");
        assert_eq!(json["host_local"]["enabled"], true);
        // Without the cgroup links: off, with the way to turn it on.
        let off = StatusView {
            programs: program_views(&links[..3]),
            host_local: host_local_view(&links[..3], &[]),
            ..view
        };
        assert!(
            off.to_string()
                .contains(&format!("host-local:  off ({HOST_LOCAL_HINT})")),
            "{off}"
        );
        // A CNI network's instance is turned on in the network config, not a file.
        let cni = StatusView {
            cni_network: Some("mynet".into()),
            ..off.clone()
        };
        let text = cni.to_string();
        assert!(
            text.contains("cni network: mynet (brought up by netfast-cni)")
                && text.contains(&format!("host-local:  off ({CNI_HOST_LOCAL_HINT})")),
            "{text}"
        );
        assert_eq!(
            serde_json::to_value(&cni).expect("json")["cni_network"],
            "mynet"
        );

        // The cgroup removed under the links: status says so, and how to fix it;
        // never "cgroup cgroup id 0".
        for (id, said, column) in [
            (
                0,
                "removed: the kernel detached the links from it",
                "(cgroup removed)",
            ),
            (
                4242,
                "cgroup id 4242: no directory has it",
                "cgroup id 4242 (removed)",
            ),
        ] {
            let mut gone_links = links.clone();
            gone_links[3].cgroup = None;
            gone_links[3].cgroup_id = Some(id);
            let gone = StatusView {
                programs: program_views(&gone_links),
                host_local: host_local_view(&gone_links, &[]),
                ..off.clone()
            };
            let text = gone.to_string();
            assert!(
                text.contains(&format!(
                    "host-local:  on, but its cgroup is gone ({said}), so no process can be in \
                     it and the programs never run; point [host_local] cgroup at an existing \
                     cgroup2 directory, or \"auto\", and run `netfast up` again, or remove \
                     [host_local] from the config\n"
                )),
                "{text}"
            );
            assert!(!text.contains("cgroup cgroup"), "{text}");
            let cni = StatusView {
                cni_network: Some("mynet".into()),
                ..gone.clone()
            }
            .to_string();
            assert!(
                cni.contains(
                    "the programs never run; take the instance down (`netfast down --instance \
                     demo`) once no container uses it; the next ADD attaches them to the network \
                     config's hostLocal.cgroup\n"
                ),
                "{cni}"
            );
            let row = text
                .lines()
                .find(|l| l.starts_with("host_connect4"))
                .expect("the connect4 row");
            assert!(row.contains(column), "{row}");
            let json = serde_json::to_value(&gone).expect("json");
            assert_eq!(json["host_local"]["cgroup_gone"], true);
            assert_eq!(json["host_local"]["cgroup_id"], id);
            assert_eq!(json["programs"][3]["cgroup_gone"], true);
            assert!(json["programs"][3].get("cgroup").is_none());
        }
        assert_eq!(json["programs"][3]["cgroup_gone"], false);
        assert_eq!(json["programs"][3]["cgroup_id"], 4242);
        assert!(json["programs"][0].get("cgroup_gone").is_none());
    }

    fn features_all_on() -> Features {
        let on = |name| Feature {
            name,
            on: true,
            why: None,
        };
        Features {
            kernel: "6.18.0".into(),
            tcx: on("tcx"),
            redirect_peer: on("bpf_redirect_peer"),
            redirect_neigh: on("bpf_redirect_neigh"),
            sock_addr: on("cgroup sock_addr"),
            xdp_native: None,
        }
    }

    /// An instance attached with netlink TC filters on a kernel without tcx and
    /// without `bpf_redirect_peer`: the filters show with pref and handle (no link
    /// id), and status says why tc is netlink and why the fast path is off.
    #[test]
    fn status_shows_netlink_filters_and_what_is_off() {
        let filter = |pin: &str, prog: &str, hook, prog_id, handle, live| LinkStatus {
            pin: pin.into(),
            fallback: false,
            link_id: 0,
            prog_id,
            prog_name: Some(prog.into()),
            kind: "tc".into(),
            ifindex: 2,
            interface: Some("eth0".into()),
            hook,
            cgroup: None,
            cgroup_id: None,
            mode: None,
            netlink: Some(netfast::bpf::pinned::NetlinkTc {
                priority: 49152,
                handle,
                live: Some(live),
            }),
        };
        let links = [
            filter(
                "link_uplink_ingress",
                "uplink_ingress_tc",
                "ingress",
                42,
                1,
                true,
            ),
            filter(
                "link_uplink_egress",
                "uplink_egress_tc",
                "egress",
                0,
                2,
                false,
            ),
        ];
        let programs = program_views(&links);
        assert_eq!(tc_attach_of(&programs), Some("netlink"));
        let mut features = features_all_on();
        features.kernel = "6.1.0-28-amd64".into();
        features.tcx = Feature {
            name: "tcx",
            on: false,
            why: Some("no tcx".into()),
        };
        features.redirect_peer = Feature {
            name: "bpf_redirect_peer",
            on: false,
            why: Some("unknown func".into()),
        };
        features.sock_addr = Feature {
            name: "cgroup sock_addr",
            on: false,
            why: Some("no hook".into()),
        };
        let view = StatusView {
            instance: "demo".into(),
            cni_network: None,
            netns: None,
            netns_note: None,
            pin_dir: "/sys/fs/bpf/netfast/demo".into(),
            tc_attach: tc_attach_of(&programs),
            programs,
            config: config_view(
                &DatapathConfig {
                    fast_path: 0,
                    ..seed_config()
                },
                1,
                0,
            ),
            addresses: None,
            host_local: host_local_view(&links, &[]),
            features,
        };
        let text = view.to_string();
        for line in [
            "features:    kernel 6.1.0-28-amd64: tcx off; bpf_redirect_peer off; \
             bpf_redirect_neigh on; cgroup sock_addr off; native XDP unknown until XDP attaches \
             (no netdev xdp-features before Linux 6.3)\n",
            "tc attach:   netlink TC filters on a clsact qdisc, because tcx is off (no tcx)\n",
            "fast path:   off (no bpf_redirect_peer: unknown func; through the bridge and the \
             host's routing)\n",
            "host-local:  unavailable on this kernel (no hook)\n",
        ] {
            assert!(text.contains(line), "{text}\nlacks {line:?}");
        }
        let rows: Vec<&str> = text
            .lines()
            .skip_while(|l| !l.starts_with("PROGRAM"))
            .collect();
        assert_eq!(
            rows,
            vec![
                "PROGRAM            INTERFACE  ATTACH      MODE                          PROG ID  LINK ID",
                "uplink_ingress_tc  eth0       tc ingress  pref 49152 handle 0x1              42        -",
                "uplink_egress_tc   eth0       tc egress   pref 49152 handle 0x2 (gone)        0        -",
            ]
        );
        let json = serde_json::to_value(&view).expect("json");
        assert_eq!(json["tc_attach"], "netlink");
        assert_eq!(json["programs"][0]["attach"], "tc");
        assert_eq!(json["programs"][0]["tc_priority"], 49152);
        assert_eq!(json["programs"][0]["tc_handle"], 1);
        assert_eq!(json["programs"][0]["tc_live"], true);
        assert_eq!(json["programs"][1]["tc_live"], false);
        assert_eq!(json["features"]["tcx"]["on"], false);
        assert_eq!(json["features"]["tcx"]["why"], "no tcx");
        assert_eq!(json["features"]["redirect_peer"]["on"], false);
        assert_eq!(json["config"]["fast_path"], false);
    }

    /// Every counter with the values named in `values` (by name: the counters' order
    /// is the datapath's, which grows), 0 for the rest.
    pub(crate) fn sample(values: &[(&str, u64)]) -> Vec<(Counter, u64)> {
        Counter::ALL
            .iter()
            .map(|c| {
                let v = values
                    .iter()
                    .find(|(n, _)| *n == c.name())
                    .map_or(0, |(_, v)| *v);
                (*c, v)
            })
            .collect()
    }

    /// The live views list what moved, wrapped: never one line of every counter.
    #[test]
    fn live_counters_list_what_moved_wrapped() {
        let seed = [
            ("dnat_new", 1),
            ("dnat_established", 5),
            ("dnat_reply", 4),
            ("snat_new", 2),
            ("snat_established", 7),
            ("snat_reply", 7),
            ("pass_not_ipv4", 13),
        ];
        let first = sample(&seed);
        let items = live_counter_items(&first, None, |d| format!("+{d}"));
        assert_eq!(
            items,
            [
                "dnat_new=1",
                "dnat_established=5",
                "dnat_reply=4",
                "snat_new=2",
                "snat_established=7",
                "snat_reply=7",
                "pass_not_ipv4=13"
            ]
        );
        let lines = wrap_items("[    2s] ", &items, 60);
        assert_eq!(
            lines,
            [
                "[    2s] dnat_new=1  dnat_established=5  dnat_reply=4",
                "         snat_new=2  snat_established=7  snat_reply=7",
                "         pass_not_ipv4=13",
            ]
        );
        assert!(lines.iter().all(|l| l.chars().count() <= 60), "{lines:#?}");
        // The next sample: only what moved, with the change.
        let mut moved = seed;
        moved[1].1 = 9;
        moved[2].1 = 8;
        let next = sample(&moved);
        let items = live_counter_items(&next, Some(&first), |d| format!("+{d}"));
        assert_eq!(items, ["dnat_established=9 (+4)", "dnat_reply=8 (+4)"]);
        assert_eq!(
            wrap_items("[    4s] ", &items, 100),
            ["[    4s] dnat_established=9 (+4)  dnat_reply=8 (+4)"]
        );
        // Nothing moved: nothing to print.
        assert!(live_counter_items(&next, Some(&next), |d| format!("+{d}")).is_empty());
        assert!(wrap_items("[    6s] ", &[], 100).is_empty());
        // Every counter at once still wraps within the width.
        let all: Vec<(Counter, u64)> = Counter::ALL.iter().map(|c| (*c, 123_456)).collect();
        let lines = wrap_items(
            "[  100s] ",
            &live_counter_items(&all, None, |d| d.to_string()),
            100,
        );
        assert!(lines.len() > 5, "{lines:#?}");
        assert!(lines.iter().all(|l| l.chars().count() <= 100), "{lines:#?}");
    }

    #[test]
    fn durations() {
        assert_eq!(duration_ms(450), "450ms");
        assert_eq!(duration_ms(12_345), "12.3s");
        assert_eq!(duration_ms(184_000), "3m04s");
        assert_eq!(duration_ms(3_720_000), "1h02m");
    }
}
