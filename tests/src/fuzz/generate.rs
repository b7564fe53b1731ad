//! The frames of the fuzz run. Most are built around the flows the run put into
//! CONNTRACK with real packets, so they reach the datapath's lookups and rewrites,
//! not only its parser: packets of those flows, ICMP errors quoting them, their
//! fragments, and all of these cut short or with broken fields. Every frame comes
//! from the seeded [`Rng`] alone, never from what the datapath answered, so a seed
//! and an index name one frame for good.

use std::net::{Ipv4Addr, SocketAddrV4};

use crate::{
    fuzz::{frame, rng::Rng},
    harness::{BACKEND, LAN_PEER, Prog, SUBNET_ADDR, TCP_PUBLISHED, UDP_PUBLISHED, UPLINK_ADDR},
    packet::{ETH_LEN, ETHERTYPE_IPV4, L4, PROTO_ICMP, PROTO_TCP, PROTO_UDP, Packet},
};

/// One direction of a flow: a packet's addresses as the datapath keys them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Leg {
    Tcp(SocketAddrV4, SocketAddrV4),
    Udp(SocketAddrV4, SocketAddrV4),
    /// An ICMP echo request, or reply, with its identifier.
    Echo {
        src: Ipv4Addr,
        dst: Ipv4Addr,
        id: u16,
        reply: bool,
    },
}

impl Leg {
    /// The same flow the other way: what answers this leg.
    pub fn reversed(self) -> Leg {
        match self {
            Leg::Tcp(src, dst) => Leg::Tcp(dst, src),
            Leg::Udp(src, dst) => Leg::Udp(dst, src),
            Leg::Echo {
                src,
                dst,
                id,
                reply,
            } => Leg::Echo {
                src: dst,
                dst: src,
                id,
                reply: !reply,
            },
        }
    }

    /// The plain packet of this leg: a SYN (SYN-ACK for a reply), an empty datagram,
    /// an echo. The seeding runs these and the generator dresses them up.
    pub fn packet(self, reply: bool) -> Packet {
        use crate::packet::tcp_flags::{ACK, SYN};
        match self {
            Leg::Tcp(src, dst) => Packet::tcp(src, dst, if reply { SYN | ACK } else { SYN }),
            Leg::Udp(src, dst) => Packet::udp(src, dst).payload(b"seed"),
            Leg::Echo {
                src,
                dst,
                id,
                reply: false,
            } => Packet::icmp_echo_request(src, dst, id, 1),
            Leg::Echo { src, dst, id, .. } => Packet::icmp_echo_reply(src, dst, id, 1),
        }
    }
}

/// A flow that real packets put into CONNTRACK, in its four forms.
#[derive(Clone, Copy, Debug)]
pub struct Flow {
    /// The first packet as it reached the datapath, and as it left, translated.
    pub original: Leg,
    pub original_out: Leg,
    /// A reply as it reaches the datapath, and as it leaves, translated.
    pub reply: Leg,
    pub reply_out: Leg,
    /// Masquerade flows start on egress; published-port flows on ingress.
    pub masquerade: bool,
}

impl Flow {
    /// The leg of this flow that `prog` sees and translates.
    pub fn arriving(&self, prog: Prog) -> Leg {
        if (prog == Prog::EgressTc) == self.masquerade {
            self.original
        } else {
            self.reply
        }
    }

    /// The leg of this flow that an ICMP error reaching `prog` quotes when it is
    /// about this flow: a packet that crossed the uplink the other way, translated.
    /// From outside, errors quote what left (the masqueraded original, the published
    /// port's reply); from a container or backend, what it received.
    pub fn quoted_by_errors_on(&self, prog: Prog) -> Leg {
        if (prog == Prog::EgressTc) == self.masquerade {
            self.reply_out
        } else {
            self.original_out
        }
    }

    pub fn legs(&self) -> [Leg; 4] {
        [self.original, self.original_out, self.reply, self.reply_out]
    }
}

/// What kind of frame a case is, for the run's histogram.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// Shorter than an Ethernet header: the kernel refuses it with EINVAL.
    Short,
    Random,
    /// A well-formed packet of a seeded flow, either way.
    Flow,
    /// A well-formed packet of no seeded flow: a new flow, or a miss.
    Other,
    IcmpError,
    Fragment,
    Mutated,
    Truncated,
    /// TCP/UDP whose checksum field holds only the pseudo-header sum.
    PartialCsum,
}

