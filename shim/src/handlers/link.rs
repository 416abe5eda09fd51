//! The JIT linker (`cuLinkCreate`, `cuLinkAddData`, `cuLinkAddFile`, `cuLinkComplete`,
//! `cuLinkDestroy`). The link state lives on the host. Files named by `cuLinkAddFile` are read
//! here and sent as data. The linked cubin comes back from `cuLinkComplete` and is kept in guest
//! storage owned by the link state until `cuLinkDestroy`, as CUDA promises. The log buffers
//! given at creation are refreshed from the host's copies after every call. Host halves:
//! `host/src/dispatch/handlers/link.rs`.
#![allow(non_snake_case)]

use std::collections::HashMap;
use std::ffi::{c_char, c_void, CStr};
use std::sync::Mutex;

use cuda_headers::*;
use protocol::jit::{
    ERROR_LOG_BUFFER, ERROR_LOG_BUFFER_SIZE_BYTES, INFO_LOG_BUFFER, INFO_LOG_BUFFER_SIZE_BYTES,
};
use protocol::Decoder;

use super::arrays::write;
use super::module::Jit;
use crate::forward::{bad_response, call_with};
use crate::log::{log, Level};

/// A guest log buffer: (address, size).
type Buffer = (usize, usize);

/// What the guest keeps per link state: where its log buffers are (address, size), and the
/// cubin once linked.
#[derive(Default)]
struct Link {
    info_log: Option<Buffer>,
    error_log: Option<Buffer>,
    cubin: Option<Vec<u8>>,
}

static LINKS: Mutex<Option<HashMap<u64, Link>>> = Mutex::new(None);

fn with_link<R>(state: u64, f: impl FnOnce(&mut Link) -> R) -> Option<R> {
    LINKS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_mut()
        .and_then(|m| m.get_mut(&state))
        .map(f)
}

/// The log buffers among `(option, slot)` pairs: (address, size) for info and error.
fn log_buffers(sent: &[(u32, u64)]) -> (Option<Buffer>, Option<Buffer>) {
    let find = |o: u32| sent.iter().find(|(k, _)| *k == o).map(|(_, v)| *v as usize);
    let pair = |buf: u32, size: u32| match (find(buf), find(size)) {
        (Some(addr), Some(len)) if addr != 0 && len > 0 => Some((addr, len)),
        _ => None,
    };
    (
        pair(INFO_LOG_BUFFER, INFO_LOG_BUFFER_SIZE_BYTES),
        pair(ERROR_LOG_BUFFER, ERROR_LOG_BUFFER_SIZE_BYTES),
    )
}

/// Reads the link's logs (`bytes info, bytes error`) into the buffers given at creation.
fn refresh_logs(state: u64, dec: &mut Decoder<'_>) -> CuResult {
    let info = dec.get_bytes().map_err(bad_response)?;
    let error = dec.get_bytes().map_err(bad_response)?;
    with_link(state, |link| {
        for (text, buffer) in [(info, link.info_log), (error, link.error_log)] {
            if let Some((addr, len)) = buffer {
                let n = text.len().min(len);
                // SAFETY: the application keeps its log buffers (of the size it gave) alive
                // until cuLinkDestroy; `text` is the host's copy.
                unsafe { std::ptr::copy_nonoverlapping(text.as_ptr(), addr as *mut u8, n) };
            }
        }
    });
    Ok(())
}

/// `JIT options` → `u64 state`, JIT results.
///
/// # Safety
/// The option arrays hold `numOptions` entries.
unsafe fn create(
    id: u32,
    numOptions: u32,
    options: *mut CUjit_option,
    optionValues: *mut *mut c_void,
    stateOut: *mut CUlinkState,
) -> CuResult {
    if stateOut.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    // SAFETY: per the contract.
    let jit = unsafe { Jit::read(numOptions, options, optionValues) }?;
    let (info_log, error_log) = log_buffers(&jit.sent);
    call_with(
        id,
        |enc| jit.encode(enc),
        |dec| {
            let state: u64 = dec.get().map_err(bad_response)?;
            jit.decode(dec)?;
            LINKS
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get_or_insert_with(HashMap::new)
                .insert(
                    state,
                    Link {
                        info_log,
                        error_log,
                        cubin: None,
                    },
                );
            write(stateOut, state as usize as CUlinkState);
            Ok(())
        },
    )
}

