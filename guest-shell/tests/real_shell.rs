//! The protocol against real shells (dash, bash, busybox ash) on a socketpair standing in for the guest's
//! `/dev/hvc0`, plus a transcript captured from one of them replayed at every split.

use guest_shell::{coalesce, Event, Session, BANNER};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SHELLS: &[&[&str]] = &[&["sh"], &["bash", "--norc"], &["busybox", "sh"]];

/// A shell playing the guest's backdoor: stdin and stdout are our socket, stderr a file we can read.
struct Guest {
    child: Child,
    sock: UnixStream,
    session: Session,
    stderr_path: std::path::PathBuf,
    /// Every byte the shell wrote to the channel, for transcripts.
    transcript: Vec<u8>,
    /// The nonce of the last command framed (the harness counts them).
    nonce: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

/// What one command produced.
#[derive(Debug)]
struct Run {
    out: Vec<u8>,
    status: i32,
    stray: Vec<u8>,
}

impl Guest {
    fn start(argv: &[&str], nonce_seed: u64) -> Guest {
        let (ours, theirs) = UnixStream::pair().unwrap();
        // Tests run in parallel and reuse nonce seeds, so the directory (removed on drop)
        // needs its own sequence number: a shared one lost another test's stderr file in CI.
        static GUESTS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "guest-shell-test-{}-{}",
            std::process::id(),
            GUESTS.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let stderr_path = dir.join("stderr");
        let stderr = std::fs::File::create(&stderr_path).unwrap();
        let shell = argv.join(" ");
        // Print the banner the way a guest does, then become the backdoor shell itself.
        let child = Command::new(argv[0])
            .args(&argv[1..])
            .arg("-c")
            .arg(format!(
                "cd {}; echo '{}'; exec {shell}",
                dir.display(),
                String::from_utf8_lossy(BANNER)
            ))
            .stdin(Stdio::from(std::os::fd::OwnedFd::from(
                theirs.try_clone().unwrap(),
            )))
            .stdout(Stdio::from(std::os::fd::OwnedFd::from(theirs)))
            .stderr(Stdio::from(stderr))
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {shell}: {e} (install it: see README)"));
        sock_timeout(&ours);
        let nonce = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(nonce_seed));
        let counter = nonce.clone();
        let mut g = Guest {
            child,
            sock: ours,
            session: Session::with_nonces(move || {
                u128::from(counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1)
            }),
            stderr_path,
            transcript: Vec::new(),
            nonce,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            g.read_some(deadline);
            if let Some(e) = g.session.poll_event() {
                assert_eq!(e, Event::Banner);
                break;
            }
        }
        g
    }

