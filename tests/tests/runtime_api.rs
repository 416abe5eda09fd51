//! The runtime entry points of the built shim (docs/runtime-api.md), loaded with `dlopen` into
//! this process, without a GPU and without a host:
//!
//! - every `cuGetProcAddress_v2` request the observed cudart 13 stacks made is answered with the
//!   address of the shim's own export of the symbol the real driver handed out (checked against
//!   the committed probe output, parsed here independently of the generated table);
//! - a name the driver does not know gets `CUDA_SUCCESS`, NULL and SYMBOL_NOT_FOUND, as the
//!   probed driver answered;
//! - `cuGetErrorName`/`cuGetErrorString` give exactly the observed driver's name and string for
//!   all 101 codes of `errstrings-580.159.04.tsv`, and an unknown code gets INVALID_VALUE and NULL;
//! - every table they asked `cuGetExportTable` for is served with the real driver's first word;
//! - context-local storage put/get/delete through the table's slots;
//! - an unknown UUID logs one line naming it (child process);
//! - `VGPU_TRACE=<file>` logs calls, lookups and UUIDs (child process).

use std::collections::BTreeMap;
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use vgpu_tests::{shim_library, workspace_root};

#[repr(C)]
struct DlInfo {
    dli_fname: *const c_char,
    dli_fbase: *mut c_void,
    dli_sname: *const c_char,
    dli_saddr: *mut c_void,
}

extern "C" {
    fn dlopen(filename: *const c_char, flags: c_int) -> *mut c_void;
    fn dlsym(handle: *mut c_void, symbol: *const c_char) -> *mut c_void;
    fn dlerror() -> *const c_char;
    fn dladdr(addr: *const c_void, info: *mut DlInfo) -> c_int;
}

const RTLD_NOW: c_int = 2;
const RTLD_LOCAL: c_int = 0;

type GetProcAddressV2 =
    unsafe extern "C" fn(*const c_char, *mut *mut c_void, c_int, u64, *mut c_int) -> c_int;
type GetProcAddress = unsafe extern "C" fn(*const c_char, *mut *mut c_void, c_int, u64) -> c_int;
type GetExportTable = unsafe extern "C" fn(*mut *const c_void, *const [u8; 16]) -> c_int;

const CUDA_SUCCESS: c_int = 0;
const CUDA_ERROR_INVALID_VALUE: c_int = 1;
const CUDA_ERROR_INVALID_HANDLE: c_int = 400;
const CUDA_ERROR_NOT_FOUND: c_int = 500;
const CUDA_ERROR_NOT_SUPPORTED: c_int = 801;

/// The shim, loaded once into this process.
struct Shim {
    handle: usize,
    path: PathBuf,
}

fn shim() -> &'static Shim {
    static SHIM: OnceLock<Shim> = OnceLock::new();
    SHIM.get_or_init(|| {
        let path = std::env::var_os("VGPU_SHIM_PATH")
            .map_or_else(|| shim_library().to_path_buf(), PathBuf::from);
        let c = CString::new(path.as_os_str().as_encoded_bytes()).expect("path");
        // SAFETY: a NUL-terminated path; the shim has no constructor.
        let handle = unsafe { dlopen(c.as_ptr(), RTLD_NOW | RTLD_LOCAL) };
        if handle.is_null() {
            // SAFETY: dlerror returns a NUL-terminated message after a failure.
            let why = unsafe { CStr::from_ptr(dlerror()) }.to_string_lossy();
            panic!("dlopen {}: {why}", path.display());
        }
        Shim {
            handle: handle as usize,
            path,
        }
    })
}

impl Shim {
    fn symbol(&self, name: &str) -> usize {
        let c = CString::new(name).expect("name");
        // SAFETY: a live handle and a NUL-terminated name.
        unsafe { dlsym(self.handle as *mut c_void, c.as_ptr()) as usize }
    }

    /// # Safety
    /// `T` must be the function type of the export `name`.
    unsafe fn function<T: Copy>(&self, name: &str) -> T {
        let address = self.symbol(name);
        assert_ne!(address, 0, "the shim exports {name}");
        assert_eq!(std::mem::size_of::<T>(), std::mem::size_of::<usize>());
        // SAFETY: the caller names the right type; sizes checked above.
        unsafe { std::mem::transmute_copy(&address) }
    }

