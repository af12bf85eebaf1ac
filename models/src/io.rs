//! Atomic file output, the one writer of every file a user keeps: checkpoints,
//! `backbone.safetensors`, ONNX files and their external data, galleries,
//! `pretext extract` outputs, run configs and the data cache. Libtorch-free,
//! so the trainer, exporter, runtime and data crates share it.
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// Writes `bytes` to `path` atomically (see [`atomic_write_with`]).
pub fn atomic_write(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    atomic_write_with(path, |w| w.write_all(bytes))
}

/// Streams `write`'s output to `path` via a temp file in the same folder:
/// buffered write, fsync, rename, then fsync of the folder, so neither a kill
/// nor a power cut leaves a truncated file behind. Creates the parent folder.
/// The temp name carries the process id and a per-process counter, so
/// concurrent writers (threads or processes) of the same path never share a
/// temp file; the last rename wins. On error the temp file is removed.
pub fn atomic_write_with(path: &Path, write: impl FnOnce(&mut dyn Write) -> std::io::Result<()>) -> std::io::Result<()> {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("out");
    let tmp = dir.join(format!(".{name}.tmp{}-{}", std::process::id(), SEQ.fetch_add(1, Ordering::Relaxed)));
    let result = (|| {
        let mut f = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&tmp)?);
        write(&mut f)?;
        f.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result?;
    sync_dir(dir)
}

/// Makes a rename in `dir` durable (a no-op where folders cannot be opened).
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    std::fs::File::open(dir)?.sync_all()?;
    let _ = dir;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp_dir(tag: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("pretext-models-io-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn writes_replaces_and_leaves_no_temp_file() {
        let d = tmp_dir("replace");
        let p = d.join("sub").join("f.bin");
        atomic_write(&p, b"first").unwrap();
        atomic_write(&p, b"second, longer").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"second, longer");
        let names: Vec<_> = std::fs::read_dir(p.parent().unwrap()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("f.bin")]);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn concurrent_writers_of_one_path_never_mix() {
        let d = tmp_dir("concurrent");
        let p = d.join("f.bin");
        let payloads: Vec<Vec<u8>> = (0..8u8).map(|i| vec![i; 100_000 + i as usize]).collect();
        std::thread::scope(|s| {
            for b in &payloads {
                let p = &p;
                s.spawn(move || atomic_write(p, b).unwrap());
            }
        });
        let got = std::fs::read(&p).unwrap();
        assert!(payloads.contains(&got), "the file is one writer's bytes, whole");
        assert_eq!(std::fs::read_dir(&d).unwrap().count(), 1, "no temp file left");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn error_when_the_target_is_a_directory() {
        let d = tmp_dir("isdir");
        std::fs::create_dir_all(d.join("taken")).unwrap();
        assert!(atomic_write(&d.join("taken"), b"x").is_err());
        assert_eq!(std::fs::read_dir(&d).unwrap().count(), 1, "the temp file is removed on error");
        std::fs::remove_dir_all(&d).unwrap();
    }

    /// A writer that fails half way leaves the previous file intact and no temp file.
    #[test]
    fn failing_writer_keeps_the_old_file() {
        let d = tmp_dir("failing");
        let p = d.join("f.bin");
        atomic_write(&p, b"old").unwrap();
        let e = atomic_write_with(&p, |w| {
            w.write_all(b"half")?;
            Err(std::io::Error::other("disk full"))
        });
        assert!(e.is_err());
        assert_eq!(std::fs::read(&p).unwrap(), b"old");
        assert_eq!(std::fs::read_dir(&d).unwrap().count(), 1, "no temp file left");
        std::fs::remove_dir_all(&d).unwrap();
    }
}
