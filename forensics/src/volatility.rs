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

/// The plugin run first: it finds the Linux banners in the image, needs no
/// symbols, and its banner picks the symbol table.
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

/// How urgently a finding wants an analyst; ordered, `Info` lowest.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Context only, nothing suspicious.
    Info,
    /// Worth a look, often benign (e.g. a connection to the internet).
    Low,
    /// Unusual and worth checking (e.g. a module not in the baseline, no
    /// symbol table).
    Medium,
    /// A strong sign of compromise (e.g. a known rootkit, a hidden process).
    High,
}

/// Something an analyst should look at.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Finding {
    /// How urgent it is.
    pub severity: Severity,
    /// The plugin whose output shows it (or `symbols`, or `cross-view` when
    /// it comes from comparing several plugins' outputs).
    pub source: String,
    /// What was found, in one line of plain words.
    pub title: String,
    /// The evidence for it (PIDs, names, addresses, the rows involved); may
    /// span several lines.
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
    /// Where the banner is in the memory layer Volatility scanned (its
    /// `Offset` column; 0 when the row has none).
    pub offset: u64,
    /// The banner text (`Linux version ...`), trailing newlines and NULs
    /// removed.
    pub banner: String,
}

/// Volatility's JSON output is not what the parser expects (not an array
/// of rows), or no rules exist for the plugin; says which.
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

/// Why an ISF file's banner could not be read.
#[derive(Debug, thiserror::Error)]
pub enum IsfError {
    /// A `.json.xz` file that does not decompress.
    #[error("cannot decompress the .xz table")]
    Xz(#[source] lzma_rs::error::Error),
    /// The (decompressed) bytes are not a JSON object whose `symbols`, if
    /// present, is an object.
    #[error("not an ISF symbol table (JSON)")]
    Json(#[source] serde_json::Error),
    /// A file name ending in neither `.json` nor `.json.xz`; holds the name.
    #[error("{0}: only .json and .json.xz tables can be read")]
    Compression(String),
}

/// Only `symbols.linux_banner.constant_data` of an ISF, read without
/// building the rest: tables are tens of megabytes of JSON.
#[derive(Deserialize)]
struct IsfHead {
    #[serde(default)]
    symbols: BannerOnly,
}

#[derive(Default)]
struct BannerOnly(Option<String>);

#[derive(Deserialize)]
struct BannerSymbol {
    #[serde(default)]
    constant_data: Option<String>,
}

impl<'de> Deserialize<'de> for BannerOnly {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<BannerOnly, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = BannerOnly;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("the symbols of an ISF table")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<BannerOnly, A::Error> {
                let mut banner = None;
                while let Some(key) = map.next_key::<String>()? {
                    if key == "linux_banner" {
                        banner = map.next_value::<BannerSymbol>()?.constant_data;
                    } else {
                        map.next_value::<serde::de::IgnoredAny>()?;
                    }
                }
                Ok(BannerOnly(banner))
            }
        }
        d.deserialize_map(V)
    }
}

/// The Linux banner an ISF table (its file name says the compression:
/// `.json` or `.json.xz`) was built for; None when it names none.
pub fn isf_file_banner(name: &str, bytes: &[u8]) -> Result<Option<String>, IsfError> {
    let plain;
    let json: &[u8] = if name.ends_with(".json.xz") {
        let mut out = Vec::new();
        lzma_rs::xz_decompress(&mut std::io::BufReader::new(bytes), &mut out)
            .map_err(IsfError::Xz)?;
        plain = out;
        &plain
    } else if name.ends_with(".json") {
        bytes
    } else {
        return Err(IsfError::Compression(name.to_string()));
    };
    let head: IsfHead = serde_json::from_slice(json).map_err(IsfError::Json)?;
    Ok(head.symbols.0.and_then(|data| {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(data)
            .ok()?;
        Some(
            String::from_utf8_lossy(&bytes)
                .trim_end_matches(['\0', '\n'])
                .to_string(),
        )
    }))
}

/// The finding for a kernel without a symbol table: what could not be
/// analysed, the exact banner, and how to build the table for the
/// distribution the banner names (its debug package and vmlinux path).
pub fn missing_symbols(banner: &str, symbols_location: &str) -> Finding {
    let release = kernel_release(banner).unwrap_or_else(|| "<release>".into());
    let hint = symbol_hint(banner, &release);
    finding(
        Severity::Medium,
        "symbols",
        "no symbol table for this kernel: process, module, network and code-injection analysis did not run",
        format!(
            "banner: {banner}\n\
             kernel {release} ({distro})\n\
             1. get the kernel's debug symbols: {package}\n{install}\n\
             2. build the table from that exact release's vmlinux and System.map:\n  \
             dwarf2json linux --elf {vmlinux} --system-map /boot/System.map-{release} | xz -c > {release}.json.xz\n\
             3. make it available: firebreak symbols add {release}.json.xz\n  \
             (stores the table in the tools bucket, indexed by its banner; or copy it into {symbols_location})\n\
             then run the analysis again",
            distro = hint.distro,
            package = hint.package,
            install = hint.install,
            vmlinux = hint.vmlinux,
        ),
    )
}

/// Where one distribution keeps a kernel's debug symbols.
#[derive(Debug)]
struct SymbolHint {
    distro: &'static str,
    package: String,
    /// Shell lines that install the package, indented for the finding.
    install: String,
    vmlinux: String,
}

