//! `cuGetExportTable`: the undocumented tables cudart asks for, served from the guest.
//!
//! Each table is a `#[repr(C)]` array of words: most start with their size in bytes (the real
//! driver's first word, recorded in `observed/*-getprocaddress.log`), followed by `extern
//! "system"` functions of the shim; context-local storage has no size word. Slots whose meaning
//! is unknown are distinct functions made by [`unknown_slot!`]: each logs "table X slot N called"
//! once and returns `CUDA_ERROR_NOT_SUPPORTED`. No slot function unwinds.
//!
//! | UUID (memory order) | module | served |
//! |---|---|---|
//! | `6bd5fb6c…` | [`cudart`] | cudart interface |
//! | `a094798c…` | [`tools_hooks`] | tools runtime callback hooks |
//! | `42d85a81…` | [`tools_tls`] | tools TLS (size word only) |
//! | `c693336e…` | [`context_storage`] | context-local storage |
//! | `263e8860…` | [`context_check`] | context checks |
//! | `d4082055…` | [`integrity_check`] | integrity check |
//! | `da9151d3…` | [`nvrtc_cache`] | the compute cache NVRTC asks for, kept in the guest ([`crate::compile_cache`]) |
//! | `21318c60…` | [`blas_streams`] | context/stream identities for cuBLAS |
//! | `1734dc26…` | [`unit_maps`] | per-unit maps for cuBLASLt (slots 4 and 13 forwarded) |
//! | `6e163fbe…` | [`tools_module`] | a module's functions, for cuFFT (slot 7) |
//! | `vgpu.special.v1` | [`vgpu_private`] | vgpu's own: host questions from vgpu's NVML facade |
//! | `f8cff951…` | — | `CUDA_ERROR_NOT_FOUND` on purpose, silently |
//!
//! Any other UUID gets `CUDA_ERROR_NOT_FOUND` and one log line naming it.

use std::collections::BTreeSet;
use std::ffi::c_void;
use std::sync::Mutex;

use cuda_headers::{CUresult, CUuuid, CuError, CuResult};

use crate::log::{log, Level};
use crate::trace;
pub use crate::trace::arg as trace_arg;

pub mod blas_streams;
pub mod context_check;
pub mod context_storage;
pub mod cudart;
pub mod integrity_check;
pub mod nvrtc_cache;
pub mod tools_hooks;
pub mod tools_module;
pub mod tools_tls;
pub mod unit_maps;
pub mod vgpu_private;

/// A table as handed out: `N` words.
#[repr(C)]
#[derive(Debug)]
pub struct ExportTable<const N: usize>(pub [*const c_void; N]);

// SAFETY: the table is immutable after initialisation and holds only code addresses and sizes.
unsafe impl<const N: usize> Sync for ExportTable<N> {}
// SAFETY: as above; nothing in it is tied to a thread.
unsafe impl<const N: usize> Send for ExportTable<N> {}

impl<const N: usize> ExportTable<N> {
    /// The table's address, as handed out.
    pub fn address(&'static self) -> *const c_void {
        self.0.as_ptr().cast()
    }

    /// The size word for a table of `N` words.
    pub const fn size_word() -> *const c_void {
        std::ptr::without_provenance(N * std::mem::size_of::<*const c_void>())
    }
}

/// One served UUID.
#[derive(Debug, Clone, Copy)]
pub struct Known {
    /// The UUID's bytes in memory order.
    pub id: [u8; 16],
    /// Its name in logs and traces.
    pub name: &'static str,
    /// The table's address.
    pub table: fn() -> *const c_void,
}

/// The UUID answered `CUDA_ERROR_NOT_FOUND` on purpose: public work reports that cudart takes
/// another module path when a driver serves it.
pub const SKIPPED: [u8; 16] = uuid("f8cff95121468b4eb9e2fb469e7c0dd9");

/// Parses 32 hex digits (memory order) at compile time.
pub const fn uuid(hex: &str) -> [u8; 16] {
    const fn digit(c: u8) -> u8 {
        match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            _ => panic!("not a lowercase hex digit"),
        }
    }
    let h = hex.as_bytes();
    assert!(h.len() == 32, "a UUID is 32 hex digits");
    let mut out = [0u8; 16];
    let mut i = 0;
    while i < 16 {
        out[i] = digit(h[2 * i]) << 4 | digit(h[2 * i + 1]);
        i += 1;
    }
    out
}

