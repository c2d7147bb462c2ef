//! The speed goals of the driver, each measured beside its reference in one run, under the
//! accelerator the machine offers (TCG here), printed as one table:
//!
//! - command round trip: `succeed("true")` against `( true ) </dev/null; echo tag $?` written
//!   over a plain socket to a second shell of the same guest, on its own virtio port, interleaved;
//! - wait reaction: how long after a condition turned true each wait returned (both read off the
//!   guest's clock) and the guest's CPU use during the wait;
//! - boot: `start()` to backdoor ready, against QEMU run by this program on the same start script,
//!   timing the banner, interleaved;
//! - throughput: 100 MB of command output through `execute_streaming` against the same command
//!   written to that second shell, and the driver's memory meanwhile;
//! - scale: 16 tiny guests on one VLAN pinging each other; the driver's RSS and CPU while they idle;
//! - the round trip and the polling waits again on the nixos guest, whose backdoor is bash reading
//!   `/dev/hvc0` (NixOS's backdoor.service), against bash reading a second port.
//!
//! `cargo bench -p tests --bench performance` (about five minutes here).

use driver::{Driver, Machine, Options, StartCommand};
use std::io::Write;
use std::time::{Duration, Instant};
use tests::raw::{accel, RawGuest, RawShell};

const ROUND_TRIPS: usize = 200;
const WAIT_REPEATS: usize = 9;
const BOOTS: usize = 9;
const OUTPUT_BYTES: usize = 100_000_000;
const SCALE: usize = 16;
/// How long after its start the benchmark's unit turns active.
const UNIT_DELAY: Duration = Duration::from_secs(3);

/// One line of the table.
struct Row {
    goal: String,
    measured: String,
    reference: String,
    ratio: String,
    target: String,
    pass: bool,
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// This process's resident set and peak, in KiB.
fn rss_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// CPU time (user + system) this process has used.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<u64> = after
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // Fields 14 and 15 of stat (utime, stime), counted after the command name.
    let ticks = f[11] + f[12];
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .unwrap()
        .unwrap_or(100) as u64;
    Duration::from_millis(ticks * 1000 / hz)
}

/// The guest's (busy, total) CPU jiffies so far.
fn guest_cpu(vm: &Machine) -> (u64, u64) {
    let line = vm.succeed("head -1 /proc/stat").unwrap();
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    let total: u64 = v.iter().sum();
    // idle + iowait
    (total - v[3] - v.get(4).copied().unwrap_or(0), total)
}

/// The guest's uptime, read first thing (a builtin, no process: starting one costs the systemd
/// guest about 40 ms under TCG, which would count as reaction time), then what `then` prints:
/// returns (that number, the uptime).
fn stamped(vm: &Machine, then: &str) -> (f64, f64) {
    let out = vm
        .succeed(format!("read -r up _ </proc/uptime; echo $up; {then}"))
        .unwrap();
    let v: Vec<f64> = out.split_whitespace().map(|x| x.parse().unwrap()).collect();
    (v[1], v[0])
}

fn uptime(vm: &Machine, file: &str) -> (f64, f64) {
    stamped(vm, &format!("cat {file}"))
}

/// What [`reaction`] measured.
struct Reaction {
    /// Median time from the condition turning true to the wait having returned.
    took: Duration,
    /// The guest's CPU use (busy share of all its CPU time) over the repeats.
    cpu: f64,
    /// The guest's busy CPU time per repeat.
    busy: Duration,
}

