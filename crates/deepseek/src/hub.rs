//! Models by their Hugging Face name (`ORG/NAME`), found in the local Hugging Face cache, offline:
//! `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`, and in it
//! `models--ORG--NAME/snapshots/<rev>/` with `<rev>` from `refs/main` (the layout
//! `huggingface_hub` writes). Nothing here reaches the network.

use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// The folder of `spec`: `spec` itself when it names an existing file or folder, else the cached
/// snapshot of the Hugging Face model `spec` (`ORG/NAME`) in the cache the environment names.
///
/// # Errors
/// [`Error::ModelNotFound`] saying where it looked and how to fetch the model.
pub fn resolve_model(spec: &Path) -> Result<PathBuf> {
    resolve_model_in(spec, hub_cache().as_deref())
}

/// The Hugging Face cache this process would read: `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else
/// `~/.cache/huggingface/hub` (`None` without a home).
pub fn hub_cache() -> Option<PathBuf> {
    let var = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    var("HF_HUB_CACHE")
        .or_else(|| var("HF_HOME").map(|h| h.join("hub")))
        .or_else(|| var("HOME").map(|h| h.join(".cache/huggingface/hub")))
}

/// [`resolve_model`] against the cache at `cache`.
///
/// # Errors
/// As [`resolve_model`].
pub fn resolve_model_in(spec: &Path, cache: Option<&Path>) -> Result<PathBuf> {
    if spec.exists() {
        return Ok(spec.to_path_buf());
    }
    let text = spec.to_string_lossy();
    let name = text.trim_end_matches('/');
    let repo = name.split_once('/').filter(|(org, model)| {
        let ok = |s: &str| {
            !s.is_empty()
                && s != "."
                && s != ".."
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        };
        ok(org) && ok(model)
    });
    let not_found = |reason: String| Error::ModelNotFound {
        spec: text.to_string(),
        reason,
    };
    let Some((org, model)) = repo else {
        return Err(not_found(
            "no such file or folder (and not an ORG/NAME of the Hugging Face hub)".into(),
        ));
    };
    let fetch = format!("fetch it with `huggingface-cli download {org}/{model}`");
    let Some(cache) = cache else {
        return Err(not_found(format!(
            "not a folder here, and no Hugging Face cache is known (set HF_HOME); {fetch}"
        )));
    };
    let root = cache.join(format!("models--{org}--{model}"));
    let snapshots = root.join("snapshots");
    let rev = std::fs::read_to_string(root.join("refs/main"))
        .ok()
        .map(|r| r.trim().to_string());
    let dir = match rev {
        Some(rev) if !rev.is_empty() => snapshots.join(rev),
        _ => {
            // No refs/main: a single snapshot is unambiguous.
            let revs: Vec<PathBuf> = std::fs::read_dir(&snapshots)
                .map(|entries| entries.filter_map(|e| e.ok().map(|e| e.path())).collect())
                .unwrap_or_default();
            match revs.as_slice() {
                [one] => one.clone(),
                [] => {
                    return Err(not_found(format!(
                        "not a folder here, nor in the Hugging Face cache ({} is absent); {fetch}",
                        root.display()
                    )));
                }
                _ => {
                    return Err(not_found(format!(
                        "{} holds {} snapshots and no refs/main; give the snapshot folder itself",
                        snapshots.display(),
                        revs.len()
                    )));
                }
            }
        }
    };
    if !dir.join("config.json").is_file() {
        return Err(not_found(format!(
            "the cached snapshot {} has no config.json (an incomplete download?); {fetch}",
            dir.display()
        )));
    }
    Ok(dir)
}
