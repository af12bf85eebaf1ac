//! File output shared by the trainer (checkpoints, run configs) and the
//! exporter (ONNX files and their external data): libtorch-free, so both
//! crates use the one implementation.
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// Writes `bytes` to `path` via a temp file in the same folder, fsync and a
/// rename, so a kill mid-write never leaves a truncated file behind.
/// Creates the parent folder. The temp name carries the process id and a
/// per-process counter, so concurrent writers (threads or processes) of the
/// same path never share a temp file; the last rename wins. On error the
/// temp file is removed.
pub fn atomic_write(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("out");
    let tmp = dir.join(format!(".{name}.tmp{}-{}", std::process::id(), SEQ.fetch_add(1, Ordering::Relaxed)));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
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
}
