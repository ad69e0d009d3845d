//! The HTML audit report opened in headless Chromium: it renders (a screenshot of the page),
//! the rendered DOM has every chart with data and every check, the browser logs no console
//! message (the page has no script, so any message is an error: a failed load, a blocked
//! resource), and the file references nothing outside itself.
//!
//! Needs Chromium at /usr/bin/chromium (Debian package `chromium`, installed by
//! scripts/install-deps.sh). Without it the test fails: a skipped browser test proves nothing.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use onecount::audit::checks::CHECK_IDS;
use onecount::audit::{self, AuditOptions, Format, OutputRecord};
use onecount::config::Config;
use onecount::generate::{generate_to_dir, GenerateOptions};
use onecount::model::{
    Conversion, Properties, Source, SourcesSeen, User, ValueSource, FORMAT_VERSION,
};
use onecount::replay::{replay, ReplayInputs};

const CHROMIUM: &str = "/usr/bin/chromium";
/// Chromium starts in 2-3 s here; a run that takes this long is hung.
const CHROMIUM_DEADLINE: Duration = Duration::from_secs(120);
/// The charts the report must draw, by element id.
const CHARTS: [&str; 3] = [
    "chart-dedup-status",
    "chart-discrepancy-kinds",
    "chart-drift-over-time",
];

/// What one headless Chromium run printed.
struct Run {
    stdout: String,
    stderr: String,
}

/// Runs headless Chromium on `url` with `args`, in a fresh profile under `work`.
fn chromium(work: &Path, name: &str, args: &[&str], url: &str) -> Run {
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} not found: install the Debian package chromium (scripts/install-deps.sh)"
    );
    let profile = work.join(format!("profile-{name}"));
    let out_path = work.join(format!("{name}.stdout"));
    let err_path = work.join(format!("{name}.stderr"));
    let mut child = Command::new(CHROMIUM)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(url)
        .stdin(Stdio::null())
        // Files, not pipes: a dumped DOM is larger than a pipe's buffer.
        .stdout(File::create(&out_path).unwrap())
        .stderr(File::create(&err_path).unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {CHROMIUM}: {e}"));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > CHROMIUM_DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "chromium ({name}) did not finish within {CHROMIUM_DEADLINE:?}; stderr:\n{}",
                std::fs::read_to_string(&err_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let run = Run {
        stdout: std::fs::read_to_string(&out_path).unwrap(),
        stderr: std::fs::read_to_string(&err_path).unwrap(),
    };
    assert!(
        status.success(),
        "chromium ({name}) exited with {status}; stderr:\n{}",
        run.stderr
    );
    run
}

/// Console messages and uncaught errors Chromium logged (`--enable-logging=stderr`): it writes
/// each console call as `INFO:CONSOLE:<line>] "<message>", source: <url>`, whatever its level.
fn console_messages(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|l| l.contains(":CONSOLE") || l.contains("Uncaught"))
        .collect()
}

fn file_url(path: &Path) -> String {
    format!("file://{}", path.canonicalize().unwrap().display())
}

/// The opening tag of the element with `id`, and the element's markup up to its closing tag.
fn element<'a>(dom: &'a str, tag: &str, id: &str) -> (&'a str, &'a str) {
    let at = dom
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no element #{id} in the rendered DOM"));
    let start = dom[..at].rfind(&format!("<{tag}")).expect("opening tag");
    let open_end = start + dom[start..].find('>').expect("end of tag");
    let close = start
        + dom[start..]
            .find(&format!("</{tag}>"))
            .expect("closing tag");
    (&dom[start..=open_end], &dom[start..close])
}

fn attr(tag: &str, name: &str) -> Option<u64> {
    let at = tag.find(&format!(" {name}=\""))? + name.len() + 3;
    tag[at..].split('"').next()?.parse().ok()
}

/// Width and height from a PNG's IHDR chunk.
fn png_size(bytes: &[u8]) -> (u32, u32) {
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
    assert_eq!(&bytes[12..16], b"IHDR");
    let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    (be(&bytes[16..20]), be(&bytes[20..24]))
}

#[test]
fn console_check_sees_errors_in_this_chromium() {
    // The control for the test below: a page that logs and throws must be caught, or "no
    // console errors" would be vacuous with this Chromium build.
    let tmp = tempfile::tempdir().unwrap();
    let page = tmp.path().join("bad.html");
    std::fs::write(
        &page,
        "<!DOCTYPE html><html><body><p id=\"x\">x</p><script>console.error(\"audit-control\"); throw new Error(\"audit-throw\");</script></body></html>",
    )
    .unwrap();
    let run = chromium(tmp.path(), "control", &["--dump-dom"], &file_url(&page));
    assert!(run.stdout.contains("id=\"x\""), "{}", run.stdout);
    let messages = console_messages(&run.stderr);
    assert!(
        messages.iter().any(|l| l.contains("audit-control")),
        "console.error not seen; stderr:\n{}",
        run.stderr
    );
    assert!(
        messages
            .iter()
            .any(|l| l.contains("Uncaught") && l.contains("audit-throw")),
        "uncaught error not seen; stderr:\n{}",
        run.stderr
    );
}

