//! What each way of framing a command costs on a guest's backdoor shell under TCG, written straight
//! to the shell (no driver), interleaved, median of 200: where the driver's round trip goes.
//! Run: cargo run --release -p tests --example framing [guest] [hvc0]
//! (default: the tiny guest's busybox on its port; `systemd hvc0`: bash reading /dev/hvc0 as its
//! script, as NixOS's backdoor.service runs it, which reads one byte per read(2)).

use std::io::Write;
use std::time::{Duration, Instant};
use tests::raw::RawGuest;

fn main() {
    let guest = std::env::args().nth(1).unwrap_or_else(|| "tiny".into());
    let hvc0 = std::env::args().nth(2).as_deref() == Some("hvc0");
    let mut raw = RawGuest::start_on(&tests::guest_start_script(&guest), 0, hvc0);
    // The backdoor starts early in a systemd guest's boot: measure once it has nothing else to do.
    raw.shell
        .sock
        .write_all(b"command -v systemctl >/dev/null && systemctl is-system-running --wait >/dev/null; echo settled\n")
        .unwrap();
    raw.shell.read_until(b"settled\n", |_| {});
    let function = "_vmtd() { printf '\\036B%s\\036' \"$1\"; ( trap \"printf '\\036E%s %d\\036' $1 \\\"\\$?\\\"\" EXIT; set --; . /proc/self/fd/3 ) </dev/null & vmtd_job=$!; }\necho defined\n";
    raw.shell.sock.write_all(function.as_bytes()).unwrap();
    raw.shell.read_until(b"defined\n", |_| {});
    let n = "0123456789abcdef0123456789abcdef";
    let end = format!("\x1eE{n} 0\x1e").into_bytes();
    let framings: Vec<(&str, String, Vec<u8>)> = vec![
        (
            "( true ) </dev/null; echo tag $?",
            "( true ) </dev/null; echo tag $?\n".into(),
            b"tag 0\n".to_vec(),
        ),
        (
            "driver: _vmtd (defined once) with the command in a here-document",
            format!("_vmtd {n} 3<<'vmtd_{n}'\ntrue\nvmtd_{n}\n"),
            end.clone(),
        ),
        (
            "before: the same written out for every command",
            format!(
                "printf '\\036B{n}\\036'; ( trap 'printf \"\\036E{n} %d\\036\" \"$?\"' EXIT; . /proc/self/fd/3 ) </dev/null 3<<'vmtd_{n}' &\ntrue\nvmtd_{n}\nvmtd_job=$!\n"
            ),
            end.clone(),
        ),
        (
            "( trap EXIT; . fd3 ) here-doc, not in the background",
            format!(
                "printf '\\036B{n}\\036'; ( trap 'printf \"\\036E{n} %d\\036\" \"$?\"' EXIT; . /proc/self/fd/3 ) </dev/null 3<<'vmtd_{n}'\ntrue\nvmtd_{n}\n"
            ),
            end,
        ),
        (
            "a 100-byte comment, then echo tag (what reading bytes costs)",
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
