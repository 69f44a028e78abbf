//! `events`: the durable log replayed after `--since`, then live `Event` signals, with no
//! gap or duplicate between the two (the subscription starts before the replay).

use std::collections::HashMap;

use futures_util::StreamExt;
use zbus::MatchRule;

use super::{explain, ManagerProxy};
use crate::clock::rfc3339_micros;

fn print_event(
    seq: u64,
    timestamp: u64,
    container: &str,
    kind: &str,
    attributes: &HashMap<String, String>,
) {
    let mut pairs: Vec<_> = attributes.iter().map(|(k, v)| format!("{k}={v}")).collect();
    pairs.sort();
    let short = &container[..12.min(container.len())];
    println!(
        "{seq:>6} {} container {kind} {short} ({})",
        rfc3339_micros(timestamp),
        pairs.join(", ")
    );
}

/// The seq named by an `EventsTrimmed` error ("events through seq N were trimmed …").
fn trimmed_through(error: &zbus::Error) -> Option<u64> {
    let zbus::Error::MethodError(name, Some(message), _) = error else {
        return None;
    };
    if name.as_str() != "org.berth.Engine1.Error.EventsTrimmed" {
        return None;
    }
    message
        .strip_prefix("events through seq ")?
        .split(' ')
        .next()?
        .parse()
        .ok()
}

pub async fn events(
    connection: &zbus::Connection,
    since: Option<u64>,
    follow: bool,
) -> anyhow::Result<i32> {
    let rule = MatchRule::builder()
        .msg_type(zbus::message::Type::Signal)
        .sender("org.berth.Engine1")
        .interface("org.berth.Engine1.Container")
        .member("Event")
        .path_namespace("/org/berth/Engine1")
        .build()?;
    let mut stream =
        zbus::MessageStream::for_match_rule(rule, connection, std::num::NonZeroUsize::new(256))
            .await?;
    let mut last = 0;
    if let Some(since) = since {
        let manager = ManagerProxy::new(connection).await?;
        let replay = match manager.get_events(since, 0).await {
            Err(error) if trimmed_through(&error).is_some() => {
                let through = trimmed_through(&error).unwrap_or(since);
                eprintln!("note: events through seq {through} were trimmed from the log");
                manager.get_events(through, 0).await.map_err(explain)?
            }
            other => other.map_err(explain)?,
        };
        for (seq, timestamp, container, kind, attributes) in replay {
            print_event(seq, timestamp, &container, &kind, &attributes);
            last = seq;
        }
    }
    if !follow {
        return Ok(0);
    }
    while let Some(message) = stream.next().await {
        let message = message?;
        let (seq, timestamp, kind, attributes): (u64, u64, String, HashMap<String, String>) =
            message.body().deserialize()?;
        if seq <= last {
            continue;
        }
        last = seq;
        let path = message
            .header()
            .path()
            .map(|p| p.to_string())
            .unwrap_or_default();
        let container = path.rsplit('/').next().unwrap_or_default().to_string();
        print_event(seq, timestamp, &container, &kind, &attributes);
    }
    Ok(0)
}