    fn owns(&self, address: usize) -> bool {
        let mut info = DlInfo {
            dli_fname: std::ptr::null(),
            dli_fbase: std::ptr::null_mut(),
            dli_sname: std::ptr::null(),
            dli_saddr: std::ptr::null_mut(),
        };
        // SAFETY: `info` is valid for writes; dladdr only inspects the address.
        if unsafe { dladdr(address as *const c_void, &mut info) } == 0 || info.dli_fname.is_null() {
            return false;
        }
        // SAFETY: dladdr filled a NUL-terminated path.
        let file = unsafe { CStr::from_ptr(info.dli_fname) }.to_string_lossy();
        std::fs::canonicalize(&*file).ok() == std::fs::canonicalize(&self.path).ok()
    }
}

fn observed_dir() -> PathBuf {
    let beside = workspace_root().join("../shared/observed");
    if beside.is_dir() {
        beside
    } else {
        PathBuf::from("/work/shared/observed")
    }
}

fn observed_logs() -> Vec<(String, String)> {
    let mut logs: Vec<(String, String)> = std::fs::read_dir(observed_dir())
        .expect("observed/ exists")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("cudart13-") && n.ends_with("-getprocaddress.log"))
        })
        .map(|p| {
            let text = std::fs::read_to_string(&p).expect("readable log");
            (p.display().to_string(), text)
        })
        .collect();
    logs.sort();
    assert_eq!(logs.len(), 3, "the three observed cudart 13 logs");
    logs
}

/// `GPA2 <name> ver=<v> flags=<f> r=<r> …` → (name, version, flags, the driver's result); the
/// name may be empty.
fn requests(log: &str) -> Vec<(String, i32, u64, c_int)> {
    log.lines()
        .filter_map(|line| line.strip_prefix("GPA2 "))
        .map(|rest| {
            let (name, rest) = rest.split_once(' ').expect("name field");
            let field = |key: &str| {
                rest.split_whitespace()
                    .find_map(|f| f.strip_prefix(key))
                    .unwrap_or_else(|| panic!("{key} in `{rest}`"))
                    .to_owned()
            };
            (
                name.to_owned(),
                field("ver=").parse().expect("version"),
                field("flags=").parse().expect("flags"),
                field("r=").parse().expect("result"),
            )
        })
        .collect()
}

/// The probe's first pass: (name, flag) → breakpoints (from_version, answer text).
fn probe_table() -> BTreeMap<(String, u64), Vec<(i32, String)>> {
    let path = workspace_root().join("cuda-headers/probe/proc-address-580.159.04.txt");
    let text = std::fs::read_to_string(&path).expect("committed probe output");
    let mut table: BTreeMap<(String, u64), Vec<(i32, String)>> = BTreeMap::new();
    let mut passes = 0;
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        match f.as_slice() {
            ["pass", _] => passes += 1,
            [name, flag, from, answer] if passes == 1 => table
                .entry(((*name).to_owned(), flag.parse().expect("flag")))
                .or_default()
                .push((from.parse().expect("version"), (*answer).to_owned())),
            _ => {}
        }
    }
    table
}

/// What the real driver answered: Some(symbol) or None for NULL.
fn expected(
    table: &BTreeMap<(String, u64), Vec<(i32, String)>>,
    name: &str,
    version: i32,
    flags: u64,
) -> Option<Option<String>> {
    let rows = table.get(&(name.to_owned(), flags))?;
    let row = rows.iter().rev().find(|(from, _)| *from <= version);
    Some(match row {
        Some((_, answer)) if !answer.starts_with('-') => Some(answer.clone()),
        _ => None,
    })
}

