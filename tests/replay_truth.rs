//! End to end on files: generated traffic replayed matches the generator's own ground truth
//! exactly, and every output line is valid against its schema.

mod common;

use std::path::Path;

use onecount::config::Config;
use onecount::generate::{generate_to_dir, GenerateOptions};
use onecount::replay::{replay, ReplayInputs};
use onecount::report::differences;

fn generate_and_replay(
    actions: u64,
    seed: u64,
    dir: &Path,
) -> (onecount::generate::Truth, onecount::engine::stats::Stats) {
    let input = dir.join("input");
    let output = dir.join("output");
    let truth = generate_to_dir(
        &GenerateOptions {
            actions,
            seed,
            ..GenerateOptions::default()
        },
        &input,
    )
    .unwrap();
    let stats = replay(
        &Config::default(),
        &ReplayInputs::in_dir(&input),
        &output,
        None,
    )
    .unwrap();
    (truth, stats)
}

#[test]
fn replay_of_100k_generated_actions_matches_truth_exactly_and_every_output_is_schema_valid() {
    let dir = tempfile::tempdir().unwrap();
    let (truth, stats) = generate_and_replay(100_000, 42, dir.path());
    assert_eq!(differences(&truth, &stats), Vec::<String>::new());
    assert_eq!(
        stats.accounted(),
        stats.input_records.total,
        "buckets sum to the input"
    );
    assert!(
        stats.conversions > 90_000,
        "a real run: {}",
        stats.conversions
    );

    let out = dir.path().join("output");
    let conversions =
        common::schema::assert_jsonl_valid("conversion", &out.join("conversions.jsonl"));
    let discrepancies =
        common::schema::assert_jsonl_valid("discrepancy", &out.join("discrepancies.jsonl"));
    let dead_letters =
        common::schema::assert_jsonl_valid("dead_letter", &out.join("dead_letters.jsonl"));
    let windows =
        common::schema::assert_jsonl_valid("revenue_window", &out.join("revenue_windows.jsonl"));
    assert_eq!(conversions as u64, stats.conversions);
    assert_eq!(
        discrepancies as u64,
        stats.discrepancies.values().sum::<u64>()
    );
    assert_eq!(dead_letters as u64, stats.dead_letters);
    assert_eq!(windows as u64, stats.revenue_windows);
    let stats_json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("stats.json")).unwrap()).unwrap();
    common::schema::assert_valid("stats", &stats_json);
}

#[test]
fn conversion_keys_are_unique_in_a_replay() {
    // Keys repeat only for an event_id reused after its TTL: each such action is a new
    // conversion and the generator plans them, so count them against the truth instead.
    let dir = tempfile::tempdir().unwrap();
    let (_, stats) = generate_and_replay(20_000, 7, dir.path());
    let text = std::fs::read_to_string(dir.path().join("output/conversions.jsonl")).unwrap();
    let mut keys: Vec<(String, i64)> = text
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["key"].as_str().unwrap().to_string(),
                v["event_time"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(keys.len() as u64, stats.conversions);
    keys.sort();
    for pair in keys.windows(2) {
        if pair[0].0 == pair[1].0 {
            assert!(
                pair[1].1 - pair[0].1 >= 48 * 3600,
                "{pair:?}: one key emitted twice within its TTL"
            );
        }
    }
}

#[test]
fn same_input_gives_byte_identical_outputs() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    generate_and_replay(5_000, 3, a.path());
    generate_and_replay(5_000, 3, b.path());
    for file in [
        "conversions.jsonl",
        "discrepancies.jsonl",
        "dead_letters.jsonl",
        "revenue_windows.jsonl",
        "stats.json",
    ] {
        let x = std::fs::read(a.path().join("output").join(file)).unwrap();
        let y = std::fs::read(b.path().join("output").join(file)).unwrap();
        assert!(x == y, "{file} differs between two runs of the same input");
    }
}