impl Kind {
    pub const ALL: [Kind; 9] = [
        Kind::Short,
        Kind::Random,
        Kind::Flow,
        Kind::Other,
        Kind::IcmpError,
        Kind::Fragment,
        Kind::Mutated,
        Kind::Truncated,
        Kind::PartialCsum,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Short => "short",
            Kind::Random => "random",
            Kind::Flow => "flow",
            Kind::Other => "other",
            Kind::IcmpError => "icmp_error",
            Kind::Fragment => "fragment",
            Kind::Mutated => "mutated",
            Kind::Truncated => "truncated",
            Kind::PartialCsum => "partial_csum",
        }
    }

    /// How often each kind is drawn, in percent of bursts.
    fn weight(self) -> usize {
        match self {
            Kind::Short => 1,
            Kind::Random => 6,
            Kind::Flow => 15,
            Kind::Other => 8,
            Kind::IcmpError => 25,
            Kind::Fragment => 7,
            Kind::Mutated => 25,
            Kind::Truncated => 8,
            Kind::PartialCsum => 5,
        }
    }
}

/// One frame to run.
#[derive(Clone, Debug)]
pub struct Case {
    pub kind: Kind,
    pub frame: Vec<u8>,
}

/// The generator: a seeded stream of bursts built around `flows`.
pub struct Generator {
    rng: Rng,
    flows: Vec<Flow>,
}

impl Generator {
    pub fn new(seed: u64, flows: Vec<Flow>) -> Self {
        assert!(!flows.is_empty(), "the generator needs seeded flows");
        Self {
            rng: Rng::new(seed),
            flows,
        }
    }

    /// The next burst for `prog`: one frame, or a datagram's fragments, which must
    /// reach the program in order, one after the other.
    pub fn burst(&mut self, prog: Prog) -> Vec<Case> {
        let weights: Vec<usize> = Kind::ALL.iter().map(|kind| kind.weight()).collect();
        let kind = Kind::ALL[self.rng.weighted(&weights)];
        let frames = match kind {
            Kind::Fragment => self.fragments(prog),
            Kind::Short => {
                let len = self.rng.below(ETH_LEN);
                vec![self.rng.bytes(len)]
            }
            Kind::Random => vec![self.random_frame()],
            Kind::Flow => {
                let leg = self.flow_leg(prog);
                vec![self.dressed(leg).bytes()]
            }
            Kind::Other => {
                let leg = self.new_leg(prog);
                vec![self.dressed(leg).bytes()]
            }
            Kind::IcmpError => vec![self.icmp_error(prog, true).bytes()],
            Kind::Mutated => vec![self.mutated(prog)],
            Kind::Truncated => vec![self.truncated(prog)],
            Kind::PartialCsum => vec![self.partial_csum(prog)],
        };
        frames
            .into_iter()
            .map(|frame| Case { kind, frame })
            .collect()
    }

    // --- addresses and legs -------------------------------------------------------

    fn outside_addr(&mut self) -> Ipv4Addr {
        match self.rng.below(6) {
            0 | 1 => LAN_PEER,
            2 => Ipv4Addr::new(10, 0, 1, 1),
            3 => self.rng.pick(&[
                Ipv4Addr::new(198, 51, 100, 7),
                Ipv4Addr::new(203, 0, 113, 5),
                Ipv4Addr::new(8, 8, 8, 8),
                Ipv4Addr::new(1, 1, 1, 1),
            ]),
            4 => Ipv4Addr::new(10, 0, 1, self.rng.u8()),
            _ => Ipv4Addr::from(self.rng.u32()),
        }
    }

    fn subnet_addr(&mut self) -> Ipv4Addr {
        match self.rng.below(4) {
            0 => BACKEND,
            1 => Ipv4Addr::new(172, 16, 0, 103),
            _ => Ipv4Addr::from(u32::from(SUBNET_ADDR) | u32::from(self.rng.u8())),
        }
    }

    /// Any address the run knows, or any at all.
    fn any_addr(&mut self) -> Ipv4Addr {
        match self.rng.below(4) {
            0 => self.outside_addr(),
            1 => self.subnet_addr(),
            2 => self.rng.pick(&[UPLINK_ADDR, Ipv4Addr::new(10, 0, 1, 49)]),
            _ => Ipv4Addr::from(self.rng.u32()),
        }
    }

