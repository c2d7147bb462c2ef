//! systemd units: `systemctl`, unit properties and states, and waiting for a unit, of the system
//! manager or of a user's.

use crate::machine::Machine;
use crate::text::{parse_properties, sh_quote};
use crate::Error;
use std::collections::HashMap;
use std::time::Duration;

impl Machine {
    /// Runs `systemctl <args>` in the guest; returns its exit status and output.
    ///
    /// ```no_run
    /// # fn demo(vm: &driver::Machine) -> Result<(), driver::Error> {
    /// let (status, _) = vm.systemctl("is-active sshd")?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn systemctl(&self, args: &str) -> Result<(i32, String), Error> {
        self.execute(&systemctl_command(args, None))
    }

    /// `systemctl --user <args>` for the manager of `user` (logged in, or lingering), as NixOS's
    /// `systemctl(q, user)`: run through `su -l USER` with its `XDG_RUNTIME_DIR`.
    ///
    /// ```no_run
    /// # fn demo(vm: &driver::Machine) -> Result<(), driver::Error> {
    /// let (status, _) = vm.systemctl_as("is-active pipewire.service", "alice")?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn systemctl_as(&self, args: &str, user: &str) -> Result<(i32, String), Error> {
        self.execute(&systemctl_command(args, Some(user)))
    }

    /// `systemctl show <unit>` as a map of property to value.
    ///
    /// ```no_run
    /// # fn demo(vm: &driver::Machine) -> Result<(), driver::Error> {
    /// let info = vm.get_unit_info("nginx.service")?;
    /// assert_eq!(info["ActiveState"], "active");
    /// # Ok(())
    /// # }
    /// ```
    pub fn get_unit_info(&self, unit: &str) -> Result<HashMap<String, String>, Error> {
        self.unit_info_for(unit, None, self.limit(None))
    }

    /// [`get_unit_info`](Self::get_unit_info) of a unit of `user`'s manager.
    ///
    /// ```no_run
    /// # fn demo(vm: &driver::Machine) -> Result<(), driver::Error> {
    /// let info = vm.get_user_unit_info("app.service", "alice")?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn get_user_unit_info(
        &self,
        unit: &str,
        user: &str,
    ) -> Result<HashMap<String, String>, Error> {
        self.unit_info_for(unit, Some(user), self.limit(None))
    }

    fn unit_info_for(
        &self,
        unit: &str,
        user: Option<&str>,
        limit: Duration,
    ) -> Result<HashMap<String, String>, Error> {
        let cmd = systemctl_command(&format!("--no-pager show {}", sh_quote(unit)), user);
        Ok(parse_properties(&self.succeed_for(&cmd, limit)?))
    }

    /// Waits until `unit` is active; fails at once, with its status and journal, if it fails, and
    /// when it is inactive with no job pending (it would never start).
    ///
    /// ```no_run
    /// # fn demo(vm: &driver::Machine) -> Result<(), driver::Error> {
    /// vm.wait_for_unit("multi-user.target", None)?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn wait_for_unit(&self, unit: &str, timeout: Option<Duration>) -> Result<(), Error> {
        self.explained(Some(unit), || self.wait_for_unit_of(unit, None, timeout))
    }

    /// [`wait_for_unit`](Self::wait_for_unit) for a unit of `user`'s manager (NixOS's
    /// `wait_for_unit(unit, user)`).
    ///
    /// ```no_run
    /// # fn demo(vm: &driver::Machine) -> Result<(), driver::Error> {
    /// vm.wait_for_user_unit("app.service", "alice", None)?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn wait_for_user_unit(
        &self,
        unit: &str,
        user: &str,
        timeout: Option<Duration>,
    ) -> Result<(), Error> {
        self.explained(None, || self.wait_for_unit_of(unit, Some(user), timeout))
    }

    fn wait_for_unit_of(
        &self,
        unit: &str,
        user: Option<&str>,
        timeout: Option<Duration>,
    ) -> Result<(), Error> {
        let whose = user.map(|u| format!(" of user {u}")).unwrap_or_default();
        let _step = self.step(format!("waiting for unit {unit}{whose}"));
        self.retry(
            &format!("unit {unit}{whose} to be active"),
            self.limit(timeout),
            |left, last| {
                let info = self.follow_unit_job(unit, user, left)?;
                let state = info.get("ActiveState").map_or("", String::as_str);
                *last = format!(
                    "ActiveState={state} SubState={}",
                    info.get("SubState").map_or("", String::as_str)
                );
                match state {
                    "active" => Ok(Some(())),
                    "failed" => Err(Error::UnitFailed {
                        machine: self.name.clone(),
                        unit: unit.to_string(),
                        status: self.unit_status(unit, user),
                    }),
                    "inactive" => {
                        let jobs = systemctl_command("list-jobs --full 2>&1", user);
                        let (_, jobs) = self.execute_for(&jobs, left)?;
                        if jobs.contains("No jobs") {
                            // The unit may have started between the two queries.
                            let again = self.unit_info_for(unit, user, left)?;
                            if again.get("ActiveState").map(String::as_str) == Some("inactive") {
                                return Err(Error::UnitFailed {
                                    machine: self.name.clone(),
                                    unit: unit.to_string(),
                                    status: format!(
                                        "it is inactive and no job is pending\n{}",
                                        self.unit_status(unit, user)
                                    ),
                                });
                            }
                        }
                        Ok(None)
                    }
                    _ => Ok(None),
                }
            },
        )
    }

    /// Waits in the guest, within `left`, for `unit` of the system manager (or of `user`'s) to
    /// leave its pending job or activation, then returns its properties: systemd's own job engine
    /// does the waiting, so no poll costs the guest CPU while the unit starts (a `systemctl show`
    /// costs it about 170 ms under TCG) and the wait returns within about 0.1 s of the unit turning
    /// active.
    ///
    /// `systemctl start vmtd-wait@UNIT.target`, a target ordered after the unit and requiring it
    /// (`After=`, `Requisite=`), starts once the unit's job is done and only if the unit is then
    /// active; a unit that is inactive with no job, or failed, makes it fail at once. Either way
    /// `systemctl show` tells the state. The template goes into `/run/systemd/system` (for a user's
    /// manager `/run/systemd/user`), which systemd reads for a unit it has not loaded yet: no
    /// daemon-reload, so the user's units are left alone. `StopWhenUnneeded=` stops each instance
    /// as soon as it has started. Nothing is exec'd once the unit is active, so this answers sooner
    /// than a transient scope with the same dependencies (`systemd-run --scope`, which execs its
    /// command then: 40-50 ms per process under TCG); a manager that does not load the template
    /// gets that scope instead.
    fn follow_unit_job(
        &self,
        unit: &str,
        user: Option<&str>,
        left: Duration,
    ) -> Result<HashMap<String, String>, Error> {
        if left < Duration::from_secs(1) {
            return self.unit_info_for(unit, user, left);
        }
        let waiter = UnitWaiter::new(unit, user);
        match self.execute_for(&waiter.wait, left) {
            Ok((0, out)) => Ok(parse_properties(&out)),
            // No systemctl (a guest without systemd), say: an error now, not a wait to the end.
            Ok((status, output)) => Err(Error::CommandFailed {
                machine: self.name.clone(),
                command: waiter.wait,
                status,
                output,
            }),
            // Stopped in the guest at the timeout; the state read then is what the timeout
            // error shows.
            Err(Error::Timeout { .. }) => {
                let limit = self.limit(Some(Duration::from_secs(10)));
                Ok(parse_properties(&self.succeed_for(&waiter.cancel, limit)?))
            }
            Err(e) => Err(e),
        }
    }

    /// Waits until the job `unit` is active: NixOS's name for [`wait_for_unit`](Self::wait_for_unit).
    ///
    /// ```no_run
    /// # fn demo(vm: &driver::Machine) -> Result<(), driver::Error> {
    /// vm.wait_for_job("nginx.service", None)?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn wait_for_job(&self, unit: &str, timeout: Option<Duration>) -> Result<(), Error> {
        self.wait_for_unit(unit, timeout)
    }

    /// Fails unless `unit` is active now.
    ///
    /// ```no_run
    /// # fn demo(vm: &driver::Machine) -> Result<(), driver::Error> {
    /// vm.require_active_unit("nginx.service")?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn require_active_unit(&self, unit: &str) -> Result<(), Error> {
        self.explained(Some(unit), || {
            let info = self.get_unit_info(unit)?;
            match info.get("ActiveState").map(String::as_str) {
                Some("active") => Ok(()),
                state => Err(Error::UnitFailed {
                    machine: self.name.clone(),
                    unit: unit.to_string(),
                    status: format!(
                        "expected active, it is {}\n{}",
                        state.unwrap_or("unknown"),
                        self.unit_status(unit, None)
                    ),
                }),
            }
        })
    }

    /// `systemctl start <unit>`; returns status and output.
    ///
    /// ```no_run
    /// # fn demo(vm: &driver::Machine) -> Result<(), driver::Error> {
    /// vm.start_job("nginx.service")?;
    /// vm.wait_for_unit("nginx.service", None)?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn start_job(&self, unit: &str) -> Result<(i32, String), Error> {
        self.systemctl(&format!("start {}", sh_quote(unit)))
    }

    /// `systemctl stop <unit>`; returns status and output.
    ///
    /// ```no_run
    /// # fn demo(vm: &driver::Machine) -> Result<(), driver::Error> {
    /// vm.stop_job("nginx.service")?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn stop_job(&self, unit: &str) -> Result<(i32, String), Error> {
        self.systemctl(&format!("stop {}", sh_quote(unit)))
    }

    /// `systemctl status` and the last journal lines of `unit`, for error messages; best effort.
    fn unit_status(&self, unit: &str, user: Option<&str>) -> String {
        let q = sh_quote(unit);
        // A user's units log to the system journal, found with --user-unit.
        let journal = match user {
            None => format!("journalctl --no-pager -n 50 -u {q}"),
            Some(_) => format!("journalctl --no-pager -n 50 --user-unit {q}"),
        };
        let status = systemctl_command(&format!("--no-pager status {q}"), user);
        let cmd = format!("{status} 2>&1; {journal} 2>&1");
        match self.execute_within(&cmd, Duration::from_secs(30)) {
            Ok((_, out)) => out,
            Err(e) => format!("(could not get the unit's status: {e})"),
        }
    }
}

