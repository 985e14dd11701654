//! The image config's `config` object (Env, Cmd, Entrypoint, Labels...) as
//! the build changes it, step by step.

use serde_json::{json, Map, Value};

/// Docker's default PATH, for images that have none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A stage's container config.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Config {
    map: Map<String, Value>,
}

impl Config {
    /// From an image config document (`None`: scratch, which gets the
    /// default PATH as Docker does).
    pub fn from_image_config(doc: Option<&Value>) -> Config {
        match doc {
            Some(d) => Config {
                map: d["config"].as_object().cloned().unwrap_or_default(),
            },
            None => {
                let mut c = Config::default();
                c.set_env("PATH", DEFAULT_PATH);
                c
            }
        }
    }

    /// The whole object, for the image config.
    pub fn to_value(&self) -> Value {
        Value::Object(self.map.clone())
    }

    /// `Env` as `KEY=value` strings.
    pub fn env(&self) -> Vec<String> {
        self.strings("Env").unwrap_or_default()
    }

    /// One variable of `Env`.
    pub fn get_env(&self, key: &str) -> Option<String> {
        self.env().into_iter().find_map(|e| {
            let (k, v) = e.split_once('=').unwrap_or((e.as_str(), ""));
            (k == key).then(|| v.to_string())
        })
    }

    /// Sets (replacing in place, or appending) one variable of `Env`.
    pub fn set_env(&mut self, key: &str, value: &str) {
        let mut env = self.env();
        let entry = format!("{key}={value}");
        match env
            .iter_mut()
            .find(|e| e.split_once('=').map_or(e.as_str(), |(k, _)| k) == key)
        {
            Some(e) => *e = entry,
            None => env.push(entry),
        }
        self.map.insert("Env".into(), json!(env));
    }

    /// A string array field.
    pub fn strings(&self, key: &str) -> Option<Vec<String>> {
        self.map.get(key)?.as_array().map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
    }

    /// A string field (empty counts as unset).
    pub fn string(&self, key: &str) -> Option<String> {
        self.map
            .get(key)?
            .as_str()
            .filter(|s| !s.is_empty())
            .map(String::from)
    }

    /// Sets a field.
    pub fn set(&mut self, key: &str, value: Value) {
        self.map.insert(key.into(), value);
    }

    /// Removes a field.
    pub fn remove(&mut self, key: &str) {
        self.map.remove(key);
    }

    /// Adds `key` to the set-valued field `field` (ExposedPorts, Volumes).
    pub fn add_to_set(&mut self, field: &str, key: &str) {
        let entry = self
            .map
            .entry(field.to_string())
            .or_insert_with(|| json!({}));
        if !entry.is_object() {
            *entry = json!({});
        }
        if let Some(o) = entry.as_object_mut() {
            o.insert(key.into(), json!({}));
        }
    }

    /// Sets `Labels[key]`.
    pub fn set_label(&mut self, key: &str, value: &str) {
        let entry = self
            .map
            .entry("Labels".to_string())
            .or_insert_with(|| json!({}));
        if !entry.is_object() {
            *entry = json!({});
        }
        if let Some(o) = entry.as_object_mut() {
            o.insert(key.into(), json!(value));
        }
    }

    /// `Shell`, defaulting to `/bin/sh -c`.
    pub fn shell(&self) -> Vec<String> {
        self.strings("Shell")
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| vec!["/bin/sh".into(), "-c".into()])
    }

    /// `WorkingDir`, defaulting to `/`.
    pub fn workdir(&self) -> String {
        self.string("WorkingDir").unwrap_or_else(|| "/".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_and_sets() {
        let mut c = Config::from_image_config(Some(&json!({"config": {"Env": ["A=1", "B"]}})));
        assert_eq!(c.get_env("A").as_deref(), Some("1"));
        assert_eq!(c.get_env("B").as_deref(), Some(""));
        c.set_env("A", "2");
        c.set_env("C", "x=y");
        assert_eq!(c.env(), ["A=2", "B", "C=x=y"]);
        c.add_to_set("ExposedPorts", "80/tcp");
        c.set_label("k", "v");
        assert_eq!(c.to_value()["ExposedPorts"], json!({"80/tcp": {}}));
        assert_eq!(c.to_value()["Labels"], json!({"k": "v"}));
        assert_eq!(c.shell(), ["/bin/sh", "-c"]);
        assert_eq!(c.workdir(), "/");
        let scratch = Config::from_image_config(None);
        assert_eq!(scratch.get_env("PATH").as_deref(), Some(DEFAULT_PATH));
    }
}
