//! ONNX Runtime's optimized-model cache: stored on the first open, loaded on the
//! next, keyed by the model's bytes, and giving the same outputs as no cache.
#![cfg(feature = "ort")]
use std::path::{Path, PathBuf};

use pretext_runtime::ort_backend::OrtBackend;
use pretext_runtime::{npy, optimized_cache_path, Backend, CacheUse, GraphOptLevel, OrtOptions};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

#[test]
fn optimized_model_is_cached_then_loaded_and_agrees() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("ort-cache");
    let opts = OrtOptions { intra_threads: Some(1), optimized_cache: Some(cache.clone()), ..Default::default() };
    let model = fixture("tiny_cnn.onnx");
    let x = npy::read_f32(&fixture("tiny_input.npy")).unwrap();
    let plain = OrtBackend::open(&model, &OrtOptions { intra_threads: Some(1), ..Default::default() }).unwrap();
    assert_eq!(plain.cache_use(), &CacheUse::Off);
    let want = plain.run(x.clone()).unwrap().remove(0);

    let first = OrtBackend::open(&model, &opts).unwrap();
    let file = optimized_cache_path(&cache, &model, &opts).unwrap();
    assert_eq!(first.cache_use(), &CacheUse::Stored(file.clone()));
    assert!(std::fs::metadata(&file).unwrap().len() > 0);
    let second = OrtBackend::open(&model, &opts).unwrap();
    assert_eq!(second.cache_use(), &CacheUse::Hit(file.clone()));
    for b in [&first, &second] {
        let got = b.run(x.clone()).unwrap().remove(0);
        let d = got.iter().zip(want.iter()).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
        assert!(d < 1e-5, "{d}");
    }
    // Only the final file is left (no temporary).
    assert_eq!(std::fs::read_dir(&cache).unwrap().count(), 1);

    // Another model (here: the same graph without metadata) or another level is another key.
    let other = fixture("tiny_cnn_foreign.onnx");
    assert_ne!(optimized_cache_path(&cache, &other, &opts).unwrap(), file);
    let extended = OrtOptions { opt_level: GraphOptLevel::Extended, ..opts.clone() };
    assert_ne!(optimized_cache_path(&cache, &model, &extended).unwrap(), file);
    // Level `disable` optimizes nothing, so there is nothing to cache.
    let off = OrtBackend::open(&model, &OrtOptions { opt_level: GraphOptLevel::Disable, ..opts.clone() }).unwrap();
    assert_eq!(off.cache_use(), &CacheUse::Off);

    // A corrupt entry is dropped and rebuilt, not an error.
    std::fs::write(&file, b"not an onnx model").unwrap();
    let again = OrtBackend::open(&model, &opts).unwrap();
    assert_eq!(again.cache_use(), &CacheUse::Stored(file.clone()));
    assert_eq!(OrtBackend::open(&model, &opts).unwrap().cache_use(), &CacheUse::Hit(file));
}

#[test]
fn intra_op_spinning_option_is_accepted_and_changes_no_result() {
    let x = npy::read_f32(&fixture("tiny_input.npy")).unwrap();
    let run = |spin: Option<bool>| {
        let o = OrtOptions { intra_threads: Some(2), intra_spinning: spin, ..Default::default() };
        OrtBackend::open(&fixture("tiny_cnn.onnx"), &o).unwrap().run(x.clone()).unwrap().remove(0)
    };
    let base = run(None);
    for spin in [Some(true), Some(false)] {
        assert_eq!(run(spin), base, "{spin:?}");
    }
}
