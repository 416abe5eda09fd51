//! Checks that a file is an ELF shared object for this machine with soname `libcuda.so.1`.
//!
//! A small hand-written reader: the ELF header, the section headers, the `SHT_DYNAMIC` section and
//! the string table it links to. Every offset is bounds-checked, so a truncated or hostile file
//! gives a [`ElfProblem`], never a panic.

use std::fmt;

const EI_CLASS: usize = 4;
const EI_DATA: usize = 5;
const ELFCLASS32: u8 = 1;
const ELFCLASS64: u8 = 2;
const ELFDATA2LSB: u8 = 1;
const ET_DYN: u16 = 3;
const SHT_DYNAMIC: u32 = 6;
const DT_NULL: u64 = 0;
const DT_SONAME: u64 = 14;
const DT_FLAGS_1: u64 = 0x6fff_fffb;
const DF_1_PIE: u64 = 0x0800_0000;

/// `e_machine` of the machine this tool was built for.
pub const HOST_MACHINE: u16 = if cfg!(target_arch = "x86_64") {
    62
} else if cfg!(target_arch = "aarch64") {
    183
} else if cfg!(target_arch = "riscv64") {
    243
} else {
    0
};

/// Why a file is not an acceptable shim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ElfProblem {
    /// No ELF magic.
    NotElf,
    /// The file ends before a structure it declares.
    Truncated(&'static str),
    /// 32-bit where 64-bit is needed (or the reverse).
    WrongClass {
        /// Bits the file has.
        found: u8,
    },
    /// Big-endian where this machine is little-endian.
    WrongByteOrder,
    /// `e_type` is not `ET_DYN`.
    NotSharedObject {
        /// The `e_type` found.
        e_type: u16,
    },
    /// A position-independent executable, not a library.
    Executable,
    /// Built for another CPU.
    WrongMachine {
        /// The `e_machine` found.
        found: u16,
    },
    /// No `DT_SONAME` entry.
    NoSoname,
    /// A soname other than the required one.
    WrongSoname {
        /// The soname found.
        found: String,
    },
}

impl fmt::Display for ElfProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotElf => write!(f, "not an ELF file"),
            Self::Truncated(what) => write!(f, "truncated ELF file ({what} lies past the end)"),
            Self::WrongClass { found } => write!(
                f,
                "ELF class is {found}-bit, this machine needs {}-bit",
                usize::BITS
            ),
            Self::WrongByteOrder => {
                write!(f, "ELF file is big-endian, this machine is little-endian")
            }
            Self::NotSharedObject { e_type } => {
                write!(f, "not an ELF shared object (e_type {e_type}, want ET_DYN)")
            }
            Self::Executable => write!(
                f,
                "is a position-independent executable, not a shared library"
            ),
            Self::WrongMachine { found } => write!(
                f,
                "ELF machine is {} ({found}), this machine is {} ({HOST_MACHINE})",
                machine_name(*found),
                machine_name(HOST_MACHINE)
            ),
            Self::NoSoname => write!(f, "has no DT_SONAME; the shim needs soname libcuda.so.1"),
            Self::WrongSoname { found } => {
                write!(f, "soname is {found:?}; the shim needs soname libcuda.so.1")
            }
        }
    }
}

/// Human name of an `e_machine` value.
pub fn machine_name(m: u16) -> &'static str {
    match m {
        3 => "i386",
        40 => "ARM",
        62 => "x86-64",
        183 => "AArch64",
        243 => "RISC-V",
        _ => "unknown",
    }
}

/// What [`inspect`] learnt about an acceptable library.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedObject {
    /// `DT_SONAME`.
    pub soname: String,
    /// `e_machine`.
    pub machine: u16,
}

