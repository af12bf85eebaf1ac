//! From `model.onnx` to a label with tract only (no libtorch, no ONNX Runtime):
//!
//! ```text
//! cargo run -p pretext-runtime --example classify -- model.onnx gallery.safetensors cat.jpg
//! ```
//! The gallery comes from `pretext knn build model.onnx --data <dataset> -o gallery.safetensors`.
use pretext_runtime::{Extractor, Gallery, KnnParams};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [model, gallery, image] = args.as_slice() else {
        return Err("usage: classify <model.onnx> <gallery.safetensors> <image>".into());
    };
    let extractor = Extractor::open(model)?; // preprocessing from the ONNX metadata
    let gallery = Gallery::load_for(gallery.as_ref(), &extractor)?; // checks model hash and dim
    let features = extractor.features_file(image.as_ref())?;
    let prediction = gallery.classify_one(&features, KnnParams::default())?;
    println!("{image}: {} ({:.3})", prediction.label, prediction.scores[prediction.class]);
    Ok(())
}
