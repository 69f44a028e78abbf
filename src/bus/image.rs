//! `org.berth.Engine1.Image`: one object per image, holding the engine handle and the id.

use std::collections::HashMap;
use std::sync::Arc;

use zbus::message::Header;
use zbus::{interface, OwnedObjectPath, OwnedVariant, Variant};

use super::auth::Action;
use super::call::Served;
use super::error::BusError;
use super::property::{Property, Table};
use super::Shared;
use crate::engine::Engine;
use crate::engine::ImageRecord;

pub const INTERFACE: &str = "org.berth.Engine1.Image";

/// The object path of an image.
pub fn path(id: &str) -> OwnedObjectPath {
    super::object_path("image", id)
}

pub struct ImageObject {
    pub engine: Engine,
    pub shared: Arc<Shared>,
    pub id: String,
}

impl ImageObject {
    fn image(&self) -> Result<ImageRecord, BusError> {
        Ok(self.engine.image(&self.id)?)
    }
}

impl Served for ImageObject {
    fn engine(&self) -> &Engine {
        &self.engine
    }

    fn shared(&self) -> &Shared {
        &self.shared
    }
}

/// The `Config` property: what the image suggests to a container.
pub fn config_property(image: &ImageRecord) -> HashMap<String, OwnedVariant> {
    let config = &image.config;
    let owned = |value: Variant<'_>| value.try_to_owned().ok();
    [
        ("Cmd", owned(Variant::from(config.cmd.clone()))),
        (
            "Entrypoint",
            owned(Variant::from(config.entrypoint.clone())),
        ),
        ("Env", owned(Variant::from(config.env.clone()))),
        (
            "WorkingDir",
            owned(Variant::from(config.working_dir.clone())),
        ),
        ("User", owned(Variant::from(config.user.clone()))),
        (
            "Labels",
            owned(Variant::from(
                config.labels.clone().into_iter().collect::<HashMap<_, _>>(),
            )),
        ),
    ]
    .into_iter()
    .filter_map(|(key, value)| Some((key.to_string(), value?)))
    .collect()
}

const NAMES: Property<ImageRecord, Vec<String>> = Property::new("Names", |i| i.names.clone());
const REPO_DIGESTS: Property<ImageRecord, Vec<String>> =
    Property::new("RepoDigests", |i| i.repo_digests.clone());

/// Every property of the Image interface announced with `PropertiesChanged`: the getters
/// read the same entries.
pub const ANNOUNCED: &Table<ImageRecord> = &[&NAMES, &REPO_DIGESTS];

#[interface(name = "org.berth.Engine1.Image")]
impl ImageObject {
    /// Adds a name (`localhost/app:2`; short names are qualified as podman does).
    async fn tag(&self, #[zbus(header)] header: Header<'_>, name: &str) -> Result<(), BusError> {
        let call = self.call(&header);
        let caller = call.authorize(Action::Images).await?;
        call.reply(self.engine.tag_image(caller, &self.id, name).await)
            .await
    }

    async fn untag(&self, #[zbus(header)] header: Header<'_>, name: &str) -> Result<(), BusError> {
        let call = self.call(&header);
        let caller = call.authorize(Action::Images).await?;
        call.reply(self.engine.untag_image(caller, &self.id, name).await)
            .await
    }

    /// Removes the image; `ImageInUse` while a container uses it, unless `force`.
    async fn remove(
        &self,
        #[zbus(header)] header: Header<'_>,
        force: bool,
    ) -> Result<(), BusError> {
        let call = self.call(&header);
        let caller = call.authorize(Action::Images).await?;
        call.reply(self.engine.remove_image(caller, &self.id, force).await)
            .await
    }

    /// The image as JSON, shaped like `podman image inspect`.
    fn inspect(&self, #[zbus(header)] header: Header<'_>) -> Result<String, BusError> {
        let _call = self.call(&header);
        Ok(self.engine.inspect_image(&self.id)?)
    }

    #[zbus(property(emits_changed_signal = "const"))]
    fn id(&self) -> String {
        self.id.clone()
    }

    #[zbus(property)]
    fn names(&self) -> Result<Vec<String>, BusError> {
        Ok(NAMES.read(&self.image()?))
    }

    #[zbus(property(emits_changed_signal = "const"))]
    fn size(&self) -> Result<u64, BusError> {
        Ok(self.image()?.size)
    }

    #[zbus(property(emits_changed_signal = "const"))]
    fn created_at(&self) -> Result<u64, BusError> {
        Ok(self.image()?.created_at)
    }

    #[zbus(property(emits_changed_signal = "const"))]
    fn architecture(&self) -> Result<String, BusError> {
        Ok(self.image()?.architecture)
    }

    #[zbus(property(emits_changed_signal = "const"))]
    fn os(&self) -> Result<String, BusError> {
        Ok(self.image()?.os)
    }

    /// `repository@sha256:…` of the manifests it was pulled by.
    #[zbus(property)]
    fn repo_digests(&self) -> Result<Vec<String>, BusError> {
        Ok(REPO_DIGESTS.read(&self.image()?))
    }

    #[zbus(property(emits_changed_signal = "const"))]
    fn config(&self) -> Result<HashMap<String, OwnedVariant>, BusError> {
        Ok(config_property(&self.image()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_announced_property_of_the_xml_is_in_the_change_table() {
        let sample = ImageRecord {
            id: "0".repeat(64),
            names: Vec::new(),
            layers: Vec::new(),
            config: Default::default(),
            architecture: String::new(),
            os: String::new(),
            created_at: 0,
            size: 0,
            repo_digests: Vec::new(),
            blob_digests: Vec::new(),
        };
        super::super::property::tests::assert_table_matches_xml(INTERFACE, ANNOUNCED, &sample);
    }
}