    fn port(&mut self) -> u16 {
        match self.rng.below(8) {
            0 => self.rng.pick(&[80, 53, 443, 9000, 0, 65_535]),
            1 => self.rng.pick(&[TCP_PUBLISHED, UDP_PUBLISHED]),
            2 | 3 => self.rng.range(61_000, 65_535) as u16,
            _ => self.rng.u16(),
        }
    }

    /// A leg of a seeded flow: mostly one that `prog` translates, sometimes one of the
    /// flow's other forms (already translated, or arriving on the wrong side).
    fn flow_leg(&mut self, prog: Prog) -> Leg {
        let flow = self.rng.pick(&self.flows);
        if self.rng.percent(80) {
            flow.arriving(prog)
        } else {
            self.rng.pick(&flow.legs())
        }
    }

    /// A leg of no seeded flow, shaped to what `prog` sees: on ingress mostly from
    /// outside to the uplink, often to a published port (a new DNAT flow); on egress
    /// mostly from the subnet (a new masqueraded flow).
    fn new_leg(&mut self, prog: Prog) -> Leg {
        let (src, dst) = if prog == Prog::EgressTc {
            let src = match self.rng.below(10) {
                0..7 => self.subnet_addr(),
                7 => UPLINK_ADDR,
                _ => self.any_addr(),
            };
            (src, self.outside_addr())
        } else {
            let src = match self.rng.below(10) {
                0..7 => self.outside_addr(),
                7 => self.subnet_addr(),
                _ => self.any_addr(),
            };
            let dst = if self.rng.percent(70) {
                UPLINK_ADDR
            } else {
                self.any_addr()
            };
            (src, dst)
        };
        let src_port = self.port();
        let published = self.rng.percent(50) && prog != Prog::EgressTc;
        match self.rng.below(5) {
            0 | 1 => {
                let dst_port = if published {
                    TCP_PUBLISHED
                } else {
                    self.port()
                };
                Leg::Tcp(
                    SocketAddrV4::new(src, src_port),
                    SocketAddrV4::new(dst, dst_port),
                )
            }
            2 | 3 => {
                let dst_port = if published {
                    UDP_PUBLISHED
                } else {
                    self.port()
                };
                Leg::Udp(
                    SocketAddrV4::new(src, src_port),
                    SocketAddrV4::new(dst, dst_port),
                )
            }
            _ => Leg::Echo {
                src,
                dst,
                id: self.port(),
                reply: self.rng.percent(30),
            },
        }
    }

    // --- packets ------------------------------------------------------------------

    /// `leg` as a packet with random header fields, flags and payload: UDP checksum
    /// 0 sometimes, IP options sometimes.
    fn dressed(&mut self, leg: Leg) -> Packet {
        let mut pkt = leg.packet(false);
        match &mut pkt.l4 {
            L4::Tcp {
                seq,
                ack,
                flags,
                window,
                ..
            } => {
                *seq = self.rng.u32();
                *ack = self.rng.u32();
                *flags = self.tcp_flags();
                *window = self.rng.u16();
            }
            L4::Udp { zero_checksum, .. } => *zero_checksum = self.rng.percent(15),
            L4::Icmp { rest, .. } => rest[2..].copy_from_slice(&self.rng.u16().to_be_bytes()),
            L4::Other { .. } => {}
        }
        pkt.ttl = if self.rng.percent(80) {
            64
        } else {
            self.rng.u8()
        };
        pkt.tos = if self.rng.percent(90) {
            0
        } else {
            self.rng.u8()
        };
        pkt.ip_id = self.rng.u16();
        pkt.dont_fragment = self.rng.percent(50);
        pkt.payload = self.payload();
        if self.rng.percent(6) {
            pkt.options = self.ip_options();
        }
        pkt
    }

    fn tcp_flags(&mut self) -> u8 {
        use crate::packet::tcp_flags::{ACK, FIN, PSH, RST, SYN};
        match self.rng.below(8) {
            0 => SYN,
            1 => SYN | ACK,
            2 | 3 => ACK,
            4 => ACK | PSH,
            5 => FIN | ACK,
            6 => self.rng.pick(&[RST, RST | ACK]),
            _ => self.rng.u8(),
        }
    }

