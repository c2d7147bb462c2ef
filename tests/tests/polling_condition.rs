//! Polling conditions on the tiny guest: checked at the start and before each command of the block
//! (at most once per interval), not for the check's own commands, and reported by name when broken.

use driver::Error;
use std::cell::Cell;
use std::time::Duration;
use tests::driver_with;

#[test]
fn a_condition_is_checked_before_commands_and_named_when_it_breaks() {
    let (driver, vm) = driver_with("tiny");
    vm.succeed("touch /tmp/marker").unwrap();
    let checks = Cell::new(0);
    let check = || -> driver::CheckResult {
        checks.set(checks.get() + 1);
        vm.succeed("test -e /tmp/marker")?;
        Ok(())
    };

    // Interval 0: once at the start and before each of the three commands.
    driver
        .with_polling_condition("marker stays", Duration::ZERO, check, || {
            for _ in 0..3 {
                vm.succeed("true")?;
            }
            Ok(())
        })
        .unwrap();
    assert_eq!(checks.get(), 4);

    // A long interval: only the check at the start.
    checks.set(0);
    driver
        .with_polling_condition("marker stays", Duration::from_secs(600), check, || {
            for _ in 0..3 {
                vm.succeed("true")?;
            }
            Ok(())
        })
        .unwrap();
    assert_eq!(checks.get(), 1);

    // Broken in the block: the next command fails, naming the condition and why.
    let err = driver
        .with_polling_condition("marker stays", Duration::ZERO, check, || {
            vm.succeed("rm /tmp/marker")?;
            vm.succeed("echo never-run")
        })
        .unwrap_err();
    assert!(
        matches!(err.cause(), Error::PollingConditionFailed { name, .. } if name == "marker stays"),
        "{err}"
    );
    assert!(err.to_string().contains("test -e /tmp/marker"), "{err}");

    // Outside the block nothing is checked any more.
    assert_eq!(vm.succeed("echo free").unwrap(), "free\n");
}
