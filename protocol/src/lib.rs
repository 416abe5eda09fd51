//! Wire protocol (filled by issue 4).