#[test]
fn every_observed_lookup_gets_the_shims_own_export_of_the_drivers_symbol() {
    let shim = shim();
    let table = probe_table();
    // SAFETY: the exports have these C signatures.
    let (v2, v1): (GetProcAddressV2, GetProcAddress) = unsafe {
        (
            shim.function("cuGetProcAddress_v2"),
            shim.function("cuGetProcAddress"),
        )
    };
    let mut checked = 0;
    for (file, log) in observed_logs() {
        let requests = requests(&log);
        assert!(requests.len() > 400, "{file}: {} requests", requests.len());
        for (name, version, flags, driver_result) in requests {
            let c = CString::new(name.clone()).expect("name");
            let mut pfn: *mut c_void = std::ptr::null_mut();
            let mut status: c_int = -1;
            // SAFETY: valid string and out-pointers.
            let r = unsafe { v2(c.as_ptr(), &mut pfn, version, flags, &mut status) };
            let mut pfn_v1: *mut c_void = std::ptr::null_mut();
            // SAFETY: as above, without a status.
            let r_v1 = unsafe { v1(c.as_ptr(), &mut pfn_v1, version, flags) };
            assert_eq!((r, pfn), (r_v1, pfn_v1), "v1 and v2 agree for {name}");
            assert_eq!(r, driver_result, "{name:?} v{version}: the driver's result");
            match expected(&table, &name, version, flags) {
                Some(Some(symbol)) => {
                    assert_eq!((r, status), (CUDA_SUCCESS, 0), "{name} {version} {flags}");
                    assert_eq!(
                        pfn as usize,
                        shim.symbol(&symbol),
                        "{name} v{version} flags {flags} should be the shim's {symbol}"
                    );
                    assert!(shim.owns(pfn as usize), "{symbol} lies in the shim");
                    checked += 1;
                }
                Some(None) => {
                    assert!(pfn.is_null(), "{name}: NULL as the driver gave");
                    assert!(status == 1 || status == 2, "{name}: status {status}");
                }
                None => {
                    assert_eq!(
                        (r, status, pfn),
                        (CUDA_SUCCESS, 1, std::ptr::null_mut()),
                        "{name:?} is unknown to the driver: NULL and SYMBOL_NOT_FOUND"
                    );
                }
            }
        }
    }
    assert!(checked > 1200, "only {checked} lookups resolved");
}

/// What the probed driver answered for the names its lookup lacked (`cuEGLApiInit 0 2000 -1/0` in
/// the probe) and for cudart's `""` (`r=0` in the logs): `CUDA_SUCCESS`, NULL, SYMBOL_NOT_FOUND,
/// through both entry points, before any host exists.
#[test]
fn unknown_names_get_success_and_null() {
    // SAFETY: the exports have these C signatures.
    let (v2, v1): (GetProcAddressV2, GetProcAddress) = unsafe {
        (
            shim().function("cuGetProcAddress_v2"),
            shim().function("cuGetProcAddress"),
        )
    };
    for name in [c"cuNoSuchThing", c"", c"cuEGLApiInit", c"cuMemGetAttribute"] {
        for flags in 0..=2 {
            let mut pfn: *mut c_void = std::ptr::dangling_mut::<c_void>();
            let mut status: c_int = 0;
            // SAFETY: valid string and out-pointers.
            let r = unsafe { v2(name.as_ptr(), &mut pfn, 13000, flags, &mut status) };
            assert_eq!(
                (r, status, pfn),
                (CUDA_SUCCESS, 1, std::ptr::null_mut()),
                "{name:?} flags {flags}"
            );
            let mut pfn: *mut c_void = std::ptr::dangling_mut::<c_void>();
            // SAFETY: as above, without a status.
            let r = unsafe { v1(name.as_ptr(), &mut pfn, 13000, flags) };
            assert_eq!((r, pfn), (CUDA_SUCCESS, std::ptr::null_mut()), "{name:?}");
        }
    }
    let mut pfn: *mut c_void = std::ptr::dangling_mut::<c_void>();
    // SAFETY: valid arguments; a NULL status is allowed (cudart passes NULL).
    let r = unsafe { v2(c"".as_ptr(), &mut pfn, 0, 0, std::ptr::null_mut()) };
    assert_eq!(
        (r, pfn),
        (CUDA_SUCCESS, std::ptr::null_mut()),
        "cudart's first lookup"
    );
}

#[test]
fn bad_lookups_are_refused_cleanly() {
    // SAFETY: the export has this signature.
    let v2: GetProcAddressV2 = unsafe { shim().function("cuGetProcAddress_v2") };
    let mut pfn: *mut c_void = std::ptr::dangling_mut::<c_void>();
    // SAFETY: valid arguments; NULL status is allowed.
    let r = unsafe { v2(c"cuInit".as_ptr(), &mut pfn, 13000, 7, std::ptr::null_mut()) };
    assert_eq!(r, CUDA_ERROR_INVALID_VALUE, "flags 7");
    let mut status = -1;
    // SAFETY: valid arguments: cuArrayGetPlane appeared in 11.2.
    let r = unsafe { v2(c"cuArrayGetPlane".as_ptr(), &mut pfn, 11000, 0, &mut status) };
    assert_eq!((r, status, pfn), (CUDA_SUCCESS, 2, std::ptr::null_mut()));
    // SAFETY: NULL symbol is refused before use.
    let r = unsafe { v2(std::ptr::null(), &mut pfn, 13000, 0, &mut status) };
    assert_eq!(r, CUDA_ERROR_INVALID_VALUE);
}

