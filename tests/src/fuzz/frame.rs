//! Reads Ethernet + IPv4 frames as raw bytes, whatever state a mutation left them in,
//! and verifies or recomputes their checksums from scratch with
//! [`internet_checksum`], never incrementally, so the checker shares no arithmetic
//! with the datapath it checks.

use std::ops::Range;

use crate::packet::{
    ETH_LEN, ETHERTYPE_IPV4, ICMP_LEN, IPV4_LEN, PROTO_ICMP, PROTO_TCP, PROTO_UDP, TCP_LEN,
    UDP_LEN, internet_checksum,
};

/// The ICMP types whose message quotes the packet that caused them (RFC 792, 5508):
/// destination unreachable, source quench, redirect, time exceeded, parameter problem.
pub const ICMP_ERROR_TYPES: [u8; 5] = [3, 4, 5, 11, 12];

const IP_MF: u16 = 0x2000;
const IP_OFFSET: u16 = 0x1fff;

/// Offsets of the L4 checksum field inside the L4 header, per protocol.
const TCP_CSUM: usize = 16;
const UDP_CSUM: usize = 6;
const ICMP_CSUM: usize = 2;

/// An IPv4 header found at `start` (14 for the frame's own header, later for a
/// quoted one), read without trusting any of its fields.
#[derive(Clone, Copy, Debug)]
pub struct Ipv4 {
    /// Where the IPv4 header starts in the byte slice it was read from.
    pub start: usize,
    /// Header length in bytes (IHL * 4), at least 20.
    pub ihl: usize,
    /// The total length field.
    pub tot_len: usize,
    pub proto: u8,
    pub src: [u8; 4],
    pub dst: [u8; 4],
    pub more_fragments: bool,
    pub frag_offset: u16,
    /// Where the L4 header starts, and where the datagram's bytes end: the total
    /// length, or the end of the slice if that comes first.
    pub l4: usize,
    pub end: usize,
    /// Whether the total length fits the header and the bytes present.
    pub lengths_ok: bool,
}

impl Ipv4 {
    pub fn is_fragment(&self) -> bool {
        self.more_fragments || self.frag_offset != 0
    }

    /// A first fragment: MF set, offset 0; it carries the L4 header of the datagram.
    pub fn is_first_fragment(&self) -> bool {
        self.more_fragments && self.frag_offset == 0
    }

    /// A non-first fragment: no L4 header, only payload.
    pub fn is_later_fragment(&self) -> bool {
        self.frag_offset != 0
    }

    pub fn header<'a>(&self, bytes: &'a [u8]) -> &'a [u8] {
        &bytes[self.start..self.start + self.ihl]
    }

    /// The L4 bytes present, bounded by the total length.
    pub fn segment<'a>(&self, bytes: &'a [u8]) -> &'a [u8] {
        &bytes[self.l4.min(self.end)..self.end]
    }
}

/// The frame's IPv4 header, if it has one whose fixed part and options are present:
/// EtherType 0x0800, version 4, IHL at least 5.
pub fn frame_ipv4(frame: &[u8]) -> Option<Ipv4> {
    if frame.len() < ETH_LEN + IPV4_LEN {
        return None;
    }
    if u16::from_be_bytes([frame[12], frame[13]]) != ETHERTYPE_IPV4 {
        return None;
    }
    ipv4_at(frame, ETH_LEN)
}

/// An IPv4 header at `start` of `bytes`, if version 4, IHL ≥ 5 and the whole header is
/// present.
pub fn ipv4_at(bytes: &[u8], start: usize) -> Option<Ipv4> {
    let hdr = bytes.get(start..start + IPV4_LEN)?;
    let ihl = usize::from(hdr[0] & 0x0f) * 4;
    if hdr[0] >> 4 != 4 || ihl < IPV4_LEN || bytes.len() < start + ihl {
        return None;
    }
    let tot_len = usize::from(u16::from_be_bytes([hdr[2], hdr[3]]));
    let frags = u16::from_be_bytes([hdr[6], hdr[7]]);
    let lengths_ok = tot_len >= ihl && start + tot_len <= bytes.len();
    Some(Ipv4 {
        start,
        ihl,
        tot_len,
        proto: hdr[9],
        src: [hdr[12], hdr[13], hdr[14], hdr[15]],
        dst: [hdr[16], hdr[17], hdr[18], hdr[19]],
        more_fragments: frags & IP_MF != 0,
        frag_offset: frags & IP_OFFSET,
        l4: start + ihl,
        end: if lengths_ok {
            start + tot_len
        } else {
            bytes.len()
        },
        lengths_ok,
    })
}

