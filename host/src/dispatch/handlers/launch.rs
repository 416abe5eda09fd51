//! Kernel launches: parameter layouts from the host driver, packed parameter buffers from the
//! guest. The driver reads each parameter at its real offset and size, so the pointers it gets
//! are built from the host's own layout of the function ([`Layouts`]), never from the guest's
//! list: a guest list that differs from it, or a buffer shorter than it, is refused with
//! `CUDA_ERROR_INVALID_VALUE` before the driver sees the launch.

use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::{Arc, Mutex};

use cuda_headers::*;
use protocol::{DecodeError, Decoder, ResponseHeader};

use super::{real_or_unsupported, respond};
use crate::dispatch::gate::{admit, Handles};
use crate::dispatch::ClientContext;

/// At most this many kernel parameters (the driver's limit is far lower in practice).
const MAX_PARAMS: u32 = 4096;
/// Largest packed parameter buffer (CUDA 12.1+ allows 32 KiB of parameters).
const MAX_PARAM_BYTES: usize = 64 * 1024;

/// `(offset, size)` of each parameter of `func`, from `cuFuncGetParamInfo` (or
/// `cuKernelGetParamInfo` for a `CUkernel` used as a function).
fn layout_of(func: CUfunction) -> Result<Vec<(u32, u32)>, CUresult> {
    let mut layout = Vec::new();
    let by_func = crate::driver::real::cuFuncGetParamInfo();
    let by_kernel = crate::driver::real::cuKernelGetParamInfo();
    for index in 0..MAX_PARAMS {
        let (mut offset, mut size) = (0usize, 0usize);
        // SAFETY: out-pointers are live locals; the handle was admitted by the gate (or given
        // by the driver).
        let mut r = by_func.map_or(CUresult::CUDA_ERROR_NOT_SUPPORTED, |f| unsafe {
            f(func, index as usize, &mut offset, &mut size)
        });
        if r != CUresult::CUDA_SUCCESS && r != CUresult::CUDA_ERROR_INVALID_VALUE {
            // SAFETY: as above.
            r = by_kernel.map_or(r, |f| unsafe {
                f(func.cast(), index as usize, &mut offset, &mut size)
            });
        }
        match r {
            CUresult::CUDA_SUCCESS => layout.push((offset as u32, size as u32)),
            CUresult::CUDA_ERROR_INVALID_VALUE if index > 0 || layout.is_empty() => break,
            other => return Err(other),
        }
    }
    Ok(layout)
}

/// One function's parameters: `(offset, size)` each, in order.
pub type Layout = Arc<[(u32, u32)]>;

/// Bytes the packed parameters of `layout` take: the end of the furthest parameter.
pub(crate) fn packed_len(layout: &[(u32, u32)]) -> usize {
    layout
        .iter()
        .map(|&(offset, size)| offset as usize + size as usize)
        .max()
        .unwrap_or(0)
}

/// The parameter layouts of one client's functions and kernels, as the driver reports them, kept
/// from the first ask until the client unloads a module or library (a handle may then come back
/// for other code). One lookup per launch.
#[derive(Debug, Default)]
pub struct Layouts(Mutex<HashMap<u64, Layout>>);

impl Layouts {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Layout>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The layout of `func` (a `CUfunction` or a `CUkernel`): kept, else from the driver.
    ///
    /// # Errors
    /// The driver's result for a handle it does not know.
    pub fn of(&self, func: CUfunction) -> Result<Layout, CUresult> {
        if let Some(layout) = self.map().get(&(func as u64)) {
            return Ok(layout.clone());
        }
        let layout: Layout = layout_of(func)?.into();
        self.map().insert(func as u64, layout.clone());
        Ok(layout)
    }

    /// Forgets every kept layout (after an unload).
    pub fn forget(&self) {
        self.map().clear();
    }
}

/// `PARAM_LAYOUT`: `u64 func` → result, `u32 n, n × (u32 offset, u32 size)`.
pub fn param_layout(
    client: &ClientContext,
    dec: &mut Decoder<'_>,
    out: &mut Vec<u8>,
) -> Result<(), DecodeError> {
    let func: u64 = dec.get()?;
    dec.finish()?;
    let func = admit!(client.handles.function(func), out);
    match client.layouts.of(func) {
        Ok(layout) => {
            let mut enc = ResponseHeader::start(out, 0);
            enc.put(layout.len() as u32);
            for &(offset, size) in layout.iter() {
                enc.put(offset);
                enc.put(size);
            }
        }
        Err(r) => respond(out, r),
    }
    Ok(())
}

/// `cuModuleUnload`/`cuLibraryUnload`: the generated call (whose gate step forgets the module or
/// library and the functions and kernels it held), then the client's kept layouts go. A library
/// of the client's first loses its `__managed__` variables' mirrors (`managed.rs`), before the
/// driver frees their memory, so that no push or pull reaches it afterwards.
pub fn unload(
    name: &str,
    client: &Arc<ClientContext>,
    dec: &mut Decoder<'_>,
    out: &mut Vec<u8>,
) -> Result<(), DecodeError> {
    if name == "cuLibraryUnload" {
        if let Ok(library) = dec.clone().get::<u64>() {
            if client.handles.library(library).is_ok() {
                client.mirrors.forget_library(library);
            }
        }
    }
    let outcome = super::generated_half(name, client, dec, out);
    client.layouts.forget();
    outcome
}

