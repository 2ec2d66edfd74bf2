//! `--model ORG/NAME`: the snapshot `huggingface_hub` cached, found offline; a path as it is; and
//! an error that says where it looked and how to fetch the model.

use std::path::{Path, PathBuf};

use deepblocks_deepseek::{Error, resolve_model_in};

fn cache(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("hub")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn snapshot(cache: &Path, repo: &str, rev: &str) -> PathBuf {
    let dir = cache.join(repo).join("snapshots").join(rev);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("config.json"), "{}").unwrap();
    dir
}

#[test]
fn a_cached_model_is_found_by_its_name() {
    let c = cache("found");
    let repo = "models--deepseek-ai--DeepSeek-V2-Lite-Chat";
    let old = snapshot(&c, repo, "1111");
    let main = snapshot(&c, repo, "2222");
    std::fs::create_dir_all(c.join(repo).join("refs")).unwrap();
    std::fs::write(c.join(repo).join("refs/main"), "2222\n").unwrap();
    let spec = Path::new("deepseek-ai/DeepSeek-V2-Lite-Chat");
    assert_eq!(resolve_model_in(spec, Some(&c)).unwrap(), main);
    // Without refs/main, one snapshot is unambiguous; two are not.
    std::fs::remove_file(c.join(repo).join("refs/main")).unwrap();
    std::fs::remove_dir_all(&main).unwrap();
    assert_eq!(resolve_model_in(spec, Some(&c)).unwrap(), old);
    snapshot(&c, repo, "3333");
    let err = resolve_model_in(spec, Some(&c)).unwrap_err().to_string();
    assert!(err.contains("2 snapshots"), "{err}");
    // A path that exists is used as it is, whatever the cache holds.
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    assert_eq!(resolve_model_in(here, Some(&c)).unwrap(), here);
}

#[test]
fn a_missing_model_says_how_to_fetch_it() {
    let c = cache("missing");
    let err =
        resolve_model_in(Path::new("deepseek-ai/DeepSeek-V2-Lite-Chat"), Some(&c)).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::ModelNotFound { .. }), "{msg}");
    assert!(
        msg.contains("huggingface-cli download deepseek-ai/DeepSeek-V2-Lite-Chat")
            && msg.contains("models--deepseek-ai--DeepSeek-V2-Lite-Chat"),
        "{msg}"
    );
    // An incomplete download (no config.json) is named as such.
    let dir = c.join("models--a--b/snapshots/9");
    std::fs::create_dir_all(&dir).unwrap();
    let msg = resolve_model_in(Path::new("a/b"), Some(&c))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("no config.json"), "{msg}");
    // Not a name of the hub, not a path: said so.
    let msg = resolve_model_in(Path::new("no/such/path"), Some(&c))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("no such file or folder"), "{msg}");
    let msg = resolve_model_in(Path::new("a/b"), None)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("HF_HOME"), "{msg}");
}
