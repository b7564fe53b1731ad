//! Bounds-checked header parsing into a `Packet`: the tuple plus the offsets the
//! rewriters need. Nothing here keeps a packet pointer, because the TC checksum
//! helpers invalidate them.

use core::mem::{offset_of, size_of};

use netfast_common::{
    Counter, CtTuple, proto,
    tcp::{self, Segment},
};
use network_types::{
    eth::{EthHdr, EtherType},
    icmp::Icmpv4Hdr,
    ip::Ipv4Hdr,
    tcp::TcpHdr,
    udp::UdpHdr,
};

pub const IP_OFF: usize = EthHdr::LEN;
pub const IP_CSUM_OFF: usize = IP_OFF + offset_of!(Ipv4Hdr, check);
pub const IP_PROTO_OFF: usize = IP_OFF + offset_of!(Ipv4Hdr, proto);
pub const IP_SRC_OFF: usize = IP_OFF + offset_of!(Ipv4Hdr, src_addr);
pub const IP_DST_OFF: usize = IP_OFF + offset_of!(Ipv4Hdr, dst_addr);

/// Offsets inside an IPv4 header, for the one an ICMP error quotes.
pub const IPV4_CSUM: usize = offset_of!(Ipv4Hdr, check);
pub const IPV4_SRC: usize = offset_of!(Ipv4Hdr, src_addr);
pub const IPV4_DST: usize = offset_of!(Ipv4Hdr, dst_addr);

const ICMP_ECHO_REPLY: u8 = 0;
const ICMP_DEST_UNREACH: u8 = 3;
const ICMP_SOURCE_QUENCH: u8 = 4;
const ICMP_REDIRECT: u8 = 5;
const ICMP_ECHO_REQUEST: u8 = 8;
const ICMP_TIME_EXCEEDED: u8 = 11;
const ICMP_PARAMETER_PROBLEM: u8 = 12;
/// The echo identifier sits where the first 16 bits of the ICMP "rest of header" are.
const ICMP_ID_OFF: usize = offset_of!(Icmpv4Hdr, data);
const IP_MF: u16 = 0x2000;
const IP_FRAG_OFFSET: u16 = 0x1fff;

/// `Packet::fragment`: where the packet sits in its datagram (RFC 791).
pub const FRAG_NONE: u8 = 0;
/// Offset 0 with More Fragments: it carries the L4 header, and so the ports.
pub const FRAG_FIRST: u8 = 1;
/// Offset > 0: no L4 header; the ports come from the first fragment's record.
pub const FRAG_LATER: u8 = 2;

/// An IPv4 TCP, UDP or ICMP echo packet, a later fragment of any protocol, or an ICMP
/// error quoting one: what netfast can translate.
pub struct Packet {
    /// The tuple. Ports are 0 for a later fragment and for an ICMP error (whose
    /// translation follows from the packet it quotes).
    pub key: CtTuple,
    /// Offset of the L4 checksum, or 0 when there is none to fix (UDP checksum 0, or a
    /// later fragment: the checksum is in the first one).
    pub l4_csum_off: u8,
    /// The L4 checksum field as read (TCP, UDP, ICMP), raw bytes read natively.
    pub l4_csum: u16,
    /// Offsets of the ports, or 0 when the packet carries none (a later fragment).
    pub src_port_off: u8,
    pub dst_port_off: u8,
    /// IPv4 total length, for the byte counters, and the L4 length it implies.
    pub ip_len: u16,
    pub l4_len: u16,
    /// The IP identification field, raw.
    pub ip_id: u16,
    /// TCP: the segment's flags, sequence numbers and window; zero for other protocols.
    pub tcp: Segment,
    /// `FRAG_NONE`, `FRAG_FIRST` or `FRAG_LATER`.
    pub fragment: u8,
    /// Whether a miss may start a new flow: TCP, UDP, and of ICMP only an echo
    /// request, as nf_conntrack's `icmp_new` accepts (a reply without its request is
    /// invalid there, and untranslatable here).
    pub opens_flow: bool,
    /// For an ICMP error (destination unreachable, source quench, redirect, time
    /// exceeded, parameter problem): the offset of the IPv4 header it quotes, which
    /// `parse_quoted` reads on the error path only; 0 for any other packet.
    pub quote_off: u8,
}

