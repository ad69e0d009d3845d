//! The contracts in `schemas/` as test helpers: compile a schema (JSON Schema 2020-12) and check
//! records or whole JSONL outputs against it, with errors that name the line and the field.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use jsonschema::Validator;
use serde_json::Value;

/// The input records onecount reads.
pub const INPUT_SCHEMAS: [&str; 3] = ["browser_event", "server_event", "order"];
/// The records onecount writes, one per JSONL output (strict: `additionalProperties: false`).
pub const OUTPUT_SCHEMAS: [&str; 4] =
    ["conversion", "discrepancy", "dead_letter", "revenue_window"];
/// Every schema in `schemas/`.
pub const ALL_SCHEMAS: [&str; 8] = [
    "browser_event",
    "server_event",
    "order",
    "conversion",
    "discrepancy",
    "dead_letter",
    "revenue_window",
    "stats",
];

/// How many invalid lines [`assert_jsonl_valid`] quotes before it stops listing.
const MAX_REPORTED: usize = 20;

pub fn schemas_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas")
}

pub fn schema_path(name: &str) -> PathBuf {
    schemas_dir().join(format!("{name}.json"))
}

/// The schema `schemas/<name>.json` as JSON.
pub fn schema_json(name: &str) -> Value {
    let path = schema_path(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// `schemas/<name>.json` compiled as JSON Schema 2020-12 (the compiler also checks the schema
/// against the 2020-12 meta-schema). `format` is an annotation, as 2020-12 says: the schemas
/// use `pattern` for what they enforce.
pub fn validator(name: &str) -> Validator {
    let schema = schema_json(name);
    jsonschema::draft202012::new(&schema).unwrap_or_else(|e| {
        panic!(
            "schemas/{name}.json does not compile as JSON Schema 2020-12: {e} (at {})",
            pointer(&e.instance_path.to_string())
        )
    })
}

/// The 2020-12 meta-schema as a validator: a schema document is valid 2020-12 iff it passes.
/// Resolved from the copy built into the `jsonschema` crate (no network).
pub fn meta_validator() -> Validator {
    let meta = serde_json::json!({ "$ref": "https://json-schema.org/draft/2020-12/schema" });
    jsonschema::draft202012::new(&meta).expect("the 2020-12 meta-schema compiles")
}

/// Every error of `instance` against `validator`, each as `at <json pointer>: <message>`;
/// empty when valid.
pub fn errors(validator: &Validator, instance: &Value) -> Vec<String> {
    validator
        .iter_errors(instance)
        .map(|e| {
            format!(
                "at {}: {}",
                pointer(&e.instance_path.to_string()),
                shorten(&e.to_string())
            )
        })
        .collect()
}

/// The errors of `instance` against `schemas/<schema>.json`, each branch of a top-level `oneOf`
/// explained on its own (a failed `oneOf` alone says only that no branch matched).
pub fn explain(schema: &str, instance: &Value) -> Vec<String> {
    let mut errs = errors(&validator(schema), instance);
    if errs.is_empty() {
        return errs;
    }
    let root = schema_json(schema);
    for branch in root["oneOf"].as_array().into_iter().flatten() {
        let Some(target) = branch["$ref"].as_str() else {
            continue;
        };
        let mut only = root.clone();
        let map = only.as_object_mut().expect("a schema is an object");
        map.remove("oneOf");
        map.insert("$ref".into(), Value::String(target.into()));
        let v = jsonschema::draft202012::new(&only).expect("a oneOf branch compiles");
        let branch_errs = errors(&v, instance);
        let name = target.rsplit('/').next().unwrap_or(target);
        if branch_errs.is_empty() {
            errs.push(format!("  as {name}: valid"));
        } else {
            errs.push(format!("  as {name}: {}", branch_errs.join("; ")));
        }
    }
    errs
}

/// Panics, listing the errors, unless `instance` is valid against `schemas/<schema>.json`.
#[track_caller]
pub fn assert_valid(schema: &str, instance: &Value) {
    let errs = explain(schema, instance);
    assert!(
        errs.is_empty(),
        "not valid against schemas/{schema}.json:\n  {}\nrecord: {}",
        errs.join("\n  "),
        shorten(&instance.to_string())
    );
}

/// Panics unless `instance` is invalid against `schemas/<schema>.json`.
#[track_caller]
pub fn assert_invalid(schema: &str, instance: &Value) {
    assert!(
        !validator(schema).is_valid(instance),
        "unexpectedly valid against schemas/{schema}.json: {}",
        shorten(&instance.to_string())
    );
}

/// Validates every line of the JSONL file at `path` against `schemas/<schema>.json` and returns
/// the number of lines. Panics naming each invalid line (1-based) and its errors; an empty line
/// or a line that is not JSON is invalid.
#[track_caller]
pub fn assert_jsonl_valid(schema: &str, path: &Path) -> usize {
    let validator = validator(schema);
    let file = File::open(path).unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()));
    let mut lines = 0usize;
    let mut invalid = 0usize;
    let mut report = Vec::new();
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let line = line.unwrap_or_else(|e| panic!("{}: line {}: {e}", path.display(), i + 1));
        lines += 1;
        let (errs, value) = match serde_json::from_str::<Value>(&line) {
            Ok(value) => (errors(&validator, &value), Some(value)),
            Err(e) => (vec![format!("not JSON: {e}")], None),
        };
        if !errs.is_empty() {
            invalid += 1;
            if report.len() < MAX_REPORTED {
                // Explain only what is listed: that compiles a validator per oneOf branch.
                let errs = value.map_or(errs, |value| explain(schema, &value));
                report.push(format!("line {}: {}", i + 1, errs.join("; ")));
            }
        }
    }
    assert!(
        invalid == 0,
        "{}: {invalid} of {lines} lines invalid against schemas/{schema}.json{}:\n  {}",
        path.display(),
        if invalid > report.len() {
            format!(" (first {} listed)", report.len())
        } else {
            String::new()
        },
        report.join("\n  ")
    );
    lines
}

fn pointer(p: &str) -> String {
    if p.is_empty() {
        "/".to_string()
    } else {
        p.to_string()
    }
}

fn shorten(s: &str) -> String {
    const MAX: usize = 300;
    if s.len() <= MAX {
        return s.to_string();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}
