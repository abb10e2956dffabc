//! Change windows: weekday and hour ranges in an IANA time zone, and the [`Clock`] they are
//! checked by.

use std::fmt;
use std::time::SystemTime;

use jiff::civil::Weekday;
use jiff::tz::TimeZone;
use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind, Result};

/// Where "now" comes from for change windows: the system clock by default, a fixed instant in
/// tests ([`FixedClock`]).
pub trait Clock: Send + Sync + fmt::Debug {
    /// The current instant.
    fn now(&self) -> SystemTime;
}

/// The system clock ([`SystemTime::now`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A clock that always says the same instant.
#[derive(Clone, Copy, Debug)]
pub struct FixedClock(pub SystemTime);

impl FixedClock {
    /// A clock stopped at `rfc3339` (`2026-03-02T10:00:00Z`, or with an offset).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] for text that is not an RFC 3339 instant.
    pub fn parse(rfc3339: &str) -> Result<Self> {
        let ts: jiff::Timestamp = rfc3339.parse().map_err(|e| {
            Error::new(
                ErrorKind::InvalidArgument,
                format!("`{rfc3339}` is not an RFC 3339 instant like 2026-03-02T10:00:00Z: {e}"),
            )
        })?;
        Ok(FixedClock(SystemTime::from(ts)))
    }
}

impl Clock for FixedClock {
    fn now(&self) -> SystemTime {
        self.0
    }
}

/// One change window: on `days` (`mon`…`sun`, or ranges such as `mon-fri`), from hour `from`
/// up to, not including, hour `to` (0-24, local time in the policy's
/// [`time_zone`](super::Policy::time_zone)). In YAML: `{days: [mon-fri], hours: "09-17"}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ChangeWindow {
    /// Weekdays: `mon`, `tue`, `wed`, `thu`, `fri`, `sat`, `sun`, or a range `mon-fri`.
    pub days: Vec<String>,
    /// Hours `"HH-HH"` (or `"HH:00-HH:00"`), the end excluded: `"09-17"` is 09:00 to 16:59.
    pub hours: String,
}

const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

fn day_index(name: &str) -> Option<usize> {
    let name = name.trim().to_ascii_lowercase();
    DAYS.iter().position(|d| name.starts_with(d))
}

fn hour(text: &str) -> Option<u8> {
    let text = text.trim();
    let text = text.strip_suffix(":00").unwrap_or(text);
    text.parse::<u8>().ok().filter(|h| *h <= 24)
}

impl ChangeWindow {
    /// A window on `days` over `hours` (see the fields).
    ///
    /// # Errors
    /// As [`check`](Self::check).
    pub fn new(days: &[&str], hours: &str) -> Result<Self> {
        let window = ChangeWindow {
            days: days.iter().map(|d| d.to_string()).collect(),
            hours: hours.to_string(),
        };
        window.check()?;
        Ok(window)
    }

    /// The weekdays (Monday = 0) and the hour range `[from, to)`.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] naming a day or an hour range that does not parse, or an
    /// empty range.
    pub fn check(&self) -> Result<([bool; 7], u8, u8)> {
        let bad = |what: String| Error::new(ErrorKind::InvalidArgument, what);
        let mut days = [false; 7];
        if self.days.is_empty() {
            return Err(bad("a change window needs days, e.g. [mon-fri]".into()));
        }
        for spec in &self.days {
            let (a, b) = spec.split_once('-').unwrap_or((spec, spec));
            let (Some(a), Some(b)) = (day_index(a), day_index(b)) else {
                return Err(bad(format!(
                    "`{spec}` is not a weekday or a range of them (mon, tue, wed, thu, fri, sat, sun; mon-fri)"
                )));
            };
            let mut d = a;
            loop {
                days[d] = true;
                if d == b {
                    break;
                }
                d = (d + 1) % 7;
            }
        }
        let range = self
            .hours
            .split_once('-')
            .and_then(|(a, b)| Some((hour(a)?, hour(b)?)));
        match range {
            Some((from, to)) if from < to => Ok((days, from, to)),
            _ => Err(bad(format!(
                "`{}` is not an hour range like 09-17 (0 to 24, start before end)",
                self.hours
            ))),
        }
    }

    fn contains(&self, day: Weekday, hour: i8) -> bool {
        match self.check() {
            Ok((days, from, to)) => {
                days[day.to_monday_zero_offset() as usize] && hour >= from as i8 && hour < to as i8
            }
            Err(_) => false,
        }
    }
}

impl fmt::Display for ChangeWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.days.join(","), self.hours)
    }
}

/// The time zone `name` from the system's tz database.
///
/// # Errors
/// [`ErrorKind::InvalidArgument`] for a name the database does not have.
pub(crate) fn time_zone(name: &str) -> Result<TimeZone> {
    TimeZone::get(name).map_err(|e| {
        Error::new(
            ErrorKind::InvalidArgument,
            format!("`{name}` is not an IANA time zone known to this system's tz database (e.g. Europe/Berlin, UTC): {e}"),
        )
    })
}

/// Whether `now` falls in one of `windows`, in time zone `zone`; and the local time it is
/// there (`2026-03-02 10:00 Mon`), for messages.
pub(crate) fn in_windows(
    windows: &[ChangeWindow],
    zone: &TimeZone,
    now: SystemTime,
) -> Result<(bool, String)> {
    let ts = jiff::Timestamp::try_from(now).map_err(|e| {
        Error::new(
            ErrorKind::InvalidArgument,
            format!("the clock is out of range: {e}"),
        )
    })?;
    let local = ts.to_zoned(zone.clone());
    let open = windows
        .iter()
        .any(|w| w.contains(local.weekday(), local.hour()));
    Ok((open, local.strftime("%Y-%m-%d %H:%M %a %Z").to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_parse_days_and_hours() {
        let w = ChangeWindow::new(&["mon-fri"], "09-17").unwrap();
        let (days, from, to) = w.check().unwrap();
        assert_eq!(days, [true, true, true, true, true, false, false]);
        assert_eq!((from, to), (9, 17));
        let w = ChangeWindow::new(&["sat-mon"], "00:00-24:00").unwrap();
        assert_eq!(
            w.check().unwrap().0,
            [true, false, false, false, false, true, true]
        );
        assert!(ChangeWindow::new(&["funday"], "09-17").is_err());
        assert!(ChangeWindow::new(&["mon"], "17-09").is_err());
        assert!(ChangeWindow::new(&[], "09-17").is_err());
    }

    #[test]
    fn a_window_is_local_time_in_its_zone() {
        let w = vec![ChangeWindow::new(&["mon-fri"], "09-17").unwrap()];
        let berlin = time_zone("Europe/Berlin").unwrap();
        // Monday 2026-03-02 08:30 UTC is 09:30 in Berlin (CET, +1).
        let inside = FixedClock::parse("2026-03-02T08:30:00Z").unwrap().now();
        assert!(in_windows(&w, &berlin, inside).unwrap().0);
        // 16:30 UTC is 17:30 in Berlin: closed.
        let after = FixedClock::parse("2026-03-02T16:30:00Z").unwrap().now();
        let (open, local) = in_windows(&w, &berlin, after).unwrap();
        assert!(!open, "{local}");
        assert!(local.contains("17:30"), "{local}");
        // Saturday: closed.
        let saturday = FixedClock::parse("2026-03-07T10:00:00Z").unwrap().now();
        assert!(!in_windows(&w, &berlin, saturday).unwrap().0);
        assert!(time_zone("Mars/Olympus").is_err());
    }
}
