//! Images: import, lookup, tag/untag, removal (with `ImageInUse`), and the layers of a
//! container's root filesystem. Image changes are serialised by one lock (imports, layer
//! sharing and layer deletion must not interleave); containers are not held up by it.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{blocking, Caller, Engine, EngineError, Inner, Notification, Result};
use crate::clock::now_micros;
use crate::db::{Change, NewEvent};
use crate::storage::images::{
    import, qualify as normalize_reference, ImageRecord, ImportError, ImportOptions,
};

impl From<ImportError> for EngineError {
    fn from(error: ImportError) -> Self {
        if super::error::is_no_space(&error) {
            return EngineError::NoSpace(format!("import: {error}"));
        }
        match error {
            ImportError::Io(io) => EngineError::Internal(format!("image store: {io}")),
            other => EngineError::InvalidArgument(format!("import: {other}")),
        }
    }
}

pub(super) fn image_event(
    kind: &'static str,
    image: &ImageRecord,
    caller: Caller,
    name: Option<&str>,
) -> NewEvent {
    let mut attributes = BTreeMap::from([("image".to_string(), image.id.clone())]);
    if let Some(name) = name.or(image.names.first().map(String::as_str)) {
        attributes.insert("name".to_string(), name.to_string());
    }
    if caller != Caller::ENGINE {
        attributes.insert("uid".to_string(), caller.uid.to_string());
    }
    NewEvent { kind, attributes }
}

impl Inner {
    pub(super) fn read_images(
        &self,
    ) -> std::sync::RwLockReadGuard<'_, std::collections::HashMap<String, ImageRecord>> {
        self.images.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Stores image records (and takes names away from images that lose them) with their
    /// events in one transaction, then publishes.
    pub(super) async fn store_images(
        self: &Arc<Self>,
        changed: Vec<ImageRecord>,
        events: Vec<NewEvent>,
        added: Option<String>,
    ) -> Result<()> {
        let inner = self.clone();
        blocking(move || {
            let documents: Vec<(String, String)> = changed
                .iter()
                .map(|image| {
                    (
                        image.id.clone(),
                        serde_json::to_string(image).unwrap_or_default(),
                    )
                })
                .collect();
            let changes: Vec<Change<'_>> = documents
                .iter()
                .map(|(id, json)| Change::PutImage(id, json))
                .collect();
            inner
                .db
                .commit_many("", changes, &events, now_micros(), |records| {
                    let mut images = inner.images.write().unwrap_or_else(|p| p.into_inner());
                    for image in changed {
                        let id = image.id.clone();
                        images.insert(id.clone(), image);
                        if added.as_deref() != Some(id.as_str()) {
                            inner.notify.send(Notification::ImageChanged { id });
                        }
                    }
                    if let Some(id) = added {
                        inner.notify.send(Notification::ImageAdded { id });
                    }
                    for record in records {
                        inner.notify.send(Notification::Event(record));
                    }
                })?;
            Ok(())
        })
        .await
    }
}

/// Gives `names` to `image`, taking each from any other image that had it.
pub(super) fn claim_names(
    images: &std::collections::HashMap<String, ImageRecord>,
    image: &mut ImageRecord,
    names: &[String],
) -> Vec<ImageRecord> {
    let mut losers = Vec::new();
    for other in images.values().filter(|other| other.id != image.id) {
        if other.names.iter().any(|n| names.contains(n)) {
            let mut loser = other.clone();
            loser.names.retain(|n| !names.contains(n));
            losers.push(loser);
        }
    }
    for name in names {
        if !image.names.contains(name) {
            image.names.push(name.clone());
        }
    }
    losers
}

impl Engine {
    /// Imports an image archive read from `source` (a pipe or file the caller passed).
    pub async fn import_image(
        &self,
        caller: Caller,
        source: std::fs::File,
        mut options: ImportOptions,
    ) -> Result<String> {
        if let Some(reference) = options.reference.take() {
            options.reference = Some(normalize_reference(&reference));
        }
        let inner = self.inner().clone();
        let _serial = inner.images_lock.lock().await;
        let store = inner.layers.clone();
        let imported = blocking(move || {
            Ok(import(
                std::io::BufReader::with_capacity(1 << 20, source),
                &store,
                &options,
            )?)
        })
        .await?;
        crate::failpoint::hit("import.after-unpack");
        let (mut image, added) = match self.inner().read_images().get(&imported.id) {
            Some(existing) => (existing.clone(), None),
            None => (imported.clone(), Some(imported.id.clone())),
        };
        let losers = claim_names(&self.inner().read_images(), &mut image, &imported.names);
        let event = image_event("import", &image, caller, None);
        let mut changed = vec![image.clone()];
        changed.extend(losers);
        inner.store_images(changed, vec![event], added).await?;
        Ok(image.id)
    }

    /// A full id, a unique id prefix, or a name (short names are qualified as podman does).
    pub fn lookup_image(&self, reference: &str) -> Result<String> {
        let images = self.inner().read_images();
        if images.contains_key(reference) {
            return Ok(reference.to_string());
        }
        // A short name matches the docker.io spelling or, for local images, localhost/.
        let mut candidates = vec![reference.to_string(), normalize_reference(reference)];
        if !reference.contains('/') {
            candidates.push(normalize_reference(&format!("localhost/{reference}")));
        }
        if let Some(image) = images
            .values()
            .find(|i| i.names.iter().any(|n| candidates.contains(n)))
        {
            return Ok(image.id.clone());
        }
        let hex = reference.trim_start_matches("sha256:");
        let mut matches = images
            .keys()
            .filter(|id| hex.len() >= 3 && id.starts_with(hex));
        match (matches.next(), matches.next()) {
            (Some(id), None) => Ok(id.clone()),
            _ => Err(EngineError::NoSuchImage(reference.to_string())),
        }
    }

