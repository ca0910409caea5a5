//! `SOURCE_DATE_EPOCH`: the reproducible-builds convention for the one
//! timestamp a build may embed (<https://reproducible-builds.org/specs/source-date-epoch/>).

use std::env;

use crate::error::Error;

/// The environment variable's name.
pub const SOURCE_DATE_EPOCH: &str = "SOURCE_DATE_EPOCH";

/// The time `SOURCE_DATE_EPOCH` asks for, if it is set (an empty value
/// counts as unset). It must be whole seconds since 1970 that fit the 32-bit
/// `newc` mtime field; anything else is an error rather than a silent 0.
pub fn source_date_epoch() -> Result<Option<u32>, Error> {
    match env::var_os(SOURCE_DATE_EPOCH) {
        None => Ok(None),
        Some(value) if value.is_empty() => Ok(None),
        Some(value) => match value.to_str() {
            Some(value) => parse(value).map(Some),
            None => Err(Error::InvalidSourceDateEpoch {
                value: value.to_string_lossy().into_owned(),
            }),
        },
    }
}

/// Parses a `SOURCE_DATE_EPOCH` value: ASCII digits only (no sign, no
/// spaces), at most `u32::MAX`.
fn parse(value: &str) -> Result<u32, Error> {
    let invalid = || Error::InvalidSourceDateEpoch {
        value: value.to_owned(),
    };
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid());
    }
    value.parse().map_err(|_| invalid())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_seconds_that_fit_are_accepted() {
        assert_eq!(parse("0").unwrap(), 0);
        assert_eq!(parse("1700000000").unwrap(), 1_700_000_000);
        assert_eq!(parse("4294967295").unwrap(), u32::MAX);
    }

    #[test]
    fn anything_else_is_refused_quoting_the_value() {
        for value in ["", "-1", "+5", " 5", "1.5", "4294967296", "soon"] {
            let error = parse(value).unwrap_err();
            assert!(
                matches!(&error, Error::InvalidSourceDateEpoch { value: v } if v == value),
                "{value:?}: {error:?}"
            );
        }
    }
}