type GetErrorText = unsafe extern "C" fn(c_int, *mut *const c_char) -> c_int;

/// The observed file itself (not the repository's copy): `code<TAB>name<TAB>string` per line.
#[test]
fn error_names_and_strings_are_the_observed_drivers() {
    let path = observed_dir().join("errstrings-580.159.04.tsv");
    let text = std::fs::read_to_string(&path).expect("the observed error strings");
    // SAFETY: the exports have this signature.
    let (name, string): (GetErrorText, GetErrorText) = unsafe {
        (
            shim().function("cuGetErrorName"),
            shim().function("cuGetErrorString"),
        )
    };
    let ask = |f: GetErrorText, code: c_int| {
        let mut out: *const c_char = c"untouched".as_ptr();
        // SAFETY: a valid out-pointer.
        let r = unsafe { f(code, &mut out) };
        // SAFETY: the shim stores NULL or a static NUL-terminated string.
        let text =
            (!out.is_null()).then(|| unsafe { CStr::from_ptr(out) }.to_str().map(str::to_owned));
        (r, text)
    };
    let mut codes = 0;
    for line in text.lines() {
        let f: Vec<&str> = line.split('\t').collect();
        assert_eq!(f.len(), 3, "{line:?}");
        let code: c_int = f[0].parse().expect("code");
        assert_eq!(ask(name, code), (CUDA_SUCCESS, Some(Ok(f[1].to_owned()))));
        assert_eq!(ask(string, code), (CUDA_SUCCESS, Some(Ok(f[2].to_owned()))));
        codes += 1;
    }
    assert_eq!(codes, 101);
    for unknown in [9, 1000, 123_456] {
        assert_eq!(ask(name, unknown), (CUDA_ERROR_INVALID_VALUE, None));
        assert_eq!(ask(string, unknown), (CUDA_ERROR_INVALID_VALUE, None));
    }
}

/// `EXPORT <uuid> r=<r> first=<word>` lines of the observed logs.
fn observed_tables() -> BTreeMap<String, u64> {
    let mut tables = BTreeMap::new();
    for (_, log) in observed_logs() {
        for line in log.lines().filter_map(|l| l.strip_prefix("EXPORT ")) {
            let f: Vec<&str> = line.split_whitespace().collect();
            let first: u64 = f[2]
                .strip_prefix("first=")
                .and_then(|v| v.parse().ok())
                .expect("first word");
            tables.insert(f[0].to_owned(), first);
        }
    }
    tables
}

fn uuid(hex: &str) -> [u8; 16] {
    let mut out = [0u8; 16];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("hex");
    }
    out
}

fn export_table(hex: &str) -> (c_int, *const usize) {
    // SAFETY: the export has this signature.
    let get: GetExportTable = unsafe { shim().function("cuGetExportTable") };
    let mut table: *const c_void = std::ptr::null();
    // SAFETY: valid out-pointer and id.
    let r = unsafe { get(&mut table, &uuid(hex)) };
    (r, table.cast())
}

#[test]
fn every_observed_table_is_served_with_the_drivers_first_word() {
    let tables = observed_tables();
    assert_eq!(tables.len(), 8, "{tables:?}");
    for (hex, first) in &tables {
        let (r, table) = export_table(hex);
        match hex.as_str() {
            "f8cff95121468b4eb9e2fb469e7c0dd9" => assert_eq!(r, CUDA_ERROR_NOT_FOUND),
            "c693336e1121df11a8c368f355d89593" => {
                assert_eq!(r, CUDA_SUCCESS);
                // SAFETY: a served table has at least one word.
                let word = unsafe { *table };
                assert!(shim().owns(word), "slot 0 is a shim function");
                assert!(*first > 4096, "the driver's slot 0 was a pointer too");
            }
            _ => {
                assert_eq!(r, CUDA_SUCCESS, "{hex}");
                // SAFETY: a served table has at least one word.
                let word = unsafe { *table } as u64;
                assert_eq!(word, *first, "{hex}: size word");
                let words = (word / 8) as usize;
                for i in 1..words {
                    // SAFETY: the size word says the table has `words` words.
                    let slot = unsafe { *table.add(i) };
                    assert!(shim().owns(slot), "{hex} slot {i} is a shim function");
                }
            }
        }
    }
    let (r, _) = export_table("00112233445566778899aabbccddeeff");
    assert_eq!(r, CUDA_ERROR_NOT_FOUND);
}

