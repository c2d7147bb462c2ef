//! The state every handle shares: the event loop with each machine's channels, what each machine
//! was configured with, the VLANs' processes, the run's settings and the features' own state.
//! Starting and stopping a machine is here: the launch plan (snapshot cache, VLAN NICs) is built
//! here, the loop runs it.

use crate::activity::Activity;
use crate::event_loop::{Loop, Observer, KILL_GRACE};
use crate::ext::Extensions;
use crate::record::MachineEvent;
use crate::vlan::{self, Link, Switch};
use crate::Error;
use qemu_proc::{AccelChoice, LaunchOptions, MachinePaths, StartCommand, StateRoot};
use std::cell::Cell;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::rc::Rc;
use std::time::Duration;

/// What a machine is, as the test set it up (its channels are the loop's).
pub(crate) struct Vm {
    pub(crate) name: String,
    pub(crate) start: StartCommand,
    pub(crate) allow_reboot: bool,
    /// Booting for the snapshot cache: save into this entry once the shell answers.
    pub(crate) cache_save: Option<PathBuf>,
    /// 1-based position among the driver's machines; the last byte of its VLAN MACs and addresses.
    pub(crate) number: usize,
    /// VLANs this machine is attached to (has a link to).
    pub(crate) vlans: Vec<u32>,
    /// Its start script attaches NICs to the switches itself (see `vlan::attaches_own_nics`).
    pub(crate) own_nics: bool,
}

/// The loop's observer for a run: console lines and exits go to the log and the record.
struct RunObserver {
    activity: Activity,
    /// Whether console lines go to the log (NixOS's serial_stdout_on/off); recorded either way.
    serial_stdout: Rc<Cell<bool>>,
}

impl Observer for RunObserver {
    fn console_line(&mut self, name: &str, line: &str) {
        if self.serial_stdout.get() {
            log::info!(target: "console", "{name}# {line}");
        }
        self.activity.recorder().console_line(name, line);
    }

    fn exited(&mut self, name: &str, status: ExitStatus) {
        let recorder = self.activity.recorder();
        let event = MachineEvent::Exited {
            t: recorder.now(),
            status: status.to_string(),
        };
        recorder.event(name, event);
    }

    fn during(&self) -> String {
        self.activity.describe()
    }
}

/// The event loop, all machines and the run's settings.
pub(crate) struct Core {
    /// The loop, and each machine's channels (`io.vms[i]`).
    pub(crate) io: Loop,
    /// Each machine's set-up, by the same index.
    pub(crate) vms: Vec<Vm>,
    /// Machines' links to switches; declared before `switches`, so they are stopped first.
    pub(crate) links: Vec<Link>,
    pub(crate) switches: Vec<Switch>,
    pub(crate) root: StateRoot,
    pub(crate) accel: AccelChoice,
    pub(crate) activity: Activity,
    /// Every timeout a caller gives is multiplied by this (slow TCG guests).
    pub(crate) timeout_factor: f64,
    /// Most output one command may return.
    pub(crate) max_output: usize,
    /// Whether guests' console lines go to the log; shared with the loop's observer.
    pub(crate) serial_stdout: Rc<Cell<bool>>,
    /// Where files for people go (screenshots taken for failure reports).
    pub(crate) output_dir: Option<PathBuf>,
    /// Where machines are kept booted and ready across runs.
    pub(crate) snapshot_cache: Option<PathBuf>,
    /// The features' own state, one value per type.
    pub(crate) ext: Extensions,
}

impl Core {
    pub(crate) fn new(root: StateRoot, accel: AccelChoice) -> Result<Self, Error> {
        let activity = Activity::default();
        let serial_stdout = Rc::new(Cell::new(true));
        let observer = RunObserver {
            activity: activity.clone(),
            serial_stdout: serial_stdout.clone(),
        };
        Ok(Core {
            io: Loop::new(Box::new(observer))?,
            vms: Vec::new(),
            links: Vec::new(),
            switches: Vec::new(),
            root,
            accel,
            activity,
            timeout_factor: 1.0,
            max_output: crate::settings::MAX_OUTPUT,
            serial_stdout,
            output_dir: None,
            snapshot_cache: None,
            ext: Extensions::default(),
        })
    }

    /// Adds a machine; its index in `vms` and in the loop.
    pub(crate) fn add(&mut self, name: &str, start: StartCommand) -> usize {
        let number = self.vms.len() + 1;
        self.vms.push(Vm {
            name: name.to_string(),
            start,
            allow_reboot: false,
            cache_save: None,
            number,
            vlans: Vec::new(),
            own_nics: false,
        });
        self.io.add(name)
    }

    /// Serves every machine's channels for `d`.
    pub(crate) fn idle(&mut self, d: Duration) -> Result<(), Error> {
        self.io.idle(d)
    }

