# What needs systemd: NixOS's words for unit states (driver-cli/tests/python_api.rs).
start_all()
machine.wait_for_unit("multi-user.target")
machine.require_unit_state("multi-user.target", "active")
with must_raise(r"Expected unit 'multi-user.target' to to be in state 'stopped' but it is in state 'active'"):
    machine.require_unit_state("multi-user.target", "stopped")

with subtest("a unit's active states, the passing ones too"):
    import datetime as dt

    unit = "vmtd-slow.service"
    machine.wait_for_unit_active_state(unit, "inactive", timeout=dt.timedelta(seconds=10))
    machine.succeed(
        f"systemd-run --no-block --unit={unit} -p Type=oneshot -p RemainAfterExit=yes sleep 4"
    )
    machine.wait_for_unit_active_state(unit, "activating", timeout=dt.timedelta(seconds=10))
    machine.wait_for_unit_active_state(unit, "active", timeout=30)
    with must_raise("action timed out"):
        machine.wait_for_unit_active_state(unit, "failed", timeout=1)
    machine.succeed(f"systemctl stop {unit}")
    machine.wait_for_unit_active_state(unit, "inactive")
log.info("systemd API: all checks passed")