/// Whether the IPv4 header checksum verifies.
pub fn ip_header_ok(bytes: &[u8], ip: &Ipv4) -> bool {
    internet_checksum(ip.header(bytes)) == 0
}

/// The bytes the L4 checksum covers in a whole (unfragmented) datagram, and the
/// length the pseudo-header carries; None when they are not all present, or the
/// headers' lengths contradict each other, so no checksum can be verified.
fn l4_coverage<'a>(bytes: &'a [u8], ip: &Ipv4) -> Option<&'a [u8]> {
    if !ip.lengths_ok || ip.is_fragment() {
        return None;
    }
    let seg = ip.segment(bytes);
    match ip.proto {
        PROTO_TCP if seg.len() >= TCP_LEN => Some(seg),
        PROTO_UDP if seg.len() >= UDP_LEN => {
            // UDP covers its own length, which may stop short of the IP payload.
            let udp_len = usize::from(u16::from_be_bytes([seg[4], seg[5]]));
            (UDP_LEN..=seg.len())
                .contains(&udp_len)
                .then(|| &seg[..udp_len])
        }
        PROTO_ICMP if seg.len() >= ICMP_LEN => Some(seg),
        _ => None,
    }
}

/// The one's-complement sum buffer of the TCP/UDP pseudo-header and `segment`.
fn with_pseudo_header(ip: &Ipv4, segment: &[u8]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(12 + segment.len());
    buf.extend_from_slice(&ip.src);
    buf.extend_from_slice(&ip.dst);
    buf.extend_from_slice(&[0, ip.proto]);
    buf.extend_from_slice(&(segment.len() as u16).to_be_bytes());
    buf.extend_from_slice(segment);
    buf
}

/// Whether the L4 checksum verifies: TCP and UDP over the pseudo-header, ICMP over its
/// message; a UDP checksum of 0 ("none") counts as valid. None when it cannot be
/// checked (a fragment, inconsistent lengths, a header cut short, another protocol).
pub fn l4_ok(bytes: &[u8], ip: &Ipv4) -> Option<bool> {
    let seg = l4_coverage(bytes, ip)?;
    Some(match ip.proto {
        PROTO_ICMP => internet_checksum(seg) == 0,
        PROTO_UDP if seg[UDP_CSUM..UDP_CSUM + 2] == [0, 0] => true,
        _ => internet_checksum(&with_pseudo_header(ip, seg)) == 0,
    })
}

/// The L4 checksum field's offset in `bytes`, if that field is present.
pub fn l4_csum_offset(bytes: &[u8], ip: &Ipv4) -> Option<usize> {
    let field = match ip.proto {
        PROTO_TCP => TCP_CSUM,
        PROTO_UDP => UDP_CSUM,
        PROTO_ICMP => ICMP_CSUM,
        _ => return None,
    };
    let at = ip.l4 + field;
    (!ip.is_later_fragment() && at + 2 <= ip.end.min(bytes.len())).then_some(at)
}

/// What a CHECKSUM_PARTIAL sender leaves in the TCP/UDP checksum field: the folded
/// pseudo-header sum, not complemented, over the L4 length `l4_len`.
pub fn partial_csum(ip: &Ipv4, l4_len: usize) -> u16 {
    let mut pseudo = Vec::with_capacity(12);
    pseudo.extend_from_slice(&ip.src);
    pseudo.extend_from_slice(&ip.dst);
    pseudo.extend_from_slice(&[0, ip.proto]);
    pseudo.extend_from_slice(&(l4_len as u16).to_be_bytes());
    !internet_checksum(&pseudo)
}

/// Whether the frame is a TCP/UDP datagram whose checksum field holds only the
/// pseudo-header sum and does not verify as a full checksum: unambiguously partial.
pub fn is_partial_csum(bytes: &[u8], ip: &Ipv4) -> bool {
    if ip.proto != PROTO_TCP && ip.proto != PROTO_UDP {
        return false;
    }
    let (Some(seg), Some(at)) = (l4_coverage(bytes, ip), l4_csum_offset(bytes, ip)) else {
        return false;
    };
    let field = u16::from_be_bytes([bytes[at], bytes[at + 1]]);
    field != 0 && field == partial_csum(ip, seg.len()) && l4_ok(bytes, ip) == Some(false)
}

/// The one's-complement sum, modulo 0xffff, over the TCP/UDP pseudo-header addresses
/// and protocol and the L4 bytes present. A correct NAT rewrite of a fragment keeps
/// it: whatever it changes in addresses and ports it cancels in the checksum field,
/// which covers bytes this frame does not carry.
pub fn l4_sum_mod(bytes: &[u8], ip: &Ipv4) -> u64 {
    let mut buf = Vec::new();
    if ip.proto != PROTO_ICMP {
        buf.extend_from_slice(&ip.src);
        buf.extend_from_slice(&ip.dst);
    }
    buf.extend_from_slice(ip.segment(bytes));
    let words: u64 = buf
        .chunks(2)
        .map(|pair| u64::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)])))
        .sum();
    words % 0xffff
}