    fn payload(&mut self) -> Vec<u8> {
        let len = match self.rng.below(10) {
            0..6 => self.rng.below(65),
            6..9 => self.rng.range(64, 512),
            _ => self.rng.range(512, 1400),
        };
        self.rng.bytes(len)
    }

    /// 1 to 40 bytes of IPv4 options: router alert, NOPs, end of list, or noise.
    fn ip_options(&mut self) -> Vec<u8> {
        match self.rng.below(4) {
            0 => vec![0x94, 0x04, 0x00, 0x00],
            1 => vec![0x01, 0x01, 0x01, 0x00],
            _ => {
                let len = self.rng.range(1, 40);
                self.rng.bytes(len)
            }
        }
    }

    /// An ICMP error on `prog`'s side about a packet of anything, mostly of a seeded
    /// flow in either direction, quoted whole, to its first 8 L4 bytes, or cut
    /// anywhere. `nest`: the quote may itself be an ICMP error.
    fn icmp_error(&mut self, prog: Prog, nest: bool) -> Packet {
        let (ty, code, rest) = self.error_header();
        let quoted = self.quoted_packet(prog, nest);
        let quote = self.quote_bytes(&quoted);
        let (src, dst) = self.error_addresses(prog, &quoted);
        let mut pkt = Packet::icmp(src, dst, ty, code, rest).payload(&quote);
        let any = self.rng.u8();
        pkt.ttl = self.rng.pick(&[64, 255, 1, any]);
        pkt.ip_id = self.rng.u16();
        pkt.dont_fragment = self.rng.percent(50);
        if self.rng.percent(4) {
            pkt.options = self.ip_options();
        }
        pkt
    }

    /// Type, code and the 4 bytes after the checksum: every error type and every
    /// destination-unreachable code, now and then anything at all.
    fn error_header(&mut self) -> (u8, u8, [u8; 4]) {
        let ty = match self.rng.below(20) {
            0..12 => 3,
            12..15 => 11,
            15..17 => 12,
            17 => 4,
            18 => 5,
            _ => self.rng.u8(),
        };
        let code = match ty {
            3 => self.rng.below(16) as u8,
            11 => self.rng.below(2) as u8,
            12 => self.rng.below(3) as u8,
            5 => self.rng.below(4) as u8,
            4 => 0,
            _ => self.rng.u8(),
        };
        let rest = match (ty, code) {
            (3, 4) => {
                let any = self.rng.u16();
                let mtu = self.rng.pick(&[1400, 576, 68, 1280, any]);
                let [hi, lo] = mtu.to_be_bytes();
                [0, 0, hi, lo]
            }
            (12, _) => [self.rng.below(60) as u8, 0, 0, 0],
            (5, _) => self.any_addr().octets(),
            _ if self.rng.percent(10) => self.rng.u32().to_be_bytes(),
            _ => [0; 4],
        };
        (ty, code, rest)
    }

    /// The packet an error quotes: a leg of a seeded flow or not, with options, as a
    /// fragment, as an ICMP error itself, with a UDP checksum of 0.
    fn quoted_packet(&mut self, prog: Prog, nest: bool) -> Packet {
        if nest && self.rng.percent(6) {
            return self.icmp_error(prog, false);
        }
        let flow = self.rng.pick(&self.flows);
        let leg = match self.rng.below(4) {
            0 | 1 => flow.quoted_by_errors_on(prog),
            2 => self.rng.pick(&flow.legs()),
            _ => self.new_leg(prog),
        };
        let mut pkt = self.dressed(leg);
        pkt.payload.truncate(self.rng.below(64));
        if self.rng.percent(8) {
            pkt.options = self.ip_options();
        }
        if self.rng.percent(8) {
            let offset = if self.rng.percent(50) {
                0
            } else {
                self.rng.range(1, 0x1fff) as u16
            };
            pkt = pkt.fragment(self.rng.percent(70), offset);
        }
        pkt
    }