/// Creates a link state.
///
/// # Safety
/// The option arrays hold `numOptions` entries; log buffers live until `cuLinkDestroy`.
///
/// # Errors
/// `CUDA_ERROR_NOT_SUPPORTED` for options holding guest pointer arrays; the host's result.
pub unsafe fn cuLinkCreate_v2(
    numOptions: u32,
    options: *mut CUjit_option,
    optionValues: *mut *mut c_void,
    stateOut: *mut CUlinkState,
) -> CuResult {
    // SAFETY: per the contract.
    unsafe {
        create(
            shim_macros::cuda_call_id!(cuLinkCreate_v2),
            numOptions,
            options,
            optionValues,
            stateOut,
        )
    }
}

/// As [`cuLinkCreate_v2`].
///
/// # Safety
/// As [`cuLinkCreate_v2`].
///
/// # Errors
/// As [`cuLinkCreate_v2`].
pub unsafe fn cuLinkCreate(
    numOptions: u32,
    options: *mut CUjit_option,
    optionValues: *mut *mut c_void,
    stateOut: *mut CUlinkState,
) -> CuResult {
    // SAFETY: per the contract.
    unsafe {
        create(
            shim_macros::cuda_call_id!(cuLinkCreate),
            numOptions,
            options,
            optionValues,
            stateOut,
        )
    }
}

/// `u64 state, u32 type, bytes data, bytes name, JIT options` → result, JIT results,
/// `bytes info, bytes error`.
///
/// # Safety
/// The option arrays hold `numOptions` entries.
#[allow(clippy::too_many_arguments)]
unsafe fn add_data(
    id: u32,
    state: CUlinkState,
    kind: CUjitInputType,
    data: &[u8],
    name: &[u8],
    numOptions: u32,
    options: *mut CUjit_option,
    optionValues: *mut *mut c_void,
) -> CuResult {
    // SAFETY: per the contract.
    let jit = unsafe { Jit::read(numOptions, options, optionValues) }?;
    call_with(
        id,
        |enc| {
            enc.put(state as u64);
            enc.put(kind.0);
            enc.put_bytes(data);
            enc.put_bytes(name);
            jit.encode(enc);
        },
        |dec| {
            jit.decode(dec)?;
            refresh_logs(state as u64, dec)
        },
    )
}

fn name_of<'a>(name: *const c_char) -> &'a [u8] {
    if name.is_null() {
        &[]
    } else {
        // SAFETY: a NUL-terminated string (driver API contract), borrowed for the call.
        unsafe { CStr::from_ptr(name) }.to_bytes()
    }
}

