//! Module and library images, and lookups by name.

use std::ffi::c_void;
use std::sync::Arc;

use cuda_headers::*;
use protocol::jit::{
    self, ERROR_LOG_BUFFER, ERROR_LOG_BUFFER_SIZE_BYTES, INFO_LOG_BUFFER,
    INFO_LOG_BUFFER_SIZE_BYTES, MAX_LOG,
};
use protocol::{DecodeError, Decoder, Encoder, ResponseHeader};

use super::device::c_string;
use super::{real_or_unsupported, respond};
use crate::dispatch::gate::{admit, Handles, Kind};
use crate::dispatch::ClientContext;

/// JIT options ready for the driver, with host log buffers in place of the guest's.
pub(crate) struct JitOptions {
    options: Vec<CUjit_option>,
    values: Vec<*mut c_void>,
    info_log: Vec<u8>,
    error_log: Vec<u8>,
}

impl JitOptions {
    pub(crate) fn decode(dec: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        let raw = jit::get_options(dec, jit::MAX_JIT_OPTIONS)?;
        let size_of = |which: u32| {
            raw.iter()
                .find(|(o, _)| *o == which)
                .map_or(0, |(_, v)| (*v).min(MAX_LOG) as usize)
        };
        let mut jit = Self {
            options: Vec::with_capacity(raw.len()),
            values: Vec::with_capacity(raw.len()),
            info_log: vec![0; size_of(INFO_LOG_BUFFER_SIZE_BYTES)],
            error_log: vec![0; size_of(ERROR_LOG_BUFFER_SIZE_BYTES)],
        };
        for (option, slot) in raw {
            let value = match option {
                INFO_LOG_BUFFER => jit.info_log.as_mut_ptr().cast(),
                ERROR_LOG_BUFFER => jit.error_log.as_mut_ptr().cast(),
                INFO_LOG_BUFFER_SIZE_BYTES => jit.info_log.len() as *mut c_void,
                ERROR_LOG_BUFFER_SIZE_BYTES => jit.error_log.len() as *mut c_void,
                _ if jit::POINTER_ARRAY_OPTIONS.contains(&option) => {
                    return Err(DecodeError::BadTag {
                        what: "JIT option with guest pointers",
                        tag: option as u8,
                    })
                }
                _ => slot as *mut c_void,
            };
            jit.options.push(CUjit_option(option));
            jit.values.push(value);
        }
        Ok(jit)
    }

    /// How many options there are.
    pub(crate) fn count(&self) -> u32 {
        self.options.len() as u32
    }

    /// The info and error logs as the driver left them.
    pub(crate) fn logs(&self) -> (&[u8], &[u8]) {
        (&self.info_log, &self.error_log)
    }

    pub(crate) fn options_ptr(&mut self) -> *mut CUjit_option {
        if self.options.is_empty() {
            std::ptr::null_mut()
        } else {
            self.options.as_mut_ptr()
        }
    }

    pub(crate) fn values_ptr(&mut self) -> *mut *mut c_void {
        if self.values.is_empty() {
            std::ptr::null_mut()
        } else {
            self.values.as_mut_ptr()
        }
    }

    /// The slots after the call (sizes and wall time the driver wrote), then both logs.
    pub(crate) fn encode(&self, enc: &mut Encoder<'_>) {
        enc.put(self.values.len() as u32);
        for v in &self.values {
            enc.put(*v as u64);
        }
        enc.put_bytes(&self.info_log);
        enc.put_bytes(&self.error_log);
    }
}

