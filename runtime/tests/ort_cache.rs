//! ONNX Runtime's optimized-model cache (ORT format, memory-mapped): stored on the
//! first open, loaded on the next with the uncached session's outputs; stale, truncated
//! or corrupt entries rebuilt; models written moments ago not cached.
#![cfg(feature = "ort")]
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use ndarray::ArrayD;
use pretext_runtime::ort_backend::OrtBackend;
use pretext_runtime::{npy, optimized_cache_path, Backend, CacheUse, GraphOptLevel, OrtOptions};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

/// Writes `bytes` to `path` with an mtime an hour back (older than the racy window).
fn write_old(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).unwrap();
    set_mtime(path, SystemTime::now() - Duration::from_secs(3600));
}

fn set_mtime(path: &Path, t: SystemTime) {
    std::fs::OpenOptions::new().write(true).open(path).unwrap().set_modified(t).unwrap();
}

fn input() -> ArrayD<f32> {
    npy::read_f32(&fixture("tiny_input.npy")).unwrap()
}

fn plain(model: &Path) -> ArrayD<f32> {
    let b = OrtBackend::open(model, &OrtOptions { intra_threads: Some(1), ..Default::default() }).unwrap();
    assert_eq!(b.cache_use(), &CacheUse::Off);
    b.run(input()).unwrap().remove(0)
}

fn opts(cache: &Path) -> OrtOptions {
    OrtOptions { intra_threads: Some(1), optimized_cache: Some(cache.to_path_buf()), ..Default::default() }
}

/// Opens `model` through the cache, checks its output against `want` (bit for bit) and
/// returns what the cache did.
fn cached(model: &Path, cache: &Path, want: &ArrayD<f32>) -> CacheUse {
    let b = OrtBackend::open(model, &opts(cache)).unwrap();
    assert_eq!(&b.run(input()).unwrap()[0], want, "{:?}", b.cache_use());
    b.cache_use().clone()
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().to_string()).collect();
    v.sort();
    v
}

#[test]
fn optimized_model_is_cached_then_loaded_and_agrees() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("tiny_cnn.onnx");
    write_old(&model, &std::fs::read(fixture("tiny_cnn.onnx")).unwrap());
    let cache = dir.path().join("ort-cache");
    let want = plain(&model);

    let entry = optimized_cache_path(&cache, &model, &opts(&cache)).unwrap();
    assert_eq!(entry.extension().unwrap(), "ort");
    assert_eq!(cached(&model, &cache, &want), CacheUse::Stored(entry.clone()));
    for _ in 0..2 {
        assert_eq!(cached(&model, &cache, &want), CacheUse::Hit(entry.clone()));
    }
    // The entry is in ORT format ("ORTM" file identifier), beside its metadata; no temporaries left.
    assert_eq!(&std::fs::read(&entry).unwrap()[4..8], b"ORTM");
    let stem = entry.file_stem().unwrap().to_string_lossy().to_string();
    assert_eq!(names(&cache), vec![format!("{stem}.json"), format!("{stem}.ort")]);

    // Another model, another level or another path is another key; level `disable` optimizes nothing.
    let o = opts(&cache);
    assert_ne!(optimized_cache_path(&cache, &fixture("tiny_cnn_foreign.onnx"), &o).unwrap(), entry);
    assert_ne!(optimized_cache_path(&cache, &model, &OrtOptions { opt_level: GraphOptLevel::Extended, ..o.clone() }).unwrap(), entry);
    let off = OrtBackend::open(&model, &OrtOptions { opt_level: GraphOptLevel::Disable, ..o.clone() }).unwrap();
    assert_eq!(off.cache_use(), &CacheUse::Off);
    // The key names the file, not the spelling of its path.
    let dotted = dir.path().join(".").join("tiny_cnn.onnx");
    assert_eq!(optimized_cache_path(&cache, &dotted, &o).unwrap(), entry);
}

#[test]
fn corrupt_truncated_or_orphaned_entries_are_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("tiny_cnn.onnx");
    write_old(&model, &std::fs::read(fixture("tiny_cnn.onnx")).unwrap());
    let cache = dir.path().join("c");
    let want = plain(&model);
    let entry = optimized_cache_path(&cache, &model, &opts(&cache)).unwrap();
    let meta = entry.with_extension("json");
    assert_eq!(cached(&model, &cache, &want), CacheUse::Stored(entry.clone()));
    let good = std::fs::read(&entry).unwrap();

    let mut flipped = good.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x01; // one bit in the middle: the weights, which no structural check would catch
    type Damage<'a> = (&'a str, Box<dyn Fn() + 'a>);
    let damages: Vec<Damage> = vec![
        ("garbage", Box::new(|| std::fs::write(&entry, b"not a model").unwrap())),
        ("truncated", Box::new(|| std::fs::write(&entry, &good[..good.len() / 2]).unwrap())),
        ("empty", Box::new(|| std::fs::write(&entry, b"").unwrap())),
        ("bit flip", Box::new(|| std::fs::write(&entry, &flipped).unwrap())),
        ("entry deleted", Box::new(|| std::fs::remove_file(&entry).unwrap())),
        ("metadata garbage", Box::new(|| std::fs::write(&meta, b"{\"format\":").unwrap())),
    ];
    for (what, damage) in &damages {
        damage();
        match cached(&model, &cache, &want) {
            CacheUse::Rebuilt(e, reason) => assert_eq!(e, entry, "{what}: {reason}"),
            other => panic!("{what}: {other:?}"),
        }
        assert_eq!(cached(&model, &cache, &want), CacheUse::Hit(entry.clone()), "{what}");
    }
    // An entry without metadata is as good as none.
    std::fs::remove_file(&meta).unwrap();
    assert_eq!(cached(&model, &cache, &want), CacheUse::Stored(entry.clone()));
    assert_eq!(cached(&model, &cache, &want), CacheUse::Hit(entry.clone()));
}