/// Every served table.
pub const KNOWN: &[Known] = &[
    cudart::KNOWN,
    tools_hooks::KNOWN,
    tools_tls::KNOWN,
    context_storage::KNOWN,
    context_check::KNOWN,
    integrity_check::KNOWN,
    nvrtc_cache::KNOWN,
    blas_streams::KNOWN,
    unit_maps::KNOWN,
    tools_module::KNOWN,
    vgpu_private::KNOWN,
];

/// `0123abcd…` for logs.
pub fn hex(id: &[u8; 16]) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

/// The table for `id`, or `None` (logging an unknown UUID once; the skipped one never).
pub fn table_for(id: &[u8; 16]) -> Option<&'static Known> {
    if let Some(known) = KNOWN.iter().find(|k| k.id == *id) {
        return Some(known);
    }
    if *id != SKIPPED && first_report_of(id) {
        log!(
            Level::Warn,
            "cuGetExportTable: unknown table {} (CUDA_ERROR_NOT_FOUND)",
            hex(id)
        );
    }
    None
}

/// Whether `id` is reported for the first time.
fn first_report_of(id: &[u8; 16]) -> bool {
    static REPORTED: Mutex<BTreeSet<[u8; 16]>> = Mutex::new(BTreeSet::new());
    REPORTED
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(*id)
}

/// `cuGetExportTable`.
///
/// # Safety
/// `ppExportTable` is valid for one write and `pExportTableId` for one read, or NULL.
///
/// # Errors
/// `CUDA_ERROR_INVALID_VALUE` for NULL arguments; `CUDA_ERROR_NOT_FOUND` for tables not served.
pub unsafe fn cuGetExportTable(
    ppExportTable: *mut *const c_void,
    pExportTableId: *const CUuuid,
) -> CuResult {
    if ppExportTable.is_null() || pExportTableId.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    // SAFETY: non-NULL and valid for one read (contract); CUuuid is plain bytes.
    let id = unsafe { (*pExportTableId).bytes }.map(|b| b as u8);
    let known = table_for(&id);
    if trace::enabled() {
        let answer = known.map_or("CUDA_ERROR_NOT_FOUND".to_owned(), |k| {
            format!("{} {:p}", k.name, (k.table)())
        });
        trace::write_line(&format!("cuGetExportTable {} -> {answer}", hex(&id)));
    }
    let known = known.ok_or(CuError::NOT_FOUND)?;
    // SAFETY: non-NULL and valid for one write (contract).
    unsafe { ppExportTable.write((known.table)()) };
    Ok(())
}

/// Runs a slot's body: traced like an export, panics become `CUDA_ERROR_UNKNOWN`.
pub fn slot(
    name: &'static str,
    describe: impl FnOnce(&mut String),
    body: impl FnOnce() -> CuResult,
) -> CUresult {
    crate::stub::guarded(name, false, describe, body)
}

/// What an unknown slot does: one log line per slot, then `CUDA_ERROR_NOT_SUPPORTED`.
pub fn unknown_slot_called(
    table: &'static str,
    index: usize,
    logged: &std::sync::atomic::AtomicBool,
) -> CUresult {
    slot(
        table,
        |out| {
            let _ = std::fmt::Write::write_fmt(out, format_args!("slot {index}"));
        },
        || {
            // No ordering needed: the flag only deduplicates a log line.
            if !logged.swap(true, std::sync::atomic::Ordering::Relaxed) {
                log!(
                    Level::Warn,
                    "export table {table} slot {index} called (unknown; CUDA_ERROR_NOT_SUPPORTED)"
                );
            }
            Err(CuError::NOT_SUPPORTED)
        },
    )
}

/// What a slot known to be called, with no known effect, does: `CUDA_SUCCESS` (0, which is also
/// a NULL pointer if the caller reads the result as one), traced like every slot.
pub fn no_op_slot_called(table: &'static str, index: usize) -> CUresult {
    slot(
        table,
        |out| {
            let _ = std::fmt::Write::write_fmt(out, format_args!("slot {index} (no-op)"));
        },
        || Ok(()),
    )
}

/// A distinct function for slot `$index` of table `$table` that real runtimes call but whose
/// effect is not known publicly and that they accept a success from: observed on the H200,
/// cuBLAS fails with CUBLAS_STATUS_NOT_SUPPORTED when tools-TLS slot 2 answers an error.
macro_rules! no_op_slot {
    ($table:literal, $index:literal) => {{
        extern "system" fn no_op() -> cuda_headers::CUresult {
            $crate::runtime_api::export_tables::no_op_slot_called($table, $index)
        }
        no_op as extern "system" fn() -> cuda_headers::CUresult as *const std::ffi::c_void
    }};
}
pub(crate) use no_op_slot;

