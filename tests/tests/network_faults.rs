//! Network faults on three tiny guests on VLAN 1: a slow and lossy link (wirefilter) measured with
//! ping in the guest, and a partition that stops traffic both ways until healed.

use driver::{Driver, LinkQuality, Machine, StartCommand};
use std::time::Duration;
use tests::{guest_start_script, init_logging};

/// Pings `to` from `from` over VLAN 1 `count` times; the exit status and the round-trip
/// (min, avg, max) in ms when any reply came.
fn ping(from: &Machine, to: &Machine, count: u32) -> (i32, Option<(f64, f64, f64)>) {
    let dev = tests::vlan_interface(from, 1);
    let (status, out) = from
        .execute(&format!(
            "ping -q -c {count} -i 0.2 -W 1 -I \"{dev}\" {}",
            to.vlan_address(1)
        ))
        .unwrap();
    // busybox: "round-trip min/avg/max = 0.512/0.987/1.543 ms"
    let rtt = out.lines().find_map(|l| {
        let numbers = l.strip_prefix("round-trip min/avg/max = ")?;
        let v: Vec<f64> = numbers
            .trim_end_matches(" ms")
            .split('/')
            .map(|n| n.parse().unwrap())
            .collect();
        Some((v[0], v[1], v[2]))
    });
    (status, rtt)
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[test]
fn link_quality_and_partitions() {
    init_logging();
    let script = guest_start_script("tiny");
    let driver = Driver::new().unwrap();
    let add = |name: &str| {
        let m = driver
            .add_named_machine(name, StartCommand::Script(script.clone()))
            .unwrap();
        m.attach_vlans(&[1]).unwrap();
        m
    };
    let (a, b, c) = (add("a"), add("b"), add("c"));
    driver.start_all().unwrap();

    // Delay: the round trip grows by the delay of what A sends (±20 %). Measured on the fastest
    // round trip, after every guest is up and ARP resolved: other work on the host (the test suite
    // runs in parallel) only ever adds to a round trip.
    for m in [&b, &c] {
        m.succeed("true").unwrap();
    }
    assert_eq!(ping(&a, &b, 2).0, 0);
    let (status, before) = ping(&a, &b, 10);
    assert_eq!(status, 0);
    let (before, before_avg, _) = before.unwrap();
    let slow = LinkQuality {
        delay: ms(200),
        ..Default::default()
    };
    driver.set_link_quality(1, &a, slow).unwrap();
    let (status, after) = ping(&a, &b, 10);
    assert_eq!(status, 0);
    let (after, after_avg, _) = after.unwrap();
    let rise = after - before;
    eprintln!(
        "round trip A->B: min {before:.2} ms (avg {before_avg:.2}), with 200 ms delay: \
         min {after:.2} ms (avg {after_avg:.2}), +{rise:.2} ms"
    );
    assert!((160.0..=240.0).contains(&rise), "rise of {rise} ms");
    // Pings from B wait as long: A's replies cross the same link.
    let (_, from_b) = ping(&b, &a, 5);
    assert!(from_b.unwrap().1 >= 160.0, "{from_b:?}");

    // Jitter spreads the round trips.
    let jittery = LinkQuality {
        delay: ms(200),
        jitter: ms(80),
        ..Default::default()
    };
    driver.set_link_quality(1, &a, jittery).unwrap();
    let (_, spread) = ping(&a, &b, 10);
    let (min, _, max) = spread.unwrap();
    eprintln!("with 200±80 ms: min {min:.1} ms, max {max:.1} ms");
    assert!(max - min >= 20.0 && min >= 110.0, "{min}..{max}");

    // Loss: everything A sends is lost; then a perfect link again.
    let lossy = LinkQuality {
        loss_pct: 100.0,
        ..Default::default()
    };
    driver.set_link_quality(1, &a, lossy).unwrap();
    assert_ne!(ping(&a, &b, 2).0, 0, "A's packets are all lost");
    driver
        .set_link_quality(1, &a, LinkQuality::default())
        .unwrap();
    assert_eq!(ping(&a, &b, 2).0, 0);

    // Bad qualities are refused, naming the problem.
    let err = driver
        .set_link_quality(
            1,
            &a,
            LinkQuality {
                loss_pct: 101.0,
                ..Default::default()
            },
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("loss of 101 %"), "{err}");
    let err = driver
        .set_link_quality(
            1,
            &a,
            LinkQuality {
                jitter: ms(10),
                ..Default::default()
            },
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("exceeds the delay"), "{err}");
    let err = driver
        .set_link_quality(2, &a, LinkQuality::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("machine a is not attached"), "{err}");

    // A partition stops traffic between groups both ways, not within one; heal ends it.
    driver.partition(&[&[&a, &b], &[&c]]).unwrap();
    assert_eq!(ping(&a, &b, 1).0, 0, "A and B are on one side");
    assert_ne!(ping(&a, &c, 1).0, 0, "A does not reach C");
    assert_ne!(ping(&c, &a, 1).0, 0, "C does not reach A");
    assert_ne!(ping(&c, &b, 1).0, 0, "C does not reach B");
    let err = driver
        .partition(&[&[&a], &[&a, &b]])
        .unwrap_err()
        .to_string();
    assert!(err.contains("machine a is in two groups"), "{err}");
    driver.heal().unwrap();
    // Neighbour entries that failed during the partition are retried by the guest's kernel.
    let t = std::time::Instant::now();
    for (from, to) in [(&c, &a), (&b, &c)] {
        let dev = tests::vlan_interface(from, 1);
        let cmd = format!("ping -c 1 -W 1 -I \"{dev}\" {}", to.vlan_address(1));
        from.wait_until_succeeds(&cmd, Some(Duration::from_secs(30)))
            .unwrap();
    }
    eprintln!("healed: both pings through after {:?}", t.elapsed());
    for m in driver.machines() {
        m.crash().unwrap();
    }
}
