//! The owner's side of a permissioned run: the owner key (a file that can
//! stay offline) and the admission and revocation files it signs
//! ([`crate::crdt::admit`]). Nothing here touches the network: the owner
//! hands the files to node operators, or publishes them through any node
//! (`seedswarm publish`).

use crate::crdt::admit::{Kind, Owner, Record};
use crate::zo::seed::{Origin, RunId};
use libp2p::identity::ed25519;
use std::path::Path;

/// First word of an owner key file.
const KEY_HEAD: &str = "seedswarm-owner-secret";

/// Errors of the owner's commands.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing a file failed.
    #[error("{path}: {reason}")]
    File { path: String, reason: String },
    /// A peer id that is not an ed25519 identity.
    #[error("--peer {0:?}: {1}")]
    Peer(String, String),
    /// The key is not the run's owner key, or the run has no owner.
    #[error("{0}")]
    Owner(String),
    /// The run id could not be computed (the model did not load).
    #[error(transparent)]
    Run(#[from] crate::train::Error),
    /// A node did not take a published record.
    #[error("{0}")]
    Publish(String),
}

fn file_err(path: &Path, reason: impl std::fmt::Display) -> Error {
    Error::File {
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

/// Writes a new owner key to `path` (mode 0600; an existing file is never
/// overwritten) and returns its public key, the manifest's `run.owner`.
pub fn create_key(path: &Path) -> Result<Owner, Error> {
    let key = ed25519::Keypair::generate();
    let text = format!(
        "{KEY_HEAD} {}\n",
        crate::zo::seed::hex(key.secret().as_ref())
    );
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let write = || -> std::io::Result<()> {
        use std::io::Write;
        let mut f = opts.open(path)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()
    };
    write().map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            file_err(path, "exists; an owner key is never overwritten")
        } else {
            file_err(path, e)
        }
    })?;
    Ok(Owner(key.public().to_bytes()))
}

/// Reads an owner key file.
pub fn load_key(path: &Path) -> Result<ed25519::Keypair, Error> {
    let text = std::fs::read_to_string(path).map_err(|e| file_err(path, e))?;
    let bad = || {
        file_err(
            path,
            format!("not an owner key (`{KEY_HEAD} <64 hex digits>`)"),
        )
    };
    let hex = text
        .trim()
        .strip_prefix(KEY_HEAD)
        .map(str::trim)
        .ok_or_else(bad)?;
    let mut secret = crate::zo::seed::unhex(hex)
        .filter(|b| b.len() == 32)
        .ok_or_else(bad)?;
    let secret = ed25519::SecretKey::try_from_bytes(&mut secret).map_err(|_| bad())?;
    Ok(ed25519::Keypair::from(secret))
}

/// The origin of a peer id (`12D3Koo…`, as a node prints it).
pub fn origin_of_peer_id(peer: &str) -> Result<Origin, Error> {
    let id: libp2p::PeerId = peer
        .parse()
        .map_err(|e| Error::Peer(peer.into(), format!("not a peer id ({e})")))?;
    crate::net::origin_of_peer(&id).ok_or_else(|| {
        Error::Peer(
            peer.into(),
            "not an ed25519 identity (every seedswarm node's is)".into(),
        )
    })
}

/// Signs a record about `peer` for `run` with the key in `key_path`.
pub fn sign(
    key_path: &Path,
    run: &RunId,
    kind: Kind,
    peer: &str,
    seq: u64,
) -> Result<Record, Error> {
    let key = load_key(key_path)?;
    let origin = origin_of_peer_id(peer)?;
    Ok(Record::sign(&key, run, kind, origin, seq))
}

/// Signs a record about `peer` for the run of `cfg` (loads its model to
/// compute the run id), after checking that `key_path` holds the run's
/// owner key. Returns the record and the run id.
pub fn sign_for(
    key_path: &Path,
    cfg: &crate::config::Config,
    kind: Kind,
    peer: &str,
    seq: u64,
) -> Result<(Record, RunId), Error> {
    let key = load_key(key_path)?;
    let owner = Owner(key.public().to_bytes());
    match cfg.run.owner() {
        Some(o) if o == owner => {}
        Some(o) => {
            return Err(Error::Owner(format!(
                "the run's owner is {} but {} holds the key of {}",
                o.to_hex(),
                key_path.display(),
                owner.to_hex()
            )))
        }
        None => {
            return Err(Error::Owner(format!(
                "the run has no owner; add `owner = \"{}\"` to its [run] section",
                owner.to_hex()
            )))
        }
    }
    let run = crate::train::run_id(cfg)?;
    let origin = origin_of_peer_id(peer)?;
    Ok((Record::sign(&key, &run, kind, origin, seq), run))
}

/// Hands the record file at `path` to the running node at `node` (its HTTP
/// URL) with `POST /records`; returns the node's answer.
pub fn publish(node: &str, token: Option<&str>, path: &Path) -> Result<String, Error> {
    let url = format!("{}/records", node.trim_end_matches('/'));
    let record = read_record(path)?;
    let (code, body) = crate::obs::http::post_with(
        &url,
        record.to_text().as_bytes(),
        std::time::Duration::from_secs(10),
        token,
    )
    .map_err(Error::Publish)?;
    match code {
        200 => Ok(body.trim().to_string()),
        401 => Err(Error::Publish(format!(
            "{url}: HTTP 401 (the node wants a bearer token: --token-file FILE)"
        ))),
        _ => Err(Error::Publish(format!(
            "{}: {url} refused it (HTTP {code}): {}",
            path.display(),
            body.trim()
        ))),
    }
}

/// Writes a record file (its one-line text form).
pub fn write_record(path: &Path, record: &Record) -> Result<(), Error> {
    std::fs::write(path, record.to_text()).map_err(|e| file_err(path, e))
}

/// Reads a record file.
pub fn read_record(path: &Path) -> Result<Record, Error> {
    let bytes = std::fs::read(path).map_err(|e| file_err(path, e))?;
    Record::from_file_bytes(&bytes).map_err(|e| file_err(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_owner_key_signs_records_its_public_key_checks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("owner.key");
        let owner = create_key(&path).unwrap();
        let err = create_key(&path).unwrap_err().to_string();
        assert!(err.contains("never overwritten"), "{err}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let peer = libp2p::identity::Keypair::generate_ed25519()
            .public()
            .to_peer_id()
            .to_string();
        let run = RunId([4; 32]);
        let r = sign(&path, &run, Kind::Admission, &peer, 10).unwrap();
        assert!(r.verify(&run, &owner));
        let out = dir.path().join("peer.admission");
        write_record(&out, &r).unwrap();
        assert_eq!(read_record(&out).unwrap(), r);
        assert!(sign(&path, &run, Kind::Admission, "nonsense", 1)
            .unwrap_err()
            .to_string()
            .contains("--peer"));
        std::fs::write(&path, "garbage").unwrap();
        assert!(load_key(&path)
            .unwrap_err()
            .to_string()
            .contains("not an owner key"));
    }
}
