//! Volatility 3: the analysis plan, the commands, and turning its JSON
//! output into findings.
//!
//! The plan is `banners.Banners` first (it needs no symbols and names the
//! kernel), then, when a symbol table (ISF) for that exact banner exists,
//! the Linux plugins. Without one, the missing table is itself a finding,
//! with the banner and the command that builds the table. Running the
//! commands (with timeouts) is the caller's job; this module stays pure.

use std::time::Duration;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The plugins run once symbols are found, in this order.
pub const PLUGINS: [&str; 13] = [
    PSLIST,
    "linux.pstree.PsTree",
    "linux.bash.Bash",
    LSMOD,
    "linux.sockstat.Sockstat",
    // The `linux.malware.*` names: the older `linux.malfind` and
    // `linux.check_syscall` aliases are deprecated and go after 2026-06-07.
    "linux.malware.malfind.Malfind",
    "linux.malware.check_syscall.Check_syscall",
    // Other views of the processes and modules that pslist and lsmod list,
    // for `cross_view`: a rootkit takes itself off one kernel list, rarely
    // off all of them. psscan reads all of memory, as banners does.
    PSSCAN,
    PIDHASHTABLE,
    HIDDEN_MODULES,
    MODXVIEW,
    // Kernel hooks that leave the system call table alone.
    FTRACE,
    EBPF,
];

/// The task list: what `ps` and /proc show.
const PSLIST: &str = "linux.pslist.PsList";
/// Task structures found by scanning all of memory.
const PSSCAN: &str = "linux.psscan.PsScan";
/// The kernel's PID table, which a task stays in while it runs.
const PIDHASHTABLE: &str = "linux.pidhashtable.PIDHashTable";
/// The module list: what `lsmod` and /proc/modules show.
const LSMOD: &str = "linux.lsmod.Lsmod";
/// Module structures found in module memory but not on the module list.
const HIDDEN_MODULES: &str = "linux.malware.hidden_modules.Hidden_modules";
/// Each module with the views (procfs, sysfs, memory scan) that see it.
const MODXVIEW: &str = "linux.malware.modxview.Modxview";
/// Functions hooked through ftrace, with the code that hooks them.
const FTRACE: &str = "linux.tracing.ftrace.CheckFtrace";
/// Loaded eBPF programs.
const EBPF: &str = "linux.ebpf.EBPF";
/// The `source` of findings that compare several plugins' outputs.
pub const CROSS_VIEW: &str = "cross-view";

pub const BANNERS: &str = "banners.Banners";

/// `banners` scans the whole image: about a minute per 10 GiB on this
/// kind of machine; 20 minutes covers large instances.
pub const BANNERS_TIMEOUT: Duration = Duration::from_secs(20 * 60);
/// One plugin: most take seconds, malfind on a busy host minutes; 30
/// minutes bounds a plugin that hangs (Volatility can, on odd images).
pub const PLUGIN_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// The arguments of one Volatility run (after the `vol` program name).
pub fn command(
    image: &str,
    cache_dir: &str,
    symbols_dir: Option<&str>,
    plugin: &str,
) -> Vec<String> {
    let mut args: Vec<String> = ["-q", "--cache-path", cache_dir, "-r", "json", "-f", image]
        .iter()
        .map(|s| s.to_string())
        .collect();
    if let Some(s) = symbols_dir {
        args.push("-s".into());
        args.push(s.into());
    }
    args.push(plugin.into());
    args
}

#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    Low,
    Medium,
    High,
}

/// Something an analyst should look at.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Finding {
    pub severity: Severity,
    /// The plugin whose output shows it (or `symbols`, or `cross-view` when
    /// it comes from comparing several plugins' outputs).
    pub source: String,
    pub title: String,
    pub detail: String,
}

fn finding(severity: Severity, source: &str, title: &str, detail: String) -> Finding {
    Finding {
        severity,
        source: source.to_string(),
        title: title.to_string(),
        detail,
    }
}

/// A banner `banners.Banners` found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Banner {
    pub offset: u64,
    pub banner: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unexpected Volatility output: {0}")]
pub struct OutputError(pub String);

fn rows(json: &Value) -> Result<Vec<&Value>, OutputError> {
    let top = json
        .as_array()
        .ok_or_else(|| OutputError("the JSON renderer prints an array of rows".into()))?;
    // Tree plugins nest rows under "__children": flatten them.
    let mut out = Vec::new();
    let mut stack: Vec<&Value> = top.iter().rev().collect();
    while let Some(r) = stack.pop() {
        out.push(r);
        if let Some(children) = r.get("__children").and_then(Value::as_array) {
            stack.extend(children.iter().rev());
        }
    }
    Ok(out)
}