/// Launch dimensions as sent by the guest.
struct Dims {
    grid: [u32; 3],
    block: [u32; 3],
    shared: u32,
    stream: u64,
}

impl Dims {
    fn decode(dec: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            grid: [dec.get()?, dec.get()?, dec.get()?],
            block: [dec.get()?, dec.get()?, dec.get()?],
            shared: dec.get()?,
            stream: dec.get()?,
        })
    }
}

/// Parameters as the driver wants them: a pointer per parameter into `packed`, or the `extra`
/// array around it.
pub(crate) struct Params {
    packed: Vec<u8>,
    pointers: Vec<*mut c_void>,
    extra: Vec<*mut c_void>,
    /// Boxed: `extra` points at it, and `Params` moves.
    size: Box<usize>,
}

const FORM_NONE: u8 = 0;
const FORM_POINTERS: u8 = 1;
const FORM_EXTRA: u8 = 2;

impl Params {
    /// `u8 form, bytes packed, u32 n, n × (u32 offset, u32 size)`: form 1 is `kernelParams`
    /// (packed at the layout's offsets), form 2 the `extra` buffer. `func` is the function or
    /// kernel launched: its real layout, from `layouts`, places the pointers, and the guest's
    /// list must equal it; the `extra` buffer must hold every parameter; no parameters at all is
    /// only allowed for a function without any.
    pub(crate) fn decode(
        dec: &mut Decoder<'_>,
        func: CUfunction,
        layouts: &Layouts,
    ) -> Result<Result<Self, CUresult>, DecodeError> {
        let form: u8 = dec.get()?;
        let packed = dec.get_bytes()?.to_vec();
        let count: u32 = dec.get()?;
        if count > MAX_PARAMS || packed.len() > MAX_PARAM_BYTES {
            return Ok(Err(CUresult::CUDA_ERROR_INVALID_VALUE));
        }
        let claimed: Vec<(u32, u32)> = (0..count)
            .map(|_| Ok((dec.get::<u32>()?, dec.get::<u32>()?)))
            .collect::<Result<_, DecodeError>>()?;
        if !matches!(form, FORM_NONE | FORM_POINTERS | FORM_EXTRA) {
            return Err(DecodeError::BadTag {
                what: "kernel parameter form",
                tag: form,
            });
        }
        let layout = match layouts.of(func) {
            Ok(layout) => layout,
            Err(r) => return Ok(Err(r)),
        };
        let needed = packed_len(&layout);
        let refused = match form {
            FORM_NONE => !layout.is_empty(),
            FORM_POINTERS => claimed[..] != layout[..] || needed > packed.len(),
            _ => needed > packed.len(),
        };
        if refused {
            tracing::debug!(
                func = func as u64,
                form,
                "refusing kernel parameters that do not match the function's layout"
            );
            return Ok(Err(CUresult::CUDA_ERROR_INVALID_VALUE));
        }
        let mut params = Params {
            size: Box::new(packed.len()),
            packed,
            pointers: Vec::new(),
            extra: Vec::new(),
        };
        if form == FORM_POINTERS {
            for &(offset, _) in layout.iter() {
                // SAFETY: offset + size <= needed <= len (checked above), so the pointer is
                // inside `packed`.
                params
                    .pointers
                    .push(unsafe { params.packed.as_mut_ptr().add(offset as usize) }.cast());
            }
        } else if form == FORM_EXTRA {
            params.extra = vec![
                CU_LAUNCH_PARAM_BUFFER_POINTER_AS_INT as usize as *mut c_void,
                params.packed.as_mut_ptr().cast(),
                CU_LAUNCH_PARAM_BUFFER_SIZE_AS_INT as usize as *mut c_void,
                (&mut *params.size as *mut usize).cast(),
                CU_LAUNCH_PARAM_END_AS_INT as usize as *mut c_void,
            ];
        }
        Ok(Ok(params))
    }

    pub(crate) fn kernel_params(&mut self) -> *mut *mut c_void {
        if self.pointers.is_empty() {
            std::ptr::null_mut()
        } else {
            self.pointers.as_mut_ptr()
        }
    }

    pub(crate) fn extra(&mut self) -> *mut *mut c_void {
        if self.extra.is_empty() {
            std::ptr::null_mut()
        } else {
            self.extra.as_mut_ptr()
        }
    }
}

