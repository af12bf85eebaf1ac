//! k-NN: exact search and voting against naive references, gallery files, ANN recall.
use ndarray::Array2;
use pretext_runtime::knn::{argmax, exact_topk, knn_accuracy, l2_normalize_rows, vote, AnnIndex, Neighbor};
use pretext_runtime::{Gallery, KnnParams, RuntimeError};
use rand::{Rng, SeedableRng};

fn random(n: usize, d: usize, seed: u64) -> Array2<f32> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    Array2::from_shape_fn((n, d), |_| rng.random::<f32>() * 2.0 - 1.0)
}

/// Clustered data: `c` random centres plus noise, so neighbours are meaningful.
/// `seed` picks the noise; the centres are fixed per `(c, d)`, so train and test share them.
fn clustered(n: usize, d: usize, c: usize, noise: f32, seed: u64) -> (Array2<f32>, Vec<u32>) {
    let centres = random(c, d, 1000 + c as u64);
    let eps = random(n, d, seed);
    let labels: Vec<u32> = (0..n).map(|i| (i % c) as u32).collect();
    let x = Array2::from_shape_fn((n, d), |(i, j)| centres[[labels[i] as usize, j]] + noise * eps[[i, j]]);
    (x, labels)
}

/// DINO eval_knn written out with full sorts and f64 sums.
fn naive_predict(train: &Array2<f32>, labels: &[u32], q: &[f32], k: usize, t: f32, nc: usize) -> usize {
    let mut sims: Vec<(f32, usize)> = train.rows().into_iter().enumerate().map(|(i, r)| (r.iter().zip(q).map(|(a, b)| a * b).sum(), i)).collect();
    sims.sort_by(|a, b| b.0.partial_cmp(&a.0).unwrap().then(a.1.cmp(&b.1)));
    let mut scores = vec![0f64; nc];
    for (s, i) in &sims[..k] {
        scores[labels[*i] as usize] += ((*s / t) as f64).exp();
    }
    let mut best = 0;
    for c in 0..nc {
        if scores[c] > scores[best] {
            best = c;
        }
    }
    best
}

#[test]
fn exact_topk_equals_brute_force() {
    let mut g = random(5000, 24, 1);
    let mut q = random(70, 24, 2);
    l2_normalize_rows(&mut g);
    l2_normalize_rows(&mut q);
    let got = exact_topk(g.view(), q.view(), 7);
    for (qi, nbs) in got.iter().enumerate() {
        let mut all: Vec<(f32, u32)> = (0..g.nrows()).map(|i| (g.row(i).dot(&q.row(qi)), i as u32)).collect();
        all.sort_by(|a, b| b.0.partial_cmp(&a.0).unwrap());
        let want: Vec<u32> = all[..7].iter().map(|x| x.1).collect();
        let have: Vec<u32> = nbs.iter().map(|n| n.index).collect();
        assert_eq!(have, want, "query {qi}");
        for (n, w) in nbs.iter().zip(&all) {
            assert!((n.sim - w.0).abs() < pretext_runtime::compare::tol::F32_OP);
        }
    }
}

#[test]
fn weighted_vote_matches_naive_dino_reference() {
    let (mut train, labels) = clustered(600, 16, 5, 0.6, 3);
    let (mut test, test_labels) = clustered(120, 16, 5, 0.6, 3 + 100);
    l2_normalize_rows(&mut train);
    l2_normalize_rows(&mut test);
    for p in [KnnParams::default(), KnnParams::K200, KnnParams { k: 1, temperature: 0.5 }] {
        let nbs = exact_topk(train.view(), test.view(), p.k);
        let mut agree = 0;
        for (qi, nb) in nbs.iter().enumerate() {
            let got = argmax(&vote(nb, &labels, 5, p.temperature));
            let want = naive_predict(&train, &labels, test.row(qi).as_slice().unwrap(), p.k, p.temperature, 5);
            agree += (got == want) as usize;
        }
        assert_eq!(agree, test.nrows(), "k={} T={}", p.k, p.temperature);
        let acc = knn_accuracy(&train, &labels, &test, &test_labels, 5, &[p]).unwrap()[0];
        let naive = (0..test.nrows())
            .filter(|&i| naive_predict(&train, &labels, test.row(i).as_slice().unwrap(), p.k, p.temperature, 5) == test_labels[i] as usize)
            .count() as f64
            / test.nrows() as f64;
        assert_eq!(acc, naive);
        assert!(acc > 0.5, "clustered data should classify well above chance: {acc}");
    }
}