/// The first of several possible column names present in a row.
fn col<'a>(row: &'a Value, names: &[&str]) -> Option<&'a Value> {
    names.iter().find_map(|n| row.get(*n))
}

fn text(row: &Value, names: &[&str]) -> String {
    match col(row, names) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

fn int(row: &Value, names: &[&str]) -> Option<i64> {
    col(row, names).and_then(|v| {
        v.as_i64()
            .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
    })
}

/// The banners `banners.Banners` printed.
pub fn parse_banners(json: &Value) -> Result<Vec<Banner>, OutputError> {
    Ok(rows(json)?
        .into_iter()
        .filter_map(|r| {
            let banner = text(r, &["Banner"]);
            (!banner.is_empty()).then(|| Banner {
                offset: int(r, &["Offset"])
                    .and_then(|o| u64::try_from(o).ok())
                    .unwrap_or(0),
                banner: banner.trim_end_matches(['\n', '\0']).to_string(),
            })
        })
        .collect())
}

/// The kernel release in a Linux banner (`6.1.0-13-amd64` in
/// `Linux version 6.1.0-13-amd64 (...) ...`).
pub fn kernel_release(banner: &str) -> Option<String> {
    let rest = banner.split("Linux version ").nth(1)?;
    rest.split_whitespace().next().map(str::to_string)
}

/// The Linux banner an ISF symbol table was built for: Volatility matches
/// tables by the `linux_banner` symbol's constant data.
pub fn isf_banner(isf: &Value) -> Option<String> {
    let data = isf
        .get("symbols")?
        .get("linux_banner")?
        .get("constant_data")?
        .as_str()?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(data)
        .ok()?;
    let s = String::from_utf8_lossy(&bytes)
        .trim_end_matches(['\0', '\n'])
        .to_string();
    Some(s)
}

/// The finding for a kernel without a symbol table: what could not be
/// analysed, the exact banner, and how to build the table.
pub fn missing_symbols(banner: &str, symbols_location: &str) -> Finding {
    let release = kernel_release(banner).unwrap_or_else(|| "<release>".into());
    finding(
        Severity::Medium,
        "symbols",
        "no symbol table for this kernel: process, module, network and code-injection analysis did not run",
        format!(
            "banner: {banner}\nbuild the table from the kernel's debug symbols (Debian: linux-image-{release}-dbg; Amazon Linux/RHEL: kernel-debuginfo-{release}) and add it to {symbols_location}:\n  dwarf2json linux --elf /usr/lib/debug/boot/vmlinux-{release} --system-map /boot/System.map-{release} | xz -c > {release}.json.xz\nthen run the analysis again"
        ),
    )
}

/// Known Linux rootkit module names.
const ROOTKIT_MODULES: &[&str] = &[
    "diamorphine",
    "reptile",
    "suterusu",
    "adore",
    "adore_ng",
    "kovid",
    "rkduck",
    "khook",
    "nuk3gh0st",
    "brootus",
];

/// Processes that serve the network and should never start a shell.
const SERVERS: &[&str] = &[
    "nginx",
    "apache2",
    "httpd",
    "php-fpm",
    "php",
    "java",
    "node",
    "tomcat",
    "gunicorn",
    "uwsgi",
    "mysqld",
    "postgres",
    "redis-server",
];

const SHELLS: &[&str] = &[
    "sh", "bash", "dash", "zsh", "ksh", "busybox", "nc", "ncat", "socat", "python", "python3",
    "perl",
];

/// Shell history lines that download-and-run, open reverse shells or hide
/// tracks.
fn suspicious_command(cmd: &str) -> Option<&'static str> {
    let c = cmd.to_ascii_lowercase();
    let pipes_to_shell = ["| sh", "|sh", "| bash", "|bash", "| /bin/sh", "| /bin/bash"]
        .iter()
        .any(|p| c.contains(p));
    if pipes_to_shell && (c.contains("curl") || c.contains("wget")) {
        return Some("downloads a script and runs it (curl|sh)");
    }
    if pipes_to_shell && c.contains("base64") {
        return Some("decodes and runs hidden commands (base64 | sh)");
    }
    if c.contains("/dev/tcp/") || c.contains("/dev/udp/") {
        return Some("reverse shell through /dev/tcp");
    }
    if (c.contains("nc ") || c.contains("ncat ")) && (c.contains(" -e") || c.contains(" -c")) {
        return Some("netcat executing a shell");
    }
    if c.contains("unset histfile") || c.contains("history -c") || c.contains("histfile=/dev/null")
    {
        return Some("erases shell history");
    }
    if c.contains("chmod +x /tmp")
        || c.contains("chmod 777 /tmp")
        || c.contains("chmod +x /dev/shm")
    {
        return Some("makes a file in a world-writable directory executable");
    }
    None
}

