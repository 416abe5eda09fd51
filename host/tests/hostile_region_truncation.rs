//! A guest that shrinks the region file (issue 11, attack class 6). Before, the next access of
//! the supervisor and of every worker to the lost pages raised SIGBUS and ended them all. Now
//! the host's mappings turn to zeros (`transport/src/truncation.rs`): the region's worker ends
//! its channel as a gone client and exits normally, the supervisor logs the loss and stops
//! accepting on the region, and a socket client of the same host is served on.

mod support;

use std::time::Duration;

use protocol::{Decoder, ResponseHeader};
use support::wire::{hello_frame, request, RawGuest};
use support::Host;
use transport::Transport;

/// `cuDriverGetVersion(&v)` as the generated marshalling sends it; the version on success.
fn driver_version(transport: &mut dyn Transport) -> Result<i32, String> {
    let frame = request(shim_macros::cuda_call_id!(cuDriverGetVersion), |enc| {
        enc.put(1u8);
        enc.put(0i32);
    });
    let mut response = Vec::new();
    transport
        .call(&frame, &mut response)
        .map_err(|e| e.to_string())?;
    let mut dec = Decoder::new(&response);
    let header = ResponseHeader::read(&mut dec).map_err(|e| e.to_string())?;
    if header.result != 0 {
        return Err(format!("CUDA error {}", header.result));
    }
    dec.get::<i32>().map_err(|e| e.to_string())
}

#[test]
fn a_truncated_region_ends_its_clients_not_the_host() {
    // This test process maps the region too, as the guest: it must survive the truncation it
    // makes, like the host.
    transport::protect_from_truncation().expect("SIGBUS handler");
    let mut host = Host::on_region("truncated")
        .args(["--listen", "127.0.0.1:0"])
        .start();
    let mut guest = RawGuest::connect(host.region());
    let init = request(shim_macros::cuda_call_id!(cuInit), |enc| enc.put(0u32));
    assert_eq!(guest.call_raw(&init).0, 0, "cuInit through the region");

    std::fs::OpenOptions::new()
        .write(true)
        .open(host.region())
        .expect("open the region file")
        .set_len(0)
        .expect("truncate it");

    host.log_line(&["the region file was shrunk"]);
    host.log_line(&["worker exited"]);
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        host.alive(),
        "the supervisor survives:\n{}",
        host.log_text()
    );
    assert_eq!(
        host.count_lines(&["killed by signal"]),
        0,
        "no worker died of SIGBUS:\n{}",
        host.log_text()
    );

    // The same host still serves a socket client.
    let mut tcp = host.tcp_connect();
    let mut response = Vec::new();
    tcp.call(&hello_frame(), &mut response).expect("hello");
    assert!(
        driver_version(&mut *tcp).is_ok_and(|v| v > 0),
        "served over TCP"
    );
    drop(guest);
    host.assert_no_panic();
}