/// The guest commands of a wait for a unit's job: see `Machine::follow_unit_job`.
pub(crate) struct UnitWaiter {
    /// Exits 0 once the unit's job has ended, printing `ActiveState=active` or the unit's
    /// `systemctl show`.
    pub(crate) wait: String,
    /// Run after `wait` was stopped at a timeout: the waiter's start job would still be queued, to
    /// run (and fail) whenever the unit's job ends, so it goes too; prints `systemctl show`.
    pub(crate) cancel: String,
}

impl UnitWaiter {
    /// The commands waiting for `unit` of the system manager, or of `user`'s; each waiter has
    /// its own fallback scope name.
    pub(crate) fn new(unit: &str, user: Option<&str>) -> UnitWaiter {
        static WAITS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let show = systemctl_command(&format!("--no-pager show {}", sh_quote(unit)), user);
        // systemctl takes `nginx` for `nginx.service`; a dependency wants the full name.
        let full = full_unit_name(unit);
        let (u, waiter) = (
            sh_quote(&full),
            sh_quote(&format!("vmtd-wait@{full}.target")),
        );
        let scope = format!(
            "vmtd-wait-{}-{}.scope",
            std::process::id(),
            WAITS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        // A user's manager reads /run/systemd/user, which only root can write (the shell is root).
        // No directory is made where systemd does not run: programs take /run/systemd/system for
        // a sign that it does.
        let (dir, mkdir, flag) = match user {
            None => ("/run/systemd/system", "", ""),
            Some(_) => (
                "/run/systemd/user",
                "[ -d /run/systemd/system ] && mkdir -p /run/systemd/user; ",
                " --user",
            ),
        };
        let start = systemctl_command(&format!("--no-ask-password start {waiter}"), user);
        let run_scope = in_manager(
            &format!(
                "systemd-run{flag} --quiet --collect --scope --unit={scope} \
                 -p After={u} -p Requisite={u} true"
            ),
            user,
        );
        let wait = format!(
            "t={dir}/vmtd-wait@.target\n\
             [ -e $t ] || {{ {mkdir}printf '%s\\n' '[Unit]' \\\n\
             \x20 'Description=vm-test-driver: %i is active' \\\n\
             \x20 DefaultDependencies=no After=%i Requisite=%i StopWhenUnneeded=yes >$t; }} 2>/dev/null\n\
             if e=$({start} 2>&1 >/dev/null); then\n\
             \x20 echo ActiveState=active; exit 0\n\
             fi\n\
             case $e in *\"Unit vmtd-wait@\"*)\n\
             \x20 {run_scope} >/dev/null 2>&1 && {{ echo ActiveState=active; exit 0; }}\n\
             esac\n\
             {show}"
        );
        let stop = systemctl_command(&format!("stop --no-block {waiter} {scope}"), user);
        let cancel = format!("{stop} >/dev/null 2>&1; {show}");
        UnitWaiter { wait, cancel }
    }
}

/// The shell command running `systemctl <args>`: the system manager's, or `user`'s as NixOS does
/// it (a login shell of the user, `XDG_RUNTIME_DIR` set so systemctl finds the user manager).
pub(crate) fn systemctl_command(args: &str, user: Option<&str>) -> String {
    match user {
        None => format!("systemctl {args}"),
        Some(_) => in_manager(&format!("systemctl --user {args}"), user),
    }
}

/// `cmd` as root, or as `user` so that it reaches the user's manager.
fn in_manager(cmd: &str, user: Option<&str>) -> String {
    match user {
        None => cmd.to_string(),
        Some(user) => format!(
            "su -l {} --shell /bin/sh -c {}",
            sh_quote(user),
            sh_quote(&format!("XDG_RUNTIME_DIR=/run/user/$(id -u) {cmd}"))
        ),
    }
}

/// `unit` with the `.service` that systemctl adds to a name without a unit type.
fn full_unit_name(unit: &str) -> String {
    const TYPES: [&str; 11] = [
        "service",
        "socket",
        "target",
        "device",
        "mount",
        "automount",
        "swap",
        "timer",
        "path",
        "slice",
        "scope",
    ];
    match unit.rsplit_once('.') {
        Some((_, ty)) if TYPES.contains(&ty) => unit.to_string(),
        _ => format!("{unit}.service"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_names_get_the_type_systemctl_would_add() {
        assert_eq!(full_unit_name("nginx"), "nginx.service");
        assert_eq!(full_unit_name("nginx.service"), "nginx.service");
        assert_eq!(full_unit_name("multi-user.target"), "multi-user.target");
        assert_eq!(full_unit_name("getty@tty1"), "getty@tty1.service");
        assert_eq!(full_unit_name("app.v2"), "app.v2.service");
    }
}
