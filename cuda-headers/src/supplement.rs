// Hand-written: driver exports that no header in the pinned wheel declares. Each entry says where its
// signature came from. The shim macros read this file together with `generated/cuda.rs`.
//
// An entry whose real parameters are unknown is declared without parameters: under the x86-64 System V
// calling convention a callee that ignores its arguments is safe whatever the caller passes, and these
// stubs only ever return an error code. Types are written in full, as in the generated file, because
// the macros paste them into other crates.

use crate::CUresult;

/// Profiler output format for [`cuProfilerInitialize`]. From `cudaProfiler.h` of CUDA 11.x
/// (`enum CUoutput_mode_enum`), which the CUDA 13 wheel no longer ships.
#[repr(transparent)]
#[derive(Debug, Default, Copy, Clone, Hash, PartialEq, Eq)]
pub struct CUoutput_mode_enum(pub ::std::os::raw::c_uint);

impl CUoutput_mode_enum {
    /// Output mode Key-Value pair format.
    pub const CU_OUT_KEY_VALUE_PAIR: CUoutput_mode_enum = CUoutput_mode_enum(0);
    /// Output mode Comma separated values format.
    pub const CU_OUT_CSV: CUoutput_mode_enum = CUoutput_mode_enum(1);
}

/// Alias used by the profiler API, as in `cudaProfiler.h`.
pub type CUoutput_mode = CUoutput_mode_enum;

extern "system" {
    /// No public declaration exists; other interposers declare it without parameters. Exported by
    /// libcuda 580.159.04 (shared/observed/libcuda-580.159.04-exports.txt).
    pub fn cuEGLApiInit() -> CUresult;
    /// No public declaration exists (a deprecated, undocumented export); parameters unknown.
    /// Exported by libcuda 580.159.04.
    pub fn cuMemGetAttribute() -> CUresult;
    /// No public declaration exists (a deprecated, undocumented export); parameters unknown.
    /// Exported by libcuda 580.159.04.
    pub fn cuMemGetAttribute_v2() -> CUresult;
    /// From `cudaProfilerTypedefs.h` (CUDA 13.0.96): `PFN_cuProfilerInitialize_v4000`.
    pub fn cuProfilerInitialize(
        configFile: *const ::std::os::raw::c_char,
        outputFile: *const ::std::os::raw::c_char,
        outputMode: CUoutput_mode,
    ) -> CUresult;
    /// From `cudaProfilerTypedefs.h` (CUDA 13.0.96): `PFN_cuProfilerStart_v4000`; `cudaProfiler.h`,
    /// which declares it, is not in the wheel.
    pub fn cuProfilerStart() -> CUresult;
    /// From `cudaProfilerTypedefs.h` (CUDA 13.0.96): `PFN_cuProfilerStop_v4000`; `cudaProfiler.h`,
    /// which declares it, is not in the wheel.
    pub fn cuProfilerStop() -> CUresult;
}
