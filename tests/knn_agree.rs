//! The trainer's tch k-NN accuracy (`pretext_trainer::eval::knn_accuracy`, the
//! GPU path of training-time evaluation) and the runtime's ndarray one
//! (`pretext_runtime::knn::knn_accuracy`, behind `pretext knn eval`) count
//! the same correct predictions on the same features, at the standard
//! settings and at others.
use ndarray::Array2;
use pretext_runtime::{KnnParams, KNN_SETTINGS};
use tch::{Device, Kind, Tensor};

fn rows(t: &Tensor) -> Array2<f32> {
    let (n, d) = (t.size()[0] as usize, t.size()[1] as usize);
    Array2::from_shape_vec((n, d), Vec::<f32>::try_from(t.contiguous().flatten(0, -1)).unwrap()).unwrap()
}

#[test]
fn tch_and_ndarray_knn_accuracies_are_equal() {
    tch::manual_seed(7);
    let (classes, d) = (10i64, 64i64);
    // Clustered features, noisy enough that k-NN is neither perfect nor chance
    // (noise 2.5: 44-87% over the five settings; at 1.6 k=200 reached 99.6%).
    let centers = Tensor::randn([classes, d], (Kind::Float, Device::Cpu));
    let sample = |n: i64| {
        let y = Tensor::randint(classes, [n], (Kind::Int64, Device::Cpu));
        let x = centers.index_select(0, &y) + Tensor::randn([n, d], (Kind::Float, Device::Cpu)) * 2.5;
        (x, Vec::<i64>::try_from(&y).unwrap().into_iter().map(|v| v as u32).collect::<Vec<u32>>())
    };
    let (train, ytr) = sample(3000);
    let (test, yte) = sample(700);
    let mut settings = KNN_SETTINGS.to_vec();
    settings.extend([KnnParams { k: 1, temperature: 0.5 }, KnnParams { k: 7, temperature: 0.02 }, KnnParams { k: 3000, temperature: 1.0 }]);
    let tch_pct = pretext_trainer::eval::knn_accuracy(&train, &ytr, &test, &yte, &settings, 256);
    let nd = pretext_runtime::knn::knn_accuracy(&rows(&train), &ytr, &rows(&test), &yte, classes as usize, &settings).unwrap();
    for ((s, t), n) in settings.iter().zip(&tch_pct).zip(&nd) {
        let (ct, cn) = ((t * 700.0 / 100.0).round() as usize, (n * 700.0).round() as usize);
        eprintln!("k={} T={}: tch {ct}/700, ndarray {cn}/700", s.k, s.temperature);
        assert!((20..95).contains(&(100 * cn / 700)), "k={}: accuracy {cn}/700 says nothing", s.k);
        assert_eq!(ct, cn, "k={} T={}: tch {t}% vs ndarray {n}", s.k, s.temperature);
    }
}
