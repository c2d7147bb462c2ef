//! The seed's webserver/client scenario as a NixOS Python testScript, through the binary, on the
//! NixOS-faithful `nixos` guest: start scripts that attach their own NICs to VLAN 1, bash on hvc0.

mod common;

use common::{assert_nothing_left, junit_cases, scratch, state_dir, BIN};
use std::process::Command;

#[test]
fn the_webserver_client_scenario_in_python_passes_on_nixos_built_machines() {
    let dir = scratch("py-nixos");
    let junit = dir.join("junit.xml");
    let dir_of = tests::guest_dir("nixos");
    let o = Command::new(BIN)
        .args(["--keep-vm-state", "--start-scripts"])
        .arg(dir_of.join("run-client-vm"))
        .arg(dir_of.join("run-webserver-vm"))
        .args(["--vlans", "1", "-o"])
        .arg(dir.join("out"))
        .arg("--junit-xml")
        .arg(&junit)
        .args(["--", "examples/nixos-webserver-client.py"])
        .current_dir(tests::repo_root())
        .output()
        .expect("cannot run vm-test-driver");
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{err}");
    let (xml, suite, names) = junit_cases(&junit);
    assert_eq!(
        names,
        [
            "the webserver serves its page",
            "the client fetches the page over VLAN 1",
            "block cuts the webserver off, unblock brings it back",
            "a partition cuts the client off until healed",
            "a slow link slows every round trip",
            "forward_port makes the server reachable from the host",
        ],
        "{xml}"
    );
    assert_eq!(suite.failures, 0, "{xml}");
    let state = state_dir(&err);
    assert_nothing_left(&state);
    std::fs::remove_dir_all(&state).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}
