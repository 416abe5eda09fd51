//! Module and library images (sized in the guest with `cuda-image`, shipped as bytes), JIT
//! options, lookups by name. Host halves: `host/src/dispatch/handlers/module.rs`.
#![allow(non_snake_case)]

use std::ffi::{c_char, c_void, CStr, CString};
use std::sync::Mutex;

use cuda_headers::*;
use protocol::jit::{self, ERROR_LOG_BUFFER, INFO_LOG_BUFFER};
use protocol::{Decoder, Encoder};

use crate::forward::{bad_response, call_with};
use crate::log::{log, Level};

/// The bytes of the image at `image`, sized from its headers.
///
/// # Safety
/// `image` points to a module image the application keeps alive for the call.
unsafe fn image_bytes<'a>(image: *const c_void) -> CuResult<&'a [u8]> {
    // SAFETY: per the contract; the sizing reads only as far as the headers say.
    let info = unsafe { cuda_image::size_of_image_at(image.cast()) }.map_err(|e| {
        log!(Level::Error, "cannot size the module image: {e}");
        CuError::INVALID_IMAGE
    })?;
    log!(
        Level::Debug,
        "module image: {:?}, {} bytes",
        info.payload.kind,
        info.payload.len
    );
    // SAFETY: the bytes were just read successfully and the application keeps them alive.
    Ok(unsafe { info.payload_bytes() })
}

fn name_bytes(name: *const c_char) -> CuResult<&'static [u8]> {
    if name.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    // SAFETY: the driver API takes a NUL-terminated string; the borrow ends with the call.
    Ok(unsafe { CStr::from_ptr(name) }.to_bytes())
}

fn write<T>(out: *mut T, value: T) {
    if !out.is_null() {
        // SAFETY: non-NULL out-pointers are valid for one write (driver API contract).
        unsafe { out.write(value) };
    }
}

/// The guest's JIT options: what is sent, and where the results go back.
pub(crate) struct Jit {
    /// `(option, slot)` as sent: the log buffers' guest addresses and sizes among them.
    pub(crate) sent: Vec<(u32, u64)>,
    values: *mut *mut c_void,
}

impl Jit {
    /// # Safety
    /// `options`/`values` hold `count` entries each (driver API contract).
    pub(crate) unsafe fn read(
        count: u32,
        options: *const CUjit_option,
        values: *mut *mut c_void,
    ) -> CuResult<Self> {
        let mut sent = Vec::with_capacity(count as usize);
        if count > 0 && (options.is_null() || values.is_null()) {
            return Err(CuError::INVALID_VALUE);
        }
        for i in 0..count as usize {
            // SAFETY: per the contract, both arrays have `count` entries.
            let (option, slot) = unsafe { (*options.add(i), *values.add(i)) };
            if jit::POINTER_ARRAY_OPTIONS.contains(&option.0) {
                log!(
                    Level::Warn,
                    "JIT option {} (guest pointer arrays) is not supported",
                    option.0
                );
                return Err(CuError::NOT_SUPPORTED);
            }
            sent.push((option.0, slot as u64));
        }
        Ok(Self { sent, values })
    }

    pub(crate) fn encode(&self, enc: &mut Encoder<'_>) {
        jit::put_options(enc, &self.sent);
    }

    /// Writes back slots the driver changed and copies the logs into the guest's buffers.
    pub(crate) fn decode(&self, dec: &mut Decoder<'_>) -> CuResult {
        let count: u32 = dec.get().map_err(bad_response)?;
        let mut slots = Vec::with_capacity(count as usize);
        for _ in 0..count {
            slots.push(dec.get::<u64>().map_err(bad_response)?);
        }
        let info = dec.get_bytes().map_err(bad_response)?;
        let error = dec.get_bytes().map_err(bad_response)?;
        for (i, ((option, slot), new)) in self.sent.iter().zip(&slots).enumerate() {
            let log = match *option {
                INFO_LOG_BUFFER => Some(info),
                ERROR_LOG_BUFFER => Some(error),
                _ => None,
            };
            match log {
                Some(text) if *slot != 0 => {
                    // SAFETY: the guest's buffer holds its *_SIZE_BYTES option's bytes, and the
                    // host's log is exactly that size.
                    unsafe {
                        std::ptr::copy_nonoverlapping(
                            text.as_ptr(),
                            *slot as usize as *mut u8,
                            text.len(),
                        )
                    };
                }
                Some(_) => {}
                // SAFETY: `values` has an entry per option (checked in `read`).
                None => unsafe { self.values.add(i).write(*new as usize as *mut c_void) },
            }
        }
        Ok(())
    }
}

