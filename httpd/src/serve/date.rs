//! The `Date` header (RFC 9110 §5.6.7 IMF-fixdate, `Sun, 06 Nov 1994 08:49:37 GMT`).
//!
//! Every response carries one. Formatting is pure arithmetic on the Unix time; the formatted
//! value is cached per thread and redone only when the second changes, so a response costs
//! one `clock_gettime` (vDSO) and a 29-byte copy, no allocation.

use std::cell::Cell;
use std::time::{SystemTime, UNIX_EPOCH};

/// Length of an IMF-fixdate.
pub const LEN: usize = 29;

const DAYS: [&[u8; 3]; 7] = [b"Thu", b"Fri", b"Sat", b"Sun", b"Mon", b"Tue", b"Wed"];
const MONTHS: [&[u8; 3]; 12] =
    [b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec"];

/// Formats `secs` since the Unix epoch (UTC) as an IMF-fixdate. Years past 9999 are not
/// representable in the format; they are clamped to the last second of 9999.
pub fn format(secs: u64) -> [u8; LEN] {
    let secs = secs.min(253_402_300_799);
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    let mut out = *b"Thu, 01 Jan 1970 00:00:00 GMT";
    out[..3].copy_from_slice(DAYS[(days % 7) as usize]);
    two(&mut out[5..7], day);
    out[8..11].copy_from_slice(MONTHS[(month - 1) as usize]);
    two(&mut out[12..14], year / 100);
    two(&mut out[14..16], year % 100);
    two(&mut out[17..19], rem / 3600);
    two(&mut out[20..22], rem / 60 % 60);
    two(&mut out[23..25], rem % 60);
    out
}

/// Formats `secs` since the Unix epoch as RFC 3339 in UTC (`2026-12-01T08:30:00Z`), what Go's
/// `time.Time` reads from JSON.
pub fn rfc3339(secs: u64) -> String {
    let secs = secs.min(253_402_300_799);
    let (year, month, day) = civil_from_days(secs / 86_400);
    let rem = secs % 86_400;
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem / 60 % 60, rem % 60)
}

fn two(out: &mut [u8], v: u64) {
    out[0] = b'0' + (v / 10) as u8;
    out[1] = b'0' + (v % 10) as u8;
}

/// Days since 1970-01-01 to (year, month 1-12, day 1-31), proleptic Gregorian calendar
/// (H. Hinnant's `civil_from_days`, for non-negative day counts).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468; // days since 0000-03-01
    let era = z / 146_097;
    let doe = z % 146_097; // day of the 400-year era
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // day of the year starting 1 March
    let mp = (5 * doy + 2) / 153; // month starting from March = 0
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = era * 400 + yoe + u64::from(month <= 2);
    (year, month, day)
}

thread_local! {
    /// The second last formatted on this thread, and its text.
    static CACHE: Cell<(u64, [u8; LEN])> = const { Cell::new((u64::MAX, [0; LEN])) };
}

/// Now as an IMF-fixdate, formatted at most once a second per thread.
pub fn now() -> [u8; LEN] {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    CACHE.with(|c| {
        let (cached, text) = c.get();
        if cached == secs {
            return text;
        }
        let text = format(secs);
        c.set((secs, text));
        text
    })
}

/// `t` as RFC 3339 in UTC with nanoseconds (`2026-12-01T11:20:00.123456789Z`), the
/// timestamp shape of OpenFaaS's log messages (Go's `time.RFC3339Nano`).
pub fn rfc3339_nanos(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs().min(253_402_300_799);
    let (year, month, day) = civil_from_days(secs / 86_400);
    let rem = secs % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:09}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        d.subsec_nanos()
    )
}

/// Parses RFC 3339 (`2026-12-01T11:20:00Z`, fractions and `+hh:mm` offsets allowed).
pub fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u64> {
        let t = s.get(r)?;
        t.bytes().all(|c| c.is_ascii_digit()).then(|| t.parse().ok())?
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1970..=9999).contains(&year)
        || !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut rest = &s[19..];
    let mut nanos = 0u32;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let padded: String = frac[..digits].chars().chain(std::iter::repeat('0')).take(9).collect();
        nanos = padded.parse().ok()?;
        rest = &frac[digits..];
    }
    let offset: i64 = match rest.as_bytes() {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let h = i64::from((h1 - b'0') * 10 + (h2 - b'0'));
            let m = i64::from((m1 - b'0') * 10 + (m2 - b'0'));
            if ![h1, h2, m1, m2].iter().all(|c| c.is_ascii_digit()) || h > 23 || m > 59 {
                return None;
            }
            if *sign == b'+' {
                h * 3600 + m * 60
            } else {
                -(h * 3600 + m * 60)
            }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day) as i64;
    let secs = days * 86_400 + (hour * 3600 + minute * 60 + second) as i64 - offset;
    let secs = u64::try_from(secs).ok()?;
    Some(UNIX_EPOCH + std::time::Duration::new(secs, nanos))
}

