//! `pretext`: train, export, extract, eval, colorize, bench.
use clap::{Parser, Subcommand};

mod cmd_colorize;
mod cmd_data;
mod cmd_eval;
mod cmd_export;
mod cmd_extract;
mod cmd_knn;
mod cmd_train;

/// Self-supervised pretraining, ONNX export with parity proofs, and serving of image encoders.
#[derive(Parser)]
#[command(name = "pretext", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Inspect datasets (splits, classes, counts, sizes, boxes) and draw contact sheets.
    Data(cmd_data::DataArgs),
    /// Self-supervised pretraining of an encoder (methods: `pretext train --help`).
    #[command(after_help = cmd_train::methods_help())]
    Train(cmd_train::TrainArgs),
    /// Colour images with a colorization run (strips: gray | colourised | original).
    Colorize(cmd_colorize::ColorizeArgs),
    /// Evaluate a checkpoint: k-NN, linear probe or fine-tuning.
    Eval(cmd_eval::EvalArgs),
    /// Lower a checkpoint to ONNX, optionally verifying it against libtorch.
    Export(cmd_export::ExportArgs),
    /// Extract features from images or a dataset with an ONNX model.
    Extract(cmd_extract::ExtractArgs),
    /// Build, query and evaluate a k-NN gallery on top of an ONNX encoder.
    Knn(cmd_knn::KnnArgs),
    /// Latency and throughput benchmarks against peers, measured in the same run.
    Bench(pretext_bench::BenchArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Data(a) => cmd_data::run(a),
        Cmd::Train(a) => cmd_train::run(a),
        Cmd::Colorize(a) => cmd_colorize::run(a),
        Cmd::Eval(a) => cmd_eval::run(a),
        Cmd::Export(a) => cmd_export::run(a),
        Cmd::Extract(a) => cmd_extract::run(a),
        Cmd::Knn(a) => cmd_knn::run(a),
        Cmd::Bench(a) => pretext_bench::run(a),
    }
}