/// The debug package and vmlinux path for the kernel in `banner`, told by
/// the release's distribution tag (`.amzn2023`, `.el9`, `-aws`) or the
/// compiler's vendor in the banner (`Ubuntu`, `Debian`).
fn symbol_hint(banner: &str, release: &str) -> SymbolHint {
    // Amazon Linux and the RHEL family ship the debug vmlinux in
    // kernel-debuginfo, under the modules tree.
    let rpm = |distro, install: String| SymbolHint {
        distro,
        package: format!("kernel-debuginfo-{release}"),
        install,
        vmlinux: format!("/usr/lib/debug/lib/modules/{release}/vmlinux"),
    };
    // dnf has debuginfo-install built in; yum needs yum-utils for it.
    let dnf = format!("  dnf debuginfo-install -y kernel-{release}");
    let yum = format!("  yum install -y yum-utils && debuginfo-install -y kernel-{release}");
    // `.el9`, `.el9_3`, `.el8uek`: the major version is the digits after "el".
    let rhel_major = release.split(['.', '_']).find_map(|part| {
        let digits: String = part
            .strip_prefix("el")?
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        digits.parse::<u32>().ok()
    });
    if release.contains(".amzn2023") {
        rpm("Amazon Linux 2023", dnf)
    } else if release.contains(".amzn2") {
        rpm("Amazon Linux 2", yum)
    } else if let Some(major) = rhel_major {
        // RHEL 7 and its rebuilds still use yum.
        rpm(
            "RHEL family (RHEL, CentOS, Rocky, AlmaLinux, Oracle Linux)",
            if major <= 7 { yum } else { dnf },
        )
    } else if banner.contains("Ubuntu")
        || ["-generic", "-aws", "-lowlatency"]
            .iter()
            .any(|s| release.ends_with(s))
    {
        let package = format!("linux-image-unsigned-{release}-dbgsym");
        SymbolHint {
            distro: "Ubuntu",
            install: format!(
                "  (from ddebs.ubuntu.com, on an Ubuntu machine of the same release)\n  \
                 apt-get install -y ubuntu-dbgsym-keyring\n  \
                 printf 'deb http://ddebs.ubuntu.com %s main restricted universe multiverse\\n' \"$(lsb_release -cs)\" \"$(lsb_release -cs)-updates\" > /etc/apt/sources.list.d/ddebs.list\n  \
                 apt-get update && apt-get install -y {package}"
            ),
            package,
            vmlinux: format!("/usr/lib/debug/boot/vmlinux-{release}"),
        }
    } else if banner.contains("Debian") {
        let package = format!("linux-image-{release}-dbg");
        SymbolHint {
            distro: "Debian",
            install: format!("  apt-get install -y {package}"),
            package,
            vmlinux: format!("/usr/lib/debug/boot/vmlinux-{release}"),
        }
    } else {
        SymbolHint {
            distro: "distribution not recognised from the banner",
            package: format!(
                "Amazon Linux/RHEL: kernel-debuginfo-{release} (vmlinux at /usr/lib/debug/lib/modules/{release}/vmlinux); \
                 Ubuntu: linux-image-unsigned-{release}-dbgsym from ddebs.ubuntu.com; \
                 Debian: linux-image-{release}-dbg (Ubuntu and Debian: vmlinux at /usr/lib/debug/boot/vmlinux-{release})"
            ),
            install: format!(
                "  dnf debuginfo-install -y kernel-{release}   # Amazon Linux 2023, RHEL 8+ (yum's debuginfo-install on older ones)\n  \
                 apt-get install -y linux-image-{release}-dbg   # Debian"
            ),
            vmlinux: format!("/usr/lib/debug/boot/vmlinux-{release}"),
        }
    }
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

/// Whether a module name is a known rootkit's (or one of its parts').
fn is_rootkit_module(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    ROOTKIT_MODULES
        .iter()
        .any(|k| lower == *k || lower.starts_with(&format!("{k}_")))
}

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

/// Processes (by COMM) whose anonymous executable memory is normal: their
/// JIT compiler writes machine code there. The name is the attacker's to
/// choose, so a region in them still counts when it holds signs of
/// injected code (see `injection_signs`).
const JIT_RUNTIMES: &[&str] = &[
    // HotSpot/OpenJDK compiles bytecode into its code cache.
    "java",
    // V8 (Node.js; Debian's binary is `nodejs`).
    "node",
    "nodejs",
    // .NET's RyuJIT, and PowerShell, which runs on it.
    "dotnet",
    "pwsh",
    // Mono's JIT (`mono-sgen` is the binary behind `mono`).
    "mono",
    "mono-sgen",
    // Browsers' JavaScript engines, for headless browsers on build and
    // scraping hosts.
    "chrome",
    "chromium",
    "firefox",
    "firefox-esr",
    // LuaJIT's trace compiler.
    "luajit",
];

/// COMM prefixes of JIT runtimes whose names carry a suffix: QEMU's TCG
/// translates guest code into anonymous memory (`qemu-system-x86` is
/// `qemu-system-x86_64` cut to 15 characters, `qemu-kvm` RHEL's name).
const JIT_RUNTIME_PREFIXES: &[&str] = &["qemu-"];

/// Whether a process (by COMM) is a JIT runtime.
fn is_jit_runtime(comm: &str) -> bool {
    let c = comm.trim();
    JIT_RUNTIMES.contains(&c) || JIT_RUNTIME_PREFIXES.iter().any(|p| c.starts_with(p))
}

/// The shortest run of single-byte NOPs (0x90) counted as a NOP sled:
/// alignment padding is at most 15 bytes, and compilers and JITs pad with
/// multi-byte NOPs (0f 1f ...) anyway, so 16 in a row are a landing pad.
const NOP_SLED_MIN: usize = 16;

/// Shell paths that shellcode carries to `execve` (as bytes in malfind's
/// Hexdump): plain, with the doubled slash that pads `/bin/sh` to 8 bytes,
/// and as the two 32-bit pushes of classic x86 shellcode (`push "//sh";
/// push "/bin"`, so "h//shh/bin" in memory).
const SHELL_PATHS: &[&[u8]] = &[b"/bin/sh", b"/bin//sh", b"/bin/bash", b"//shh/bin"];

/// Byte patterns (hex, `??` for any byte) that start common x86/x86-64
/// shellcode, with what they are.
const SHELLCODE_PATTERNS: &[(&str, &str)] = &[
    // Compilers load constants with mov; shellcode pushes and pops a system
    // call number because the mov would hold zero bytes (msfvenom's Linux
    // x64 payloads all start this way).
    (
        "6a ?? 58",
        "a system call number pushed and popped into rax (push imm8; pop rax), a shellcode idiom",
    ),
    (
        "fc 48 83 e4 f0",
        "the Metasploit x64 prologue (cld; and rsp, -16)",
    ),
    (
        "d9 74 24 f4",
        "an FPU get-program-counter trick (fnstenv [esp-0xc]), how encoded Metasploit payloads start",
    ),
];

/// The system call instructions, as bytes: syscall, int 0x80, sysenter.
const SYSCALL_BYTES: &[&str] = &["0f 05", "cd 80", "0f 34"];

/// Malfind's Hexdump column ("4c 8b 05 ...") as bytes; "N/A" (no bytes
/// read) and anything else that is not hex gives what came before it.
fn hexdump_bytes(hexdump: &str) -> Vec<u8> {
    hexdump
        .split_whitespace()
        .map_while(|t| u8::from_str_radix(t, 16).ok())
        .collect()
}

/// Whether `pattern` (hex bytes, `??` for any byte) occurs in `bytes`.
fn has_pattern(bytes: &[u8], pattern: &str) -> bool {
    let pat: Vec<Option<u8>> = pattern
        .split_whitespace()
        .map(|t| u8::from_str_radix(t, 16).ok())
        .collect();
    !pat.is_empty()
        && bytes
            .windows(pat.len())
            .any(|w| w.iter().zip(&pat).all(|(b, p)| p.is_none_or(|p| p == *b)))
}

/// The (mnemonic, operands) of each instruction in malfind's Disasm column
/// (`"\n0x7f..:\tpush\t0x29\n..."`); empty when capstone was missing and
/// the column holds only quoted hex bytes.
fn instructions(disasm: &str) -> Vec<(&str, &str)> {
    disasm
        .lines()
        .filter_map(|l| {
            let (_, ins) = l.split_once(":\t")?;
            let (mnemonic, ops) = ins.split_once('\t').unwrap_or((ins, ""));
            Some((mnemonic.trim(), ops.trim().trim_end_matches('"')))
        })
        .collect()
}

/// Signs that a malfind region holds injected code rather than JIT output,
/// read from its first bytes (Hexdump) and their disassembly (Disasm).
fn injection_signs(hexdump: &str, disasm: &str) -> Vec<&'static str> {
    let bytes = hexdump_bytes(hexdump);
    let mut signs = Vec::new();
    if bytes.starts_with(&[0x7f, b'E', b'L', b'F']) {
        signs.push("an ELF header (7f 45 4c 46) at the start of the region: an executable loaded without a file");
    }
    if bytes.starts_with(b"MZ") {
        signs.push("a PE header (4d 5a, \"MZ\") at the start of the region: a Windows executable in memory");
    }
    // JIT-compiled code calls into its runtime for system calls; it does
    // not make them itself. The disassembly is instruction-aligned, so it
    // is preferred over matching the bytes.
    let ins = instructions(disasm);
    let syscall = if ins.is_empty() {
        SYSCALL_BYTES.iter().any(|p| has_pattern(&bytes, p))
    } else {
        ins.iter()
            .any(|(m, ops)| matches!(*m, "syscall" | "sysenter") || (*m == "int" && *ops == "0x80"))
    };
    if syscall {
        signs.push("a system call instruction (syscall, int 0x80 or sysenter), which JIT output leaves to its runtime");
    }
    if SHELL_PATHS
        .iter()
        .any(|p| bytes.windows(p.len()).any(|w| w == *p))
    {
        signs.push("a shell path (/bin/sh) in the code, as shellcode passes to execve");
    }
    let longest_nops = bytes
        .split(|b| *b != 0x90)
        .map(<[u8]>::len)
        .max()
        .unwrap_or(0);
    if longest_nops >= NOP_SLED_MIN {
        signs.push("a NOP sled (a long run of 0x90 bytes), a landing pad for an exploit");
    }
    for (pattern, what) in SHELLCODE_PATTERNS {
        if has_pattern(&bytes, pattern) {
            signs.push(what);
        }
    }
    signs
}

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