    /// Starts QEMU for machine `i` unless it runs: from the snapshot cache when there is one,
    /// attached to the machine's VLANs.
    pub(crate) fn start(&mut self, i: usize) -> Result<(), Error> {
        if self.io.vms[i].is_running() {
            return Ok(());
        }
        self.stop_io(i);
        let name = self.vms[i].name.clone();
        let proc_err = |source| Error::Start {
            machine: name.clone(),
            source,
        };
        let dir = self.root.machine_dir(&name).map_err(proc_err)?;
        let shared = self.root.shared_dir().map_err(proc_err)?;
        // A start script with NICs of its own is linked to every switch of the run, through a link
        // of its own (so link faults work for it too), and gets no NIC from the driver.
        let own_nics = vlan::attaches_own_nics(&self.vms[i].start);
        self.vms[i].own_nics = own_nics;
        if own_nics {
            let numbers: Vec<u32> = self.switches.iter().map(|s| s.number).collect();
            for n in numbers {
                self.ensure_link(n, i)?;
            }
        }
        let mut cache_plan = None;
        let mut extra_qemu_opts = Vec::new();
        if let Some(cache) = &self.snapshot_cache {
            let vm = &self.vms[i];
            let entry = crate::cache::entry(
                cache,
                &name,
                &vm.start,
                &vm.vlans,
                vm.number,
                vm.allow_reboot,
                &self.accel,
            );
            let (plan, opts) = crate::cache::prepare(&name, &entry, &dir)?;
            cache_plan = Some(plan);
            extra_qemu_opts.extend(opts);
        }
        let paths = MachinePaths::new(dir, shared);
        // A deep $TMPDIR makes socket paths too long for bind(); say so rather than "name too long".
        paths.check_socket_paths().map_err(proc_err)?;
        for &n in self.vms[i].vlans.iter().filter(|_| !own_nics) {
            let link = self
                .link(n, i)
                .expect("attach_vlans starts the links it names");
            extra_qemu_opts.extend(vlan::qemu_opts(n, self.vms[i].number, &link.socket_dir));
        }
        let mut plan = qemu_proc::launch_plan(
            &name,
            &self.vms[i].start,
            &paths,
            &LaunchOptions {
                accel: self.accel.accel,
                allow_reboot: self.vms[i].allow_reboot,
                extra_qemu_opts,
            },
        );
        // NixOS-built start scripts attach themselves to the switches named by these.
        for s in &self.switches {
            let dir = match self.link(s.number, i) {
                Some(link) => &link.socket_dir,
                None => &s.socket_dir,
            };
            plan.env.push((
                format!("QEMU_VDE_SOCKET_{}", s.number).into(),
                dir.clone().into_os_string(),
            ));
        }
        let resume_shell = match cache_plan {
            Some(crate::cache::Plan::Resume { shell }) => Some(shell),
            Some(crate::cache::Plan::Save(entry)) => {
                self.vms[i].cache_save = Some(entry);
                None
            }
            None => None,
        };
        self.io.spawn(i, &plan, &paths, resume_shell)?;
        let recorder = self.activity.recorder();
        let event = MachineEvent::Started { t: recorder.now() };
        recorder.event(&name, event);
        Ok(())
    }

    /// Drops machine `i`'s QEMU (terminating it if it still runs) and its sockets.
    pub(crate) fn stop_io(&mut self, i: usize) {
        if let Some(status) = self.io.stop(i, KILL_GRACE) {
            let recorder = self.activity.recorder();
            let event = MachineEvent::Exited {
                t: recorder.now(),
                status: format!("{status} (stopped by the driver)"),
            };
            recorder.event(&self.vms[i].name, event);
        }
    }

    /// Starts the switch of VLAN `number` unless it runs already.
    pub(crate) fn ensure_switch(&mut self, number: u32) -> Result<(), Error> {
        if !(1..=255).contains(&number) {
            return Err(Error::Vlan {
                number,
                what: "VLAN numbers go from 1 to 255 (they become a byte of MACs and addresses)"
                    .into(),
                source: None,
            });
        }
        if !self.switches.iter().any(|s| s.number == number) {
            let switch = Switch::start(number, self.root.path())?;
            self.switches.push(switch);
        }
        Ok(())
    }

    /// Starts VLAN `number`'s switch and machine `i`'s link to it, unless they run, and counts the
    /// machine as attached to the VLAN.
    pub(crate) fn ensure_link(&mut self, number: u32, i: usize) -> Result<(), Error> {
        self.ensure_switch(number)?;
        if !self.vms[i].vlans.contains(&number) {
            self.vms[i].vlans.push(number);
        }
        if self.link(number, i).is_none() {
            let switch = self.switches.iter().find(|s| s.number == number);
            let switch = switch.expect("started above");
            let link = Link::start(switch, i, self.vms[i].number, self.root.path())?;
            self.links.push(link);
        }
        Ok(())
    }

    /// Machine `i`'s link to VLAN `number`.
    pub(crate) fn link(&self, number: u32, i: usize) -> Option<&Link> {
        self.links
            .iter()
            .find(|l| l.vlan == number && l.machine == i)
    }

    pub(crate) fn switch_mut(&mut self, number: u32) -> Option<&mut Switch> {
        self.switches.iter_mut().find(|s| s.number == number)
    }
}

impl Drop for Core {
    fn drop(&mut self) {
        for i in 0..self.vms.len() {
            self.stop_io(i);
        }
    }
}