/// A distinct function for slot `$index` of table `$table` whose meaning is unknown: it logs
/// once and returns `CUDA_ERROR_NOT_SUPPORTED`. Expands to the function's address.
macro_rules! unknown_slot {
    ($table:literal, $index:literal) => {{
        extern "system" fn unknown() -> cuda_headers::CUresult {
            static LOGGED: std::sync::atomic::AtomicBool =
                std::sync::atomic::AtomicBool::new(false);
            $crate::runtime_api::export_tables::unknown_slot_called($table, $index, &LOGGED)
        }
        unknown as extern "system" fn() -> cuda_headers::CUresult as *const std::ffi::c_void
    }};
}
pub(crate) use unknown_slot;

/// A table built once, on first use: `$words` words, its size word first, `$index => $entry` at
/// the slots served and a distinct [`unknown_slot!`] at every other index. The filler indices
/// `1 … $words - 1` are spelled out (each filler is a function of its own); a wrong count does
/// not compile. Expands to the table's address.
macro_rules! sparse_table {
    ($table:literal, $words:literal, fillers [$($i:literal)*],
     { $($index:literal => $entry:expr),* $(,)? }) => {{
        const WORDS: usize = $words;
        static TABLE: std::sync::OnceLock<$crate::runtime_api::export_tables::ExportTable<WORDS>> =
            std::sync::OnceLock::new();
        TABLE
            .get_or_init(|| {
                let mut words: [*const std::ffi::c_void; WORDS] = [
                    std::ptr::null(),
                    $($crate::runtime_api::export_tables::unknown_slot!($table, $i)),*
                ];
                words[0] = $crate::runtime_api::export_tables::ExportTable::<WORDS>::size_word();
                $( words[$index] = $entry; )*
                $crate::runtime_api::export_tables::ExportTable(words)
            })
            .address()
    }};
}
pub(crate) use sparse_table;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_tables_have_their_observed_size_words() {
        // First words the real driver had (observed logs); c693336e starts with a function.
        let expected: &[(&str, Option<usize>)] = &[
            ("6bd5fb6c5bf4e74a8987d93912fd9df9", Some(104)),
            ("a094798c2e742e7493f20800200c0a66", Some(56)),
            ("42d85a8123f6cb478298f6e78a3aecdc", Some(24)),
            ("c693336e1121df11a8c368f355d89593", None),
            ("263e88607cd2614392f6bbd5006dfa7e", Some(120)),
            ("d4082055bde6704b8d34ba123c66e1f2", Some(24)),
            ("da9151d33ae6cc41a5c04f26d533e328", Some(56)),
            ("21318c60971432488ca641ff7324c8f2", Some(744)),
            ("1734dc26800d47458726c0f1e7dd8bca", Some(136)),
            ("6e163fbeb958444d835ce182aff1991e", Some(792)),
            ("766770752e7370656369616c2e763100", Some(16)),
        ];
        assert_eq!(expected.len(), KNOWN.len());
        for (id, size) in expected {
            let known = table_for(&uuid(id)).expect("served");
            // SAFETY: every table has at least one word.
            let first = unsafe { *(known.table)().cast::<usize>() };
            match size {
                Some(s) => assert_eq!(first, *s, "{id}"),
                None => assert!(first > 4096, "{id} starts with a function"),
            }
        }
        assert!(table_for(&SKIPPED).is_none());
        assert!(table_for(&[0xab; 16]).is_none());
    }

    #[test]
    fn unknown_uuid_is_reported_once() {
        let id = [0x5a; 16];
        assert!(first_report_of(&id));
        assert!(!first_report_of(&id));
    }

    #[test]
    fn unknown_slots_return_not_supported() {
        let f: *const c_void = unknown_slot!("test-table", 3);
        // SAFETY: the macro made an `extern "system" fn() -> CUresult`.
        let f: extern "system" fn() -> CUresult = unsafe { std::mem::transmute(f) };
        assert_eq!(f(), CUresult::CUDA_ERROR_NOT_SUPPORTED);
        assert_eq!(f(), CUresult::CUDA_ERROR_NOT_SUPPORTED);
    }

    #[test]
    fn cu_get_export_table_checks_arguments() {
        let mut table = std::ptr::null();
        let id = CUuuid {
            bytes: SKIPPED.map(|b| b as std::ffi::c_char),
        };
        // SAFETY: valid pointers.
        let r = unsafe { cuGetExportTable(&mut table, &id) };
        assert_eq!(r, Err(CuError::NOT_FOUND));
        // SAFETY: NULL is checked first.
        let r = unsafe { cuGetExportTable(std::ptr::null_mut(), &id) };
        assert_eq!(r, Err(CuError::INVALID_VALUE));
    }
}
