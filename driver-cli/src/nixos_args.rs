//! The NixOS test driver's command line (`nixos/lib/test-driver`), so that the derivation nixpkgs
//! builds around `nixos-test-driver` can call `vm-test-driver` unchanged.
//!
//! nixpkgs never puts the test script or the machines on the command line: its wrapper
//! (`nixos/lib/testing/driver.nix`) sets them as environment variables (`startScripts`, later
//! `vmStartScripts` and `vmNames`, `vlans`, `testScript`, `globalTimeout`) or, today, in a JSON file
//! given with `--config`, and the test derivation (`run.nix`) adds `-o $out`. The spellings that
//! mean one of our options are clap aliases in `args`; this module holds the rest and turns all of
//! it into our options, in NixOS's order of precedence: command line, then `--config`, then the
//! environment.

use crate::args::{Network, RunArgs};
use crate::setup::{usage, Failure};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Reads an environment variable; tests pass a map instead of the process's environment.
pub type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The process's environment (a value that is not UTF-8 counts as unset).
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// What `--config` holds (nixpkgs' `driverConfiguration`); fields added later are ignored.
#[derive(Deserialize)]
struct DriverConfiguration {
    #[serde(default)]
    vms: BTreeMap<String, MachineConfiguration>,
    #[serde(default)]
    containers: BTreeMap<String, serde_json::Value>,
    #[serde(default)]
    vlans: Vec<u32>,
    /// Seconds (nixpkgs writes an integer).
    global_timeout: Option<f64>,
    #[serde(default)]
    enable_ssh_backdoor: bool,
    test_script: Option<PathBuf>,
}

#[derive(Deserialize)]
struct MachineConfiguration {
    name: String,
    start_script: PathBuf,
}

/// The log level asked for by `--log-level` or `logLevel`, in the `log` crate's terms.
pub fn log_level(args: &RunArgs, env: Env) -> Option<log::LevelFilter> {
    let level = args.nixos.log_level.clone().or_else(|| env("logLevel"))?;
    match level.as_str() {
        "debug" => Some(log::LevelFilter::Debug),
        "info" => Some(log::LevelFilter::Info),
        "warning" => Some(log::LevelFilter::Warn),
        "error" => Some(log::LevelFilter::Error),
        other => {
            // The environment is not checked by clap; the log is not up yet to warn in.
            eprintln!("ignoring logLevel={other}: expected debug, info, warning or error");
            None
        }
    }
}

/// Turns the NixOS spellings of a run into our options: `--config`, then the environment, fill in
/// what the command line left out; `--junit-xml` becomes `--junit`.
pub fn resolve(args: &mut RunArgs, env: Env) -> Result<(), Failure> {
    if let Some(file) = args.nixos.config.clone() {
        apply_config(args, &file)?;
    }
    reject_containers("--container-names", !args.nixos.container_names.is_empty())?;
    reject_containers(
        "--container-start-scripts",
        !args.nixos.container_start_scripts.is_empty(),
    )?;
    resolve_network(&mut args.network, env)?;
    if args.test_script.is_none() {
        args.test_script = env("testScript").map(PathBuf::from);
    }
    if !args.enable_ocr {
        args.enable_ocr = env("enableOCR").is_some_and(|v| matches!(v.trim(), "1" | "true"));
    }
    if args.global_timeout.is_none() {
        if let Some(t) = env("globalTimeout") {
            let t = t.trim().parse::<f64>().map_err(|_| {
                usage(&format!(
                    "globalTimeout={t} (from the environment) is not a number of seconds"
                ))
            })?;
            args.global_timeout = Some(t);
        }
    }
    if let Some(file) = args.nixos.junit_xml.take() {
        // NixOS writes `output_directory / junit_xml`: a relative path lands in the output
        // directory (the derivation's $out), an absolute one where it says.
        args.junit = Some(match &args.network.output_dir {
            Some(dir) => dir.join(file),
            None => file,
        });
    }
    if let Some(address) = &args.nixos.debug_hook_attach {
        log::warn!(
            "--debug-hook-attach {address} is ignored: there is no Python debugger to attach to \
             (a failure ends the run as without it)"
        );
    }
    if args.nixos.dump_vsocks.is_some() {
        log::warn!("--dump-vsocks is ignored: guests have no SSH backdoor over vsock here");
    }
    if let Some(file) = env("LOGFILE").filter(|f| f != "/dev/null") {
        log::warn!("LOGFILE={file} is ignored: NixOS's XML log is not written; --output-dir writes log.txt");
    }
    Ok(())
}

