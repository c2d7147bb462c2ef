//! What each way of framing a command costs on the tiny guest's backdoor shell under TCG, written
//! straight to the shell (no driver), interleaved, median of 200: where the driver's round trip
//! goes. Run: cargo run --release -p tests --example framing

use std::io::Write;
use std::time::{Duration, Instant};
use tests::raw::RawGuest;

fn main() {
    let mut raw = RawGuest::start(&tests::guest_start_script("tiny"), 0);
    let n = "0123456789abcdef0123456789abcdef";
    let framings: Vec<(&str, String, Vec<u8>)> = vec![
        (
            "( true ) </dev/null; echo tag $?",
            "( true ) </dev/null; echo tag $?\n".into(),
            b"tag 0\n".to_vec(),
        ),
        (
            "old: ( . fd3 ) here-doc; printf end",
            format!(
                "printf '\\036B{n}\\036'; ( . /proc/self/fd/3 ) </dev/null 3<<'vmtd_{n}'\ntrue\nvmtd_{n}\nprintf '\\036E{n} %d\\036' \"$?\"\n"
            ),
            format!("\x1eE{n} 0\x1e").into_bytes(),
        ),
        (
            "new: ( trap EXIT; . fd3 ) here-doc &",
            format!(
                "printf '\\036B{n}\\036'; ( trap 'printf \"\\036E{n} %d\\036\" \"$?\"' EXIT; . /proc/self/fd/3 ) </dev/null 3<<'vmtd_{n}' &\ntrue\nvmtd_{n}\nvmtd_job=$!\n"
            ),
            format!("\x1eE{n} 0\x1e").into_bytes(),
        ),
        (
            "( trap EXIT; . fd3 ) here-doc, not in the background",
            format!(
                "printf '\\036B{n}\\036'; ( trap 'printf \"\\036E{n} %d\\036\" \"$?\"' EXIT; . /proc/self/fd/3 ) </dev/null 3<<'vmtd_{n}'\ntrue\nvmtd_{n}\n"
            ),
            format!("\x1eE{n} 0\x1e").into_bytes(),
        ),
        (
            "( true ) &; echo tag (background alone)",
            "( true; echo tag 0 ) </dev/null &\n".into(),
            b"tag 0\n".to_vec(),
        ),
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
    for ((name, _, _), mut t) in framings.iter().zip(times) {
        t.sort();
        println!(
            "{:>8.2} ms median, {:>6.2} ms p95  {name}",
            t[t.len() / 2].as_secs_f64() * 1000.0,
            t[t.len() * 95 / 100].as_secs_f64() * 1000.0
        );
    }
}