fn load(id: u32, module: *mut CUmodule, image: *const c_void) -> CuResult {
    // SAFETY: the application passes a live image (driver API contract).
    let bytes = unsafe { image_bytes(image) }?;
    call_with(
        id,
        |enc| enc.put_bytes(bytes),
        |dec| {
            write(module, dec.get::<u64>().map_err(bad_response)? as CUmodule);
            Ok(())
        },
    )
}

/// Loads a module from an image in memory.
///
/// # Safety
/// `image` is a valid module image.
///
/// # Errors
/// `CUDA_ERROR_INVALID_IMAGE` when it cannot be sized; the host's result.
pub unsafe fn cuModuleLoadData(module: *mut CUmodule, image: *const c_void) -> CuResult {
    load(shim_macros::cuda_call_id!(cuModuleLoadData), module, image)
}

/// Loads a module from a fatbin (or its wrapper).
///
/// # Safety
/// As [`cuModuleLoadData`].
///
/// # Errors
/// As [`cuModuleLoadData`].
pub unsafe fn cuModuleLoadFatBinary(module: *mut CUmodule, fatCubin: *const c_void) -> CuResult {
    load(
        shim_macros::cuda_call_id!(cuModuleLoadFatBinary),
        module,
        fatCubin,
    )
}

/// The module image in the file named `fname`, read in the guest: exactly the bytes its headers
/// (or, for PTX, its terminating NUL, added when the file lacks it) say, as the host checks;
/// bytes after the image are not sent.
///
/// # Errors
/// `CUDA_ERROR_FILE_NOT_FOUND`, `CUDA_ERROR_INVALID_IMAGE` when it cannot be sized.
fn image_from_file(fname: *const c_char) -> CuResult<Vec<u8>> {
    let path = <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(name_bytes(fname)?);
    let mut bytes = std::fs::read(path).map_err(|_| CuError::FILE_NOT_FOUND)?;
    bytes.push(0);
    let layout = cuda_image::size_of_image(&bytes).map_err(|e| {
        log!(
            Level::Error,
            "cannot size the module image in the file: {e}"
        );
        CuError::INVALID_IMAGE
    })?;
    bytes.truncate(usize::try_from(layout.len).map_err(|_| CuError::INVALID_IMAGE)?);
    Ok(bytes)
}

/// Loads a module from a file the guest reads.
///
/// # Safety
/// `fname` is a NUL-terminated path.
///
/// # Errors
/// `CUDA_ERROR_FILE_NOT_FOUND`; as [`cuModuleLoadData`].
pub unsafe fn cuModuleLoad(module: *mut CUmodule, fname: *const c_char) -> CuResult {
    let bytes = image_from_file(fname)?;
    call_with(
        shim_macros::cuda_call_id!(cuModuleLoadData),
        |enc| enc.put_bytes(&bytes),
        |dec| {
            write(module, dec.get::<u64>().map_err(bad_response)? as CUmodule);
            Ok(())
        },
    )
}

/// Loads a module with JIT options; log buffers are filled from the host's.
///
/// # Safety
/// `image` is valid; the option arrays hold `numOptions` entries.
///
/// # Errors
/// As [`cuModuleLoadData`]; `CUDA_ERROR_NOT_SUPPORTED` for options holding guest pointer arrays.
pub unsafe fn cuModuleLoadDataEx(
    module: *mut CUmodule,
    image: *const c_void,
    numOptions: u32,
    options: *mut CUjit_option,
    optionValues: *mut *mut c_void,
) -> CuResult {
    // SAFETY: per the contract.
    let bytes = unsafe { image_bytes(image) }?;
    // SAFETY: per the contract.
    let jit = unsafe { Jit::read(numOptions, options, optionValues) }?;
    call_with(
        shim_macros::cuda_call_id!(cuModuleLoadDataEx),
        |enc| {
            enc.put_bytes(bytes);
            jit.encode(enc);
        },
        |dec| {
            write(module, dec.get::<u64>().map_err(bad_response)? as CUmodule);
            jit.decode(dec)
        },
    )
}

/// Loads a library; `CU_LIBRARY_BINARY_IS_PRESERVED` is honoured by copying on the host.
///
/// # Safety
/// As [`cuModuleLoadDataEx`], for both option lists.
///
/// # Errors
/// As [`cuModuleLoadDataEx`].
#[allow(clippy::too_many_arguments, reason = "the driver API's signature")]
pub unsafe fn cuLibraryLoadData(
    library: *mut CUlibrary,
    code: *const c_void,
    jitOptions: *mut CUjit_option,
    jitOptionsValues: *mut *mut c_void,
    numJitOptions: u32,
    libraryOptions: *mut CUlibraryOption,
    libraryOptionValues: *mut *mut c_void,
    numLibraryOptions: u32,
) -> CuResult {
    // SAFETY: per the contract.
    let bytes = unsafe { image_bytes(code) }?;
    // SAFETY: per the contract.
    unsafe {
        library_load(
            library,
            bytes,
            jitOptions,
            jitOptionsValues,
            numJitOptions,
            libraryOptions,
            libraryOptionValues,
            numLibraryOptions,
        )
    }
}

