//! Issue 7 end to end, as root, with real tools: ICMP errors about translated flows
//! (ping, tracepath, python sockets and their errno values, a raw ICMP socket), IPv4
//! fragments both ways (payload hashes, ping -s, a capture of the LAN wire) and frames
//! with partial checksums under XDP (curl, UDP echo, the receivers' InCsumErrors).
//! Every test runs in tc and in XDP ingress mode, in a sandbox of its own that is
//! removed on drop, also on failure.
//!
//! The addresses on the seed lab: uplink 10.92.0.1 is 10.0.1.48, the far side
//! 10.92.0.2 is the LAN peer 10.0.1.26 or, behind it as a router, 10.0.2.2; c1 is netns2
//! (172.16.0.102) and c2 netns3 (172.16.0.103); the masquerade covers 172.16.0.0/24.

#[allow(
    dead_code,
    reason = "shared by several test binaries; each uses a part of it"
)]
mod support;

#[path = "nat_related/checksums.rs"]
mod checksums;
#[path = "nat_related/fragments.rs"]
mod fragments;
#[path = "nat_related/icmp.rs"]
mod icmp;
#[path = "nat_related/kit.rs"]
mod kit;
#[path = "nat_related/scripts.rs"]
mod scripts;

/// The uplink's address (the 10.92.0.1).
const HOST: &str = "10.0.1.48";
/// The LAN peer (the far side 10.92.0.2), also the router to 10.0.2.0/24.
const LAN: &str = "10.0.1.26";
/// The issue's `5353:192.168.92.12:5300/udp`, on netns3.
const PUBLISH_UDP: &str = "\n[[publish]]\nspec = \"5353:172.16.0.103:5300/udp\"\n";
/// A pcap filter for frames that show a 172.16.0.0/24 address on the wire: as source
/// or destination, or quoted inside an ICMP error (its embedded source at ICMP offset
/// 20, destination at 24).
const NO_PRIVATE_ADDRESS: &str = "src net 172.16.0.0/24 or dst net 172.16.0.0/24 or \
     (icmp and (icmp[0] = 3 or icmp[0] = 4 or icmp[0] = 5 or icmp[0] = 11 or icmp[0] = 12) \
     and ((icmp[20:4] & 0xffffff00) = 0xac100000 or (icmp[24:4] & 0xffffff00) = 0xac100000))";