/// A module image as received, checked before the driver parses it: sized again here with
/// `cuda-image`, it must be exactly the bytes received (PTX with its terminating NUL), and never a
/// fatbin wrapper, whose pointers would name this worker's memory. The guest sends the unwrapped
/// payload, sized the same way. Anything else is `CUDA_ERROR_INVALID_IMAGE`, and the driver never
/// reads past the buffer on the strength of a size field inside it.
pub(crate) fn checked_image(image: &[u8]) -> Result<(), CUresult> {
    let refused = |why: String| {
        tracing::debug!("refusing a module image: {why}");
        Err(CUresult::CUDA_ERROR_INVALID_IMAGE)
    };
    match cuda_image::size_of_image(image) {
        Err(e) => refused(e.to_string()),
        Ok(layout) if layout.kind == cuda_image::ImageKind::FatbinWrapper => {
            refused("a fatbin wrapper (it holds pointers)".to_owned())
        }
        Ok(layout) if layout.len != image.len() as u64 => refused(format!(
            "{:?} of {} bytes sent as {} bytes",
            layout.kind,
            layout.len,
            image.len()
        )),
        Ok(_) => Ok(()),
    }
}

/// `cuModuleLoadData`/`cuModuleLoadFatBinary`: `bytes image` → result, `u64 module`.
pub fn load_data(
    name: &str,
    client: &Arc<ClientContext>,
    dec: &mut Decoder<'_>,
    out: &mut Vec<u8>,
) -> Result<(), DecodeError> {
    let image = dec.get_bytes()?.to_vec();
    dec.finish()?;
    if let Err(r) = checked_image(&image) {
        respond(out, r);
        return Ok(());
    }
    let mut module: CUmodule = std::ptr::null_mut();
    // SAFETY: `image` is the exact image the guest sized, alive for the call; the driver copies
    // what it keeps.
    let r = unsafe {
        if name == "cuModuleLoadFatBinary" {
            real_or_unsupported!(cuModuleLoadFatBinary, out)(&mut module, image.as_ptr().cast())
        } else {
            real_or_unsupported!(cuModuleLoadData, out)(&mut module, image.as_ptr().cast())
        }
    };
    if r == CUresult::CUDA_SUCCESS {
        client.handles.mint(Kind::Module, module as u64, 0);
    }
    ResponseHeader::start(out, r.0).put(module as u64);
    Ok(())
}

/// `cuModuleLoadDataEx`: `bytes image, JIT options` → result, `u64 module`, JIT results.
pub fn load_data_ex(
    _: &str,
    client: &Arc<ClientContext>,
    dec: &mut Decoder<'_>,
    out: &mut Vec<u8>,
) -> Result<(), DecodeError> {
    let image = dec.get_bytes()?.to_vec();
    let mut jit = JitOptions::decode(dec)?;
    dec.finish()?;
    if let Err(r) = checked_image(&image) {
        respond(out, r);
        return Ok(());
    }
    let mut module: CUmodule = std::ptr::null_mut();
    let f = real_or_unsupported!(cuModuleLoadDataEx, out);
    let count = jit.options.len() as u32;
    // SAFETY: the image and the option arrays (and the log buffers they point to) live for the
    // whole call.
    let r = unsafe {
        f(
            &mut module,
            image.as_ptr().cast(),
            count,
            jit.options_ptr(),
            jit.values_ptr(),
        )
    };
    if r == CUresult::CUDA_SUCCESS {
        client.handles.mint(Kind::Module, module as u64, 0);
    }
    let mut enc = ResponseHeader::start(out, r.0);
    enc.put(module as u64);
    jit.encode(&mut enc);
    Ok(())
}

