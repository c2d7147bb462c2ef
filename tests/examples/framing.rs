//! What each way of framing a command costs on the tiny guest's backdoor shell under TCG, written
//! straight to the shell (no driver), interleaved, median of 200: where the driver's round trip
//! goes. Run: cargo run --release -p tests --example framing

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn main() {
    let script = tests::guest_start_script("tiny");
    let dir = std::env::temp_dir().join(format!("vmtd-framing-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("shell");
    let opts = format!(
        "-machine accel=tcg -display none -serial null -monitor none \
         -chardev null,id=con -device virtio-serial -device virtconsole,chardev=con \
         -chardev socket,id=raw,path={},server=on,wait=off \
         -device virtserialport,chardev=raw,name=org.vmtd.backdoor",
        path.display()
    );
    let mut child = Command::new(&script)
        .env("QEMU_OPTS", opts)
        .env("TMPDIR", &dir)
        .env("USE_TMPDIR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    let mut sock = loop {
        if let Ok(s) = UnixStream::connect(&path) {
            break s;
        }
        assert!(t0.elapsed() < Duration::from_secs(60));
        std::thread::sleep(Duration::from_millis(5));
    };
    let read_until = |sock: &mut UnixStream, end: &[u8]| {
        let mut all = Vec::new();
        let mut buf = [0u8; 4096];
        while !all.windows(end.len()).any(|w| w == end) {
            let n = sock.read(&mut buf).unwrap();
            assert!(n > 0);
            all.extend_from_slice(&buf[..n]);
        }
    };
    read_until(&mut sock, b"Spawning backdoor root shell...");
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
            sock.write_all(text.as_bytes()).unwrap();
            read_until(&mut sock, end);
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
    let _ = nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
}