#[test]
fn html_report_renders_every_chart_with_data_in_headless_chromium() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("input");
    let out = tmp.path().join("output");
    generate_to_dir(
        &GenerateOptions {
            actions: 2_000,
            seed: 5,
            ..GenerateOptions::default()
        },
        &input,
    )
    .unwrap();
    let inputs = ReplayInputs::in_dir(&input);
    let stats = replay(&Config::default(), &inputs, &out, None).unwrap();

    // Kept under target/ so a person can open what the test saw.
    let keep = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("audit_html");
    std::fs::create_dir_all(&keep).unwrap();
    let html_path = keep.join("audit.html");
    let shot = keep.join("audit.png");
    let _ = std::fs::remove_file(&shot);
    let run = Command::new(env!("CARGO_BIN_EXE_onecount"))
        .args(["audit", "--dir", out.to_str().unwrap(), "--format", "html"])
        .arg("--out")
        .arg(&html_path)
        .output()
        .unwrap();
    assert!(
        matches!(run.status.code(), Some(0 | 1)),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let html = std::fs::read_to_string(&html_path).unwrap();

    // Self-contained: nothing to fetch, nothing to run.
    for banned in [
        "<script", "http:", "https:", "url(", "@import", "<link", "<img", "<iframe", " src=",
        "//cdn",
    ] {
        assert!(!html.contains(banned), "the report contains {banned:?}");
    }

    let url = file_url(&html_path);
    let dom = chromium(tmp.path(), "dom", &["--dump-dom"], &url);
    let messages = console_messages(&dom.stderr);
    assert!(messages.is_empty(), "console messages: {messages:#?}");

    for id in CHARTS {
        let (tag, body) = element(&dom.stdout, "figure", id);
        let points = attr(tag, "data-points").unwrap_or_else(|| panic!("#{id} has no data-points"));
        let total = attr(tag, "data-total").unwrap_or_else(|| panic!("#{id} has no data-total"));
        assert!(points > 0, "#{id} draws no data: {tag}");
        assert!(total > 0, "#{id} has a zero total: {tag}");
        assert!(body.contains("<svg"), "#{id} has no SVG");
        let marks = match id {
            "chart-drift-over-time" => body.matches("<circle").count(),
            _ => body.matches("<rect").count(),
        };
        assert!(
            marks as u64 >= points,
            "#{id}: {marks} marks for {points} points"
        );
    }
    // The charts' numbers are the run's.
    let (dedup, _) = element(&dom.stdout, "figure", "chart-dedup-status");
    assert_eq!(attr(dedup, "data-total"), Some(stats.conversions));
    let (kinds, _) = element(&dom.stdout, "figure", "chart-discrepancy-kinds");
    assert_eq!(
        attr(kinds, "data-total"),
        Some(stats.discrepancies.values().sum::<u64>())
    );
    assert_eq!(
        attr(kinds, "data-points"),
        Some(stats.discrepancies.values().filter(|n| **n > 0).count() as u64)
    );
    let (drift, drift_body) = element(&dom.stdout, "figure", "chart-drift-over-time");
    assert!(attr(drift, "data-series").unwrap() > 0);
    assert!(drift_body.contains("class=\"cumulative\""), "no drift line");

    // Every check is a row of the checklist, with its status.
    let (_, checklist) = element(&dom.stdout, "table", "checks");
    for id in CHECK_IDS {
        assert!(
            checklist.contains(&format!("data-check=\"{id}\"")),
            "no row for check {id}"
        );
    }
    assert_eq!(checklist.matches("data-check=").count(), CHECK_IDS.len());

    let screenshot = chromium(
        tmp.path(),
        "screenshot",
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=1200,2000",
        ],
        &url,
    );
    let messages = console_messages(&screenshot.stderr);
    assert!(messages.is_empty(), "console messages: {messages:#?}");
    let png = std::fs::read(&shot).expect("screenshot written");
    assert_eq!(png_size(&png), (1200, 2000));
    // A blank page compresses to a few kilobytes; the rendered report is far larger.
    assert!(
        png.len() > 50_000,
        "screenshot of {} bytes: blank?",
        png.len()
    );
    eprintln!(
        "report: {}\nscreenshot: {}",
        html_path.display(),
        shot.display()
    );
}

#[test]
fn html_report_escapes_what_the_data_says() {
    // Pixel codes and currencies come from input: a hostile one must stay text.
    let hostile = "<script>alert(1)</script>";
    let conversion = Conversion {
        format_version: FORMAT_VERSION,
        key: format!("{hostile}/CompletePayment/e1"),
        event_source_id: hostile.into(),
        event: "CompletePayment".into(),
        event_id: Some("e1".into()),
        event_time: 1_767_225_600,
        user: User::default(),
        properties: Properties {
            currency: Some("<b>".into()),
            ..Properties::default()
        },
        page: Default::default(),
        sources: SourcesSeen::Browser,
        first_source: Source::Browser,
        value_source: ValueSource::None,
    };
    let report = audit::audit(
        "<img src=x>",
        [OutputRecord::Conversion(conversion)],
        None,
        &AuditOptions::default(),
    );
    let html = audit::render(&report, Format::Html);
    assert!(!html.contains("<script"), "unescaped pixel code");
    assert!(!html.contains("<img"), "unescaped source");
    assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    for id in CHARTS {
        assert!(html.contains(&format!("id=\"{id}\"")), "{id} missing");
    }
}
