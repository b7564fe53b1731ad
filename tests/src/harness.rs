//! Runs the datapath's programs on crafted packets through BPF_PROG_TEST_RUN.
//!
//! Every [`Datapath`] loads its own copy of the object without pinning, so each test
//! has its own maps and tests run in parallel without seeing each other's flows.

use std::{
    net::{Ipv4Addr, SocketAddrV4},
    os::fd::AsFd as _,
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, Map, MapData, ProgramArray},
    programs::{ProgramError, SchedClassifier, TestRun, TestRunOptions, Xdp},
};
use netfast::bpf::prog_load::load_retrying;
use netfast_common::{
    Backend, Counter, CtEntry, CtTuple, DatapathConfig, Endpoint, PublishKey,
    names::{
        CALL_CONTAINER_HAIRPIN, MAP_CONFIG, MAP_CONNTRACK, MAP_CONNTRACK_UNASSURED,
        MAP_CONTAINER_CALLS, MAP_COUNTERS, MAP_ENDPOINTS, MAP_PUBLISHED_PORTS,
        PROG_CONTAINER_HAIRPIN_TC, PROG_CONTAINER_INGRESS_TC, PROG_UPLINK_EGRESS_TC,
        PROG_UPLINK_INGRESS_TC, PROG_UPLINK_INGRESS_XDP, XDP_DECIDED_MARK,
        XDP_DECIDED_TO_CONTAINER_MARK, unassured_capacity,
    },
    proto,
};

/// The seed's addresses.
pub const UPLINK_ADDR: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 48);
pub const LAN_PEER: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 26);
pub const BACKEND: Ipv4Addr = Ipv4Addr::new(172, 16, 0, 102);
pub const SUBNET_ADDR: Ipv4Addr = Ipv4Addr::new(172, 16, 0, 0);
pub const SUBNET_MASK: Ipv4Addr = Ipv4Addr::new(255, 255, 255, 0);
pub const SNAT_PORT_MIN: u16 = 61_000;
pub const SNAT_PORT_MAX: u16 = 65_535;
/// The published ports `Datapath::configured` writes: host port → backend port.
pub const TCP_PUBLISHED: u16 = 8088;
pub const TCP_BACKEND_PORT: u16 = 80;
pub const UDP_PUBLISHED: u16 = 5353;
pub const UDP_BACKEND_PORT: u16 = 53;

/// Network byte order, as the maps keep addresses.
pub fn addr_be(addr: Ipv4Addr) -> u32 {
    u32::from_ne_bytes(addr.octets())
}

/// Network byte order, as the maps keep ports.
pub fn port_be(port: u16) -> u16 {
    port.to_be()
}

/// The `CONNTRACK` key of a packet from `src` to `dst` (ports in host order).
pub fn flow_key(proto: u8, src: SocketAddrV4, dst: SocketAddrV4) -> CtTuple {
    CtTuple {
        src_addr: addr_be(*src.ip()),
        dst_addr: addr_be(*dst.ip()),
        src_port: port_be(src.port()),
        dst_port: port_be(dst.port()),
        proto,
        _pad: [0; 3],
    }
}

/// The seed's `CONFIG` entry.
pub fn seed_config() -> DatapathConfig {
    DatapathConfig {
        uplink_addr: addr_be(UPLINK_ADDR),
        subnet_addr: addr_be(SUBNET_ADDR),
        subnet_mask: addr_be(SUBNET_MASK),
        snat_port_min: SNAT_PORT_MIN,
        snat_port_max: SNAT_PORT_MAX,
        enabled: 1,
        masquerade: 1,
        ephemeral_min: 32_768,
        ephemeral_max: 60_999,
        allow_direct_routing: 0,
        fast_path: 0,
        host_netns_cookie: 0,
        uplink_ifindex: 0,
        _pad: [0; 4],
    }
}

/// One of the datapath's programs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prog {
    IngressTc,
    IngressXdp,
    EgressTc,
    /// `container_ingress_tc`, on a container's host-side veth (the fast path toward
    /// the uplink, then a tail call to hairpin).
    ContainerTc,
    /// `container_hairpin_tc`, which `container_ingress_tc` tail-calls.
    HairpinTc,
}

impl Prog {
    /// Both ways the uplink ingress can be attached: every ingress case runs on each.
    pub const INGRESS: [Prog; 2] = [Prog::IngressTc, Prog::IngressXdp];