/// The packet an ICMP error quotes: its IPv4 header and at least 8 bytes of its L4
/// header (RFC 792; RFC 1812 4.3.2.3 asks routers for more). Offsets are from the
/// frame's start; checksums are raw bytes read natively.
pub struct Quoted {
    /// The quoted packet's tuple, as it crossed the uplink.
    pub key: CtTuple,
    pub ip_off: u8,
    pub ip_csum: u16,
    /// The quoted L4 checksum, or offset 0 when there is none to fix: UDP checksum 0,
    /// or a TCP header cut short by the quote (nf_nat updates it only when the whole
    /// header is there, `tcp_manip_pkt`).
    pub l4_csum_off: u8,
    pub l4_csum: u16,
    /// The port fields (for echo, both the identifier).
    pub src_port_off: u8,
    pub dst_port_off: u8,
}

impl Packet {
    /// A packet of nothing: a place for a parse to write into.
    pub const EMPTY: Packet = Packet {
        key: CtTuple {
            src_addr: 0,
            dst_addr: 0,
            src_port: 0,
            dst_port: 0,
            proto: 0,
            _pad: [0; 3],
        },
        l4_csum_off: 0,
        l4_csum: 0,
        src_port_off: 0,
        dst_port_off: 0,
        ip_len: 0,
        l4_len: 0,
        ip_id: 0,
        tcp: Segment {
            flags: 0,
            seq: 0,
            seq_end: 0,
            ack: 0,
            window: 0,
        },
        fragment: FRAG_NONE,
        opens_flow: false,
        quote_off: 0,
    };

    /// Whether the address change must be folded into the L4 checksum (the
    /// pseudo-header): TCP and UDP yes, ICMP no.
    #[inline(always)]
    pub fn has_pseudo_header(&self) -> bool {
        self.key.proto != proto::ICMP
    }

    /// Whether the TCP/UDP checksum field holds only the pseudo-header sum, which is
    /// what a local sender leaves there under CHECKSUM_PARTIAL (`__tcp_v4_send_check`,
    /// `udp4_hwcsum`): the device, or a software fallback, adds the rest later. A full
    /// checksum equals it with odds of 1 in 65536, and then the answer is a harmless
    /// "yes" (the frame goes to tc, which handles both kinds).
    #[inline(always)]
    pub fn l4_csum_is_partial(&self) -> bool {
        if self.key.proto == proto::ICMP || self.l4_csum_off == 0 || self.fragment != FRAG_NONE {
            return false;
        }
        let pseudo = crate::csum::pseudo_header_sum(
            self.key.src_addr,
            self.key.dst_addr,
            self.key.proto,
            self.l4_len,
        );
        self.l4_csum == pseudo
    }
}

/// Why a packet was not parsed into a `Packet`, and its addresses (network byte
/// order; 0 when parsing stopped before them), so the caller can refuse to leak a
/// private source address, or to pass a packet routed into the subnet, for what it
/// cannot translate.
pub struct Unparsed {
    pub reason: Counter,
    pub src_addr: u32,
    pub dst_addr: u32,
}

/// Returns a pointer to a `T` at `offset`, or None when the packet is too short.
#[inline(always)]
pub fn ptr_at<T>(data: usize, data_end: usize, offset: usize) -> Option<*mut T> {
    // The verifier only allows packet access after this exact comparison.
    if data + offset + size_of::<T>() > data_end {
        return None;
    }
    Some((data + offset) as *mut T)
}

#[inline(always)]
fn get<T: Copy>(data: usize, data_end: usize, offset: usize) -> Option<T> {
    // SAFETY: bounds checked by `ptr_at`; packet memory has no alignment guarantee.
    ptr_at::<T>(data, data_end, offset).map(|ptr| unsafe { ptr.read_unaligned() })
}

#[inline(always)]
fn read<T: Copy>(data: usize, data_end: usize, offset: usize) -> Result<T, Unparsed> {
    get(data, data_end, offset).ok_or(Unparsed {
        reason: Counter::DropTruncated,
        src_addr: 0,
        dst_addr: 0,
    })
}

