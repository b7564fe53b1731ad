//! The python3 programs the tests run inside the namespaces. Each prints one JSON line
//! (or, for the servers, one line per datagram or connection), so what the far side and
//! the container saw comes back as data, errno values included. Every socket has a
//! timeout: none of them can hang a test.

/// A connected UDP socket sends one datagram and waits for an answer or an error.
///
/// `argv: DST PORT TTL RECVERR WAIT` (TTL 0 keeps the default; RECVERR 1 sets
/// IP_RECVERR). Prints `{"local": port, "errno": n, "after": s}`, or `"reply"` or
/// `"timeout"` instead of `"errno"`. With IP_RECVERR, `"ee"` is the first entry of the
/// error queue: `sock_extended_err` (errno, origin, ICMP type and code) and the offender,
/// the address of the router that sent the ICMP error.
pub const UDP_PROBE: &str = r#"import json,socket,struct,sys,time
dst,port,ttl,recverr,wait=sys.argv[1],int(sys.argv[2]),int(sys.argv[3]),sys.argv[4]=='1',float(sys.argv[5])
IP_RECVERR,MSG_ERRQUEUE=11,0x2000
s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)
if recverr: s.setsockopt(socket.IPPROTO_IP,IP_RECVERR,1)
if ttl: s.setsockopt(socket.IPPROTO_IP,socket.IP_TTL,ttl)
s.connect((dst,port)); s.settimeout(wait)
out={'local':s.getsockname()[1]}
t=time.monotonic(); s.send(b'netfast probe')
try:
    out['reply']=len(s.recv(100))
except socket.timeout:
    out['timeout']=wait
except OSError as e:
    out['errno']=e.errno; out['after']=round(time.monotonic()-t,3)
if recverr:
    s.settimeout(0.5)
    try:
        m,anc,f,a=s.recvmsg(100,1024,MSG_ERRQUEUE)
        for lvl,typ,data in anc:
            if lvl==socket.IPPROTO_IP and typ==IP_RECVERR:
                e=struct.unpack('=IBBBBII',data[:16])
                out['ee']={'errno':e[0],'origin':e[1],'type':e[2],'code':e[3],'info':e[5],
                           'offender':socket.inet_ntoa(data[20:24])}
    except OSError as e:
        out['ee_error']=str(e)
print(json.dumps(out))
"#;