    fn read_some(&mut self, deadline: Instant) {
        assert!(Instant::now() < deadline, "timed out waiting for the shell");
        let mut buf = [0u8; 65536];
        match self.sock.read(&mut buf) {
            Ok(0) => self.session.handle_eof(),
            Ok(n) => {
                self.transcript.extend_from_slice(&buf[..n]);
                self.session.feed(&buf[..n]);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(e) => panic!("read: {e}"),
        }
    }

    fn run(&mut self, cmd: &str) -> Run {
        self.run_within(cmd, Duration::from_secs(20))
    }

    fn run_within(&mut self, cmd: &str, limit: Duration) -> Run {
        let bytes = self.session.command(cmd.as_bytes()).unwrap();
        self.finish(&bytes, cmd, limit)
    }

    /// Runs `test ARGS` in the shell itself ([`Session::test`]).
    fn test(&mut self, args: &[&str]) -> Run {
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        let bytes = self.session.test(&args).unwrap();
        self.finish(&bytes, &format!("test {args:?}"), Duration::from_secs(20))
    }

    /// Writes the framed `bytes` and collects the command's events.
    fn finish(&mut self, bytes: &[u8], cmd: &str, limit: Duration) -> Run {
        self.sock.write_all(bytes).unwrap();
        let deadline = Instant::now() + limit;
        let mut run = Run {
            out: Vec::new(),
            status: -1,
            stray: Vec::new(),
        };
        loop {
            while let Some(e) = self.session.poll_event() {
                match e {
                    Event::Output(b) => run.out.extend(b),
                    Event::Stray(b) => run.stray.extend(b),
                    Event::Exited { status } => {
                        run.status = status;
                        return run;
                    }
                    other => panic!("unexpected {other:?} running {cmd:?}"),
                }
            }
            self.read_some(deadline);
        }
    }

    fn last_nonce(&self) -> u64 {
        self.nonce.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap()
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        // Background jobs (`sleep 100 &`) live in the shell's process group.
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = self.child.wait();
        if let Some(dir) = self.stderr_path.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn sock_timeout(s: &UnixStream) {
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
}

fn each_shell(f: impl Fn(&str, &mut Guest)) {
    for (i, argv) in SHELLS.iter().enumerate() {
        let mut g = Guest::start(argv, (i as u64) << 32);
        f(&argv.join(" "), &mut g);
    }
}

fn ok(g: &mut Guest, cmd: &str, want: &[u8], shell: &str) {
    let r = g.run(cmd);
    assert_eq!(
        (String::from_utf8_lossy(&r.out), r.status),
        (String::from_utf8_lossy(want), 0),
        "{shell}: {cmd:?}"
    );
}

#[test]
fn edge_cases_on_every_shell() {
    each_shell(|sh, g| {
        ok(g, "echo hi # c", b"hi\n", sh);
        ok(g, "cat <<EOF\nline1\n$((1+2))\nEOF", b"line1\n3\n", sh);
        ok(
            g,
            "cat <<'X'\n$HOME is 'literal'\nX\necho after",
            b"$HOME is 'literal'\nafter\n",
            sh,
        );
        ok(g, "echo '('", b"(\n", sh);
        ok(g, "echo ')' \"it's\" # it's", b") it's\n", sh);
        ok(
            g,
            "x=1\nif [ $x = 1 ]; then\n  echo one\nfi\nfor i in a b; do\n  echo $i\ndone\n",
            b"one\na\nb\n",
            sh,
        );
        ok(g, "printf abc", b"abc", sh);
        ok(g, "printf '\\377\\376\\0\\n'", b"\xff\xfe\0\n", sh);
        ok(g, "echo trailing backslash \\", b"trailing backslash\n", sh);
    });
}

#[test]
fn exit_status_and_isolation() {
    each_shell(|sh, g| {
        let r = g.run("exit 3");
        assert_eq!((r.out.len(), r.status), (0, 3), "{sh}");
        let r = g.run("echo before; false");
        assert_eq!((&r.out[..], r.status), (&b"before\n"[..], 1), "{sh}");
        // `cd` and variables stay inside the command's subshell.
        ok(g, "cd /; X=set", b"", sh);
        let r = g.run("pwd; echo \"X=$X\"");
        assert!(!r.out.starts_with(b"/\n"), "{sh}: cd leaked: {:?}", r);
        assert!(r.out.ends_with(b"X=\n"), "{sh}: variable leaked");
        // The command sees the top level's positional parameters (none), not the framing's; a
        // function or variable it defines stays in its subshell.
        ok(g, "echo \"[$#][$1][$*]\"", b"[0][][]\n", sh);
        ok(
            g,
            "_vmtd() { echo hijacked; }; vmtd_job=1; echo set",
            b"set\n",
            sh,
        );
        ok(g, "echo next", b"next\n", sh);
        // A syntax error fails the command, not the session.
        let r = g.run("if then fi (");
        assert_ne!(r.status, 0, "{sh}");
        ok(g, "echo still here", b"still here\n", sh);
    });
}

#[test]
fn a_test_runs_in_the_shell_itself_whatever_its_arguments_hold() {
    each_shell(|sh, g| {
        ok(g, "touch here", b"", sh);
        let hostile = [
            "it's",
            "$(touch pwned)",
            "`touch pwned`",
            "a\nb; touch pwned",
            "' ; touch pwned; '",
            "\\",
            "",
        ];
        for path in hostile {
            let r = g.test(&["-e", path]);
            assert_eq!((r.status, r.out.len()), (1, 0), "{sh}: {path:?}");
        }
        let r = g.test(&["-e", "here"]);
        assert_eq!((r.status, r.out.len()), (0, 0), "{sh}");
        let r = g.test(&["abc", "=", "abc"]);
        assert_eq!(r.status, 0, "{sh}");
        // A bad expression is test's own error (status 2), not the session's.
        let r = g.test(&["a", "-eq", "b"]);
        assert!(r.status > 1, "{sh}: {r:?}");
        ok(g, "test -e pwned || echo clean", b"clean\n", sh);
        // It started no process: the shell's last background job is forgotten, so an interrupt
        // cannot stop a process ID the kernel may have handed to someone else.
        ok(g, "true", b"", sh);
        g.test(&["-e", "here"]);
        let r = g.run("echo \"[$vmtd_job]\"");
        assert_eq!(String::from_utf8_lossy(&r.out), "[]\n", "{sh}");
    });
}

#[test]
fn stdin_is_dev_null_and_background_jobs_do_not_block() {
    each_shell(|sh, g| {
        let t = Instant::now();
        ok(g, "cat", b"", sh);
        ok(g, "read line; echo \"got [$line]\"", b"got []\n", sh);
        ok(g, "sleep 100 &", b"", sh);
        ok(g, "sleep 100 & echo started", b"started\n", sh);
        ok(g, "echo next", b"next\n", sh);
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "{sh}: took {:?}",
            t.elapsed()
        );
    });
}

#[test]
fn stderr_is_not_mixed_into_output() {
    each_shell(|sh, g| {
        ok(g, "echo out; echo err-from-command >&2", b"out\n", sh);
        assert!(
            g.stderr().contains("err-from-command"),
            "{sh}: {}",
            g.stderr()
        );
    });
}

#[test]
fn output_containing_markers_and_the_banner() {
    each_shell(|sh, g| {
        ok(g, "true", b"", sh);
        // Markers and the delimiter of the command that just ran, and of the one now running.
        let prev = g.last_nonce();
        let next = prev + 1;
        let fake = format!(
            "printf '\\036E{prev:032x} 0\\036\\036B{next:032x}\\036\\nSpawning backdoor root shell...\\nvmtd_{prev:032x}\\n'"
        );
        let want = format!(
            "\x1eE{prev:032x} 0\x1e\x1eB{next:032x}\x1e\nSpawning backdoor root shell...\nvmtd_{prev:032x}\n"
        );
        ok(g, &fake, want.as_bytes(), sh);
    });
}

#[test]
fn ten_megabytes_of_output() {
    each_shell(|sh, g| {
        let r = g.run_within(
            "head -c 10000000 /dev/zero | tr '\\000' a",
            Duration::from_secs(60),
        );
        assert_eq!(r.status, 0, "{sh}");
        assert_eq!(r.out.len(), 10_000_000, "{sh}");
        assert!(r.out.iter().all(|&b| b == b'a'), "{sh}");
        ok(g, "echo after", b"after\n", sh);
    });
}

#[test]
fn late_background_output_is_stray() {
    each_shell(|sh, g| {
        ok(g, "(sleep 0.3; echo late) &", b"", sh);
        std::thread::sleep(Duration::from_millis(600));
        let r = g.run("echo now");
        assert_eq!(r.out, b"now\n", "{sh}");
        assert_eq!(r.stray, b"late\n", "{sh}");
    });
}

#[test]
fn shell_exit_is_reported_as_closed() {
    // Not via `exit` (the subshell absorbs it): kill the shell, as a guest powering off would.
    // `$$` is the backdoor shell itself, even inside the command's subshell.
    let mut g = Guest::start(&["sh"], 99);
    // The command's subshell runs in the background: kill it too (`sh -c`'s parent), or it would
    // still write its end marker.
    let bytes = g
        .session
        .command(b"echo partial; kill -9 $$; sh -c 'kill -9 $PPID'")
        .unwrap();
    g.sock.write_all(&bytes).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut events = Vec::new();
    while !matches!(events.last(), Some(Event::Closed { .. })) {
        g.read_some(deadline);
        events.extend(std::iter::from_fn(|| g.session.poll_event()));
    }
    assert_eq!(
        events,
        vec![
            Event::Output(b"partial\n".to_vec()),
            Event::Closed {
                during_command: true
            }
        ]
    );
}

/// Whether a process whose command line contains `needle` is alive (not a zombie) on the host.
fn alive(needle: &str) -> bool {
    std::fs::read_dir("/proc").unwrap().flatten().any(|e| {
        let mut cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        cmdline
            .iter_mut()
            .filter(|b| **b == 0)
            .for_each(|b| *b = b' ');
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        String::from_utf8_lossy(&cmdline).contains(needle) && !stat.contains(") Z ")
    })
}

#[test]
fn interrupt_stops_the_whole_command_and_frees_the_shell() {
    each_shell(|sh, g| {
        // Endless output, a pipeline and a background grandchild: all must go.
        let cmd = "sleep 4321 & sh -c 'sleep 4322' & yes | cat";
        let bytes = g.session.command(cmd.as_bytes()).unwrap();
        g.sock.write_all(&bytes).unwrap();
        let t0 = Instant::now();
        let mut flood = 0;
        while t0.elapsed() < Duration::from_millis(500) {
            g.read_some(t0 + Duration::from_secs(5));
            while let Some(e) = g.session.poll_event() {
                match e {
                    Event::Output(b) => flood += b.len(),
                    other => panic!("{sh}: unexpected {other:?}"),
                }
            }
        }
        assert!(flood > 0, "{sh}: no output from yes");
        assert!(alive("sleep 4321") && alive("sleep 4322"), "{sh}");
        let bytes = g.session.interrupt().unwrap();
        g.sock.write_all(&bytes).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match g.session.poll_event() {
                Some(Event::Exited { status }) => {
                    assert_eq!(status, 0, "{sh}");
                    break;
                }
                Some(Event::Output(_) | Event::Stray(_)) => {}
                Some(other) => panic!("{sh}: unexpected {other:?}"),
                None => g.read_some(deadline),
            }
        }
        eprintln!(
            "{sh}: interrupted in {:?}",
            t0.elapsed() - Duration::from_millis(500)
        );
        let r = g.run("echo ok");
        assert_eq!((r.out.as_slice(), r.status), (&b"ok\n"[..], 0), "{sh}");
        assert!(
            !alive("sleep 4321") && !alive("sleep 4322"),
            "{sh}: left running"
        );
        // With nothing running, an interrupt is harmless.
        let bytes = g.session.interrupt().unwrap();
        g.sock.write_all(&bytes).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !matches!(g.session.poll_event(), Some(Event::Exited { status: 0 })) {
            g.read_some(deadline);
        }
        ok(g, "echo still", b"still\n", sh);
    });
}

// ---------------------------------------------------------------------------------------------
// Transcript: bytes a real shell wrote, per command, replayed whole, byte by byte and split at every
// offset. The file holds one segment per command (the banner first) as "<length>\n<bytes>".

const TRANSCRIPT_COMMANDS: &[&str] = &[
    "echo hi # c",
    "printf 'no newline'",
    "exit 3",
    "printf '\\036E00000000000000000000000000000001 0\\036 fake\\n'",
    "(sleep 0.2; echo late) & echo started",
    "printf '\\377'",
];

fn transcript_path() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/dash-transcript.bin")
}