/// `cuLibraryLoadData`: `bytes image, JIT options, u32 n, n × (u32 option, u64 value)` →
/// result, `u64 library`, JIT results. `CU_LIBRARY_BINARY_IS_PRESERVED` is dropped: the host's
/// copy of the image does not outlive the call, so the driver must copy it.
pub fn library_load_data(
    _: &str,
    client: &Arc<ClientContext>,
    dec: &mut Decoder<'_>,
    out: &mut Vec<u8>,
) -> Result<(), DecodeError> {
    let image = dec.get_bytes()?.to_vec();
    let mut jit = JitOptions::decode(dec)?;
    let library_options = jit::get_options(dec, jit::MAX_LIBRARY_OPTIONS)?;
    dec.finish()?;
    if let Err(r) = checked_image(&image) {
        respond(out, r);
        return Ok(());
    }
    let (mut lib_opts, mut lib_values): (Vec<CUlibraryOption>, Vec<*mut c_void>) = library_options
        .into_iter()
        .filter(|(o, _)| *o != CUlibraryOption::CU_LIBRARY_BINARY_IS_PRESERVED.0)
        .map(|(o, v)| (CUlibraryOption(o), v as *mut c_void))
        .unzip();
    if lib_opts.contains(&CUlibraryOption::CU_LIBRARY_HOST_UNIVERSAL_FUNCTION_AND_DATA_TABLE) {
        ResponseHeader::start(out, CUresult::CUDA_ERROR_NOT_SUPPORTED.0);
        return Ok(());
    }
    let mut library: CUlibrary = std::ptr::null_mut();
    let f = real_or_unsupported!(cuLibraryLoadData, out);
    let (jit_count, lib_count) = (jit.options.len() as u32, lib_opts.len() as u32);
    let lib_opts_ptr = if lib_opts.is_empty() {
        std::ptr::null_mut()
    } else {
        lib_opts.as_mut_ptr()
    };
    let lib_values_ptr = if lib_values.is_empty() {
        std::ptr::null_mut()
    } else {
        lib_values.as_mut_ptr()
    };
    // SAFETY: every array and buffer lives for the whole call and the counts match.
    let r = unsafe {
        f(
            &mut library,
            image.as_ptr().cast(),
            jit.options_ptr(),
            jit.values_ptr(),
            jit_count,
            lib_opts_ptr,
            lib_values_ptr,
            lib_count,
        )
    };
    if r == CUresult::CUDA_SUCCESS {
        client.handles.mint(Kind::Library, library as u64, 0);
    }
    let mut enc = ResponseHeader::start(out, r.0);
    enc.put(library as u64);
    jit.encode(&mut enc);
    Ok(())
}

/// `u64 owner, bytes name` → result, `u64 handle`: a function or kernel (`made`) looked up by
/// name in a module or library (`owner_kind`, admitted by the gate). `lookup(owner, name)` calls
/// the real driver; the handle it finds is recorded as the owner's.
fn handle_by_name<O>(
    client: &ClientContext,
    dec: &mut Decoder<'_>,
    out: &mut Vec<u8>,
    admit: impl FnOnce(&Handles, u64) -> Result<O, CUresult>,
    made: Kind,
    lookup: impl FnOnce(O, *const std::os::raw::c_char) -> (CUresult, u64),
) -> Result<(), DecodeError> {
    let owner: u64 = dec.get()?;
    let name = c_string(dec.get_bytes()?);
    dec.finish()?;
    let handle = admit!(admit(&client.handles, owner), out);
    let (r, found) = lookup(handle, name.as_ptr());
    if r == CUresult::CUDA_SUCCESS {
        client.handles.mint(made, found, owner);
    }
    ResponseHeader::start(out, r.0).put(found);
    Ok(())
}

/// `u64 owner, bytes name` → result, `u64 dptr, u64 bytes`: a global looked up by name in a
/// module or library the gate admitted.
fn global_by_name<O>(
    client: &ClientContext,
    dec: &mut Decoder<'_>,
    out: &mut Vec<u8>,
    admit: impl FnOnce(&Handles, u64) -> Result<O, CUresult>,
    lookup: impl FnOnce(*mut CUdeviceptr, *mut usize, O, *const std::os::raw::c_char) -> CUresult,
) -> Result<(), DecodeError> {
    let owner: u64 = dec.get()?;
    let name = c_string(dec.get_bytes()?);
    dec.finish()?;
    let owner = admit!(admit(&client.handles, owner), out);
    let (mut dptr, mut bytes): (CUdeviceptr, usize) = (0, 0);
    let r = lookup(&mut dptr, &mut bytes, owner, name.as_ptr());
    let mut enc = ResponseHeader::start(out, r.0);
    enc.put(dptr);
    enc.put(bytes as u64);
    Ok(())
}

