//! What the tools sent to a suspect host must be before they are sent: a
//! LiME module is an ELF relocatable object named `lime` whose `vermagic`
//! names the kernel it is offered for (the kernel refuses any other with
//! "Invalid module format", after the capture has begun); AVML is an
//! x86-64 ELF executable. A text file or random bytes uploaded by mistake
//! is refused at `firebreak tools add`, not discovered on the host.

use object::elf::{FileHeader64, FileType, EM_X86_64, ET_DYN, ET_EXEC, ET_REL};
use object::read::elf::{FileHeader, SectionHeader};
use object::Endianness;

/// Why a file is not the tool it claims to be.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ToolError {
    /// Not a readable 64-bit ELF file (or its sections cannot be read);
    /// the parser's message.
    #[error("not an ELF file ({0})")]
    NotElf(String),
    /// An ELF file for another architecture than x86-64.
    #[error("an ELF file for machine {machine}, not x86-64 (EM_X86_64)")]
    Machine {
        /// The header's `e_machine` value.
        machine: u16,
    },
    /// An ELF file of the wrong `e_type` (an executable where a module is
    /// wanted, or the reverse).
    #[error("an ELF file of type {found}, not {wanted}")]
    Type {
        /// The file's type, in words (e.g. `executable (ET_EXEC)`).
        found: &'static str,
        /// The type the check wanted, in words.
        wanted: &'static str,
    },
    /// A relocatable object without a `.modinfo` section.
    #[error("no .modinfo section: not a Linux kernel module")]
    NoModinfo,
    /// A module whose `.modinfo` has no `vermagic=` entry.
    #[error("the module has no vermagic in .modinfo")]
    NoVermagic,
    /// A module whose `.modinfo` `name=` is not `lime`; holds that name.
    #[error("the module is named {0:?}, not \"lime\" (the capture unloads it with `rmmod lime`)")]
    Name(String),
    /// A module built for another kernel release.
    #[error("the module was built for {vermagic:?}, not for kernel {release}: the kernel would refuse it")]
    Vermagic {
        /// The module's whole `vermagic` string.
        vermagic: String,
        /// The kernel release (`uname -r`) it was offered for.
        release: String,
    },
}

fn type_name(t: FileType) -> &'static str {
    match t {
        ET_REL => "relocatable object (ET_REL)",
        ET_EXEC => "executable (ET_EXEC)",
        ET_DYN => "shared object or PIE executable (ET_DYN)",
        _ => "unknown",
    }
}

fn header(bytes: &[u8]) -> Result<(&FileHeader64<Endianness>, Endianness), ToolError> {
    let h =
        FileHeader64::<Endianness>::parse(bytes).map_err(|e| ToolError::NotElf(e.to_string()))?;
    let endian = h.endian().map_err(|e| ToolError::NotElf(e.to_string()))?;
    Ok((h, endian))
}

/// Checks AVML: a 64-bit x86-64 ELF executable (static or PIE).
pub fn check_avml(bytes: &[u8]) -> Result<(), ToolError> {
    let (h, e) = header(bytes)?;
    let machine = h.e_machine(e);
    if machine != EM_X86_64 {
        return Err(ToolError::Machine { machine: machine.0 });
    }
    let t = h.e_type(e);
    if t != ET_EXEC && t != ET_DYN {
        return Err(ToolError::Type {
            found: type_name(t),
            wanted: "an executable",
        });
    }
    Ok(())
}

/// What a module says of itself in `.modinfo`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ModuleInfo {
    /// The `name=` entry; `None` when `.modinfo` has none.
    pub name: Option<String>,
    /// The `vermagic=` entry: the kernel release, a space, then build
    /// flags such as `SMP mod_unload`.
    pub vermagic: String,
}

/// The `key=value` strings of `.modinfo`.
fn modinfo(bytes: &[u8]) -> Result<Vec<(String, String)>, ToolError> {
    let (h, e) = header(bytes)?;
    let t = h.e_type(e);
    if t != ET_REL {
        return Err(ToolError::Type {
            found: type_name(t),
            wanted: "a kernel module (ET_REL)",
        });
    }
    let sections = h
        .sections(e, bytes)
        .map_err(|err| ToolError::NotElf(err.to_string()))?;
    let (_, section) = sections
        .section_by_name(e, b".modinfo")
        .ok_or(ToolError::NoModinfo)?;
    let data = section
        .data(e, bytes)
        .map_err(|err| ToolError::NotElf(err.to_string()))?;
    Ok(data
        .split(|b| *b == 0)
        .filter_map(|entry| {
            let text = String::from_utf8_lossy(entry);
            let (k, v) = text.split_once('=')?;
            Some((k.to_string(), v.to_string()))
        })
        .collect())
}

