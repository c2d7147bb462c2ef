# The x11 guest's run-tty-vm (machine "tty"): root logged in on tty1 by getty's autologin, and the
# keyboard typing into that terminal, as a NixOS machine with services.getty.autologinUser = "root".
# Run by driver-cli/tests/nixpkgs_machines.rs.
import re

from test_driver.errors import RequestedAssertionFailed

# Every printable character but the space and the single quote (the shell line below quotes with it).
PRINTABLE = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) != "'")

start_all()

with subtest("getty logs root in on tty1"):
    machine.wait_until_tty_matches(1, r"root@tty:~# ")
    assert machine.succeed("stty -F /dev/tty1 size").split()[1] != "80", "a VGA text console"

with subtest("a line typed on tty1 reaches its shell, unfolded"):
    machine.send_chars("cat > /tmp/typed\n")
    machine.sleep(1)
    machine.send_chars(PRINTABLE + "\n")
    machine.wait_until_tty_matches("1", re.escape(PRINTABLE), timeout=60)
    # Ctrl-D ends cat's input: the file is complete once the shell prompts again.
    machine.send_key("ctrl-d")
    machine.wait_until_succeeds("[ \"$(cat /tmp/typed)\" = '" + PRINTABLE + "' ]", timeout=60)
    machine.send_chars("echo shell-is-back > /tmp/after\n")
    machine.wait_for_file("/tmp/after", timeout=60)

with subtest("a text that never shows times out"):
    try:
        machine.wait_until_tty_matches("1", "this-never-shows", timeout=1)
    except RequestedAssertionFailed as e:
        assert "action timed out" in str(e), str(e)
    else:
        raise AssertionError("the wait did not time out")
