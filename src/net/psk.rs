//! Secret files: a private swarm's pre-shared key (the libp2p/IPFS
//! `swarm.key` format) and the HTTP bearer token. Both are written new
//! (never over an existing file), readable by the owner only (mode 0600),
//! synced before the command says it wrote them.

use super::PreSharedKey;
use std::io::Write;
use std::path::Path;

/// Random bytes from the operating system.
pub fn random<const N: usize>() -> std::io::Result<[u8; N]> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).map_err(|e| std::io::Error::other(e.to_string()))?;
    Ok(b)
}

/// Writes `text` to a new file `path` with mode 0600; refuses to replace
/// an existing file.
pub fn write_new_secret(path: &Path, text: &str) -> std::io::Result<()> {
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    let mut f = o.open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            std::io::Error::new(
                e.kind(),
                format!(
                    "{} exists; not overwritten (move it away to make a new one)",
                    path.display()
                ),
            )
        } else {
            std::io::Error::new(e.kind(), format!("{}: {e}", path.display()))
        }
    })?;
    f.write_all(text.as_bytes())?;
    f.sync_all()
}

/// Generates a new pre-shared key and writes it to `path` (swarm.key
/// format: `/key/swarm/psk/1.0.0/`, `/base16/`, 64 hex digits).
pub fn generate(path: &Path) -> std::io::Result<PreSharedKey> {
    let key = PreSharedKey::new(random::<32>()?);
    write_new_secret(path, &key.to_key_file())?;
    Ok(key)
}

/// Reads the pre-shared key of `node.psk_file` (`field` names it in errors).
pub fn load(field: &str, path: &Path) -> Result<PreSharedKey, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("{field} {}: cannot read: {e}", path.display()))?;
    text.parse::<PreSharedKey>().map_err(|e| {
        format!(
            "{field} {}: not a swarm key ({e:?}); expected /key/swarm/psk/1.0.0/, /base16/ and 64 hex digits (seedswarm keygen --psk FILE writes one)",
            path.display()
        )
    })
}

/// Generates a new HTTP bearer token (32 random bytes, hex) and writes it
/// to `path`.
pub fn generate_token(path: &Path) -> std::io::Result<String> {
    let token = crate::zo::seed::hex(&random::<32>()?);
    write_new_secret(path, &format!("{token}\n"))?;
    Ok(token)
}

/// Shortest token accepted from `node.http_token_file`.
pub const MIN_TOKEN_LEN: usize = 16;

/// Reads the bearer token of `node.http_token_file`: the file's text
/// without surrounding whitespace, at least [`MIN_TOKEN_LEN`] visible ASCII
/// characters.
pub fn load_token(field: &str, path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("{field} {}: cannot read: {e}", path.display()))?;
    let token = text.trim();
    if token.len() < MIN_TOKEN_LEN || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "{field} {}: the token must be at least {MIN_TOKEN_LEN} visible ASCII characters without spaces (seedswarm keygen --http-token FILE writes one)",
            path.display()
        ));
    }
    Ok(token.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_key_parses_back_is_private_and_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("swarm.key");
        let key = generate(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[..2], ["/key/swarm/psk/1.0.0/", "/base16/"]);
        assert_eq!(lines[2].len(), 64);
        assert!(lines[2].bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(load("node.psk_file", &path).unwrap(), key);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let e = generate(&path).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::AlreadyExists);
        assert_eq!(load("node.psk_file", &path).unwrap(), key, "kept");
        assert_ne!(generate(&dir.path().join("other")).unwrap(), key);
    }

    #[test]
    fn a_bad_key_file_names_the_field_and_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("swarm.key");
        std::fs::write(&path, "/key/swarm/psk/1.0.0/\n/base16/\nnot hex\n").unwrap();
        let e = load("node.psk_file", &path).unwrap_err();
        assert!(
            e.contains("node.psk_file") && e.contains(&path.display().to_string()),
            "{e}"
        );
        let missing = dir.path().join("missing.key");
        let e = load("node.psk_file", &missing).unwrap_err();
        assert!(
            e.contains("node.psk_file") && e.contains("missing.key"),
            "{e}"
        );
    }

    #[test]
    fn tokens_are_generated_hex_and_checked_on_load() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        let t = generate_token(&path).unwrap();
        assert_eq!(t.len(), 64);
        assert_eq!(load_token("node.http_token_file", &path).unwrap(), t);
        assert!(generate_token(&path).is_err());
        let short = dir.path().join("short");
        std::fs::write(&short, "abc\n").unwrap();
        let e = load_token("node.http_token_file", &short).unwrap_err();
        assert!(e.contains("node.http_token_file"), "{e}");
    }
}
