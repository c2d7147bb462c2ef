//! Waiting for a TCP port of the guest to open or close.

use crate::machine::Machine;
use crate::text::sh_quote;
use crate::Error;
use std::time::{Duration, Instant};

/// Longest a port wait trusts an unchanged count of TCP sockets instead of reading which listen: a
/// socket closing as another starts listening between two tries leaves the counts as they were.
const PORT_RESCAN: Duration = Duration::from_secs(1);
/// Marks the line a port wait's try prints about the guest's TCP sockets, for the next try.
const PORT_MARK: &str = "vmtd-port";

impl Machine {
    /// Waits until something accepts TCP connections on `addr:port` in the guest (`addr` defaults to
    /// `localhost`, as in NixOS; any address works).
    ///
    /// ```no_run
    /// # fn demo(vm: &driver::Machine) -> Result<(), driver::Error> {
    /// vm.wait_for_open_port(80, None, None)?;
    /// vm.wait_for_open_port(5432, Some("10.0.2.15"), None)?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn wait_for_open_port(
        &self,
        port: u16,
        addr: Option<&str>,
        timeout: Option<Duration>,
    ) -> Result<(), Error> {
        self.port_wait(port, addr, timeout, true)
    }

    /// Waits until nothing accepts TCP connections on `addr:port` in the guest.
    ///
    /// ```no_run
    /// # fn demo(vm: &driver::Machine) -> Result<(), driver::Error> {
    /// vm.succeed("systemctl stop nginx")?;
    /// vm.wait_for_closed_port(80, None, None)?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn wait_for_closed_port(
        &self,
        port: u16,
        addr: Option<&str>,
        timeout: Option<Duration>,
    ) -> Result<(), Error> {
        self.port_wait(port, addr, timeout, false)
    }

    fn port_wait(
        &self,
        port: u16,
        addr: Option<&str>,
        timeout: Option<Duration>,
        open: bool,
    ) -> Result<(), Error> {
        let addr = addr.unwrap_or("localhost");
        let state = if open { "open" } else { "closed" };
        let _step = self.step(format!("waiting for {state} port {addr}:{port}"));
        // `nc -z` where nc has it (OpenBSD's); busybox nc lacks -z but returns at once on an open
        // port when stdin is empty. Messages are kept so a reason other than "not yet" (a name that
        // does not resolve, no nc) shows up in the timeout error.
        let a = sh_quote(addr);
        // For a port of this machine, ask with builtins only (no process) what listens on it: a
        // listener on a wildcard or loopback address answers for localhost, so `nc` (a process,
        // tens of milliseconds under TCG, at every try) runs only for a listener on another address.
        // l: 1 nothing listens, 0 one accepts loopback connections, 2 one on another address.
        let local = matches!(addr, "localhost" | "127.0.0.1" | "::1");
        let listening = if local {
            // Addresses as /proc/net/tcp{,6} print them (hex, in the kernel's byte order).
            let v4 = ["00000000", "0100007F", "0000000000000000FFFF00000100007F"];
            let v6 = [&"0".repeat(32), &format!("{}01000000", "0".repeat(24))];
            let answer: Vec<&str> = match addr {
                "127.0.0.1" => vec![v4[0], v4[1], v4[2], v6[0]],
                "::1" => vec![v6[0], v6[1]],
                _ => vec![v4[0], v4[1], v4[2], v6[0], v6[1]],
            };
            let p = format!("{port:04X}");
            let answer = answer
                .iter()
                .map(|a| format!("{a}:{p}\\ 0A"))
                .collect::<Vec<_>>()
                .join("|");
            format!(
                "seen=0; l=1\n\
                 for f in /proc/net/tcp /proc/net/tcp6; do [ -r \"$f\" ] || continue; seen=1\n\
                 while read -r _ la _ st _; do case \"$la $st\" in\n\
                 {answer}) l=0;;\n\
                 *:{p}\\ 0A) [ $l = 1 ] && l=2;; esac\n\
                 done < \"$f\"; done\n\
                 if [ $seen = 1 ]; then echo \"{PORT_MARK} $sig $l\"; case $l in\n\
                 0) echo 'listening on port {port}'; exit 0;;\n\
                 1) echo 'nothing listens on port {port}'; exit 1;; esac; fi\n"
            )
        } else {
            String::new()
        };
        let nc = format!(
            "o=$(nc -z -w 1 {a} {port} 2>&1) && exit 0\n\
             case \"$o\" in *'invalid option'*|*'illegal option'*)\n\
             nc -w 1 {a} {port} </dev/null >/dev/null 2>&1 && exit 0\n\
             o=\"$(nc -w 1 {a} {port} </dev/null 2>&1)\";;\nesac\necho \"$o\"; exit 1"
        );
        // Reading which sockets listen costs a builtin `read` per byte, ~0.2 ms per socket under
        // TCG, and sending that script ~3 ms more per try than `test -e`; the counts in
        // /proc/net/sockstat{,6} cost ~0.6 ms whatever the sockets. While they stay as the last
        // full read saw them, that read's answer stands (for PORT_RESCAN at most), so most tries
        // are a short command; one that sees the counts change (exit 3) is followed by a full read.
        let counts = "i= al= i6=\n\
             { read -r _; read -r _ _ i _ _ _ _ _ al _; } 2>/dev/null </proc/net/sockstat && \
             { read -r _ _ i6; } 2>/dev/null </proc/net/sockstat6\n\
             sig=${i:+$i/$al/$i6}\n";
        let full = if local {
            format!("{counts}{listening}{nc}")
        } else {
            nc
        };
        // The counts the last full read saw, whether something listened then, and when.
        let mut known: Option<(String, bool, Instant)> = None;
        self.retry(
            &format!("port {addr}:{port} to be {state}"),
            self.limit(timeout),
            |left, last| {
                if let Some((sig, listens, _)) =
                    known.as_ref().filter(|k| k.2.elapsed() < PORT_RESCAN)
                {
                    let (status, answer) = if *listens {
                        (0, "listening")
                    } else {
                        (1, "nothing listens")
                    };
                    let quick = format!(
                        "{counts}[ \"$sig\" = {} ] || exit 3\n\
                         echo '{answer} on port {port} (no TCP socket changed)'; exit {status}",
                        sh_quote(sig)
                    );
                    let (status, out) = self.execute_for(&quick, left)?;
                    if status != 3 {
                        *last = format!("exited {status}: {}", out.trim_end());
                        return Ok(((status == 0) == open).then_some(()));
                    }
                }
                let (status, out) = self.execute_for(&full, left)?;
                let mut said = String::new();
                for line in out.lines() {
                    match line.strip_prefix(PORT_MARK).map(str::split_whitespace) {
                        Some(mut words) => {
                            known = match (words.next(), words.next()) {
                                (Some(sig), Some(l @ ("0" | "1"))) => {
                                    Some((sig.to_string(), l == "0", Instant::now()))
                                }
                                _ => None,
                            };
                        }
                        None => {
                            said.push_str(line);
                            said.push('\n');
                        }
                    }
                }
                *last = format!("exited {status}: {}", said.trim_end());
                Ok(((status == 0) == open).then_some(()))
            },
        )
    }
}
