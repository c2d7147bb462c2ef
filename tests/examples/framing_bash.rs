//! What framing a command costs on a backdoor that is bash reading `/dev/hvc0` as its script (NixOS's
//! backdoor.service), written straight to the shell, interleaved, median of 200. bash reads a
//! script from a device one byte at a time, so every byte of framing is a read(2) in the guest.
//! Run: cargo run --release -p tests --example framing_bash [guest]   (default: systemd)

use std::io::Write;
use std::time::{Duration, Instant};
use tests::raw::RawGuest;

fn main() {
    let guest = std::env::args().nth(1).unwrap_or_else(|| "systemd".into());
    let mut raw = RawGuest::start_on(&tests::guest_start_script(&guest), 0, true);
    let n32 = "0123456789abcdef0123456789abcdef";
    let n16 = "0123456789abcdef";
    let function = "_v() { printf '\\036B%s\\036' \"$1\"; ( vmtd_n=$1; set --; trap 'printf \"\\036E%s %d\\036\" \"$vmtd_n\" \"$?\"' EXIT; . /proc/self/fd/3 ) </dev/null & vmtd_job=$!; }\necho defined\n";
    // The backdoor starts early in the boot: measure once the guest has nothing else to do.
    raw.shell
        .sock
        .write_all(b"command -v systemctl >/dev/null && systemctl is-system-running --wait >/dev/null; echo settled\n")
        .unwrap();
    raw.shell.read_until(b"settled\n", |_| {});
    raw.shell.sock.write_all(function.as_bytes()).unwrap();
    raw.shell.read_until(b"defined\n", |_| {});
    let current = |n: &str| {
        format!(
            "printf '\\036B{n}\\036'; ( trap 'printf \"\\036E{n} %d\\036\" \"$?\"' EXIT; . /proc/self/fd/3 ) </dev/null 3<<'vmtd_{n}' &\ntrue\nvmtd_{n}\nvmtd_job=$!\n"
        )
    };
    let framings: Vec<(&str, String, Vec<u8>)> = vec![
        (
            "raw ( true ) </dev/null; echo tag $?",
            "( true ) </dev/null; echo tag $?\n".into(),
            b"tag 0\n".to_vec(),
        ),
        (
            "current framing, 32-digit nonce",
            current(n32),
            format!("\x1eE{n32} 0\x1e").into_bytes(),
        ),
        (
            "current framing, 16-digit nonce",
            current(n16),
            format!("\x1eE{n16} 0\x1e").into_bytes(),
        ),
        (
            "function _v, 32-digit nonce",
            format!("_v {n32} 3<<'vmtd_{n32}'\ntrue\nvmtd_{n32}\n"),
            format!("\x1eE{n32} 0\x1e").into_bytes(),
        ),
        (
            "function _v, 16-digit nonce as the delimiter",
            format!("_v {n16} 3<<'{n16}'\ntrue\n{n16}\n"),
            format!("\x1eE{n16} 0\x1e").into_bytes(),
        ),
        (
            "a 100-byte comment alone, then echo tag",
            format!("#{}\necho tag 0\n", "x".repeat(99)),
            b"tag 0\n".to_vec(),
        ),
        ("echo tag alone", "echo tag 0\n".into(), b"tag 0\n".to_vec()),
    ];
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); framings.len()];
    for round in 0..220 {
        for (k, (_, text, end)) in framings.iter().enumerate() {
            let t = Instant::now();
            raw.shell.sock.write_all(text.as_bytes()).unwrap();
            raw.shell.read_until(end, |_| {});
            if round >= 20 {
                times[k].push(t.elapsed());
            }
        }
    }
    for ((name, text, _), mut t) in framings.iter().zip(times) {
        t.sort();
        println!(
            "{:>8.2} ms median, {:>6.2} ms p95, {:>4} bytes  {name}",
            t[t.len() / 2].as_secs_f64() * 1000.0,
            t[t.len() * 95 / 100].as_secs_f64() * 1000.0,
            text.len()
        );
    }
}
