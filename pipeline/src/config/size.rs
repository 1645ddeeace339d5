//! A size in bytes, as a config writes it: digits and a binary unit ("512KiB", "10MiB",
//! "1GiB", or "100B" for bytes), read by [`parse_size`] into [`ByteSize`].

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

/// The units `max_request_body` takes, each with its size in bytes.
pub(crate) const SIZE_UNITS: [(&str, u64); 4] = [
    ("GiB", 1 << 30),
    ("MiB", 1 << 20),
    ("KiB", 1 << 10),
    ("B", 1),
];

/// What `expected ...` says in a size error.
pub(crate) const SIZE_EXAMPLES: &str = r#"a size with a unit like "512KiB", "10MiB" or "1GiB""#;

/// A size in bytes, written with a binary unit: "512KiB", "10MiB", "1GiB", "100B".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ByteSize(pub(crate) u64);

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SizeVisitor;
        impl Visitor<'_> for SizeVisitor {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(SIZE_EXAMPLES)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ByteSize, E> {
                Err(E::custom(format_args!(
                    "invalid size {v}: expected {SIZE_EXAMPLES}, in quotes (\"{v}B\" for bytes)"
                )))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteSize, E> {
                Err(E::custom(format_args!(
                    "invalid size {v}: expected {SIZE_EXAMPLES}, in quotes (\"{v}B\" for bytes)"
                )))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteSize, E> {
                parse_size(v).map(ByteSize).map_err(E::custom)
            }
        }
        deserializer.deserialize_any(SizeVisitor)
    }
}

/// Reads a size: digits, then one of [`SIZE_UNITS`] (spaces between them allowed).
pub(crate) fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let invalid = || format!("invalid size {text:?}: expected {SIZE_EXAMPLES}");
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits);
    let unit = unit.trim();
    let multiplier = SIZE_UNITS
        .iter()
        .find(|(name, _)| *name == unit)
        .map(|(_, bytes)| *bytes)
        .ok_or_else(invalid)?;
    let number: u64 = number.parse().map_err(|_| invalid())?;
    match number.checked_mul(multiplier) {
        Some(0) => Err(format!("invalid size {text:?}: expected more than zero")),
        Some(bytes) => Ok(bytes),
        None => Err(format!("invalid size {text:?}: too large")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_binary_units() {
        assert_eq!(parse_size("10MiB"), Ok(10 * 1024 * 1024));
        assert_eq!(parse_size(" 512 KiB "), Ok(512 * 1024));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("100B"), Ok(100));
        for bad in ["10", "10MB", "1.5MiB", "MiB", "-1KiB", "10 mib", ""] {
            let err = parse_size(bad).unwrap_err();
            assert!(err.contains(SIZE_EXAMPLES), "{bad}: {err}");
        }
        assert!(parse_size("0MiB").unwrap_err().contains("more than zero"));
        assert!(
            parse_size("99999999999999GiB")
                .unwrap_err()
                .contains("too large")
        );
    }
}
