//! Session-creation time with and without ONNX Runtime's optimized-model cache:
//!
//! ```text
//! cargo run -p pretext-runtime --features ort --example ort_cache_timing -- model.onnx [more.onnx ...]
//! ```
//! For each model: open with no cache (best of 3), open with an empty cache dir
//! (optimizes and stores), then open again (loads the stored graph; best of 3).
use std::path::PathBuf;
use std::time::Instant;

use pretext_runtime::ort_backend::OrtBackend;
use pretext_runtime::{CacheUse, OrtOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let models: Vec<PathBuf> = std::env::args().skip(1).map(PathBuf::from).collect();
    if models.is_empty() {
        return Err("usage: ort_cache_timing model.onnx [more.onnx ...]".into());
    }
    let cache = tempfile::tempdir()?;
    for m in &models {
        let plain = OrtOptions { intra_threads: Some(2), inter_threads: Some(1), ..Default::default() };
        let cached = OrtOptions { optimized_cache: Some(cache.path().to_path_buf()), ..plain.clone() };
        let time = |o: &OrtOptions| -> Result<(f64, CacheUse), Box<dyn std::error::Error>> {
            let t = Instant::now();
            let b = OrtBackend::open(m, o)?;
            Ok((t.elapsed().as_secs_f64() * 1e3, b.cache_use().clone()))
        };
        let mut none = f64::MAX;
        for _ in 0..3 {
            none = none.min(time(&plain)?.0);
        }
        let (store, u) = time(&cached)?;
        assert!(matches!(u, CacheUse::Stored(_)), "{u:?}");
        let mut hit = f64::MAX;
        for _ in 0..3 {
            let (t, u) = time(&cached)?;
            assert!(matches!(u, CacheUse::Hit(_)), "{u:?}");
            hit = hit.min(t);
        }
        println!("{}: no cache {none:.0} ms, first open (optimize + store) {store:.0} ms, cached {hit:.0} ms", m.display());
    }
    Ok(())
}
