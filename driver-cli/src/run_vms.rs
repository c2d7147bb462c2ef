//! `run-vms`: start every machine of a network, say how to reach each, and keep them running until
//! Ctrl-C (or SIGTERM), then stop them all.

use crate::args::Network;
use crate::output::Output;
use crate::setup::{network_driver, setup_error, usage, Failure};
use driver::{Driver, Machine};
use std::time::Duration;

/// How often the machines are checked for having exited by themselves.
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// One `--forward`: a host port on 127.0.0.1 to a guest port of a machine.
#[derive(Debug, PartialEq)]
struct Forward {
    machine: Option<String>,
    host: u16,
    guest: u16,
}

fn parse_forward(spec: &str) -> Result<Forward, String> {
    let parts: Vec<&str> = spec.split(':').collect();
    let port = |p: &str| {
        p.parse::<u16>()
            .map_err(|_| format!("--forward {spec}: {p:?} is not a TCP port"))
    };
    match parts.as_slice() {
        [host, guest] => Ok(Forward {
            machine: None,
            host: port(host)?,
            guest: port(guest)?,
        }),
        [machine, host, guest] => Ok(Forward {
            machine: Some(machine.to_string()),
            host: port(host)?,
            guest: port(guest)?,
        }),
        _ => Err(format!("--forward {spec}: expected [MACHINE:]HOST:GUEST")),
    }
}

/// Runs the `run-vms` mode; returns when interrupted or when every machine has stopped.
pub fn run(net: &Network, forwards: &[String], out: &'static Output) -> Result<(), Failure> {
    let forwards = forwards
        .iter()
        .map(|f| parse_forward(f))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| usage(&e))?;
    if net.start_scripts.is_empty() && net.machines.is_empty() {
        return Err(usage("run-vms needs --start-scripts or --machine"));
    }
    let driver = network_driver(net, out)?;
    let result = serve(&driver, net, &forwards);
    driver.stop_all();
    log::info!("all machines stopped");
    result
}

fn serve(driver: &Driver, net: &Network, forwards: &[Forward]) -> Result<(), Failure> {
    let machines = driver.machines();
    let failed = |e: driver::Error| match driver.take_signal() {
        // Ctrl-C is how this mode is meant to end.
        Some(_) => Ok(()),
        None => Err(Failure::Test(e.into())),
    };
    if let Err(e) = driver.start_all() {
        return failed(e);
    }
    for vm in &machines {
        if let Err(e) = vm.connect() {
            return failed(e);
        }
    }
    for f in forwards {
        let vm = match &f.machine {
            Some(name) => driver.machine(name).map_err(setup_error)?,
            None => machines[0].clone(),
        };
        if let Err(e) = vm.forward_port(f.host, f.guest) {
            return failed(e);
        }
    }
    println!("{}", describe(driver, &machines, net, forwards));
    loop {
        if let Err(e) = driver.sleep(CHECK_EVERY) {
            return failed(e);
        }
        if machines.iter().all(|vm| !vm.is_running()) {
            log::info!("every machine has stopped by itself");
            return Ok(());
        }
    }
}

/// What a user needs to reach the machines.
fn describe(driver: &Driver, machines: &[Machine], net: &Network, forwards: &[Forward]) -> String {
    let mut s = String::from("machines running; press Ctrl-C to stop them\n");
    for vm in machines {
        s += &format!("{}:\n", vm.name());
        for vlan in &net.vlans {
            s += &format!("  vlan {vlan}: {}\n", vm.vlan_address(*vlan));
        }
        for f in forwards {
            let mine = f.machine.as_deref().unwrap_or(machines[0].name()) == vm.name();
            if mine {
                s += &format!("  127.0.0.1:{} -> guest port {}\n", f.host, f.guest);
            }
        }
        if let Some(dir) = &net.output_dir {
            s += &format!(
                "  serial console: {}\n",
                dir.join(format!("{}.console.log", vm.name())).display()
            );
        }
    }
    s += &format!("state directory: {}", driver.state_dir().display());
    if net.output_dir.is_none() {
        s += "\n(give --output-dir DIR to keep the log and each serial console in files)";
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwards_parse_with_and_without_a_machine_and_name_bad_parts() {
        assert_eq!(
            parse_forward("8080:80"),
            Ok(Forward {
                machine: None,
                host: 8080,
                guest: 80
            })
        );
        assert_eq!(
            parse_forward("web:2222:22").unwrap().machine.as_deref(),
            Some("web")
        );
        assert!(parse_forward("80")
            .unwrap_err()
            .contains("[MACHINE:]HOST:GUEST"));
        assert!(parse_forward("web:99999:22")
            .unwrap_err()
            .contains("\"99999\" is not a TCP port"));
    }
}
