//! Bounds-checked header parsing into a `Packet`: the tuple plus the offsets the
//! rewriters need. Nothing here keeps a packet pointer, because the TC checksum
//! helpers invalidate them.

use core::mem::{offset_of, size_of};

use netfast_common::{Counter, FlowKey, proto};
use network_types::{
    eth::{EthHdr, EtherType},
    icmp::Icmpv4Hdr,
    ip::Ipv4Hdr,
    tcp::TcpHdr,
    udp::UdpHdr,
};

pub const IP_OFF: usize = EthHdr::LEN;
pub const IP_CSUM_OFF: usize = IP_OFF + offset_of!(Ipv4Hdr, check);
pub const IP_SRC_OFF: usize = IP_OFF + offset_of!(Ipv4Hdr, src_addr);
pub const IP_DST_OFF: usize = IP_OFF + offset_of!(Ipv4Hdr, dst_addr);

const ICMP_ECHO_REPLY: u8 = 0;
const ICMP_ECHO_REQUEST: u8 = 8;
/// The echo identifier sits where the first 16 bits of the ICMP "rest of header" are.
const ICMP_ID_OFF: usize = offset_of!(Icmpv4Hdr, data);
const IP_MF: u16 = 0x2000;
const IP_FRAG_OFFSET: u16 = 0x1fff;

/// An IPv4 TCP, UDP or ICMP echo packet netfast can translate.
pub struct Packet {
    pub key: FlowKey,
    /// Offset of the L4 checksum, or 0 when there is none to fix (UDP checksum 0).
    pub l4_csum_off: usize,
    pub src_port_off: usize,
    pub dst_port_off: usize,
    /// IPv4 total length, for the byte counters.
    pub ip_len: u16,
    pub tcp_flags: u8,
}

impl Packet {
    /// Whether the address change must be folded into the L4 checksum (the
    /// pseudo-header): TCP and UDP yes, ICMP no.
    #[inline(always)]
    pub fn has_pseudo_header(&self) -> bool {
        self.key.proto != proto::ICMP
    }
}

/// Why a packet was not parsed into a `Packet`, and its source, so the caller can
/// refuse to leak a private address for what it cannot translate.
pub struct Unparsed {
    pub reason: Counter,
    pub src_addr: u32,
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
fn read<T: Copy>(data: usize, data_end: usize, offset: usize) -> Result<T, Unparsed> {
    match ptr_at::<T>(data, data_end, offset) {
        // SAFETY: bounds checked above; packet memory has no alignment guarantee.
        Some(ptr) => Ok(unsafe { ptr.read_unaligned() }),
        None => Err(Unparsed {
            reason: Counter::DropTruncated,
            src_addr: 0,
        }),
    }
}

#[inline(always)]
pub fn parse(data: usize, data_end: usize) -> Result<Packet, Unparsed> {
    let ether_type: u16 = read(data, data_end, offset_of!(EthHdr, ether_type))?;
    if ether_type != EtherType::Ipv4 as u16 {
        return Err(Unparsed {
            reason: Counter::PassNotIpv4,
            src_addr: 0,
        });
    }
    let vihl: u8 = read(data, data_end, IP_OFF)?;
    let ip_len = u16::from_be_bytes(read(data, data_end, IP_OFF + offset_of!(Ipv4Hdr, tot_len))?);
    let frags = u16::from_be_bytes(read(data, data_end, IP_OFF + offset_of!(Ipv4Hdr, frags))?);
    let ip_proto: u8 = read(data, data_end, IP_OFF + offset_of!(Ipv4Hdr, proto))?;
    let src_addr: u32 = read(data, data_end, IP_SRC_OFF)?;
    let dst_addr: u32 = read(data, data_end, IP_DST_OFF)?;
    let unparsed = |reason| Unparsed { reason, src_addr };

    // IHL counts 32-bit words; options are skipped, not refused. The mask keeps the
    // offset provably below 15 * 4 for the verifier.
    let ihl_bytes = usize::from(vihl & 0x0f) * 4;
    if ihl_bytes < Ipv4Hdr::LEN || vihl >> 4 != 4 {
        return Err(unparsed(Counter::DropTruncated));
    }
    if frags & (IP_MF | IP_FRAG_OFFSET) != 0 {
        return Err(unparsed(Counter::PassFragment));
    }
    let l4 = IP_OFF + ihl_bytes;
    let truncated = |_| unparsed(Counter::DropTruncated);

    let mut key = FlowKey {
        src_addr,
        dst_addr,
        proto: ip_proto,
        ..FlowKey::default()
    };
    let packet = |key, l4_csum_off, src_port_off, dst_port_off, tcp_flags| Packet {
        key,
        l4_csum_off,
        src_port_off,
        dst_port_off,
        ip_len,
        tcp_flags,
    };
    match ip_proto {
        proto::TCP => {
            // Read as bytes: one bounds check covers ports and flags, and byte 13
            // (CWR..FIN) sits inside TcpHdr's bitfield.
            let hdr: [u8; TcpHdr::LEN] = read(data, data_end, l4).map_err(truncated)?;
            key.src_port = u16::from_ne_bytes([hdr[0], hdr[1]]);
            key.dst_port = u16::from_ne_bytes([hdr[2], hdr[3]]);
            let flags = hdr[13];
            Ok(packet(
                key,
                l4 + offset_of!(TcpHdr, check),
                l4 + offset_of!(TcpHdr, source),
                l4 + offset_of!(TcpHdr, dest),
                flags,
            ))
        }
        proto::UDP => {
            let hdr: UdpHdr = read(data, data_end, l4).map_err(truncated)?;
            key.src_port = u16::from_ne_bytes(hdr.src);
            key.dst_port = u16::from_ne_bytes(hdr.dst);
            // A zero UDP checksum means "none" and must stay zero.
            let csum_off = if hdr.check == [0, 0] {
                0
            } else {
                l4 + offset_of!(UdpHdr, check)
            };
            Ok(packet(
                key,
                csum_off,
                l4 + offset_of!(UdpHdr, src),
                l4 + offset_of!(UdpHdr, dst),
                0,
            ))
        }
        proto::ICMP => {
            let hdr: Icmpv4Hdr = read(data, data_end, l4).map_err(truncated)?;
            let id = u16::from_ne_bytes([hdr.data[0], hdr.data[1]]);
            match hdr.type_ {
                ICMP_ECHO_REQUEST => key.src_port = id,
                ICMP_ECHO_REPLY => key.dst_port = id,
                _ => return Err(unparsed(Counter::PassIcmpOther)),
            }
            let id_off = l4 + ICMP_ID_OFF;
            Ok(packet(
                key,
                l4 + offset_of!(Icmpv4Hdr, check),
                id_off,
                id_off,
                0,
            ))
        }
        _ => Err(unparsed(Counter::PassOtherProtocol)),
    }
}
