//! The host executor (filled by issue 4).
