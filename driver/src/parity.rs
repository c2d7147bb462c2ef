//! Newer NixOS driver methods: unit properties and states (and waiting for one), unix sockets,
//! and the newer name of `copy_from_vm`.

use crate::text::sh_quote;
use crate::{Error, Machine};
use std::time::Duration;

impl Machine {
    /// One property of a unit (`systemctl show --property`), as NixOS's `get_unit_property`.
    ///
    /// ```no_run
    /// # fn demo(vm: &driver::Machine) -> Result<(), driver::Error> {
    /// assert_eq!(vm.get_unit_property("nginx.service", "Type")?, "notify");
    /// # Ok(())
    /// # }
    /// ```
    pub fn get_unit_property(&self, unit: &str, property: &str) -> Result<String, Error> {
        if property.is_empty() || !property.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(Error::BadOption(format!(
                "get_unit_property: {property:?} is not a property name"
            )));
        }
        let out = self.succeed_quietly(&format!(
            "systemctl --no-pager show --property={property} {}",
            sh_quote(unit)
        ))?;
        let prefix = format!("{property}=");
        let value = out.lines().find_map(|l| l.strip_prefix(&prefix));
        value.map(str::to_string).ok_or_else(|| Error::UnitFailed {
            machine: self.name.clone(),
            unit: unit.to_string(),
            status: format!("it has no property {property}; systemctl said:\n{out}"),
        })
    }

    /// Fails unless `unit`'s ActiveState is `state` (`active`, `inactive`, `failed`, …), as
    /// NixOS's `require_unit_state`.
    ///
    /// ```no_run
    /// # fn demo(vm: &driver::Machine) -> Result<(), driver::Error> {
    /// vm.require_unit_state("backup.service", "inactive")?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn require_unit_state(&self, unit: &str, state: &str) -> Result<(), Error> {
        self.explained(Some(unit), || {
            let now = self.get_unit_property(unit, "ActiveState")?;
            if now == state {
                return Ok(());
            }
            Err(Error::UnitFailed {
                machine: self.name.clone(),
                unit: unit.to_string(),
                status: format!("expected {state}, it is {now}"),
            })
        })
    }

    /// Waits until something accepts connections on the unix socket at `path` in the guest
    /// (`datagram` for a SOCK_DGRAM socket), as NixOS's `wait_for_open_unix_socket`; needs
    /// OpenBSD's netcat (`nc -U`) in the guest.
    ///
    /// ```no_run
    /// # fn demo(vm: &driver::Machine) -> Result<(), driver::Error> {
    /// vm.wait_for_open_unix_socket("/run/app.sock", false, None)?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn wait_for_open_unix_socket(
        &self,
        path: &str,
        datagram: bool,
        timeout: Option<Duration>,
    ) -> Result<(), Error> {
        let _step = self.step(format!("waiting for unix socket {path}"));
        let flags = if datagram { "-uzU" } else { "-zU" };
        let cmd = format!("nc {flags} {} 2>&1", sh_quote(path));
        self.until_exit_0(
            &format!("unix socket {path} to accept connections"),
            &cmd,
            self.limit(timeout),
        )
    }

    /// NixOS's newer name of [`copy_from_vm`](Self::copy_from_vm).
    ///
    /// ```no_run
    /// # fn demo(vm: &driver::Machine) -> Result<(), driver::Error> {
    /// let bytes = vm.copy_from_machine("/etc/hostname")?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn copy_from_machine(&self, source: &str) -> Result<Vec<u8>, Error> {
        self.copy_from_vm(source)
    }

    /// Waits until `unit` (of `user`'s manager when given) is in the `ActiveState` `state`
    /// (`active`, `activating`, `reloading`, `deactivating`, `inactive`, `failed`, …), whatever
    /// it passes through before: NixOS's `wait_for_unit_active_state`.
    ///
    /// ```no_run
    /// # fn demo(vm: &driver::Machine) -> Result<(), driver::Error> {
    /// vm.succeed("systemctl stop --no-block app.service")?;
    /// vm.wait_for_unit_active_state("app.service", "inactive", None, None)?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn wait_for_unit_active_state(
        &self,
        unit: &str,
        state: &str,
        user: Option<&str>,
        timeout: Option<Duration>,
    ) -> Result<(), Error> {
        let whose = user.map(|u| format!(" of user {u}")).unwrap_or_default();
        let _step = self.step(format!("waiting for unit {unit}{whose} to be {state}"));
        let show = crate::systemd::systemctl_command(
            &format!(
                "--no-pager show --property=ActiveState --value {}",
                sh_quote(unit)
            ),
            user,
        );
        let what = format!("unit {unit}{whose} to be {state}");
        self.explained(Some(unit), || {
            self.retry(&what, self.limit(timeout), |left, last| {
                let got = self.succeed_for(&show, left)?;
                let now = got.trim();
                *last = format!("ActiveState={now}");
                Ok((now == state).then_some(()))
            })
        })
    }
}
