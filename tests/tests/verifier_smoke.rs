use aya::{EbpfLoader, programs::{SchedClassifier, Xdp}};
#[test]
fn loads() {
    let mut ebpf = EbpfLoader::new().load(netfast::datapath::object().unwrap()).unwrap();
    for name in ["uplink_ingress_tc", "uplink_egress_tc"] {
        let p: &mut SchedClassifier = ebpf.program_mut(name).unwrap().try_into().unwrap();
        p.load().unwrap_or_else(|e| panic!("{name}: {e:?}"));
    }
    let p: &mut Xdp = ebpf.program_mut("uplink_ingress_xdp").unwrap().try_into().unwrap();
    p.load().unwrap_or_else(|e| panic!("xdp: {e:?}"));
}
