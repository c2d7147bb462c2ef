//! Built-in machines, the seed's `createMachine({ hda, hdaInterface, cdrom, qemuFlags })`: a machine
//! booted from a disk image, an installer ISO or a kernel, with no start script. Scripts
//! (`create_machine(#{ hda: "disk.qcow2", … })`) and the command line (`--machine hda=disk.qcow2,…`)
//! describe one with the same keys; this module checks them in two stages, each key as it is set
//! ([`Spec::set`]), then the whole against the file system ([`Spec::finish`]).

use driver::{BuiltinVm, Driver, Machine, StartCommand};
use std::path::{Component, Path, PathBuf};

/// The keys a built-in machine takes, as scripts spell them (the command line also takes `-` for `_`).
pub const KEYS: [&str; 9] = [
    "name",
    "hda",
    "hda_interface",
    "cdrom",
    "memory",
    "kernel",
    "initrd",
    "append",
    "qemu_flags",
];

/// A key's value as a front end got it.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// A string: a path, a name, the kernel command line, or QEMU flags split on whitespace.
    Text(String),
    /// A whole number (memory in MiB).
    Int(i64),
    /// Several strings: QEMU flags, one argument each.
    List(Vec<String>),
    /// Anything else, by its type name (only ever refused, naming the type).
    Other(String),
}

impl Value {
    fn type_name(&self) -> &str {
        match self {
            Value::Text(_) => "a string",
            Value::Int(_) => "an integer",
            Value::List(_) => "an array",
            Value::Other(t) => t,
        }
    }
}

/// What a key takes, as errors name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A string.
    Text,
    /// A file path, relative ones from the current directory.
    Path,
    /// A positive whole number of MiB.
    MiB,
    /// QEMU arguments: a string split on whitespace, or an array of strings.
    Flags,
}

impl Kind {
    /// What a value of this kind is, for "`key` must be …" errors.
    fn expected(self) -> &'static str {
        match self {
            Kind::Text => "a string",
            Kind::Path => "a string (a file path)",
            Kind::MiB => "an integer (MiB)",
            Kind::Flags => "a string (split on whitespace) or an array of strings",
        }
    }
}

/// What `key` takes; `None` for a key not in [`KEYS`].
pub fn kind(key: &str) -> Option<Kind> {
    Some(match key {
        "name" | "hda_interface" | "append" => Kind::Text,
        "hda" | "cdrom" | "kernel" | "initrd" => Kind::Path,
        "memory" => Kind::MiB,
        "qemu_flags" => Kind::Flags,
        _ => return None,
    })
}

/// A built-in machine being described: keys set one by one, then checked as a whole.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Spec {
    name: Option<String>,
    vm: BuiltinVm,
}

/// A checked built-in machine: its name, if one was given, and its command line's parts, every
/// path absolute.
#[derive(Clone, Debug, PartialEq)]
pub struct Builtin {
    /// The name given; without one the driver names the machine `machine`, as NixOS does.
    pub name: Option<String>,
    /// What QEMU is started with.
    pub vm: BuiltinVm,
}

impl Spec {
    /// Sets `key` to `value`; the error names the key and what it takes, or for an unknown key the
    /// keys there are.
    pub fn set(&mut self, key: &str, value: Value) -> Result<(), String> {
        let Some(kind) = kind(key) else {
            return Err(format!(
                "unknown key {key:?}; the keys are {}",
                KEYS.join(", ")
            ));
        };
        let wrong = |v: &Value| format!("{key} must be {}, not {}", kind.expected(), v.type_name());
        match (kind, value) {
            (Kind::MiB, Value::Int(n)) => {
                let mib = u32::try_from(n).ok().filter(|&m| m > 0).ok_or_else(|| {
                    format!(
                        "memory must be a positive number of MiB (at most {}), not {n}",
                        u32::MAX
                    )
                })?;
                self.vm.memory_mb = Some(mib);
            }
            (Kind::Flags, Value::Text(s)) => {
                self.vm.qemu_flags = s.split_whitespace().map(str::to_owned).collect();
            }
            (Kind::Flags, Value::List(flags)) => self.vm.qemu_flags = flags,
            (Kind::Text | Kind::Path, Value::Text(s)) => self.set_text(key, s)?,
            (_, v) => return Err(wrong(&v)),
        }
        Ok(())
    }