/// Loads a library from a file the guest reads.
///
/// # Safety
/// As [`cuLibraryLoadData`]; `fileName` is a NUL-terminated path.
///
/// # Errors
/// `CUDA_ERROR_FILE_NOT_FOUND`; as [`cuLibraryLoadData`].
#[allow(clippy::too_many_arguments, reason = "the driver API's signature")]
pub unsafe fn cuLibraryLoadFromFile(
    library: *mut CUlibrary,
    fileName: *const c_char,
    jitOptions: *mut CUjit_option,
    jitOptionsValues: *mut *mut c_void,
    numJitOptions: u32,
    libraryOptions: *mut CUlibraryOption,
    libraryOptionValues: *mut *mut c_void,
    numLibraryOptions: u32,
) -> CuResult {
    let bytes = image_from_file(fileName)?;
    // SAFETY: per the contract.
    unsafe {
        library_load(
            library,
            &bytes,
            jitOptions,
            jitOptionsValues,
            numJitOptions,
            libraryOptions,
            libraryOptionValues,
            numLibraryOptions,
        )
    }
}

/// # Safety
/// The option arrays hold their counts' entries.
#[allow(clippy::too_many_arguments)]
unsafe fn library_load(
    library: *mut CUlibrary,
    bytes: &[u8],
    jitOptions: *mut CUjit_option,
    jitOptionsValues: *mut *mut c_void,
    numJitOptions: u32,
    libraryOptions: *mut CUlibraryOption,
    libraryOptionValues: *mut *mut c_void,
    numLibraryOptions: u32,
) -> CuResult {
    // SAFETY: per the contract.
    let jit = unsafe { Jit::read(numJitOptions, jitOptions, jitOptionsValues) }?;
    let mut library_options = Vec::new();
    // cudart passes CU_LIBRARY_BINARY_IS_PRESERVED with a NULL value array (seen with JAX and
    // PyTorch on the H200), which the real driver accepts: a missing value reads as 0.
    if numLibraryOptions > 0 && libraryOptions.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    for i in 0..numLibraryOptions as usize {
        // SAFETY: per the contract, `libraryOptions` has `numLibraryOptions` entries, and so
        // does `libraryOptionValues` when it is not NULL.
        let (option, value) = unsafe {
            let value = if libraryOptionValues.is_null() {
                std::ptr::null_mut()
            } else {
                *libraryOptionValues.add(i)
            };
            (*libraryOptions.add(i), value)
        };
        if option != CUlibraryOption::CU_LIBRARY_BINARY_IS_PRESERVED {
            log!(Level::Warn, "library option {} is not supported", option.0);
            return Err(CuError::NOT_SUPPORTED);
        }
        library_options.push((option.0, value as u64));
    }
    call_with(
        shim_macros::cuda_call_id!(cuLibraryLoadData),
        |enc| {
            enc.put_bytes(bytes);
            jit.encode(enc);
            jit::put_options(enc, &library_options);
        },
        |dec| {
            write(
                library,
                dec.get::<u64>().map_err(bad_response)? as CUlibrary,
            );
            jit.decode(dec)
        },
    )
}