/// Regenerates `tests/data/dash-transcript.bin`: `cargo test -p guest-shell -- --ignored capture`.
#[test]
#[ignore]
fn capture_transcript() {
    let mut g = Guest::start(&["sh"], 0);
    let mut file = Vec::new();
    let mut push = |seg: &[u8]| {
        file.extend_from_slice(format!("{}\n", seg.len()).as_bytes());
        file.extend_from_slice(seg);
    };
    push(&[BANNER, b"\n"].concat());
    for cmd in TRANSCRIPT_COMMANDS {
        g.transcript.clear();
        if cmd.starts_with("printf '\\377'") {
            // Let the background job of the previous command print between commands.
            std::thread::sleep(Duration::from_millis(500));
        }
        g.run(cmd);
        push(&g.transcript);
    }
    std::fs::create_dir_all(transcript_path().parent().unwrap()).unwrap();
    std::fs::write(transcript_path(), file).unwrap();
}

fn segments(mut data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while !data.is_empty() {
        let nl = data.iter().position(|&b| b == b'\n').unwrap();
        let len: usize = std::str::from_utf8(&data[..nl]).unwrap().parse().unwrap();
        out.push(&data[nl + 1..nl + 1 + len]);
        data = &data[nl + 1 + len..];
    }
    out
}

