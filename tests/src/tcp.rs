//! TCP for the issue-8 packet tests: segments with chosen sequence numbers, a flow's
//! two directions as the datapath sees and translates them, and a flow's halves read
//! from both conntrack maps with the state they add up to.

use std::net::SocketAddrV4;

use netfast_common::{
    Counter, CtEntry, CtTuple,
    names::{MAP_CONNTRACK, MAP_CONNTRACK_UNASSURED},
    proto,
    tcp::{TcpState, tcp_state},
};

use crate::{
    harness::{Datapath, Prog, Run, Verdict, flow_key},
    packet::{L4, Packet},
};

/// A TCP segment from `src` to `dst` with the given flags, sequence and
/// acknowledgement numbers and raw window.
pub fn segment(
    src: SocketAddrV4,
    dst: SocketAddrV4,
    flags: u8,
    seq: u32,
    ack: u32,
    window: u16,
) -> Packet {
    let mut packet = Packet::tcp(src, dst, flags);
    packet.l4 = L4::Tcp {
        src_port: src.port(),
        dst_port: dst.port(),
        seq,
        ack,
        flags,
        window,
    };
    packet
}

/// Which conntrack map holds an entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Table {
    /// `CONNTRACK`: assured flows.
    Assured,
    /// `CONNTRACK_UNASSURED`: new flows until their handshake or first reply.
    Unassured,
}

impl Table {
    pub const fn map_name(self) -> &'static str {
        match self {
            Table::Assured => MAP_CONNTRACK,
            Table::Unassured => MAP_CONNTRACK_UNASSURED,
        }
    }
}

/// The entry for `key` and the map it is in; panics if both maps hold it.
pub fn find(datapath: &Datapath, key: &CtTuple) -> Option<(Table, CtEntry)> {
    let mut found = [Table::Assured, Table::Unassured]
        .into_iter()
        .filter_map(|table| {
            datapath
                .flow_entries(table.map_name())
                .into_iter()
                .find_map(|(k, state)| (k == *key).then_some((table, state)))
        });
    let first = found.next();
    if let Some((other, _)) = found.next() {
        panic!("{key:?} is in both conntrack maps ({first:?} and {other:?})");
    }
    first
}

/// How many entries each map holds: (`CONNTRACK`, `CONNTRACK_UNASSURED`).
pub fn table_sizes(datapath: &Datapath) -> (usize, usize) {
    (
        datapath.flow_entries(MAP_CONNTRACK).len(),
        datapath.flow_entries(MAP_CONNTRACK_UNASSURED).len(),
    )
}

/// What a half recorded of its direction's TCP, as `CtEntry` keeps it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tracked {
    pub flags: u8,
    pub seq_end: u32,
    pub ack: u32,
    pub window: u16,
}

impl Tracked {
    pub const NOTHING: Tracked = Tracked {
        flags: 0,
        seq_end: 0,
        ack: 0,
        window: 0,
    };

    pub fn of(state: &CtEntry) -> Tracked {
        Tracked {
            flags: state.tcp_flags,
            seq_end: state.tcp_seq_end,
            ack: state.tcp_ack,
            window: state.tcp_window,
        }
    }
}

/// Which way a packet travels in a flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dir {
    Original,
    Reply,
}

/// One direction of a flow: the program that sees it, the tuple before and after
/// translation, and what the program counts for it.
#[derive(Clone, Copy, Debug)]
pub struct Way {
    pub prog: Prog,
    pub src: SocketAddrV4,
    pub dst: SocketAddrV4,
    pub out_src: SocketAddrV4,
    pub out_dst: SocketAddrV4,
    /// The decision for a packet that finds the flow.
    pub hit: Counter,
}

/// A flow through the datapath, DNAT, SNAT or routed, seen from both ends.
#[derive(Clone, Copy, Debug)]
pub struct TcpFlow {
    pub original: Way,
    pub reply: Way,
    /// The decision for the packet that creates the flow.
    pub new: Counter,
}

impl TcpFlow {
    /// A published port: `client` → `published` (ingress `prog`) becomes
    /// `client` → `backend`; the backend's answers leave through egress.
    pub fn dnat(
        prog: Prog,
        client: SocketAddrV4,
        published: SocketAddrV4,
        backend: SocketAddrV4,
    ) -> TcpFlow {
        TcpFlow {
            original: Way {
                prog,
                src: client,
                dst: published,
                out_src: client,
                out_dst: backend,
                hit: Counter::DnatEstablished,
            },
            reply: Way {
                prog: Prog::EgressTc,
                src: backend,
                dst: client,
                out_src: published,
                out_dst: client,
                hit: Counter::DnatReply,
            },
            new: Counter::DnatNew,
        }
    }

