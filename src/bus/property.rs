//! Properties announced with `PropertiesChanged`: one list per interface, read both by the
//! getters and by the change computation, so a property cannot be published by one and
//! forgotten by the other.

use std::collections::HashMap;

use zbus::names::InterfaceName;
use zbus::object_server::SignalEmitter;
use zbus::Variant;

/// A property whose changes are announced: its D-Bus name and how its value is read from
/// `S`, what the object shows (a container's status, a job's). The getter of the same name
/// returns `read` of the current `S`.
pub struct Property<S, T> {
    pub name: &'static str,
    read: fn(&S) -> T,
}

impl<S, T> Property<S, T> {
    pub const fn new(name: &'static str, read: fn(&S) -> T) -> Property<S, T> {
        Property { name, read }
    }

    /// The value the getter returns.
    pub fn read(&self, source: &S) -> T {
        (self.read)(source)
    }
}

/// A [`Property`] with its value as a variant: what the change computation reads.
pub trait Announced<S> {
    fn name(&self) -> &'static str;
    fn variant(&self, source: &S) -> Variant<'static>;
}

impl<S, T> Announced<S> for Property<S, T>
where
    T: Into<Variant<'static>>,
{
    fn name(&self) -> &'static str {
        self.name
    }

    fn variant(&self, source: &S) -> Variant<'static> {
        self.read(source).into()
    }
}

/// The properties of an interface whose changes are announced.
pub type Table<S> = [&'static dyn Announced<S>];

/// Every property of `table` whose value differs between `before` (none: all of them) and
/// `after`, with its new value.
pub fn changes<S>(
    table: &Table<S>,
    before: Option<&S>,
    after: &S,
) -> HashMap<&'static str, Variant<'static>> {
    table
        .iter()
        .filter_map(|property| {
            let now = property.variant(after);
            let differs = before.is_none_or(|before| property.variant(before) != now);
            differs.then_some((property.name(), now))
        })
        .collect()
}

/// Sends `PropertiesChanged` for `interface` at the emitter's path, unless nothing changed.
pub async fn announce(
    emitter: &SignalEmitter<'_>,
    interface: &'static str,
    changes: HashMap<&'static str, Variant<'static>>,
) -> zbus::Result<()> {
    if changes.is_empty() {
        return Ok(());
    }
    zbus::fdo::Properties::properties_changed(
        emitter,
        InterfaceName::from_static_str_unchecked(interface),
        changes,
        std::borrow::Cow::Borrowed(&[]),
    )
    .await
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// (name, type) of every property of `interface` in its shipped introspection XML that
    /// announces its changes with the value (no `EmitsChangedSignal` annotation).
    pub(crate) fn announced_in_xml(interface: &str) -> Vec<(String, String)> {
        let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("dbus")
            .join(format!("{interface}.xml"));
        let xml = std::fs::read_to_string(&file).unwrap();
        let attribute = |line: &str, name: &str| {
            let start = line.find(&format!("{name}=\""))? + name.len() + 2;
            Some(line[start..start + line[start..].find('"')?].to_string())
        };
        let lines: Vec<&str> = xml.lines().map(str::trim).collect();
        let mut announced = Vec::new();
        for (index, line) in lines.iter().enumerate() {
            if !line.starts_with("<property ") {
                continue;
            }
            let annotated = !line.ends_with("/>")
                && lines[index + 1].contains("org.freedesktop.DBus.Property.EmitsChangedSignal");
            if !annotated {
                announced.push((
                    attribute(line, "name").unwrap(),
                    attribute(line, "type").unwrap(),
                ));
            }
        }
        assert!(!announced.is_empty(), "no announced property in {file:?}");
        announced
    }

    /// The table announces exactly the XML's announced properties, each with its type.
    pub(crate) fn assert_table_matches_xml<S>(interface: &str, table: &Table<S>, sample: &S) {
        let mut in_table: Vec<(String, String)> = table
            .iter()
            .map(|property| {
                let signature = property.variant(sample).value_signature().to_string();
                (property.name().to_string(), signature)
            })
            .collect();
        in_table.sort();
        let mut in_xml = announced_in_xml(interface);
        in_xml.sort();
        assert_eq!(in_table, in_xml, "{interface}");
    }

    #[test]
    fn changes_list_only_what_differs_and_everything_at_first() {
        const DOUBLED: Property<u32, u32> = Property::new("Doubled", |n| n * 2);
        const EVEN: Property<u32, bool> = Property::new("Even", |n| n % 2 == 0);
        const TABLE: &Table<u32> = &[&DOUBLED, &EVEN];
        let first = changes(TABLE, None, &1);
        assert_eq!(first.len(), 2);
        assert_eq!(first["Doubled"], Variant::from(2u32));
        let next = changes(TABLE, Some(&1), &3);
        assert_eq!(next.keys().collect::<Vec<_>>(), [&"Doubled"]);
        assert!(changes(TABLE, Some(&3), &3).is_empty());
    }
}
