//! The driver's round trip on a guest whose backdoor is bash reading `/dev/hvc0` (NixOS's
//! backdoor.service), against `( true ) </dev/null; echo tag $?` written to a bash reading its
//! commands from a second virtio port of the same guest, interleaved, median of 200.
//! Run: cargo run --release -p tests --example roundtrip_bash [guest] [kernel params]
//! (default: the systemd guest told `vmtd.backdoor=hvc0`).

use std::time::Instant;

fn main() {
    tests::init_logging();
    let guest = std::env::args().nth(1).unwrap_or_else(|| "systemd".into());
    let params = std::env::args()
        .nth(2)
        .unwrap_or_else(|| "vmtd.backdoor=hvc0".into());
    std::env::set_var("QEMU_KERNEL_PARAMS", params);
    let driver = driver::Driver::new().unwrap();
    let (vm, mut raw) = tests::raw::machine_with_reference(
        &driver,
        &tests::guest_start_script(&guest),
        "bash --norc -s",
    );
    println!(
        "backdoor: {}",
        vm.succeed("readlink /proc/$$/fd/0; readlink /proc/$$/exe")
            .unwrap()
            .replace('\n', " ")
    );
    vm.succeed(
        "command -v systemctl >/dev/null && systemctl is-system-running --wait >/dev/null; true",
    )
    .unwrap();
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for round in 0..220 {
        let raw_time = raw.round_trip("true");
        let t0 = Instant::now();
        vm.succeed("true").unwrap();
        if round >= 20 {
            ours.push(t0.elapsed().as_secs_f64() * 1000.0);
            theirs.push(raw_time.as_secs_f64() * 1000.0);
        }
    }
    ours.sort_by(f64::total_cmp);
    theirs.sort_by(f64::total_cmp);
    println!(
        "succeed(\"true\") {:.2} ms, raw {:.2} ms: {:.2} x (p95 {:.2} / {:.2} ms)",
        ours[100],
        theirs[100],
        ours[100] / theirs[100],
        ours[190],
        theirs[190]
    );
    vm.shutdown().unwrap();
}