/// Checks `bytes` against `want_soname`.
///
/// # Errors
/// The first [`ElfProblem`] found, in the order: magic, class, byte order, type, machine, soname.
pub fn inspect(bytes: &[u8], want_soname: &str) -> Result<SharedObject, ElfProblem> {
    if bytes.len() < 16 || &bytes[..4] != b"\x7fELF" {
        return Err(ElfProblem::NotElf);
    }
    let class = bytes[EI_CLASS];
    let want_class = if usize::BITS == 64 {
        ELFCLASS64
    } else {
        ELFCLASS32
    };
    if class != want_class {
        let found = match class {
            ELFCLASS32 => 32,
            ELFCLASS64 => 64,
            _ => 0,
        };
        return Err(ElfProblem::WrongClass { found });
    }
    if bytes[EI_DATA] != ELFDATA2LSB {
        return Err(ElfProblem::WrongByteOrder);
    }
    let r = Reader {
        b: bytes,
        wide: class == ELFCLASS64,
    };
    let e_type = r.u16(16).ok_or(ElfProblem::Truncated("ELF header"))?;
    let machine = r.u16(18).ok_or(ElfProblem::Truncated("ELF header"))?;
    if e_type != ET_DYN {
        return Err(ElfProblem::NotSharedObject { e_type });
    }
    if machine != HOST_MACHINE {
        return Err(ElfProblem::WrongMachine { found: machine });
    }
    let (dynamic, strtab_index) = r.dynamic_entries()?;
    if dynamic
        .iter()
        .any(|&(tag, val)| tag == DT_FLAGS_1 && val & DF_1_PIE != 0)
    {
        return Err(ElfProblem::Executable);
    }
    let soname = r
        .soname(&dynamic, strtab_index)?
        .ok_or(ElfProblem::NoSoname)?;
    if soname != want_soname {
        return Err(ElfProblem::WrongSoname { found: soname });
    }
    Ok(SharedObject { soname, machine })
}

struct Reader<'a> {
    b: &'a [u8],
    wide: bool,
}

struct Section {
    kind: u32,
    offset: u64,
    size: u64,
    link: u32,
}

