//! `42d85a81-23f6-cb47-8298-f6e78a3aecdc`: tools TLS (size word 24: two functions). What the
//! slots do for profiling tools is not public; cuBLAS calls slot 2 at handle creation and fails
//! with `CUBLAS_STATUS_NOT_SUPPORTED` unless it succeeds (seen on the H200, driver 580.159.04),
//! so both slots are [`no_op_slot!`](super::no_op_slot)s: success, no effect, traced.

use super::{no_op_slot, ExportTable, Known};

/// The table.
pub static TABLE: ExportTable<3> = ExportTable([
    ExportTable::<3>::size_word(),
    no_op_slot!("tools-tls", 1),
    no_op_slot!("tools-tls", 2),
]);

/// Its registry entry.
pub const KNOWN: Known = Known {
    id: super::uuid("42d85a8123f6cb478298f6e78a3aecdc"),
    name: "tools-tls",
    table: || TABLE.address(),
};
