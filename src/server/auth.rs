//! Bearer tokens: read from the token file (created with one random token on first start),
//! compared in constant time.

use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use anyhow::Context;
use rand_core::RngCore;
use subtle::ConstantTimeEq;

use crate::error::{Error, Result};

/// The scheme and realm every 401 names.
pub const CHALLENGE: &str = "Bearer realm=\"sandman\"";
/// Shorter tokens can be guessed; a generated one has 64 characters.
const MIN_TOKEN_LEN: usize = 16;

pub struct Tokens(Vec<Vec<u8>>);

/// Never shows the tokens themselves.
impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tokens({} configured)", self.0.len())
    }
}

/// What `open_or_create` found.
pub enum TokenFile {
    Existing(Tokens),
    /// The file was missing and has been made; the new token is to be shown once.
    Created(Tokens, String),
}

impl Tokens {
    pub fn open_or_create(path: &Path) -> Result<TokenFile> {
        match std::fs::metadata(path) {
            Ok(_) => Ok(TokenFile::Existing(Tokens::load(path)?)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => match create(path)? {
                Some(token) => Ok(TokenFile::Created(Tokens::load(path)?, token)),
                // Made by another process meanwhile.
                None => Ok(TokenFile::Existing(Tokens::load(path)?)),
            },
            Err(e) => Err(unusable(path, e)),
        }
    }

    fn load(path: &Path) -> Result<Tokens> {
        // SAFETY: geteuid has no preconditions and cannot fail.
        Tokens::load_as(path, unsafe { libc::geteuid() })
    }

    fn load_as(path: &Path, serving_uid: u32) -> Result<Tokens> {
        // The checks and the read concern the same open file, even if the path is replaced.
        let mut file = std::fs::File::open(path).map_err(|e| unusable(path, e))?;
        let meta = file.metadata().map_err(|e| unusable(path, e))?;
        check_private(path, meta.uid(), serving_uid, meta.permissions().mode())?;
        let mut text = String::new();
        file.read_to_string(&mut text).map_err(|e| unusable(path, e))?;
        Tokens::parse(&text).map_err(|why| Error::invalid("token file", format!("{}: {why}", path.display())))
    }

    /// One token per line; `#` starts a comment; blank lines are skipped.
    fn parse(text: &str) -> std::result::Result<Tokens, String> {
        let mut tokens = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let token = line.split('#').next().unwrap_or("").trim();
            if token.is_empty() {
                continue;
            }
            if token.len() < MIN_TOKEN_LEN || token.contains(char::is_whitespace) {
                return Err(format!(
                    "line {} is not a usable token: use one word of at least {MIN_TOKEN_LEN} characters",
                    n + 1
                ));
            }
            tokens.push(token.as_bytes().to_vec());
        }
        if tokens.is_empty() {
            return Err("holds no token; add one (e.g. `openssl rand -hex 32`)".into());
        }
        Ok(Tokens(tokens))
    }

    /// Checks an `Authorization` header value; the error is the reason for the client.
    pub fn check(&self, authorization: Option<&str>) -> std::result::Result<(), &'static str> {
        let Some(value) = authorization else {
            return Err("missing Authorization header: send `Authorization: Bearer <token>`");
        };
        let (scheme, token) = value.trim().split_once(' ').unwrap_or((value.trim(), ""));
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err("the Authorization scheme must be Bearer: `Authorization: Bearer <token>`");
        }
        let token = token.trim().as_bytes();
        // Every configured token is compared, each in constant time, so timing tells nothing.
        let matched = self.0.iter().fold(subtle::Choice::from(0), |hit, t| hit | t.as_slice().ct_eq(token));
        if bool::from(matched) { Ok(()) } else { Err("invalid bearer token") }
    }
}

/// A token file must belong to the serving user or root (another owner could change the tokens,
/// or its mode, at any time) and be neither readable nor writable by anyone else.
fn check_private(path: &Path, owner: u32, serving_uid: u32, mode: u32) -> Result<()> {
    if owner != serving_uid && owner != 0 {
        return Err(Error::invalid(
            "token file",
            format!(
                "{} belongs to uid {owner}, neither the user serving the API (uid {serving_uid}) nor root, \
                 so that user could change the tokens: run chown {serving_uid} {0}",
                path.display()
            ),
        ));
    }
    if mode & 0o077 != 0 {
        return Err(Error::invalid(
            "token file",
            format!(
                "{} can be read or changed by other users (mode {:o}): run chmod 600 {0}",
                path.display(),
                mode & 0o777
            ),
        ));
    }
    Ok(())
}