/// `cuLaunchKernel*`/`cuLaunchCooperativeKernel*`: `u64 func`, dims (`3 × u32 grid, 3 × u32
/// block, u32 shared, u64 stream`), params → result.
pub fn launch_kernel(
    name: &str,
    client: &Arc<ClientContext>,
    dec: &mut Decoder<'_>,
    out: &mut Vec<u8>,
) -> Result<(), DecodeError> {
    let func: u64 = dec.get()?;
    let d = Dims::decode(dec)?;
    let f = admit!(client.handles.function(func), out);
    let s = admit!(client.handles.stream(d.stream), out);
    let mut params = match Params::decode(dec, f, &client.layouts)? {
        Ok(p) => p,
        Err(r) => {
            respond(out, r);
            return Ok(());
        }
    };
    dec.finish()?;
    let (kp, ex) = (params.kernel_params(), params.extra());
    // SAFETY: parameter pointers point into `params.packed`, alive for the call; the
    // driver copies parameters at launch.
    let r = unsafe {
        match name {
            "cuLaunchKernel" => real_or_unsupported!(cuLaunchKernel, out)(
                f, d.grid[0], d.grid[1], d.grid[2], d.block[0], d.block[1], d.block[2], d.shared,
                s, kp, ex,
            ),
            "cuLaunchKernel_ptsz" => real_or_unsupported!(cuLaunchKernel_ptsz, out)(
                f, d.grid[0], d.grid[1], d.grid[2], d.block[0], d.block[1], d.block[2], d.shared,
                s, kp, ex,
            ),
            "cuLaunchCooperativeKernel_ptsz" => {
                real_or_unsupported!(cuLaunchCooperativeKernel_ptsz, out)(
                    f, d.grid[0], d.grid[1], d.grid[2], d.block[0], d.block[1], d.block[2],
                    d.shared, s, kp,
                )
            }
            _ => real_or_unsupported!(cuLaunchCooperativeKernel, out)(
                f, d.grid[0], d.grid[1], d.grid[2], d.block[0], d.block[1], d.block[2], d.shared,
                s, kp,
            ),
        }
    };
    respond(out, r);
    Ok(())
}

/// Admits the event a launch attribute names (programmatic and launch-completion events); other
/// attributes hold no handle the gate keeps.
///
/// # Errors
/// As [`crate::dispatch::gate::Handles::admit`].
pub(crate) fn attribute_events(
    handles: &Handles,
    attr: &CUlaunchAttribute,
) -> Result<(), CUresult> {
    // SAFETY: the union member read is the one the attribute's id selects; both are plain data.
    let event = unsafe {
        match attr.id {
            CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_EVENT => {
                attr.value.programmaticEvent.event
            }
            CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_LAUNCH_COMPLETION_EVENT => {
                attr.value.launchCompletionEvent.event
            }
            _ => return Ok(()),
        }
    };
    handles.event(event as u64).map(|_| ())
}

/// Largest attribute list accepted for `cuLaunchKernelEx`.
const MAX_ATTRS: u32 = 64;

/// `cuLaunchKernelEx*`: `u64 func`, dims, `u32 n, n × CUlaunchAttribute`, params → result.
pub fn launch_kernel_ex(
    name: &str,
    client: &Arc<ClientContext>,
    dec: &mut Decoder<'_>,
    out: &mut Vec<u8>,
) -> Result<(), DecodeError> {
    let func: u64 = dec.get()?;
    let d = Dims::decode(dec)?;
    let count: u32 = dec.get()?;
    if count > MAX_ATTRS {
        respond(out, CUresult::CUDA_ERROR_INVALID_VALUE);
        return Ok(());
    }
    // SAFETY: CUlaunchAttribute is a plain C struct (an id and a union of integers, handles and
    // device addresses).
    let mut attrs: Vec<CUlaunchAttribute> = (0..count)
        .map(|_| unsafe { dec.get_raw() })
        .collect::<Result<_, _>>()?;
    let f = admit!(client.handles.function(func), out);
    let stream = admit!(client.handles.stream(d.stream), out);
    for attr in &attrs {
        admit!(attribute_events(&client.handles, attr), out);
    }
    let mut params = match Params::decode(dec, f, &client.layouts)? {
        Ok(p) => p,
        Err(r) => {
            respond(out, r);
            return Ok(());
        }
    };
    dec.finish()?;
    let config = CUlaunchConfig {
        gridDimX: d.grid[0],
        gridDimY: d.grid[1],
        gridDimZ: d.grid[2],
        blockDimX: d.block[0],
        blockDimY: d.block[1],
        blockDimZ: d.block[2],
        sharedMemBytes: d.shared,
        hStream: stream,
        attrs: if attrs.is_empty() {
            std::ptr::null_mut()
        } else {
            attrs.as_mut_ptr()
        },
        numAttrs: count,
    };
    let (kp, ex) = (params.kernel_params(), params.extra());
    // SAFETY: `config`, its attributes and the parameters live for the whole call.
    let r = unsafe {
        if name.ends_with("_ptsz") {
            real_or_unsupported!(cuLaunchKernelEx_ptsz, out)(&config, f, kp, ex)
        } else {
            real_or_unsupported!(cuLaunchKernelEx, out)(&config, f, kp, ex)
        }
    };
    respond(out, r);
    Ok(())
}