    fn set_text(&mut self, key: &str, s: String) -> Result<(), String> {
        if s.is_empty() && key != "append" {
            return Err(format!("{key} is empty"));
        }
        match key {
            "name" => {
                // The name becomes a directory name (`vm-state-<name>`) and a file name's part.
                if s.contains(['/', '\0']) {
                    return Err(format!("name {s:?} must not contain '/'"));
                }
                self.name = Some(s);
            }
            "hda_interface" => {
                // It goes into `-drive …,if=<it>` unescaped: a comma would start another option.
                if !s
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                {
                    return Err(format!(
                        "hda_interface must be a QEMU drive interface such as virtio, ide, scsi or \
                         none, not {s:?}"
                    ));
                }
                self.vm.hda_interface = Some(s);
            }
            "append" => self.vm.append = Some(s),
            "hda" => self.vm.hda = Some(s.into()),
            "cdrom" => self.vm.cdrom = Some(s.into()),
            "kernel" => self.vm.kernel = Some(s.into()),
            "initrd" => self.vm.initrd = Some(s.into()),
            _ => unreachable!("{key} is not a text key"),
        }
        Ok(())
    }

    /// Checks the machine as a whole: something to boot from (hda, cdrom or kernel), initrd and
    /// append only with a kernel, and every file there; relative paths are made absolute against
    /// `cwd` (QEMU runs in the machine's state directory, where they would mean something else).
    pub fn finish(self, cwd: &Path) -> Result<Builtin, String> {
        let Spec { name, mut vm } = self;
        if vm.hda.is_none() && vm.cdrom.is_none() && vm.kernel.is_none() {
            return Err(
                "nothing to boot: give hda (a disk image), cdrom (an ISO image) or \
                        kernel, or several of them"
                    .into(),
            );
        }
        if vm.kernel.is_none() {
            for (key, given) in [
                ("initrd", vm.initrd.is_some()),
                ("append", vm.append.is_some()),
            ] {
                if given {
                    return Err(format!(
                        "{key} needs kernel: QEMU takes it only with -kernel"
                    ));
                }
            }
        }
        for (key, path) in [
            ("hda", &mut vm.hda),
            ("cdrom", &mut vm.cdrom),
            ("kernel", &mut vm.kernel),
            ("initrd", &mut vm.initrd),
        ] {
            if let Some(p) = path {
                *p = existing_file(key, p, cwd)?;
            }
        }
        Ok(Builtin { name, vm })
    }
}

/// `given` made absolute against `cwd`; an error naming the key and the path unless it is a
/// readable file.
fn existing_file(key: &str, given: &Path, cwd: &Path) -> Result<PathBuf, String> {
    let path = if given.is_absolute() {
        given.to_path_buf()
    } else {
        // Without `./` parts, so the path reads as the file's.
        let rest: PathBuf = given
            .components()
            .filter(|c| *c != Component::CurDir)
            .collect();
        cwd.join(rest)
    };
    let fail = |why: String| Err(format!("{key} {}: {why}", path.display()));
    match std::fs::File::open(&path).and_then(|f| f.metadata()) {
        Ok(m) if m.is_dir() => fail("is a directory, not a file".into()),
        Ok(_) => Ok(path),
        Err(e) => fail(e.to_string()),
    }
}

impl Builtin {
    /// Adds the machine to `driver` (not started), under its name or the driver's default.
    pub fn add_to(self, driver: &Driver) -> Result<Machine, driver::Error> {
        let start = StartCommand::Builtin(self.vm);
        match &self.name {
            Some(name) => driver.add_named_machine(name, start),
            None => driver.add_machine(start),
        }
    }
}

/// One `--machine` option: its text as given (passed on as is to the driver of each script of a
/// directory) and what it says.
#[derive(Clone, Debug, PartialEq)]
pub struct MachineArg {
    /// The option's value as given.
    pub text: String,
    /// The machine it describes, not yet checked against the file system.
    pub spec: Spec,
}

/// Parses a `--machine` value: `KEY=VALUE` pairs separated by commas, keys as scripts spell them
/// (or with `-` for `_`), a value in double quotes when it holds a comma (`\"` and `\\` inside);
/// `memory` a whole number of MiB, `qemu_flags` split on whitespace.
pub fn parse_machine_arg(text: &str) -> Result<MachineArg, String> {
    const SYNTAX: &str = "expected KEY=VALUE,… such as name=installer,hda=disk.qcow2,cdrom=x.iso";
    let mut spec = Spec::default();
    let mut seen: Vec<String> = Vec::new();
    let mut rest = text;
    loop {
        let Some((key, after)) = rest.split_once('=').filter(|(k, _)| !k.contains(',')) else {
            return Err(match rest {
                "" if text.is_empty() => format!("empty: {SYNTAX}"),
                "" => format!("nothing after the last ','; {SYNTAX}"),
                _ => format!("{:?} has no '=VALUE'; {SYNTAX}", first_item(rest)),
            });
        };
        let key = key.replace('-', "_");
        let (value, next) = split_value(&key, after)?;
        if seen.contains(&key) {
            return Err(format!("{key} is given twice"));
        }
        let value = match kind(&key) {
            Some(Kind::MiB) => Value::Int(
                value
                    .parse()
                    .map_err(|_| format!("memory must be an integer (MiB), not {value:?}"))?,
            ),
            _ => Value::Text(value),
        };
        spec.set(&key, value)?;
        seen.push(key);
        match next {
            Some(next) => rest = next,
            None => break,
        }
    }
    Ok(MachineArg {
        text: text.to_owned(),
        spec,
    })
}

