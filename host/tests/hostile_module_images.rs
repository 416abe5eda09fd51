//! A hostile guest's module images (issue 11, attack class 4): the host sizes every received
//! image again with `cuda-image`, so PTX without its NUL, bytes after an image, size fields that
//! point past the buffer and fatbin wrappers (which carry raw pointers) are refused with
//! `CUDA_ERROR_INVALID_IMAGE` before the driver parses them, for `cuModuleLoadData` and
//! `cuLibraryLoadData` alike, and the same client's next well-formed load still works.

mod support;

use protocol::Decoder;
use support::wire::{request, RawGuest};
use support::{c_program, run_client, Host};

const INVALID_IMAGE: u32 = 200;

const PTX: &[u8] = b".version 8.0\n.target sm_90\n.address_size 64\n\0";

/// A 64-bit little-endian ELF header (64 bytes) whose section headers start at `shoff`.
fn elf_header(shoff: u64, shnum: u16) -> Vec<u8> {
    let mut h = vec![0u8; 64];
    h[..4].copy_from_slice(b"\x7fELF");
    h[4] = 2; // 64-bit
    h[5] = 1; // little-endian
    h[6] = 1; // version
    h[16] = 2; // ET_EXEC
    h[18] = 190; // EM_CUDA
    h[20] = 1;
    h[40..48].copy_from_slice(&shoff.to_le_bytes());
    h[52..54].copy_from_slice(&64u16.to_le_bytes()); // ehsize
    h[58..60].copy_from_slice(&64u16.to_le_bytes()); // shentsize
    h[60..62].copy_from_slice(&shnum.to_le_bytes());
    h
}

/// A fatbin container header (16 bytes) announcing `files_len` bytes after it.
fn fatbin_header(files_len: u64) -> Vec<u8> {
    let mut h = cuda_image::FATBIN_MAGIC.to_le_bytes().to_vec();
    h.extend_from_slice(&1u16.to_le_bytes()); // version
    h.extend_from_slice(&16u16.to_le_bytes()); // header size
    h.extend_from_slice(&files_len.to_le_bytes());
    h
}

/// A fatbin wrapper: magic, version 1, a pointer to the fatbin (here into nowhere), a pointer.
fn wrapper() -> Vec<u8> {
    let mut w = cuda_image::WRAPPER_MAGIC.to_le_bytes().to_vec();
    w.extend_from_slice(&1u32.to_le_bytes());
    w.extend_from_slice(&0x7f00_dead_0000u64.to_le_bytes());
    w.extend_from_slice(&0u64.to_le_bytes());
    w
}

fn load_module(guest: &mut RawGuest, image: &[u8]) -> u32 {
    let frame = request(shim_macros::cuda_call_id!(cuModuleLoadData), |enc| {
        enc.put_bytes(image)
    });
    guest.call_raw(&frame).0
}

/// `cuLibraryLoadData` with no JIT and no library options.
fn load_library(guest: &mut RawGuest, image: &[u8]) -> (u32, u64) {
    let frame = request(shim_macros::cuda_call_id!(cuLibraryLoadData), |enc| {
        enc.put_bytes(image);
        enc.put(0u32);
        enc.put(0u32);
    });
    let (rc, body) = guest.call_raw(&frame);
    let library = if rc == 0 {
        Decoder::new(&body).get().expect("library handle")
    } else {
        0
    };
    (rc, library)
}

