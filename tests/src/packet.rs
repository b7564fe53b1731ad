//! A packet builder for the datapath tests: Ethernet + IPv4 (with optional options and
//! fragment fields) + TCP, UDP, ICMP or any other protocol.
//!
//! Every checksum is computed from scratch over the finished bytes by
//! [`internet_checksum`], never updated incrementally, so the expected packets do not
//! share any arithmetic with the datapath they check.

use std::net::{Ipv4Addr, SocketAddrV4};

pub const ETH_LEN: usize = 14;
pub const IPV4_LEN: usize = 20;
pub const TCP_LEN: usize = 20;
pub const UDP_LEN: usize = 8;
pub const ICMP_LEN: usize = 8;

pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_ARP: u16 = 0x0806;
pub const ETHERTYPE_IPV6: u16 = 0x86dd;

pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
pub const PROTO_GRE: u8 = 47;

pub const ICMP_ECHO_REPLY: u8 = 0;
pub const ICMP_DEST_UNREACHABLE: u8 = 3;
pub const ICMP_SOURCE_QUENCH: u8 = 4;
pub const ICMP_REDIRECT: u8 = 5;
pub const ICMP_ECHO_REQUEST: u8 = 8;
pub const ICMP_TIME_EXCEEDED: u8 = 11;
pub const ICMP_PARAMETER_PROBLEM: u8 = 12;
pub const ICMP_TIMESTAMP: u8 = 13;
/// Destination unreachable codes used by the tests.
pub const ICMP_PORT_UNREACHABLE: u8 = 3;
pub const ICMP_FRAG_NEEDED: u8 = 4;

/// TCP flag bits (byte 13 of the header).
pub mod tcp_flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
}