/// Writes a new token file (mode 0600) holding one random 256-bit token; None if it exists.
fn create(path: &Path) -> Result<Option<String>> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(|e| unusable(dir, e))?;
    }
    let mut bytes = [0u8; 32];
    rand_core::OsRng.fill_bytes(&mut bytes);
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let mut file = match std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(None),
        Err(e) => return Err(unusable(path, e)),
    };
    write!(
        file,
        "# sandman API tokens: one per line; '#' starts a comment.\n\
         # Clients send `Authorization: Bearer <token>`. Restart `sandman serve` after a change.\n\
         {token}\n"
    )
    .and_then(|()| file.sync_all())
    .with_context(|| format!("cannot write token file {}", path.display()))?;
    Ok(Some(token))
}

fn unusable(path: &Path, e: std::io::Error) -> Error {
    Error::Unavailable(format!("token file {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "0123456789abcdef0123";

    #[test]
    fn parses_tokens_and_comments() {
        let t = Tokens::parse(&format!("# admins\n\n{A}  # alice\n  bbbbbbbbbbbbbbbbbbbb\n")).unwrap();
        assert_eq!(t.0.len(), 2);
        assert!(Tokens::parse("# nothing\n").unwrap_err().contains("no token"));
        assert!(Tokens::parse("short\n").unwrap_err().contains("line 1"));
        assert!(Tokens::parse(&format!("{A} {A}\n")).unwrap_err().contains("one word"));
    }

    #[test]
    fn checks_scheme_and_token() {
        let t = Tokens::parse(A).unwrap();
        assert_eq!(t.check(Some(&format!("Bearer {A}"))), Ok(()));
        assert_eq!(t.check(Some(&format!("bearer  {A} "))), Ok(()));
        assert!(t.check(None).unwrap_err().contains("missing"));
        assert!(t.check(Some(&format!("Basic {A}"))).unwrap_err().contains("scheme"));
        assert_eq!(t.check(Some("Bearer")), Err("invalid bearer token"));
        assert_eq!(t.check(Some(&format!("Bearer {A}x"))), Err("invalid bearer token"));
        assert_eq!(t.check(Some(&format!("Bearer {}", &A[1..]))), Err("invalid bearer token"));
    }

    #[test]
    fn creates_a_private_file_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("etc").join("api-tokens");
        let TokenFile::Created(tokens, token) = Tokens::open_or_create(&path).unwrap() else {
            panic!("should be created");
        };
        assert_eq!(token.len(), 64);
        assert!(tokens.check(Some(&format!("Bearer {token}"))).is_ok());
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(matches!(Tokens::open_or_create(&path).unwrap(), TokenFile::Existing(_)));

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = Tokens::open_or_create(&path).err().unwrap().to_string();
        assert!(e.contains("chmod 600"), "{e}");
    }

    #[test]
    fn a_token_file_of_another_user_or_open_to_others_is_refused() {
        let path = Path::new("/etc/sandman/api-tokens");
        assert!(check_private(path, 1000, 1000, 0o100600).is_ok());
        assert!(check_private(path, 0, 1000, 0o100400).is_ok(), "root's file, readable by the serving user");
        let e = check_private(path, 1001, 1000, 0o100600).unwrap_err().to_string();
        assert!(e.contains("belongs to uid 1001") && e.contains("run chown 1000 /etc/sandman/api-tokens"), "{e}");
        let e = check_private(path, 2000, 0, 0o100600).unwrap_err().to_string();
        assert!(e.contains("run chown 0 "), "{e}");
        for mode in [0o100620, 0o100602, 0o100640, 0o100604] {
            let e = check_private(path, 1000, 1000, mode).unwrap_err().to_string();
            assert!(e.contains(&format!("mode {:o}", mode & 0o777)) && e.contains("chmod 600"), "{e}");
        }
    }

    #[test]
    fn an_existing_private_file_of_another_owner_is_refused_when_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api-tokens");
        std::fs::write(&path, format!("{A}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(Tokens::open_or_create(&path).is_ok());
        // SAFETY: geteuid has no preconditions.
        let me = unsafe { libc::geteuid() };
        // Root's own files are accepted from anyone, so root gives this one away first.
        let (owner, serving) = if me == 0 {
            std::os::unix::fs::chown(&path, Some(12345), None).unwrap();
            (12345, 0)
        } else {
            (me, me + 1)
        };
        let e = Tokens::load_as(&path, serving).err().unwrap().to_string();
        assert!(e.contains(&format!("belongs to uid {owner}")) && e.contains("chown"), "{e}");
    }
}
