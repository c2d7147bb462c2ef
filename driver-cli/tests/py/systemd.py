# What needs systemd: NixOS's words for unit states (driver-cli/tests/python_api.rs).
start_all()
machine.wait_for_unit("multi-user.target")
machine.require_unit_state("multi-user.target", "active")
with must_raise(r"Expected unit 'multi-user.target' to to be in state 'stopped' but it is in state 'active'"):
    machine.require_unit_state("multi-user.target", "stopped")
log.info("systemd API: all checks passed")