/// The ICMP types whose body quotes the offending packet (RFC 792), the ones
/// nf_conntrack relates to a flow (`icmp_is_err`).
#[inline(always)]
fn is_icmp_error(icmp_type: u8) -> bool {
    matches!(
        icmp_type,
        ICMP_DEST_UNREACH
            | ICMP_SOURCE_QUENCH
            | ICMP_REDIRECT
            | ICMP_TIME_EXCEEDED
            | ICMP_PARAMETER_PROBLEM
    )
}

#[inline(always)]
pub fn parse(data: usize, data_end: usize) -> Result<Packet, Unparsed> {
    let ether_type: u16 = read(data, data_end, offset_of!(EthHdr, ether_type))?;
    if ether_type != EtherType::Ipv4 as u16 {
        return Err(Unparsed {
            reason: Counter::PassNotIpv4,
            src_addr: 0,
            dst_addr: 0,
        });
    }
    let vihl: u8 = read(data, data_end, IP_OFF)?;
    let ip_len = u16::from_be_bytes(read(data, data_end, IP_OFF + offset_of!(Ipv4Hdr, tot_len))?);
    let ip_id: u16 = read(data, data_end, IP_OFF + offset_of!(Ipv4Hdr, id))?;
    let frags = u16::from_be_bytes(read(data, data_end, IP_OFF + offset_of!(Ipv4Hdr, frags))?);
    let ip_proto: u8 = read(data, data_end, IP_PROTO_OFF)?;
    let src_addr: u32 = read(data, data_end, IP_SRC_OFF)?;
    let dst_addr: u32 = read(data, data_end, IP_DST_OFF)?;
    let unparsed = |reason| Unparsed {
        reason,
        src_addr,
        dst_addr,
    };

    // IHL counts 32-bit words; options are skipped, not refused. The mask keeps the
    // offset provably below 15 * 4 for the verifier.
    let ihl_bytes = usize::from(vihl & 0x0f) * 4;
    if ihl_bytes < Ipv4Hdr::LEN || vihl >> 4 != 4 {
        return Err(unparsed(Counter::DropTruncated));
    }
    let fragment = if frags & IP_FRAG_OFFSET != 0 {
        FRAG_LATER
    } else if frags & IP_MF != 0 {
        FRAG_FIRST
    } else {
        FRAG_NONE
    };
    let l4 = IP_OFF + ihl_bytes;
    let truncated = |_| unparsed(Counter::DropTruncated);

    let mut pkt = Packet {
        key: CtTuple {
            src_addr,
            dst_addr,
            proto: ip_proto,
            ..CtTuple::default()
        },
        l4_csum_off: 0,
        l4_csum: 0,
        src_port_off: 0,
        dst_port_off: 0,
        ip_len,
        l4_len: ip_len.saturating_sub(ihl_bytes as u16),
        ip_id,
        tcp: Segment::default(),
        fragment,
        opens_flow: ip_proto != proto::ICMP,
        quote_off: 0,
    };
    // The whole IPv4 header, options included, must be there: a later fragment has
    // nothing after it that parsing would read.
    if data + l4 > data_end {
        return Err(unparsed(Counter::DropTruncated));
    }
    if fragment == FRAG_LATER {
        return Ok(pkt);
    }
    // The L4 header must end inside the IP packet, not in link-layer padding after it:
    // a first fragment too small for it (RFC 1858) would otherwise have its checksum
    // "updated" in the padding while the real one travels in the next fragment.
    // BIG TCP sends IPv4 GSO packets over 64 KiB with a total length of 0: no bound.
    let ip_end = if ip_len == 0 {
        usize::MAX
    } else {
        IP_OFF + usize::from(ip_len)
    };
    let l4_header = match ip_proto {
        proto::TCP => TcpHdr::LEN,
        proto::UDP | proto::ICMP => UdpHdr::LEN,
        _ => 0,
    };
    if l4 + l4_header > ip_end {
        return Err(unparsed(Counter::DropTruncated));
    }
    match ip_proto {
        proto::TCP => {
            // Read as bytes: one bounds check covers ports, flags and checksum, and
            // byte 13 (CWR..FIN) sits inside TcpHdr's bitfield.
            let hdr: [u8; TcpHdr::LEN] = read(data, data_end, l4).map_err(truncated)?;
            pkt.key.src_port = u16::from_ne_bytes([hdr[0], hdr[1]]);
            pkt.key.dst_port = u16::from_ne_bytes([hdr[2], hdr[3]]);
            let flags = hdr[13];
            // Data offset in 32-bit words; what follows the header is payload. SYN and
            // FIN take one sequence number each.
            let header_len = u32::from(hdr[12] >> 4) * 4;
            let payload = u32::from(pkt.l4_len).saturating_sub(header_len);
            let seq = u32::from_be_bytes([hdr[4], hdr[5], hdr[6], hdr[7]]);
            pkt.tcp = Segment {
                flags,
                seq,
                seq_end: seq
                    .wrapping_add(payload)
                    .wrapping_add(u32::from(flags & tcp::flags::SYN != 0))
                    .wrapping_add(u32::from(flags & tcp::flags::FIN != 0)),
                ack: u32::from_be_bytes([hdr[8], hdr[9], hdr[10], hdr[11]]),
                window: u16::from_be_bytes([hdr[14], hdr[15]]),
            };
            pkt.l4_csum = u16::from_ne_bytes([hdr[16], hdr[17]]);
            pkt.l4_csum_off = (l4 + offset_of!(TcpHdr, check)) as u8;
            pkt.src_port_off = (l4 + offset_of!(TcpHdr, source)) as u8;
            pkt.dst_port_off = (l4 + offset_of!(TcpHdr, dest)) as u8;
        }
        proto::UDP => {
            let hdr: UdpHdr = read(data, data_end, l4).map_err(truncated)?;
            pkt.key.src_port = u16::from_ne_bytes(hdr.src);
            pkt.key.dst_port = u16::from_ne_bytes(hdr.dst);
            // A zero UDP checksum means "none" and must stay zero.
            if hdr.check != [0, 0] {
                pkt.l4_csum = u16::from_ne_bytes(hdr.check);
                pkt.l4_csum_off = (l4 + offset_of!(UdpHdr, check)) as u8;
            }
            pkt.src_port_off = (l4 + offset_of!(UdpHdr, src)) as u8;
            pkt.dst_port_off = (l4 + offset_of!(UdpHdr, dst)) as u8;
        }
        proto::ICMP => {
            let hdr: Icmpv4Hdr = read(data, data_end, l4).map_err(truncated)?;
            pkt.l4_csum = u16::from_ne_bytes(hdr.check);
            pkt.l4_csum_off = (l4 + offset_of!(Icmpv4Hdr, check)) as u8;
            let id = u16::from_ne_bytes([hdr.data[0], hdr.data[1]]);
            let id_off = (l4 + ICMP_ID_OFF) as u8;
            // The identifier stands in for the sender's port in a request and for the
            // receiver's in a reply; the other side has no port to rewrite.
            match hdr.type_ {
                ICMP_ECHO_REQUEST => {
                    pkt.key.src_port = id;
                    pkt.src_port_off = id_off;
                    pkt.opens_flow = true;
                }
                ICMP_ECHO_REPLY => {
                    pkt.key.dst_port = id;
                    pkt.dst_port_off = id_off;
                }
                // An error is at most 576 bytes (RFC 1812 4.3.2.3), never fragmented
                // by a conforming sender: a fragmented one is left alone.
                icmp_type if is_icmp_error(icmp_type) && fragment == FRAG_NONE => {
                    pkt.quote_off = (l4 + Icmpv4Hdr::LEN) as u8;
                    return Ok(pkt);
                }
                icmp_type if is_icmp_error(icmp_type) => {
                    return Err(unparsed(Counter::PassIcmpErrorUntracked));
                }
                _ => return Err(unparsed(Counter::PassIcmpOther)),
            }
        }
        _ => return Err(unparsed(Counter::PassOtherProtocol)),
    }
    Ok(pkt)
}

