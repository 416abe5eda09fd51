//! Running bindgen over the driver-API headers: every bindgen option lives in [`builder`].

use std::fs;
use std::path::{Path, PathBuf};

use bindgen::{EnumVariation, Formatter, RustTarget};

use crate::error::GenerateError;

/// The headers bindgen reads, in include order. `cudaProfiler.h` is absent from the wheel, so the
/// profiler functions come from the supplementary list in `cuda-headers/src/supplement.rs`.
const WRAPPER: &str = "\
#include <cuda.h>
#include <cudaGL.h>
#include <cudaEGL.h>
#include <vdpau/vdpau.h>
#include <cudaVDPAU.h>
";

/// Minimal stand-ins for the window-system headers that `cudaGL.h`, `cudaEGL.h` and `cudaVDPAU.h`
/// need. They declare only the types those headers use, with the sizes of the public ABIs
/// (Khronos `gl.h`/`eglplatform.h`, freedesktop `vdpau.h`), so no GL/EGL/VDPAU package is needed.
const STAND_IN_HEADERS: &[(&str, &str)] = &[
    (
        "GL/gl.h",
        "/* vgpu stand-in: OpenGL's GLenum and GLuint are 32-bit unsigned. */\n\
         typedef unsigned int GLenum;\n\
         typedef unsigned int GLuint;\n",
    ),
    (
        "EGL/egl.h",
        "/* vgpu stand-in: EGLint is khronos_int32_t; the KHR handles are opaque pointers. */\n\
         #include <stdint.h>\n\
         typedef int32_t EGLint;\n\
         typedef void *EGLImageKHR;\n\
         typedef void *EGLStreamKHR;\n\
         typedef void *EGLSyncKHR;\n",
    ),
    ("EGL/eglext.h", "/* vgpu stand-in: the types live in EGL/egl.h. */\n"),
    (
        "vdpau/vdpau.h",
        "/* vgpu stand-in: VDPAU handles and ids are uint32_t, VdpStatus is an enum. */\n\
         #include <stdint.h>\n\
         typedef uint32_t VdpDevice;\n\
         typedef uint32_t VdpVideoSurface;\n\
         typedef uint32_t VdpOutputSurface;\n\
         typedef uint32_t VdpChromaType;\n\
         typedef uint32_t VdpRGBAFormat;\n\
         typedef uint32_t VdpFuncId;\n\
         typedef enum { VDP_STATUS_OK = 0 } VdpStatus;\n\
         typedef VdpStatus VdpGetProcAddress(VdpDevice device, VdpFuncId function_id, void **function_pointer);\n",
    ),
];

/// Which declarations one bindgen pass sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    /// `__CUDA_API_VERSION_INTERNAL` defined: every legacy ABI name (`cuMemAlloc`, `cuCtxCreate`, …)
    /// plus the per-thread-stream variants (`_ptds`, `_ptsz`), which that define switches on.
    Internal,
    /// Nothing defined: the current names with the legacy default stream (`cuMemcpyHtoD_v2`, …),
    /// which the internal pass renames to their `_ptds`/`_ptsz` forms.
    LegacyStream,
}

impl Pass {
    /// A short name for messages.
    pub fn name(self) -> &'static str {
        match self {
            Self::Internal => "__CUDA_API_VERSION_INTERNAL",
            Self::LegacyStream => "legacy default stream",
        }
    }
}

/// Writes the stand-in window-system headers under `dir` and returns it.
///
/// # Errors
/// I/O failures.
pub fn write_stand_in_headers(dir: &Path) -> Result<PathBuf, GenerateError> {
    for (name, contents) in STAND_IN_HEADERS {
        let path = dir.join(name);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(|e| GenerateError::io(parent, e))?;
        }
        fs::write(&path, contents).map_err(|e| GenerateError::io(&path, e))?;
    }
    Ok(dir.to_owned())
}

/// Every bindgen option, in one place.
pub fn builder(cuda_include: &Path, stand_in_include: &Path, pass: Pass) -> bindgen::Builder {
    let mut builder = bindgen::Builder::default()
        .header_contents("vgpu_cuda_wrapper.h", WRAPPER)
        .clang_arg(format!("-I{}", cuda_include.display()))
        .clang_arg(format!("-I{}", stand_in_include.display()))
        // Pinned so that a newer bindgen cannot change the output behind our back.
        .rust_target(RustTarget::stable(82, 0).expect("Rust 1.82 is a valid bindgen target"))
        .formatter(Formatter::None)
        .allowlist_function("^cu.*")
        .allowlist_type("^CU.*")
        .allowlist_type("^cu.*")
        .allowlist_var("^CU.*")
        // C enums become `#[repr(transparent)]` newtypes with associated consts: any value the
        // other side sends is a valid Rust value, which a Rust `enum` would not guarantee.
        .default_enum_style(EnumVariation::NewType {
            is_bitfield: false,
            is_global: false,
        })
        .layout_tests(false)
        .derive_default(true)
        .generate_comments(true)
        .merge_extern_blocks(true)
        // `cuGetProcAddress_v2_ptsz` is a `static inline` wrapper in cuda.h, not an export.
        .blocklist_function("cuGetProcAddress_v2_ptsz");
    if pass == Pass::Internal {
        builder = builder.clang_arg("-D__CUDA_API_VERSION_INTERNAL");
    }
    builder
}

/// Runs one pass and returns bindgen's unformatted output.
///
/// # Errors
/// [`GenerateError::Bindgen`] when libclang is missing or rejects the headers.
pub fn run(
    cuda_include: &Path,
    stand_in_include: &Path,
    pass: Pass,
) -> Result<String, GenerateError> {
    let cuda_h = cuda_include.join("cuda.h");
    if !cuda_h.is_file() {
        return Err(GenerateError::MissingHeader(cuda_h));
    }
    let bindings = builder(cuda_include, stand_in_include, pass)
        .generate()
        .map_err(|e| GenerateError::Bindgen {
            pass: pass.name(),
            reason: e.to_string(),
        })?;
    Ok(bindings.to_string())
}
