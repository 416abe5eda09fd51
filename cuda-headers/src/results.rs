//! The `CUresult` codes as the real driver names and describes them: what `cuGetErrorName` and
//! `cuGetErrorString` answer, and the names the traces and [`crate::CuError`] show.
//!
//! The one copy of the data is `probe/errstrings-580.159.04.tsv`, read on the GPU machine from
//! driver 580.159.04 (`probe/probe_error_strings.c` writes it): one code a line, `code<TAB>name<TAB>
//! string`, sorted by code. It is parsed here at compile time: every tab and newline of the file
//! becomes a NUL, so each field is a `'static` C string in place, and a malformed file (a missing
//! field, a code out of order, a NUL or a carriage return) fails the build.

use std::ffi::CStr;

/// The driver the table was read from.
pub const OBSERVED_DRIVER: &str = "580.159.04";

/// The committed table, as read from the driver.
pub const SOURCE: &str = include_str!("../probe/errstrings-580.159.04.tsv");

/// One `CUresult` code the driver knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResultCode {
    /// The numeric value.
    pub code: u32,
    /// What `cuGetErrorName` answers, e.g. `CUDA_ERROR_INVALID_VALUE`.
    pub name: &'static CStr,
    /// What `cuGetErrorString` answers, e.g. `invalid argument`.
    pub string: &'static CStr,
}

/// How many codes the table holds (one per line).
const CODES: usize = count_lines(SOURCE.as_bytes());

/// [`SOURCE`] with every field separator and line end replaced by NUL.
const FIELDS: &[u8] = &nul_separated::<{ SOURCE.len() }>(SOURCE.as_bytes());

/// Every code the driver names, sorted by code.
pub static RESULT_CODES: [ResultCode; CODES] = parse(FIELDS);

/// Looks a code up; `None` for a value the driver does not name.
pub fn lookup(code: u32) -> Option<&'static ResultCode> {
    RESULT_CODES
        .binary_search_by_key(&code, |r| r.code)
        .ok()
        .map(|i| &RESULT_CODES[i])
}

const fn count_lines(text: &[u8]) -> usize {
    let mut lines = 0;
    let mut i = 0;
    while i < text.len() {
        if text[i] == b'\n' {
            lines += 1;
        }
        i += 1;
    }
    lines
}

const fn nul_separated<const N: usize>(text: &[u8]) -> [u8; N] {
    assert!(text.len() == N);
    assert!(
        N > 0 && text[N - 1] == b'\n',
        "the error-string table must end with a newline"
    );
    let mut out = [0u8; N];
    let mut i = 0;
    while i < N {
        out[i] = match text[i] {
            b'\t' | b'\n' => 0,
            0 | b'\r' => panic!("the error-string table holds a NUL or a carriage return"),
            byte => byte,
        };
        i += 1;
    }
    out
}

/// The C string that starts at `start` and its NUL's index; panics on an empty field.
const fn field(fields: &'static [u8], start: usize) -> (&'static CStr, usize) {
    let mut end = start;
    while fields[end] != 0 {
        end += 1;
    }
    assert!(end > start, "an empty field in the error-string table");
    let (with_nul, _) = fields.split_at(end + 1);
    let (_, with_nul) = with_nul.split_at(start);
    match CStr::from_bytes_with_nul(with_nul) {
        Ok(text) => (text, end),
        Err(_) => panic!("unreachable: exactly one NUL, at the end"),
    }
}

const fn decimal(text: &CStr) -> u32 {
    let digits = text.to_bytes();
    let mut value: u32 = 0;
    let mut i = 0;
    while i < digits.len() {
        assert!(
            digits[i].is_ascii_digit(),
            "a code in the error-string table is not a decimal number"
        );
        value = match value.checked_mul(10) {
            Some(v) => match v.checked_add((digits[i] - b'0') as u32) {
                Some(v) => v,
                None => panic!("a code in the error-string table does not fit a CUresult"),
            },
            None => panic!("a code in the error-string table does not fit a CUresult"),
        };
        i += 1;
    }
    value
}

const fn has_prefix(text: &CStr, prefix: &[u8]) -> bool {
    let text = text.to_bytes();
    if text.len() < prefix.len() {
        return false;
    }
    let mut i = 0;
    while i < prefix.len() {
        if text[i] != prefix[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// Three fields per line: code, name, string. `fields` ends with a NUL (the last newline), so
/// each line's three fields are complete.
const fn parse(fields: &'static [u8]) -> [ResultCode; CODES] {
    const EMPTY: ResultCode = ResultCode {
        code: 0,
        name: c"",
        string: c"",
    };
    let mut table = [EMPTY; CODES];
    let mut at = 0;
    let mut row = 0;
    while row < CODES {
        let (code, end) = field(fields, at);
        let (name, end) = field(fields, end + 1);
        let (string, end) = field(fields, end + 1);
        at = end + 1;
        let code = decimal(code);
        assert!(
            has_prefix(name, b"CUDA_"),
            "a name in the error-string table does not start with CUDA_ (a line with other than three fields?)"
        );
        assert!(
            row == 0 || table[row - 1].code < code,
            "the error-string table is not sorted by code, or names a code twice"
        );
        table[row] = ResultCode { code, name, string };
        row += 1;
    }
    assert!(
        at == fields.len(),
        "the error-string table has lines with other than three fields"
    );
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The file read with an ordinary parser, to check the compile-time one.
    fn rows() -> Vec<(u32, String, String)> {
        SOURCE
            .lines()
            .map(|line| {
                let f: Vec<&str> = line.split('\t').collect();
                assert_eq!(f.len(), 3, "{line:?}");
                (f[0].parse().expect("code"), f[1].into(), f[2].into())
            })
            .collect()
    }

    #[test]
    fn the_table_is_the_observed_file() {
        let rows = rows();
        assert_eq!(rows.len(), 101, "driver 580.159.04 names 101 codes");
        assert_eq!(RESULT_CODES.len(), rows.len());
        for (entry, (code, name, string)) in RESULT_CODES.iter().zip(&rows) {
            assert_eq!(entry.code, *code);
            assert_eq!(entry.name.to_str(), Ok(name.as_str()));
            assert_eq!(entry.string.to_str(), Ok(string.as_str()));
        }
    }

    #[test]
    fn lookup_finds_every_code_and_nothing_else() {
        for entry in &RESULT_CODES {
            assert_eq!(lookup(entry.code), Some(entry));
        }
        assert_eq!(lookup(1).map(|r| r.string), Some(c"invalid argument"));
        assert_eq!(
            lookup(crate::CUresult::CUDA_ERROR_UNKNOWN.0).map(|r| (r.name, r.string)),
            Some((c"CUDA_ERROR_UNKNOWN", c"unknown error"))
        );
        for unknown in [9, 33, 1000, 123_456, u32::MAX] {
            assert!(lookup(unknown).is_none(), "{unknown}");
        }
    }
}
