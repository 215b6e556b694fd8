//! Plays the suspect host for the memory-capture tests: runs the exact
//! script firebreak sent over SSM, in a private mount namespace (as root,
//! `unshare -m`) that gives it the host it asks about: a `/proc/iomem`
//! matching the test image, `/sys/module` where stand-in modules appear,
//! a kernel lockdown state, a fresh `/dev/shm` (noexec when asked), and
//! stand-ins first on the PATH for what a test machine cannot do for
//! real: `insmod` (a compiled program that writes the image as LiME
//! does, honouring `timeout`), `rmmod`, `uname`, and a `curl` that can
//! slow or kill the upload of one part before handing over to the real
//! curl. The LiME module and AVML sent to the host are real ELF files
//! built here with gcc, since `firebreak tools add` checks them.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::memory::{Scratch, KERNEL};

/// A vermagic as Debian's 6.1 kernel prints it.
pub(crate) const VERMAGIC: &str = "6.1.0-13-amd64 SMP preempt mod_unload modversions ";

/// The stand-in programs, compiled once per test run.
struct Built {
    dir: PathBuf,
}

fn gcc(args: &[&str]) {
    let out = Command::new("gcc")
        .args(args)
        .output()
        .expect("gcc runs (the machine's C compiler)");
    assert!(
        out.status.success(),
        "gcc {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn built() -> &'static Path {
    static BUILT: OnceLock<Built> = OnceLock::new();
    &BUILT
        .get_or_init(|| {
            let dir =
                std::env::temp_dir().join(format!("firebreak-it-standins-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/standins");
            let p = |name: &str| dir.join(name).to_str().unwrap().to_string();
            let s = |name: &str| src.join(name).to_str().unwrap().to_string();
            gcc(&["-O1", "-Wall", "-o", &p("insmod"), &s("lime.c")]);
            gcc(&["-O1", "-Wall", "-o", &p("avml"), &s("avml.c")]);
            gcc(&[
                "-c",
                &format!("-DVERMAGIC=\"{VERMAGIC}\""),
                "-o",
                &p("lime.ko"),
                &s("lime_module.c"),
            ]);
            Built { dir }
        })
        .dir
}

/// A real ELF LiME module object for [`KERNEL`] (for `tools add lime`).
pub(crate) fn lime_module() -> PathBuf {
    built().join("lime.ko")
}

/// The AVML stand-in, an ELF executable (for `tools add avml`).
pub(crate) fn avml_binary() -> PathBuf {
    built().join("avml")
}

/// How the host behaves.
#[derive(Clone, Debug)]
pub(crate) struct HostSetup {
    /// `ok`, `vermagic`, `key` or `exists`: what the stand-in insmod does.
    pub lime: &'static str,
    /// `acquire` (AVML 0.19+) or `legacy`.
    pub avml: &'static str,
    /// What `uname -r` prints.
    pub release: &'static str,
    /// The content of /sys/kernel/security/lockdown (None: the file is
    /// absent, as on kernels without the lockdown LSM).
    pub lockdown: Option<&'static str>,
    /// /dev/shm mounted noexec (CIS hardening).
    pub noexec_shm: bool,
    /// A module named lime is loaded before the capture (not ours).
    pub lime_preloaded: bool,
    /// (part, seconds): the upload of that part waits first.
    pub slow_part: Option<(u32, u32)>,
    /// The upload of that part kills the uploader.
    pub crash_part: Option<u32>,
    /// The upload of that part sends SIGTERM to the capture script.
    pub term_part: Option<u32>,
    /// Lines added to /proc/iomem (what a lying host could claim).
    pub extra_iomem: Option<&'static str>,
}

impl Default for HostSetup {
    fn default() -> HostSetup {
        HostSetup {
            lime: "ok",
            avml: "acquire",
            release: KERNEL,
            lockdown: Some("[none] integrity confidentiality"),
            noexec_shm: false,
            lime_preloaded: false,
            slow_part: None,
            crash_part: None,
            term_part: None,
            extra_iomem: None,
        }
    }
}

/// One run of the script.
#[derive(Debug)]
pub(crate) struct Delivery {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Delivery {
    /// The script's last output line: its result (or failure) as JSON.
    pub(crate) fn report(&self) -> serde_json::Value {
        let line = self.stdout.lines().last().unwrap_or_default();
        serde_json::from_str(line).unwrap_or_else(|e| {
            panic!(
                "the script's last line is not JSON ({e}):\n{}\n{}",
                self.stdout, self.stderr
            )
        })
    }
}

/// What the host was left with after the deliveries.
#[derive(Debug)]
pub(crate) struct Played {
    pub deliveries: Vec<Delivery>,
    /// Every stand-in call, in order.
    pub calls: String,
    /// Whether a module named lime was still loaded at the end.
    pub lime_loaded_after: bool,
    /// What was left in /dev/shm.
    pub shm_after: Vec<String>,
}

/// The host's /proc/iomem for an image's ranges, with the reserved and
/// nested entries a real one has.
pub(crate) fn iomem_for(ranges: &[(u64, u64)]) -> String {
    let mut out = String::from("00000000-00000fff : Reserved\n");
    for (i, (start, size)) in ranges.iter().enumerate() {
        let end = start + size - 1;
        out.push_str(&format!("{start:08x}-{end:08x} : System RAM\n"));
        if i == 0 {
            out.push_str(&format!(
                "  {:08x}-{:08x} : Kernel code\n",
                start,
                start + 0xfff
            ));
        }
        out.push_str(&format!(
            "{:08x}-{:08x} : Reserved\n",
            end + 1,
            end + 0x1000
        ));
    }
    out
}

/// Plays the host: runs `script` `deliveries` times (as SSM would deliver
/// it again) in one private mount namespace, with `image` as the memory
/// and `ranges` as its System RAM.
pub(crate) fn play(
    dir: &Scratch,
    setup: &HostSetup,
    image: &Path,
    ranges: &[(u64, u64)],
    script: &str,
    deliveries: usize,
) -> Played {
    let root = dir.0.join("host");
    let bin = root.join("bin");
    let standin = root.join("standin");
    let out = root.join("out");
    for d in [&bin, &standin, &out] {
        std::fs::create_dir_all(d).unwrap();
    }
    let b = built();
    std::fs::copy(b.join("insmod"), bin.join("insmod")).unwrap();
    let real_curl = which("curl");
    let files = [
        (
            "uname",
            "#!/bin/sh\necho \"uname $*\" >> \"$FIREBREAK_STANDIN_DIR/calls.log\"\nif [ \"$1\" = -r ]; then cat \"$FIREBREAK_STANDIN_DIR/uname.release\"; else echo Linux; fi\n".to_string(),
        ),
        (
            "rmmod",
            "#!/bin/sh\necho \"rmmod $*\" >> \"$FIREBREAK_STANDIN_DIR/calls.log\"\nif [ -d /sys/module/lime ]; then rmdir /sys/module/lime; else echo \"rmmod: ERROR: Module lime is not currently loaded\" >&2; exit 1; fi\n".to_string(),
        ),
        ("curl", curl_wrapper(&real_curl)),
    ];
    for (name, body) in files {
        let p = bin.join(name);
        std::fs::write(&p, body).unwrap();
        Command::new("chmod").arg("755").arg(&p).status().unwrap();
    }
    let w = |name: &str, text: String| std::fs::write(standin.join(name), text).unwrap();
    w("lime.mode", setup.lime.to_string());
    w("lime.image", image.display().to_string());
    w("avml.mode", setup.avml.to_string());
    w("avml.image", image.display().to_string());
    w("uname.release", format!("{}\n", setup.release));
    if let Some((part, secs)) = setup.slow_part {
        w("curl.slow", format!("{part} {secs}\n"));
    }
    if let Some(part) = setup.crash_part {
        w("curl.crash", format!("{part}\n"));
    }
    if let Some(part) = setup.term_part {
        w("curl.term", format!("{part}\n"));
    }
    w("calls.log", String::new());
    let iomem = root.join("iomem");
    std::fs::write(
        &iomem,
        iomem_for(ranges) + setup.extra_iomem.unwrap_or_default(),
    )
    .unwrap();
    let script_path = root.join("capture.sh");
    std::fs::write(&script_path, script).unwrap();

    let harness = r#"
set -eu
mount --bind "$IOMEM" /proc/iomem
mount -t tmpfs -o mode=0755 firebreak-sysmodule /sys/module
if [ "$PRELOADED" = 1 ]; then mkdir /sys/module/lime; fi
if [ -n "$LOCKDOWN" ]; then
  mount -t tmpfs firebreak-securityfs /sys/kernel/security
  printf '%s\n' "$LOCKDOWN" > /sys/kernel/security/lockdown
fi
mount -t tmpfs -o "mode=1777$SHM_OPTS" firebreak-shm /dev/shm
for i in $(seq 1 "$DELIVERIES"); do
  set +e
  env PATH="$BIN:$PATH" FIREBREAK_STANDIN_DIR="$STANDIN" bash "$SCRIPT" >"$OUT/out.$i" 2>"$OUT/err.$i"
  echo $? >"$OUT/rc.$i"
  set -e
done
if [ -d /sys/module/lime ]; then echo loaded >"$OUT/lime"; else echo unloaded >"$OUT/lime"; fi
ls -A /dev/shm >"$OUT/shm"
"#;
    let status = Command::new("unshare")
        .args(["-m", "--propagation", "private", "bash", "-c", harness])
        .env("IOMEM", &iomem)
        .env("PRELOADED", if setup.lime_preloaded { "1" } else { "0" })
        .env("LOCKDOWN", setup.lockdown.unwrap_or(""))
        .env("SHM_OPTS", if setup.noexec_shm { ",noexec" } else { "" })
        .env("DELIVERIES", deliveries.to_string())
        .env("BIN", &bin)
        .env("STANDIN", &standin)
        .env("SCRIPT", &script_path)
        .env("OUT", &out)
        .status()
        .expect("unshare runs (util-linux; the tests run as root to mount in a private namespace)");
    assert!(
        status.success(),
        "the host harness failed to set up its mount namespace (the capture tests need root for `unshare -m`)"
    );
    let read = |name: &str| std::fs::read_to_string(out.join(name)).unwrap_or_default();
    let deliveries = (1..=deliveries)
        .map(|i| Delivery {
            code: read(&format!("rc.{i}")).trim().parse().unwrap_or(-1),
            stdout: read(&format!("out.{i}")),
            stderr: read(&format!("err.{i}")),
        })
        .collect();
    Played {
        deliveries,
        calls: std::fs::read_to_string(standin.join("calls.log")).unwrap_or_default(),
        lime_loaded_after: read("lime").trim() == "loaded",
        shm_after: read("shm").lines().map(str::to_string).collect(),
    }
}

fn which(program: &str) -> String {
    let out = Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .unwrap();
    let p = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(!p.is_empty(), "{program} is not installed");
    p
}

/// A curl in front of the real one: reads the config the script gives on
/// standard input, slows or kills the upload of the part named in
/// curl.slow / curl.crash, then hands the config to the real curl.
fn curl_wrapper(real: &str) -> String {
    format!(
        r#"#!/bin/bash
cfg=$(cat)
file=$(printf '%s\n' "$cfg" | sed -n 's/^upload-file = "\(.*\)"$/\1/p')
n=""
case "$file" in */part.*) n=${{file##*/part.}} ;; esac
if [ -n "$n" ] && [ -f "$FIREBREAK_STANDIN_DIR/curl.slow" ]; then
  read -r slow secs <"$FIREBREAK_STANDIN_DIR/curl.slow"
  if [ "$n" = "$slow" ]; then
    echo "curl: part $n waits $secs s" >>"$FIREBREAK_STANDIN_DIR/calls.log"
    sleep "$secs"
  fi
fi
if [ -n "$n" ] && [ -f "$FIREBREAK_STANDIN_DIR/curl.term" ] && [ "$n" = "$(cat "$FIREBREAK_STANDIN_DIR/curl.term")" ]; then
  # The capture script itself: the last of our parents running it.
  main=""
  pid=$$
  while :; do
    ppid=$(awk '{{print $4}}' "/proc/$pid/stat")
    [ "$ppid" -gt 1 ] || break
    if tr '\0' ' ' <"/proc/$ppid/cmdline" | grep -q 'capture\.sh'; then main=$ppid; fi
    pid=$ppid
  done
  echo "curl: part $n sends SIGTERM to the capture script $main" >>"$FIREBREAK_STANDIN_DIR/calls.log"
  kill -TERM "$main"
fi
if [ -n "$n" ] && [ -f "$FIREBREAK_STANDIN_DIR/curl.crash" ] && [ "$n" = "$(cat "$FIREBREAK_STANDIN_DIR/curl.crash")" ]; then
  # The uploader is the capture script's child on our chain of parents:
  # every process between is a subshell of the script.
  chain=()
  pid=$$
  while :; do
    ppid=$(awk '{{print $4}}' "/proc/$pid/stat")
    [ "$ppid" -gt 1 ] || break
    if tr '\0' ' ' <"/proc/$ppid/cmdline" | grep -q 'capture\.sh'; then chain+=("$ppid"); fi
    pid=$ppid
  done
  uploader=${{chain[$((${{#chain[@]}} - 2))]}}
  echo "curl: part $n kills the uploader $uploader" >>"$FIREBREAK_STANDIN_DIR/calls.log"
  kill -9 "$uploader"
  exit 7
fi
printf '%s\n' "$cfg" | exec {real} "$@"
"#
    )
}
