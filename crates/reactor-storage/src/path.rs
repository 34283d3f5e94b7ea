//! Names users choose: bucket ids and object paths, checked before they reach the database
//! or the object store. An object's bytes live under a key the server makes
//! (`<bucket>/<uuid>`), never under the user's path, so a path can only ever name a row; the
//! checks below keep paths meaningful (no `..`, no empty or dot segments, no control
//! characters) so that listing by folder and every client agree on what a path means.

use crate::StorageError;

/// Words that name routes under `/storage/v1/object/…`; a bucket so named could not be
/// addressed unambiguously.
const RESERVED: &[&str] = &[
    "public",
    "authenticated",
    "sign",
    "upload",
    "list",
    "info",
    "move",
    "copy",
    "render",
];

/// Longest object path, in bytes (S3's key limit).
pub const MAX_PATH_BYTES: usize = 1024;

/// A bucket id: 1–63 characters of lowercase letters, digits, `.`, `_` and `-`, starting with
/// a letter or digit (what S3 and Supabase accept), and not a route word.
pub fn bucket_id(id: &str) -> Result<(), StorageError> {
    let bad = |why: &str| StorageError::InvalidBucketName(id.to_string(), why.to_string());
    if id.is_empty() || id.len() > 63 {
        return Err(bad("it must be 1 to 63 characters long"));
    }
    if !id
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'))
    {
        return Err(bad(
            "only lowercase letters, digits, `.`, `_` and `-` are allowed",
        ));
    }
    if !id.starts_with(|c: char| c.is_ascii_alphanumeric()) || id.contains("..") {
        return Err(bad("it must start with a letter or digit and hold no `..`"));
    }
    if RESERVED.contains(&id) {
        return Err(bad("it is a word of the storage API's routes"));
    }
    Ok(())
}

/// An object path: `folder/sub/file.txt`. Refused: empty, longer than 1024 bytes, a leading
/// or trailing `/`, an empty, `.` or `..` segment, a backslash, and control characters
/// (NUL included).
pub fn object_path(path: &str) -> Result<(), StorageError> {
    let bad = |why: &str| StorageError::InvalidPath(path.to_string(), why.to_string());
    if path.is_empty() {
        return Err(bad("it is empty"));
    }
    if path.len() > MAX_PATH_BYTES {
        return Err(bad("it is longer than 1024 bytes"));
    }
    if path.chars().any(char::is_control) {
        return Err(bad("it holds a control character"));
    }
    if path.contains('\\') {
        return Err(bad("it holds a backslash; separate folders with `/`"));
    }
    if path
        .split('/')
        .any(|s| s.is_empty() || s == "." || s == "..")
    {
        return Err(bad(
            "a segment is empty, `.` or `..` (no leading, trailing or doubled `/`)",
        ));
    }
    Ok(())
}

/// A listing prefix: like a path, but empty (the bucket's root) and a trailing `/` are fine.
pub fn prefix(prefix: &str) -> Result<(), StorageError> {
    let trimmed = prefix.trim_end_matches('/');
    if trimmed.is_empty() {
        return if prefix.is_empty() {
            Ok(())
        } else {
            Err(StorageError::InvalidPath(
                prefix.to_string(),
                "a prefix cannot start with `/`".into(),
            ))
        };
    }
    object_path(trimmed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_ids() {
        for ok in ["avatars", "a", "team-files_2", "v1.assets"] {
            assert!(bucket_id(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "Avatars",
            "-x",
            ".x",
            "a..b",
            "a/b",
            "public",
            "sign",
            "x y",
            &"a".repeat(64),
        ] {
            assert!(bucket_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn object_paths() {
        for ok in [
            "a.txt",
            "folder/sub/file.png",
            "ünïcode/ファイル.txt",
            "with space.txt",
            "..hidden",
            "a..b",
        ] {
            assert!(object_path(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "/etc/passwd",
            "../secret",
            "a/../../b",
            "a/./b",
            "a//b",
            "folder/",
            "nul\0byte",
            "line\nbreak",
            "win\\path",
            &"x".repeat(1025),
        ] {
            assert!(object_path(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn prefixes() {
        assert!(prefix("").is_ok());
        assert!(prefix("folder/").is_ok());
        assert!(prefix("folder/sub").is_ok());
        assert!(prefix("/").is_err());
        assert!(prefix("../").is_err());
    }
}
