//! Posted requests (`Transport::post`): sent without waiting, delivered in order before the next
//! call, through a full ring and the bulk area, over shared memory and over sockets.

mod common;

use common::*;
use std::time::Duration;
use transport::{
    DoorbellMode, Region, RegionConfig, ServerTransport, TcpClient, TcpServer, Transport,
    TransportError, UnixClient, UnixServer,
};

/// First byte of a posted request in these tests (the real protocol uses a header flag).
const POSTED: u8 = b'P';
/// First byte of a call.
const CALL: u8 = b'C';

/// Serves until the client leaves: posted requests get no reply; a call is answered with the
/// sequence numbers (bytes 1..5) of every request received since the previous call, in
/// arrival order, and whether each one's body was intact. Returns the number of requests.
fn serve(mut s: impl ServerTransport) -> Result<u32, TransportError> {
    let mut req = Vec::new();
    let mut seen: Vec<u8> = Vec::new();
    let mut n = 0;
    loop {
        match s.recv(&mut req) {
            Ok(()) => {}
            Err(TransportError::Closed | TransportError::PeerGone(_)) => return Ok(n),
            Err(e) => return Err(e),
        }
        n += 1;
        let seq = u32::from_le_bytes(req[1..5].try_into().unwrap());
        let intact = req[5..]
            .iter()
            .enumerate()
            .all(|(i, &b)| b == (i as u32).wrapping_add(seq) as u8);
        seen.extend_from_slice(&seq.to_le_bytes());
        seen.push(u8::from(intact));
        if req[0] == CALL {
            s.reply(&seen)?;
            seen.clear();
        }
    }
}

fn request(kind: u8, seq: u32, len: usize) -> Vec<u8> {
    let mut v = vec![kind];
    v.extend_from_slice(&seq.to_le_bytes());
    v.extend((0..len).map(|i| (i as u32).wrapping_add(seq) as u8));
    v
}

/// Posts `posts` requests (every 7th one 70 kB, more than a slot, so through the bulk area),
/// then makes one call, three times over; each reply lists exactly the requests since the
/// previous call, in order and intact.
fn posts_then_call(client: &mut dyn Transport, posts: u32) {
    let mut resp = Vec::new();
    let mut seq = 0u32;
    for _round in 0..3 {
        let first = seq;
        for _ in 0..posts {
            let len = if seq % 7 == 3 { 70_000 } else { 40 };
            client.post(&request(POSTED, seq, len)).unwrap();
            seq += 1;
        }
        client.call(&request(CALL, seq, 16), &mut resp).unwrap();
        seq += 1;
        let got: Vec<(u32, bool)> = resp
            .chunks(5)
            .map(|c| (u32::from_le_bytes(c[..4].try_into().unwrap()), c[4] == 1))
            .collect();
        let want: Vec<(u32, bool)> = (first..seq).map(|s| (s, true)).collect();
        assert_eq!(got, want);
    }
}

#[test]
fn posts_arrive_in_order_before_the_next_call_over_shared_memory() {
    for mode in [DoorbellMode::Futex, DoorbellMode::Poll] {
        let tmp = TempRegion::new("posted");
        let config = RegionConfig {
            channel_count: 2,
            slot_count: 4,
            slot_size: 512,
            bulk_size: 512 << 10,
            bulk_block_size: 64 << 10,
            doorbell: mode,
            peer_timeout: Duration::from_secs(5),
        };
        let host = Region::create(tmp.path(), &config).unwrap();
        let guest = Region::open(tmp.path()).unwrap();
        let mut channel = guest.connect().unwrap();
        let claim = host.accept(Duration::from_secs(5)).unwrap().expect("claim");
        let served = host.admit_and_serve(claim).unwrap();
        let server = std::thread::spawn(move || serve(served));
        // 50 posts through a 4-slot ring: the producer waits for space many times.
        posts_then_call(&mut channel, 50);
        drop(channel);
        assert_eq!(server.join().unwrap().unwrap(), 3 * 51);
    }
}

#[test]
fn posts_arrive_in_order_before_the_next_call_over_sockets() {
    let tcp = TcpServer::bind("127.0.0.1:0").unwrap();
    let addr = tcp.local_addr().unwrap();
    let server = std::thread::spawn(move || serve(tcp.accept().unwrap()));
    let mut client = TcpClient::connect(addr).unwrap();
    posts_then_call(&mut client, 30);
    drop(client);
    assert_eq!(server.join().unwrap().unwrap(), 3 * 31);

    let tmp = TempRegion::new("posted-uds");
    let uds = UnixServer::bind(tmp.path()).unwrap();
    let server = std::thread::spawn(move || serve(uds.accept().unwrap()));
    let mut client = UnixClient::connect(tmp.path()).unwrap();
    posts_then_call(&mut client, 30);
    drop(client);
    assert_eq!(server.join().unwrap().unwrap(), 3 * 31);
}

#[test]
fn a_call_after_posts_to_a_vanished_socket_server_is_peer_gone() {
    let tcp = TcpServer::bind("127.0.0.1:0").unwrap();
    let addr = tcp.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let mut s = tcp.accept().unwrap();
        let mut req = Vec::new();
        s.recv(&mut req).unwrap();
        // Gone after the first posted request, without a word.
    });
    let mut client = TcpClient::connect(addr).unwrap();
    client.post(&request(POSTED, 0, 8)).unwrap();
    server.join().unwrap();
    let mut resp = Vec::new();
    let mut result = Ok(());
    // A post may still be accepted by the kernel's buffer; the call must fail, never hang.
    for seq in 1..4 {
        result = client
            .post(&request(POSTED, seq, 8))
            .and_then(|()| client.call(&request(CALL, 9, 8), &mut resp));
        if result.is_err() {
            break;
        }
    }
    assert!(
        matches!(result, Err(TransportError::PeerGone(_))),
        "{result:?}"
    );
}