    /// The bytes an error carries of `quoted`: its IPv4 header and the first 8 bytes
    /// after it, all of it, or a cut anywhere; sometimes with a broken quoted header.
    fn quote_bytes(&mut self, quoted: &Packet) -> Vec<u8> {
        let mut quote = quoted.bytes()[ETH_LEN..].to_vec();
        let len = match self.rng.below(10) {
            0..4 => quoted.ip_header_len() + 8,
            4..6 => quote.len(),
            _ => self.rng.below(quote.len() + 1),
        };
        quote.truncate(len);
        if quote.len() >= 20 && self.rng.percent(12) {
            self.break_quoted_header(&mut quote);
        }
        quote
    }

    /// A quoted header with a bad IHL, version, total length or checksum.
    fn break_quoted_header(&mut self, quote: &mut [u8]) {
        match self.rng.below(4) {
            0 => quote[0] = 0x40 | self.rng.below(16) as u8,
            1 => quote[0] = (self.rng.u8() & 0xf0) | (quote[0] & 0x0f),
            2 => quote[2..4].copy_from_slice(&self.rng.u16().to_be_bytes()),
            _ => quote[10] ^= 1 + self.rng.below(255) as u8,
        }
        if self.rng.percent(60) && quote[0] & 0x0f >= 5 {
            let ihl = usize::from(quote[0] & 0x0f) * 4;
            if quote.len() >= ihl {
                quote[10..12].fill(0);
                let check = crate::packet::internet_checksum(&quote[..ihl]);
                quote[10..12].copy_from_slice(&check.to_be_bytes());
            }
        }
    }

    /// Who sends the error to whom. Mostly as a router or the far host would: back to
    /// the quoted packet's source. On egress, often from the quoted packet's
    /// destination, a container or backend. Sometimes anyone to anyone.
    fn error_addresses(&mut self, prog: Prog, quoted: &Packet) -> (Ipv4Addr, Ipv4Addr) {
        if self.rng.percent(25) {
            return (self.any_addr(), self.any_addr());
        }
        let src = if prog == Prog::EgressTc || self.rng.percent(50) {
            quoted.dst
        } else {
            self.outside_addr()
        };
        (src, quoted.src)
    }

    // --- bursts and damaged frames --------------------------------------------------

    /// A datagram of a seeded flow or not, cut into fragments at multiples of 8: in
    /// order, or the first one last, or shuffled; with a stray later fragment whose
    /// IP id matches nothing, or the first fragment twice.
    fn fragments(&mut self, prog: Prog) -> Vec<Vec<u8>> {
        let leg = if self.rng.percent(75) {
            self.flow_leg(prog)
        } else {
            self.new_leg(prog)
        };
        let mut pkt = self.dressed(leg);
        if pkt.payload.len() < 16 {
            let len = self.rng.range(16, 1400);
            pkt.payload = self.rng.bytes(len);
        }
        pkt.dont_fragment = false;
        let frame = pkt.bytes();
        let ihl = pkt.ip_header_len();
        let len = frame.len() - ETH_LEN - ihl;
        let cuts = self.cuts(len);
        let mut frags: Vec<Vec<u8>> = cuts
            .windows(2)
            .map(|w| cut(&frame, ihl, w[0], w[1], w[1] < len))
            .collect();
        self.disorder(&mut frags);
        if self.rng.percent(30) && frags.len() > 1 {
            let mut stray = frags[frags.len() - 1].clone();
            let id =
                u16::from_be_bytes([stray[18], stray[19]]) ^ (1 + self.rng.below(0xfffe) as u16);
            stray[18..20].copy_from_slice(&id.to_be_bytes());
            frame::fix_checksums(&mut stray);
            let at = self.rng.below(frags.len() + 1);
            frags.insert(at, stray);
        }
        if self.rng.percent(10) {
            let first = frags[0].clone();
            frags.push(first);
        }
        frags
    }

    /// Fragment boundaries over `len` (more than 8) payload bytes: 0, one to three
    /// multiples of 8 inside, and `len`.
    fn cuts(&mut self, len: usize) -> Vec<usize> {
        assert!(len > 8, "a datagram to fragment carries more than 8 bytes");
        let slots = (len - 1) / 8;
        let mut cuts = vec![0, len];
        for _ in 0..self.rng.range(1, 3) {
            cuts.push(8 * self.rng.range(1, slots));
        }
        cuts.sort_unstable();
        cuts.dedup();
        cuts
    }

