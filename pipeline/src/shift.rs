//! How traffic moves from the live slot to a verified candidate: the shift strategy.
//!
//! A target's `shift` key picks one. All at once is one atomic switch. A canary sends one
//! share of new clients to the candidate and watches it for a bake period before the
//! switch; a linear shift grows the share in equal steps, watching each for an interval.
//! Clients stay on their side during a split (the edge's sticky cookie), and the final step
//! to 100 % is always the atomic switch, so [`ShiftStrategy::steps`] lists only the weighted
//! steps before it.
//!
//! The strategy is written as text, the same for every kind of target:
//! `"all-at-once"`, `"canary:<percent>:<bake>"`, `"linear:<percent>:<interval>"`, with a
//! percent from 1 to 99 and a humantime duration (`"canary:10:5m"`, `"linear:25:30s"`).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::Serialize;

/// The strategy of a target without a `shift` key.
pub const DEFAULT_SHIFT: ShiftStrategy = ShiftStrategy::AllAtOnce;
/// The largest share of 5xx answers a candidate may give during a bake (1 %).
pub const DEFAULT_MAX_ERROR_RATE: f64 = 0.01;
/// What a `shift` value looks like, for messages and docs.
pub const SHIFT_FORMS: &str = r#""all-at-once", "canary:<percent>:<bake>" (e.g. "canary:10:5m") or "linear:<percent>:<interval>" (e.g. "linear:25:30s")"#;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShiftStrategy {
    /// One atomic switch.
    AllAtOnce,
    /// `percent` of new clients for `bake`, then the switch.
    Canary { percent: u8, bake: Duration },
    /// `percent`, `2 × percent`, … (below 100) of new clients, each for `interval`, then the
    /// switch.
    Linear { percent: u8, interval: Duration },
}

/// One weighted step before the switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ShiftStep {
    /// 1-based position among the weighted steps.
    pub index: usize,
    /// How many weighted steps there are.
    pub total: usize,
    /// The share of new clients on the candidate, 1 to 99.
    pub percent: u8,
    /// How long the candidate is watched at this share.
    #[serde(with = "crate::config::duration_text")]
    pub bake: Duration,
}

impl ShiftStrategy {
    /// The weighted steps before the switch to 100 %: none for all at once, one for a
    /// canary, `p, 2p, …` below 100 for a linear shift.
    pub fn steps(&self) -> Vec<ShiftStep> {
        let weighted: Vec<(u8, Duration)> = match *self {
            ShiftStrategy::AllAtOnce => Vec::new(),
            ShiftStrategy::Canary { percent, bake } => vec![(percent, bake)],
            ShiftStrategy::Linear { percent, interval } => (1..)
                .map(|i| u32::from(percent) * i)
                .take_while(|p| *p < 100)
                .map(|p| (u8::try_from(p).expect("below 100"), interval))
                .collect(),
        };
        let total = weighted.len();
        weighted
            .into_iter()
            .enumerate()
            .map(|(i, (percent, bake))| ShiftStep {
                index: i + 1,
                total,
                percent,
                bake,
            })
            .collect()
    }

    /// Whether traffic moves in weighted steps (and so is watched) before the switch.
    pub fn is_weighted(&self) -> bool {
        !matches!(self, ShiftStrategy::AllAtOnce)
    }

    /// The whole time spent in weighted steps.
    pub fn total_bake(&self) -> Duration {
        self.steps().iter().map(|s| s.bake).sum()
    }
}

impl fmt::Display for ShiftStrategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ShiftStrategy::AllAtOnce => f.write_str("all-at-once"),
            ShiftStrategy::Canary { percent, bake } => {
                write!(f, "canary:{percent}:{}", humantime::format_duration(*bake))
            }
            ShiftStrategy::Linear { percent, interval } => {
                write!(
                    f,
                    "linear:{percent}:{}",
                    humantime::format_duration(*interval)
                )
            }
        }
    }
}

impl Serialize for ShiftStrategy {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Why a `shift` value was refused. The message names the value and what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid shift {value:?}: {problem}; expected {SHIFT_FORMS}")]
pub struct ShiftParseError {
    pub value: String,
    pub problem: String,
}

impl FromStr for ShiftStrategy {
    type Err = ShiftParseError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        parse(text)
    }
}