#[test]
fn vote_closed_form() {
    let nbs = [Neighbor { sim: 0.5, index: 0 }, Neighbor { sim: 0.4, index: 1 }, Neighbor { sim: 0.3, index: 2 }];
    let s = vote(&nbs, &[1, 0, 0], 2, 0.1);
    assert!((s[1] - 5f32.exp()).abs() < 1e-2 && (s[0] - (4f32.exp() + 3f32.exp())).abs() < 1e-2);
    assert_eq!(argmax(&s), 1); // e^5 > e^4 + e^3
}

#[test]
fn gallery_roundtrip_and_model_mismatch_errors() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("g.safetensors");
    let (x, labels) = clustered(50, 8, 3, 0.3, 9);
    let g = Gallery::new(x, labels.clone(), vec!["a".into(), "b".into(), "c".into()], "aa11".into(), "m1.onnx".into()).unwrap();
    g.save(&p).unwrap();
    let h = Gallery::load(&p).unwrap();
    assert_eq!((h.labels.clone(), h.classes.clone(), h.model_sha256.clone()), (labels, g.classes.clone(), "aa11".into()));
    assert_eq!(h.features, g.features);
    h.check_model(&p, "m1.onnx", "aa11", 8).unwrap();
    let e = h.check_model(&p, "m2.onnx", "bb22", 8).unwrap_err();
    assert!(matches!(e, RuntimeError::GalleryMismatch(_)));
    let msg = e.to_string();
    assert!(msg.contains("aa11") && msg.contains("bb22") && msg.contains("g.safetensors"), "{msg}");
    let e = h.check_model(&p, "m1.onnx", "aa11", 16).unwrap_err().to_string();
    assert!(e.contains("dim 8") && e.contains("dim 16"), "{e}");
    // Classify with a query of the wrong dimension: error, no panic.
    assert!(h.classify(&Array2::zeros((1, 5)), KnnParams::default()).is_err());
    // A file that is not a gallery.
    let bad = dir.path().join("bad.safetensors");
    std::fs::write(&bad, b"garbage").unwrap();
    let e = Gallery::load(&bad).unwrap_err().to_string();
    assert!(e.contains("bad.safetensors"), "{e}");
}

/// HNSW recall@10 against exact search on 4,000 clustered 32-d points.
#[test]
fn ann_recall_against_exact() {
    let (mut g, _) = clustered(4000, 32, 40, 0.8, 21);
    let (mut q, _) = clustered(200, 32, 40, 0.8, 21 + 7);
    l2_normalize_rows(&mut g);
    l2_normalize_rows(&mut q);
    let exact = exact_topk(g.view(), q.view(), 10);
    let ann = AnnIndex::build(g.view(), 64, 7);
    let mut hit = 0;
    for (i, ex) in exact.iter().enumerate() {
        let a: std::collections::HashSet<u32> = ann.search(q.row(i).as_slice().unwrap(), 10).iter().map(|n| n.index).collect();
        hit += ex.iter().filter(|n| a.contains(&n.index)).count();
    }
    let recall = hit as f64 / (10 * exact.len()) as f64;
    eprintln!("HNSW (instant-distance, ef_search 64) recall@10 = {recall:.4}");
    assert!(recall > 0.9, "recall@10 {recall}");
}

#[test]
fn exact_topk_is_exact_across_query_chunks_gallery_shards_and_ties() {
    // Small-integer vectors: every dot product is exact in f32 whatever the summation
    // order, so the many ties must come out lowest index first, as brute force says,
    // across 3 query chunks (600 queries) and the gallery shards of an 8-thread pool.
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
    let d = 16;
    let g = Array2::from_shape_fn((9000, d), |_| rng.random_range(-2i32..=2) as f32);
    let q = Array2::from_shape_fn((600, d), |_| rng.random_range(-2i32..=2) as f32);
    for threads in [1, 8] {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        let got = pool.install(|| exact_topk(g.view(), q.view(), 9));
        assert_eq!(got.len(), 600);
        for (qi, nbs) in got.iter().enumerate() {
            let mut all: Vec<(f32, u32)> = (0..g.nrows()).map(|i| (g.row(i).dot(&q.row(qi)), i as u32)).collect();
            all.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
            let want: Vec<(f32, u32)> = all[..9].to_vec();
            let have: Vec<(f32, u32)> = nbs.iter().map(|n| (n.sim, n.index)).collect();
            assert_eq!(have, want, "{threads} threads, query {qi}");
        }
    }
    // k larger than the gallery returns the whole gallery; k = 0 returns nothing.
    let small = g.slice(ndarray::s![..5, ..]).to_owned();
    assert!(exact_topk(small.view(), q.view(), 50).iter().all(|v| v.len() == 5));
    assert!(exact_topk(g.view(), q.view(), 0).iter().all(|v| v.is_empty()));
}