/// Runs `wait` `WAIT_REPEATS` times after the command `arm(n)` set its condition to turn true
/// later; `stamp(n)` reads when it did and when the wait had noticed.
fn reaction(
    vm: &Machine,
    what: &str,
    arm: impl Fn(usize) -> String,
    wait: impl Fn(usize),
    stamp: impl Fn(usize) -> (f64, f64),
) -> Reaction {
    let mut reactions = Vec::new();
    let mut busy = 0;
    let mut total = 0;
    for n in 0..WAIT_REPEATS {
        let (b0, t0) = guest_cpu(vm);
        vm.succeed(arm(n)).unwrap();
        wait(n);
        let (became_true, noticed) = stamp(n);
        let (b1, t1) = guest_cpu(vm);
        busy += b1 - b0;
        total += t1 - t0;
        reactions.push(Duration::from_secs_f64((noticed - became_true).max(0.0)));
    }
    let cpu = busy as f64 / total.max(1) as f64;
    // /proc/stat counts in USER_HZ, 100 per second on Linux.
    let busy = Duration::from_millis(busy * 10 / WAIT_REPEATS as u64);
    eprintln!(
        "{what}: reactions {reactions:?}, guest CPU {:.1} %, {} busy per repeat",
        cpu * 100.0,
        ms(busy)
    );
    Reaction {
        took: median(reactions),
        cpu,
        busy,
    }
}

/// `base`: the same steps with a plain sleep instead of the wait (the arming and reading
/// commands, the guest's own timers); the wait's share is what it adds.
fn reaction_row(what: &str, r: Reaction, base: &Reaction) -> Row {
    let cpu = (r.cpu - base.cpu).max(0.0);
    let pass = r.took <= Duration::from_millis(100) && cpu < 0.10;
    Row {
        goal: format!("{what}: noticed after"),
        measured: format!("{} (median of {WAIT_REPEATS})", ms(r.took)),
        reference: "condition turned true (guest clock)".into(),
        ratio: format!(
            "guest CPU +{:.1} % (over {:.1} % without a wait), +{} per wait",
            cpu * 100.0,
            base.cpu * 100.0,
            ms(r.busy.saturating_sub(base.busy))
        ),
        target: "≤ 100 ms, CPU < 10 %".into(),
        pass,
    }
}

/// `succeed("true")` against the raw round trip on `raw`, interleaved, median of ROUND_TRIPS.
fn round_trip_row(vm: &Machine, raw: &mut RawShell, guest: &str) -> Row {
    for _ in 0..20 {
        raw.round_trip("true");
        vm.succeed("true").unwrap();
    }
    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    for _ in 0..ROUND_TRIPS {
        theirs.push(raw.round_trip("true"));
        let t0 = Instant::now();
        vm.succeed("true").unwrap();
        ours.push(t0.elapsed());
    }
    let (o, t) = (median(ours), median(theirs));
    let ratio = o.as_secs_f64() / t.as_secs_f64();
    Row {
        goal: format!("command round trip: succeed(\"true\"){guest}"),
        measured: format!("{} (median of {ROUND_TRIPS})", ms(o)),
        reference: format!("raw `( true ) </dev/null; echo tag $?`: {}", ms(t)),
        ratio: format!("{ratio:.2} ×"),
        target: "≤ 1.2 ×".into(),
        pass: ratio <= 1.2,
    }
}