macro_rules! add_data_fns {
    ($($name:ident),*) => { $(
        /// Adds an input (PTX, cubin, fatbin, object, library, LTO IR) from memory.
        ///
        /// # Safety
        /// `data` holds `size` bytes; the option arrays hold `numOptions` entries.
        ///
        /// # Errors
        /// The host's result.
        #[allow(clippy::too_many_arguments)]
        pub unsafe fn $name(state: CUlinkState, type_: CUjitInputType, data: *mut c_void, size: usize, name: *const c_char, numOptions: u32, options: *mut CUjit_option, optionValues: *mut *mut c_void) -> CuResult {
            // SAFETY: per the contract.
            let bytes = unsafe { super::arrays::slice(data.cast_const().cast::<u8>(), size) }?;
            // SAFETY: per the contract.
            unsafe { add_data(shim_macros::cuda_call_id!($name), state, type_, bytes, name_of(name), numOptions, options, optionValues) }
        }
    )* };
}
macro_rules! add_file_fns {
    ($($name:ident),*) => { $(
        /// Adds an input from a guest file: read here, sent as data named by its path.
        ///
        /// # Safety
        /// `path` is a NUL-terminated string; the option arrays hold `numOptions` entries.
        ///
        /// # Errors
        /// `CUDA_ERROR_FILE_NOT_FOUND` for an unreadable file; the host's result.
        pub unsafe fn $name(state: CUlinkState, type_: CUjitInputType, path: *const c_char, numOptions: u32, options: *mut CUjit_option, optionValues: *mut *mut c_void) -> CuResult {
            if path.is_null() {
                return Err(CuError::INVALID_VALUE);
            }
            let name = name_of(path);
            let file = String::from_utf8_lossy(name).into_owned();
            let bytes = std::fs::read(&file).map_err(|e| {
                log!(Level::Warn, "{}: cannot read {file}: {e}", stringify!($name));
                CuError::FILE_NOT_FOUND
            })?;
            // SAFETY: per the contract.
            unsafe { add_data(shim_macros::cuda_call_id!($name), state, type_, &bytes, name, numOptions, options, optionValues) }
        }
    )* };
}
add_data_fns!(cuLinkAddData, cuLinkAddData_v2);
add_file_fns!(cuLinkAddFile, cuLinkAddFile_v2);

/// Completes the link: the cubin comes back and stays in guest storage until
/// [`cuLinkDestroy`].
///
/// # Safety
/// Out-pointers are valid for one write.
///
/// # Errors
/// The host's result.
pub unsafe fn cuLinkComplete(
    state: CUlinkState,
    cubinOut: *mut *mut c_void,
    sizeOut: *mut usize,
) -> CuResult {
    if cubinOut.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    call_with(
        shim_macros::cuda_call_id!(cuLinkComplete),
        |enc| enc.put(state as u64),
        |dec| {
            let cubin = dec.get_bytes().map_err(bad_response)?.to_vec();
            refresh_logs(state as u64, dec)?;
            let (ptr, len) = with_link(state as u64, |link| {
                let c = link.cubin.insert(cubin);
                (c.as_mut_ptr(), c.len())
            })
            .ok_or(CuError::INVALID_VALUE)?;
            write(cubinOut, ptr.cast::<c_void>());
            write(sizeOut, len);
            Ok(())
        },
    )
}

/// Destroys the link state and the guest's copy of its cubin.
///
/// # Safety
/// `state` is not used afterwards.
///
/// # Errors
/// The host's result.
pub unsafe fn cuLinkDestroy(state: CUlinkState) -> CuResult {
    // SAFETY: a handle from the application; the host validates it.
    let r = unsafe { crate::forward::generated::cuLinkDestroy(state) };
    if let Some(m) = LINKS.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
        m.remove(&(state as u64));
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_buffers_need_an_address_and_a_size() {
        let sent = [
            (INFO_LOG_BUFFER, 0x1000),
            (INFO_LOG_BUFFER_SIZE_BYTES, 64),
            (ERROR_LOG_BUFFER, 0x2000),
        ];
        assert_eq!(log_buffers(&sent), (Some((0x1000, 64)), None));
        assert_eq!(log_buffers(&[]), (None, None));
    }

    #[test]
    fn logs_are_copied_into_the_buffers_truncated() {
        let mut info = [0u8; 4];
        let state = 0xdead_0001;
        LINKS
            .lock()
            .unwrap()
            .get_or_insert_with(HashMap::new)
            .insert(
                state,
                Link {
                    info_log: Some((info.as_mut_ptr() as usize, info.len())),
                    error_log: None,
                    cubin: None,
                },
            );
        let mut buf = Vec::new();
        let mut enc = protocol::Encoder::new(&mut buf);
        enc.put_bytes(b"linked!");
        enc.put_bytes(b"no errors");
        refresh_logs(state, &mut Decoder::new(&buf)).unwrap();
        LINKS.lock().unwrap().as_mut().unwrap().remove(&state);
        assert_eq!(&info, b"link");
    }
}