/// Reads a `shift` value. Used by every kind of target's config.
pub fn parse(text: &str) -> Result<ShiftStrategy, ShiftParseError> {
    let error = |problem: String| ShiftParseError {
        value: text.to_string(),
        problem,
    };
    let trimmed = text.trim();
    let mut parts = trimmed.split(':');
    let name = parts.next().unwrap_or_default().trim();
    let rest: Vec<&str> = parts.map(str::trim).collect();
    match name {
        "all-at-once" => {
            if rest.is_empty() {
                Ok(ShiftStrategy::AllAtOnce)
            } else {
                Err(error("all-at-once takes no percent or duration".into()))
            }
        }
        "canary" | "linear" => {
            let [percent, duration] = rest[..] else {
                return Err(error(format!(
                    "{name} needs a percent and a duration, as {name}:<percent>:<duration>"
                )));
            };
            let percent = match percent.parse::<u8>() {
                Ok(p) if (1..=99).contains(&p) => p,
                _ => {
                    return Err(error(format!(
                        "the percent {percent:?} is not a whole number from 1 to 99"
                    )));
                }
            };
            let duration = match humantime::parse_duration(duration) {
                Ok(d) if !d.is_zero() => d,
                _ => {
                    return Err(error(format!(
                        "the duration {duration:?} is not a duration above zero like \"30s\" or \"5m\""
                    )));
                }
            };
            Ok(if name == "canary" {
                ShiftStrategy::Canary {
                    percent,
                    bake: duration,
                }
            } else {
                ShiftStrategy::Linear {
                    percent,
                    interval: duration,
                }
            })
        }
        other => Err(error(format!("unknown strategy {other:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn percents(strategy: &str) -> Vec<u8> {
        parse(strategy)
            .unwrap()
            .steps()
            .iter()
            .map(|s| s.percent)
            .collect()
    }

    #[test]
    fn steps_stop_below_the_switch_to_100() {
        assert_eq!(percents("all-at-once"), Vec::<u8>::new());
        assert_eq!(percents("canary:10:5m"), [10]);
        assert_eq!(percents("linear:25:30s"), [25, 50, 75]);
        assert_eq!(percents("linear:30:1s"), [30, 60, 90]);
        assert_eq!(percents("linear:50:1s"), [50]);
        assert_eq!(percents("linear:99:1s"), [99]);
        assert_eq!(percents("linear:1:1s").len(), 99);
    }

    #[test]
    fn steps_know_their_place_and_bake() {
        let steps = parse("linear:40:2s").unwrap().steps();
        assert_eq!(
            steps,
            [
                ShiftStep {
                    index: 1,
                    total: 2,
                    percent: 40,
                    bake: Duration::from_secs(2)
                },
                ShiftStep {
                    index: 2,
                    total: 2,
                    percent: 80,
                    bake: Duration::from_secs(2)
                },
            ]
        );
        assert_eq!(
            parse("linear:40:2s").unwrap().total_bake(),
            Duration::from_secs(4)
        );
    }

    #[test]
    fn text_round_trips() {
        for text in [
            "all-at-once",
            "canary:10:5m",
            "linear:25:30s",
            "canary:5:1m 30s",
        ] {
            assert_eq!(parse(text).unwrap().to_string(), text);
        }
        assert_eq!(
            " canary : 10 : 250ms ".parse::<ShiftStrategy>().unwrap(),
            ShiftStrategy::Canary {
                percent: 10,
                bake: Duration::from_millis(250)
            }
        );
    }

    #[test]
    fn bad_values_say_what_was_expected() {
        for (text, problem) in [
            ("canary:0:5m", "from 1 to 99"),
            ("canary:100:5m", "from 1 to 99"),
            ("linear:ten:5m", "from 1 to 99"),
            ("canary:10", "needs a percent and a duration"),
            ("canary:10:5m:x", "needs a percent and a duration"),
            ("canary:10:soon", "above zero"),
            ("canary:10:0s", "above zero"),
            ("all-at-once:5", "takes no percent"),
            ("blue-green", "unknown strategy"),
            ("", "unknown strategy"),
        ] {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.contains(problem), "{text}: {err}");
            assert!(err.contains("canary:<percent>:<bake>"), "{text}: {err}");
        }
    }
}