/// An ICMP error's quoted packet: where it starts in the frame.
pub fn icmp_error_quote(bytes: &[u8], ip: &Ipv4) -> Option<usize> {
    if ip.proto != PROTO_ICMP || ip.is_later_fragment() {
        return None;
    }
    let ty = *bytes.get(ip.l4)?;
    let quote = ip.l4 + ICMP_LEN;
    (ICMP_ERROR_TYPES.contains(&ty) && quote <= ip.end).then_some(quote)
}

/// The quoted IPv4 header of an ICMP error, when all of it is inside the message.
pub fn quoted_ipv4(bytes: &[u8], ip: &Ipv4) -> Option<Ipv4> {
    let start = icmp_error_quote(bytes, ip)?;
    let quoted = ipv4_at(&bytes[..ip.end], start)?;
    Some(quoted)
}

/// The quoted UDP checksum field's offset, when the quote is UDP and carries it.
pub fn quoted_udp_csum(bytes: &[u8], outer: &Ipv4) -> Option<usize> {
    let quoted = quoted_ipv4(bytes, outer)?;
    let at = quoted.l4 + UDP_CSUM;
    (quoted.proto == PROTO_UDP && !quoted.is_later_fragment() && at + 2 <= outer.end).then_some(at)
}

/// Recomputes every checksum the frame's bytes allow, innermost first: the quoted IPv4
/// header of an ICMP error, the L4 checksum (a UDP 0 stays 0), the IPv4 header. What
/// cannot be computed (a fragment's L4, contradicting lengths) is left as it is.
pub fn fix_checksums(frame: &mut [u8]) {
    let Some(ip) = frame_ipv4(frame) else {
        return;
    };
    if let Some(quoted) = quoted_ipv4(frame, &ip) {
        write_csum(
            frame,
            quoted.start + 10,
            quoted.start..quoted.start + quoted.ihl,
        );
    }
    fix_l4(frame, &ip);
    write_csum(frame, ip.start + 10, ip.start..ip.start + ip.ihl);
}

fn fix_l4(frame: &mut [u8], ip: &Ipv4) {
    let Some(seg) = l4_coverage(frame, ip) else {
        return;
    };
    let range = ip.l4..ip.l4 + seg.len();
    match ip.proto {
        PROTO_ICMP => write_csum(frame, ip.l4 + ICMP_CSUM, range),
        PROTO_UDP if frame[ip.l4 + UDP_CSUM..ip.l4 + UDP_CSUM + 2] == [0, 0] => {}
        proto => {
            let at = ip.l4
                + if proto == PROTO_TCP {
                    TCP_CSUM
                } else {
                    UDP_CSUM
                };
            frame[at..at + 2].fill(0);
            let mut check = internet_checksum(&with_pseudo_header(ip, &frame[range]));
            // RFC 768: a computed 0 is sent as all ones, 0 means "none".
            if proto == PROTO_UDP && check == 0 {
                check = 0xffff;
            }
            frame[at..at + 2].copy_from_slice(&check.to_be_bytes());
        }
    }
}

/// Zeroes the field at `at`, then writes the checksum over `covered` into it.
fn write_csum(bytes: &mut [u8], at: usize, covered: Range<usize>) {
    bytes[at..at + 2].fill(0);
    let check = internet_checksum(&bytes[covered]);
    bytes[at..at + 2].copy_from_slice(&check.to_be_bytes());
}

/// The byte ranges a NAT rewrite of this frame may write: addresses, ports or echo
/// identifier, and the checksums covering them, in the outer headers and, for an ICMP
/// error, in the quoted ones. Everything else must come out as it went in.
///
/// The headers are placed as the datapath places them, by IHL alone, up to the end
/// of the frame: it does not bound them by the IPv4 total length (see
/// [`past_total_length`]).
pub fn rewritable(bytes: &[u8], ip: &Ipv4) -> Vec<Range<usize>> {
    let ip = &Ipv4 {
        end: bytes.len(),
        ..*ip
    };
    let mut ranges = header_fields(bytes, ip);
    if let Some(quoted) = quoted_ipv4(bytes, ip) {
        ranges.extend(header_fields(bytes, &quoted));
    }
    ranges
}

/// Whether `out` differs from `input` past the IPv4 total length: a rewrite of
/// headers that are not in the datagram, only in the frame's trailing bytes.
pub fn past_total_length(input: &[u8], out: &[u8], ip: &Ipv4) -> bool {
    let end = ip.start + ip.tot_len;
    ip.lengths_ok && input.get(end..) != out.get(end..)
}

