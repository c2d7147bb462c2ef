//! Screens and keyboards on the tiny guest, whose VGA console (tty1) runs a root shell: a screenshot
//! read by OCR, typing into that shell, key combinations, and waiting for text on the screen.

use driver::{Error, Options};
use std::time::{Duration, Instant};
use tests::driver_with_options;

#[test]
fn screenshots_ocr_typing_and_waiting_for_text() {
    let out = std::env::temp_dir().join(format!("vmtd-screen-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let (_driver, vm) = driver_with_options(
        "tiny",
        Options {
            output_dir: Some(out.clone()),
            ..Options::default()
        },
    );

    // A line printed to the VGA console, then read back from a screenshot by OCR.
    vm.succeed("clear > /dev/tty1; echo 'the screen says hello' > /dev/tty1")
        .unwrap();
    let png = vm.screenshot("console").unwrap();
    let decoder = png::Decoder::new(std::fs::File::open(&png).unwrap());
    assert!(decoder.read_info().unwrap().info().width >= 640);
    let t = Instant::now();
    let text = vm.get_screen_text().unwrap();
    eprintln!("OCR of one screenshot: {:?}", t.elapsed());
    assert!(text.contains("the screen says hello"), "OCR read: {text}");
    let variants = vm.get_screen_text_variants().unwrap();
    assert_eq!(variants.len(), 3);
    assert!(
        variants.iter().any(|v| v.contains("screen says hello")),
        "{variants:?}"
    );

    // Typing into the console's shell: shifted symbols, spaces and the newline that runs it.
    vm.send_chars("echo typed-by-test > /tmp/k\n", None)
        .unwrap();
    vm.wait_for_file("/tmp/k", Some(Duration::from_secs(30)))
        .unwrap();
    assert_eq!(vm.succeed("cat /tmp/k").unwrap(), "typed-by-test\n");
    vm.send_chars("echo 'Mixed: $HOME|~!@#%^&*()_+{}<>?' > /tmp/sym\n", None)
        .unwrap();
    vm.wait_for_file("/tmp/sym", Some(Duration::from_secs(30)))
        .unwrap();
    assert_eq!(
        vm.succeed("cat /tmp/sym").unwrap(),
        "Mixed: $HOME|~!@#%^&*()_+{}<>?\n"
    );

    // Combinations: shift-x types X; ctrl-u erases the line typed so far, so only what follows runs.
    vm.send_chars("echo wrong > /tmp/combo", None).unwrap();
    vm.send_keys("ctrl-u").unwrap();
    vm.send_chars("echo ", None).unwrap();
    vm.send_keys("shift-x shift-y").unwrap();
    vm.send_chars(" > /tmp/combo\n", None).unwrap();
    vm.wait_for_file("/tmp/combo", Some(Duration::from_secs(30)))
        .unwrap();
    assert_eq!(vm.succeed("cat /tmp/combo").unwrap(), "XY\n");

    // Bad keys and characters are refused before anything is sent, naming the problem.
    let err = vm.send_keys("ctrl-enter").unwrap_err().to_string();
    assert!(err.contains("unknown key \"enter\""), "{err}");
    let err = vm.send_chars("café", None).unwrap_err().to_string();
    assert!(err.contains("'é' cannot be typed"), "{err}");

    // wait_for_text sees text that appears 5 s after the call.
    vm.succeed("(sleep 5; echo 'appears later' > /dev/tty1) >/dev/null 2>&1 &")
        .unwrap();
    let t = Instant::now();
    vm.wait_for_text("appears later", Some(Duration::from_secs(60)))
        .unwrap();
    let waited = t.elapsed();
    eprintln!("wait_for_text: text printed after 5 s seen after {waited:?}");
    assert!(waited >= Duration::from_secs(5));
    // And times out showing what it read last.
    let err = vm
        .wait_for_text("never on this screen", Some(Duration::from_secs(3)))
        .unwrap_err();
    assert!(matches!(err.cause(), Error::Timeout { .. }), "{err}");
    assert!(err.to_string().contains("appears later"), "{err}");
    std::fs::remove_dir_all(&out).unwrap();
}