/// Checks a LiME module for a kernel release: an ELF relocatable object
/// named `lime` whose vermagic starts with the release (the kernel
/// compares the whole string with its own, which begins with `uname -r`
/// and a space).
pub fn check_lime_module(bytes: &[u8], kernel_release: &str) -> Result<ModuleInfo, ToolError> {
    let info = modinfo(bytes)?;
    let get = |k: &str| {
        info.iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
    };
    let vermagic = get("vermagic").ok_or(ToolError::NoVermagic)?;
    let name = get("name");
    if let Some(n) = name.as_deref().filter(|n| *n != "lime") {
        return Err(ToolError::Name(n.to_string()));
    }
    let built_for = vermagic.split(' ').next().unwrap_or_default();
    if built_for != kernel_release {
        return Err(ToolError::Vermagic {
            vermagic,
            release: kernel_release.to_string(),
        });
    }
    Ok(ModuleInfo { name, vermagic })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ELF64 little-endian file: header, the given sections
    /// (name, data) and a section-name string table.
    pub(super) fn elf(
        e_type: FileType,
        machine: object::elf::Machine,
        sections: &[(&str, &[u8])],
    ) -> Vec<u8> {
        let mut shstr = vec![0u8];
        let mut names = Vec::new();
        for (n, _) in sections {
            names.push(shstr.len() as u32);
            shstr.extend_from_slice(n.as_bytes());
            shstr.push(0);
        }
        let shstr_name = shstr.len() as u32;
        shstr.extend_from_slice(b".shstrtab\0");
        let mut body = Vec::new();
        let mut offsets = Vec::new();
        for (_, d) in sections {
            offsets.push(64 + body.len() as u64);
            body.extend_from_slice(d);
        }
        let shstr_off = 64 + body.len() as u64;
        body.extend_from_slice(&shstr);
        while body.len() % 8 != 0 {
            body.push(0);
        }
        let shoff = 64 + body.len() as u64;
        let shnum = sections.len() as u16 + 2;
        let mut out = Vec::new();
        out.extend_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1, 0]);
        out.extend_from_slice(&[0; 8]);
        out.extend_from_slice(&e_type.0.to_le_bytes());
        out.extend_from_slice(&machine.0.to_le_bytes());
        out.extend_from_slice(&1u32.to_le_bytes());
        out.extend_from_slice(&0u64.to_le_bytes()); // entry
        out.extend_from_slice(&0u64.to_le_bytes()); // phoff
        out.extend_from_slice(&shoff.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes()); // flags
        out.extend_from_slice(&64u16.to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        out.extend_from_slice(&64u16.to_le_bytes());
        out.extend_from_slice(&shnum.to_le_bytes());
        out.extend_from_slice(&(shnum - 1).to_le_bytes());
        out.extend_from_slice(&body);
        let sh = |name: u32, typ: u32, off: u64, size: u64| {
            let mut v = Vec::new();
            v.extend_from_slice(&name.to_le_bytes());
            v.extend_from_slice(&typ.to_le_bytes());
            v.extend_from_slice(&0u64.to_le_bytes());
            v.extend_from_slice(&0u64.to_le_bytes());
            v.extend_from_slice(&off.to_le_bytes());
            v.extend_from_slice(&size.to_le_bytes());
            v.extend_from_slice(&0u32.to_le_bytes());
            v.extend_from_slice(&0u32.to_le_bytes());
            v.extend_from_slice(&1u64.to_le_bytes());
            v.extend_from_slice(&0u64.to_le_bytes());
            v
        };
        out.extend(sh(0, 0, 0, 0));
        for (i, (_, d)) in sections.iter().enumerate() {
            out.extend(sh(names[i], 1, offsets[i], d.len() as u64));
        }
        out.extend(sh(shstr_name, 3, shstr_off, shstr.len() as u64));
        out
    }

    const MODINFO: &[u8] =
        b"license=GPL\0name=lime\0vermagic=6.1.0-13-amd64 SMP preempt mod_unload modversions \0";

    #[test]
    fn a_lime_module_for_the_kernel_passes() {
        let m = elf(
            ET_REL,
            EM_X86_64,
            &[(".text", b"\x90\x90"), (".modinfo", MODINFO)],
        );
        let info = check_lime_module(&m, "6.1.0-13-amd64").unwrap();
        assert_eq!(info.name.as_deref(), Some("lime"));
        assert!(info.vermagic.starts_with("6.1.0-13-amd64 SMP"));
    }

    #[test]
    fn the_wrong_kernel_name_type_or_file_is_refused() {
        let m = elf(ET_REL, EM_X86_64, &[(".modinfo", MODINFO)]);
        assert!(matches!(
            check_lime_module(&m, "6.1.0-13"),
            Err(ToolError::Vermagic { .. })
        ));
        let other = elf(
            ET_REL,
            EM_X86_64,
            &[(".modinfo", b"name=evil\0vermagic=6.1.0-13-amd64 SMP\0")],
        );
        assert!(matches!(
            check_lime_module(&other, "6.1.0-13-amd64"),
            Err(ToolError::Name(_))
        ));
        let plain = elf(ET_REL, EM_X86_64, &[(".text", b"x")]);
        assert_eq!(
            check_lime_module(&plain, "6.1.0-13-amd64"),
            Err(ToolError::NoModinfo)
        );
        let exe = elf(ET_EXEC, EM_X86_64, &[]);
        assert!(matches!(
            check_lime_module(&exe, "x"),
            Err(ToolError::Type { .. })
        ));
        assert!(matches!(
            check_lime_module(b"just text\n", "x"),
            Err(ToolError::NotElf(_))
        ));
        let random: Vec<u8> = (0..4096u64)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        assert!(check_lime_module(&random, "x").is_err());
    }

    #[test]
    fn avml_must_be_an_x86_64_executable() {
        assert_eq!(check_avml(&elf(ET_EXEC, EM_X86_64, &[])), Ok(()));
        assert_eq!(check_avml(&elf(ET_DYN, EM_X86_64, &[])), Ok(()));
        assert!(matches!(
            check_avml(&elf(ET_REL, EM_X86_64, &[])),
            Err(ToolError::Type { .. })
        ));
        assert!(matches!(
            check_avml(&elf(ET_EXEC, object::elf::EM_AARCH64, &[])),
            Err(ToolError::Machine { machine: 183 })
        ));
        assert!(matches!(
            check_avml(b"#!/bin/sh\necho avml\n"),
            Err(ToolError::NotElf(_))
        ));
    }
}
