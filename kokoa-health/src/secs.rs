//! Durations in configuration files are written in seconds, as the specification writes them
//! (`interval: 10`), and may be fractional (`timeout: 0.5`).

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serializer, de::Error as _};

pub(crate) fn serialize<S: Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    // Whole seconds stay integers so a file written back reads like the one a person wrote.
    if value.subsec_nanos() == 0 {
        serializer.serialize_u64(value.as_secs())
    } else {
        serializer.serialize_f64(value.as_secs_f64())
    }
}

pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Duration, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Seconds {
        Whole(u64),
        Fraction(f64),
    }
    match Seconds::deserialize(deserializer)? {
        Seconds::Whole(secs) => Ok(Duration::from_secs(secs)),
        Seconds::Fraction(secs) => Duration::try_from_secs_f64(secs).map_err(|_| {
            D::Error::custom(format_args!(
                "{secs} is not a duration in seconds (expected a number >= 0)"
            ))
        }),
    }
}
