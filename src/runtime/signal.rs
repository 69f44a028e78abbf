//! Signal names as users write them (`TERM`, `SIGTERM`, `15`).

use nix::sys::signal::Signal;

/// Parses a signal name or number into its number and canonical name (without `SIG`).
pub fn parse_signal(text: &str) -> Option<(i32, String)> {
    let text = text.trim();
    if let Ok(number) = text.parse::<i32>() {
        let signal = Signal::try_from(number).ok()?;
        return Some((number, canonical(signal)));
    }
    let upper = text.to_ascii_uppercase();
    let full = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    let signal: Signal = full.parse().ok()?;
    Some((signal as i32, canonical(signal)))
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
    fn unknown_signals_are_refused() {
        for bad in ["", "BOGUS", "SIG", "0", "99", "-1"] {
            assert_eq!(parse_signal(bad), None, "{bad}");
        }
    }
}