    fn disorder(&mut self, frags: &mut [Vec<u8>]) {
        match self.rng.below(10) {
            0..7 => {}
            7 | 8 => frags.rotate_left(1),
            _ => {
                for i in (1..frags.len()).rev() {
                    frags.swap(i, self.rng.below(i + 1));
                }
            }
        }
    }

    /// Any well-formed frame the generator makes, for the mutators to damage.
    fn base_frame(&mut self, prog: Prog) -> Vec<u8> {
        match self.rng.below(10) {
            0..4 => {
                let leg = self.flow_leg(prog);
                self.dressed(leg).bytes()
            }
            4 | 5 => {
                let leg = self.new_leg(prog);
                self.dressed(leg).bytes()
            }
            6..9 => self.icmp_error(prog, true).bytes(),
            _ => {
                let mut frags = self.fragments(prog);
                let i = self.rng.below(frags.len());
                frags.swap_remove(i)
            }
        }
    }

    /// A well-formed frame with one to three fields broken, then, for three frames
    /// in four, every checksum that can be recomputed made valid again.
    fn mutated(&mut self, prog: Prog) -> Vec<u8> {
        let mut frame = self.base_frame(prog);
        for _ in 0..self.rng.range(1, 3) {
            self.mutate(&mut frame);
        }
        if self.rng.percent(75) {
            frame::fix_checksums(&mut frame);
        }
        frame
    }

    fn mutate(&mut self, frame: &mut Vec<u8>) {
        if frame.len() < ETH_LEN + 20 {
            return;
        }
        let ihl = usize::from(frame[ETH_LEN] & 0x0f) * 4;
        match self.rng.below(11) {
            0 => frame.truncate(self.rng.range(ETH_LEN, frame.len())),
            1 => frame[ETH_LEN] = 0x40 | self.rng.below(16) as u8,
            2 => frame[ETH_LEN] = (self.rng.u8() & 0xf0) | (frame[ETH_LEN] & 0x0f),
            3 => {
                let actual = (frame.len() - ETH_LEN) as u16;
                let (near, any) = (self.rng.below(64) as u16, self.rng.u16());
                let len = self.rng.pick(&[
                    0,
                    19,
                    20,
                    ihl as u16,
                    actual.wrapping_sub(1),
                    actual.wrapping_add(1),
                    actual.wrapping_sub(near),
                    any,
                ]);
                frame[ETH_LEN + 2..ETH_LEN + 4].copy_from_slice(&len.to_be_bytes());
            }
            4 => {
                let flags = match self.rng.below(4) {
                    0 => 0x2000,
                    1 => self.rng.range(1, 0x1fff) as u16,
                    2 => 0x2000 | self.rng.range(1, 0x1fff) as u16,
                    _ => self.rng.u16(),
                };
                frame[ETH_LEN + 6..ETH_LEN + 8].copy_from_slice(&flags.to_be_bytes());
            }
            5 => {
                let any = self.rng.u8();
                frame[ETH_LEN + 9] = self
                    .rng
                    .pick(&[PROTO_ICMP, PROTO_TCP, PROTO_UDP, 47, 0, 255, any]);
            }
            6 => {
                for _ in 0..self.rng.range(1, 4) {
                    let at = self.rng.range(ETH_LEN, frame.len() - 1);
                    frame[at] ^= 1 + self.rng.below(255) as u8;
                }
            }
            7 => self.mutate_l4(frame, ihl),
            8 => {
                let tail = self.rng.range(1, 64);
                frame.extend(self.rng.bytes(tail));
            }
            9 => {
                let any = self.rng.u16();
                let ether_type = self.rng.pick(&[0x86dd, 0x0806, 0x8100, any]);
                frame[12..14].copy_from_slice(&u16::to_be_bytes(ether_type));
            }
            _ => {
                let options = self.ip_options();
                insert_options(frame, &options);
            }
        }
    }

    /// Breaks a length or type field of the L4 header: TCP data offset, UDP length,
    /// ICMP type and code.
    fn mutate_l4(&mut self, frame: &mut [u8], ihl: usize) {
        let l4 = ETH_LEN + ihl.max(20);
        match frame[ETH_LEN + 9] {
            PROTO_TCP if frame.len() > l4 + 12 => frame[l4 + 12] = self.rng.u8(),
            PROTO_UDP if frame.len() >= l4 + 6 => {
                let any = self.rng.u16();
                let len = self.rng.pick(&[0, 7, 8, any]);
                frame[l4 + 4..l4 + 6].copy_from_slice(&u16::to_be_bytes(len));
            }
            PROTO_ICMP if frame.len() >= l4 + 2 => {
                let any = self.rng.u8();
                frame[l4] = self.rng.pick(&[0, 8, 3, 11, 12, 4, 5, 13, any]);
                frame[l4 + 1] = self.rng.u8() % 17;
            }
            _ => {}
        }
    }