/// The packet the ICMP error `pkt` quotes, or None when netfast could not have
/// translated it: a quote too short for its IPv4 header and 8 L4 bytes, a later
/// fragment (no ports), a protocol other than TCP, UDP or ICMP echo (an error about an
/// error is never sent, RFC 1122 3.2.2). The quote ends where the error's IPv4 total
/// length says, not where the frame does (it may carry link-layer padding).
#[inline(always)]
pub fn parse_quoted(data: usize, data_end: usize, pkt: &Packet) -> Option<Quoted> {
    let ip_off = usize::from(pkt.quote_off);
    let ip_end = IP_OFF + usize::from(pkt.ip_len);
    // Whole headers in one read each: LLVM would otherwise fold the bounds checks of
    // fields at a variable offset into one, which the verifier cannot follow.
    let ip: [u8; Ipv4Hdr::LEN] = get(data, data_end, ip_off)?;
    let vihl = ip[0];
    let frags = u16::from_be_bytes([ip[6], ip[7]]);
    let ip_proto = ip[9];
    // Masked like the outer IHL, so the verifier sees a bounded offset.
    let ihl_bytes = usize::from(vihl & 0x0f) * 4;
    if ihl_bytes < Ipv4Hdr::LEN || vihl >> 4 != 4 || frags & IP_FRAG_OFFSET != 0 {
        return None;
    }
    let l4 = ip_off + ihl_bytes;
    if l4 + 8 > ip_end {
        return None;
    }
    let mut quoted = Quoted {
        key: CtTuple {
            src_addr: u32::from_ne_bytes([ip[12], ip[13], ip[14], ip[15]]),
            dst_addr: u32::from_ne_bytes([ip[16], ip[17], ip[18], ip[19]]),
            proto: ip_proto,
            ..CtTuple::default()
        },
        ip_off: ip_off as u8,
        ip_csum: u16::from_ne_bytes([ip[10], ip[11]]),
        l4_csum_off: 0,
        l4_csum: 0,
        src_port_off: l4 as u8,
        dst_port_off: (l4 + 2) as u8,
    };
    let first8: [u8; 8] = match ip_proto {
        proto::TCP => match get::<[u8; TcpHdr::LEN]>(data, data_end, l4) {
            Some(hdr) if l4 + TcpHdr::LEN <= ip_end => {
                quoted.l4_csum = u16::from_ne_bytes([hdr[16], hdr[17]]);
                quoted.l4_csum_off = (l4 + offset_of!(TcpHdr, check)) as u8;
                [
                    hdr[0], hdr[1], hdr[2], hdr[3], hdr[4], hdr[5], hdr[6], hdr[7],
                ]
            }
            _ => get(data, data_end, l4)?,
        },
        proto::UDP | proto::ICMP => get(data, data_end, l4)?,
        _ => return None,
    };
    match ip_proto {
        proto::ICMP => {
            let id = u16::from_ne_bytes([first8[4], first8[5]]);
            match first8[0] {
                ICMP_ECHO_REQUEST => quoted.key.src_port = id,
                ICMP_ECHO_REPLY => quoted.key.dst_port = id,
                _ => return None,
            }
            quoted.l4_csum = u16::from_ne_bytes([first8[2], first8[3]]);
            quoted.l4_csum_off = (l4 + offset_of!(Icmpv4Hdr, check)) as u8;
            quoted.src_port_off = (l4 + ICMP_ID_OFF) as u8;
            quoted.dst_port_off = (l4 + ICMP_ID_OFF) as u8;
        }
        _ => {
            quoted.key.src_port = u16::from_ne_bytes([first8[0], first8[1]]);
            quoted.key.dst_port = u16::from_ne_bytes([first8[2], first8[3]]);
            let udp_check = u16::from_ne_bytes([first8[6], first8[7]]);
            if ip_proto == proto::UDP && udp_check != 0 {
                quoted.l4_csum = udp_check;
                quoted.l4_csum_off = (l4 + offset_of!(UdpHdr, check)) as u8;
            }
        }
    }
    Some(quoted)
}
