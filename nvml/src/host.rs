//! The facts only the host knows (special calls `NVML_FACTS` and `NVML_MEMORY`). They go over
//! the calling thread's own shim channel, through the shim's private export table
//! (`cuGetExportTable` of `vgpu.special.v1`, `shim/src/runtime_api/export_tables/vgpu_private.rs`),
//! so the host serves them from the guest process's one worker. The facade ships with the shim,
//! built from the same tree; a `libcuda.so.1` without the table (not a vgpu shim) gives
//! [`HostError::NoShim`], and the facts concerned answer `NVML_ERROR_NOT_SUPPORTED` (memory then
//! comes from CUDA, see `exports.rs`).

use protocol::special::{
    self, nvml::Facts, nvml::FactsRequest, nvml::MemoryFacts, nvml::Processes,
};
use protocol::Decoder;

/// Why the host's facts are unavailable.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// The loaded `libcuda.so.1` is not a vgpu shim with the private table.
    #[error(
        "libcuda.so.1 has no vgpu private table for host questions (is the vgpu shim preloaded?)"
    )]
    NoShim,
    /// The host (or the shim) answered with a non-zero result.
    #[error("the vgpu host answered {call} with result {result}")]
    Refused {
        /// Which exchange.
        call: &'static str,
        /// The result code.
        result: u32,
    },
    /// The answer did not decode.
    #[error("malformed answer from the vgpu host: {0}")]
    Malformed(#[from] protocol::DecodeError),
}

/// The shim's private table: UUID bytes and the slot-1 signature (see the module docs).
const PRIVATE_TABLE: [u8; 16] = *b"vgpu.special.v1\0";
type SpecialCall =
    unsafe extern "system" fn(u32, *const u8, usize, *mut u8, usize, *mut usize) -> std::ffi::c_int;

/// Slot 1 of the shim's private table, if the loaded `libcuda.so.1` is a shim that has it.
fn shim_special_call() -> Option<SpecialCall> {
    static SLOT: std::sync::OnceLock<Option<SpecialCall>> = std::sync::OnceLock::new();
    *SLOT.get_or_init(|| {
        type GetExportTable =
            unsafe extern "system" fn(*mut *const usize, *const [u8; 16]) -> std::ffi::c_int;
        // SAFETY: a NUL-terminated name; RTLD_NOLOAD only looks the library up.
        let lib =
            unsafe { libc::dlopen(c"libcuda.so.1".as_ptr(), libc::RTLD_NOW | libc::RTLD_NOLOAD) };
        if lib.is_null() {
            return None;
        }
        // SAFETY: a live handle (never closed) and a NUL-terminated name.
        let get = unsafe { libc::dlsym(lib, c"cuGetExportTable".as_ptr()) };
        if get.is_null() {
            return None;
        }
        // SAFETY: the driver API declares cuGetExportTable with this signature (cuda.h).
        let get: GetExportTable = unsafe { std::mem::transmute(get) };
        let mut table: *const usize = std::ptr::null();
        // SAFETY: out-pointer to a live local and a 16-byte id.
        if unsafe { get(&mut table, &PRIVATE_TABLE) } != 0 || table.is_null() {
            return None;
        }
        // SAFETY: the shim's table starts with its size in bytes; slot 1 exists when the size
        // says so, and holds a function of the `SpecialCall` signature.
        unsafe {
            if table.read() < 2 * std::mem::size_of::<usize>() {
                return None;
            }
            let slot = table.add(1).read();
            (slot != 0).then(|| std::mem::transmute::<usize, SpecialCall>(slot))
        }
    })
}

/// Sends special call `call` with body `body` over the shim's channel; `None` without the table.
fn via_shim(call: protocol::CallId, body: &[u8]) -> Option<Result<Vec<u8>, HostError>> {
    let send = shim_special_call()?;
    let mut answer = vec![0u8; 4096];
    loop {
        let mut len = 0usize;
        // SAFETY: `body` and `answer` are live buffers of the lengths passed.
        let r = unsafe {
            send(
                call.0,
                body.as_ptr(),
                body.len(),
                answer.as_mut_ptr(),
                answer.len(),
                &mut len,
            )
        };
        if r == 0 {
            answer.truncate(len);
            return Some(Ok(answer));
        }
        // The answer did not fit: the shim said how long it is (bounded, once).
        if r == 1 && len > answer.len() && len <= 1 << 20 {
            answer.resize(len, 0);
            continue;
        }
        return Some(Err(HostError::Refused {
            call: "special call through the shim",
            result: r as u32,
        }));
    }
}

/// The memory of the device at `bus_id` as the host's real NVML counts it.
///
/// # Errors
/// A [`HostError`] (the host has no NVML, or no vgpu shim is loaded): the caller answers from
/// CUDA instead.
pub fn fetch_memory(bus_id: &str) -> Result<MemoryFacts, HostError> {
    let mut body = Vec::new();
    protocol::Encoder::new(&mut body).put_bytes(bus_id.as_bytes());
    let answer = via_shim(special::NVML_MEMORY, &body).ok_or(HostError::NoShim)??;
    let mut dec = Decoder::new(&answer);
    let memory = MemoryFacts::decode(&mut dec)?;
    dec.finish()?;
    Ok(memory)
}

/// Asks the host for the facts about the devices at `bus_ids` (in order).
///
/// # Errors
/// A [`HostError`]; the caller answers `NVML_ERROR_NOT_SUPPORTED` for the facts concerned.
pub fn fetch_facts(bus_ids: Vec<String>) -> Result<Facts, HostError> {
    let n = bus_ids.len();
    let mut body = Vec::new();
    FactsRequest { bus_ids }.encode(&mut protocol::Encoder::new(&mut body));
    let answer = via_shim(special::NVML_FACTS, &body).ok_or(HostError::NoShim)??;
    let mut dec = Decoder::new(&answer);
    let facts = Facts::decode(&mut dec, n)?;
    dec.finish()?;
    Ok(facts)
}

/// The guest's processes that use the GPU and their device memory, as the host counts them
/// (`special::NVML_PROCESSES`).
///
/// # Errors
/// A [`HostError`]; the caller answers `NVML_ERROR_NOT_SUPPORTED`.
pub fn fetch_processes() -> Result<Processes, HostError> {
    let answer = via_shim(special::NVML_PROCESSES, &[]).ok_or(HostError::NoShim)??;
    let mut dec = Decoder::new(&answer);
    let processes = Processes::decode(&mut dec)?;
    dec.finish()?;
    Ok(processes)
}
