//! Release files on this machine's disk, by SHA-256: what sites serve and functions load.
//! The database holds every release's files; a replica fetches a file the first time it needs
//! it, checks its hash, and writes it here (to a temporary name, then renamed, so a reader
//! never sees half a file). Files are immutable, so processes may share one directory.

use std::io;
use std::path::{Path, PathBuf};

use reactor_db::Db;
use sha2::{Digest, Sha256};

#[derive(Debug, Clone)]
pub struct BlobCache {
    dir: PathBuf,
    db: Db,
}

impl BlobCache {
    pub fn new(dir: PathBuf, db: Db) -> io::Result<BlobCache> {
        std::fs::create_dir_all(&dir)?;
        Ok(BlobCache { dir, db })
    }

    fn path_of(&self, sha256: &str) -> io::Result<PathBuf> {
        if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a SHA-256"));
        }
        Ok(self.dir.join(sha256))
    }

    /// Keeps bytes already checked against `sha256` (a bundle's files as they arrive).
    pub fn put_verified(&self, sha256: &str, bytes: &[u8]) -> io::Result<PathBuf> {
        let path = self.path_of(sha256)?;
        if path.is_file() {
            return Ok(path);
        }
        write_atomically(&path, bytes)?;
        Ok(path)
    }

    /// A local file holding `sha256`, fetched from the database if this machine lacks it.
    pub async fn path(&self, sha256: &str) -> io::Result<PathBuf> {
        let path = self.path_of(sha256)?;
        if tokio::fs::try_exists(&path).await.unwrap_or(false) {
            return Ok(path);
        }
        let bytes = crate::deploy::store::blob(&self.db, sha256)
            .await
            .map_err(io::Error::other)?
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("no file {sha256}")))?;
        if hex::encode(Sha256::digest(&bytes)) != sha256 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("the stored file {sha256} does not match its hash"),
            ));
        }
        let target = path.clone();
        tokio::task::spawn_blocking(move || write_atomically(&target, &bytes))
            .await
            .map_err(io::Error::other)??;
        Ok(path)
    }

    pub async fn read(&self, sha256: &str) -> io::Result<Vec<u8>> {
        tokio::fs::read(self.path(sha256).await?).await
    }
}

impl reactor_sites::Blobs for BlobCache {
    fn path<'a>(&'a self, sha256: &'a str) -> reactor_sites::BlobFuture<'a> {
        Box::pin(BlobCache::path(self, sha256))
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    let temp = dir.join(format!(
        ".{}.{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("blob"),
        uuid::Uuid::new_v4().simple()
    ));
    let mut file = std::fs::File::create(&temp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&temp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&temp);
    })
}