type Put = unsafe extern "C" fn(
    usize,
    usize,
    usize,
    Option<unsafe extern "C" fn(usize, usize, usize)>,
) -> c_int;
type Delete = unsafe extern "C" fn(usize, usize) -> c_int;
type Get = unsafe extern "C" fn(*mut usize, usize, usize) -> c_int;

#[test]
fn context_local_storage_through_the_table() {
    let (r, table) = export_table("c693336e1121df11a8c368f355d89593");
    assert_eq!(r, CUDA_SUCCESS);
    // SAFETY: slots 0..3 are put, delete, get with these signatures (docs/runtime-api.md).
    let (put, delete, get): (Put, Delete, Get) = unsafe {
        (
            std::mem::transmute::<usize, Put>(*table),
            std::mem::transmute::<usize, Delete>(*table.add(1)),
            std::mem::transmute::<usize, Get>(*table.add(2)),
        )
    };
    let (ctx, key) = (0x00c0_ffee_usize, 0x006b_6579_usize);
    let mut value = 0usize;
    // SAFETY: valid out-pointer; the context handle is opaque and non-NULL.
    unsafe {
        assert_eq!(get(&mut value, ctx, key), CUDA_ERROR_INVALID_HANDLE);
        assert_eq!(put(ctx, key, 0xabc, None), CUDA_SUCCESS);
        assert_eq!(get(&mut value, ctx, key), CUDA_SUCCESS);
        assert_eq!(value, 0xabc);
        assert_eq!(get(&mut value, ctx + 1, key), CUDA_ERROR_INVALID_HANDLE);
        assert_eq!(delete(ctx, key), CUDA_SUCCESS);
        assert_eq!(get(&mut value, ctx, key), CUDA_ERROR_INVALID_HANDLE);
    }
    // An unknown slot answers NOT_SUPPORTED.
    // SAFETY: slot 3 is an unknown-slot function taking nothing.
    let unknown: unsafe extern "C" fn() -> c_int = unsafe { std::mem::transmute(*table.add(3)) };
    // SAFETY: takes no arguments.
    assert_eq!(unsafe { unknown() }, CUDA_ERROR_NOT_SUPPORTED);
}

// ---- child processes: stderr and trace files -------------------------------------------------

const CHILD: &str = "RUNTIME_API_TEST_CHILD";

