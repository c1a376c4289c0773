//! Which compression for the run log's batch payloads: zstd (levels 3, 1 and the fast levels -1, -3, -7) against lz4_flex,
//! on batches encoded as the log encodes them (bincode 2 of the rows), for the two row shapes
//! of issue 18: short rows (an id and a 40-character instruction, batch 1,000) and rows of
//! about 2 KB of text (LLM-answer sized, batch 50). Prints the ratio and the speed of each
//! (one core, MB/s of uncompressed bytes).
//!
//! cargo run --release -p distill-benches --bin codec_choice

use distill_benches::text::{instruction, long_text, vocabulary};
use distill_storage::{Row, Value};
use std::time::Instant;

/// Encoded batches of `rows` rows each, `total` rows in all.
fn batches(long: bool, rows: usize, total: usize) -> Vec<Vec<u8>> {
    let mut rng = fastrand::Rng::with_seed(18);
    let vocabulary = vocabulary(&mut rng);
    (0..total / rows)
        .map(|b| {
            let batch: Vec<Row> = (0..rows)
                .map(|i| {
                    let text = if long {
                        long_text(&mut rng, &vocabulary)
                    } else {
                        instruction(&mut rng)
                    };
                    Row::new()
                        .with("id", Value::Int((b * rows + i) as i64))
                        .with("text", format!("<user>Question: {text}</user><assistant>"))
                })
                .collect();
            bincode::serde::encode_to_vec((&batch, false), bincode::config::standard())
                .expect("encode")
        })
        .collect()
}

fn measure(name: &str, data: &[Vec<u8>]) {
    let raw: usize = data.iter().map(Vec::len).sum();
    type Codec = (
        &'static str,
        Box<dyn Fn(&[u8]) -> Vec<u8>>,
        Box<dyn Fn(&[u8], usize) -> Vec<u8>>,
    );
    let codecs: Vec<Codec> = vec![
        (
            "zstd 1",
            Box::new(|b| zstd::bulk::compress(b, 1).expect("zstd")),
            Box::new(|b, n| zstd::bulk::decompress(b, n).expect("zstd")),
        ),
        (
            "zstd -1",
            Box::new(|b| zstd::bulk::compress(b, -1).expect("zstd")),
            Box::new(|b, n| zstd::bulk::decompress(b, n).expect("zstd")),
        ),
        (
            "zstd -3",
            Box::new(|b| zstd::bulk::compress(b, -3).expect("zstd")),
            Box::new(|b, n| zstd::bulk::decompress(b, n).expect("zstd")),
        ),
        (
            "zstd -7",
            Box::new(|b| zstd::bulk::compress(b, -7).expect("zstd")),
            Box::new(|b, n| zstd::bulk::decompress(b, n).expect("zstd")),
        ),
        (
            "zstd 3",
            Box::new(|b| zstd::bulk::compress(b, 3).expect("zstd")),
            Box::new(|b, n| zstd::bulk::decompress(b, n).expect("zstd")),
        ),
        (
            "lz4_flex",
            Box::new(lz4_flex::compress_prepend_size),
            Box::new(|b, _| lz4_flex::decompress_size_prepended(b).expect("lz4")),
        ),
    ];
    println!(
        "## {name}: {} batches, {:.1} MB encoded",
        data.len(),
        raw as f64 / 1e6
    );
    println!("| codec | ratio | compress MB/s | decompress MB/s |");
    println!("|---|---|---|---|");
    for (codec, compress, decompress) in &codecs {
        let start = Instant::now();
        let packed: Vec<Vec<u8>> = data.iter().map(|b| compress(b)).collect();
        let c = start.elapsed().as_secs_f64();
        let start = Instant::now();
        for (p, b) in packed.iter().zip(data) {
            assert_eq!(decompress(p, b.len()).len(), b.len());
        }
        let d = start.elapsed().as_secs_f64();
        let size: usize = packed.iter().map(Vec::len).sum();
        println!(
            "| {codec} | {:.2} | {:.0} | {:.0} |",
            raw as f64 / size as f64,
            raw as f64 / 1e6 / c,
            raw as f64 / 1e6 / d
        );
    }
}

fn main() {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "codec_choice: load average {}",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    measure("short rows, batch 1,000", &batches(false, 1000, 200_000));
    measure("2 KB rows, batch 50", &batches(true, 50, 10_000));
}