    pub const fn name(self) -> &'static str {
        match self {
            Prog::IngressTc => PROG_UPLINK_INGRESS_TC,
            Prog::IngressXdp => PROG_UPLINK_INGRESS_XDP,
            Prog::EgressTc => PROG_UPLINK_EGRESS_TC,
            Prog::ContainerTc => PROG_CONTAINER_INGRESS_TC,
            Prog::HairpinTc => PROG_CONTAINER_HAIRPIN_TC,
        }
    }

    /// Decodes the program's return value: None for anything but pass or drop, and
    /// for the container program also redirect.
    pub fn decode(self, return_value: u32) -> Option<Verdict> {
        // TC: TC_ACT_OK = 0, TC_ACT_SHOT = 2, TC_ACT_REDIRECT = 7 (what `bpf_redirect`
        // returns; BPF_PROG_TEST_RUN hands it back without sending the frame).
        // XDP: XDP_DROP = 1, XDP_PASS = 2.
        let tc = |prog| {
            matches!(
                prog,
                Prog::IngressTc | Prog::EgressTc | Prog::ContainerTc | Prog::HairpinTc
            )
        };
        match (self, return_value) {
            (Prog::IngressXdp, 2) => Some(Verdict::Pass),
            (Prog::IngressXdp, 1) => Some(Verdict::Drop),
            (prog, 0) if tc(prog) => Some(Verdict::Pass),
            (prog, 2) if tc(prog) => Some(Verdict::Drop),
            (Prog::ContainerTc | Prog::HairpinTc | Prog::IngressTc, 7) => Some(Verdict::Redirect),
            _ => None,
        }
    }

    fn verdict(self, return_value: u32) -> Verdict {
        self.decode(return_value)
            .unwrap_or_else(|| panic!("{}: unexpected return value {return_value}", self.name()))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Drop,
    /// TC_ACT_REDIRECT: the frame goes out of the interface the program chose. A test
    /// run does not say which; the frame's MACs come from the same `ENDPOINTS` entry
    /// as that ifindex, so tests tell the endpoint by them.
    Redirect,
}

/// What one program run did.
#[derive(Debug)]
pub struct Run {
    pub prog: Prog,
    pub verdict: Verdict,
    /// The packet as the program left it.
    pub out: Vec<u8>,
    /// Every counter that moved during the run, with how much.
    pub counted: Vec<(Counter, u64)>,
    /// XDP only: the metadata the program put in front of the frame (empty for tc).
    pub xdp_meta: Vec<u8>,
    /// tc runs with `Ifindexes` only: `skb->mark` as the program left it.
    pub skb_mark: Option<u32>,
}

/// What one BPF_PROG_TEST_RUN gave back.
#[derive(Debug)]
pub struct TestOutput {
    pub return_value: u32,
    /// The packet as the program left it, without XDP metadata.
    pub out: Vec<u8>,
    /// XDP metadata in front of the packet. The kernel returns it as the first bytes
    /// of the output; netfast's programs never change a frame's length, so what the
    /// output has beyond the input's length is metadata.
    pub xdp_meta: Vec<u8>,
    /// tc runs with `Ifindexes` only: `skb->mark` as the program left it.
    pub skb_mark: Option<u32>,
}

/// Whether `meta` is one of the XDP program's "decided" marks (`XDP_DECIDED_MARK`, or
/// `XDP_DECIDED_TO_CONTAINER_MARK` for a frame translated toward a container).
pub fn is_decided_mark(meta: &[u8]) -> bool {
    meta == XDP_DECIDED_MARK.to_ne_bytes() || meta == XDP_DECIDED_TO_CONTAINER_MARK.to_ne_bytes()
}

impl Run {
    /// For XDP, what is wrong with the metadata: a frame XDP passes carries the decided
    /// mark, unless XDP left it to tc (`pass_xdp_csum_partial`); a dropped frame none.
    fn xdp_mark_problem(&self) -> Option<String> {
        if self.prog != Prog::IngressXdp {
            return None;
        }
        let left_to_tc = self
            .counted
            .iter()
            .any(|(counter, _)| *counter == Counter::PassXdpCsumPartial);
        let want_mark = self.verdict == Verdict::Pass && !left_to_tc;
        let has_mark = is_decided_mark(&self.xdp_meta);
        (want_mark != has_mark || (!want_mark && !self.xdp_meta.is_empty())).then(|| {
            format!(
                "XDP metadata: expected {}, got {:02x?}",
                if want_mark {
                    "the decided mark"
                } else {
                    "none"
                },
                self.xdp_meta
            )
        })
    }

