//! `da9151d3-3ae6-cc41-a5c0-4f26d533e328`: asked for by NVRTC (so by CuPy, cuDNN's runtime-compiled
//! engines, Triton and `torch.compile`); 7 words, the real driver's first word is 56, a size word.
//!
//! Slot 1 is the one NVRTC calls, twice per `nvrtcCompileProgram`, observed on the H200 with the
//! export-table spy (`scripts/gpu-nvrtc-probe.sh`, driver 580.159.04, NVRTC 13.0):
//!
//! | argument | what it held |
//! |---|---|
//! | 0 | a pointer to NVRTC's own stack state |
//! | 1 | the stage: 2 with libNVVM's options (`-arch=compute_90 -ftz=0 … -nvvm-version=nvvm70`), then 1 with `-arch=sm_90` |
//! | 2, 3 | the program's LLVM bitcode (`BC 0xC0DE`) and its length |
//! | 4 | the stage's options, NUL-terminated |
//! | 5 | NVRTC's build identity (`HOST64`, its build date) |
//!
//! The real driver answered 1 to every call and changed none of the bytes behind the arguments.
//! What the call buys is the driver's compute cache: the same compile took 11.8 ms natively,
//! 29.5 ms with `CUDA_CACHE_DISABLE=1`, and 26.8 ms when the spy answered 1 without calling the
//! driver, with the same cubin each time (`SPY_FAIL`). Any other answer costs more (801:
//! 37.6 ms, 100: 30.7 ms), which is what the shim's old `CUDA_ERROR_NOT_SUPPORTED` did.
//!
//! The shim answers slot 1 as a driver without a usable cache entry does: 1, touching nothing,
//! so NVRTC compiles the program itself and its output is unchanged. How the driver hands a
//! cached result back to NVRTC is not known (nothing observable changed in the arguments), so
//! no cache is served; docs/runtime-api.md says so. Slots 2–6 were never called by NVRTC, CuPy,
//! PyTorch or cuDNN in any trace, and stay [`unknown_slot!`]s that log their index once.

use std::ffi::c_void;

use super::{slot, unknown_slot, ExportTable, Known};

/// The answer the real driver gave to every slot-1 call (a full register: NVRTC reads `rax`).
pub const COMPILE_CACHE_MISS: u64 = 1;

/// Slot 1: NVRTC's compile-cache question, answered as a miss. Traced like every slot.
extern "system" fn compile_cache(
    state: *mut c_void,
    stage: u64,
    bitcode: *const c_void,
    length: u64,
    options: *const c_void,
    build: *const c_void,
) -> u64 {
    let _ = slot(
        "da9151d3[1] compile_cache",
        |out| {
            super::trace_arg(out, "state", &state);
            super::trace_arg(out, "stage", &stage);
            super::trace_arg(out, "bitcode", &bitcode);
            super::trace_arg(out, "length", &length);
            super::trace_arg(out, "options", &options);
            super::trace_arg(out, "build", &build);
        },
        || Ok(()),
    );
    COMPILE_CACHE_MISS
}

/// The table.
pub static TABLE: ExportTable<7> = ExportTable([
    ExportTable::<7>::size_word(),
    compile_cache as extern "system" fn(_, _, _, _, _, _) -> u64 as *const c_void,
    unknown_slot!("da9151d3", 2),
    unknown_slot!("da9151d3", 3),
    unknown_slot!("da9151d3", 4),
    unknown_slot!("da9151d3", 5),
    unknown_slot!("da9151d3", 6),
]);

/// Its registry entry.
pub const KNOWN: Known = Known {
    id: super::uuid("da9151d33ae6cc41a5c04f26d533e328"),
    name: "da9151d3-nvrtc",
    table: || TABLE.address(),
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_one_answers_a_cache_miss_and_touches_nothing() {
        let mut state = [0u8; 64];
        let bitcode = *b"BC\xc0\xde\x35\x14\x00\x00";
        let options = *b"-arch=sm_90\0";
        let build = *b"HOST64\0";
        let before = state;
        let answer = compile_cache(
            state.as_mut_ptr().cast(),
            1,
            bitcode.as_ptr().cast(),
            bitcode.len() as u64,
            options.as_ptr().cast(),
            build.as_ptr().cast(),
        );
        assert_eq!(answer, COMPILE_CACHE_MISS);
        assert_eq!(state, before);
        // The table hands out this very function in slot 1.
        assert_eq!(
            TABLE.0[1],
            compile_cache as extern "system" fn(_, _, _, _, _, _) -> u64 as *const c_void
        );
    }
}