/// Runs `child_entry` of this test binary in a fresh process with `env`; (stdout, stderr).
fn run_child(role: &str, env: &[(&str, &Path)]) -> (String, String) {
    let exe = std::env::current_exe().expect("test binary");
    let mut command = Command::new(exe);
    command
        .args(["--exact", "child_entry", "--nocapture", "--test-threads=1"])
        .env(CHILD, role)
        .env("VGPU_SHIM_PATH", shim_library())
        .env_remove("VGPU_HOST")
        .env_remove("VGPU_REGION")
        .env_remove("VGPU_LOG")
        .env_remove("VGPU_TRACE");
    for (k, v) in env {
        command.env(k, v);
    }
    let out = command.output().expect("run child");
    assert!(out.status.success(), "child {role} failed: {out:?}");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The child's side; does nothing in a normal test run.
#[test]
fn child_entry() {
    let Ok(role) = std::env::var(CHILD) else {
        return;
    };
    match role.as_str() {
        "unknown-uuid" => {
            for _ in 0..3 {
                let (r, _) = export_table("0123456789abcdef0123456789abcdef");
                assert_eq!(r, CUDA_ERROR_NOT_FOUND);
            }
            let (r, _) = export_table("f8cff95121468b4eb9e2fb469e7c0dd9");
            assert_eq!(r, CUDA_ERROR_NOT_FOUND);
        }
        "trace" => {
            // SAFETY: the exports have these signatures.
            let (v2, name): (
                GetProcAddressV2,
                unsafe extern "C" fn(c_int, *mut *const c_char) -> c_int,
            ) = unsafe {
                (
                    shim().function("cuGetProcAddress_v2"),
                    shim().function("cuGetErrorName"),
                )
            };
            let mut pfn = std::ptr::null_mut();
            let mut text = std::ptr::null();
            // SAFETY: valid arguments.
            unsafe {
                assert_eq!(
                    v2(
                        c"cuMemAlloc".as_ptr(),
                        &mut pfn,
                        3020,
                        0,
                        std::ptr::null_mut()
                    ),
                    0
                );
                assert_eq!(name(100, &mut text), 0);
            }
            let (r, _) = export_table("d4082055bde6704b8d34ba123c66e1f2");
            assert_eq!(r, CUDA_SUCCESS);
        }
        "compile-cache" => compile_cache_child(),
        other => panic!("unknown child role {other}"),
    }
}

// ---- the compute cache NVRTC asks for (table da9151d3) ----------------------------------------

type MakeKey = unsafe extern "C" fn(
    *mut usize,
    u32,
    *const u8,
    u32,
    *const c_char,
    *const c_char,
    *const c_char,
    u32,
    u32,
) -> c_int;
type CacheGet = unsafe extern "C" fn(usize, u32, *mut *mut u8, *mut u32) -> c_int;
type CachePut = unsafe extern "C" fn(usize, u32, *const u8, u32) -> c_int;
type FreeOne = unsafe extern "C" fn(usize) -> c_int;

const PROGRAM: &[u8] = b"BC\xc0\xde\x35\x14\x00\x00 runtime_api test program";
const CUBIN: &[u8] = b"\x7fELF the cubin NVRTC compiled";

/// One `nvrtcCompileProgram`'s use of the table, in NVRTC 13.0's order: a key for stage 1, a
/// lookup, and on a miss a store of the output. Prints `compile-cache: hit`, `… miss` or `… no key <code>`.
fn compile_cache_child() {
    let (r, table) = export_table("da9151d33ae6cc41a5c04f26d533e328");
    assert_eq!(r, CUDA_SUCCESS);
    // SAFETY: slots 1-4 and 6 have these signatures (shim/src/runtime_api/export_tables/nvrtc_cache.rs).
    let (make, free_key, get, put, delete): (MakeKey, FreeOne, CacheGet, CachePut, FreeOne) = unsafe {
        (
            std::mem::transmute::<usize, MakeKey>(*table.add(1)),
            std::mem::transmute::<usize, FreeOne>(*table.add(2)),
            std::mem::transmute::<usize, CacheGet>(*table.add(3)),
            std::mem::transmute::<usize, CachePut>(*table.add(4)),
            std::mem::transmute::<usize, FreeOne>(*table.add(6)),
        )
    };
    let mut key = 0usize;
    // SAFETY: valid out-pointer, bitcode and NUL-terminated strings.
    let r = unsafe {
        make(
            &mut key,
            1,
            PROGRAM.as_ptr(),
            PROGRAM.len() as u32,
            c" -arch=sm_90".as_ptr(),
            c"HOST64".as_ptr(),
            c"Aug 20 202514:13:52".as_ptr(),
            0,
            1,
        )
    };
    if r != CUDA_SUCCESS {
        assert_eq!(key, 0, "no key is handed out with an error");
        println!("\ncompile-cache: no key {r}");
        return;
    }
    let (mut output, mut size) = (std::ptr::null_mut(), 0u32);
    // SAFETY: a key from `make`, valid out-pointers.
    match unsafe { get(key, 0, &mut output, &mut size) } {
        CUDA_SUCCESS => {
            // SAFETY: `get` handed out `size` bytes.
            let got = unsafe { std::slice::from_raw_parts(output, size as usize) };
            assert_eq!(got, CUBIN);
            // SAFETY: the block `get` handed out, freed once.
            assert_eq!(unsafe { delete(output as usize) }, CUDA_SUCCESS);
            println!("\ncompile-cache: hit");
        }
        CUDA_ERROR_NOT_FOUND => {
            // SAFETY: a key from `make` and the output's bytes.
            assert_eq!(
                unsafe { put(key, 0, CUBIN.as_ptr(), CUBIN.len() as u32) },
                CUDA_SUCCESS
            );
            println!("\ncompile-cache: miss");
        }
        other => panic!("get answered {other}"),
    }
    // SAFETY: a key from `make`, freed once.
    assert_eq!(unsafe { free_key(key) }, CUDA_SUCCESS);
}

#[test]
fn nvrtc_compile_outputs_are_kept_across_processes() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("runtime-api-compile-cache");
    let _ = std::fs::remove_dir_all(&dir);
    let cache = dir.join("cache");
    let home = dir.join("home");
    let with = |extra: &[(&str, &Path)]| {
        let mut env = vec![
            ("HOME", home.as_path()),
            ("VGPU_COMPILE_CACHE", cache.as_path()),
        ];
        env.extend_from_slice(extra);
        run_child("compile-cache", &env).0
    };
    let answer = |out: String| {
        out.lines()
            .find_map(|l| l.strip_prefix("compile-cache: "))
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(answer(with(&[])), "miss");
    assert_eq!(
        answer(with(&[])),
        "hit",
        "a second process finds the first one's output"
    );
    let files: Vec<_> = std::fs::read_dir(&cache)
        .expect("the cache directory")
        .collect();
    assert_eq!(files.len(), 1, "one file per output");
    // The driver's switch turns it off; nothing is read or written.
    assert_eq!(
        answer(with(&[("CUDA_CACHE_DISABLE", Path::new("1"))])),
        "no key 801"
    );
    // Memory only: a fresh process misses, and writes nothing anywhere.
    std::fs::remove_dir_all(&cache).expect("cleared");
    assert_eq!(
        answer(with(&[("VGPU_COMPILE_CACHE", Path::new("memory"))])),
        "miss"
    );
    assert!(!cache.exists() && !home.exists());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_unknown_uuid_logs_one_line_naming_it() {
    let (_, stderr) = run_child("unknown-uuid", &[]);
    let lines: Vec<&str> = stderr.lines().filter(|l| l.contains("vgpu-cuda")).collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(
        lines[0].contains("0123456789abcdef0123456789abcdef"),
        "{}",
        lines[0]
    );
    assert!(!stderr.contains("f8cff951"), "the skipped table is silent");
}

#[test]
fn trace_mode_writes_calls_lookups_and_tables_to_the_file() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("runtime-api-trace");
    std::fs::create_dir_all(&dir).expect("scratch dir");
    let file = dir.join("trace.log");
    let _ = std::fs::remove_file(&file);
    let (_, stderr) = run_child("trace", &[("VGPU_TRACE", &file)]);
    let trace = std::fs::read_to_string(&file).expect("the trace file was written");
    let has = |needle: &str| {
        assert!(
            trace
                .lines()
                .any(|l| l.starts_with("vgpu-trace[") && l.contains(needle)),
            "no line with {needle:?} in:\n{trace}"
        )
    };
    has("cuGetProcAddress cuMemAlloc version=3020 flags=0 -> cuMemAlloc_v2 0x");
    has("cuGetProcAddress_v2(symbol=0x");
    has("cudaVersion=3020, flags=0, symbolStatus=0x0) -> CUDA_SUCCESS ");
    has("cuGetErrorName(error=cudaError_enum(100), pStr=0x");
    has("cuGetExportTable d4082055bde6704b8d34ba123c66e1f2 -> integrity-check 0x");
    has("cuGetExportTable(ppExportTable=0x");
    // A call's line ends in its duration, its round trips (when any) and its start time:
    // `-> RESULT 1.25us [rt=N] @0.000123`.
    assert!(
        trace.lines().filter(|l| l.contains(") -> ")).all(|l| {
            let (_, tail) = l.rsplit_once(" -> ").expect("a result");
            let words: Vec<&str> = tail.split(' ').collect();
            words.len() >= 3
                && words[1]
                    .strip_suffix("us")
                    .is_some_and(|d| d.parse::<f64>().is_ok())
                && words[words.len() - 1]
                    .strip_prefix('@')
                    .is_some_and(|t| t.parse::<f64>().is_ok())
        }),
        "{trace}"
    );
    assert!(
        !stderr.contains("vgpu-trace"),
        "file mode writes nothing to stderr"
    );

    let (_, stderr) = run_child("trace", &[("VGPU_TRACE", Path::new("1"))]);
    assert!(
        stderr.contains("vgpu-trace["),
        "VGPU_TRACE=1 writes to stderr: {stderr}"
    );
}
