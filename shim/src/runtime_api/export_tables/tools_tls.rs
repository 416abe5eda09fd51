//! `42d85a81-23f6-cb47-8298-f6e78a3aecdc`: tools TLS. Only its size word (24, 3 words) is known to
//! be read; slots 1 and 2 are [`unknown_slot!`](super::unknown_slot)s.

use super::{unknown_slot, ExportTable, Known};

/// The table.
pub static TABLE: ExportTable<3> = ExportTable([
    ExportTable::<3>::size_word(),
    unknown_slot!("tools-tls", 1),
    unknown_slot!("tools-tls", 2),
]);

/// Its registry entry.
pub const KNOWN: Known = Known {
    id: super::uuid("42d85a8123f6cb478298f6e78a3aecdc"),
    name: "tools-tls",
    table: || TABLE.address(),
};