fn is_public(addr: &str) -> bool {
    match addr.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(a)) => {
            !(a.is_private()
                || a.is_loopback()
                || a.is_link_local()
                || a.is_unspecified()
                || a.is_broadcast())
        }
        Ok(std::net::IpAddr::V6(a)) => {
            let first = a.segments().first().copied().unwrap_or(0);
            // fc00::/7 is unique local, fe80::/10 link local.
            !(a.is_loopback()
                || a.is_unspecified()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80)
        }
        Err(_) => false,
    }
}

/// Findings in one plugin's JSON output. `module_baseline` lists the
/// kernel modules expected on the host (empty: no baseline, only known
/// rootkits are reported).
pub fn findings(
    plugin: &str,
    json: &Value,
    module_baseline: &[String],
) -> Result<Vec<Finding>, OutputError> {
    let rows = rows(json)?;
    let mut out = Vec::new();
    let name = plugin;
    match plugin {
        "linux.pslist.PsList" | "linux.pstree.PsTree" => {
            let comm_of = |pid: i64| {
                rows.iter()
                    .find(|r| int(r, &["PID"]) == Some(pid))
                    .map(|r| text(r, &["COMM", "Comm"]))
            };
            let mut seen = std::collections::BTreeSet::new();
            for r in &rows {
                let pid = int(r, &["PID"]).unwrap_or(-1);
                let tid = int(r, &["TID"]).unwrap_or(pid);
                if pid != tid || !seen.insert(pid) {
                    continue;
                }
                let ppid = int(r, &["PPID"]).unwrap_or(-1);
                let comm = text(r, &["COMM", "Comm"]);
                if plugin == "linux.pslist.PsList" {
                    let kernel_looking = comm.starts_with('[') && comm.ends_with(']');
                    if kernel_looking && pid != 2 && ppid != 2 {
                        out.push(finding(
                            Severity::High,
                            name,
                            "a user process disguised as a kernel thread",
                            format!("PID {pid} is named {comm:?} but its parent is PID {ppid}, not kthreadd (PID 2)"),
                        ));
                    }
                    if comm != comm.trim() || comm.chars().any(|c| c.is_control()) {
                        out.push(finding(
                            Severity::Medium,
                            name,
                            "a process name with hidden characters",
                            format!("PID {pid} (parent {ppid}) is named {comm:?}, which looks like {:?} in a process list", comm.trim()),
                        ));
                    }
                } else if SHELLS.contains(&comm.trim()) {
                    if let Some(parent) = comm_of(ppid) {
                        if SERVERS.contains(&parent.trim()) {
                            out.push(finding(
                                Severity::High,
                                name,
                                "a network server started a shell",
                                format!("{comm:?} (PID {pid}) is a child of {parent:?} (PID {ppid}): typical of a web shell or remote code execution"),
                            ));
                        }
                    }
                }
            }
        }
        "linux.bash.Bash" => {
            for r in &rows {
                let cmd = text(r, &["Command"]);
                if let Some(why) = suspicious_command(&cmd) {
                    out.push(finding(
                        Severity::High,
                        name,
                        why,
                        format!(
                            "PID {} ({}) at {}: {cmd}",
                            int(r, &["PID"]).unwrap_or(-1),
                            text(r, &["Process", "COMM"]),
                            text(r, &["CommandTime", "Command Time"])
                        ),
                    ));
                }
            }
        }
        "linux.lsmod.Lsmod" => {
            for r in &rows {
                let m = text(r, &["Module Name", "Name"]);
                let lower = m.to_ascii_lowercase();
                if ROOTKIT_MODULES
                    .iter()
                    .any(|k| lower == *k || lower.starts_with(&format!("{k}_")))
                {
                    out.push(finding(
                        Severity::High,
                        name,
                        "a known rootkit module is loaded",
                        format!("module {m:?}"),
                    ));
                } else if !module_baseline.is_empty() && !module_baseline.iter().any(|b| b == &m) {
                    out.push(finding(
                        Severity::Medium,
                        name,
                        "a kernel module not in the baseline",
                        format!("module {m:?}"),
                    ));
                }
            }
        }
        "linux.sockstat.Sockstat" => {
            for r in &rows {
                let state = text(r, &["State"]);
                let remote = text(r, &["Destination Addr"]);
                let proc_name = text(r, &["Process Name", "Process", "COMM"]);
                if state == "ESTABLISHED" && is_public(&remote) {
                    let shell = SHELLS.contains(&proc_name.trim());
                    out.push(finding(
                        if shell { Severity::High } else { Severity::Low },
                        name,
                        if shell {
                            "a shell with a connection to the internet (reverse shell?)"
                        } else {
                            "a connection to the internet"
                        },
                        format!(
                            "{proc_name} (PID {}) {}:{} -> {remote}:{}",
                            int(r, &["PID", "Pid"]).unwrap_or(-1),
                            text(r, &["Source Addr"]),
                            text(r, &["Source Port"]),
                            text(r, &["Destination Port"])
                        ),
                    ));
                }
            }
        }
        "linux.malware.malfind.Malfind" | "linux.malfind.Malfind" => {
            for r in &rows {
                out.push(finding(
                    Severity::High,
                    name,
                    "injected code: executable and writable memory not backed by a file",
                    format!(
                        "{} (PID {}) {}-{} {}",
                        text(r, &["Process", "COMM"]),
                        int(r, &["PID"]).unwrap_or(-1),
                        address(r, &["Start"]),
                        address(r, &["End"]),
                        text(r, &["Protection"])
                    ),
                ));
            }
        }
        "linux.malware.check_syscall.Check_syscall" | "linux.check_syscall.Check_syscall" => {
            for r in &rows {
                let sym = text(r, &["Handler Symbol", "Symbol"]);
                let normal = [
                    "sys_",
                    "__x64_sys_",
                    "__ia32_sys_",
                    "__x32_compat_sys_",
                    "__se_sys_",
                    "__do_sys_",
                    "__ia32_compat_sys_",
                    "compat_sys_",
                    "stub_",
                    "ptregs_",
                ]
                .iter()
                .any(|p| sym.starts_with(p));
                if !normal {
                    out.push(finding(
                        Severity::High,
                        name,
                        "a hooked system call",
                        format!(
                            "{} entry {} points to {} ({})",
                            text(r, &["Table Name"]),
                            int(r, &["Index"]).unwrap_or(-1),
                            address(r, &["Handler Address"]),
                            if sym.is_empty() {
                                "no symbol"
                            } else {
                                sym.as_str()
                            }
                        ),
                    ));
                }
            }
        }
        other => return Err(OutputError(format!("no finding rules for plugin {other}"))),
    }
    // One socket shows once per thread and file descriptor that holds it:
    // report each finding once.
    let mut seen = std::collections::BTreeSet::new();
    out.retain(|f| seen.insert((f.title.clone(), f.detail.clone())));
    Ok(out)
}

