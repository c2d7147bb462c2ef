//! Spawning and stopping start scripts (plain `/bin/sh` ones, no QEMU needed).

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{eventually, group_gone, null, pair, read_all, write_script};
use qemu_proc::{
    become_subreaper, launch_plan, live_members, Accel, BuiltinVm, Child, Error, LaunchOptions,
    LaunchPlan, MachinePaths, StartCommand, StateRoot,
};

fn setup() -> (StateRoot, MachinePaths) {
    // Orphans of the scripts are reparented to us and reaped by Child, so groups end without waiting for
    // PID 1 (which reaps late in some containers).
    become_subreaper().unwrap();
    let root = StateRoot::create().unwrap();
    let paths = MachinePaths::new(root.machine_dir("a").unwrap(), root.shared_dir().unwrap());
    (root, paths)
}

fn script_plan(script: &Path, paths: &MachinePaths) -> LaunchPlan {
    launch_plan(
        "a",
        &StartCommand::Script(script.to_path_buf()),
        paths,
        &LaunchOptions::new(Accel::Tcg),
    )
}

fn spawn_err(plan: &LaunchPlan) -> Error {
    Child::spawn(plan, null(), null(), null()).unwrap_err()
}

#[test]
fn a_missing_script_is_named() {
    let (_root, paths) = setup();
    let err = spawn_err(&script_plan(Path::new("/nonexistent/run-a-vm"), &paths));
    assert_eq!(
        err.to_string(),
        "start script /nonexistent/run-a-vm does not exist"
    );
}

#[test]
fn a_non_executable_script_is_named() {
    let (root, paths) = setup();
    let script = root.path().join("run-a-vm");
    std::fs::write(&script, "#!/bin/sh\n").unwrap();
    let err = spawn_err(&script_plan(&script, &paths));
    assert_eq!(
        err.to_string(),
        format!("start script {} is not executable", script.display())
    );
    let err = spawn_err(&script_plan(root.path(), &paths));
    assert!(matches!(err, Error::NotExecutable { .. }), "{err:?}");
}

#[test]
fn a_missing_interpreter_is_explained() {
    let (root, paths) = setup();
    let script = write_script(root.path(), "run-a-vm", "#!/nonexistent/sh\n");
    let err = spawn_err(&script_plan(&script, &paths));
    assert!(matches!(err, Error::InterpreterMissing { .. }), "{err:?}");
    assert!(err.to_string().contains("#! line"), "{err}");
}

#[test]
fn a_qemu_binary_not_in_path_is_named() {
    let (_root, paths) = setup();
    let vm = BuiltinVm {
        qemu_binary: Some("no-such-qemu-xyz".into()),
        ..BuiltinVm::default()
    };
    let plan = launch_plan(
        "a",
        &StartCommand::Builtin(vm),
        &paths,
        &LaunchOptions::new(Accel::Tcg),
    );
    assert_eq!(
        spawn_err(&plan).to_string(),
        "qemu binary no-such-qemu-xyz is not in PATH"
    );
}

#[test]
fn a_missing_working_directory_is_named() {
    let (root, mut paths) = setup();
    let script = write_script(root.path(), "run-a-vm", "#!/bin/sh\n");
    paths.state_dir = root.path().join("gone");
    let err = spawn_err(&script_plan(&script, &paths));
    assert_eq!(
        err.to_string(),
        format!(
            "working directory {} does not exist",
            paths.state_dir.display()
        )
    );
}

