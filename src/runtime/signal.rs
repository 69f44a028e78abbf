//! Signal names as users write them (`TERM`, `SIGTERM`, `15`).

use nix::sys::signal::Signal;

/// The real-time signals as podman numbers them (glibc keeps 32 and 33 for itself).
const RTMIN: i32 = 34;
const RTMAX: i32 = 64;

/// Parses a signal name or number into its number and canonical name (without `SIG`).
/// Real-time signals are accepted as podman accepts them: `RTMIN+3`, `SIGRTMAX-1`, `37`.
pub fn parse_signal(text: &str) -> Option<(i32, String)> {
    let text = text.trim();
    if let Ok(number) = text.parse::<i32>() {
        if (RTMIN..=RTMAX).contains(&number) {
            return Some((number, realtime_name(number)));
        }
        let signal = Signal::try_from(number).ok()?;
        return Some((number, canonical(signal)));
    }
    let upper = text.to_ascii_uppercase();
    let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
    if let Some(number) = realtime_number(bare) {
        return Some((number, realtime_name(number)));
    }
    let signal: Signal = format!("SIG{bare}").parse().ok()?;
    Some((signal as i32, canonical(signal)))
}

/// `RTMIN`, `RTMIN+N`, `RTMAX`, `RTMAX-N` within the real-time range.
fn realtime_number(name: &str) -> Option<i32> {
    let number = if let Some(rest) = name.strip_prefix("RTMIN") {
        match rest.strip_prefix('+') {
            Some(offset) => RTMIN.checked_add(offset.parse().ok()?)?,
            None if rest.is_empty() => RTMIN,
            None => return None,
        }
    } else if let Some(rest) = name.strip_prefix("RTMAX") {
        match rest.strip_prefix('-') {
            Some(offset) => RTMAX.checked_sub(offset.parse().ok()?)?,
            None if rest.is_empty() => RTMAX,
            None => return None,
        }
    } else {
        return None;
    };
    (RTMIN..=RTMAX).contains(&number).then_some(number)
}

fn realtime_name(number: i32) -> String {
    match number - RTMIN {
        0 => "RTMIN".to_string(),
        offset => format!("RTMIN+{offset}"),
    }
}

fn canonical(signal: Signal) -> String {
    signal.as_str().trim_start_matches("SIG").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_numbers_and_prefixes_are_accepted() {
        assert_eq!(parse_signal("TERM"), Some((15, "TERM".into())));
        assert_eq!(parse_signal("SIGKILL"), Some((9, "KILL".into())));
        assert_eq!(parse_signal("hup"), Some((1, "HUP".into())));
        assert_eq!(parse_signal("10"), Some((10, "USR1".into())));
    }

    #[test]
    fn real_time_signals_are_accepted_by_name_and_number() {
        assert_eq!(parse_signal("RTMIN+3"), Some((37, "RTMIN+3".into())));
        assert_eq!(parse_signal("SIGRTMIN"), Some((34, "RTMIN".into())));
        assert_eq!(parse_signal("34"), Some((34, "RTMIN".into())));
        assert_eq!(parse_signal("rtmax-1"), Some((63, "RTMIN+29".into())));
        assert_eq!(parse_signal("64"), Some((64, "RTMIN+30".into())));
    }

    #[test]
    fn unknown_signals_are_refused() {
        for bad in [
            "", "BOGUS", "SIG", "0", "99", "-1", "65", "RTMIN+31", "RTMAX-31", "RTMIN-1", "RTMINX",
        ] {
            assert_eq!(parse_signal(bad), None, "{bad}");
        }
    }
}
