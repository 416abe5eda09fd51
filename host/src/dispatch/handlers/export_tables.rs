//! Host halves of export-table slots the guest cannot answer alone: they run the real driver's
//! slot in this worker thread (whose current context is the guest thread's) and send back what it
//! produced. The guest halves are in `shim/src/runtime_api/export_tables/`.

use cuda_headers::{CUdevice, CUdevice_attribute, CUresult, CUuuid};
use protocol::{DecodeError, Decoder, ResponseHeader};

use super::respond;

/// The table `1734dc26…` in memory order (see the guest's `unit_maps.rs`).
const UNIT_MAPS_TABLE: [u8; 16] = [
    0x17, 0x34, 0xdc, 0x26, 0x80, 0x0d, 0x47, 0x45, 0x87, 0x26, 0xc0, 0xf1, 0xe7, 0xdd, 0x8b, 0xca,
];
/// Slot that returns the two maps, and slot that frees them.
const MAPS_SLOT: usize = 4;
const FREE_SLOT: usize = 13;
/// Upper bound on a map's length: one byte per multiprocessor is already more than one per unit.
const MAX_MAP: usize = 64 * 1024;

type MapsFn = unsafe extern "system" fn(*mut *mut u8, *mut *mut u8) -> CUresult;
type FreeFn = unsafe extern "system" fn(*mut u8, *mut u8) -> CUresult;

/// The real driver's table, checked to hold both slots.
fn unit_maps_table() -> Result<(MapsFn, FreeFn), CUresult> {
    let get = crate::driver::real::cuGetExportTable().ok_or(CUresult::CUDA_ERROR_NOT_SUPPORTED)?;
    let id = CUuuid {
        bytes: UNIT_MAPS_TABLE.map(|b| b as std::ffi::c_char),
    };
    let mut table: *const std::ffi::c_void = std::ptr::null();
    // SAFETY: both pointers are live locals.
    let r = unsafe { get(&mut table, &id) };
    if r != CUresult::CUDA_SUCCESS {
        return Err(r);
    }
    if table.is_null() {
        return Err(CUresult::CUDA_ERROR_NOT_FOUND);
    }
    let words = table.cast::<usize>();
    // SAFETY: the driver's table starts with its size in bytes (observed: 136).
    let size = unsafe { words.read() };
    if size < (FREE_SLOT + 1) * std::mem::size_of::<usize>() {
        tracing::warn!(
            size,
            "export table 1734dc26 is too small for slots 4 and 13"
        );
        return Err(CUresult::CUDA_ERROR_NOT_SUPPORTED);
    }
    // SAFETY: both slots lie inside the table (size checked) and hold functions of these
    // signatures (observed on driver 580.159.04; see the guest half).
    unsafe {
        let maps = words.add(MAPS_SLOT).read();
        let free = words.add(FREE_SLOT).read();
        if maps == 0 || free == 0 {
            return Err(CUresult::CUDA_ERROR_NOT_SUPPORTED);
        }
        Ok((
            std::mem::transmute::<usize, MapsFn>(maps),
            std::mem::transmute::<usize, FreeFn>(free),
        ))
    }
}

/// Multiprocessors of the current context's device: an upper bound on the units a map covers.
fn multiprocessors() -> Result<usize, CUresult> {
    let get_device =
        crate::driver::real::cuCtxGetDevice().ok_or(CUresult::CUDA_ERROR_NOT_SUPPORTED)?;
    let attribute =
        crate::driver::real::cuDeviceGetAttribute().ok_or(CUresult::CUDA_ERROR_NOT_SUPPORTED)?;
    let mut device: CUdevice = 0;
    // SAFETY: out-pointer to a live local.
    let r = unsafe { get_device(&mut device) };
    if r != CUresult::CUDA_SUCCESS {
        return Err(r);
    }
    let mut count = 0i32;
    // SAFETY: out-pointer to a live local.
    let r = unsafe {
        attribute(
            &mut count,
            CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT,
            device,
        )
    };
    if r != CUresult::CUDA_SUCCESS {
        return Err(r);
    }
    Ok((count.max(0) as usize).min(MAX_MAP))
}

/// Up to `len` bytes at `p`, read through `process_vm_readv` on this process: the driver does not
/// say how long its arrays are, and a read past their end must fail cleanly, not fault.
fn read_own(p: *const u8, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    let local = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: len,
    };
    let remote = libc::iovec {
        iov_base: p.cast_mut().cast(),
        iov_len: len,
    };
    // SAFETY: `local` is our own buffer of `len` bytes; the kernel checks `remote` and returns
    // EFAULT or a short count instead of faulting.
    let n = unsafe { libc::process_vm_readv(libc::getpid(), &local, 1, &remote, 1, 0) };
    buf.truncate(n.max(0) as usize);
    buf
}

/// `UNIT_MAPS`: nothing → result, `bytes first`, `bytes second`: slot 4 of table `1734dc26…`
/// run for the current context, one byte per multiprocessor copied from each array (the units
/// the arrays describe are never more), then slot 13 frees the driver's arrays.
pub fn unit_maps(dec: &mut Decoder<'_>, out: &mut Vec<u8>) -> Result<(), DecodeError> {
    dec.finish()?;
    match collect_unit_maps() {
        Ok((first, second)) => {
            let mut enc = ResponseHeader::start(out, CUresult::CUDA_SUCCESS.0);
            enc.put_bytes(&first);
            enc.put_bytes(&second);
        }
        Err(r) => respond(out, r),
    }
    Ok(())
}

fn collect_unit_maps() -> Result<(Vec<u8>, Vec<u8>), CUresult> {
    let (maps, free) = unit_maps_table()?;
    let len = multiprocessors()?;
    let (mut first, mut second) = (std::ptr::null_mut(), std::ptr::null_mut());
    // SAFETY: out-pointers to live locals.
    let r = unsafe { maps(&mut first, &mut second) };
    if r != CUresult::CUDA_SUCCESS {
        return Err(r);
    }
    let copied = (
        if first.is_null() {
            Vec::new()
        } else {
            read_own(first, len)
        },
        if second.is_null() {
            Vec::new()
        } else {
            read_own(second, len)
        },
    );
    // SAFETY: the driver's own arrays from slot 4, handed back once.
    let r = unsafe { free(first, second) };
    if r != CUresult::CUDA_SUCCESS {
        tracing::warn!(
            result = r.0,
            "export table 1734dc26 slot 13 failed to free the maps"
        );
    }
    Ok(copied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_reads_stop_at_unmapped_memory() {
        let bytes = [7u8; 32];
        assert_eq!(read_own(bytes.as_ptr(), 32), bytes.to_vec());
        // A page that is certainly not mapped reads as nothing, without a fault.
        assert!(read_own(8 as *const u8, 16).is_empty());
    }
}