    /// Asserts the verdict, the exact output bytes and that `counter`, and only
    /// `counter`, moved by one; for XDP also the decided mark. A failure reports every
    /// mismatch at once.
    #[track_caller]
    pub fn assert(&self, verdict: Verdict, counter: Counter, expected: &[u8]) {
        self.assert_counts(verdict, &[(counter, 1)], expected);
    }

    /// [`TestOutput::assert`] for a run that also counts events: `counted` lists every
    /// counter that moved, in `Counter::ALL` order, with how much.
    #[track_caller]
    pub fn assert_counts(&self, verdict: Verdict, counted: &[(Counter, u64)], expected: &[u8]) {
        let mut problems: Vec<String> = self.xdp_mark_problem().into_iter().collect();
        if self.verdict != verdict {
            problems.push(format!(
                "verdict: expected {verdict:?}, got {:?}",
                self.verdict
            ));
        }
        if self.counted != counted {
            problems.push(format!(
                "counters: expected exactly {counted:?}, got {:?}",
                self.counted
            ));
        }
        if self.out != expected {
            problems.push(format!(
                "output bytes differ from the expected packet\n{}",
                crate::diff::hex_diff(expected, &self.out)
            ));
        }
        assert!(
            problems.is_empty(),
            "{}:\n{}",
            self.prog.name(),
            problems.join("\n")
        );
    }

    /// Asserts that exactly one decision counter, `counter`, moved, by one.
    #[track_caller]
    pub fn assert_counted(&self, counter: Counter) {
        assert_eq!(
            self.counted,
            [(counter, 1)],
            "{}: expected exactly one decision counter, {}",
            self.prog.name(),
            counter.name()
        );
        if let Some(problem) = self.xdp_mark_problem() {
            panic!("{}: {problem}", self.prog.name());
        }
    }
}

/// A loaded copy of the datapath with its own maps.
pub struct Datapath {
    ebpf: Ebpf,
}

impl Datapath {
    /// Loads the object and all three programs; CONFIG and PUBLISHED_PORTS stay empty.
    ///
    /// Panics, never skips, when the process cannot load BPF: these tests prove the
    /// datapath and must not pass where they did not run.
    pub fn load() -> Self {
        Self::load_with(&mut EbpfLoader::new())
    }

    /// Loads like [`Datapath::load`], with `CONNTRACK` sized to `capacity` entries
    /// and `CONNTRACK_UNASSURED` to its share of that, as `netfast up` sizes them for
    /// `[conntrack] capacity`.
    pub fn load_with_conntrack_capacity(capacity: u32) -> Self {
        Self::load_with(
            EbpfLoader::new()
                .map_max_entries(MAP_CONNTRACK, capacity)
                .map_max_entries(MAP_CONNTRACK_UNASSURED, unassured_capacity(capacity)),
        )
    }

    fn load_with(loader: &mut EbpfLoader<'_>) -> Self {
        require_root();
        let object = netfast::bpf::object::object()
            .expect("netfast was built without its eBPF object; rebuild without AYA_BUILD_SKIP");
        let mut ebpf = loader.load(object).unwrap_or_else(|err| {
            panic!("loading the datapath object failed; is this kernel BPF-capable (BTF, CONFIG_BPF_SYSCALL)? {err}")
        });
        for name in [
            PROG_UPLINK_INGRESS_TC,
            PROG_UPLINK_EGRESS_TC,
            PROG_CONTAINER_INGRESS_TC,
            PROG_CONTAINER_HAIRPIN_TC,
        ] {
            let program: &mut SchedClassifier = ebpf
                .program_mut(name)
                .unwrap_or_else(|| panic!("the object has no program {name}"))
                .try_into()
                .unwrap_or_else(|err| panic!("{name} is not a SchedClassifier: {err}"));
            load_retrying(|| program.load())
                .unwrap_or_else(|err| panic!("the verifier rejected {name}: {err:?}"));
        }
        // `container_ingress_tc` tail-calls hairpin, as `netfast up` sets it up.
        let hairpin: &SchedClassifier = ebpf
            .program(PROG_CONTAINER_HAIRPIN_TC)
            .and_then(|program| program.try_into().ok())
            .expect("container_hairpin_tc is a SchedClassifier");
        let hairpin = hairpin
            .fd()
            .and_then(|fd| fd.try_clone().map_err(Into::into))
            .expect("container_hairpin_tc's fd");
        let mut calls: ProgramArray<&mut MapData> = ebpf
            .map_mut(MAP_CONTAINER_CALLS)
            .expect("the object has a CONTAINER_CALLS map")
            .try_into()
            .expect("CONTAINER_CALLS is a program array");
        calls
            .set(CALL_CONTAINER_HAIRPIN, &hairpin, 0)
            .expect("container_hairpin_tc goes into CONTAINER_CALLS");
        let name = PROG_UPLINK_INGRESS_XDP;
        let program: &mut Xdp = ebpf
            .program_mut(name)
            .unwrap_or_else(|| panic!("the object has no program {name}"))
            .try_into()
            .unwrap_or_else(|err| panic!("{name} is not an Xdp program: {err}"));
        load_retrying(|| program.load())
            .unwrap_or_else(|err| panic!("the verifier rejected {name}: {err:?}"));
        Self { ebpf }
    }