    /// A well-formed frame cut at any length from the Ethernet header on; half of
    /// them with whatever checksums still can be fixed made valid.
    fn truncated(&mut self, prog: Prog) -> Vec<u8> {
        let mut frame = self.base_frame(prog);
        frame.truncate(self.rng.range(ETH_LEN, frame.len()));
        if self.rng.percent(50) {
            frame::fix_checksums(&mut frame);
        }
        frame
    }

    /// TCP or UDP whose checksum field holds the pseudo-header sum only, as a local
    /// sender with checksum offload leaves it (CHECKSUM_PARTIAL).
    fn partial_csum(&mut self, prog: Prog) -> Vec<u8> {
        let leg = loop {
            let leg = if self.rng.percent(70) {
                self.flow_leg(prog)
            } else {
                self.new_leg(prog)
            };
            if !matches!(leg, Leg::Echo { .. }) {
                break leg;
            }
        };
        let mut pkt = self.dressed(leg);
        if let L4::Udp { zero_checksum, .. } = &mut pkt.l4 {
            *zero_checksum = false;
        }
        pkt.more_fragments = false;
        pkt.fragment_offset = 0;
        let mut frame = pkt.bytes();
        let Some(ip) = frame::frame_ipv4(&frame) else {
            return frame;
        };
        let Some(at) = frame::l4_csum_offset(&frame, &ip) else {
            return frame;
        };
        let partial = frame::partial_csum(&ip, ip.segment(&frame).len());
        frame[at..at + 2].copy_from_slice(&partial.to_be_bytes());
        frame
    }

    /// Random bytes; often with an IPv4 EtherType and a plausible IPv4 header start
    /// (version, IHL, protocol, known addresses), and its checksums fixed.
    fn random_frame(&mut self) -> Vec<u8> {
        let len = match self.rng.below(10) {
            0..5 => self.rng.range(ETH_LEN, 80),
            5..9 => self.rng.range(80, 600),
            _ => self.rng.range(600, 1514),
        };
        let mut frame = self.rng.bytes(len);
        if self.rng.percent(40) {
            return frame;
        }
        frame[12..14].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
        if len >= ETH_LEN + 20 && self.rng.percent(70) {
            self.plausible_ipv4(&mut frame);
        }
        if self.rng.percent(60) {
            frame::fix_checksums(&mut frame);
        }
        frame
    }

    fn plausible_ipv4(&mut self, frame: &mut [u8]) {
        let ip = &mut frame[ETH_LEN..];
        ip[0] = if self.rng.percent(70) {
            0x45
        } else {
            0x40 | self.rng.below(16) as u8
        };
        ip[9] = self.rng.pick(&[PROTO_ICMP, PROTO_TCP, PROTO_UDP]);
        if self.rng.percent(50) {
            let len = ip.len() as u16;
            ip[2..4].copy_from_slice(&len.to_be_bytes());
        }
        if self.rng.percent(50) {
            ip[6..8].fill(0);
        }
        if self.rng.percent(50) {
            let (src, dst) = (self.any_addr(), self.any_addr());
            frame[ETH_LEN + 12..ETH_LEN + 16].copy_from_slice(&src.octets());
            frame[ETH_LEN + 16..ETH_LEN + 20].copy_from_slice(&dst.octets());
        }
    }
}

/// The fragment of a whole frame carrying IP payload bytes `start..end` (multiples
/// of 8 except at the end), with MF = `more`: the original header with its own total
/// length, offset and header checksum. The first one keeps the L4 header, whose
/// checksum covers the whole datagram.
fn cut(frame: &[u8], ihl: usize, start: usize, end: usize, more: bool) -> Vec<u8> {
    let payload = &frame[ETH_LEN + ihl..];
    let mut out = frame[..ETH_LEN + ihl].to_vec();
    let total = (ihl + end - start) as u16;
    out[ETH_LEN + 2..ETH_LEN + 4].copy_from_slice(&total.to_be_bytes());
    let flags = (u16::from(more) << 13) | (start / 8) as u16;
    out[ETH_LEN + 6..ETH_LEN + 8].copy_from_slice(&flags.to_be_bytes());
    out.extend_from_slice(&payload[start..end.min(payload.len())]);
    frame::fix_checksums(&mut out);
    out
}