/// Whether an address is on the internet: not private, loopback, link
/// local (169.254.0.0/16, which holds the instance metadata service),
/// carrier-grade NAT or unspecified. An IPv4-mapped IPv6 address
/// (`::ffff:10.0.0.1`, how dual-stack sockets show IPv4 peers) is judged by
/// its IPv4 address.
fn is_public(addr: &str) -> bool {
    match addr.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(a)) => is_public_v4(a),
        Ok(std::net::IpAddr::V6(a)) => {
            if let Some(v4) = a.to_ipv4_mapped() {
                return is_public_v4(v4);
            }
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

/// `is_public` for IPv4. `is_private` covers 10/8, 172.16/12 and
/// 192.168/16; `is_link_local` 169.254/16; carrier-grade NAT (100.64/10,
/// RFC 6598: `Ipv4Addr::is_shared` is unstable) is checked by hand.
fn is_public_v4(a: std::net::Ipv4Addr) -> bool {
    let [first, second, ..] = a.octets();
    let carrier_grade_nat = first == 100 && (second & 0xc0) == 64;
    !(a.is_private()
        || a.is_loopback()
        || a.is_link_local()
        || a.is_unspecified()
        || a.is_broadcast()
        || carrier_grade_nat)
}

/// The title shared by every finding of a module hidden from the module
/// list, whichever view shows it.
const HIDDEN_MODULE: &str = "a module hidden from /proc/modules";

/// Why a module off the module list matters (shared by the findings).
const HIDDEN_MODULE_WHY: &str =
    "rootkits such as Diamorphine take their module off the list to hide it from lsmod";

/// The name Volatility gives the kernel itself where it names the module
/// that owns an address (`constants.linux.KERNEL_NAME`).
const KERNEL_MODULE: &str = "__kernel__";

/// eBPF program types that can watch or change what the kernel does in
/// every process (matched in lower case, anywhere in Volatility's type
/// string such as `BPF_PROG_TYPE_KPROBE`): kprobe, tracepoint and
/// raw_tracepoint, tracing (fentry/fexit), perf_event and lsm.
const TRACING_BPF_TYPES: &[&str] = &["kprobe", "tracepoint", "tracing", "perf_event", "lsm"];

/// Whether an eBPF program type (as Volatility prints it) is a tracing one.
fn is_tracing_bpf(program_type: &str) -> bool {
    let t = program_type.to_ascii_lowercase().replace([' ', '-'], "_");
    TRACING_BPF_TYPES.iter().any(|k| t.contains(k))
}

/// Where modxview saw a module that is not in /proc/modules ("In procfs"
/// false); empty when it is there, or seen nowhere else.
fn modxview_hidden_views(row: &Value) -> Vec<&'static str> {
    if flag(row, "In procfs") != Some(false) {
        return Vec::new();
    }
    let mut views = Vec::new();
    if flag(row, "In sysfs") == Some(true) {
        views.push("in /sys/module");
    }
    if flag(row, "In scan") == Some(true) {
        views.push("found by a scan of module memory");
    }
    views
}

/// A module name for a finding (Volatility prints null when it cannot
/// read it).
fn module_name(name: &str) -> String {
    if name.is_empty() {
        "<unreadable name>".into()
    } else {
        format!("{name:?}")
    }
}

