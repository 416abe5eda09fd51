//! `da9151d3-3ae6-cc41-a5c0-4f26d533e328`: asked for by CuPy's stack (7 words; the real driver's
//! first word is 56, so a size word). No public description of it was found: every slot after
//! the size word is an [`unknown_slot!`](super::unknown_slot) that logs its index and returns
//! `CUDA_ERROR_NOT_SUPPORTED`, so a trace shows which slot is needed next.

use super::{unknown_slot, ExportTable, Known};

/// The table.
pub static TABLE: ExportTable<7> = ExportTable([
    ExportTable::<7>::size_word(),
    unknown_slot!("da9151d3", 1),
    unknown_slot!("da9151d3", 2),
    unknown_slot!("da9151d3", 3),
    unknown_slot!("da9151d3", 4),
    unknown_slot!("da9151d3", 5),
    unknown_slot!("da9151d3", 6),
]);

/// Its registry entry.
pub const KNOWN: Known = Known {
    id: super::uuid("da9151d33ae6cc41a5c04f26d533e328"),
    name: "da9151d3-unidentified",
    table: || TABLE.address(),
};
