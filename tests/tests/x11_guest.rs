//! The graphical guest: X on the VM's display, windows listed by xwininfo, a window opened after
//! the wait began is found, and the screen shows it.

use std::time::{Duration, Instant};

#[test]
fn x_windows_are_seen_as_they_open() {
    let t = Instant::now();
    let (_driver, vm) = tests::driver_with("x11");
    vm.wait_for_x(Some(Duration::from_secs(300))).unwrap();
    eprintln!("x11 guest: X answers {:?} after start", t.elapsed());
    vm.wait_for_window("^first-terminal$", Some(Duration::from_secs(120)))
        .unwrap();

    // The window opens 5 s from now: after the wait below has begun.
    let opened = Instant::now();
    vm.succeed("(sleep 5; exec env DISPLAY=:0 xterm -title late-window) >/dev/null 2>&1 &")
        .unwrap();
    let t = Instant::now();
    assert!(
        opened.elapsed() < Duration::from_secs(5),
        "too slow to begin before it opens"
    );
    vm.wait_for_window("late-win", Some(Duration::from_secs(120)))
        .unwrap();
    eprintln!(
        "late window seen {:?} after the wait began, {:?} after it was asked for",
        t.elapsed(),
        opened.elapsed()
    );
    assert!(opened.elapsed() >= Duration::from_secs(5));
    let names = vm.get_window_names().unwrap();
    assert!(names.iter().any(|n| n == "late-window"), "{names:?}");

    let err = vm
        .wait_for_window("no-such-window", Some(Duration::from_secs(2)))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("late-window") && err.contains("first-terminal"),
        "{err}"
    );
    assert!(vm.wait_for_window("(", None).is_err());

    // The display shows X: a PNG of it (kept for a look), and the terminals' white on black.
    let png = std::env::temp_dir().join(format!("vmtd-x11-{}.png", std::process::id()));
    vm.screenshot(png.to_str().unwrap()).unwrap();
    let screen = vm.screen().unwrap();
    let white = screen
        .rgb
        .chunks(3)
        .filter(|p| p.iter().all(|&c| c > 200))
        .count();
    eprintln!(
        "screen {}x{}: {white} white pixels; {}",
        screen.width,
        screen.height,
        png.display()
    );
    assert!(
        white > 100_000,
        "{white} white pixels: no terminal windows on the display"
    );
    vm.crash().unwrap();
}
