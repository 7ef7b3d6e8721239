//! All YAML input and output goes through here, so the YAML library can be replaced in one place.

use serde::{Serialize, de::DeserializeOwned};

/// A YAML document that could not be read into the expected type.
#[derive(Debug, thiserror::Error)]
pub enum YamlError {
    /// Not YAML, or a field of the wrong type or a missing field (the message names it and
    /// gives the line).
    #[error("{0}")]
    Syntax(String),
    /// Fields the type does not have; each is named by its path.
    #[error("unknown field{} {}: remove {} or check the spelling against `kubectl explain`", if .0.len() == 1 { "" } else { "s" }, .0.join(", "), if .0.len() == 1 { "it" } else { "them" })]
    UnknownFields(Vec<String>),
}

/// Read `text` into `T`, refusing fields `T` does not have (the API server's strict field
/// validation does the same for `kubectl apply`). Paths in `tolerated` are not reported (the
/// generated custom resource type reads `apiVersion` and `kind` without keeping them).
pub fn from_str_strict<T: DeserializeOwned>(text: &str, tolerated: &[&str]) -> Result<T, YamlError> {
    let mut unknown = Vec::new();
    let de = serde_yaml::Deserializer::from_str(text);
    let value: T = serde_ignored::deserialize(de, |path| {
        let path = path.to_string();
        if !tolerated.contains(&path.as_str()) {
            unknown.push(path);
        }
    })
    .map_err(|e| YamlError::Syntax(e.to_string()))?;
    if unknown.is_empty() { Ok(value) } else { Err(YamlError::UnknownFields(unknown)) }
}

/// Write `value` as YAML.
pub fn to_string<T: Serialize>(value: &T) -> Result<String, YamlError> {
    serde_yaml::to_string(value).map_err(|e| YamlError::Syntax(e.to_string()))
}