/// An IPv4 header's checksum and addresses, and its L4 header's checksum and ports
/// (or, for ICMP echo, identifier).
fn header_fields(bytes: &[u8], ip: &Ipv4) -> Vec<Range<usize>> {
    // The header checksum (10..12) and both addresses (12..20).
    let mut ranges = Vec::with_capacity(3);
    ranges.push(ip.start + 10..ip.start + 20);
    if ip.is_later_fragment() {
        return ranges;
    }
    let l4 = ip.l4;
    match ip.proto {
        PROTO_TCP => ranges.extend([l4..l4 + 4, l4 + TCP_CSUM..l4 + TCP_CSUM + 2]),
        PROTO_UDP => ranges.extend([l4..l4 + 4, l4 + UDP_CSUM..l4 + UDP_CSUM + 2]),
        PROTO_ICMP if is_echo(bytes.get(l4)) => ranges.push(l4 + ICMP_CSUM..l4 + 6),
        PROTO_ICMP => ranges.push(l4 + ICMP_CSUM..l4 + ICMP_CSUM + 2),
        _ => {}
    }
    ranges
}

/// ICMP echo request or reply, whose identifier NAT rewrites like a port.
fn is_echo(ty: Option<&u8>) -> bool {
    matches!(ty, Some(0 | 8))
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, SocketAddrV4};

    use super::*;
    use crate::packet::{Packet, tcp_flags::SYN};

    fn a() -> SocketAddrV4 {
        SocketAddrV4::new(Ipv4Addr::new(10, 0, 1, 26), 40_000)
    }

    fn b() -> SocketAddrV4 {
        SocketAddrV4::new(Ipv4Addr::new(10, 0, 1, 48), 8088)
    }

    #[test]
    fn built_packets_verify() {
        for frame in [
            Packet::tcp(a(), b(), SYN).payload(b"odd").bytes(),
            Packet::udp(a(), b()).payload(b"x").bytes(),
            Packet::udp(a(), b()).zero_udp_checksum().bytes(),
            Packet::icmp_echo_request(*a().ip(), *b().ip(), 1, 2).bytes(),
        ] {
            let ip = frame_ipv4(&frame).expect("an IPv4 frame");
            assert!(ip_header_ok(&frame, &ip));
            assert_eq!(l4_ok(&frame, &ip), Some(true));
        }
    }

    #[test]
    fn fix_repairs_a_mutated_frame_and_keeps_udp_zero() {
        let mut frame = Packet::udp(a(), b()).payload(b"data").bytes();
        frame[26] ^= 0xff; // the source address
        let ip = frame_ipv4(&frame).expect("an IPv4 frame");
        assert!(!ip_header_ok(&frame, &ip));
        assert_eq!(l4_ok(&frame, &ip), Some(false));
        fix_checksums(&mut frame);
        assert!(ip_header_ok(&frame, &ip));
        assert_eq!(l4_ok(&frame, &ip), Some(true));

        let mut zero = Packet::udp(a(), b()).zero_udp_checksum().bytes();
        zero[26] ^= 0xff;
        fix_checksums(&mut zero);
        assert_eq!(&zero[40..42], &[0, 0]);
    }

    #[test]
    fn quoted_header_is_found_and_fixed() {
        let inner = Packet::udp(b(), a()).payload(b"q").bytes();
        let mut frame = Packet::icmp(*a().ip(), *b().ip(), 3, 3, [0; 4])
            .payload(&inner[ETH_LEN..ETH_LEN + 28])
            .bytes();
        let ip = frame_ipv4(&frame).expect("an IPv4 frame");
        let quoted = quoted_ipv4(&frame, &ip).expect("a quoted header");
        assert_eq!(quoted.start, ETH_LEN + 28);
        assert!(ip_header_ok(&frame, &quoted));
        frame[quoted.start + 12] ^= 1;
        fix_checksums(&mut frame);
        assert!(ip_header_ok(&frame, &quoted));
        assert_eq!(l4_ok(&frame, &ip), Some(true));
    }

    #[test]
    fn partial_checksum_is_recognised() {
        let mut frame = Packet::tcp(a(), b(), SYN).payload(b"abc").bytes();
        let ip = frame_ipv4(&frame).expect("an IPv4 frame");
        let len = ip.segment(&frame).len();
        frame[ip.l4 + TCP_CSUM..ip.l4 + TCP_CSUM + 2]
            .copy_from_slice(&partial_csum(&ip, len).to_be_bytes());
        assert!(is_partial_csum(&frame, &ip));
    }
}
