//! `VMTD_ACCEL` handling, in a test binary of its own because it changes the process environment.

use qemu_proc::{probe_accel, Accel, Error, ACCEL_ENV};

#[test]
fn the_environment_overrides_the_probe() {
    // One test only: the environment is process-wide.
    std::env::remove_var(ACCEL_ENV);
    let probed = probe_accel().unwrap();
    assert!(!probed.reason.is_empty());

    std::env::set_var(ACCEL_ENV, "tcg");
    let forced = probe_accel().unwrap();
    assert_eq!(forced.accel, Accel::Tcg);
    assert_eq!(forced.reason, "VMTD_ACCEL=tcg is set");

    std::env::set_var(ACCEL_ENV, "kvm");
    assert_eq!(probe_accel().unwrap().accel, Accel::Kvm);

    std::env::set_var(ACCEL_ENV, "fast");
    let err = probe_accel().unwrap_err();
    assert!(matches!(err, Error::AccelOverride { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "VMTD_ACCEL is \"fast\"; expected \"kvm\" or \"tcg\""
    );

    std::env::set_var(ACCEL_ENV, "");
    assert_eq!(probe_accel().unwrap(), probed);
    std::env::remove_var(ACCEL_ENV);
}