/// Feeds each segment in the pieces `split` makes of it, sending the next command after each.
fn replay(segs: &[&[u8]], split: &dyn Fn(&[u8]) -> Vec<Vec<u8>>) -> Vec<Event> {
    let mut n = 0u128;
    let mut s = Session::with_nonces(move || {
        n += 1;
        n
    });
    let mut events = Vec::new();
    for (i, seg) in segs.iter().enumerate() {
        if i > 0 {
            let _ = s.command(TRANSCRIPT_COMMANDS[i - 1].as_bytes()).unwrap();
        }
        for piece in split(seg) {
            s.feed(&piece);
            events.extend(std::iter::from_fn(|| s.poll_event()));
        }
    }
    coalesce(events)
}

#[test]
fn transcript_replays_identically_at_every_split() {
    let data = std::fs::read(transcript_path()).unwrap();
    let segs = segments(&data);
    assert_eq!(segs.len(), TRANSCRIPT_COMMANDS.len() + 1);
    let whole = replay(&segs, &|seg| vec![seg.to_vec()]);
    assert_eq!(
        whole,
        vec![
            Event::Banner,
            Event::Output(b"hi\n".to_vec()),
            Event::Exited { status: 0 },
            Event::Output(b"no newline".to_vec()),
            Event::Exited { status: 0 },
            Event::Exited { status: 3 },
            Event::Output(b"\x1eE00000000000000000000000000000001 0\x1e fake\n".to_vec()),
            Event::Exited { status: 0 },
            Event::Output(b"started\n".to_vec()),
            Event::Exited { status: 0 },
            Event::Stray(b"late\n".to_vec()),
            Event::Output(b"\xff".to_vec()),
            Event::Exited { status: 0 },
        ]
    );
    let bytewise = replay(&segs, &|seg| seg.iter().map(|&b| vec![b]).collect());
    assert_eq!(bytewise, whole, "byte by byte");
    let longest = segs.iter().map(|s| s.len()).max().unwrap();
    for cut in 0..=longest {
        let two = replay(&segs, &|seg| {
            let c = cut.min(seg.len());
            vec![seg[..c].to_vec(), seg[c..].to_vec()]
        });
        assert_eq!(two, whole, "cut at {cut}");
    }
}
