//! Augmentation throughput on real CIFAR-10 images, single thread and all
//! threads. A measurement, not a check: `cargo test -p pretext-trainer
//! --test augment_throughput -- --ignored --nocapture`.

use std::time::Instant;

use pretext_data::augment::{Pipeline, Resolution};

#[test]
#[ignore]
fn augment_images_per_second() {
    let (train, _, _) = pretext_trainer::train::load_splits(std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/data/cifar10-jpg.tar.gz")), pretext_data::OnBadImage::Error).unwrap();
    let train = train.subset(4096);
    let set = train.images();
    let imgs: Vec<&[u8]> = (0..train.n).map(|i| set.image(i)).collect();
    let idx: Vec<u64> = (0..train.n as u64).collect();
    for method in ["simclr", "byol", "dino"] {
        let p = match method {
            "simclr" => Pipeline::simclr(Resolution::Cifar, 32),
            "byol" => Pipeline::byol(Resolution::Cifar, 32),
            _ => Pipeline::dino(Resolution::Cifar, 32, 6),
        };
        for threads in [1, 2] {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            let t = Instant::now();
            pool.install(|| p.batch(&imgs, 32, 32, 0, 0, &idx).unwrap());
            let s = t.elapsed().as_secs_f64();
            println!("{method}: {threads} thread(s): {:.0} images/s ({} views each)", train.n as f64 / s, p.views.len());
        }
    }
}
