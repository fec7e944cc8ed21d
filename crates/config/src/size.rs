//! Sizes (`"2GiB"` or a number of bytes) and CPU counts (`1.5` cores) in the config file. A
//! few lines of our own: the unit names are the only grammar, and errors must keep the value's
//! position (the value is wrapped in `toml::Spanned`).

use std::ops::Range;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use toml::Spanned;

/// A size in bytes, as written: an integer, or a string with `B`, `KiB`, `MiB`, `GiB`, `TiB`.
pub struct Size(Spanned<Bytes>);

struct Bytes(Result<u64, String>);

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Bytes, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Bytes;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a size: bytes, or a string such as \"512MiB\" or \"2GiB\"")
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Bytes, E> {
                Ok(Bytes(u64::try_from(n).map_err(|_| "a size cannot be negative".to_string())))
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<Bytes, E> {
                Ok(Bytes(parse_size(text)))
            }
        }
        deserializer.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Size, D::Error> {
        Ok(Size(Spanned::deserialize(deserializer)?))
    }
}

impl Size {
    /// The bytes, refused below `minimum` (named `minimum_text` in the message).
    pub fn at_least(self, minimum: u64, what: &str, minimum_text: &str) -> Result<u64, (Option<Range<usize>>, String)> {
        let span = self.0.span();
        match self.0.into_inner().0 {
            Ok(n) if n >= minimum => Ok(n),
            Ok(n) => Err((Some(span), format!("{what} = {n} bytes is below the minimum of {minimum_text}"))),
            Err(message) => Err((Some(span), format!("{what}: {message}"))),
        }
    }
}

fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().map_err(|_| format!("{text:?} is not a size (e.g. \"512MiB\", \"2GiB\")"))?;
    let shift = match unit.trim() {
        "" | "B" => 0,
        "KiB" => 10,
        "MiB" => 20,
        "GiB" => 30,
        "TiB" => 40,
        other => return Err(format!("unknown unit {other:?} in {text:?}: use B, KiB, MiB, GiB or TiB")),
    };
    number.checked_mul(1u64 << shift).ok_or_else(|| format!("{text:?} is too large"))
}

/// CPU cores (`2`, `0.5`), at most 1024, in thousandths.
pub struct Cpus(Spanned<f64>);

impl<'de> Deserialize<'de> for Cpus {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Cpus, D::Error> {
        struct Number(f64);
        impl<'de> Deserialize<'de> for Number {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Number, D::Error> {
                struct V;
                impl Visitor<'_> for V {
                    type Value = Number;
                    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        f.write_str("a number of CPU cores, such as 2 or 0.5")
                    }
                    #[allow(clippy::cast_precision_loss, reason = "core counts are small")]
                    fn visit_i64<E: de::Error>(self, n: i64) -> Result<Number, E> {
                        Ok(Number(n as f64))
                    }
                    fn visit_f64<E: de::Error>(self, n: f64) -> Result<Number, E> {
                        Ok(Number(n))
                    }
                }
                deserializer.deserialize_any(V)
            }
        }
        let spanned: Spanned<Number> = Spanned::deserialize(deserializer)?;
        let span = spanned.span();
        Ok(Cpus(Spanned::new(span, spanned.into_inner().0)))
    }
}

impl Cpus {
    pub fn millicores(self) -> Result<u64, (Option<Range<usize>>, String)> {
        let cores = *self.0.get_ref();
        if !(0.01..=1024.0).contains(&cores) {
            return Err((Some(self.0.span()), format!("limits.cpus = {cores}: use between 0.01 and 1024 cores")));
        }
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, reason = "checked range above")]
        Ok((cores * 1000.0).round() as u64)
    }
}
