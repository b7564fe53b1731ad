//! RFC 1624 incremental Internet checksum updates, for XDP where there is no skb and
//! hence no `bpf_l3/l4_csum_replace`, and for the bytes an ICMP error quotes, which
//! no helper covers. Every value is taken as the raw bytes of the packet read
//! natively: one's-complement sums do not care about byte order, as long as the
//! checksum and the fields are read the same way.

#[inline(always)]
fn fold(mut sum: u32) -> u16 {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum as u16
}

/// HC' = ~(~HC + ~m + m') for a 32-bit field.
#[inline(always)]
pub fn replace4(check: u16, old: u32, new: u32) -> u16 {
    let old = !old;
    let sum = u32::from(!check) + (old & 0xffff) + (old >> 16) + (new & 0xffff) + (new >> 16);
    !fold(sum)
}

/// HC' = ~(~HC + ~m + m') for a 16-bit field.
#[inline(always)]
pub fn replace2(check: u16, old: u16, new: u16) -> u16 {
    !fold(u32::from(!check) + u32::from(!old) + u32::from(new))
}

/// The folded, uncomplemented sum of the TCP/UDP pseudo-header (RFC 793 3.1, RFC 768),
/// as raw bytes read natively: what a CHECKSUM_PARTIAL sender leaves in the checksum
/// field. `l4_len` is in host order; addresses as read from the packet.
#[inline(always)]
pub fn pseudo_header_sum(src: u32, dst: u32, proto: u8, l4_len: u16) -> u16 {
    let sum = (src & 0xffff)
        + (src >> 16)
        + (dst & 0xffff)
        + (dst >> 16)
        + u32::from(u16::from_ne_bytes([0, proto]))
        + u32::from(u16::from_ne_bytes(l4_len.to_be_bytes()));
    fold(sum)
}