/// A connected UDP socket sends one datagram (TTL 0 keeps the default) while a raw
/// ICMP socket watches every ICMP message that reaches this namespace. Prints the
/// socket's errno, if any, and the ICMP error quoting this socket's datagram, parsed,
/// with every checksum verified from scratch (the quoted UDP checksum only when the
/// whole datagram is quoted).
///
/// `argv: DST PORT TTL WAIT`
pub const UDP_PROBE_WITH_CAPTURE: &str = r#"import json,select,socket,struct,sys,time
def csum(b):
    if len(b)%2: b+=b'\0'
    s=sum(struct.unpack('!%dH'%(len(b)//2),b))
    while s>>16: s=(s&0xffff)+(s>>16)
    return ~s&0xffff
ip=socket.inet_ntoa
dst,port,ttl,wait=sys.argv[1],int(sys.argv[2]),int(sys.argv[3]),float(sys.argv[4])
raw=socket.socket(socket.AF_INET,socket.SOCK_RAW,socket.IPPROTO_ICMP)
u=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)
if ttl: u.setsockopt(socket.IPPROTO_IP,socket.IP_TTL,ttl)
u.connect((dst,port))
sport=u.getsockname()[1]
out={'local':sport,'others':[]}
u.send(b'netfast probe from %d' % sport)
deadline=time.monotonic()+wait
while 'icmp' not in out:
    left=deadline-time.monotonic()
    if left<=0: break
    if not select.select([raw],[],[],left)[0]: continue
    p=raw.recv(65535)
    h=(p[0]&15)*4; icmp=p[h:]
    if len(icmp)<8+20 or icmp[0] not in (3,4,5,11,12): continue
    q=icmp[8:]; qh=(q[0]&15)*4; l4=q[qh:]
    if q[9]!=17 or len(l4)<8: continue
    qs,qd,qlen=struct.unpack('!HHH',l4[:6])
    seen={'type':icmp[0],'code':icmp[1],'outer_src':ip(p[12:16]),'outer_dst':ip(p[16:20]),
          'icmp_csum_ok':csum(icmp)==0,'quoted_src':ip(q[12:16]),'quoted_dst':ip(q[16:20]),
          'quoted_sport':qs,'quoted_dport':qd,'quoted_ip_csum_ok':csum(q[:qh])==0,
          'quoted_udp_csum':l4[6]*256+l4[7]}
    if len(l4)>=qlen and seen['quoted_udp_csum']:
        pseudo=q[12:20]+struct.pack('!BBH',0,17,qlen)
        seen['quoted_udp_csum_ok']=csum(pseudo+l4[:qlen])==0
    if qs==sport: out['icmp']=seen
    else: out['others'].append(seen)
u.setblocking(False)
try:
    out['reply']=len(u.recv(100))
except BlockingIOError:
    pass
except OSError as e:
    out['errno']=e.errno
print(json.dumps(out))
"#;

/// A UDP echo server: answers every datagram with the same bytes and prints
/// `LEN SHA256 PEER_ADDR PEER_PORT` for each. Exits after `IDLE` seconds without one.
///
/// `argv: BIND_ADDR PORT IDLE`
pub const UDP_ECHO: &str = r#"import hashlib,socket,sys
s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)
s.bind((sys.argv[1],int(sys.argv[2]))); s.settimeout(float(sys.argv[3]))
while True:
    try: d,a=s.recvfrom(65535)
    except socket.timeout: break
    print(len(d),hashlib.sha256(d).hexdigest(),a[0],a[1],flush=True)
    s.sendto(d,a)
"#;

/// Sends one UDP datagram of `SIZE` bytes (a pattern that depends on the size) from an
/// unconnected socket and waits for one answer. Prints the SHA-256 of what it sent and
/// of what came back, and who the answer came from.
///
/// `argv: DST PORT SIZE WAIT`
pub const UDP_EXCHANGE: &str = r#"import hashlib,json,socket,sys
dst,port,size,wait=sys.argv[1],int(sys.argv[2]),int(sys.argv[3]),float(sys.argv[4])
sha=lambda b: hashlib.sha256(b).hexdigest()
payload=bytes((i*131+size)%251 for i in range(size))
s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.settimeout(wait)
s.sendto(payload,(dst,port))
out={'sent':size,'sent_sha':sha(payload)}
try:
    d,a=s.recvfrom(65535)
    out.update(got=len(d),got_sha=sha(d),src=a[0],sport=a[1])
except socket.timeout:
    out['timeout']=wait
print(json.dumps(out))
"#;

/// A one-connection TCP sink: reads until EOF, answers `LEN SHA256`, and prints
/// `LEN SHA256 PEER_ADDR PEER_PORT`.
///
/// `argv: BIND_ADDR PORT WAIT`
pub const TCP_SINK: &str = r#"import hashlib,socket,sys
wait=float(sys.argv[3])
s=socket.socket(); s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)
s.bind((sys.argv[1],int(sys.argv[2]))); s.listen(); s.settimeout(wait)
c,a=s.accept(); c.settimeout(wait)
h=hashlib.sha256(); n=0
while True:
    d=c.recv(65536)
    if not d: break
    h.update(d); n+=len(d)
c.sendall(b'%d %s' % (n,h.hexdigest().encode())); c.close()
print(n,h.hexdigest(),a[0],a[1],flush=True)
"#;

/// Uploads `SIZE` bytes over TCP, half-closes, and waits for the sink's `LEN SHA256`.
/// Prints what it sent, the answer, and the path MTU the socket learned (IP_MTU).
///
/// `argv: DST PORT SIZE WAIT`
pub const TCP_UPLOAD: &str = r#"import hashlib,json,socket,sys,time
dst,port,size,wait=sys.argv[1],int(sys.argv[2]),int(sys.argv[3]),float(sys.argv[4])
IP_MTU=14
payload=bytes((i*131+size)%251 for i in range(size))
out={'sent':size,'sent_sha':hashlib.sha256(payload).hexdigest()}
t=time.monotonic()
try:
    s=socket.create_connection((dst,port),timeout=wait)
    s.sendall(payload); s.shutdown(socket.SHUT_WR)
    out['answer']=s.recv(200).decode()
    out['path_mtu']=s.getsockopt(socket.IPPROTO_IP,IP_MTU)
except socket.timeout:
    out['timeout']=wait
except OSError as e:
    out['errno']=e.errno
out['secs']=round(time.monotonic()-t,3)
print(json.dumps(out))
"#;