/// Fills a network's machines and VLANs from NixOS's environment variables where the command line
/// gave none, and refuses containers.
pub fn resolve_network(net: &mut Network, env: Env) -> Result<(), Failure> {
    let list = |name: &str| -> Vec<String> {
        env(name)
            .map(|v| v.split_whitespace().map(String::from).collect())
            .unwrap_or_default()
    };
    if net.start_scripts.is_empty() {
        // vmStartScripts replaced startScripts in nixpkgs; a wrapper sets one of them.
        let mut scripts = list("vmStartScripts");
        if scripts.is_empty() {
            scripts = list("startScripts");
        }
        net.start_scripts = scripts.into_iter().map(PathBuf::from).collect();
    }
    if net.vm_names.is_empty() {
        net.vm_names = list("vmNames");
    }
    if net.vlans.is_empty() {
        // nixpkgs lists each machine's VLANs in turn, so a number can come more than once.
        for v in list("vlans") {
            let n = v.parse::<u32>().map_err(|_| {
                usage(&format!(
                    "vlans (from the environment) holds {v:?}: expected VLAN numbers separated by spaces"
                ))
            })?;
            if !net.vlans.contains(&n) {
                net.vlans.push(n);
            }
        }
    }
    reject_containers("containerNames", !list("containerNames").is_empty())?;
    reject_containers(
        "containerStartScripts",
        !list("containerStartScripts").is_empty(),
    )?;
    Ok(())
}

fn reject_containers(given: &str, non_empty: bool) -> Result<(), Failure> {
    if non_empty {
        return Err(usage(&format!(
            "{given}: systemd-nspawn containers are not supported, only QEMU virtual machines \
             (--start-scripts); an empty list is accepted"
        )));
    }
    Ok(())
}