/// An address column as hex (Volatility's JSON gives kernel and user
/// addresses as plain integers, above i64::MAX for kernel ones).
fn address(row: &Value, names: &[&str]) -> String {
    match col(row, names) {
        Some(Value::Number(n)) => n
            .as_u64()
            .map_or_else(|| n.to_string(), |a| format!("0x{a:x}")),
        _ => text(row, names),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn banners_and_release() {
        let b = parse_banners(
            &json!([{"Offset": 4096, "Banner": "Linux version 6.1.0-13-amd64 (x) #1 SMP\n"}]),
        )
        .unwrap();
        assert_eq!(b[0].offset, 4096);
        assert_eq!(
            kernel_release(&b[0].banner).as_deref(),
            Some("6.1.0-13-amd64")
        );
        let f = missing_symbols(&b[0].banner, "s3://tools/symbols/");
        assert!(f.detail.contains("Linux version 6.1.0-13-amd64 (x) #1 SMP"));
        assert!(f
            .detail
            .contains("dwarf2json linux --elf /usr/lib/debug/boot/vmlinux-6.1.0-13-amd64"));
    }

    #[test]
    fn isf_banner_is_read_from_linux_banner() {
        let banner = "Linux version 6.1.0 (x)\n\0";
        let isf = json!({"symbols": {"linux_banner": {"constant_data": base64::engine::general_purpose::STANDARD.encode(banner)}}});
        assert_eq!(isf_banner(&isf).as_deref(), Some("Linux version 6.1.0 (x)"));
    }

    #[test]
    fn tree_rows_are_flattened() {
        let j = json!([{"PID": 1, "PPID": 0, "COMM": "systemd", "__children": [{"PID": 10, "PPID": 1, "COMM": "nginx", "__children": [{"PID": 11, "PPID": 10, "COMM": "sh", "__children": []}]}]}]);
        let f = findings("linux.pstree.PsTree", &j, &[]).unwrap();
        assert_eq!(f.len(), 1);
        assert!(f[0].title.contains("network server started a shell"));
    }

    #[test]
    fn public_addresses() {
        assert!(is_public("203.0.113.7"));
        assert!(!is_public("10.0.0.1"));
        assert!(!is_public("fe80::1"));
        assert!(!is_public("not an ip"));
    }
}