/// A same-size, same-mtime rewrite of the model (what `cp -p` or `rsync -t` of another
/// model over it does) is seen through the ctime, and the new model is what runs.
#[test]
fn a_rewritten_model_is_not_served_from_the_old_entry() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("m.onnx");
    let original = std::fs::read(fixture("tiny_cnn.onnx")).unwrap();
    write_old(&model, &original);
    let cache = dir.path().join("c");
    let want = plain(&model);
    let entry = optimized_cache_path(&cache, &model, &opts(&cache)).unwrap();
    assert_eq!(cached(&model, &cache, &want), CacheUse::Stored(entry.clone()));

    // A same-size variant with other outputs: the first byte past the middle whose flip
    // still parses and changes the output (inside a weight's raw data).
    let scratch = dir.path().join("scratch.onnx");
    let (variant, variant_out) = (original.len() / 2..original.len())
        .find_map(|i| {
            let mut v = original.clone();
            v[i] ^= 0x10;
            std::fs::write(&scratch, &v).unwrap();
            let b = OrtBackend::open(&scratch, &OrtOptions { intra_threads: Some(1), ..Default::default() }).ok()?;
            let out = b.run(input()).ok()?.remove(0);
            (out.shape() == want.shape() && out.iter().all(|x| x.is_finite()) && out != want).then_some((v, out))
        })
        .expect("a byte whose flip changes the output");
    let mtime = std::fs::metadata(&model).unwrap().modified().unwrap();
    std::fs::write(&model, &variant).unwrap();
    set_mtime(&model, mtime);
    assert_eq!(std::fs::metadata(&model).unwrap().len(), original.len() as u64);
    match cached(&model, &cache, &variant_out) {
        CacheUse::Rebuilt(e, reason) => assert!(e == entry && reason.contains("changed"), "{reason}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(cached(&model, &cache, &variant_out), CacheUse::Hit(entry));
}

/// A model modified less than the racy window ago is served but not cached: its mtime
/// could still be shared by a same-size rewrite in the same timestamp tick.
#[test]
fn a_model_written_moments_ago_is_not_cached() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("fresh.onnx");
    std::fs::copy(fixture("tiny_cnn.onnx"), &model).unwrap();
    set_mtime(&model, SystemTime::now());
    let cache = dir.path().join("c");
    let want = plain(&model);
    match cached(&model, &cache, &want) {
        CacheUse::StoreFailed(_, reason) => assert!(reason.contains("less than"), "{reason}"),
        other => panic!("{other:?}"),
    }
    assert!(names(&cache).is_empty(), "{:?}", names(&cache));
    set_mtime(&model, SystemTime::now() - pretext_runtime::ort_backend::RACY_WINDOW - Duration::from_secs(1));
    assert!(matches!(cached(&model, &cache, &want), CacheUse::Stored(_)));
    assert!(matches!(cached(&model, &cache, &want), CacheUse::Hit(_)));
}

/// A cache directory that cannot be created costs the cache, not the session.
#[test]
fn an_unusable_cache_directory_is_not_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("m.onnx");
    write_old(&model, &std::fs::read(fixture("tiny_cnn.onnx")).unwrap());
    let want = plain(&model);
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"").unwrap();
    match cached(&model, &file.join("cache"), &want) {
        CacheUse::StoreFailed(_, reason) => assert!(reason.contains("a-file"), "{reason}"),
        other => panic!("{other:?}"),
    }
    // A broken model through the cache is still the model's load error.
    let cut = dir.path().join("cut.onnx");
    let bytes = std::fs::read(&model).unwrap();
    write_old(&cut, &bytes[..bytes.len() - 100]);
    let e = OrtBackend::open(&cut, &opts(&dir.path().join("c"))).err().expect("a truncated model must fail");
    assert!(e.to_string().contains("cut.onnx"), "{e}");
    assert!(names(&dir.path().join("c")).is_empty());
}

/// Threads opening the same model through one cache at once all get correct sessions.
#[test]
fn concurrent_opens_share_the_cache_safely() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("m.onnx");
    write_old(&model, &std::fs::read(fixture("tiny_cnn.onnx")).unwrap());
    let cache = dir.path().join("c");
    let want = plain(&model);
    let uses: Vec<CacheUse> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..4).map(|_| s.spawn(|| (0..3).map(|_| cached(&model, &cache, &want)).collect::<Vec<_>>())).collect();
        hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    assert!(uses.iter().all(|u| matches!(u, CacheUse::Stored(_) | CacheUse::Hit(_) | CacheUse::Rebuilt(..))), "{uses:?}");
    assert!(uses.iter().any(|u| matches!(u, CacheUse::Hit(_))), "{uses:?}");
    assert_eq!(names(&cache).len(), 2, "{:?}", names(&cache));
}

#[test]
fn a_missing_model_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.onnx");
    for o in [OrtOptions::default(), opts(&dir.path().join("c"))] {
        let e = OrtBackend::open(&missing, &o).err().expect("missing model must fail");
        assert!(e.to_string().contains("nope.onnx"), "{e}");
    }
}

#[test]
fn intra_op_spinning_option_is_accepted_and_changes_no_result() {
    let x = input();
    let run = |spin: Option<bool>| {
        let o = OrtOptions { intra_threads: Some(2), intra_spinning: spin, ..Default::default() };
        OrtBackend::open(&fixture("tiny_cnn.onnx"), &o).unwrap().run(x.clone()).unwrap().remove(0)
    };
    let base = run(None);
    for spin in [Some(true), Some(false)] {
        assert_eq!(run(spin), base, "{spin:?}");
    }
}
