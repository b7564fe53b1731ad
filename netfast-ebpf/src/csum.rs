//! RFC 1624 incremental Internet checksum updates, for XDP where there is no skb and
//! hence no `bpf_l3/l4_csum_replace`. Every value is taken as the raw bytes of the
//! packet read natively: one's-complement sums do not care about byte order, as long
//! as the checksum and the fields are read the same way.

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
