//! Bad input through the whole file runtime: every record becomes a dead letter with a reason,
//! nothing panics, nothing is lost, and the good records around them still count.

mod common;

use std::io::Write;

use onecount::config::Config;
use onecount::replay::{replay, ReplayInputs};

const GOOD: &str = r#"{"event_source_id":"P1","event":"ViewContent","event_id":"ok-1","event_time":1767225600,"user":{"email":"A@B.com"}}"#;

fn write(path: &std::path::Path, lines: &[Vec<u8>]) {
    let mut f = std::fs::File::create(path).unwrap();
    for l in lines {
        f.write_all(l).unwrap();
        f.write_all(b"\n").unwrap();
    }
}

#[test]
fn malformed_lines_become_dead_letters_and_good_lines_still_count() {
    let dir = tempfile::tempdir().unwrap();
    let huge_string = format!(
        r#"{{"event_source_id":"P1","event":"ViewContent","event_id":"big","event_time":1767225600,"page":{{"url":"{}"}}}}"#,
        "x".repeat(1_100_000)
    );
    let bad: Vec<Vec<u8>> = vec![
        br#"{"event_source_id":"P1","event":"View"#.to_vec(),              // truncated
        br#"{"event_source_id":42,"event":"ViewContent","event_id":"a","event_time":1767225600}"#.to_vec(), // wrong type
        br#"{"event_source_id":"P1","event":"AddToCart","event_id":"b","event_time":1767225600,"properties":{"value":1e400}}"#.to_vec(),
        br#"{"event_source_id":"P1","event":"AddToCart","event_id":"c","event_time":1767225600,"properties":{"value":-5}}"#.to_vec(),
        br#"{"event_source_id":"P1","event":"AddToCart","event_id":"d","event_time":1767225600,"properties":{"value":"NaN"}}"#.to_vec(),
        br#"{"event_source_id":"P1","event":"AddToCart","event_id":"e","event_time":-1}"#.to_vec(),
        br#"{"event_source_id":"P1","event":"AddToCart","event_id":"f","event_time":99999999999999999999}"#.to_vec(),
        b"".to_vec(),                                                            // empty line
        b"   ".to_vec(),
        vec![0xff, 0xfe, b'{', b'}'],                                            // not UTF-8
        b"[1,2,3]".to_vec(),
        b"null".to_vec(),
        huge_string.into_bytes(),                                                // 1.1 MB line
    ];
    let mut browser = vec![GOOD.as_bytes().to_vec()];
    browser.extend(bad.iter().cloned());
    // Unicode is fine where text is allowed: emoji and right-to-left text in a good record.
    browser.push(
        r#"{"event_source_id":"P1","event":"ViewContent","event_id":"ok-2 😀 مرحبا","event_time":1767225601}"#
            .as_bytes()
            .to_vec(),
    );
    write(&dir.path().join("browser.jsonl"), &browser);
    write(
        &dir.path().join("server.jsonl"),
        &[br#"{"event_source_id":"P1","data":[]}"#.to_vec()],
    );
    write(
        &dir.path().join("orders.jsonl"),
        &[
            br#"{"order_id":"o1","total":"12,50","currency":"USD","created_at":1767225600}"#
                .to_vec(),
        ],
    );

    let out = dir.path().join("out");
    let stats = replay(
        &Config::default(),
        &ReplayInputs::in_dir(dir.path()),
        &out,
        None,
    )
    .unwrap();

    assert_eq!(stats.input_records.total, (browser.len() + 2) as u64);
    assert_eq!(stats.conversions, 2, "the two good browser records");
    assert_eq!(
        stats.dead_letters,
        bad.len() as u64 + 2,
        "{:?}",
        stats.dead_letters_by_reason
    );
    assert_eq!(stats.accounted(), stats.input_records.total);
    for reason in [
        "invalid_json",
        "invalid_shape",
        "invalid_amount",
        "invalid_time",
        "empty",
        "too_large",
    ] {
        assert!(
            stats
                .dead_letters_by_reason
                .get(reason)
                .copied()
                .unwrap_or(0)
                > 0,
            "no {reason}: {:?}",
            stats.dead_letters_by_reason
        );
    }
    let n = common::schema::assert_jsonl_valid("dead_letter", &out.join("dead_letters.jsonl"));
    assert_eq!(n as u64, stats.dead_letters);
    // Dead letters say which field failed, never the value: no raw email anywhere in the outputs
    // except the quarantined original bytes.
    let conversions = std::fs::read_to_string(out.join("conversions.jsonl")).unwrap();
    assert!(!conversions.to_lowercase().contains("a@b.com"));
}

#[test]
fn redacted_dead_letters_keep_no_original_bytes() {
    let dir = tempfile::tempdir().unwrap();
    write(
        &dir.path().join("b.jsonl"),
        &[br#"{"event_source_id":"P1","user":{"email":"secret@x.com"}"#.to_vec()],
    );
    write(&dir.path().join("s.jsonl"), &[]);
    write(&dir.path().join("o.jsonl"), &[]);
    let config = Config::parse("[engine]\nredact_dead_letters = true\n").unwrap();
    let out = dir.path().join("out");
    replay(
        &config,
        &ReplayInputs {
            browser: dir.path().join("b.jsonl"),
            server: dir.path().join("s.jsonl"),
            orders: dir.path().join("o.jsonl"),
        },
        &out,
        None,
    )
    .unwrap();
    let text = std::fs::read_to_string(out.join("dead_letters.jsonl")).unwrap();
    assert_eq!(text.lines().count(), 1);
    assert!(!text.contains("secret"), "{text}");
    assert!(text.contains(r#""redacted":true"#));
}
