//! Synthetic images of every kind, sized through the safe core and through raw pointers.

use cuda_image::{
    fatbin_entries, identify, parse_wrapper, prelinked_fatbins_at, size_of_image, size_of_image_at,
    Compression, EntryKind, ImageError, ImageKind, FATBIN_MAGIC, FLAG_LZ4, FLAG_ZSTD, WRAPPER_LEN,
    WRAPPER_MAGIC,
};
use proptest::prelude::*;

/// One fatbin entry to build.
struct Entry {
    kind: u16,
    sm: u32,
    flags: u64,
    payload: Vec<u8>,
    /// Value of the payload-size field (the stored bytes are max(this, compressed)).
    payload_field: u64,
    compressed_field: u32,
}

fn plain(kind: u16, sm: u32, payload: &[u8]) -> Entry {
    Entry {
        kind,
        sm,
        flags: 0,
        payload: payload.to_vec(),
        payload_field: payload.len() as u64,
        compressed_field: 0,
    }
}

/// Builds one container with 64-byte entry headers.
fn fatbin(entries: &[Entry]) -> Vec<u8> {
    let mut body = Vec::new();
    for e in entries {
        let stored = e.payload_field.max(u64::from(e.compressed_field)) as usize;
        let mut h = vec![0u8; 64];
        h[0..2].copy_from_slice(&e.kind.to_le_bytes());
        h[2..4].copy_from_slice(&0x0101u16.to_le_bytes());
        h[4..8].copy_from_slice(&64u32.to_le_bytes());
        h[8..16].copy_from_slice(&e.payload_field.to_le_bytes());
        h[16..20].copy_from_slice(&e.compressed_field.to_le_bytes());
        h[28..32].copy_from_slice(&e.sm.to_le_bytes());
        h[40..48].copy_from_slice(&e.flags.to_le_bytes());
        h[56..64].copy_from_slice(&(e.payload.len() as u64 * 3).to_le_bytes());
        body.extend_from_slice(&h);
        let mut data = e.payload.clone();
        data.resize(stored, 0);
        body.extend_from_slice(&data);
    }
    let mut out = Vec::new();
    out.extend_from_slice(&FATBIN_MAGIC.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&16u16.to_le_bytes());
    out.extend_from_slice(&(body.len() as u64).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

/// A section: (type, offset, size).
type Section = (u32, u64, u64);
/// A segment: (offset, filesz).
type Segment = (u64, u64);

/// Builds a 64-bit little-endian ELF with the given tables placed at `shoff` / `phoff`.
fn elf(
    shoff: u64,
    sections: &[Section],
    phoff: u64,
    segments: &[Segment],
    total: usize,
) -> Vec<u8> {
    let mut out = vec![0u8; total];
    out[0..4].copy_from_slice(b"\x7fELF");
    out[4] = 2;
    out[5] = 1;
    out[6] = 1;
    out[32..40].copy_from_slice(&phoff.to_le_bytes());
    out[40..48].copy_from_slice(&shoff.to_le_bytes());
    out[52..54].copy_from_slice(&64u16.to_le_bytes());
    out[54..56].copy_from_slice(&56u16.to_le_bytes());
    out[56..58].copy_from_slice(&(segments.len() as u16).to_le_bytes());
    out[58..60].copy_from_slice(&64u16.to_le_bytes());
    out[60..62].copy_from_slice(&(sections.len() as u16).to_le_bytes());
    for (i, (ty, off, size)) in sections.iter().enumerate() {
        let h = shoff as usize + i * 64;
        out[h + 4..h + 8].copy_from_slice(&ty.to_le_bytes());
        out[h + 24..h + 32].copy_from_slice(&off.to_le_bytes());
        out[h + 32..h + 40].copy_from_slice(&size.to_le_bytes());
    }
    for (i, (off, filesz)) in segments.iter().enumerate() {
        let h = phoff as usize + i * 56;
        out[h..h + 4].copy_from_slice(&1u32.to_le_bytes());
        out[h + 8..h + 16].copy_from_slice(&off.to_le_bytes());
        out[h + 32..h + 40].copy_from_slice(&filesz.to_le_bytes());
    }
    out
}

fn wrapper(version: u32, fatbin: u64, extra: u64) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&WRAPPER_MAGIC.to_le_bytes());
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&fatbin.to_le_bytes());
    out.extend_from_slice(&extra.to_le_bytes());
    out
}