    /// The masquerade: `container` → `server` (egress) becomes `masqueraded` →
    /// `server`; the server's answers come in through ingress `prog`.
    pub fn snat(
        prog: Prog,
        container: SocketAddrV4,
        server: SocketAddrV4,
        masqueraded: SocketAddrV4,
    ) -> TcpFlow {
        TcpFlow {
            original: Way {
                prog: Prog::EgressTc,
                src: container,
                dst: server,
                out_src: masqueraded,
                out_dst: server,
                hit: Counter::SnatEstablished,
            },
            reply: Way {
                prog,
                src: server,
                dst: masqueraded,
                out_src: server,
                out_dst: container,
                hit: Counter::SnatReply,
            },
            new: Counter::SnatNew,
        }
    }

    /// A routed flow (`allow_direct_routing`): `peer` → `container` (ingress `prog`)
    /// and the container's answers (egress) pass as they are.
    pub fn routed(prog: Prog, peer: SocketAddrV4, container: SocketAddrV4) -> TcpFlow {
        TcpFlow {
            original: Way {
                prog,
                src: peer,
                dst: container,
                out_src: peer,
                out_dst: container,
                hit: Counter::RoutedEstablished,
            },
            reply: Way {
                prog: Prog::EgressTc,
                src: container,
                dst: peer,
                out_src: container,
                out_dst: peer,
                hit: Counter::RoutedReply,
            },
            new: Counter::RoutedNew,
        }
    }

    pub fn way(&self, dir: Dir) -> &Way {
        match dir {
            Dir::Original => &self.original,
            Dir::Reply => &self.reply,
        }
    }

    pub fn original_key(&self) -> CtTuple {
        flow_key(proto::TCP, self.original.src, self.original.dst)
    }

    pub fn reply_key(&self) -> CtTuple {
        flow_key(proto::TCP, self.reply.src, self.reply.dst)
    }

    /// The segment as it enters the program going `dir`.
    pub fn segment(&self, dir: Dir, flags: u8, seq: u32, ack: u32, window: u16) -> Packet {
        let way = self.way(dir);
        segment(way.src, way.dst, flags, seq, ack, window)
    }

    /// `packet` (from [`TcpFlow::segment`]) as the program must leave it.
    pub fn translated(&self, dir: Dir, packet: &Packet) -> Packet {
        let way = self.way(dir);
        packet.clone().with_src(way.out_src).with_dst(way.out_dst)
    }

    /// Runs `packet` going `dir` and asserts that it passes translated, with exactly
    /// the counters `counted` (in `Counter::ALL` order). Returns the run.
    #[track_caller]
    pub fn pass(
        &self,
        datapath: &mut Datapath,
        dir: Dir,
        packet: &Packet,
        counted: &[(Counter, u64)],
    ) -> Run {
        let run = datapath.run(self.way(dir).prog, &packet.bytes());
        run.assert_counts(
            Verdict::Pass,
            counted,
            &self.translated(dir, packet).bytes(),
        );
        run
    }

    /// Both halves and the state they add up to; panics unless both exist in one map.
    #[track_caller]
    pub fn halves(&self, datapath: &Datapath) -> Halves {
        let original = find(datapath, &self.original_key());
        let reply = find(datapath, &self.reply_key());
        match (original, reply) {
            (Some((table, original)), Some((reply_table, reply))) if table == reply_table => {
                Halves {
                    table,
                    state: tcp_state(&original, &reply),
                    original,
                    reply,
                }
            }
            other => panic!(
                "the flow's two halves must both exist, in one map: {other:?}\n\
                 CONNTRACK: {:?}\nCONNTRACK_UNASSURED: {:?}",
                datapath.flow_entries(MAP_CONNTRACK),
                datapath.flow_entries(MAP_CONNTRACK_UNASSURED)
            ),
        }
    }
}

/// A flow's two entries as found in the maps.
#[derive(Clone, Copy, Debug)]
pub struct Halves {
    pub table: Table,
    pub original: CtEntry,
    pub reply: CtEntry,
    pub state: TcpState,
}