    /// How many instructions the verifier processed to load `prog`
    /// (`bpf_prog_info.verified_insns`, Linux 5.16 and later).
    pub fn verified_instructions(&self, prog: Prog) -> u32 {
        let program = self
            .ebpf
            .program(prog.name())
            .unwrap_or_else(|| panic!("the object has no program {}", prog.name()));
        let info = match prog {
            Prog::IngressXdp => <&Xdp>::try_from(program)
                .expect("uplink_ingress_xdp is Xdp")
                .info(),
            Prog::IngressTc | Prog::EgressTc | Prog::ContainerTc | Prog::HairpinTc => {
                <&SchedClassifier>::try_from(program)
                    .expect("the tc programs are SchedClassifier")
                    .info()
            }
        }
        .unwrap_or_else(|err| panic!("BPF_OBJ_GET_INFO_BY_FD of {}: {err}", prog.name()));
        info.verified_instruction_count().unwrap_or_else(|| {
            panic!(
                "this kernel does not report verified instructions for {}",
                prog.name()
            )
        })
    }

    /// Loads, then writes the seed's CONFIG and published ports.
    pub fn configured() -> Self {
        let mut datapath = Self::load();
        datapath.configure_seed();
        datapath
    }

    /// Writes the seed's CONFIG and published ports.
    pub fn configure_seed(&mut self) {
        self.write_config(&seed_config());
        self.publish(
            proto::TCP,
            Ipv4Addr::UNSPECIFIED,
            TCP_PUBLISHED,
            SocketAddrV4::new(BACKEND, TCP_BACKEND_PORT),
        );
        self.publish(
            proto::UDP,
            Ipv4Addr::UNSPECIFIED,
            UDP_PUBLISHED,
            SocketAddrV4::new(BACKEND, UDP_BACKEND_PORT),
        );
    }

    pub fn write_config(&mut self, config: &DatapathConfig) {
        let map = self
            .ebpf
            .map_mut(MAP_CONFIG)
            .expect("the object has a CONFIG map");
        let mut array: Array<&mut MapData, DatapathConfig> =
            Array::try_from(map).expect("CONFIG is an array of DatapathConfig");
        array.set(0, config, 0).expect("writing CONFIG[0]");
    }

    /// Publishes `host_addr:host_port/proto` (`host_addr` 0.0.0.0: any) to `backend`.
    pub fn publish(
        &mut self,
        proto: u8,
        host_addr: Ipv4Addr,
        host_port: u16,
        backend: SocketAddrV4,
    ) {
        let map = self
            .ebpf
            .map_mut(MAP_PUBLISHED_PORTS)
            .expect("the object has a PUBLISHED_PORTS map");
        let mut published: HashMap<&mut MapData, PublishKey, Backend> =
            HashMap::try_from(map).expect("PUBLISHED_PORTS is a hash of PublishKey to Backend");
        let key = PublishKey {
            host_addr: addr_be(host_addr),
            host_port: port_be(host_port),
            proto,
            _pad: 0,
        };
        let value = Backend {
            addr: addr_be(*backend.ip()),
            port: port_be(backend.port()),
            _pad: [0; 2],
        };
        published
            .insert(key, value, 0)
            .expect("inserting into PUBLISHED_PORTS");
    }

    /// Makes `addr` a container endpoint (`ENDPOINTS`), as `netfast up` does for each
    /// `[[container]]`.
    pub fn add_endpoint(&mut self, addr: Ipv4Addr, endpoint: Endpoint) {
        let map = self
            .ebpf
            .map_mut(MAP_ENDPOINTS)
            .expect("the object has an ENDPOINTS map");
        let mut endpoints: HashMap<&mut MapData, u32, Endpoint> =
            HashMap::try_from(map).expect("ENDPOINTS is a hash of u32 to Endpoint");
        endpoints
            .insert(addr_be(addr), endpoint, 0)
            .expect("inserting into ENDPOINTS");
    }