/// (year, month, day) to days since 1970-01-01 (H. Hinnant's `days_from_civil`, years >= 1970).
fn days_from_civil(year: u64, month: u64, day: u64) -> u64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y / 400;
    let yoe = y % 400;
    let mp = if month > 2 { month - 3 } else { month + 9 };
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(secs: u64) -> String {
        String::from_utf8(format(secs).to_vec()).unwrap()
    }

    #[test]
    fn rfc3339_timestamps() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(784_111_777), "1994-11-06T08:49:37Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn known_timestamps() {
        assert_eq!(s(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        // RFC 9110's own example.
        assert_eq!(s(784_111_777), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(s(1_798_761_600), "Fri, 01 Jan 2027 00:00:00 GMT");
        assert_eq!(s(253_402_300_799), "Fri, 31 Dec 9999 23:59:59 GMT");
        assert_eq!(s(u64::MAX), "Fri, 31 Dec 9999 23:59:59 GMT");
    }

    #[test]
    fn leap_years_and_weekdays() {
        // 1972: leap (divisible by 4).
        assert_eq!(s(68_256_000), "Wed, 01 Mar 1972 00:00:00 GMT");
        // 2000: leap (divisible by 400), both ends of 29 February.
        assert_eq!(s(951_782_400), "Tue, 29 Feb 2000 00:00:00 GMT");
        assert_eq!(s(951_868_799), "Tue, 29 Feb 2000 23:59:59 GMT");
        assert_eq!(s(1_709_251_199), "Thu, 29 Feb 2024 23:59:59 GMT");
        // 2100: not leap (divisible by 100, not by 400): 28 February is followed by 1 March.
        assert_eq!(s(4_107_455_999), "Sat, 27 Feb 2100 23:59:59 GMT");
        assert_eq!(s(4_107_542_399), "Sun, 28 Feb 2100 23:59:59 GMT");
        assert_eq!(s(4_107_542_400), "Mon, 01 Mar 2100 00:00:00 GMT");
    }

    #[test]
    fn every_day_for_ten_years_advances_weekday_and_date() {
        let names = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
        let mut last = (1969, 12, 31);
        for d in 0..3652u64 {
            let text = s(d * 86_400 + 43_200);
            assert_eq!(&text[..3], names[(d % 7) as usize], "{text}");
            assert!(text.ends_with(" 12:00:00 GMT"), "{text}");
            let (y, m, day) = civil_from_days(d);
            let next_day = (last.0, last.1, last.2 + 1) == (y, m, day);
            let next_month = day == 1 && ((last.0, last.1 + 1) == (y, m) || (last.0 + 1, 1) == (y, m));
            assert!(next_day || next_month, "{last:?} -> {:?}", (y, m, day));
            last = (y, m, day);
        }
        assert_eq!(last, (1979, 12, 31));
    }

    #[test]
    fn now_is_the_current_second() {
        let secs = || SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
        for _ in 0..3 {
            let before = secs();
            let text = now();
            let after = secs();
            assert!(text == format(before) || text == format(after), "{:?}", String::from_utf8_lossy(&text));
        }
    }

    #[test]
    fn rfc3339_round_trips_and_refuses_garbage() {
        let t = UNIX_EPOCH + std::time::Duration::new(1_764_588_000, 123_456_789);
        let text = rfc3339_nanos(t);
        assert_eq!(text, "2025-12-01T11:20:00.123456789Z");
        assert_eq!(parse_rfc3339(&text), Some(t));
        assert_eq!(
            parse_rfc3339("2025-12-01T11:20:00Z"),
            Some(UNIX_EPOCH + std::time::Duration::from_secs(1_764_588_000))
        );
        assert_eq!(parse_rfc3339("2025-12-01T12:20:00+01:00"), parse_rfc3339("2025-12-01T11:20:00Z"));
        assert_eq!(
            parse_rfc3339("2024-02-29T00:00:00.5Z"),
            Some(UNIX_EPOCH + std::time::Duration::new(1_709_164_800, 500_000_000))
        );
        for bad in [
            "",
            "yesterday",
            "2025-13-01T00:00:00Z",
            "2025-12-01 11:20:00",
            "2025-12-01T11:20:00",
            "2025-12-01T11:20:00.Z",
            "1969-12-31T23:59:59Z",
            "2025-12-01T11:20:00+1:00",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }
}
