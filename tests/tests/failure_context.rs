//! Failure context on the tiny guest: a failed call carries the machine's last console lines and a
//! screenshot of its display without the test asking, and nested calls gather it once.

use driver::{Error, Options};
use tests::driver_with_options;

#[test]
fn a_failed_call_carries_console_lines_and_a_screenshot() {
    let out = std::env::temp_dir().join(format!("vmtd-context-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let options = Options {
        output_dir: Some(out.clone()),
        ..Options::default()
    };
    let (_driver, vm) = driver_with_options("tiny", options);

    // Printed on the console and on the VGA text screen (tty1) before the failure.
    vm.succeed("echo context-marker > /dev/ttyS0; echo on-the-screen > /dev/tty1")
        .unwrap();
    let err = vm.succeed("echo its-output; exit 3").unwrap_err();
    assert!(
        matches!(err.cause(), Error::CommandFailed { status: 3, .. }),
        "{err}"
    );
    let context = err.context().expect("a failed succeed carries context");
    assert_eq!(context.machine, "tiny");
    assert!(
        context.console.iter().any(|l| l == "context-marker"),
        "{:?}",
        context.console
    );
    assert!(context.console.len() <= 50);
    let png = context
        .screenshot
        .clone()
        .expect("the tiny guest has a VGA display");
    assert_eq!(png, out.join("tiny-failure-1.png"));
    let decoder = png::Decoder::new(std::fs::File::open(&png).unwrap());
    let info = decoder.read_info().unwrap().info().clone();
    assert!(
        info.width >= 640 && info.height >= 400,
        "{}x{}",
        info.width,
        info.height
    );
    // The message shows the error first, then the context.
    let msg = err.to_string();
    let (error_part, context_part) = msg.split_once("--- context of machine tiny ---").unwrap();
    assert!(error_part.contains("its-output"), "{msg}");
    assert!(context_part.contains("tiny# context-marker"), "{msg}");
    assert!(context_part.contains("tiny-failure-1.png"), "{msg}");

    // A wait's polled command: its last output is in the error, the context follows once.
    let err = vm
        .wait_until_succeeds(
            "echo polled-output; false",
            Some(std::time::Duration::from_secs(1)),
        )
        .unwrap_err();
    assert!(matches!(err.cause(), Error::Timeout { .. }), "{err}");
    assert!(err.to_string().contains("polled-output"), "{err}");
    assert_eq!(
        err.to_string().matches("--- context of").count(),
        1,
        "{err}"
    );
    assert!(out.join("tiny-failure-2.png").is_file());

    // The screen's pixels, and a screenshot under a bare name into the output directory.
    let screen = vm.screen().unwrap();
    assert_eq!(
        screen.rgb.len(),
        (screen.width * screen.height * 3) as usize
    );
    assert!(
        screen.rgb.iter().any(|&b| b != 0),
        "the text on tty1 is not black"
    );
    assert_eq!(vm.screenshot("named").unwrap(), out.join("named.png"));
    assert!(out.join("named.png").is_file());
    assert_eq!(
        vm.screenshot("sub/shot.png").unwrap(),
        out.join("sub/shot.png")
    );
    let absolute = out.join("elsewhere");
    assert_eq!(
        vm.screenshot(absolute.to_str().unwrap()).unwrap(),
        out.join("elsewhere.png")
    );
    assert!(out.join("sub/shot.png").is_file() && out.join("elsewhere.png").is_file());

    // A command that outlives its timeout is stopped in the guest, so the shell is free at once for
    // the next call and for gathering its context.
    let t = std::time::Instant::now();
    let short = std::time::Duration::from_millis(300);
    let err = vm.execute_within("sleep 4", short).unwrap_err();
    assert!(err.to_string().contains("(stopped in the guest)"), "{err}");
    vm.fail("pidof sleep").unwrap();
    assert!(
        t.elapsed() < std::time::Duration::from_secs(3),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(vm.succeed("echo usable").unwrap(), "usable\n");

    // A failure that is not the test's (an invalid regex) carries no context.
    let err = vm.wait_for_console_text("(", None).unwrap_err();
    assert!(err.context().is_none(), "{err}");
    std::fs::remove_dir_all(&out).unwrap();
}