#[test]
fn the_script_gets_its_arguments_environment_stdio_and_cwd() {
    let (root, paths) = setup();
    let script = write_script(
        root.path(),
        "run-a-vm",
        "#!/bin/sh\nread line\necho \"in=$line\"\necho \"tmp=$TMPDIR\"\necho \"shared=$SHARED_DIR\"\n\
         echo \"use=$USE_TMPDIR\"\necho \"pwd=$(pwd)\"\nfor a in \"$@\"; do echo \"arg=$a\"; done\n\
         echo oops >&2\nexit 3\n",
    );
    let plan = script_plan(&script, &paths);
    let (child_in, mut our_in) = pair();
    let (child_out, our_out) = pair();
    let (child_err, our_err) = pair();
    let mut child = Child::spawn(&plan, child_in, child_out, child_err).unwrap();
    our_in.write_all(b"hello\n").unwrap();
    let out = read_all(our_out, Duration::from_secs(10));
    assert_eq!(read_all(our_err, Duration::from_secs(10)), "oops\n");
    let mut expected = format!(
        "in=hello\ntmp={0}\nshared={1}\nuse=1\npwd={0}\n",
        paths.state_dir.display(),
        paths.shared_dir.display()
    );
    for a in &plan.args {
        expected.push_str(&format!("arg={}\n", a.to_str().unwrap()));
    }
    assert_eq!(out, expected);
    assert!(eventually(Duration::from_secs(10), || child
        .try_wait()
        .unwrap()
        .is_some()));
    // Repeated calls keep answering, with the same status.
    assert_eq!(child.try_wait().unwrap().unwrap().code(), Some(3));
    assert_eq!(child.try_wait().unwrap().unwrap().code(), Some(3));
    assert_eq!(
        child.terminate(Duration::from_secs(1)).unwrap().code(),
        Some(3)
    );
    assert_eq!(child.kill().unwrap().code(), Some(3));
    assert!(group_gone(child.pid()));
}

#[test]
fn a_relative_script_path_is_relative_to_our_directory_not_the_childs() {
    let (root, paths) = setup();
    let script = write_script(root.path(), "run-a-vm", "#!/bin/sh\necho ran\n");
    let cwd = std::env::current_dir().unwrap();
    let ups = cwd.components().count() - 1;
    let relative: PathBuf = "../"
        .repeat(ups)
        .parse::<PathBuf>()
        .unwrap()
        .join(script.strip_prefix("/").unwrap());
    assert!(relative.is_relative());
    let (child_out, our_out) = pair();
    let mut child =
        Child::spawn(&script_plan(&relative, &paths), null(), child_out, null()).unwrap();
    assert_eq!(read_all(our_out, Duration::from_secs(10)), "ran\n");
    assert_eq!(child.program(), cwd.join(&relative));
    assert!(child.terminate(Duration::from_secs(5)).unwrap().success());
}

#[test]
fn dropping_stops_the_whole_group_of_an_exec_script() {
    let (root, paths) = setup();
    let script = write_script(
        root.path(),
        "run-a-vm",
        "#!/bin/sh\nsleep 1000 &\nexec sleep 1000\n",
    );
    let child = Child::spawn(&script_plan(&script, &paths), null(), null(), null()).unwrap();
    let pgid = child.pid();
    assert!(
        eventually(Duration::from_secs(10), || live_members(pgid).len() == 2),
        "{:?}",
        live_members(pgid)
    );
    let t = Instant::now();
    drop(child);
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    assert!(group_gone(pgid), "left behind: {:?}", live_members(pgid));
}

#[test]
fn terminate_reaches_qemu_started_without_exec() {
    // dash does not exec the last command: the spawned pid stays the shell, "QEMU" is a grandchild.
    let (root, paths) = setup();
    let script = write_script(
        root.path(),
        "run-a-vm",
        "#!/bin/sh\nsleep 1000 &\nsleep 1000\necho after\n",
    );
    let mut child = Child::spawn(&script_plan(&script, &paths), null(), null(), null()).unwrap();
    let pgid = child.pid();
    assert!(
        eventually(Duration::from_secs(10), || live_members(pgid).len() == 3),
        "{:?}",
        live_members(pgid)
    );
    let t = Instant::now();
    let status = child.terminate(Duration::from_secs(5)).unwrap();
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    assert_eq!(status.signal_or_code(), Some(libc::SIGTERM));
    assert!(group_gone(pgid), "left behind: {:?}", live_members(pgid));
}

#[test]
fn a_group_ignoring_sigterm_is_killed_after_the_grace() {
    let (root, paths) = setup();
    // Ignored signals stay ignored across fork and exec, so every member ignores SIGTERM.
    let script = write_script(
        root.path(),
        "run-a-vm",
        "#!/bin/sh\ntrap '' TERM\nsleep 1000 &\nexec sleep 1000\n",
    );
    let mut child = Child::spawn(&script_plan(&script, &paths), null(), null(), null()).unwrap();
    let pgid = child.pid();
    assert!(eventually(Duration::from_secs(10), || live_members(pgid)
        .len()
        == 2));
    let grace = Duration::from_millis(300);
    let t = Instant::now();
    let status = child.terminate(grace).unwrap();
    let took = t.elapsed();
    assert!(took >= grace && took < Duration::from_secs(3), "{took:?}");
    assert_eq!(status.signal_or_code(), Some(libc::SIGKILL));
    assert!(group_gone(pgid), "left behind: {:?}", live_members(pgid));
}