    pub fn image(&self, id: &str) -> Result<ImageRecord> {
        self.inner()
            .read_images()
            .get(id)
            .cloned()
            .ok_or_else(|| EngineError::NoSuchImage(id.to_string()))
    }

    /// Every image, oldest first.
    pub fn images(&self) -> Vec<ImageRecord> {
        let mut images: Vec<ImageRecord> = self.inner().read_images().values().cloned().collect();
        images.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        images
    }

    pub async fn tag_image(&self, caller: Caller, id: &str, name: &str) -> Result<()> {
        let name = normalize_reference(name);
        let inner = self.inner().clone();
        let _serial = inner.images_lock.lock().await;
        let mut image = self.image(id)?;
        let losers = claim_names(
            &inner.read_images(),
            &mut image,
            std::slice::from_ref(&name),
        );
        let event = image_event("tag", &image, caller, Some(&name));
        let mut changed = vec![image];
        changed.extend(losers);
        inner.store_images(changed, vec![event], None).await
    }

    pub async fn untag_image(&self, caller: Caller, id: &str, name: &str) -> Result<()> {
        let inner = self.inner().clone();
        let _serial = inner.images_lock.lock().await;
        let mut image = self.image(id)?;
        let normalized = normalize_reference(name);
        let before = image.names.len();
        image.names.retain(|n| n != name && *n != normalized);
        if image.names.len() == before {
            return Err(EngineError::InvalidArgument(format!(
                "image {id} has no name {name:?}"
            )));
        }
        let event = image_event("untag", &image, caller, Some(&normalized));
        inner.store_images(vec![image], vec![event], None).await
    }

    /// Removes an image; refuses with `ImageInUse` while a container uses it, unless
    /// `force`, which removes those containers first (as `podman rmi -f`). Layers no other
    /// image has are deleted.
    pub async fn remove_image(&self, caller: Caller, id: &str, force: bool) -> Result<()> {
        let users: Vec<String> = self
            .inner()
            .read_containers()
            .values()
            .filter(|e| e.config.image_id == id)
            .map(|e| e.config.id.clone())
            .collect();
        let image = self.image(id)?;
        if !users.is_empty() && !force {
            return Err(EngineError::ImageInUse(format!(
                "image {} is used by {} container(s)",
                image.names.first().unwrap_or(&image.id),
                users.len()
            )));
        }
        for container in users {
            self.remove(caller, &container, true).await?;
        }
        let inner = self.inner().clone();
        let _serial = inner.images_lock.lock().await;
        // A container created from it meanwhile keeps it.
        if inner
            .read_containers()
            .values()
            .any(|e| e.config.image_id == id)
        {
            return Err(EngineError::ImageInUse(format!(
                "image {id} got a new container meanwhile"
            )));
        }
        let still_used: std::collections::HashSet<String> = inner
            .read_images()
            .values()
            .filter(|other| other.id != id)
            .flat_map(|other| other.layers.clone())
            .collect();
        let orphans: Vec<String> = image
            .layers
            .iter()
            .filter(|l| !still_used.contains(*l))
            .cloned()
            .collect();
        let event = image_event("remove", &image, caller, None);
        let id = id.to_string();
        let store = inner.layers.clone();
        let inner_for_commit = inner.clone();
        blocking(move || {
            inner_for_commit.db.commit(
                "",
                Change::DeleteImage(&id),
                &[event],
                now_micros(),
                |records| {
                    inner_for_commit
                        .images
                        .write()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(&id);
                    for record in records {
                        inner_for_commit.notify.send(Notification::Event(record));
                    }
                    inner_for_commit
                        .notify
                        .send(Notification::ImageRemoved { id: id.clone() });
                },
            )?;
            for layer in orphans {
                store
                    .delete(&layer)
                    .map_err(|e| EngineError::Internal(format!("delete layer {layer}: {e}")))?;
            }
            Ok(())
        })
        .await
    }

    /// `Inspect` of an image: shaped like `podman image inspect` where fields exist.
    pub fn inspect_image(&self, id: &str) -> Result<String> {
        let image = self.image(id)?;
        let document = serde_json::json!({
            "Id": image.id,
            "Digest": format!("sha256:{}", image.id),
            "RepoTags": image.names,
            "RepoDigests": image.repo_digests,
            "Created": crate::clock::rfc3339_micros(image.created_at),
            "Architecture": image.architecture,
            "Os": image.os,
            "Size": image.size,
            "Config": {
                "Cmd": image.config.cmd,
                "Entrypoint": image.config.entrypoint,
                "Env": image.config.env,
                "WorkingDir": image.config.working_dir,
                "User": image.config.user,
                "Labels": image.config.labels,
            },
            "RootFS": { "Type": "layers", "Layers": image.layers },
            "GraphDriver": {
                "Name": "overlay",
                "Data": { "LowerDir": image.layers.iter().rev().map(|l| self.inner().layers.path(l).display().to_string()).collect::<Vec<_>>().join(":") },
            },
        });
        Ok(serde_json::to_string_pretty(&document).unwrap_or_default())
    }
}