impl Reader<'_> {
    fn bytes<const N: usize>(&self, at: u64) -> Option<[u8; N]> {
        let at = usize::try_from(at).ok()?;
        self.b.get(at..at.checked_add(N)?)?.try_into().ok()
    }
    fn u16(&self, at: u64) -> Option<u16> {
        self.bytes(at).map(u16::from_le_bytes)
    }
    fn u32(&self, at: u64) -> Option<u32> {
        self.bytes(at).map(u32::from_le_bytes)
    }
    fn u64(&self, at: u64) -> Option<u64> {
        self.bytes(at).map(u64::from_le_bytes)
    }
    /// A pointer-sized field.
    fn word(&self, at: u64) -> Option<u64> {
        if self.wide {
            self.u64(at)
        } else {
            self.u32(at).map(u64::from)
        }
    }

    fn sections(&self) -> Result<Vec<Section>, ElfProblem> {
        let t = ElfProblem::Truncated("section header table");
        let (shoff_at, shentsize_at) = if self.wide {
            (0x28, 0x3a)
        } else {
            (0x20, 0x2e)
        };
        let shoff = self.word(shoff_at).ok_or(t.clone())?;
        let shentsize = u64::from(self.u16(shentsize_at).ok_or(t.clone())?);
        let shnum = u64::from(self.u16(shentsize_at + 2).ok_or(t.clone())?);
        let mut out = Vec::new();
        for i in 0..shnum {
            let base = shoff.saturating_add(i.saturating_mul(shentsize));
            let kind = self.u32(base.saturating_add(4)).ok_or(t.clone())?;
            let (offset, size, link) = if self.wide {
                (
                    self.u64(base.saturating_add(0x18)),
                    self.u64(base.saturating_add(0x20)),
                    self.u32(base.saturating_add(0x28)),
                )
            } else {
                (
                    self.u32(base.saturating_add(0x10)).map(u64::from),
                    self.u32(base.saturating_add(0x14)).map(u64::from),
                    self.u32(base.saturating_add(0x18)),
                )
            };
            out.push(Section {
                kind,
                offset: offset.ok_or(t.clone())?,
                size: size.ok_or(t.clone())?,
                link: link.ok_or(t.clone())?,
            });
        }
        Ok(out)
    }

    /// `(d_tag, d_val)` pairs of the `SHT_DYNAMIC` section, and the index of its string table.
    fn dynamic_entries(&self) -> Result<(Vec<(u64, u64)>, u32), ElfProblem> {
        let sections = self.sections()?;
        let Some(dynsec) = sections.iter().find(|s| s.kind == SHT_DYNAMIC) else {
            return Ok((Vec::new(), 0));
        };
        let entsize = if self.wide { 16 } else { 8 };
        let mut out = Vec::new();
        let mut at = dynsec.offset;
        let end = dynsec.offset.saturating_add(dynsec.size);
        while at.saturating_add(entsize) <= end {
            let t = ElfProblem::Truncated("dynamic section");
            let tag = self.word(at).ok_or(t.clone())?;
            let val = self.word(at.saturating_add(entsize / 2)).ok_or(t)?;
            if tag == DT_NULL {
                break;
            }
            out.push((tag, val));
            at += entsize;
        }
        Ok((out, dynsec.link))
    }

    fn soname(&self, dynamic: &[(u64, u64)], link: u32) -> Result<Option<String>, ElfProblem> {
        let Some(&(_, name_off)) = dynamic.iter().find(|(t, _)| *t == DT_SONAME) else {
            return Ok(None);
        };
        let sections = self.sections()?;
        let strtab = usize::try_from(link)
            .ok()
            .and_then(|i| sections.get(i))
            .ok_or(ElfProblem::Truncated("dynamic string table"))?;
        let start = strtab
            .offset
            .checked_add(name_off)
            .and_then(|s| usize::try_from(s).ok())
            .ok_or(ElfProblem::Truncated("soname string"))?;
        let tail = self
            .b
            .get(start..)
            .ok_or(ElfProblem::Truncated("soname string"))?;
        let len = tail
            .iter()
            .position(|&c| c == 0)
            .ok_or(ElfProblem::Truncated("soname string"))?;
        Ok(Some(String::from_utf8_lossy(&tail[..len]).into_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(class: u8, data: u8, e_type: u16, machine: u16) -> Vec<u8> {
        let mut b = vec![0u8; 64];
        b[..4].copy_from_slice(b"\x7fELF");
        b[4] = class;
        b[5] = data;
        b[6] = 1;
        b[16..18].copy_from_slice(&e_type.to_le_bytes());
        b[18..20].copy_from_slice(&machine.to_le_bytes());
        b
    }

    #[test]
    fn refuses_non_elf_and_short_files() {
        assert_eq!(
            inspect(b"#!/bin/sh\n", "libcuda.so.1"),
            Err(ElfProblem::NotElf)
        );
        assert_eq!(inspect(b"", "libcuda.so.1"), Err(ElfProblem::NotElf));
    }

    #[test]
    fn refuses_wrong_class_machine_and_type() {
        let other_class = if usize::BITS == 64 {
            ELFCLASS32
        } else {
            ELFCLASS64
        };
        assert!(matches!(
            inspect(&header(other_class, 1, ET_DYN, HOST_MACHINE), "x"),
            Err(ElfProblem::WrongClass { .. })
        ));
        let class = if usize::BITS == 64 {
            ELFCLASS64
        } else {
            ELFCLASS32
        };
        let other_machine = if HOST_MACHINE == 62 { 183 } else { 62 };
        assert_eq!(
            inspect(&header(class, 1, ET_DYN, other_machine), "x"),
            Err(ElfProblem::WrongMachine {
                found: other_machine
            })
        );
        assert_eq!(
            inspect(&header(class, 1, 1, HOST_MACHINE), "x"),
            Err(ElfProblem::NotSharedObject { e_type: 1 })
        );
        assert_eq!(
            inspect(&header(class, 2, ET_DYN, HOST_MACHINE), "x"),
            Err(ElfProblem::WrongByteOrder)
        );
    }

    #[test]
    fn section_table_past_end_is_truncation_not_panic() {
        let class = if usize::BITS == 64 {
            ELFCLASS64
        } else {
            ELFCLASS32
        };
        let mut b = header(class, 1, ET_DYN, HOST_MACHINE);
        b[0x28..0x30].copy_from_slice(&u64::MAX.to_le_bytes());
        b[0x3a..0x3c].copy_from_slice(&64u16.to_le_bytes());
        b[0x3c..0x3e].copy_from_slice(&3u16.to_le_bytes());
        assert!(matches!(inspect(&b, "x"), Err(ElfProblem::Truncated(_))));
    }
}