/// `cuModuleGetFunction`: see [`handle_by_name`].
pub fn get_function(
    _: &str,
    client: &Arc<ClientContext>,
    dec: &mut Decoder<'_>,
    out: &mut Vec<u8>,
) -> Result<(), DecodeError> {
    let f = real_or_unsupported!(cuModuleGetFunction, out);
    handle_by_name(
        client,
        dec,
        out,
        Handles::module,
        Kind::Function,
        |module, name| {
            let mut func: CUfunction = std::ptr::null_mut();
            // SAFETY: `name` is NUL-terminated and alive; the module was admitted by the gate.
            let r = unsafe { f(&mut func, module, name) };
            (r, func as u64)
        },
    )
}

/// `cuLibraryGetKernel`: see [`handle_by_name`].
pub fn library_get_kernel(
    _: &str,
    client: &Arc<ClientContext>,
    dec: &mut Decoder<'_>,
    out: &mut Vec<u8>,
) -> Result<(), DecodeError> {
    let f = real_or_unsupported!(cuLibraryGetKernel, out);
    handle_by_name(
        client,
        dec,
        out,
        Handles::library,
        Kind::Kernel,
        |library, name| {
            let mut kernel: CUkernel = std::ptr::null_mut();
            // SAFETY: as in `get_function`.
            let r = unsafe { f(&mut kernel, library, name) };
            (r, kernel as u64)
        },
    )
}

/// `cuModuleGetGlobal_v2`: see [`global_by_name`].
pub fn get_global(
    _: &str,
    client: &Arc<ClientContext>,
    dec: &mut Decoder<'_>,
    out: &mut Vec<u8>,
) -> Result<(), DecodeError> {
    let f = real_or_unsupported!(cuModuleGetGlobal_v2, out);
    // SAFETY: out-pointers to live locals, `name` NUL-terminated; the module was admitted by the
    // gate.
    global_by_name(
        client,
        dec,
        out,
        Handles::module,
        |dptr, bytes, module, name| unsafe { f(dptr, bytes, module, name) },
    )
}

/// `cuLibraryGetGlobal`: see [`global_by_name`].
pub fn library_get_global(
    _: &str,
    client: &Arc<ClientContext>,
    dec: &mut Decoder<'_>,
    out: &mut Vec<u8>,
) -> Result<(), DecodeError> {
    let f = real_or_unsupported!(cuLibraryGetGlobal, out);
    // SAFETY: as in `get_global`.
    global_by_name(
        client,
        dec,
        out,
        Handles::library,
        |dptr, bytes, library, name| unsafe { f(dptr, bytes, library, name) },
    )
}

/// `cuFuncGetName`/`cuKernelGetName`: `u64 handle` → result, `bytes name`.
pub fn get_name(
    name: &str,
    client: &Arc<ClientContext>,
    dec: &mut Decoder<'_>,
    out: &mut Vec<u8>,
) -> Result<(), DecodeError> {
    let handle: u64 = dec.get()?;
    dec.finish()?;
    let mut text: *const std::os::raw::c_char = std::ptr::null();
    // SAFETY: the handle was admitted by the gate; `text` is a live local.
    let r = unsafe {
        if name == "cuKernelGetName" {
            let kernel = admit!(client.handles.kernel(handle), out);
            real_or_unsupported!(cuKernelGetName, out)(&mut text, kernel)
        } else {
            let func = admit!(client.handles.function(handle), out);
            real_or_unsupported!(cuFuncGetName, out)(&mut text, func)
        }
    };
    let mut enc = ResponseHeader::start(out, r.0);
    if r == CUresult::CUDA_SUCCESS && !text.is_null() {
        // SAFETY: the driver returned a NUL-terminated string it owns.
        enc.put_bytes(unsafe { std::ffi::CStr::from_ptr(text) }.to_bytes());
    } else {
        enc.put_bytes(&[]);
    }
    Ok(())
}