/// Inserts `options` (padded to 4 bytes, IHL kept at most 15) right after the IPv4
/// header, growing the IHL and total length by as much.
fn insert_options(frame: &mut Vec<u8>, options: &[u8]) {
    let ihl_words = usize::from(frame[ETH_LEN] & 0x0f);
    let room = 15usize.saturating_sub(ihl_words.max(5)) * 4;
    let len = options.len().div_ceil(4) * 4;
    let len = len.min(room);
    if len == 0 || frame.len() < ETH_LEN + ihl_words.max(5) * 4 {
        return;
    }
    let mut padded = options[..len.min(options.len())].to_vec();
    padded.resize(len, 0);
    let at = ETH_LEN + ihl_words.max(5) * 4;
    frame.splice(at..at, padded);
    frame[ETH_LEN] = (frame[ETH_LEN] & 0xf0) | (ihl_words.max(5) + len / 4) as u8;
    let total = u16::from_be_bytes([frame[ETH_LEN + 2], frame[ETH_LEN + 3]]);
    frame[ETH_LEN + 2..ETH_LEN + 4].copy_from_slice(&total.wrapping_add(len as u16).to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flows() -> Vec<Flow> {
        let client = SocketAddrV4::new(LAN_PEER, 40_000);
        let published = SocketAddrV4::new(UPLINK_ADDR, TCP_PUBLISHED);
        let backend = SocketAddrV4::new(BACKEND, 80);
        vec![Flow {
            original: Leg::Tcp(client, published),
            original_out: Leg::Tcp(client, backend),
            reply: Leg::Tcp(backend, client),
            reply_out: Leg::Tcp(published, client),
            masquerade: false,
        }]
    }

    /// The same seed gives the same frames: a reported seed and index replay.
    #[test]
    fn bursts_are_deterministic() {
        let mut a = Generator::new(42, flows());
        let mut b = Generator::new(42, flows());
        for i in 0..2000 {
            let prog = [Prog::IngressTc, Prog::IngressXdp, Prog::EgressTc][i % 3];
            let (x, y) = (a.burst(prog), b.burst(prog));
            assert_eq!(x.len(), y.len());
            for (x, y) in x.iter().zip(&y) {
                assert_eq!(x.frame, y.frame);
            }
        }
    }

    /// Fragments carry the datagram's payload in pieces whose offsets add up.
    #[test]
    fn fragments_cover_the_datagram() {
        let pkt = Packet::udp(
            SocketAddrV4::new(LAN_PEER, 1),
            SocketAddrV4::new(UPLINK_ADDR, 2),
        )
        .payload(&[7; 100]);
        let frame = pkt.bytes();
        let first = cut(&frame, 20, 0, 48, true);
        let last = cut(&frame, 20, 48, 108, false);
        let (a, b) = (
            frame::frame_ipv4(&first).expect("IPv4"),
            frame::frame_ipv4(&last).expect("IPv4"),
        );
        assert!(a.is_first_fragment() && a.lengths_ok && frame::ip_header_ok(&first, &a));
        assert!(b.is_later_fragment() && !b.more_fragments && b.frag_offset == 6);
        assert_eq!(first.len() + last.len() - 34, frame.len());
    }

    #[test]
    fn options_are_inserted_with_ihl_and_length() {
        let mut frame = Packet::udp(
            SocketAddrV4::new(LAN_PEER, 1),
            SocketAddrV4::new(UPLINK_ADDR, 2),
        )
        .bytes();
        insert_options(&mut frame, &[0x94, 0x04, 0, 0]);
        frame::fix_checksums(&mut frame);
        let ip = frame::frame_ipv4(&frame).expect("IPv4");
        assert_eq!((ip.ihl, ip.tot_len), (24, 32));
        assert_eq!(frame::l4_ok(&frame, &ip), Some(true));
    }
}