    /// Runs `prog` once on `frame`.
    pub fn run(&mut self, prog: Prog, frame: &[u8]) -> Run {
        self.run_on(prog, frame, None)
    }

    /// Runs `prog` once on `frame` as if it crossed `on`: for tc, `ifindex` becomes
    /// the skb's device and `ingress_ifindex` the interface it came in on; XDP takes
    /// `ifindex` as its receiving interface. Without `on`, both programs run on the
    /// calling thread's loopback and a tc skb has no ingress interface (0).
    pub fn run_on(&mut self, prog: Prog, frame: &[u8], on: Option<Ifindexes>) -> Run {
        let before = self.counters();
        let TestOutput {
            return_value,
            out,
            xdp_meta,
            skb_mark,
        } = self
            .test_run_on(prog, frame, on)
            .unwrap_or_else(|err| panic!("BPF_PROG_TEST_RUN of {} failed: {err:?}", prog.name()));
        let after = self.counters();
        let counted = Counter::ALL
            .iter()
            .zip(before.iter().zip(&after))
            .filter(|(_, (before, after))| before != after)
            .map(|(&counter, (before, after))| (counter, after - before))
            .collect();
        Run {
            prog,
            verdict: prog.verdict(return_value),
            out,
            counted,
            xdp_meta,
            skb_mark,
        }
    }

    /// Runs `prog` once on `frame` and returns its return value and the packet as it
    /// left it, or the kernel's error as is (EINVAL for a frame shorter than an
    /// Ethernet header); reads no counters.
    pub fn test_run(&self, prog: Prog, frame: &[u8]) -> Result<TestOutput, ProgramError> {
        self.test_run_on(prog, frame, None)
    }

    /// `test_run` with the interfaces of `run_on`.
    pub fn test_run_on(
        &self,
        prog: Prog,
        frame: &[u8],
        on: Option<Ifindexes>,
    ) -> Result<TestOutput, ProgramError> {
        // Room for anything the program could grow the packet by.
        let mut out = vec![0u8; frame.len() + 256];
        let program = self
            .ebpf
            .program(prog.name())
            .unwrap_or_else(|| panic!("the object has no program {}", prog.name()));
        let ctx = on.map(|on| on.ctx(prog, frame.len()));
        // The kernel writes the whole `struct __sk_buff` back (ENOSPC if it does not
        // fit), whatever part of it went in.
        let mut ctx_out = ctx.as_ref().map(|_| vec![0u8; 256]);
        let opts = TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ctx_in: ctx.as_deref(),
            ctx_out: ctx_out.as_deref_mut(),
            repeat: 1,
            ..Default::default()
        };
        let result = match prog {
            Prog::IngressXdp => <&Xdp>::try_from(program)
                .expect("uplink_ingress_xdp is Xdp")
                .test_run(opts),
            Prog::IngressTc | Prog::EgressTc | Prog::ContainerTc | Prog::HairpinTc => {
                <&SchedClassifier>::try_from(program)
                    .expect("the tc programs are SchedClassifier")
                    .test_run(opts)
            }
        }?;
        out.truncate(result.data_size_out as usize);
        let meta_len = match prog {
            Prog::IngressXdp => out.len().saturating_sub(frame.len()),
            Prog::IngressTc | Prog::EgressTc | Prog::ContainerTc | Prog::HairpinTc => 0,
        };
        let out_tail = out.split_off(meta_len);
        // `struct __sk_buff`'s third word is `mark`.
        let skb_mark = match prog {
            Prog::IngressXdp => None,
            _ => ctx_out
                .as_deref()
                .and_then(|ctx| ctx.get(8..12))
                .map(|word| u32::from_ne_bytes([word[0], word[1], word[2], word[3]])),
        };
        Ok(TestOutput {
            skb_mark,
            return_value: result.return_value,
            out: out_tail,
            xdp_meta: out,
        })
    }

    /// Every counter, summed over CPUs, indexed like `Counter::ALL`: one batch
    /// lookup, since tests read them around every packet.
    pub fn counters(&self) -> Vec<u64> {
        let map = self
            .ebpf
            .map(MAP_COUNTERS)
            .expect("the object has a COUNTERS map");
        let Map::PerCpuArray(counters) = map else {
            panic!("COUNTERS is not a per-CPU array: {map:?}");
        };
        crate::percpu::sum_per_cpu(counters.fd().as_fd(), Counter::COUNT)
            .unwrap_or_else(|err| panic!("reading COUNTERS in one batch: {err}"))
    }

    /// Every conntrack entry: `CONNTRACK`'s (assured flows), then
    /// `CONNTRACK_UNASSURED`'s.
    pub fn conntrack(&self) -> Vec<(CtTuple, CtEntry)> {
        let mut entries = self.flow_entries(MAP_CONNTRACK);
        entries.extend(self.flow_entries(MAP_CONNTRACK_UNASSURED));
        entries
    }

    /// Every entry of the conntrack map `name` (`CONNTRACK` or `CONNTRACK_UNASSURED`).
    pub fn flow_entries(&self, name: &str) -> Vec<(CtTuple, CtEntry)> {
        let map = self
            .ebpf
            .map(name)
            .unwrap_or_else(|| panic!("the object has no {name} map"));
        let conntrack: HashMap<&MapData, CtTuple, CtEntry> = HashMap::try_from(map)
            .unwrap_or_else(|err| panic!("{name} is not a hash of CtTuple to CtEntry: {err}"));
        conntrack
            .iter()
            .map(|entry| entry.unwrap_or_else(|err| panic!("iterating {name}: {err}")))
            .collect()
    }

    /// Deletes one conntrack entry, from whichever map holds it, as the LRU does
    /// when the table is full.
    pub fn evict(&mut self, key: &CtTuple) {
        for name in [MAP_CONNTRACK, MAP_CONNTRACK_UNASSURED] {
            let map = self
                .ebpf
                .map_mut(name)
                .unwrap_or_else(|| panic!("the object has no {name} map"));
            let mut conntrack: HashMap<&mut MapData, CtTuple, CtEntry> = HashMap::try_from(map)
                .unwrap_or_else(|err| panic!("{name} is not a hash of CtTuple to CtEntry: {err}"));
            if conntrack.remove(key).is_ok() {
                return;
            }
        }
        panic!("the entry to evict, {key:?}, is in no conntrack map");
    }

    /// The CONNTRACK entry for `key`, if any.
    pub fn flow(&self, key: &CtTuple) -> Option<CtEntry> {
        self.conntrack()
            .into_iter()
            .find_map(|(k, state)| (k == *key).then_some(state))
    }
}

