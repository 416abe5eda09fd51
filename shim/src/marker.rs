//! The one export outside the driver API: the marker by which `vgpu-host` recognises this library
//! as the vgpu shim, not a CUDA driver, when its `--driver` leads here ([`protocol::shim_marker`]).

/// Exported as `vgpu_shim_marker`. Only its presence matters; nothing reads it.
#[export_name = protocol::shim_marker_symbol!()]
pub static SHIM_MARKER: [u8; protocol::shim_marker::CONTENTS.len()] =
    *protocol::shim_marker::CONTENTS;
