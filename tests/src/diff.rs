//! Byte-exact comparison of packets, with a hex diff that names the fields that differ.

use std::fmt::Write as _;

use crate::packet::{ETH_LEN, ETHERTYPE_IPV4, PROTO_ICMP, PROTO_TCP, PROTO_UDP};

/// Panics with a hex diff when `actual` is not byte for byte `expected`.
#[track_caller]
pub fn assert_bytes_eq(what: &str, expected: &[u8], actual: &[u8]) {
    if expected == actual {
        return;
    }
    panic!(
        "{what}: output bytes differ from the expected packet\n{}",
        hex_diff(expected, actual)
    );
}

/// Rows of 16 bytes, expected above actual, with `^^` under each byte that differs,
/// then one line per differing byte naming the header field it falls in.
pub fn hex_diff(expected: &[u8], actual: &[u8]) -> String {
    let mut out = String::new();
    if expected.len() != actual.len() {
        let _ = writeln!(
            out,
            "length: expected {} bytes, got {}",
            expected.len(),
            actual.len()
        );
    }
    let len = expected.len().max(actual.len());
    for row in (0..len).step_by(16) {
        let end = (row + 16).min(len);
        let cell =
            |bytes: &[u8], i: usize| bytes.get(i).map_or("--".to_owned(), |b| format!("{b:02x}"));
        let line = |bytes: &[u8]| {
            (row..end)
                .map(|i| cell(bytes, i))
                .collect::<Vec<_>>()
                .join(" ")
        };
        let marks: String = (row..end)
            .map(|i| {
                if expected.get(i) == actual.get(i) {
                    "  "
                } else {
                    "^^"
                }
            })
            .collect::<Vec<_>>()
            .join(" ");
        let _ = writeln!(out, "{row:04x} expected {}", line(expected));
        let _ = writeln!(out, "{row:04x} actual   {}", line(actual));
        if marks.contains('^') {
            let _ = writeln!(out, "              {marks}");
        }
    }
    for i in 0..len {
        if expected.get(i) != actual.get(i) {
            let _ = writeln!(
                out,
                "  byte {i} ({}): expected {}, got {}",
                field_name(expected, i),
                expected
                    .get(i)
                    .map_or("none".to_owned(), |b| format!("{b:#04x}")),
                actual
                    .get(i)
                    .map_or("none".to_owned(), |b| format!("{b:#04x}")),
            );
        }
    }
    out
}

/// The header field at `offset` of an Ethernet + IPv4 frame, judged by `frame`'s own
/// headers.
pub fn field_name(frame: &[u8], offset: usize) -> String {
    if offset < 6 {
        return "eth.dst".into();
    }
    if offset < 12 {
        return "eth.src".into();
    }
    if offset < ETH_LEN {
        return "eth.type".into();
    }
    let ether_type = frame.get(12..14).map(|b| u16::from_be_bytes([b[0], b[1]]));
    if ether_type != Some(ETHERTYPE_IPV4) {
        return format!("payload+{}", offset - ETH_LEN);
    }
    let ihl = frame.get(ETH_LEN).map_or(20, |v| usize::from(v & 0x0f) * 4);
    let ip = offset - ETH_LEN;
    if ip < ihl {
        return match ip {
            0 => "ip.version_ihl",
            1 => "ip.tos",
            2 | 3 => "ip.tot_len",
            4 | 5 => "ip.id",
            6 | 7 => "ip.frags",
            8 => "ip.ttl",
            9 => "ip.proto",
            10 | 11 => "ip.check",
            12..=15 => "ip.src",
            16..=19 => "ip.dst",
            _ => "ip.options",
        }
        .into();
    }
    let l4 = ip - ihl;
    let proto = frame.get(ETH_LEN + 9).copied().unwrap_or(0);
    let name = match (proto, l4) {
        (PROTO_TCP, 0 | 1) => "tcp.src_port",
        (PROTO_TCP, 2 | 3) => "tcp.dst_port",
        (PROTO_TCP, 4..=7) => "tcp.seq",
        (PROTO_TCP, 8..=11) => "tcp.ack",
        (PROTO_TCP, 12 | 13) => "tcp.offset_flags",
        (PROTO_TCP, 14 | 15) => "tcp.window",
        (PROTO_TCP, 16 | 17) => "tcp.check",
        (PROTO_TCP, 18 | 19) => "tcp.urgent",
        (PROTO_UDP, 0 | 1) => "udp.src_port",
        (PROTO_UDP, 2 | 3) => "udp.dst_port",
        (PROTO_UDP, 4 | 5) => "udp.len",
        (PROTO_UDP, 6 | 7) => "udp.check",
        (PROTO_ICMP, 0) => "icmp.type",
        (PROTO_ICMP, 1) => "icmp.code",
        (PROTO_ICMP, 2 | 3) => "icmp.check",
        (PROTO_ICMP, 4 | 5) => "icmp.id",
        (PROTO_ICMP, 6 | 7) => "icmp.seq",
        _ => return format!("l4+{l4}"),
    };
    name.into()
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, SocketAddrV4};

    use super::*;
    use crate::packet::{Packet, tcp_flags};

    #[test]
    fn diff_names_the_fields() {
        let a = SocketAddrV4::new(Ipv4Addr::new(10, 0, 1, 26), 40000);
        let b = SocketAddrV4::new(Ipv4Addr::new(10, 0, 1, 48), 8088);
        let c = SocketAddrV4::new(Ipv4Addr::new(10, 0, 1, 48), 8089);
        let expected = Packet::tcp(a, b, tcp_flags::SYN).bytes();
        let actual = Packet::tcp(a, c, tcp_flags::SYN).bytes();
        let diff = hex_diff(&expected, &actual);
        assert!(diff.contains("tcp.dst_port"), "{diff}");
        assert!(diff.contains("tcp.check"), "{diff}");
        assert!(!diff.contains("ip.check"), "{diff}");
    }
}
