//! Bare ELF cubins: the size is the furthest byte any header or table refers to.
//!
//! Section contents, segments, the section header table and the program header table each
//! end somewhere; the image ends at the furthest of them. Triton, for one, writes the program
//! headers after the section headers, so no single field gives the size.

use crate::source::{checked_end, read_u16, read_u32, read_u64, Source};
use crate::ImageError;

/// `\x7fELF`, read little-endian.
pub const ELF_MAGIC: u32 = 0x464C_457F;

const ELFCLASS64: u8 = 2;
const ELFDATA2LSB: u8 = 1;
const EHDR_LEN: u64 = 64;
const SHDR_LEN: u64 = 64;
const PHDR_LEN: u64 = 56;
const SHT_NOBITS: u32 = 8;
/// Most section or program headers accepted (cubins have tens to a few thousand).
const MAX_HEADERS: u64 = 1 << 20;

/// Returns the size of the ELF image at offset 0.
pub(crate) fn elf_len(src: &dyn Source) -> Result<u64, ImageError> {
    let mut ident = [0u8; 16];
    src.read_at(0, &mut ident)?;
    if ident[4] != ELFCLASS64 || ident[5] != ELFDATA2LSB {
        return Err(ImageError::UnsupportedElf {
            class: ident[4],
            data: ident[5],
        });
    }
    let phoff = read_u64(src, 32)?;
    let shoff = read_u64(src, 40)?;
    let ehsize = u64::from(read_u16(src, 52)?);
    let phentsize = u64::from(read_u16(src, 54)?);
    let mut phnum = u64::from(read_u16(src, 56)?);
    let shentsize = u64::from(read_u16(src, 58)?);
    let mut shnum = u64::from(read_u16(src, 60)?);

    let mut end = ehsize.max(EHDR_LEN);

    if shoff != 0 {
        if shentsize < SHDR_LEN {
            return Err(ImageError::InvalidField {
                field: "ELF e_shentsize",
                value: shentsize,
            });
        }
        checked_end(shoff, SHDR_LEN)?;
        // Extended numbering: counts that do not fit e_shnum / e_phnum live in section 0.
        if shnum == 0 {
            shnum = read_u64(src, shoff + 32)?;
        }
        if phnum == 0xFFFF {
            phnum = u64::from(read_u32(src, shoff + 44)?);
        }
    }
    if shnum > MAX_HEADERS || phnum > MAX_HEADERS {
        return Err(ImageError::TooLarge {
            field: "ELF header count",
            value: shnum.max(phnum),
            limit: MAX_HEADERS,
        });
    }

    if shoff != 0 && shnum > 0 {
        end = end.max(checked_end(shoff, shnum * shentsize)?);
        for_each_header(src, shoff, shnum, shentsize, &mut |sh| {
            if field_u32(sh, 4) != SHT_NOBITS {
                let (offset, size) = (field_u64(sh, 24), field_u64(sh, 32));
                if size > 0 {
                    end = end.max(checked_end(offset, size)?);
                }
            }
            Ok(())
        })?;
    }

    if phoff != 0 && phnum > 0 {
        if phentsize < PHDR_LEN {
            return Err(ImageError::InvalidField {
                field: "ELF e_phentsize",
                value: phentsize,
            });
        }
        end = end.max(checked_end(phoff, phnum * phentsize)?);
        for_each_header(src, phoff, phnum, phentsize, &mut |ph| {
            let (offset, filesz) = (field_u64(ph, 8), field_u64(ph, 32));
            if filesz > 0 {
                end = end.max(checked_end(offset, filesz)?);
            }
            Ok(())
        })?;
    }
    Ok(end)
}

/// Reads a table of `count` headers of `entsize` bytes at `offset`, a batch at a time, and
/// hands each header's bytes to `visit`.
fn for_each_header(
    src: &dyn Source,
    offset: u64,
    count: u64,
    entsize: u64,
    visit: &mut dyn FnMut(&[u8]) -> Result<(), ImageError>,
) -> Result<(), ImageError> {
    const BATCH: u64 = 256;
    let mut buf = Vec::new();
    let mut done = 0u64;
    while done < count {
        let n = (count - done).min(BATCH);
        buf.resize((n * entsize) as usize, 0);
        src.read_at(offset + done * entsize, &mut buf)?;
        for header in buf.chunks_exact(entsize as usize) {
            visit(header)?;
        }
        done += n;
    }
    Ok(())
}

fn field_u32(header: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&header[at..at + 4]);
    u32::from_le_bytes(b)
}

fn field_u64(header: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&header[at..at + 8]);
    u64::from_le_bytes(b)
}