#[test]
fn images_whose_size_is_not_what_was_sent_never_reach_the_driver() {
    let host = Host::on_region("hostile-images")
        .region_size(16 << 20)
        .log_driver_calls()
        .start();
    let mut guest = RawGuest::connect(host.region());

    let mut trailing = PTX.to_vec();
    trailing.extend_from_slice(b"more");
    let mut short_fatbin = fatbin_header(1 << 20);
    short_fatbin.extend_from_slice(&[0; 64]);
    let hostile: [(&str, Vec<u8>); 7] = [
        ("PTX without its NUL", PTX[..PTX.len() - 1].to_vec()),
        ("bytes after the PTX's NUL", trailing),
        ("section headers past the buffer", elf_header(1 << 30, 4)),
        (
            "a section table running past the buffer",
            elf_header(64, 1000),
        ),
        ("a fatbin container longer than the buffer", short_fatbin),
        ("a fatbin wrapper", wrapper()),
        ("no known format", b"\x01\x02\x03\x04garbage".to_vec()),
    ];
    for (what, image) in &hostile {
        assert_eq!(
            load_module(&mut guest, image),
            INVALID_IMAGE,
            "module: {what}"
        );
        assert_eq!(
            load_library(&mut guest, image).0,
            INVALID_IMAGE,
            "library: {what}"
        );
    }
    assert_eq!(
        load_module(&mut guest, &[]),
        INVALID_IMAGE,
        "an empty image"
    );
    let log = host.driver_log();
    assert!(
        !log.contains("LoadData"),
        "a refused image reached the driver:\n{log}"
    );

    // The same client's well-formed image still loads, both ways.
    assert_eq!(load_module(&mut guest, PTX), 0);
    let (rc, library) = load_library(&mut guest, PTX);
    assert_eq!((rc, library), (0, 0x4c00));
    let log = host.driver_log();
    assert!(log.contains("cuModuleLoadData first byte 46"), "{log}");
    assert!(log.contains("cuLibraryLoadData first byte 46"), "{log}");
}

/// Loads two files through the shim, with `cuModuleLoad` and `cuLibraryLoadFromFile`.
const FILE_LOADS: &str = r#"
#include <dlfcn.h>
#include <stdio.h>
int main(int argc, char **argv) {
    void *cuda = dlopen("libcuda.so.1", RTLD_NOW);
    if (!cuda || argc < 3) return 2;
    int (*init)(unsigned) = (int (*)(unsigned))dlsym(cuda, "cuInit");
    int (*module_load)(void **, const char *) =
        (int (*)(void **, const char *))dlsym(cuda, "cuModuleLoad");
    int (*library_load)(void **, const char *, void *, void *, unsigned, void *, void *, unsigned) =
        (int (*)(void **, const char *, void *, void *, unsigned, void *, void *, unsigned))
            dlsym(cuda, "cuLibraryLoadFromFile");
    printf("init rc=%d\n", init(0));
    for (int i = 1; i < 3; i++) {
        void *m = 0, *l = 0;
        printf("%s module rc=%d library rc=%d\n", argv[i], module_load(&m, argv[i]),
               library_load(&l, argv[i], 0, 0, 0, 0, 0, 0));
    }
    return 0;
}
"#;

#[test]
fn files_are_sent_as_the_image_they_hold() {
    let host = Host::on_region("image-files")
        .region_size(16 << 20)
        .log_driver_calls()
        .start();
    // PTX without its NUL, and an ELF image followed by bytes that are not part of it: each is
    // sent as exactly its image, which the host's check accepts.
    let ptx = support::tmp("kernel.ptx");
    std::fs::write(&ptx, &PTX[..PTX.len() - 1]).expect("write ptx");
    let elf = support::tmp("kernel.cubin");
    let mut cubin = elf_header(0, 0);
    cubin.extend_from_slice(b"trailing bytes");
    std::fs::write(&elf, &cubin).expect("write cubin");
    let program = c_program("file_loads", FILE_LOADS, &["-ldl"]);
    let out = run_client(host.client(&program).arg(&ptx).arg(&elf));
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(
        lines,
        [
            "init rc=0".to_owned(),
            format!("{} module rc=0 library rc=0", ptx.display()),
            format!("{} module rc=0 library rc=0", elf.display()),
        ],
        "{}",
        out.stderr
    );
    let log = host.driver_log();
    assert_eq!(
        log.matches("cuModuleLoadData first byte").count(),
        2,
        "{log}"
    );
    assert_eq!(
        log.matches("cuLibraryLoadData first byte").count(),
        2,
        "{log}"
    );
}