/// Findings in one plugin's JSON output. `module_baseline` lists the
/// kernel modules expected on the host (empty: no baseline, only known
/// rootkits are reported by lsmod, and every module counts as unexpected
/// where ftrace hooks are concerned).
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
                if is_rootkit_module(&m) {
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
                let process = text(r, &["Process", "COMM"]);
                let region = format!(
                    "{process} (PID {}) {}-{} {}",
                    int(r, &["PID"]).unwrap_or(-1),
                    address(r, &["Start"]),
                    address(r, &["End"]),
                    text(r, &["Protection"])
                );
                let signs = injection_signs(&text(r, &["Hexdump"]), &text(r, &["Disasm"]));
                let jit = is_jit_runtime(&process);
                let (severity, title, detail) = match (jit, signs.is_empty()) {
                    (true, true) => (
                        Severity::Low,
                        "executable memory not backed by a file in a JIT runtime",
                        format!("{region}: {:?} is a JIT runtime, and JIT runtimes write code into anonymous memory; its first bytes show no sign of injected code (no ELF or PE header, no shellcode pattern)", process.trim()),
                    ),
                    (true, false) => (
                        Severity::High,
                        "injected code: executable and writable memory not backed by a file",
                        format!("{region}: signs of injected code: {}; {:?} is a JIT runtime, but JIT output does not look like this", signs.join("; "), process.trim()),
                    ),
                    (false, true) => (
                        Severity::High,
                        "injected code: executable and writable memory not backed by a file",
                        region,
                    ),
                    (false, false) => (
                        Severity::High,
                        "injected code: executable and writable memory not backed by a file",
                        format!("{region}: signs of injected code: {}", signs.join("; ")),
                    ),
                };
                out.push(finding(severity, name, title, detail));
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
        PSSCAN | PIDHASHTABLE => {
            // A row alone is just a task: these views mean something only
            // next to pslist's, which `cross_view` does.
        }
        HIDDEN_MODULES => {
            for r in &rows {
                let taints = text(r, &["Taints"]);
                out.push(finding(
                    Severity::High,
                    name,
                    HIDDEN_MODULE,
                    format!(
                        "module {} at {} (taints: {}) is in module memory but not on the kernel's module list: {HIDDEN_MODULE_WHY}",
                        module_name(&text(r, &["Module Name", "Name"])),
                        address(r, &["Offset"]),
                        if taints.is_empty() { "none" } else { taints.as_str() },
                    ),
                ));
            }
        }
        MODXVIEW => {
            for r in &rows {
                let views = modxview_hidden_views(r);
                if views.is_empty() {
                    continue;
                }
                out.push(finding(
                    Severity::High,
                    name,
                    HIDDEN_MODULE,
                    format!(
                        "module {} at {} is {} but not in /proc/modules: {HIDDEN_MODULE_WHY}",
                        module_name(&text(r, &["Name", "Module Name"])),
                        address(r, &["Address"]),
                        views.join(" and "),
                    ),
                ));
            }
        }
        FTRACE => {
            for r in &rows {
                let module = text(r, &["Module"]);
                let callback = text(r, &["Callback"]);
                let hooked = text(r, &["Hooked symbols"]);
                let hook = format!(
                    "ftrace_ops at {} calls {} at {} on entry to {}",
                    address(r, &["ftrace_ops address"]),
                    if callback.is_empty() {
                        "an unnamed function"
                    } else {
                        callback.as_str()
                    },
                    address(r, &["Callback address"]),
                    if hooked.is_empty() {
                        "no named kernel function"
                    } else {
                        hooked.as_str()
                    },
                );
                let (severity, title, why) = if module.is_empty() {
                    (
                        Severity::High,
                        "an ftrace hook into code outside the kernel and every module",
                        "no module holds the callback: the code of a module that hid or freed itself, or of memory a rootkit allocated".to_string(),
                    )
                } else if module == KERNEL_MODULE {
                    (
                        Severity::Low,
                        "an ftrace hook by the kernel itself",
                        "ftrace-based kprobes, the function tracer and BPF trampolines hook this way; the hooked functions say what is watched".to_string(),
                    )
                } else if is_rootkit_module(&module) {
                    (
                        Severity::High,
                        "a known rootkit module hooks kernel functions through ftrace",
                        format!("the callback is in module {module:?}"),
                    )
                } else if module_baseline.iter().any(|b| b == &module) {
                    (
                        Severity::Low,
                        "an ftrace hook from a baseline module",
                        format!("the callback is in module {module:?}, which the baseline expects: live patches and security agents hook through ftrace"),
                    )
                } else {
                    (
                        Severity::High,
                        "an ftrace hook from a module outside the baseline",
                        format!(
                            "the callback is in module {module:?}: rootkits hook kernel functions through ftrace to hide files, processes and connections{}",
                            if module_baseline.is_empty() {
                                " (no module baseline was given, so every module counts as unexpected: live patches and security agents hook this way too)"
                            } else {
                                ""
                            }
                        ),
                    )
                };
                out.push(finding(severity, name, title, format!("{hook}: {why}")));
            }
        }
        EBPF => {
            for r in &rows {
                let program_type = text(r, &["Type"]);
                let tracing = is_tracing_bpf(&program_type);
                let program = format!(
                    "eBPF program {:?} (tag {}) of type {} at {}",
                    text(r, &["Name"]),
                    or_unknown(text(r, &["Tag"])),
                    or_unknown(program_type),
                    address(r, &["Address"]),
                );
                out.push(if tracing {
                    finding(
                        Severity::Medium,
                        name,
                        "a tracing eBPF program is loaded",
                        format!("{program}: tracing programs see and can change what the kernel does for every process, as eBPF rootkits use them to hide files and read secrets; security agents and observability tools load them too, so check which tool did"),
                    )
                } else {
                    finding(
                        Severity::Low,
                        name,
                        "an eBPF program is loaded",
                        format!("{program}: networking and cgroup programs are common (systemd loads cgroup programs on every boot); one nothing on the host explains can filter or redirect traffic"),
                    )
                });
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

/// A value for a finding, or "unknown" for what Volatility could not read.
fn or_unknown(s: String) -> String {
    if s.is_empty() {
        "unknown".into()
    } else {
        s
    }
}

/// Findings that need several plugins' outputs of one run (plugin name,
/// its JSON): a rootkit takes its process or module off the list that
/// `ps`/lsmod read, and other views of the same kernel objects still
/// see it.
///
/// - A process (PID, its thread group leader: TID == PID) in the PID hash
///   table (`linux.pidhashtable.PIDHashTable`) or found alive by the memory
///   scan (`linux.psscan.PsScan`; exited tasks, whose memory the scan also
///   finds, are skipped) but not in the task list (`linux.pslist.PsList`)
///   is hidden.
/// - A module found by `linux.malware.hidden_modules.Hidden_modules`, or
///   that `linux.malware.modxview.Modxview` sees outside /proc/modules,
///   and absent from `linux.lsmod.Lsmod` is hidden: one finding per
///   module, whichever views see it. Its detail names all the views, so
///   it differs from (and does not repeat) the single-plugin findings.
///
/// A comparison whose plugins are not all in `outputs` (one failed or
/// timed out: the caller reports that) is skipped.
///
/// Only plugins in the pinned volatility3 (2.28.2) are used. It has no
/// plugin that lists kprobes: kprobes set through ftrace (the usual kind
/// on x86-64) show up in `linux.tracing.ftrace.CheckFtrace` as hooks by
/// the kernel's kprobe handler, which `findings` reports.
pub fn cross_view(outputs: &[(String, Value)]) -> Vec<Finding> {
    let mut out = hidden_processes(outputs);
    out.extend(hidden_modules(outputs));
    out
}

/// The rows of one plugin's output in a run; None when it is not there
/// (or is not a row array), which skips the comparisons that need it.
fn rows_of<'a>(outputs: &'a [(String, Value)], plugin: &str) -> Option<Vec<&'a Value>> {
    outputs
        .iter()
        .find(|(p, _)| p == plugin)
        .and_then(|(_, v)| rows(v).ok())
}

/// Whether psscan's EXIT_STATE says the task had not exited: null, 0, ""
/// or TASK_RUNNING (Volatility prints the state's name; EXIT_ZOMBIE,
/// EXIT_DEAD and EXIT_TRACE are exited).
fn alive(row: &Value) -> bool {
    match col(row, &["EXIT_STATE"]) {
        None | Some(Value::Null) => true,
        Some(Value::Number(n)) => n.as_i64() == Some(0),
        Some(Value::String(s)) => {
            let s = s.trim();
            s.is_empty() || s == "0" || s.to_ascii_uppercase().contains("RUNNING")
        }
        Some(_) => false,
    }
}

/// Processes in the PID hash table or the memory scan but not the task
/// list.
fn hidden_processes(outputs: &[(String, Value)]) -> Vec<Finding> {
    let Some(listed) = rows_of(outputs, PSLIST) else {
        return Vec::new();
    };
    // An empty task list means pslist could not walk it (the list always
    // holds init), not that every process hides.
    if listed.is_empty() {
        return Vec::new();
    }
    // The task list holds kernel threads as well as user processes, so
    // they need no exception. The per-CPU idle tasks (PID 0) are never on
    // it; PID > 0 leaves them out.
    let listed: std::collections::BTreeSet<i64> =
        listed.iter().filter_map(|r| int(r, &["PID"])).collect();
    // PID -> (COMM, PPID, the views that see it), in PID order.
    let mut hidden: std::collections::BTreeMap<i64, (String, i64, Vec<&str>)> =
        std::collections::BTreeMap::new();
    for (plugin, view) in [
        (
            PIDHASHTABLE,
            "the PID hash table (linux.pidhashtable.PIDHashTable)",
        ),
        (
            PSSCAN,
            "a scan of memory for running tasks (linux.psscan.PsScan)",
        ),
    ] {
        let Some(rows) = rows_of(outputs, plugin) else {
            continue;
        };
        for r in rows {
            let Some(pid) = int(r, &["PID"]) else {
                continue;
            };
            let tid = int(r, &["TID"]).unwrap_or(pid);
            if pid <= 0 || tid != pid || listed.contains(&pid) {
                continue;
            }
            if plugin == PSSCAN && !alive(r) {
                continue;
            }
            let entry = hidden.entry(pid).or_insert_with(|| {
                (
                    text(r, &["COMM", "Comm"]),
                    int(r, &["PPID"]).unwrap_or(-1),
                    Vec::new(),
                )
            });
            if !entry.2.contains(&view) {
                entry.2.push(view);
            }
        }
    }
    hidden
        .into_iter()
        .map(|(pid, (comm, ppid, views))| {
            finding(
                Severity::High,
                CROSS_VIEW,
                "a process hidden from the task list",
                format!(
                    "PID {pid} ({comm:?}, parent PID {ppid}) is in {} but not in the task list (linux.pslist.PsList), which ps and /proc read: rootkits take a process off that list to hide it",
                    views.join(" and in ")
                ),
            )
        })
        .collect()
}

/// A module some view sees off the module list.
#[derive(Debug)]
struct OffList {
    name: String,
    address: Option<u64>,
    views: Vec<&'static str>,
}

/// Modules that hidden_modules or modxview see outside the module list
/// and that lsmod does not list either: one finding per module.
fn hidden_modules(outputs: &[(String, Value)]) -> Vec<Finding> {
    let Some(listed) = rows_of(outputs, LSMOD) else {
        return Vec::new();
    };
    let listed: Vec<(String, Option<u64>)> = listed
        .iter()
        .map(|r| (text(r, &["Module Name", "Name"]), uint(r, &["Offset"])))
        .collect();
    let mut found: Vec<OffList> = Vec::new();
    let mut add = |name: String, address: Option<u64>, view: &'static str| {
        // The same `struct module` (by address; by name when an address
        // is missing) seen by both plugins is one module.
        let same = |m: &&mut OffList| match (m.address, address) {
            (Some(a), Some(b)) => a == b,
            _ => !name.is_empty() && m.name == name,
        };
        match found.iter_mut().find(|m| same(m)) {
            Some(m) if m.views.contains(&view) => {}
            Some(m) => m.views.push(view),
            None => found.push(OffList {
                name,
                address,
                views: vec![view],
            }),
        }
    };
    if let Some(rows) = rows_of(outputs, HIDDEN_MODULES) {
        for r in rows {
            add(
                text(r, &["Module Name", "Name"]),
                uint(r, &["Offset"]),
                "linux.malware.hidden_modules.Hidden_modules",
            );
        }
    }
    if let Some(rows) = rows_of(outputs, MODXVIEW) {
        for r in rows {
            if !modxview_hidden_views(r).is_empty() {
                add(
                    text(r, &["Name", "Module Name"]),
                    uint(r, &["Address"]),
                    "linux.malware.modxview.Modxview",
                );
            }
        }
    }
    found
        .into_iter()
        .filter(|m| {
            // On lsmod's list after all: the views disagree about a module
            // that is not hiding. By address when known: a hidden module
            // can share a listed one's name.
            !listed.iter().any(|(name, address)| match m.address {
                Some(a) => *address == Some(a),
                None => !m.name.is_empty() && *name == m.name,
            })
        })
        .map(|m| {
            finding(
                Severity::High,
                CROSS_VIEW,
                HIDDEN_MODULE,
                format!(
                    "module {} at {} is seen by {} but is not in the module list (linux.lsmod.Lsmod): {HIDDEN_MODULE_WHY}",
                    module_name(&m.name),
                    m.address
                        .map_or_else(|| "an unknown address".into(), |a| format!("0x{a:x}")),
                    m.views.join(" and "),
                ),
            )
        })
        .collect()
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

/// An address column as a number (u64: kernel addresses exceed i64::MAX).
fn uint(row: &Value, names: &[&str]) -> Option<u64> {
    col(row, names).and_then(Value::as_u64)
}

/// A boolean column (modxview's "In procfs"...); None when absent.
fn flag(row: &Value, name: &str) -> Option<bool> {
    match row.get(name) {
        Some(Value::Bool(b)) => Some(*b),
        Some(Value::String(s)) => match s.to_ascii_lowercase().as_str() {
            "true" => Some(true),
            "false" => Some(false),
            _ => None,
        },
        _ => None,
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
    fn an_isf_file_names_its_banner_plain_or_xz() {
        let banner = "Linux version 6.1.0 (x)\n\0";
        let isf = json!({"metadata": {"format": "6.2.0"}, "base_types": {"int": {"size": 4}},
            "symbols": {"init_task": {"address": 1}, "linux_banner": {"address": 2, "constant_data": base64::engine::general_purpose::STANDARD.encode(banner)}}});
        let plain = serde_json::to_vec(&isf).unwrap();
        assert_eq!(
            isf_file_banner("t.json", &plain).unwrap().as_deref(),
            Some("Linux version 6.1.0 (x)")
        );
        let mut xz = Vec::new();
        lzma_rs::xz_compress(&mut std::io::BufReader::new(&plain[..]), &mut xz).unwrap();
        assert_eq!(
            isf_file_banner("t.json.xz", &xz).unwrap().as_deref(),
            Some("Linux version 6.1.0 (x)")
        );
        assert!(isf_file_banner("t.json.xz", b"not xz").is_err());
        assert!(isf_file_banner("t.json.bz2", &plain).is_err());
        assert_eq!(
            isf_file_banner("t.json", br#"{"symbols": {}}"#).unwrap(),
            None
        );
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

    #[test]
    fn ipv4_mapped_addresses_are_judged_by_their_ipv4_address() {
        assert!(!is_public("::ffff:10.0.0.1"));
        assert!(!is_public("::ffff:127.0.0.1"));
        assert!(!is_public("::ffff:169.254.169.254"));
        assert!(is_public("::ffff:203.0.113.7"));
        assert!(is_public("2001:db8::7"));
    }

    #[test]
    fn carrier_grade_nat_and_link_local_are_not_public() {
        for a in [
            "100.64.0.1",
            "100.127.255.254",
            "169.254.169.254",
            "169.254.1.1",
        ] {
            assert!(!is_public(a), "{a}");
        }
        // Just outside 100.64.0.0/10.
        assert!(is_public("100.63.255.255"));
        assert!(is_public("100.128.0.1"));
    }

    #[test]
    fn a_mapped_private_peer_is_not_an_internet_connection() {
        // GIVEN a dual-stack socket connected to a private IPv4 peer
        let j = json!([{"Process Name": "bash", "PID": 7, "State": "ESTABLISHED", "Source Addr": "::ffff:172.31.20.14", "Source Port": "41872", "Destination Addr": "::ffff:10.0.0.1", "Destination Port": "4444", "__children": []}]);
        // WHEN sockstat's findings are made THEN there is none
        assert!(findings("linux.sockstat.Sockstat", &j, &[])
            .unwrap()
            .is_empty());
    }

    /// A malfind row of an anonymous rwx region.
    fn malfind_row(process: &str, hexdump: &str, disasm: &str) -> Value {
        json!([{
            "PID": 4100, "Process": process,
            "Start": 139897187733504_u64, "End": 139897187799040_u64,
            "Path": "Anonymous Mapping", "Protection": "rwx",
            "Hexdump": hexdump, "Disasm": disasm,
            "File output": "Disabled", "__children": []
        }])
    }

    /// The start of a HotSpot code cache region: stub code with no system
    /// call, shell path or shellcode idiom.
    const JIT_CODE: &str = "55 48 89 e5 48 83 ec 10 48 8b 47 08 48 85 c0 74 0a 48 8b 40 10 48 83 c4 10 5d c3 0f 1f 44 00 00 41 57 41 56 49 89 fe 48 8b 07 ff 50 18 41 5e 41 5f c3 66 0f 1f 84 00 00 00 00 00 00 00 00 00";

    #[test]
    fn a_java_region_without_signs_of_injection_is_low() {
        // GIVEN java with an anonymous rwx region holding ordinary JIT code
        let j = malfind_row("java", JIT_CODE, "");
        // WHEN malfind's findings are made
        let f = findings("linux.malware.malfind.Malfind", &j, &[]).unwrap();
        // THEN it is Low, and the detail says why
        assert_eq!(f.len(), 1, "{f:#?}");
        assert_eq!(f[0].severity, Severity::Low);
        assert!(
            f[0].detail
                .contains("JIT runtimes write code into anonymous memory"),
            "{}",
            f[0].detail
        );
        assert!(f[0].detail.contains("0x7f3c5a2e1000"), "{}", f[0].detail);
    }

    #[test]
    fn a_java_region_with_an_elf_header_is_high_and_names_it() {
        // GIVEN the same java region starting with an ELF header
        let hexdump = format!("7f 45 4c 46 02 01 01 00 {}", &JIT_CODE[24..]);
        let j = malfind_row("java", &hexdump, "");
        // WHEN malfind's findings are made
        let f = findings("linux.malware.malfind.Malfind", &j, &[]).unwrap();
        // THEN it stays High and names the header
        assert_eq!(f[0].severity, Severity::High, "{f:#?}");
        assert!(f[0].detail.contains("ELF header"), "{}", f[0].detail);
    }

    #[test]
    fn a_jit_region_with_shellcode_stays_high() {
        // GIVEN node with a region that disassembles to a system call and
        // carries a NOP sled
        let hexdump = format!("{} 6a 3b 58 0f 05", ["90"; 20].join(" "));
        let disasm =
            "\"\n0x7f00:\tnop\t\n0x7f14:\tpush\t0x3b\n0x7f16:\tpop\trax\n0x7f17:\tsyscall\t\"";
        let f = findings(
            "linux.malware.malfind.Malfind",
            &malfind_row("node", &hexdump, disasm),
            &[],
        )
        .unwrap();
        // THEN it is High and each sign is named
        assert_eq!(f[0].severity, Severity::High);
        for sign in ["system call instruction", "NOP sled", "push imm8; pop rax"] {
            assert!(f[0].detail.contains(sign), "{sign}: {}", f[0].detail);
        }
        assert!(f[0].detail.contains("JIT output does not look like this"));
    }

    #[test]
    fn signs_of_injection_are_read_from_bytes_and_disassembly() {
        assert!(injection_signs("N/A", "").is_empty());
        assert!(injection_signs(JIT_CODE, "").is_empty());
        let pe = injection_signs("4d 5a 90 00 03 00", "");
        assert!(pe.iter().any(|s| s.contains("PE header")), "{pe:?}");
        // "/bin//sh" as movabs rbx, 0x68732f2f6e69622f
        let sh = injection_signs("48 bb 2f 62 69 6e 2f 2f 73 68", "");
        assert!(sh.iter().any(|s| s.contains("/bin/sh")), "{sh:?}");
        // 32-bit execve shellcode: int 0x80, found in the disassembly
        let int80 = injection_signs("cd 80", "\"\n0x8048000:\tint\t0x80\"");
        assert!(int80.iter().any(|s| s.contains("int 0x80")), "{int80:?}");
        // The disassembly decides when there is one: 0f 05 inside another
        // instruction's operand is not a system call.
        let operand = injection_signs("b8 0f 05 00 00", "\"\n0x1000:\tmov\teax, 0x50f\"");
        assert!(operand.is_empty(), "{operand:?}");
        // A short run of NOPs is alignment padding.
        assert!(injection_signs(&["90"; 15].join(" "), "").is_empty());
    }

    #[test]
    fn other_processes_keep_high_and_name_the_signs() {
        // GIVEN a disguised process with reverse-shell shellcode (the
        // fixture's bytes)
        let hexdump = "6a 29 58 99 6a 02 5f 6a 01 5e 0f 05 48 97 48 b9 02 00 11 5c cb 00 71 07 51 48 89 e6 6a 10 5a 6a 2a 58 0f 05 6a 03 5e 48 ff ce 6a 21 58 0f 05 75 f6 6a 3b 58 99 48 bb 2f 62 69 6e 2f 73 68 00 53";
        let f = findings(
            "linux.malware.malfind.Malfind",
            &malfind_row("[kworker/0:2]", hexdump, ""),
            &[],
        )
        .unwrap();
        assert_eq!(f[0].severity, Severity::High);
        assert!(f[0].detail.contains("/bin/sh"), "{}", f[0].detail);
        assert!(f[0].detail.contains("system call instruction"));
        // AND one without signs is High with the region only
        let plain = findings(
            "linux.malware.malfind.Malfind",
            &malfind_row("sshd", JIT_CODE, ""),
            &[],
        )
        .unwrap();
        assert_eq!(plain[0].severity, Severity::High);
        assert!(!plain[0].detail.contains("signs"));
    }

    #[test]
    fn jit_runtimes_are_matched_by_name() {
        for c in [
            "java",
            "node",
            "dotnet",
            "qemu-system-x86",
            "qemu-kvm",
            "luajit",
        ] {
            assert!(is_jit_runtime(c), "{c}");
        }
        for c in ["javac-evil", "node_exporter", "sshd", "[kworker/0:2]"] {
            assert!(!is_jit_runtime(c), "{c}");
        }
    }

    /// One run's outputs, as `cross_view` takes them.
    fn run(outputs: &[(&str, Value)]) -> Vec<(String, Value)> {
        outputs
            .iter()
            .map(|(p, v)| ((*p).to_string(), v.clone()))
            .collect()
    }

    /// pslist's rows for the given (PID, COMM).
    fn pslist(tasks: &[(i64, &str)]) -> Value {
        Value::Array(
            tasks
                .iter()
                .map(|(pid, comm)| json!({"OFFSET (V)": 18446616578681995264_u64, "PID": pid, "TID": pid, "PPID": 1, "COMM": comm, "__children": []}))
                .collect(),
        )
    }

    #[test]
    fn a_process_in_the_pid_hash_table_but_not_the_task_list_is_hidden() {
        // GIVEN pslist without PID 4242, which the PID hash table holds
        // (with a thread of it)
        let outputs = run(&[
            (
                PSLIST,
                pslist(&[(1, "systemd"), (2, "kthreadd"), (530, "nginx")]),
            ),
            (
                PIDHASHTABLE,
                json!([
                    {"OFFSET": 1, "PID": 1, "TID": 1, "PPID": 0, "COMM": "systemd", "__children": []},
                    {"OFFSET": 2, "PID": 530, "TID": 530, "PPID": 1, "COMM": "nginx", "__children": []},
                    {"OFFSET": 3, "PID": 4242, "TID": 4242, "PPID": 1, "COMM": "kthreadd_", "__children": []},
                    {"OFFSET": 4, "PID": 4242, "TID": 4243, "PPID": 1, "COMM": "kthreadd_", "__children": []}
                ]),
            ),
        ]);
        // WHEN the views are compared
        let f = cross_view(&outputs);
        // THEN PID 4242 is one High finding naming both views
        assert_eq!(f.len(), 1, "{f:#?}");
        assert_eq!(f[0].severity, Severity::High);
        assert_eq!(f[0].source, CROSS_VIEW);
        assert_eq!(f[0].title, "a process hidden from the task list");
        for s in ["PID 4242", "kthreadd_", PIDHASHTABLE, PSLIST] {
            assert!(f[0].detail.contains(s), "{s}: {}", f[0].detail);
        }
    }

    #[test]
    fn psscan_reports_live_tasks_off_the_list_and_skips_exited_ones() {
        // GIVEN psscan's finds: an exited task's leftover memory, a zombie,
        // and a live task, none on the task list
        let outputs = run(&[
            (PSLIST, pslist(&[(1, "systemd")])),
            (
                PSSCAN,
                json!([
                    {"OFFSET (P)": 10, "PID": 1, "TID": 1, "PPID": 0, "COMM": "systemd", "EXIT_STATE": "TASK_RUNNING", "__children": []},
                    {"OFFSET (P)": 11, "PID": 900, "TID": 900, "PPID": 1, "COMM": "cron", "EXIT_STATE": "EXIT_DEAD", "__children": []},
                    {"OFFSET (P)": 12, "PID": 901, "TID": 901, "PPID": 1, "COMM": "sh", "EXIT_STATE": "EXIT_ZOMBIE", "__children": []},
                    {"OFFSET (P)": 13, "PID": 902, "TID": 902, "PPID": 1, "COMM": "miner", "EXIT_STATE": "TASK_RUNNING", "__children": []},
                    {"OFFSET (P)": 14, "PID": 903, "TID": 903, "PPID": 1, "COMM": "x", "EXIT_STATE": null, "__children": []},
                    {"OFFSET (P)": 15, "PID": 0, "TID": 0, "PPID": 0, "COMM": "swapper/0", "EXIT_STATE": "TASK_RUNNING", "__children": []}
                ]),
            ),
        ]);
        // WHEN the views are compared
        let f = cross_view(&outputs);
        // THEN only the live ones are hidden processes
        let details: Vec<&str> = f.iter().map(|x| x.detail.as_str()).collect();
        assert_eq!(f.len(), 2, "{details:#?}");
        assert!(details[0].starts_with("PID 902 (\"miner\""), "{details:#?}");
        assert!(details[0].contains(PSSCAN));
        assert!(details[1].starts_with("PID 903"), "{details:#?}");
        assert!(!details
            .iter()
            .any(|d| d.contains("PID 900") || d.contains("PID 901")));
    }

    #[test]
    fn exit_states_are_read_loosely() {
        for (state, alive_) in [
            (json!(null), true),
            (json!(0), true),
            (json!(""), true),
            (json!("TASK_RUNNING"), true),
            (json!(16), false),
            (json!("EXIT_ZOMBIE"), false),
            (json!("EXIT_TRACE"), false),
        ] {
            assert_eq!(alive(&json!({ "EXIT_STATE": state })), alive_, "{state}");
        }
    }

    #[test]
    fn a_comparison_whose_plugin_is_missing_is_skipped() {
        let hashed = json!([{"OFFSET": 3, "PID": 4242, "TID": 4242, "PPID": 1, "COMM": "x", "__children": []}]);
        let hidden = json!([{"Offset": 1, "Module Name": "diamorphine", "Code Size": 16384, "Taints": "OOT_MODULE", "Load Arguments": "", "File Output": null, "__children": []}]);
        // GIVEN pslist and lsmod failed (absent from the outputs)
        assert!(cross_view(&run(&[
            (PIDHASHTABLE, hashed.clone()),
            (HIDDEN_MODULES, hidden)
        ]))
        .is_empty());
        // AND an empty task list is a pslist that could not walk it
        assert!(cross_view(&run(&[(PSLIST, json!([])), (PIDHASHTABLE, hashed)])).is_empty());
        // AND pslist alone compares with nothing
        assert!(cross_view(&run(&[(PSLIST, pslist(&[(1, "systemd")]))])).is_empty());
    }

    /// Lsmod's rows for the given (name, address).
    fn lsmod(modules: &[(&str, u64)]) -> Value {
        Value::Array(
            modules
                .iter()
                .map(|(name, offset)| json!({"Offset": offset, "Module Name": name, "Code Size": 4096, "Taints": "", "Load Arguments": "", "File Output": null, "__children": []}))
                .collect(),
        )
    }

    /// A kernel module address (above i64::MAX).
    const DIAMORPHINE_AT: u64 = 0xffff_ffff_c0d8_d040;

    #[test]
    fn a_module_hidden_from_both_views_is_one_finding() {
        // GIVEN diamorphine in hidden_modules and in modxview's scan, not
        // in procfs, and absent from lsmod
        let hidden = json!([{"Offset": DIAMORPHINE_AT, "Module Name": "diamorphine", "Code Size": 16384, "Taints": "OOT_MODULE,UNSIGNED_MODULE", "Load Arguments": "", "File Output": null, "__children": []}]);
        let modx = json!([
            {"Name": "ext4", "Address": 0xffff_ffff_c0a0_0000_u64, "In procfs": true, "In sysfs": true, "In scan": true, "Taints": null, "__children": []},
            {"Name": "diamorphine", "Address": DIAMORPHINE_AT, "In procfs": false, "In sysfs": false, "In scan": true, "Taints": "OOT_MODULE,UNSIGNED_MODULE", "__children": []}
        ]);
        let outputs = run(&[
            (LSMOD, lsmod(&[("ext4", 0xffff_ffff_c0a0_0000)])),
            (HIDDEN_MODULES, hidden.clone()),
            (MODXVIEW, modx.clone()),
        ]);
        // WHEN the views are compared
        let cross = cross_view(&outputs);
        // THEN the module is one High finding naming both views
        assert_eq!(cross.len(), 1, "{cross:#?}");
        assert_eq!(cross[0].severity, Severity::High);
        assert_eq!(cross[0].title, HIDDEN_MODULE);
        for s in [
            "\"diamorphine\"",
            "0xffffffffc0d8d040",
            HIDDEN_MODULES,
            MODXVIEW,
            LSMOD,
        ] {
            assert!(cross[0].detail.contains(s), "{s}: {}", cross[0].detail);
        }
        // AND each plugin alone says it once, and no two findings of the
        // run share a title and detail
        let single_h = findings(HIDDEN_MODULES, &hidden, &[]).unwrap();
        let single_m = findings(MODXVIEW, &modx, &[]).unwrap();
        assert_eq!(single_h.len(), 1, "{single_h:#?}");
        assert_eq!(single_m.len(), 1, "{single_m:#?}");
        assert!(single_m[0]
            .detail
            .contains("found by a scan of module memory"));
        let all: Vec<_> = single_h.iter().chain(&single_m).chain(&cross).collect();
        let distinct: std::collections::BTreeSet<_> =
            all.iter().map(|f| (&f.title, &f.detail)).collect();
        assert_eq!(distinct.len(), all.len(), "{all:#?}");
    }

    #[test]
    fn a_module_on_the_lsmod_list_is_not_hidden_in_the_cross_view() {
        // GIVEN modxview says ena is not in procfs, but lsmod lists it at
        // the same address (the views disagree, nothing hides)
        let outputs = run(&[
            (LSMOD, lsmod(&[("ena", 0xffff_ffff_c0b0_0000)])),
            (
                MODXVIEW,
                json!([{"Name": "ena", "Address": 0xffff_ffff_c0b0_0000_u64, "In procfs": false, "In sysfs": true, "In scan": true, "Taints": null, "__children": []}]),
            ),
        ]);
        assert!(cross_view(&outputs).is_empty());
        // AND a hidden module named like a listed one, at another address,
        // is still hidden
        let outputs = run(&[
            (LSMOD, lsmod(&[("ena", 0xffff_ffff_c0b0_0000)])),
            (
                HIDDEN_MODULES,
                json!([{"Offset": DIAMORPHINE_AT, "Module Name": "ena", "Code Size": 1, "Taints": "", "Load Arguments": "", "File Output": null, "__children": []}]),
            ),
        ]);
        assert_eq!(cross_view(&outputs).len(), 1);
    }

    #[test]
    fn modxview_rows_in_procfs_are_not_findings() {
        let j = json!([
            {"Name": "xfs", "Address": 1, "In procfs": true, "In sysfs": true, "In scan": true, "Taints": null, "__children": []},
            {"Name": "odd", "Address": 2, "In procfs": false, "In sysfs": false, "In scan": false, "Taints": null, "__children": []},
            {"Name": "rk", "Address": 3, "In procfs": false, "In sysfs": true, "In scan": false, "Taints": null, "__children": []}
        ]);
        let f = findings(MODXVIEW, &j, &[]).unwrap();
        assert_eq!(f.len(), 1, "{f:#?}");
        assert!(f[0].detail.contains("\"rk\"") && f[0].detail.contains("/sys/module"));
        assert_eq!(f[0].severity, Severity::High);
    }

    /// A CheckFtrace row whose callback is in `module` (None: in none).
    fn ftrace_row(module: Option<&str>) -> Value {
        json!([{
            "ftrace_ops address": 0xffff_ffff_c0d9_0040_u64,
            "Callback": module.map(|_| "hook_getdents64"),
            "Callback address": 0xffff_ffff_c0d8_b3d0_u64,
            "Hooked symbols": "__x64_sys_getdents64",
            "Module": module,
            "Module address": module.map(|_| DIAMORPHINE_AT),
            "__children": []
        }])
    }

    #[test]
    fn an_ftrace_hook_from_an_unknown_module_is_high() {
        // GIVEN a baseline without "vmw_hider" and an ftrace hook from it
        let baseline = vec!["ext4".to_string(), "ena".to_string()];
        let f = findings(FTRACE, &ftrace_row(Some("vmw_hider")), &baseline).unwrap();
        // THEN it is High, naming the module, the callback and the hooked
        // function (addresses as u64 hex)
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].severity, Severity::High);
        for s in [
            "\"vmw_hider\"",
            "hook_getdents64",
            "__x64_sys_getdents64",
            "0xffffffffc0d8b3d0",
        ] {
            assert!(f[0].detail.contains(s), "{s}: {}", f[0].detail);
        }
        // AND a hook in no module is High, one in a baseline module Low,
        // one by the kernel (ftrace-based kprobes) Low
        let none = findings(FTRACE, &ftrace_row(None), &baseline).unwrap();
        assert_eq!(none[0].severity, Severity::High);
        assert!(none[0]
            .title
            .contains("outside the kernel and every module"));
        let ours = findings(FTRACE, &ftrace_row(Some("ena")), &baseline).unwrap();
        assert_eq!(ours[0].severity, Severity::Low);
        let kernel = findings(FTRACE, &ftrace_row(Some(KERNEL_MODULE)), &baseline).unwrap();
        assert_eq!(kernel[0].severity, Severity::Low);
        assert!(kernel[0].detail.contains("kprobes"));
        // AND without a baseline any module's hook is High, and says so
        let no_baseline = findings(FTRACE, &ftrace_row(Some("ena")), &[]).unwrap();
        assert_eq!(no_baseline[0].severity, Severity::High);
        assert!(no_baseline[0].detail.contains("no module baseline"));
    }

    #[test]
    fn tracing_ebpf_programs_are_medium_and_others_low() {
        let j = json!([
            {"Address": 1, "Name": "hide_pid", "Tag": "a04f5eef06a7f555", "Type": "BPF_PROG_TYPE_KPROBE", "__children": []},
            {"Address": 2, "Name": "rt", "Tag": "b", "Type": "BPF_PROG_TYPE_RAW_TRACEPOINT", "__children": []},
            {"Address": 3, "Name": "fexit", "Tag": "c", "Type": "tracing", "__children": []},
            {"Address": 4, "Name": "pe", "Tag": "d", "Type": "BPF_PROG_TYPE_PERF_EVENT", "__children": []},
            {"Address": 5, "Name": "lsm", "Tag": "e", "Type": "Lsm", "__children": []},
            {"Address": 6, "Name": "sd_devices", "Tag": "f", "Type": "BPF_PROG_TYPE_CGROUP_DEVICE", "__children": []},
            {"Address": 7, "Name": "xdp", "Tag": null, "Type": null, "__children": []}
        ]);
        let f = findings(EBPF, &j, &[]).unwrap();
        let sev: Vec<Severity> = f.iter().map(|x| x.severity).collect();
        use Severity::{Low, Medium};
        assert_eq!(
            sev,
            [Medium, Medium, Medium, Medium, Medium, Low, Low],
            "{f:#?}"
        );
        assert!(f[0].detail.contains("\"hide_pid\"") && f[0].detail.contains("KPROBE"));
        assert!(f[6].detail.contains("tag unknown"), "{}", f[6].detail);
    }

    #[test]
    fn every_plugin_has_rules_and_task_views_alone_find_nothing() {
        for p in PLUGINS {
            assert!(findings(p, &json!([]), &[]).is_ok(), "{p}");
        }
        let j = json!([{"OFFSET": 1, "PID": 4242, "TID": 4242, "PPID": 1, "COMM": "[kworker/9:9]", "__children": []}]);
        assert!(findings(PIDHASHTABLE, &j, &[]).unwrap().is_empty());
        // The first seven keep their order; the new views follow.
        assert_eq!(PLUGINS[0], "linux.pslist.PsList");
        assert_eq!(PLUGINS[6], "linux.malware.check_syscall.Check_syscall");
    }

    #[test]
    fn a_hidden_modules_row_alone_is_high() {
        let j = json!([{"Offset": DIAMORPHINE_AT, "Module Name": null, "Code Size": 16384, "Taints": "", "Load Arguments": "", "File Output": null, "__children": []}]);
        let f = findings(HIDDEN_MODULES, &j, &[]).unwrap();
        assert_eq!(f[0].severity, Severity::High);
        assert_eq!(f[0].title, HIDDEN_MODULE);
        assert!(f[0].detail.contains("0xffffffffc0d8d040"));
        assert!(f[0].detail.contains("taints: none"));
    }

    const AL2023: &str = "Linux version 6.1.56-82.125.amzn2023.x86_64 (mockbuild@ip-10-0-40-114) (gcc (GCC) 11.4.1 20230605 (Red Hat 11.4.1-2), GNU ld version 2.39-6.amzn2023.0.9) #1 SMP PREEMPT_DYNAMIC Tue Oct 10 17:03:36 UTC 2023";

    #[test]
    fn the_hint_for_amazon_linux_2023_names_kernel_debuginfo() {
        let f = missing_symbols(AL2023, "s3://tools/symbols/");
        let r = "6.1.56-82.125.amzn2023.x86_64";
        for s in [
            AL2023,
            "Amazon Linux 2023",
            &format!("kernel-debuginfo-{r}"),
            &format!("dnf debuginfo-install -y kernel-{r}"),
            &format!("dwarf2json linux --elf /usr/lib/debug/lib/modules/{r}/vmlinux --system-map /boot/System.map-{r} | xz -c > {r}.json.xz"),
            &format!("firebreak symbols add {r}.json.xz"),
        ] {
            assert!(f.detail.contains(s), "{s}:\n{}", f.detail);
        }
    }

    #[test]
    fn the_hint_for_ubuntu_names_the_dbgsym_package() {
        let banner = "Linux version 5.15.0-1051-aws (buildd@lcy02-amd64-020) (gcc (Ubuntu 11.4.0-1ubuntu1~22.04) 11.4.0, GNU ld (GNU Binutils for Ubuntu) 2.38) #56-Ubuntu SMP Thu Nov 2 21:33:33 UTC 2023";
        let f = missing_symbols(banner, "s3://tools/symbols/");
        for s in [
            banner,
            "linux-image-unsigned-5.15.0-1051-aws-dbgsym",
            "ddebs.ubuntu.com",
            "dwarf2json linux --elf /usr/lib/debug/boot/vmlinux-5.15.0-1051-aws",
            "firebreak symbols add 5.15.0-1051-aws.json.xz",
        ] {
            assert!(f.detail.contains(s), "{s}:\n{}", f.detail);
        }
        // AND a -generic release is Ubuntu without the word in the banner
        let g = symbol_hint("Linux version 6.8.0-48-generic (x)", "6.8.0-48-generic");
        assert_eq!(g.distro, "Ubuntu");
    }

    #[test]
    fn the_hint_for_debian_rhel_and_amazon_linux_2() {
        let debian = "Linux version 6.1.0-13-amd64 (debian-kernel@lists.debian.org) (gcc-12 (Debian 12.2.0-14) 12.2.0, GNU ld (GNU Binutils for Debian) 2.40) #1 SMP PREEMPT_DYNAMIC Debian 6.1.55-1 (2023-09-29)";
        let d = missing_symbols(debian, "s3://t/");
        assert!(d
            .detail
            .contains("apt-get install -y linux-image-6.1.0-13-amd64-dbg"));
        assert!(d
            .detail
            .contains("--elf /usr/lib/debug/boot/vmlinux-6.1.0-13-amd64"));
        for (release, tool) in [
            ("5.14.0-362.8.1.el9_3.x86_64", "dnf debuginfo-install"),
            ("4.18.0-513.5.1.el8_9.x86_64", "dnf debuginfo-install"),
            ("3.10.0-1160.el7.x86_64", "yum install -y yum-utils"),
            ("6.12.0-55.el10.x86_64", "dnf debuginfo-install"),
            ("5.10.197-186.748.amzn2.x86_64", "yum install -y yum-utils"),
        ] {
            let h = symbol_hint(&format!("Linux version {release} (x)"), release);
            assert!(h.install.contains(tool), "{release}: {h:?}");
            assert_eq!(h.package, format!("kernel-debuginfo-{release}"));
            assert_eq!(
                h.vmlinux,
                format!("/usr/lib/debug/lib/modules/{release}/vmlinux")
            );
        }
        // AND an unknown distribution gets every family's package
        let g = missing_symbols("Linux version 6.6.1 (x) #1 SMP", "s3://t/");
        for s in ["kernel-debuginfo-6.6.1", "-dbgsym", "linux-image-6.6.1-dbg"] {
            assert!(g.detail.contains(s), "{s}:\n{}", g.detail);
        }
    }
}