#[test]
fn kill_is_immediate() {
    let (root, paths) = setup();
    let script = write_script(
        root.path(),
        "run-a-vm",
        "#!/bin/sh\ntrap '' TERM\nexec sleep 1000\n",
    );
    let mut child = Child::spawn(&script_plan(&script, &paths), null(), null(), null()).unwrap();
    assert_eq!(child.try_wait().unwrap(), None);
    let t = Instant::now();
    assert_eq!(child.kill().unwrap().signal_or_code(), Some(libc::SIGKILL));
    assert!(t.elapsed() < Duration::from_secs(1));
    assert!(group_gone(child.pid()));
}

#[test]
fn terminate_cleans_up_what_an_exited_script_left_behind() {
    let (root, paths) = setup();
    let script = write_script(
        root.path(),
        "run-a-vm",
        "#!/bin/sh\nsleep 1000 &\necho $!\n",
    );
    let (child_out, our_out) = pair();
    let mut child = Child::spawn(&script_plan(&script, &paths), null(), child_out, null()).unwrap();
    assert!(eventually(Duration::from_secs(10), || child
        .try_wait()
        .unwrap()
        .is_some()));
    let mut line = String::new();
    BufReader::new(our_out).read_line(&mut line).unwrap();
    let orphan: i32 = line.trim().parse().unwrap();
    assert_eq!(live_members(child.pid()), [orphan]);
    assert!(child.terminate(Duration::from_secs(5)).unwrap().success());
    assert!(
        group_gone(child.pid()),
        "left behind: {:?}",
        live_members(child.pid())
    );
}

/// Run by `pdeathsig_stops_the_child_when_the_driver_is_killed` in a process of its own.
#[test]
#[ignore = "helper, run by another test"]
fn helper_spawn_and_hang() {
    let Some(script) = std::env::var_os("QEMU_PROC_HELPER_SCRIPT") else {
        return;
    };
    let state = PathBuf::from(std::env::var_os("QEMU_PROC_HELPER_STATE").unwrap());
    let paths = MachinePaths::new(state.clone(), state.clone());
    let child = Child::spawn(
        &script_plan(Path::new(&script), &paths),
        null(),
        null(),
        null(),
    )
    .unwrap();
    // A file, not stdout: libtest's output capturing would hold the line back.
    std::fs::write(state.join("pid.tmp"), child.pid().to_string()).unwrap();
    std::fs::rename(state.join("pid.tmp"), state.join("pid")).unwrap();
    std::thread::sleep(Duration::from_secs(60));
}

/// Kills the helper even when the test fails, so it cannot outlive the run.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn pdeathsig_stops_the_child_when_the_driver_is_killed() {
    let (root, paths) = setup();
    let script = write_script(root.path(), "run-a-vm", "#!/bin/sh\nexec sleep 1000\n");
    let mut driver = KillOnDrop(
        std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "helper_spawn_and_hang",
                "--ignored",
                "--test-threads=1",
            ])
            .env("QEMU_PROC_HELPER_SCRIPT", &script)
            .env("QEMU_PROC_HELPER_STATE", &paths.state_dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let pid_file = paths.state_dir.join("pid");
    assert!(
        eventually(Duration::from_secs(30), || pid_file.exists()),
        "the helper wrote no pid"
    );
    let pid: i32 = std::fs::read_to_string(&pid_file).unwrap().parse().unwrap();
    assert_eq!(live_members(pid), [pid]);
    driver.0.kill().unwrap(); // SIGKILL: no destructor runs in the helper
    driver.0.wait().unwrap();
    assert!(
        eventually(Duration::from_secs(5), || live_members(pid).is_empty()),
        "child of a SIGKILLed driver still alive: {:?}",
        live_members(pid)
    );
}

trait SignalOrCode {
    fn signal_or_code(&self) -> Option<i32>;
}

impl SignalOrCode for std::process::ExitStatus {
    fn signal_or_code(&self) -> Option<i32> {
        use std::os::unix::process::ExitStatusExt;
        self.signal().or(self.code())
    }
}