/// The interfaces a test run pretends a packet crossed (`Datapath::run_on`).
#[derive(Clone, Copy, Debug)]
pub struct Ifindexes {
    /// The interface the program runs on: the uplink.
    pub ifindex: u32,
    /// tc only: the interface the packet came in on (for egress, the one a forwarded
    /// packet arrived from).
    pub ingress_ifindex: u32,
    /// tc only: `skb->mark` as the packet arrives.
    pub mark: u32,
}

impl Ifindexes {
    /// The context BPF_PROG_TEST_RUN takes: the head of `struct __sk_buff` up to
    /// `ifindex` (the kernel zero-fills the rest and accepts only mark, priority,
    /// ingress_ifindex and ifindex there), or `struct xdp_md` (data 0, data_end the
    /// frame's length, ingress_ifindex, rx queue 0).
    fn ctx(self, prog: Prog, frame_len: usize) -> Vec<u8> {
        let words: Vec<u32> = match prog {
            Prog::IngressTc | Prog::EgressTc | Prog::ContainerTc | Prog::HairpinTc => {
                // len, pkt_type, mark, queue_mapping, protocol, vlan_present, vlan_tci,
                // vlan_proto, priority, ingress_ifindex, ifindex.
                let mut words = vec![0; 11];
                words[2] = self.mark;
                words[9] = self.ingress_ifindex;
                words[10] = self.ifindex;
                words
            }
            // data, data_end, data_meta, ingress_ifindex, rx_queue_index, egress_ifindex.
            Prog::IngressXdp => vec![
                0,
                u32::try_from(frame_len).expect("a test frame fits in u32"),
                0,
                self.ifindex,
                0,
                0,
            ],
        };
        words.iter().flat_map(|word| word.to_ne_bytes()).collect()
    }
}

/// Fails, with the fix, when the process is not root.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert!(
        euid == 0,
        "the datapath packet tests load BPF programs and need root (euid 0, got {euid}); \
         run them as root: `sudo -E cargo test -p netfast-tests --test datapath_packets`"
    );
}