/// The text up to the first comma, for errors.
fn first_item(s: &str) -> &str {
    s.split(',').next().unwrap_or(s)
}

/// The value at the start of `s` (quoted, or up to the next comma), and what follows its comma.
fn split_value<'a>(key: &str, s: &'a str) -> Result<(String, Option<&'a str>), String> {
    let Some(quoted) = s.strip_prefix('"') else {
        return Ok(match s.split_once(',') {
            Some((value, next)) => (value.to_owned(), Some(next)),
            None => (s.to_owned(), None),
        });
    };
    let mut value = String::new();
    let mut chars = quoted.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some((_, c)) => value.push(c),
                None => break,
            },
            '"' => {
                let after = &quoted[i + 1..];
                return match after.strip_prefix(',') {
                    Some(next) => Ok((value, Some(next))),
                    None if after.is_empty() => Ok((value, None)),
                    None => Err(format!(
                        "{key}: expected ',' after the closing quote, not {after:?}"
                    )),
                };
            }
            c => value.push(c),
        }
    }
    Err(format!("{key}: the quote is not closed"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Spec, String> {
        parse_machine_arg(s).map(|a| a.spec)
    }

    fn err(s: &str) -> String {
        parse(s).unwrap_err()
    }

    #[test]
    fn every_key_parses_from_the_command_line() {
        let spec = parse(
            "name=installer,hda=disk.qcow2,hda-interface=ide,cdrom=/x/a.iso,memory=1024,\
             kernel=bz,initrd=rd,append=\"console=ttyS0 a=b,c\",qemu_flags=\"-smp 2 -boot d\"",
        )
        .unwrap();
        assert_eq!(spec.name.as_deref(), Some("installer"));
        let vm = &spec.vm;
        assert_eq!(vm.hda.as_deref(), Some(Path::new("disk.qcow2")));
        assert_eq!(vm.hda_interface.as_deref(), Some("ide"));
        assert_eq!(vm.cdrom.as_deref(), Some(Path::new("/x/a.iso")));
        assert_eq!(vm.memory_mb, Some(1024));
        assert_eq!(vm.kernel.as_deref(), Some(Path::new("bz")));
        assert_eq!(vm.initrd.as_deref(), Some(Path::new("rd")));
        assert_eq!(vm.append.as_deref(), Some("console=ttyS0 a=b,c"));
        assert_eq!(vm.qemu_flags, ["-smp", "2", "-boot", "d"]);
    }

    #[test]
    fn quotes_hold_commas_and_escapes() {
        let spec = parse(r#"cdrom="a,b.iso",append="say \"hi\" \\ ok",hda=x"#).unwrap();
        assert_eq!(spec.vm.cdrom.as_deref(), Some(Path::new("a,b.iso")));
        assert_eq!(spec.vm.append.as_deref(), Some(r#"say "hi" \ ok"#));
        assert_eq!(spec.vm.hda.as_deref(), Some(Path::new("x")));
        // An empty kernel command line is allowed; a quote inside an unquoted value is literal.
        let spec = parse(r#"kernel=k,append="",name=a"b"#).unwrap();
        assert_eq!(spec.vm.append.as_deref(), Some(""));
        assert_eq!(spec.name.as_deref(), Some("a\"b"));
    }

    #[test]
    fn bad_command_lines_say_what_is_wrong() {
        let cases = [
            ("", "empty: expected KEY=VALUE"),
            ("hda", "\"hda\" has no '=VALUE'"),
            ("hda=x,", "nothing after the last ','"),
            ("hda=x,cdrom", "\"cdrom\" has no '=VALUE'"),
            ("cdrom,hda=x", "\"cdrom\" has no '=VALUE'"),
            ("hdd=x", "unknown key \"hdd\"; the keys are name, hda, hda_interface, cdrom, memory, kernel, initrd, append, qemu_flags"),
            ("hda=x,hda=y", "hda is given twice"),
            ("hda=x,memory=1G", "memory must be an integer (MiB), not \"1G\""),
            ("hda=x,memory=0", "memory must be a positive number of MiB"),
            ("hda=x,memory=99999999999", "memory must be a positive number of MiB"),
            ("append=\"a,hda=x", "append: the quote is not closed"),
            ("append=\"a\"b,hda=x", "append: expected ',' after the closing quote, not \"b,hda=x\""),
            ("hda=", "hda is empty"),
            ("name=a/b,hda=x", "name \"a/b\" must not contain '/'"),
            ("hda=x,hda_interface=\"ide,cache=none\"", "hda_interface must be a QEMU drive interface"),
        ];
        for (given, needle) in cases {
            let e = err(given);
            assert!(e.contains(needle), "{given:?}: {e:?} lacks {needle:?}");
        }
    }

    #[test]
    fn wrong_types_name_the_key_and_what_it_takes() {
        let mut spec = Spec::default();
        let e = spec.set("memory", Value::Text("1024".into())).unwrap_err();
        assert_eq!(e, "memory must be an integer (MiB), not a string");
        let e = spec.set("hda", Value::Int(3)).unwrap_err();
        assert_eq!(e, "hda must be a string (a file path), not an integer");
        let e = spec
            .set("qemu_flags", Value::Other("map".into()))
            .unwrap_err();
        assert_eq!(
            e,
            "qemu_flags must be a string (split on whitespace) or an array of strings, not map"
        );
        spec.set("qemu_flags", Value::List(vec!["-smp".into(), "2".into()]))
            .unwrap();
        assert_eq!(spec.vm.qemu_flags, ["-smp", "2"]);
    }

    #[test]
    fn the_command_line_takes_machines_for_runs_run_vms_and_exec() {
        use crate::args::{Cli, Mode};
        use clap::Parser;
        let parse = |argv: &[&str]| {
            Cli::try_parse_from(std::iter::once("vm-test-driver").chain(argv.iter().copied()))
        };
        let cli = parse(&[
            "--machine",
            "hda=a.img",
            "--machine",
            "name=b,cdrom=b.iso",
            "t.rhai",
        ])
        .unwrap();
        let texts: Vec<&str> = cli
            .run
            .network
            .machines
            .iter()
            .map(|m| m.text.as_str())
            .collect();
        assert_eq!(texts, ["hda=a.img", "name=b,cdrom=b.iso"]);

        let cli = parse(&["run-vms", "--machine", "name=i,cdrom=x.iso,memory=1024"]).unwrap();
        let Some(Mode::RunVms { network, .. }) = cli.mode else {
            panic!("not run-vms")
        };
        assert_eq!(network.machines[0].spec.vm.memory_mb, Some(1024));

        let cli = parse(&["exec", "--machine", "kernel=bz", "--", "uname -r"]).unwrap();
        let Some(Mode::Exec {
            start_script: None,
            machine: Some(m),
            commands,
            ..
        }) = cli.mode
        else {
            panic!("not exec with a machine")
        };
        assert_eq!(
            (m.text.as_str(), commands.as_slice()),
            ("kernel=bz", ["uname -r".to_string()].as_slice())
        );

        // Exactly one of START_SCRIPT and --machine; a bad value names the option and the problem.
        assert!(parse(&["exec", "run-a-vm", "--machine", "hda=x", "--", "true"]).is_err());
        assert!(parse(&["exec", "--", "true"]).is_err());
        let e = parse(&["run-vms", "--machine", "hda=x,memory=lots"])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--machine") && e.contains("memory must be an integer (MiB), not \"lots\""),
            "{e}"
        );
    }

    #[test]
    fn finishing_needs_something_to_boot_and_existing_files() {
        let dir = std::env::temp_dir().join(format!("vmtd-builtin-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("disk.qcow2"), b"").unwrap();
        let finish = |s: &str| parse(s).unwrap().finish(&dir);

        let e = finish("name=a,memory=64").unwrap_err();
        assert!(e.starts_with("nothing to boot: give hda"), "{e}");
        let e = finish("hda=disk.qcow2,initrd=rd").unwrap_err();
        assert_eq!(e, "initrd needs kernel: QEMU takes it only with -kernel");
        let e = finish("hda=./missing.img").unwrap_err();
        let missing = dir.join("missing.img");
        assert!(
            e.starts_with(&format!("hda {}: No such file", missing.display())),
            "{e}"
        );
        let e = finish(&format!("cdrom={}", dir.display())).unwrap_err();
        assert!(e.ends_with("is a directory, not a file"), "{e}");

        // Relative paths resolve against the directory given; absolute ones stay.
        let b = finish("hda=./disk.qcow2,name=x").unwrap();
        assert_eq!(b.vm.hda, Some(dir.join("disk.qcow2")));
        assert_eq!(b.name.as_deref(), Some("x"));
        let abs = dir.join("disk.qcow2");
        let b = finish(&format!("cdrom={}", abs.display())).unwrap();
        assert_eq!(b.vm.cdrom, Some(abs));
        assert_eq!(b.name, None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