const PTX: &[u8] = b"//\n.version 8.0\n.target sm_52\n.address_size 64\n";

fn two_entry_fatbin() -> Vec<u8> {
    let mut ptx = PTX.to_vec();
    ptx.push(0);
    fatbin(&[plain(1, 52, &ptx), plain(2, 90, &[0xAB; 37])])
}

#[test]
fn fatbin_with_ptx_and_elf_entries() {
    let fb = two_entry_fatbin();
    let expected = 16 + 64 + (PTX.len() as u64 + 1) + 64 + 37;
    let mut window = fb.clone();
    window.extend_from_slice(&[0x55; 100]);
    let layout = size_of_image(&window).unwrap();
    assert_eq!(layout.kind, ImageKind::Fatbin);
    assert_eq!(layout.len, expected);
    assert_eq!(layout.len, fb.len() as u64);
    assert_eq!(layout.fatbin_containers, 1);

    let entries = fatbin_entries(&fb).unwrap();
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0].kind, EntryKind::Ptx);
    assert_eq!(entries[0].sm_arch, Some(52));
    assert_eq!(entries[0].offset, 16);
    assert_eq!(entries[1].kind, EntryKind::Elf);
    assert_eq!(entries[1].sm_arch, Some(90));
    assert_eq!(entries[1].compression, Compression::None);
    assert_eq!(entries[1].offset, 16 + 64 + PTX.len() as u64 + 1);
    assert_eq!(
        entries[1].to_string(),
        format!(
            "container 0 @{:#x}: elf sm_90 plain payload=37 compressed=0",
            entries[1].offset
        )
    );
}

#[test]
fn chained_fatbins_are_summed() {
    let a = two_entry_fatbin();
    let b = fatbin(&[plain(2, 80, &[1; 8])]);
    let c = fatbin(&[plain(7, 100, &[2; 3])]);
    let mut chain = [a.clone(), b.clone(), c.clone()].concat();
    let total = chain.len() as u64;
    chain.extend_from_slice(&[0; 40]);
    let layout = size_of_image(&chain).unwrap();
    assert_eq!(layout.len, total);
    assert_eq!(layout.fatbin_containers, 3);
    let entries = fatbin_entries(&chain).unwrap();
    assert_eq!(entries.len(), 4);
    assert_eq!(entries[2].container, 1);
    assert_eq!(entries[2].offset, a.len() as u64 + 16);
    assert_eq!(entries[3].container, 2);
    assert_eq!(entries[3].kind, EntryKind::Other(7));
}

#[test]
fn compressed_entries_advance_by_the_larger_size() {
    // LZ4 entry whose compressed size exceeds the payload field; Zstd entry the other way.
    let lz4 = Entry {
        kind: 2,
        sm: 90,
        flags: FLAG_LZ4,
        payload: vec![9; 20],
        payload_field: 16,
        compressed_field: 20,
    };
    let zstd = Entry {
        kind: 1,
        sm: 90,
        flags: FLAG_ZSTD | 0x11,
        payload: vec![8; 24],
        payload_field: 24,
        compressed_field: 13,
    };
    let fb = fatbin(&[lz4, zstd]);
    assert_eq!(size_of_image(&fb).unwrap().len, 16 + 64 + 20 + 64 + 24);
    let entries = fatbin_entries(&fb).unwrap();
    assert_eq!(entries[0].compression, Compression::Lz4);
    assert_eq!(entries[0].compressed_len, 20);
    assert_eq!(entries[1].compression, Compression::Zstd);
    assert_eq!(entries[1].offset, 16 + 64 + 20);
    assert_eq!(entries[1].uncompressed_len, Some(72));
}