/// Takes from nixpkgs' driver configuration file what the command line did not give.
fn apply_config(args: &mut RunArgs, file: &std::path::Path) -> Result<(), Failure> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| usage(&format!("--config {}: cannot read it: {e}", file.display())))?;
    let config: DriverConfiguration = serde_json::from_str(&text).map_err(|e| {
        usage(&format!(
            "--config {}: not a NixOS driver configuration ({e}); expected JSON with vms, vlans, \
             global_timeout and test_script",
            file.display()
        ))
    })?;
    reject_containers(
        &format!("--config {} has containers", file.display()),
        !config.containers.is_empty(),
    )?;
    if config.enable_ssh_backdoor {
        log::warn!(
            "--config {}: enable_ssh_backdoor is ignored: guests have no SSH backdoor over vsock here",
            file.display()
        );
    }
    let net = &mut args.network;
    if net.start_scripts.is_empty() && net.vm_names.is_empty() {
        for vm in config.vms.into_values() {
            net.vm_names.push(vm.name);
            net.start_scripts.push(vm.start_script);
        }
    }
    if net.vlans.is_empty() {
        net.vlans = config.vlans;
    }
    if args.global_timeout.is_none() {
        args.global_timeout = config.global_timeout;
    }
    if args.test_script.is_none() {
        args.test_script = config.test_script;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::Cli;
    use clap::Parser;
    use std::path::Path;

    fn parse(cli: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("vm-test-driver").chain(cli.iter().copied()))
    }

    /// The run's options after the NixOS spellings are resolved against `env`.
    fn resolved(cli: &[&str], env: &[(&str, &str)]) -> Result<RunArgs, String> {
        let mut args = parse(cli).map_err(|e| e.to_string())?.run;
        let map: BTreeMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let lookup = |name: &str| map.get(name).cloned();
        match resolve(&mut args, &lookup) {
            Ok(()) => Ok(args),
            Err(Failure::Setup(e)) => Err(e.to_string()),
            Err(_) => Err("not a usage error".into()),
        }
    }

    fn ok(cli: &[&str]) -> RunArgs {
        resolved(cli, &[]).unwrap()
    }

    fn paths(p: &[PathBuf]) -> Vec<&str> {
        p.iter().map(|p| p.to_str().unwrap()).collect()
    }

    #[test]
    fn start_scripts_have_the_nixos_spellings() {
        for flag in ["--start-scripts", "--vm-start-scripts"] {
            let a = ok(&[flag, "run-a-vm", "run-b-vm", "--", "t.rhai"]);
            assert_eq!(paths(&a.network.start_scripts), ["run-a-vm", "run-b-vm"]);
            assert_eq!(a.test_script.as_deref(), Some(Path::new("t.rhai")));
        }
        let a = ok(&[
            "--vm-names",
            "a",
            "b",
            "--vm-start-scripts",
            "x",
            "y",
            "--",
            "t",
        ]);
        assert_eq!(a.network.vm_names, ["a", "b"]);
    }

    #[test]
    fn output_directory_has_every_nixos_spelling() {
        for cli in [
            &["-o", "out"][..],
            &["-oout"],
            &["--output_directory", "out"],
            &["--output_directory=out"],
            &["--output-directory", "out"],
            &["--output-dir", "out"],
        ] {
            let a = ok(cli);
            assert_eq!(
                a.network.output_dir.as_deref(),
                Some(Path::new("out")),
                "{cli:?}"
            );
        }
    }

    #[test]
    fn keep_state_interactive_and_timeout_flags() {
        for flag in ["-K", "--keep-vm-state", "--keep-machine-state"] {
            assert!(ok(&[flag]).network.keep_vm_state, "{flag}");
        }
        assert!(ok(&["-I"]).interactive);
        assert!(ok(&["--interactive"]).interactive);
        // argparse's BooleanOptionalAction: the last of the two wins (nixos-run-vms adds --no-interactive).
        assert!(!ok(&["--interactive", "--no-interactive"]).interactive);
        assert!(ok(&["--no-interactive", "-I"]).interactive);
        assert_eq!(
            ok(&["--global-timeout", "3600"]).global_timeout,
            Some(3600.0)
        );
    }

    #[test]
    fn junit_xml_is_relative_to_the_output_directory_as_in_nixos() {
        let a = ok(&["-o", "/out", "--junit-xml", "junit.xml"]);
        assert_eq!(a.junit.as_deref(), Some(Path::new("/out/junit.xml")));
        let a = ok(&["-o", "/out", "--junit-xml", "/tmp/j.xml"]);
        assert_eq!(a.junit.as_deref(), Some(Path::new("/tmp/j.xml")));
        let a = ok(&["--junit-xml", "j.xml"]);
        assert_eq!(a.junit.as_deref(), Some(Path::new("j.xml")));
        let e = resolved(&["--junit", "a.xml", "--junit-xml", "b.xml"], &[]).unwrap_err();
        assert!(e.contains("--junit-xml") && e.contains("--junit"), "{e}");
    }

    #[test]
    fn the_derivations_call_takes_the_rest_from_the_wrappers_environment() {
        // driver.nix: wrapProgram --set startScripts/testScript/globalTimeout/vlans; run.nix: -o $out.
        let env = [
            (
                "startScripts",
                "/nix/a/bin/run-server-vm /nix/b/bin/run-client-vm",
            ),
            ("testScript", "/nix/t/test-script"),
            ("globalTimeout", "3600"),
            ("vlans", "1 1 2"),
            ("LOGFILE", "/dev/null"),
        ];
        let a = resolved(&["-o", "/nix/store/out"], &env).unwrap();
        assert_eq!(
            paths(&a.network.start_scripts),
            ["/nix/a/bin/run-server-vm", "/nix/b/bin/run-client-vm"]
        );
        assert_eq!(a.network.vlans, [1, 2]);
        assert_eq!(
            a.test_script.as_deref(),
            Some(Path::new("/nix/t/test-script"))
        );
        assert_eq!(a.global_timeout, Some(3600.0));
        assert_eq!(
            a.network.output_dir.as_deref(),
            Some(Path::new("/nix/store/out"))
        );

        // The later wrapper: vmNames and vmStartScripts.
        let env = [
            ("vmNames", "server client"),
            (
                "vmStartScripts",
                "/nix/a/bin/run-server-vm /nix/b/bin/run-client-vm",
            ),
            ("containerNames", ""),
            ("testScript", "/nix/t/test-script"),
        ];
        let a = resolved(&["-o", "/nix/store/out"], &env).unwrap();
        assert_eq!(a.network.vm_names, ["server", "client"]);
        assert_eq!(a.network.start_scripts.len(), 2);

        // The command line wins over the environment, as with argparse's defaults.
        let a = resolved(
            &["--global-timeout", "5", "--vlans", "3", "--", "mine.rhai"],
            &[
                ("globalTimeout", "3600"),
                ("vlans", "1"),
                ("testScript", "t"),
            ],
        )
        .unwrap();
        assert_eq!(
            (a.global_timeout, a.network.vlans, a.test_script),
            (Some(5.0), vec![3], Some(PathBuf::from("mine.rhai")))
        );
    }

    #[test]
    fn bad_environment_values_are_usage_errors_naming_the_variable() {
        let e = resolved(&[], &[("globalTimeout", "soon")]).unwrap_err();
        assert!(
            e.contains("globalTimeout=soon") && e.contains("seconds"),
            "{e}"
        );
        let e = resolved(&[], &[("vlans", "1 x")]).unwrap_err();
        assert!(e.contains("vlans") && e.contains("\"x\""), "{e}");
    }

    #[test]
    fn containers_are_refused_unless_the_list_is_empty() {
        let a = ok(&["--container-names", "--container-start-scripts", "--", "t"]);
        assert_eq!(a.test_script.as_deref(), Some(Path::new("t")));
        for cli in [
            &["--container-names", "c", "--", "t"][..],
            &["--container-start-scripts", "run-c", "--", "t"],
        ] {
            let e = resolved(cli, &[]).unwrap_err();
            assert!(e.contains(cli[0]) && e.contains("not supported"), "{e}");
        }
        let e = resolved(&[], &[("containerStartScripts", "/nix/c/run-c")]).unwrap_err();
        assert!(e.contains("containerStartScripts"), "{e}");
    }

    #[test]
    fn ignored_flags_are_accepted() {
        let a = ok(&[
            "--debug-hook-attach",
            "/tmp/hook",
            "--dump-vsocks",
            "3",
            "--",
            "t",
        ]);
        assert_eq!(a.test_script.as_deref(), Some(Path::new("t")));
        assert!(parse(&["--dump-vsocks", "x"]).is_err());
    }

    #[test]
    fn log_level_takes_the_nixos_names() {
        let level = |cli: &[&str], env: Option<&str>| {
            let args = parse(cli).unwrap().run;
            let env = env.map(String::from);
            log_level(&args, &|name: &str| {
                (name == "logLevel").then(|| env.clone()).flatten()
            })
        };
        assert_eq!(
            level(&["--log-level", "warning"], None),
            Some(log::LevelFilter::Warn)
        );
        assert_eq!(level(&[], Some("debug")), Some(log::LevelFilter::Debug));
        assert_eq!(
            level(&["--log-level", "error"], Some("debug")),
            Some(log::LevelFilter::Error)
        );
        assert_eq!(level(&[], None), None);
        let e = parse(&["--log-level", "loud"]).unwrap_err().to_string();
        assert!(e.contains("loud") && e.contains("warning"), "{e}");
    }

    #[test]
    fn todays_nixpkgs_call_reads_the_configuration_file() {
        // driver.nix: --add-flags "--config ${driverConfigurationFile}" --add-flags "--log-level …";
        // run.nix: nixos-test-driver -o $out.
        let dir = std::env::temp_dir().join(format!("vmtd-nixos-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("driverConfiguration.json");
        std::fs::write(
            &file,
            r#"{"containers":{},"enable_ssh_backdoor":false,"global_timeout":3600,
                "test_script":"/nix/store/x-test-script","vlans":[1],
                "vms":{"client":{"name":"client","start_script":"/nix/c/bin/run-client-vm"},
                       "server":{"name":"server","start_script":"/nix/s/bin/run-server-vm"}},
                "display_viewers":{}}"#,
        )
        .unwrap();
        let f = file.to_str().unwrap();
        let a = ok(&["--config", f, "--log-level", "info", "-o", "/nix/store/out"]);
        assert_eq!(a.network.vm_names, ["client", "server"]);
        assert_eq!(
            paths(&a.network.start_scripts),
            ["/nix/c/bin/run-client-vm", "/nix/s/bin/run-server-vm"]
        );
        assert_eq!(a.network.vlans, [1]);
        assert_eq!(a.global_timeout, Some(3600.0));
        assert_eq!(
            a.test_script.as_deref(),
            Some(Path::new("/nix/store/x-test-script"))
        );
        // The command line wins over the file.
        let a = ok(&["-c", f, "--global-timeout", "9", "--", "mine.rhai"]);
        assert_eq!(a.global_timeout, Some(9.0));
        assert_eq!(a.test_script.as_deref(), Some(Path::new("mine.rhai")));

        std::fs::write(&file, r#"{"vms":{},"containers":{"c":{}}}"#).unwrap();
        let e = resolved(&["--config", f], &[]).unwrap_err();
        assert!(
            e.contains("containers") && e.contains("not supported"),
            "{e}"
        );
        std::fs::write(&file, "[1]").unwrap();
        let e = resolved(&["--config", f], &[]).unwrap_err();
        assert!(e.contains("not a NixOS driver configuration"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
        let e = resolved(&["--config", "/nonexistent/c.json"], &[]).unwrap_err();
        assert!(
            e.contains("/nonexistent/c.json") && e.contains("cannot read"),
            "{e}"
        );
    }

    #[test]
    fn a_script_after_a_list_option_is_a_usage_error_saying_where_it_goes() {
        // argparse's nargs="*" swallows it too; nixpkgs never calls the driver this way.
        let e = parse(&["--vlans", "1", "test.rhai"]).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        let e = e.to_string();
        assert!(
            e.contains("test.rhai") && e.contains("--vlans 1 -- test.rhai"),
            "{e}"
        );
        let a = ok(&[
            "--start-scripts",
            "a",
            "b",
            "--vlans",
            "1",
            "--",
            "test.rhai",
        ]);
        assert_eq!(a.test_script.as_deref(), Some(Path::new("test.rhai")));
        // After a flag that takes no value, the script needs no `--`.
        let a = ok(&[
            "--vm-start-scripts",
            "run-tiny-vm",
            "-o",
            "out",
            "-K",
            "t.rhai",
        ]);
        assert_eq!(a.test_script.as_deref(), Some(Path::new("t.rhai")));
    }

    #[test]
    fn ocr_is_enabled_by_the_flag_or_nixos_enable_ocr() {
        assert!(!ok(&["t.py"]).enable_ocr);
        assert!(ok(&["--enable-ocr", "t.py"]).enable_ocr);
        assert!(
            resolved(&["t.py"], &[("enableOCR", "1")])
                .unwrap()
                .enable_ocr
        );
        assert!(
            !resolved(&["t.py"], &[("enableOCR", "")])
                .unwrap()
                .enable_ocr
        );
    }
}