/// The reactions of the polling waits named in `which` on `vm`, beside a baseline of the same
/// steps with a plain sleep; `guest` is appended to each row's name.
fn wait_rows(driver: &Driver, vm: &Machine, which: &[&str], guest: &str) -> Vec<Row> {
    let stamp = |n: usize| uptime(vm, &format!("/tmp/t-{n}"));
    // In a second: note the guest's uptime in /tmp/t-N, then make the condition true. Files are
    // made by the shell's own redirection: `touch` would start a process after the stamp, and its
    // start (20-40 ms under TCG on bash's guest) would count as the wait's reaction.
    // The second grows by 100/WAIT_REPEATS ms a repeat: a wait's tries come at fixed times after
    // it starts, so a fixed delay would meet them at the same phase each time (always just after
    // a try, or always just before), where a condition of a real test turns true at any phase.
    let later = |n: usize, then: String| {
        let ms = 1000 + n * 100 / WAIT_REPEATS;
        format!(
            "( sleep {}.{:03}; read -r up _ </proc/uptime; echo $up > /tmp/t-{n}; {then} ) >/dev/null 2>&1 &",
            ms / 1000,
            ms % 1000
        )
    };
    let base = reaction(
        vm,
        &format!("baseline: a plain sleep{guest}"),
        |n| later(n, format!(": > /tmp/b-{n}")),
        |_| driver.sleep(Duration::from_millis(1100)).unwrap(),
        stamp,
    );
    let mut rows = Vec::new();
    for &wait in which {
        let r = match wait {
            "wait_until_succeeds" => reaction(
                vm,
                "wait_until_succeeds",
                |n| later(n, format!(": > /tmp/s-{n}")),
                |n| {
                    vm.wait_until_succeeds(&format!("test -e /tmp/s-{n}"), None)
                        .unwrap();
                },
                stamp,
            ),
            "wait_for_file" => reaction(
                vm,
                "wait_for_file",
                |n| later(n, format!(": > /tmp/f-{n}")),
                |n| vm.wait_for_file(&format!("/tmp/f-{n}"), None).unwrap(),
                stamp,
            ),
            "wait_for_open_port" => reaction(
                vm,
                "wait_for_open_port",
                |n| later(n, format!("nc -l -p {} </dev/null >/dev/null", 8100 + n)),
                |n| vm.wait_for_open_port(8100 + n as u16, None, None).unwrap(),
                stamp,
            ),
            "wait_for_console_text" => reaction(
                vm,
                "wait_for_console_text",
                |n| later(n, format!("echo console-mark-{n} > /dev/ttyS0")),
                |n| {
                    vm.wait_for_console_text(&format!("console-mark-{n}"), None)
                        .unwrap();
                },
                stamp,
            ),
            other => panic!("no wait row {other}"),
        };
        let what = match wait {
            "wait_until_succeeds" => "wait_until_succeeds(\"test -e /tmp/f\")".to_string(),
            other => other.to_string(),
        };
        rows.push(reaction_row(&format!("{what}{guest}"), r, &base));
    }
    rows
}

/// Whether section `name` runs: all by default, or those listed in `VMTD_BENCH` (comma-separated:
/// boot, roundtrip, throughput, waits, bash, unit, scale).
fn wanted(name: &str) -> bool {
    match std::env::var("VMTD_BENCH") {
        Ok(list) => list.split(',').any(|s| s.trim() == name),
        Err(_) => true,
    }
}