/// The 16-bit one's-complement of the one's-complement sum of `bytes` (RFC 1071),
/// read as big-endian 16-bit words, an odd last byte padded with zero.
pub fn internet_checksum(bytes: &[u8]) -> u16 {
    let mut sum: u64 = bytes
        .chunks(2)
        .map(|pair| u64::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The transport part of a [`Packet`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum L4 {
    Tcp {
        src_port: u16,
        dst_port: u16,
        seq: u32,
        ack: u32,
        flags: u8,
        window: u16,
    },
    Udp {
        src_port: u16,
        dst_port: u16,
        /// Send checksum 0 ("no checksum") instead of computing one.
        zero_checksum: bool,
    },
    Icmp {
        ty: u8,
        code: u8,
        /// The 4 bytes after the checksum: identifier and sequence for echo.
        rest: [u8; 4],
    },
    /// Any other protocol: the payload is the whole IP payload.
    Other { proto: u8 },
}

/// One Ethernet frame carrying IPv4.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Packet {
    pub eth_dst: [u8; 6],
    pub eth_src: [u8; 6],
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub tos: u8,
    pub ip_id: u16,
    pub ttl: u8,
    pub dont_fragment: bool,
    pub more_fragments: bool,
    /// In 8-byte units.
    pub fragment_offset: u16,
    /// Raw IPv4 options; padded with zeros (End of Option List) to a multiple of 4.
    pub options: Vec<u8>,
    pub l4: L4,
    pub payload: Vec<u8>,
}

impl Packet {
    fn new(src: Ipv4Addr, dst: Ipv4Addr, l4: L4) -> Self {
        Self {
            eth_dst: [0x02, 0x00, 0x00, 0x00, 0x00, 0x01],
            eth_src: [0x02, 0x00, 0x00, 0x00, 0x00, 0x02],
            src,
            dst,
            tos: 0,
            ip_id: 0x1c46,
            ttl: 64,
            dont_fragment: true,
            more_fragments: false,
            fragment_offset: 0,
            options: Vec::new(),
            l4,
            payload: Vec::new(),
        }
    }

    pub fn tcp(src: SocketAddrV4, dst: SocketAddrV4, flags: u8) -> Self {
        Self::new(
            *src.ip(),
            *dst.ip(),
            L4::Tcp {
                src_port: src.port(),
                dst_port: dst.port(),
                seq: 0x1234_5678,
                ack: if flags & tcp_flags::ACK != 0 {
                    0x0abc_def0
                } else {
                    0
                },
                flags,
                window: 64_240,
            },
        )
    }

    pub fn udp(src: SocketAddrV4, dst: SocketAddrV4) -> Self {
        Self::new(
            *src.ip(),
            *dst.ip(),
            L4::Udp {
                src_port: src.port(),
                dst_port: dst.port(),
                zero_checksum: false,
            },
        )
    }

    pub fn icmp_echo_request(src: Ipv4Addr, dst: Ipv4Addr, id: u16, seq: u16) -> Self {
        Self::icmp(src, dst, ICMP_ECHO_REQUEST, 0, echo_rest(id, seq))
    }

    pub fn icmp_echo_reply(src: Ipv4Addr, dst: Ipv4Addr, id: u16, seq: u16) -> Self {
        Self::icmp(src, dst, ICMP_ECHO_REPLY, 0, echo_rest(id, seq))
    }

    pub fn icmp(src: Ipv4Addr, dst: Ipv4Addr, ty: u8, code: u8, rest: [u8; 4]) -> Self {
        Self::new(src, dst, L4::Icmp { ty, code, rest })
    }

    /// An ICMP error (`ty` 3, 4, 5, 11 or 12) quoting `quoted`: its IPv4 header and
    /// the first `quote_len` bytes after it (the whole packet when None). `rest` is
    /// the 4 bytes after the checksum (the next-hop MTU for fragmentation needed).
    pub fn icmp_error(
        src: Ipv4Addr,
        dst: Ipv4Addr,
        (ty, code, rest): (u8, u8, [u8; 4]),
        quoted: &Packet,
        quote_len: Option<usize>,
    ) -> Self {
        Self::icmp(src, dst, ty, code, rest).payload(&quoted.quote(quote_len))
    }

    /// This packet as an ICMP error quotes it: the IPv4 header and `len` bytes after
    /// it (all of them when None), every checksum as the full packet had it.
    pub fn quote(&self, len: Option<usize>) -> Vec<u8> {
        let ip = &self.bytes()[ETH_LEN..];
        let header = self.ip_header_len();
        let end = len.map_or(ip.len(), |len| (header + len).min(ip.len()));
        ip[..end].to_vec()
    }

    pub fn with_ttl(mut self, ttl: u8) -> Self {
        self.ttl = ttl;
        self
    }

    pub fn with_ip_id(mut self, id: u16) -> Self {
        self.ip_id = id;
        self
    }

    /// The frame cut into IPv4 fragments of at most `chunk` payload bytes (rounded
    /// down to a multiple of 8), as a router or the sender would: each fragment has
    /// this packet's header with its own MF bit, offset, total length and checksum.
    /// The L4 checksum is the whole datagram's, computed before cutting.
    pub fn fragments(&self, chunk: usize) -> Vec<Vec<u8>> {
        let frame = self.bytes();
        let header = self.ip_header_len();
        let payload = &frame[ETH_LEN + header..];
        let chunk = chunk / 8 * 8;
        assert!(chunk > 0, "fragments need room for at least 8 bytes");
        let count = payload.len().div_ceil(chunk);
        (0..count)
            .map(|i| {
                let part = &payload[i * chunk..((i + 1) * chunk).min(payload.len())];
                let mut ip = frame[ETH_LEN..ETH_LEN + header].to_vec();
                let total = u16::try_from(header + part.len()).expect("fragment length fits");
                ip[2..4].copy_from_slice(&total.to_be_bytes());
                let more = i + 1 < count;
                let offset = u16::try_from(i * chunk / 8).expect("fragment offset fits");
                let flags = (u16::from(more) << 13) | offset;
                ip[6..8].copy_from_slice(&flags.to_be_bytes());
                ip[10..12].copy_from_slice(&[0, 0]);
                let check = internet_checksum(&ip);
                ip[10..12].copy_from_slice(&check.to_be_bytes());
                let mut out = frame[..ETH_LEN].to_vec();
                out.extend_from_slice(&ip);
                out.extend_from_slice(part);
                out
            })
            .collect()
    }

    pub fn other(src: Ipv4Addr, dst: Ipv4Addr, proto: u8) -> Self {
        Self::new(src, dst, L4::Other { proto })
    }

    pub fn payload(mut self, payload: &[u8]) -> Self {
        self.payload = payload.to_vec();
        self
    }

    pub fn options(mut self, options: &[u8]) -> Self {
        assert!(options.len() <= 40, "IPv4 options are at most 40 bytes");
        self.options = options.to_vec();
        self
    }

    pub fn fragment(mut self, more_fragments: bool, fragment_offset: u16) -> Self {
        self.dont_fragment = false;
        self.more_fragments = more_fragments;
        self.fragment_offset = fragment_offset;
        self
    }

    /// UDP only: send checksum 0, "no checksum".
    pub fn zero_udp_checksum(mut self) -> Self {
        match &mut self.l4 {
            L4::Udp { zero_checksum, .. } => *zero_checksum = true,
            other => panic!("zero_udp_checksum on a non-UDP packet: {other:?}"),
        }
        self
    }

    pub fn with_src(mut self, addr: SocketAddrV4) -> Self {
        self.src = *addr.ip();
        self.set_ports(Some(addr.port()), None);
        self
    }

    pub fn with_dst(mut self, addr: SocketAddrV4) -> Self {
        self.dst = *addr.ip();
        self.set_ports(None, Some(addr.port()));
        self
    }

    pub fn with_src_ip(mut self, addr: Ipv4Addr) -> Self {
        self.src = addr;
        self
    }

    pub fn with_dst_ip(mut self, addr: Ipv4Addr) -> Self {
        self.dst = addr;
        self
    }

    /// ICMP only: the echo identifier.
    pub fn with_icmp_id(mut self, id: u16) -> Self {
        match &mut self.l4 {
            L4::Icmp { rest, .. } => rest[..2].copy_from_slice(&id.to_be_bytes()),
            other => panic!("with_icmp_id on a non-ICMP packet: {other:?}"),
        }
        self
    }

    fn set_ports(&mut self, src: Option<u16>, dst: Option<u16>) {
        match &mut self.l4 {
            L4::Tcp {
                src_port, dst_port, ..
            }
            | L4::Udp {
                src_port, dst_port, ..
            } => {
                *src_port = src.unwrap_or(*src_port);
                *dst_port = dst.unwrap_or(*dst_port);
            }
            other => panic!("ports on a packet without ports: {other:?}"),
        }
    }

    pub fn proto(&self) -> u8 {
        match self.l4 {
            L4::Tcp { .. } => PROTO_TCP,
            L4::Udp { .. } => PROTO_UDP,
            L4::Icmp { .. } => PROTO_ICMP,
            L4::Other { proto } => proto,
        }
    }

    /// The IPv4 header length, options and their padding included.
    pub fn ip_header_len(&self) -> usize {
        IPV4_LEN + self.options.len().div_ceil(4) * 4
    }

    /// The frame's bytes, every checksum computed from scratch.
    pub fn bytes(&self) -> Vec<u8> {
        let segment = self.segment();
        let ihl = self.ip_header_len();
        let total_len =
            u16::try_from(ihl + segment.len()).expect("packet fits in an IPv4 total length");

        let mut ip = Vec::with_capacity(ihl);
        ip.push(0x40 | (ihl / 4) as u8);
        ip.push(self.tos);
        ip.extend_from_slice(&total_len.to_be_bytes());
        ip.extend_from_slice(&self.ip_id.to_be_bytes());
        let flags_frag = (u16::from(self.dont_fragment) << 14)
            | (u16::from(self.more_fragments) << 13)
            | (self.fragment_offset & 0x1fff);
        ip.extend_from_slice(&flags_frag.to_be_bytes());
        ip.push(self.ttl);
        ip.push(self.proto());
        ip.extend_from_slice(&[0, 0]);
        ip.extend_from_slice(&self.src.octets());
        ip.extend_from_slice(&self.dst.octets());
        ip.extend_from_slice(&self.options);
        ip.resize(ihl, 0);
        let check = internet_checksum(&ip);
        ip[10..12].copy_from_slice(&check.to_be_bytes());

        let mut frame = ethernet(self.eth_dst, self.eth_src, ETHERTYPE_IPV4);
        frame.extend_from_slice(&ip);
        frame.extend_from_slice(&segment);
        frame
    }

    /// The L4 header and payload, with the L4 checksum computed from scratch.
    fn segment(&self) -> Vec<u8> {
        let mut seg = Vec::new();
        match self.l4 {
            L4::Tcp {
                src_port,
                dst_port,
                seq,
                ack,
                flags,
                window,
            } => {
                seg.extend_from_slice(&src_port.to_be_bytes());
                seg.extend_from_slice(&dst_port.to_be_bytes());
                seg.extend_from_slice(&seq.to_be_bytes());
                seg.extend_from_slice(&ack.to_be_bytes());
                seg.push(((TCP_LEN / 4) as u8) << 4);
                seg.push(flags);
                seg.extend_from_slice(&window.to_be_bytes());
                seg.extend_from_slice(&[0, 0, 0, 0]); // checksum, urgent pointer
                seg.extend_from_slice(&self.payload);
                let check = self.pseudo_header_checksum(&seg);
                seg[16..18].copy_from_slice(&check.to_be_bytes());
            }
            L4::Udp {
                src_port,
                dst_port,
                zero_checksum,
            } => {
                let len = u16::try_from(UDP_LEN + self.payload.len()).expect("UDP length fits");
                seg.extend_from_slice(&src_port.to_be_bytes());
                seg.extend_from_slice(&dst_port.to_be_bytes());
                seg.extend_from_slice(&len.to_be_bytes());
                seg.extend_from_slice(&[0, 0]);
                seg.extend_from_slice(&self.payload);
                if !zero_checksum {
                    // RFC 768: a computed 0 is sent as all ones, 0 means "none".
                    let check = match self.pseudo_header_checksum(&seg) {
                        0 => 0xffff,
                        check => check,
                    };
                    seg[6..8].copy_from_slice(&check.to_be_bytes());
                }
            }
            L4::Icmp { ty, code, rest } => {
                seg.extend_from_slice(&[ty, code, 0, 0]);
                seg.extend_from_slice(&rest);
                seg.extend_from_slice(&self.payload);
                let check = internet_checksum(&seg);
                seg[2..4].copy_from_slice(&check.to_be_bytes());
            }
            L4::Other { .. } => seg.extend_from_slice(&self.payload),
        }
        seg
    }

    fn pseudo_header_checksum(&self, segment: &[u8]) -> u16 {
        let len = u16::try_from(segment.len()).expect("segment length fits");
        let mut buf = Vec::with_capacity(12 + segment.len());
        buf.extend_from_slice(&self.src.octets());
        buf.extend_from_slice(&self.dst.octets());
        buf.push(0);
        buf.push(self.proto());
        buf.extend_from_slice(&len.to_be_bytes());
        buf.extend_from_slice(segment);
        internet_checksum(&buf)
    }
}

fn echo_rest(id: u16, seq: u16) -> [u8; 4] {
    let [a, b] = id.to_be_bytes();
    let [c, d] = seq.to_be_bytes();
    [a, b, c, d]
}

fn ethernet(dst: [u8; 6], src: [u8; 6], ether_type: u16) -> Vec<u8> {
    let mut frame = Vec::with_capacity(128);
    frame.extend_from_slice(&dst);
    frame.extend_from_slice(&src);
    frame.extend_from_slice(&ether_type.to_be_bytes());
    frame
}

/// An ARP request "who has `target`? tell `sender`".
pub fn arp_request(sender: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
    let sender_mac = [0x02, 0x00, 0x00, 0x00, 0x00, 0x02];
    let mut frame = ethernet([0xff; 6], sender_mac, ETHERTYPE_ARP);
    frame.extend_from_slice(&[0x00, 0x01, 0x08, 0x00, 6, 4, 0x00, 0x01]);
    frame.extend_from_slice(&sender_mac);
    frame.extend_from_slice(&sender.octets());
    frame.extend_from_slice(&[0; 6]);
    frame.extend_from_slice(&target.octets());
    frame
}

/// An IPv6 UDP datagram (UDP checksum over the IPv6 pseudo-header).
pub fn ipv6_udp(
    src: [u8; 16],
    dst: [u8; 16],
    src_port: u16,
    dst_port: u16,
    payload: &[u8],
) -> Vec<u8> {
    let udp_len = u16::try_from(UDP_LEN + payload.len()).expect("UDP length fits");
    let mut udp = Vec::new();
    udp.extend_from_slice(&src_port.to_be_bytes());
    udp.extend_from_slice(&dst_port.to_be_bytes());
    udp.extend_from_slice(&udp_len.to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(payload);
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&src);
    pseudo.extend_from_slice(&dst);
    pseudo.extend_from_slice(&u32::from(udp_len).to_be_bytes());
    pseudo.extend_from_slice(&[0, 0, 0, PROTO_UDP]);
    pseudo.extend_from_slice(&udp);
    let check = match internet_checksum(&pseudo) {
        0 => 0xffff,
        check => check,
    };
    udp[6..8].copy_from_slice(&check.to_be_bytes());

    let mut frame = ethernet(
        [0x02, 0x00, 0x00, 0x00, 0x00, 0x01],
        [0x02, 0x00, 0x00, 0x00, 0x00, 0x02],
        ETHERTYPE_IPV6,
    );
    frame.extend_from_slice(&[0x60, 0, 0, 0]);
    frame.extend_from_slice(&udp_len.to_be_bytes());
    frame.extend_from_slice(&[PROTO_UDP, 64]);
    frame.extend_from_slice(&src);
    frame.extend_from_slice(&dst);
    frame.extend_from_slice(&udp);
    frame
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 1071's worked example: the sum of these words is 0xddf2.
    #[test]
    fn checksum_matches_rfc1071_example() {
        let bytes = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(internet_checksum(&bytes), !0xddf2);
    }

    #[test]
    fn checksum_pads_an_odd_byte() {
        assert_eq!(internet_checksum(&[0xab]), !0xab00);
    }

    /// A checksummed header sums to zero (all ones before the complement).
    #[test]
    fn every_checksum_verifies() {
        let a = SocketAddrV4::new(Ipv4Addr::new(10, 0, 1, 26), 40000);
        let b = SocketAddrV4::new(Ipv4Addr::new(10, 0, 1, 48), 8088);
        for pkt in [
            Packet::tcp(a, b, tcp_flags::SYN).payload(b"hello"),
            Packet::udp(a, b).payload(b"odd"),
            Packet::icmp_echo_request(*a.ip(), *b.ip(), 7, 1).payload(b"ping!"),
            Packet::tcp(a, b, tcp_flags::ACK).options(&[0x94, 0x04, 0, 0]),
        ] {
            let bytes = pkt.bytes();
            let ihl = pkt.ip_header_len();
            assert_eq!(
                internet_checksum(&bytes[ETH_LEN..ETH_LEN + ihl]),
                0,
                "{pkt:?}"
            );
            let seg = &bytes[ETH_LEN + ihl..];
            let verify = match pkt.l4 {
                L4::Icmp { .. } => internet_checksum(seg),
                _ => {
                    let mut pseudo = Vec::new();
                    pseudo.extend_from_slice(&pkt.src.octets());
                    pseudo.extend_from_slice(&pkt.dst.octets());
                    pseudo.extend_from_slice(&[0, pkt.proto()]);
                    pseudo.extend_from_slice(&(seg.len() as u16).to_be_bytes());
                    pseudo.extend_from_slice(seg);
                    internet_checksum(&pseudo)
                }
            };
            assert_eq!(verify, 0, "{pkt:?}");
        }
    }

    #[test]
    fn layout_of_a_syn() {
        let a = SocketAddrV4::new(Ipv4Addr::new(10, 0, 1, 26), 40000);
        let b = SocketAddrV4::new(Ipv4Addr::new(10, 0, 1, 48), 8088);
        let bytes = Packet::tcp(a, b, tcp_flags::SYN).bytes();
        assert_eq!(bytes.len(), ETH_LEN + IPV4_LEN + TCP_LEN);
        assert_eq!(&bytes[12..14], &[0x08, 0x00]);
        assert_eq!(bytes[14], 0x45);
        assert_eq!(&bytes[16..18], &40u16.to_be_bytes());
        assert_eq!(&bytes[26..30], &[10, 0, 1, 26]);
        assert_eq!(&bytes[30..34], &[10, 0, 1, 48]);
        assert_eq!(&bytes[34..36], &40000u16.to_be_bytes());
        assert_eq!(&bytes[36..38], &8088u16.to_be_bytes());
        assert_eq!(bytes[47], tcp_flags::SYN);
    }
}
