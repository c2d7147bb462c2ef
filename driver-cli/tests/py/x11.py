# The x11 guest's run-x11-vm: an xterm opened by a test command (the backdoor exports DISPLAY, as
# NixOS's does), listed among the windows, on a screenshot, and read back by OCR.
# Run by driver-cli/tests/nixpkgs_machines.rs.
from test_driver.errors import RequestedAssertionFailed

start_all()
machine.wait_for_x()

with subtest("a test command opens a window on the display"):
    machine.succeed("xterm -title opened-by-test -geometry 40x3+0+560 -e sh -c 'echo six times seven is $((6 * 7)); exec sleep 3600' >&2 &")
    machine.wait_for_window("^opened-by-test$", timeout=120)
    names = machine.get_window_names()
    assert "first-terminal" in names and "opened-by-test" in names, names

with subtest("a window that never opens times out"):
    try:
        machine.wait_for_window("no-such-window", timeout=1)
    except RequestedAssertionFailed as e:
        assert "action timed out" in str(e), str(e)
    else:
        raise AssertionError("the wait did not time out")

with subtest("screenshots go where they are told"):
    machine.screenshot("desktop")
    assert (driver.out_dir / "desktop.png").exists()

with subtest("OCR reads what the terminals show"):
    machine.wait_for_text("six times seven is 42", timeout=120)
    machine.wait_for_text("root@x11", timeout=120)
    assert any("42" in text for text in machine.get_screen_text_variants())
