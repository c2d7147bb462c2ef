//! Choosing between KVM and TCG.

use std::ffi::OsStr;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::str::FromStr;

use crate::Error;

/// Environment variable that forces the accelerator (`kvm` or `tcg`).
pub const ACCEL_ENV: &str = "VMTD_ACCEL";
/// The only KVM API version there has ever been; anything else means a broken or fake `/dev/kvm`.
const KVM_API_VERSION: libc::c_int = 12;
/// `_IO(KVMIO, 0x00)` with `KVMIO = 0xAE`.
const KVM_GET_API_VERSION: libc::c_ulong = 0xAE00;

/// A QEMU accelerator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Accel {
    /// Hardware virtualisation through `/dev/kvm`.
    Kvm,
    /// QEMU's software emulator: slow, but works everywhere.
    Tcg,
}

impl fmt::Display for Accel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        })
    }
}

impl FromStr for Accel {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "kvm" => Ok(Accel::Kvm),
            "tcg" => Ok(Accel::Tcg),
            _ => Err(Error::UnknownAccel {
                value: s.to_owned(),
            }),
        }
    }
}

/// An accelerator and why it was chosen (worth logging: "why is this so slow?").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccelChoice {
    /// The chosen accelerator.
    pub accel: Accel,
    /// Which check decided, in words.
    pub reason: String,
}

/// Decide KVM vs TCG: env VMTD_ACCEL=kvm|tcg overrides (error on other values; empty counts as unset);
/// otherwise KVM only if /dev/kvm opens read-write, KVM_GET_API_VERSION returns 12, and /proc/cpuinfo has
/// vmx or svm (a nested host without them hangs guests). The reason says which check decided.
pub fn probe_accel() -> Result<AccelChoice, Error> {
    probe_with(
        std::env::var_os(ACCEL_ENV).as_deref(),
        Path::new("/dev/kvm"),
        Path::new("/proc/cpuinfo"),
    )
}

fn probe_with(
    overridden: Option<&OsStr>,
    kvm: &Path,
    cpuinfo: &Path,
) -> Result<AccelChoice, Error> {
    let tcg = |reason: String| {
        Ok(AccelChoice {
            accel: Accel::Tcg,
            reason,
        })
    };
    if let Some(value) = overridden.filter(|v| !v.is_empty()) {
        let accel =
            value
                .to_str()
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| Error::AccelOverride {
                    value: value.to_string_lossy().into_owned(),
                })?;
        return Ok(AccelChoice {
            accel,
            reason: format!("{ACCEL_ENV}={accel} is set"),
        });
    }
    let dev = match OpenOptions::new().read(true).write(true).open(kvm) {
        Ok(dev) => dev,
        Err(e) => return tcg(format!("cannot open {} read-write ({e})", kvm.display())),
    };
    match kvm_api_version(&dev) {
        Ok(KVM_API_VERSION) => {}
        Ok(v) => {
            return tcg(format!(
                "KVM_GET_API_VERSION on {} returned {v}, not {KVM_API_VERSION}",
                kvm.display()
            ))
        }
        Err(e) => {
            return tcg(format!(
                "KVM_GET_API_VERSION on {} failed ({e})",
                kvm.display()
            ))
        }
    }
    let text = match std::fs::read_to_string(cpuinfo) {
        Ok(text) => text,
        Err(e) => return tcg(format!("cannot read {} ({e})", cpuinfo.display())),
    };
    match virt_flag(&text) {
        Some(flag) => Ok(AccelChoice {
            accel: Accel::Kvm,
            reason: format!(
                "{} works (API version {KVM_API_VERSION}) and the CPU has {flag}",
                kvm.display()
            ),
        }),
        None => tcg(format!(
            "{} opens but {} lists neither vmx nor svm (KVM guests hang on such nested hosts)",
            kvm.display(),
            cpuinfo.display()
        )),
    }
}

fn kvm_api_version(dev: &File) -> std::io::Result<libc::c_int> {
    // SAFETY: KVM_GET_API_VERSION takes no argument and only returns an int; the fd is open for the call.
    let v = unsafe { libc::ioctl(dev.as_raw_fd(), KVM_GET_API_VERSION as _, 0) };
    if v < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(v)
    }
}

/// The hardware virtualisation flag (`vmx` or `svm`) of the first `flags` line, if any.
fn virt_flag(cpuinfo: &str) -> Option<&'static str> {
    let flags = cpuinfo.lines().find_map(|l| {
        let (key, value) = l.split_once(':')?;
        (key.trim() == "flags").then_some(value)
    })?;
    flags.split_whitespace().find_map(|f| match f {
        "vmx" => Some("vmx"),
        "svm" => Some("svm"),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_and_parse_round_trip() {
        for a in [Accel::Kvm, Accel::Tcg] {
            assert_eq!(a.to_string().parse::<Accel>().unwrap(), a);
        }
        let err = "KVM".parse::<Accel>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown accelerator \"KVM\"; expected \"kvm\" or \"tcg\""
        );
    }

    #[test]
    fn the_override_wins_and_bad_values_are_errors() {
        let none = Path::new("/nonexistent/kvm");
        let c = probe_with(Some("tcg".as_ref()), none, none).unwrap();
        assert_eq!(
            c,
            AccelChoice {
                accel: Accel::Tcg,
                reason: "VMTD_ACCEL=tcg is set".into()
            }
        );
        let c = probe_with(Some("kvm".as_ref()), none, none).unwrap();
        assert_eq!(c.accel, Accel::Kvm);
        let err = probe_with(Some("hvf".as_ref()), none, none).unwrap_err();
        assert_eq!(
            err.to_string(),
            "VMTD_ACCEL is \"hvf\"; expected \"kvm\" or \"tcg\""
        );
        // Empty is how shells spell "unset".
        let c = probe_with(Some("".as_ref()), none, none).unwrap();
        assert_eq!(c.accel, Accel::Tcg);
        assert!(
            c.reason
                .starts_with("cannot open /nonexistent/kvm read-write"),
            "{}",
            c.reason
        );
    }

    #[test]
    fn a_device_that_is_not_kvm_means_tcg() {
        // /dev/null opens read-write but does not know the ioctl.
        let c = probe_with(None, Path::new("/dev/null"), Path::new("/proc/cpuinfo")).unwrap();
        assert_eq!(c.accel, Accel::Tcg);
        assert!(
            c.reason
                .starts_with("KVM_GET_API_VERSION on /dev/null failed"),
            "{}",
            c.reason
        );
    }

    #[test]
    fn cpuinfo_flags() {
        let intel = "processor\t: 0\nflags\t\t: fpu vme vmx sse\nbugs\t\t: spectre\n";
        assert_eq!(virt_flag(intel), Some("vmx"));
        assert_eq!(virt_flag("flags : fpu svm\n"), Some("svm"));
        assert_eq!(virt_flag("flags : fpu vmxnet hypervisor\n"), None);
        assert_eq!(virt_flag("model name : vmx svm\n"), None);
        assert_eq!(virt_flag(""), None);
    }

    #[test]
    fn this_machine_gives_a_reason() {
        // Whether this host has usable KVM is not asserted; only that the choice is explained.
        let c = probe_with(None, Path::new("/dev/kvm"), Path::new("/proc/cpuinfo")).unwrap();
        assert!(!c.reason.is_empty());
    }
}
