//! Texture and surface objects: `cuTexObjectCreate` and `cuSurfObjectCreate` keep their
//! generated wire formats, but the resource descriptor they take holds a handle (the array or
//! mipmapped array a texture reads), which passes the client's gate here before the driver sees
//! it.

use std::sync::Arc;

use cuda_headers::*;
use protocol::{DecodeError, Decoder, ResponseHeader};

use super::{in_ptr, out_ptr, real_or_unsupported};
use crate::dispatch::gate::{admit, Handles, Kind};
use crate::dispatch::ClientContext;

/// The handle a resource descriptor names, checked: an array or a mipmapped array of the
/// client's. Linear and pitched resources name device addresses, which the driver checks
/// against this worker's own allocations.
fn admit_resource(handles: &Handles, desc: &CUDA_RESOURCE_DESC) -> Result<(), CUresult> {
    let (kind, value) = match desc.resType {
        CUresourcetype::CU_RESOURCE_TYPE_ARRAY => {
            // SAFETY: `resType` selects the union member; every bit pattern of a handle is a
            // valid value, and the gate only compares it.
            let array = unsafe { desc.res.array.hArray };
            (Kind::Array, array as u64)
        }
        CUresourcetype::CU_RESOURCE_TYPE_MIPMAPPED_ARRAY => {
            // SAFETY: as above.
            let mipmapped = unsafe { desc.res.mipmap.hMipmappedArray };
            (Kind::MipmappedArray, mipmapped as u64)
        }
        _ => return Ok(()),
    };
    handles.admit(kind, value).map(|_| ())
}

/// `cuTexObjectCreate` (`inout u64 object, input CUDA_RESOURCE_DESC, input CUDA_TEXTURE_DESC,
/// input CUDA_RESOURCE_VIEW_DESC`) and `cuSurfObjectCreate` (`inout u64 object, input
/// CUDA_RESOURCE_DESC`) → result, `[u64 object]`: the generated wire format, with the
/// descriptor's array passing the gate.
pub fn create(
    name: &str,
    client: &Arc<ClientContext>,
    dec: &mut Decoder<'_>,
    out: &mut Vec<u8>,
) -> Result<(), DecodeError> {
    // SAFETY: an integer.
    let mut object: Option<u64> = unsafe { dec.get_opt_raw()? };
    // SAFETY: a plain C struct of integers, enums and a union holding a handle, which passes
    // the gate below before the driver sees it.
    let resource: Option<CUDA_RESOURCE_DESC> = unsafe { dec.get_opt_raw()? };
    let texture = name == "cuTexObjectCreate";
    let mut sampling: Option<CUDA_TEXTURE_DESC> = None;
    let mut view: Option<CUDA_RESOURCE_VIEW_DESC> = None;
    if texture {
        // SAFETY: plain C structs of integers, enums and floats.
        (sampling, view) = unsafe { (dec.get_opt_raw()?, dec.get_opt_raw()?) };
    }
    dec.finish()?;
    if let Some(desc) = &resource {
        admit!(admit_resource(&client.handles, desc), out);
    }
    let object_p = out_ptr(&mut object);
    // SAFETY: (both arms) every pointer is NULL or to a live local of the driver's type.
    let r = unsafe {
        if texture {
            real_or_unsupported!(cuTexObjectCreate, out)(
                object_p,
                in_ptr(&resource),
                in_ptr(&sampling),
                in_ptr(&view),
            )
        } else {
            real_or_unsupported!(cuSurfObjectCreate, out)(object_p, in_ptr(&resource))
        }
    };
    let mut enc = ResponseHeader::start(out, r.0);
    if let Some(o) = object {
        enc.put(o);
    }
    Ok(())
}