fn main() {
    let _ = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"))
        .try_init();
    let tiny = tests::guest_start_script("tiny");
    let mut rows = Vec::new();
    let options = Options::default();

    if wanted("boot") {
        // Boot, interleaved: the driver's start to backdoor, and QEMU alone to the banner.
        let mut driver_boots = Vec::new();
        let mut raw_boots = Vec::new();
        for n in 0..BOOTS {
            let raw = RawGuest::start(&tiny, n);
            raw_boots.push(raw.booted);
            drop(raw);
            let driver = Driver::with_options(&options).unwrap();
            let vm = driver
                .add_machine(StartCommand::Script(tiny.clone()))
                .unwrap();
            let t0 = Instant::now();
            vm.connect().unwrap();
            driver_boots.push(t0.elapsed());
        }
        eprintln!("boot: driver {driver_boots:?}, QEMU alone {raw_boots:?}");
        let (db, rb) = (median(driver_boots), median(raw_boots));
        let extra = db.as_secs_f64() - rb.as_secs_f64();
        rows.push(Row {
            goal: "boot: start() to backdoor ready".into(),
            measured: format!("{:.3} s", db.as_secs_f64()),
            reference: format!("QEMU alone, to the banner: {:.3} s", rb.as_secs_f64()),
            ratio: format!("{:+.1} ms", extra * 1000.0),
            target: "≤ +20 ms".into(),
            pass: extra <= 0.020,
        });
    }

    // Round trip and throughput: the driver's backdoor against a plain shell on a second virtio
    // port of the same guest (the start script passes QEMU_OPTS on to QEMU): one guest, one QEMU,
    // one kind of channel, so neither side gets a quieter guest than the other.
    let driver = Driver::with_options(&options).unwrap();
    let (vm, mut raw) = tests::raw::machine_with_reference_shell(&driver, &tiny);
    rows.push(round_trip_row(&vm, &mut raw, ""));

    if wanted("throughput") {
        // Each side twice, in the order driver, raw, raw, driver: the guest's speed drifts over
        // a run (its page cache, the host's other work), and this order cancels a steady drift.
        let cmd = format!("head -c {OUTPUT_BYTES} /dev/zero | tr '\\000' a");
        let (_, hwm0) = rss_kib();
        let (mut driver_time, mut raw_time) = (Duration::ZERO, Duration::ZERO);
        let cpu0 = cpu_time();
        for driver_turn in [true, false, false, true] {
            let t0 = Instant::now();
            if driver_turn {
                let mut got = 0;
                let status = vm
                    .execute_streaming(&cmd, Duration::from_secs(600), |b| got += b.len())
                    .unwrap();
                assert_eq!((status, got), (0, OUTPUT_BYTES));
                driver_time += t0.elapsed();
            } else {
                let mut raw_got = 0;
                raw.sock
                    .write_all(format!("( {cmd} ) </dev/null; echo; echo tag $?\n").as_bytes())
                    .unwrap();
                raw.read_until(b"\ntag 0\n", |n| raw_got += n);
                assert!(raw_got >= OUTPUT_BYTES);
                raw_time += t0.elapsed();
            }
        }
        let (_, hwm1) = rss_kib();
        eprintln!(
            "throughput: driver {} and raw {} for 2 x 100 MB each; this process's CPU {}",
            ms(driver_time),
            ms(raw_time),
            ms(cpu_time() - cpu0)
        );
        let speed = |t: Duration| 2.0 * OUTPUT_BYTES as f64 / t.as_secs_f64() / 1e6;
        let ratio = speed(driver_time) / speed(raw_time);
        rows.push(Row {
            goal: "throughput: 100 MB of output (execute_streaming), twice".into(),
            measured: format!(
                "{:.2} MB/s, driver peak RSS +{} KiB",
                speed(driver_time),
                hwm1.saturating_sub(hwm0)
            ),
            reference: format!("raw shell: {:.2} MB/s", speed(raw_time)),
            ratio: format!("{ratio:.2} ×"),
            target: "≥ 0.8 ×, memory bounded".into(),
            pass: ratio >= 0.8 && hwm1.saturating_sub(hwm0) < 16 * 1024,
        });
    }
    drop(raw);

    if wanted("waits") {
        rows.extend(wait_rows(
            &driver,
            &vm,
            &[
                "wait_until_succeeds",
                "wait_for_file",
                "wait_for_open_port",
                "wait_for_console_text",
            ],
            "",
        ));
    }
    drop(vm);
    drop(driver);

    if wanted("bash") {
        // The round trip and the polling waits again on the nixos guest, whose backdoor is bash
        // reading /dev/hvc0 as its script, as NixOS's backdoor.service runs it; the reference is bash
        // reading a second port of the same guest (`bash --norc -s`: also one byte per read).
        let driver = Driver::with_options(&options).unwrap();
        let script = tests::guest_dir("nixos").join("run-client-vm");
        let (vm, mut raw) = tests::raw::machine_with_reference(&driver, &script, "bash --norc -s");
        // Measured once the guest has finished booting, as the other rows are.
        vm.succeed("systemctl is-system-running --wait >/dev/null; true")
            .unwrap();
        let on = " (nixos guest: bash on hvc0)";
        rows.push(round_trip_row(&vm, &mut raw, on));
        drop(raw);
        rows.extend(wait_rows(
            &driver,
            &vm,
            &["wait_until_succeeds", "wait_for_file"],
            on,
        ));
    }

    if wanted("unit") {
        // wait_for_unit on the systemd guest: the unit's own activation time against the guest clock.
        let driver = Driver::with_options(&options).unwrap();
        let sd = driver
            .add_machine(StartCommand::Script(tests::guest_start_script("systemd")))
            .unwrap();
        sd.wait_for_unit("multi-user.target", None).unwrap();
        // Activating at once (a unit that does not exist fails the wait, as in NixOS), active
        // UNIT_DELAY later; its activation time is systemd's own, on the guest's monotonic clock.
        // Three seconds rather than one: any systemd client (systemctl, systemd-run) costs this
        // guest about 0.2 s of CPU under TCG, so asking systemd even once would be 20 % of a
        // one-second wait; the row also gives that cost per wait in milliseconds.
        let unit_arm = |unit: String| {
            format!(
                "systemd-run --no-block -p Type=oneshot -p RemainAfterExit=yes --unit={unit} \
                 sleep {}",
                UNIT_DELAY.as_secs_f64()
            )
        };
        let unit_stamp = |unit: String| {
            let (entered, now) = stamped(
                &sd,
                &format!("systemctl show -p ActiveEnterTimestampMonotonic --value {unit}"),
            );
            (entered / 1e6, now)
        };
        let sd_base = reaction(
            &sd,
            "baseline: a plain sleep",
            |n| unit_arm(format!("base-{n}")),
            |_| {
                driver
                    .sleep(UNIT_DELAY + Duration::from_millis(100))
                    .unwrap()
            },
            |n| unit_stamp(format!("base-{n}")),
        );
        rows.push(reaction_row(
            "wait_for_unit",
            reaction(
                &sd,
                "wait_for_unit",
                |n| unit_arm(format!("bench-{n}")),
                |n| {
                    sd.wait_for_unit(&format!("bench-{n}.service"), None)
                        .unwrap();
                },
                |n| unit_stamp(format!("bench-{n}")),
            ),
            &sd_base,
        ));
        drop(sd);
        drop(driver);
    }

    if wanted("scale") {
        // Scale: 16 tiny guests on VLAN 1, every one pinging every other.
        let driver = Driver::with_options(&options).unwrap();
        let machines: Vec<Machine> = (1..=SCALE)
            .map(|n| {
                let m = driver
                    .add_named_machine(&format!("m{n}"), StartCommand::Script(tiny.clone()))
                    .unwrap();
                m.attach_vlans(&[1]).unwrap();
                m
            })
            .collect();
        let t0 = Instant::now();
        driver.start_all().unwrap();
        for m in &machines {
            m.connect().unwrap();
        }
        let booted = t0.elapsed();
        let addresses: Vec<String> = machines.iter().map(|m| m.vlan_address(1)).collect();
        for m in &machines {
            let others: Vec<&str> = addresses
                .iter()
                .filter(|a| **a != m.vlan_address(1))
                .map(String::as_str)
                .collect();
            m.succeed(format!(
                "( for ip in {}; do ping -c 1 -W 10 $ip >/dev/null || echo lost $ip; done > /tmp/pings; \
                   echo done >> /tmp/pings ) >/dev/null 2>&1 &",
                others.join(" ")
            ))
            .unwrap();
        }
        let mut lost = 0;
        for m in &machines {
            m.wait_until_succeeds("grep -q done /tmp/pings", None)
                .unwrap();
            lost += m
                .succeed("grep -c lost /tmp/pings || true")
                .unwrap()
                .trim()
                .parse::<usize>()
                .unwrap_or(0);
        }
        let idle = Duration::from_secs(10);
        let c0 = cpu_time();
        let w0 = Instant::now();
        driver.sleep(idle).unwrap();
        let cpu = cpu_time().saturating_sub(c0).as_secs_f64() / w0.elapsed().as_secs_f64();
        let (rss, _) = rss_kib();
        rows.push(Row {
            goal: format!("scale: {SCALE} tiny guests on one VLAN, all pinging all"),
            measured: format!(
                "driver RSS {:.1} MB, CPU {:.2} % over {}s idle; {lost} of {} pings lost; booted in {:.1} s",
                rss as f64 / 1024.0,
                cpu * 100.0,
                idle.as_secs(),
                SCALE * (SCALE - 1),
                booted.as_secs_f64()
            ),
            reference: "—".into(),
            ratio: "—".into(),
            target: "RSS ≤ 10 MB, CPU ≤ 2 %, no loss".into(),
            pass: rss <= 10 * 1024 && cpu <= 0.02 && lost == 0,
        });
        drop(machines);
        drop(driver);
    }

    println!(
        "\nvm-test-driver performance, accelerator {}, {} CPUs\n",
        accel(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!("| goal | measured | reference (same run) | ratio | target | result |");
    println!("|---|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {} | {} | {} | {} | {} |",
            r.goal,
            r.measured,
            r.reference,
            r.ratio,
            r.target,
            if r.pass { "pass" } else { "FAIL" }
        );
    }
}
