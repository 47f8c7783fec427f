//! errno values given by name or number, shared by every kind that fails a call with one.

use nix::errno::Errno;

use crate::error::RequestError;

/// An errno by name (`EIO`, case-insensitive) or number (1..=4095).
pub fn parse_errno(input: &str) -> Result<i32, RequestError> {
    let s = input.trim();
    let bad = || RequestError::BadErrno {
        input: input.to_string(),
    };
    if let Ok(n) = s.parse::<i32>() {
        return if (1..=4095).contains(&n) {
            Ok(n)
        } else {
            Err(bad())
        };
    }
    let upper = s.to_ascii_uppercase();
    (1..=4095)
        .find(|&n| {
            let e = Errno::from_raw(n);
            e != Errno::UnknownErrno && format!("{e:?}") == upper
        })
        .ok_or_else(bad)
}

/// The errno's name, e.g. 5 → "EIO" (the number when it has none).
pub fn errno_name(n: i32) -> String {
    match Errno::from_raw(n) {
        Errno::UnknownErrno => n.to_string(),
        e => format!("{e:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_by_name_or_number() {
        assert_eq!(parse_errno("EIO").unwrap(), libc::EIO);
        assert_eq!(parse_errno("enospc").unwrap(), libc::ENOSPC);
        assert_eq!(parse_errno("EDQUOT").unwrap(), libc::EDQUOT);
        assert_eq!(parse_errno("ECONNREFUSED").unwrap(), libc::ECONNREFUSED);
        assert_eq!(parse_errno("etimedout").unwrap(), libc::ETIMEDOUT);
        assert_eq!(parse_errno("13").unwrap(), libc::EACCES);
        assert_eq!(parse_errno("111").unwrap(), 111);
        for bad in ["", "EFOO", "ENOTATHING", "0", "-5", "5000"] {
            assert!(parse_errno(bad).is_err(), "{bad}");
        }
        assert_eq!(errno_name(libc::EROFS), "EROFS");
    }
}
