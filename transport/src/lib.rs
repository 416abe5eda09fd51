//! Guest/host transport (filled by issue 3).