#[test]
fn truncated_and_corrupt_fatbins_are_refused() {
    let fb = two_entry_fatbin();
    for cut in [1, 3] {
        assert!(size_of_image(&fb[..cut]).is_err(), "cut {cut}");
    }
    for cut in [4, 15, 16, 40, fb.len() - 1] {
        let err = size_of_image(&fb[..cut]).unwrap_err();
        assert!(
            matches!(err, ImageError::Truncated { .. }),
            "cut {cut}: {err:?}"
        );
    }
    let mut bad_header = fb.clone();
    bad_header[6] = 8;
    assert!(matches!(
        size_of_image(&bad_header),
        Err(ImageError::InvalidField {
            field: "fatbin header_size",
            value: 8
        })
    ));
    let mut huge = fb.clone();
    huge[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(matches!(
        size_of_image(&huge),
        Err(ImageError::TooLarge { .. })
    ));
    // An entry whose payload runs past the container end.
    let mut overrun = fb.clone();
    overrun[16 + 8..16 + 16].copy_from_slice(&10_000u64.to_le_bytes());
    let mut long_window = overrun.clone();
    long_window.resize(20_000, 0);
    assert!(matches!(
        size_of_image(&long_window),
        Err(ImageError::Truncated { .. })
    ));
    // An entry header size below the minimum.
    let mut tiny = fb;
    tiny[16 + 4..16 + 8].copy_from_slice(&8u32.to_le_bytes());
    assert!(matches!(
        size_of_image(&tiny),
        Err(ImageError::InvalidField { .. })
    ));
}

#[test]
fn elf_with_program_headers_after_section_headers() {
    // Triton's layout: sections, then the section header table, then the program headers.
    let sections = [
        (0, 0, 0),
        (1, 0x40, 0x100),
        (8, 0x140, 0x10_0000),
        (1, 0x140, 0x30),
    ];
    let shoff = 0x180;
    let phoff = shoff + 4 * 64;
    let end = phoff + 2 * 56;
    let image = elf(
        shoff,
        &sections,
        phoff,
        &[(0x40, 0x100), (0x140, 0x30)],
        end as usize + 64,
    );
    let layout = size_of_image(&image).unwrap();
    assert_eq!(layout.kind, ImageKind::Elf);
    assert_eq!(
        layout.len, end,
        "NOBITS sizes must not count, trailing bytes are not the image"
    );
}

#[test]
fn elf_sized_by_furthest_section_or_segment() {
    let sections = [(0, 0, 0), (1, 0x200, 0x1000)];
    let image = elf(0x40, &sections, 0xC0, &[(0x200, 0x1400)], 0x1800);
    assert_eq!(size_of_image(&image).unwrap().len, 0x1600);
    let image = elf(0x40, &sections, 0, &[], 0x1200);
    assert_eq!(size_of_image(&image).unwrap().len, 0x1200);
}

#[test]
fn corrupt_elves_are_refused() {
    let image = elf(0x40, &[(0, 0, 0), (1, 0x100, 0x10)], 0, &[], 0x110);
    let mut class32 = image.clone();
    class32[4] = 1;
    assert_eq!(
        size_of_image(&class32),
        Err(ImageError::UnsupportedElf { class: 1, data: 1 })
    );
    assert!(matches!(
        size_of_image(&image[..0x60]),
        Err(ImageError::Truncated { .. })
    ));
    let mut far = image.clone();
    far[0x40 + 64 + 24..0x40 + 64 + 32].copy_from_slice(&(u64::MAX - 4).to_le_bytes());
    assert!(matches!(
        size_of_image(&far),
        Err(ImageError::TooLarge { .. })
    ));
    let mut small_ent = image;
    small_ent[58] = 12;
    assert!(matches!(
        size_of_image(&small_ent),
        Err(ImageError::InvalidField { .. })
    ));
}

#[test]
fn ptx_is_strlen_plus_one() {
    let mut text = PTX.to_vec();
    text.push(0);
    text.extend_from_slice(b"garbage after");
    let layout = size_of_image(&text).unwrap();
    assert_eq!(layout.kind, ImageKind::Ptx);
    assert_eq!(layout.len, PTX.len() as u64 + 1);
    assert_eq!(size_of_image(b"x\0").unwrap().len, 2);
    assert!(matches!(
        size_of_image(PTX),
        Err(ImageError::Unterminated { .. })
    ));
}

#[test]
fn unknown_and_empty_inputs() {
    assert!(matches!(identify(&[]), Err(ImageError::Truncated { .. })));
    assert_eq!(
        identify(&[0xDE, 0xAD, 0xBE, 0xEF]),
        Err(ImageError::UnknownFormat {
            first_bytes: 0xEFBE_ADDE
        })
    );
}

#[test]
fn wrapper_in_a_window() {
    let w = wrapper(2, 0x1234_5678, 0);
    assert_eq!(identify(&w).unwrap(), ImageKind::FatbinWrapper);
    assert_eq!(size_of_image(&w).unwrap().len, WRAPPER_LEN);
    let parsed = parse_wrapper(&w).unwrap();
    assert_eq!((parsed.version, parsed.fatbin), (2, 0x1234_5678));
    assert!(matches!(
        parse_wrapper(&wrapper(3, 1, 0)),
        Err(ImageError::InvalidField { value: 3, .. })
    ));
    assert!(matches!(
        parse_wrapper(&w[..20]),
        Err(ImageError::Truncated { .. })
    ));
}

#[test]
fn pointer_api_follows_wrapper_v1_to_the_fatbin() {
    let fb = two_entry_fatbin();
    let name = b"kernels.cu\0";
    let w = wrapper(1, fb.as_ptr() as u64, name.as_ptr() as u64);
    // SAFETY: `w` is a wrapper whose pointers refer to live buffers in this test.
    let info = unsafe { size_of_image_at(w.as_ptr()) }.unwrap();
    assert_eq!(info.kind, ImageKind::FatbinWrapper);
    assert_eq!(info.payload.kind, ImageKind::Fatbin);
    assert_eq!(info.payload_addr, fb.as_ptr() as usize);
    assert_eq!(info.payload.len, fb.len() as u64);
    // SAFETY: `fb` is alive and unchanged.
    assert_eq!(unsafe { info.payload_bytes() }, &fb[..]);
    // SAFETY: version 1: the list is not read.
    assert!(
        unsafe { prelinked_fatbins_at(info.wrapper.as_ref().unwrap()) }
            .unwrap()
            .is_empty()
    );
}

#[test]
fn pointer_api_reads_wrapper_v2_prelinked_list() {
    let main = two_entry_fatbin();
    let p1 = fatbin(&[plain(2, 90, &[3; 11])]);
    let p2 = fatbin(&[plain(2, 90, &[4; 5])]);
    let list: [u64; 3] = [p1.as_ptr() as u64, p2.as_ptr() as u64, 0];
    let w = wrapper(2, main.as_ptr() as u64, list.as_ptr() as u64);
    // SAFETY: `w`, its fatbin and its list are live buffers in this test.
    let info = unsafe { size_of_image_at(w.as_ptr()) }.unwrap();
    assert_eq!(info.payload.len, main.len() as u64);
    // SAFETY: as above.
    let pre = unsafe { prelinked_fatbins_at(info.wrapper.as_ref().unwrap()) }.unwrap();
    assert_eq!(pre.len(), 2);
    assert_eq!(pre[0], (p1.as_ptr() as usize, size_of_image(&p1).unwrap()));
    assert_eq!(pre[1].1.len, p2.len() as u64);
}

#[test]
fn pointer_api_refuses_null_and_nested_wrappers() {
    // SAFETY: NULL is allowed by the contract.
    assert_eq!(
        unsafe { size_of_image_at(std::ptr::null()) },
        Err(ImageError::NullPointer)
    );
    let null_target = wrapper(1, 0, 0);
    // SAFETY: a live wrapper; its NULL target is refused before any read.
    assert_eq!(
        unsafe { size_of_image_at(null_target.as_ptr()) },
        Err(ImageError::BadWrapperTarget { what: "NULL" })
    );
    let inner = wrapper(1, 0, 0);
    let outer = wrapper(1, inner.as_ptr() as u64, 0);
    // SAFETY: both wrappers are live.
    assert_eq!(
        unsafe { size_of_image_at(outer.as_ptr()) },
        Err(ImageError::BadWrapperTarget {
            what: "another wrapper"
        })
    );
}

#[test]
fn pointer_api_sizes_elf_ptx_and_chains_like_the_slice_api() {
    let sections = [(0, 0, 0), (1, 0x40, 0x100)];
    let image = elf(0x140, &sections, 0x1C0, &[(0x40, 0x100)], 0x1F8);
    let mut ptx = PTX.to_vec();
    ptx.push(0);
    let chain = [two_entry_fatbin(), fatbin(&[plain(1, 90, b"x\0")])].concat();
    for bytes in [&image[..], &ptx[..], &chain[..]] {
        // SAFETY: each buffer is a live, well-formed image.
        let info = unsafe { size_of_image_at(bytes.as_ptr()) }.unwrap();
        assert_eq!(info.payload, size_of_image(bytes).unwrap());
        assert_eq!(info.payload.len, bytes.len() as u64);
    }
}

#[test]
fn pointer_api_reports_unmapped_memory_instead_of_faulting() {
    if !cuda_image::guarded_reads_available() {
        eprintln!("process_vm_readv refused here: unmapped-memory test skipped");
        return;
    }
    // A fatbin at the end of a mapped page whose header claims more bytes than are mapped.
    // SAFETY: plain anonymous mapping calls; the second page is made inaccessible.
    unsafe {
        let page = libc_page();
        let base = libc::mmap(
            std::ptr::null_mut(),
            2 * page,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        assert_ne!(base, libc::MAP_FAILED);
        assert_eq!(
            libc::mprotect(base.cast::<u8>().add(page).cast(), page, libc::PROT_NONE),
            0
        );
        let fb = two_entry_fatbin();
        let at = base.cast::<u8>().add(page - 32);
        std::ptr::copy_nonoverlapping(fb.as_ptr(), at, 32);
        let result = size_of_image_at(at);
        assert!(
            matches!(result, Err(ImageError::Unreadable { .. })),
            "{result:?}"
        );
        // A fatbin ending exactly at the page end: the chain probe must not fault.
        let small = fatbin(&[plain(2, 90, &[5; 8])]);
        let at = base.cast::<u8>().add(page - small.len());
        std::ptr::copy_nonoverlapping(small.as_ptr(), at, small.len());
        assert_eq!(
            size_of_image_at(at).unwrap().payload.len,
            small.len() as u64
        );
        libc::munmap(base, 2 * page);
    }
}

fn libc_page() -> usize {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) as usize }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = identify(&bytes);
        if let Ok(layout) = size_of_image(&bytes) {
            prop_assert!(layout.len <= bytes.len() as u64 || layout.kind == ImageKind::FatbinWrapper);
        }
        let _ = fatbin_entries(&bytes);
        let _ = parse_wrapper(&bytes);
    }

    #[test]
    fn mutated_images_never_panic_or_overrun(
        which in 0usize..3,
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut bytes = match which {
            0 => two_entry_fatbin(),
            1 => elf(0x140, &[(0, 0, 0), (1, 0x40, 0x100)], 0x1C0, &[(0x40, 0x100)], 0x1F8),
            _ => [two_entry_fatbin(), fatbin(&[plain(2, 90, &[1; 9])])].concat(),
        };
        for (idx, value) in flips {
            let i = idx.index(bytes.len());
            bytes[i] = value;
        }
        let keep = cut.index(bytes.len() + 1);
        let window = &bytes[..keep];
        if let Ok(layout) = size_of_image(window) {
            prop_assert!(layout.len <= window.len() as u64 || layout.kind == ImageKind::FatbinWrapper);
        }
        let _ = fatbin_entries(window);
        // The pointer API reads through the kernel: corrupt headers give errors, never faults.
        if !cuda_image::guarded_reads_available() {
            return Ok(());
        }
        // SAFETY: `bytes` is live; any pointer inside a mutated wrapper is read only through
        // process_vm_readv, which reports unmapped memory instead of faulting.
        let from_memory = unsafe { cuda_image::size_of_image_at(bytes.as_ptr()) };
        if let (Ok(layout), Ok(info)) = (size_of_image(&bytes), &from_memory) {
            if layout.kind != ImageKind::FatbinWrapper {
                prop_assert_eq!(layout, info.payload);
            }
        }
    }
}