fn lookup(
    id: u32,
    handle: u64,
    name: *const c_char,
    decode: impl FnOnce(&mut Decoder<'_>) -> CuResult,
) -> CuResult {
    let name = name_bytes(name)?;
    call_with(
        id,
        |enc| {
            enc.put(handle);
            enc.put_bytes(name);
        },
        decode,
    )
}

/// Looks a kernel up by name.
///
/// # Safety
/// `name` is NUL-terminated; `hfunc` is valid for one write.
///
/// # Errors
/// The host's result.
pub unsafe fn cuModuleGetFunction(
    hfunc: *mut CUfunction,
    hmod: CUmodule,
    name: *const c_char,
) -> CuResult {
    lookup(
        shim_macros::cuda_call_id!(cuModuleGetFunction),
        hmod as u64,
        name,
        |dec| {
            write(hfunc, dec.get::<u64>().map_err(bad_response)? as CUfunction);
            Ok(())
        },
    )
}

/// Looks a global up by name.
///
/// # Safety
/// As [`cuModuleGetFunction`].
///
/// # Errors
/// The host's result.
pub unsafe fn cuModuleGetGlobal_v2(
    dptr: *mut CUdeviceptr,
    bytes: *mut usize,
    hmod: CUmodule,
    name: *const c_char,
) -> CuResult {
    lookup(
        shim_macros::cuda_call_id!(cuModuleGetGlobal_v2),
        hmod as u64,
        name,
        |dec| {
            write(dptr, dec.get::<u64>().map_err(bad_response)?);
            write(bytes, dec.get::<u64>().map_err(bad_response)? as usize);
            Ok(())
        },
    )
}

/// Looks a library kernel up by name.
///
/// # Safety
/// As [`cuModuleGetFunction`].
///
/// # Errors
/// The host's result.
pub unsafe fn cuLibraryGetKernel(
    pKernel: *mut CUkernel,
    library: CUlibrary,
    name: *const c_char,
) -> CuResult {
    lookup(
        shim_macros::cuda_call_id!(cuLibraryGetKernel),
        library as u64,
        name,
        |dec| {
            write(pKernel, dec.get::<u64>().map_err(bad_response)? as CUkernel);
            Ok(())
        },
    )
}

/// Looks a library global up by name.
///
/// # Safety
/// As [`cuModuleGetFunction`].
///
/// # Errors
/// The host's result.
pub unsafe fn cuLibraryGetGlobal(
    dptr: *mut CUdeviceptr,
    bytes: *mut usize,
    library: CUlibrary,
    name: *const c_char,
) -> CuResult {
    lookup(
        shim_macros::cuda_call_id!(cuLibraryGetGlobal),
        library as u64,
        name,
        |dec| {
            write(dptr, dec.get::<u64>().map_err(bad_response)?);
            write(bytes, dec.get::<u64>().map_err(bad_response)? as usize);
            Ok(())
        },
    )
}

/// Names handed out by `cuFuncGetName`/`cuKernelGetName`: kept for the life of the process, as
/// the driver's own strings are.
static NAMES: Mutex<Vec<CString>> = Mutex::new(Vec::new());

fn get_name(id: u32, handle: u64, out: *mut *const c_char) -> CuResult {
    if out.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    call_with(
        id,
        |enc| enc.put(handle),
        |dec| {
            let bytes = dec.get_bytes().map_err(bad_response)?;
            let name = CString::new(bytes).map_err(|_| CuError::UNKNOWN)?;
            let mut names = NAMES.lock().unwrap_or_else(|e| e.into_inner());
            let ptr = match names.iter().find(|n| n.as_bytes() == name.as_bytes()) {
                Some(existing) => existing.as_ptr(),
                None => {
                    names.push(name);
                    names.last().expect("just pushed").as_ptr()
                }
            };
            write(out, ptr);
            Ok(())
        },
    )
}

/// A function's name; the string lives as long as the process.
///
/// # Safety
/// `name` is valid for one write.
///
/// # Errors
/// The host's result.
pub unsafe fn cuFuncGetName(name: *mut *const c_char, hfunc: CUfunction) -> CuResult {
    get_name(
        shim_macros::cuda_call_id!(cuFuncGetName),
        hfunc as u64,
        name,
    )
}

/// A kernel's name; the string lives as long as the process.
///
/// # Safety
/// `name` is valid for one write.
///
/// # Errors
/// The host's result.
pub unsafe fn cuKernelGetName(name: *mut *const c_char, hfunc: CUkernel) -> CuResult {
    get_name(
        shim_macros::cuda_call_id!(cuKernelGetName),
        hfunc as u64,
        name,
    )
}

/// Unloads a module and forgets cached parameter layouts and kept function answers (handles may
/// be reused).
///
/// # Safety
/// None beyond the driver's.
///
/// # Errors
/// The host's result.
pub unsafe fn cuModuleUnload(hmod: CUmodule) -> CuResult {
    super::launch::forget_layouts();
    // SAFETY: forwarded as is.
    let result = unsafe { crate::forward::generated::cuModuleUnload(hmod) };
    // Kept answers about functions and kernels may name reused handles from now on.
    crate::local_cache::code_unloaded();
    result
}

/// Unloads a library and forgets cached parameter layouts, kept kernel answers and the mirrors
/// of its `__managed__` variables.
///
/// # Safety
/// None beyond the driver's.
///
/// # Errors
/// The host's result.
pub unsafe fn cuLibraryUnload(library: CUlibrary) -> CuResult {
    super::launch::forget_layouts();
    // Its `__managed__` variables go with it (the host forgets them too).
    crate::mirror::forget_library(library as u64);
    // SAFETY: forwarded as is.
    let result = unsafe { crate::forward::generated::cuLibraryUnload(library) };
    // Kept answers about functions and kernels may name reused handles from now on.
    crate::local_cache::code_unloaded();
    result
}
