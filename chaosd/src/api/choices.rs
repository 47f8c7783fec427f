//! The wire enums a CLI offers as choices: each lists its values and their wire names, so
//! `chaosctl` builds its value parsers from the API types without the API knowing about clap.

use super::{ClockName, Direction, IoMode, IoOp, Proto, Stream};

/// A fieldless wire enum.
pub trait Choice: Copy + 'static {
    /// Every value, in the order a CLI lists them.
    const ALL: &'static [Self];
    /// The name the API (serde) and the CLI use.
    fn name(self) -> &'static str;

    fn named(name: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|v| v.name() == name)
    }

    /// [`Choice::named`] with an error that lists the names: a parser for a hidden verb's
    /// arguments (`value_parser = IoMode::from_name`).
    fn from_name(name: &str) -> Result<Self, String> {
        Self::named(name).ok_or_else(|| {
            let names: Vec<&str> = Self::ALL.iter().map(|v| v.name()).collect();
            format!("{name:?} is not one of {}", names.join(", "))
        })
    }
}

impl Choice for Proto {
    const ALL: &'static [Self] = &[Proto::Any, Proto::Tcp, Proto::Udp, Proto::Icmp];
    fn name(self) -> &'static str {
        match self {
            Proto::Any => "any",
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Icmp => "icmp",
        }
    }
}

impl Choice for Direction {
    const ALL: &'static [Self] = &[Direction::Egress, Direction::Ingress, Direction::Both];
    fn name(self) -> &'static str {
        match self {
            Direction::Egress => "egress",
            Direction::Ingress => "ingress",
            Direction::Both => "both",
        }
    }
}

impl Choice for Stream {
    const ALL: &'static [Self] = &[Stream::Upstream, Stream::Downstream, Stream::Both];
    fn name(self) -> &'static str {
        match self {
            Stream::Upstream => "upstream",
            Stream::Downstream => "downstream",
            Stream::Both => "both",
        }
    }
}

impl Choice for IoMode {
    const ALL: &'static [Self] = &[IoMode::Read, IoMode::Write, IoMode::Mixed];
    fn name(self) -> &'static str {
        self.as_str()
    }
}

impl Choice for IoOp {
    const ALL: &'static [Self] = &IoOp::ALL;
    fn name(self) -> &'static str {
        IoOp::name(self)
    }
}

impl Choice for ClockName {
    const ALL: &'static [Self] = &[
        ClockName::Realtime,
        ClockName::Monotonic,
        ClockName::MonotonicRaw,
        ClockName::RealtimeCoarse,
        ClockName::MonotonicCoarse,
        ClockName::Boottime,
        ClockName::RealtimeAlarm,
        ClockName::BoottimeAlarm,
        ClockName::Tai,
    ];
    fn name(self) -> &'static str {
        ClockName::name(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The names a CLI offers are the ones the API accepts, for every value.
    fn names_match_serde<T: Choice + serde::Serialize + PartialEq + std::fmt::Debug>() {
        for v in T::ALL {
            let wire = serde_json::to_value(v).unwrap();
            assert_eq!(wire.as_str(), Some(v.name()), "{v:?}");
            assert_eq!(T::named(v.name()), Some(*v));
            assert_eq!(T::from_name(v.name()), Ok(*v));
        }
    }

    #[test]
    fn every_choice_is_named_as_on_the_wire() {
        names_match_serde::<Proto>();
        names_match_serde::<Direction>();
        names_match_serde::<IoMode>();
        names_match_serde::<IoOp>();
        names_match_serde::<ClockName>();
    }
}
