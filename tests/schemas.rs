//! The contracts in `schemas/`: each is valid JSON Schema 2020-12, accepts its valid fixtures and
//! rejects its invalid ones, and the output schemas match exactly what `onecount::model`
//! serializes (build the model's records, serialize them with serde_json, validate them), so a
//! change to either side that the other does not follow fails here.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use common::schema::{
    assert_invalid, assert_jsonl_valid, assert_valid, errors, meta_validator, schema_json,
    schemas_dir, validator, ALL_SCHEMAS, INPUT_SCHEMAS, OUTPUT_SCHEMAS,
};
use onecount::model::{
    Content, Conversion, DeadLetter, DeadLetterReason, Discrepancy, DiscrepancyKind, Input,
    MatchKey, Money, Page, Position, Properties, RevenueWindow, Source, SourcesSeen, User,
    ValueSource, FORMAT_VERSION,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};

const META_2020_12: &str = "https://json-schema.org/draft/2020-12/schema";

fn fixtures_dir(schema: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/schemas")
        .join(schema)
}

/// The fixtures of `schema` whose file name starts with `prefix`, sorted, as (name, JSON).
fn fixtures(schema: &str, prefix: &str) -> Vec<(String, Value)> {
    let dir = fixtures_dir(schema);
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with(prefix) && name.ends_with(".json") {
            let text = std::fs::read_to_string(&path).unwrap();
            let value = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{}: not JSON: {e}", path.display()));
            out.push((name, value));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn hash(s: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(s.as_bytes()))
}

fn to_json<T: Serialize>(record: &T) -> Value {
    serde_json::to_value(record).expect("model records serialize")
}

// ---------------------------------------------------------------------------------------------
// The schema files themselves

#[test]
fn schema_directory_holds_exactly_the_known_schemas() {
    let on_disk: BTreeSet<String> = std::fs::read_dir(schemas_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let known: BTreeSet<String> = ALL_SCHEMAS.iter().map(|n| format!("{n}.json")).collect();
    assert_eq!(on_disk, known, "schemas/ and ALL_SCHEMAS disagree");
}

#[test]
fn every_schema_is_valid_2020_12_with_id_title_and_description() {
    let meta = meta_validator();
    for name in ALL_SCHEMAS {
        let schema = schema_json(name);
        let errs = errors(&meta, &schema);
        assert!(
            errs.is_empty(),
            "schemas/{name}.json fails the 2020-12 meta-schema:\n  {}",
            errs.join("\n  ")
        );
        // Compiles (resolves every $ref, compiles every pattern).
        validator(name);
        assert_eq!(schema["$schema"], META_2020_12, "{name}: $schema");
        assert_eq!(
            schema["$id"],
            format!("https://onecount.dev/schemas/{name}.json"),
            "{name}: $id"
        );
        for key in ["title", "description"] {
            let text = schema[key].as_str().unwrap_or_default();
            assert!(!text.trim().is_empty(), "{name}: no {key}");
        }
    }
}

#[test]
fn the_meta_schema_check_rejects_a_broken_schema() {
    let meta = meta_validator();
    assert!(meta.is_valid(&json!({"type": "object", "properties": {"a": {"type": "string"}}})));
    assert!(!meta.is_valid(&json!({"type": 12})));
    assert!(!meta.is_valid(&json!({"required": "a"})));
    assert!(!meta.is_valid(&json!({"properties": {"a": {"minLength": -1}}})));
}

/// Calls `f` on every subschema of `node` with its JSON pointer, skipping `if` conditions (they
/// test values, they declare nothing).
fn walk_schemas(node: &Value, path: &str, f: &mut dyn FnMut(&str, &Value)) {
    let Some(obj) = node.as_object() else { return };
    f(path, node);
    for (key, value) in obj {
        let here = format!("{path}/{key}");
        match key.as_str() {
            "properties" | "$defs" | "patternProperties" => {
                for (name, sub) in value.as_object().into_iter().flatten() {
                    walk_schemas(sub, &format!("{here}/{name}"), f);
                }
            }
            "allOf" | "anyOf" | "oneOf" | "prefixItems" => {
                for (i, sub) in value.as_array().into_iter().flatten().enumerate() {
                    walk_schemas(sub, &format!("{here}/{i}"), f);
                }
            }
            "items"
            | "additionalProperties"
            | "not"
            | "then"
            | "else"
            | "contains"
            | "propertyNames"
            | "unevaluatedProperties"
            | "unevaluatedItems" => walk_schemas(value, &here, f),
            _ => {}
        }
    }
}

#[test]
fn every_property_has_a_description() {
    for name in ALL_SCHEMAS {
        let mut missing = Vec::new();
        walk_schemas(&schema_json(name), "", &mut |path, node| {
            for (prop, sub) in node
                .get("properties")
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
            {
                let described = sub
                    .get("description")
                    .and_then(Value::as_str)
                    .is_some_and(|d| !d.trim().is_empty());
                if !described {
                    missing.push(format!("{path}/properties/{prop}"));
                }
            }
        });
        assert!(missing.is_empty(), "{name}: no description on {missing:?}");
    }
}

/// The pointers of object subschemas (`type: object` or with `properties`) whose
/// `additionalProperties` is not `false`.
fn open_objects(schema: &Value) -> BTreeSet<String> {
    let mut open = BTreeSet::new();
    walk_schemas(schema, "", &mut |path, node| {
        let is_object =
            node.get("type") == Some(&json!("object")) || node.get("properties").is_some();
        // Conditional branches (then/else/not) refine an object declared elsewhere.
        let refinement = path
            .split('/')
            .any(|segment| matches!(segment, "then" | "else" | "not"));
        if is_object && !refinement && node.get("additionalProperties") != Some(&json!(false)) {
            open.insert(path.to_string());
        }
    });
    open
}

#[test]
fn output_schemas_close_every_object() {
    for name in OUTPUT_SCHEMAS {
        let open = open_objects(&schema_json(name));
        assert!(
            open.is_empty(),
            "{name}: objects without additionalProperties: false: {open:?}"
        );
    }
    // stats.json: only the maps (by reason, by currency) take keys of their own.
    let expected: BTreeSet<String> = [
        "/properties/duplicates_by_reason",
        "/properties/dead_letters_by_reason",
        "/properties/tracked_revenue",
        "/properties/backend_revenue",
        "/properties/pixels",
        "/properties/outcomes",
        "/properties/outcomes/additionalProperties",
        "/properties/pixels/additionalProperties/properties/conversions",
        "/properties/pixels/additionalProperties/properties/duplicates",
        "/properties/pixels/additionalProperties/properties/discrepancies",
        "/properties/pixels/additionalProperties/properties/match_keys",
        "/properties/pixels/additionalProperties/properties/tracked_revenue",
        "/properties/pixels/additionalProperties/properties/backend_revenue",
    ]
    .map(String::from)
    .into();
    assert_eq!(
        open_objects(&schema_json("stats")),
        expected,
        "stats: open objects"
    );
}

#[test]
fn input_schemas_share_their_field_definitions() {
    let browser = schema_json("browser_event");
    let server = schema_json("server_event");
    let order = schema_json("order");
    for def in [
        "event_id",
        "event_time",
        "amount",
        "consent",
        "user",
        "content",
        "properties",
        "page",
    ] {
        assert_eq!(
            browser["$defs"][def], server["$defs"][def],
            "$defs/{def} differs between browser_event.json and server_event.json"
        );
    }
    assert_eq!(browser["$defs"]["amount"], order["$defs"]["amount"]);
    let time_pattern = &browser["$defs"]["event_time"]["pattern"];
    assert_eq!(&order["$defs"]["time"]["pattern"], time_pattern);
    assert_eq!(
        &server["$defs"]["legacy_event"]["properties"]["timestamp"]["pattern"],
        time_pattern
    );
}

#[test]
fn the_stats_schema_names_every_discrepancy_kind() {
    let stats = schema_json("stats");
    let required: BTreeSet<&str> = stats["properties"]["discrepancies"]["required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let kinds: BTreeSet<&str> = DiscrepancyKind::ALL.iter().map(|k| k.as_str()).collect();
    assert_eq!(required, kinds);
    let discrepancy = schema_json("discrepancy");
    let enum_kinds: BTreeSet<&str> = discrepancy["properties"]["kind"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(enum_kinds, kinds);
}

// ---------------------------------------------------------------------------------------------
// Fixtures

#[test]
fn every_schema_has_its_fixtures_and_nothing_misnamed() {
    for name in ALL_SCHEMAS {
        let dir = fixtures_dir(name);
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let file = entry.unwrap().file_name().to_string_lossy().into_owned();
            assert!(
                (file.starts_with("valid_") || file.starts_with("invalid_"))
                    && file.ends_with(".json"),
                "{}/{file}: fixtures are named valid_*.json or invalid_*.json",
                dir.display()
            );
        }
        assert!(
            fixtures(name, "valid_").len() >= 2,
            "{name}: fewer than 2 valid fixtures"
        );
        assert!(
            !fixtures(name, "invalid_").is_empty(),
            "{name}: no invalid fixture"
        );
    }
}

#[test]
fn valid_fixtures_pass() {
    for name in ALL_SCHEMAS {
        let v = validator(name);
        for (file, value) in fixtures(name, "valid_") {
            let errs = errors(&v, &value);
            assert!(
                errs.is_empty(),
                "{name}/{file} should be valid:\n  {}",
                errs.join("\n  ")
            );
        }
    }
}

#[test]
fn invalid_fixtures_fail() {
    for name in ALL_SCHEMAS {
        let v = validator(name);
        for (file, value) in fixtures(name, "invalid_") {
            assert!(!v.is_valid(&value), "{name}/{file} should be invalid");
        }
    }
}

/// `value` with every number as f64, so a fixture's `46` equals the model's `46.0`.
fn numbers_as_f64(value: &Value) -> Value {
    match value {
        Value::Number(n) => json!(n.as_f64().unwrap()),
        Value::Array(items) => Value::Array(items.iter().map(numbers_as_f64).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), numbers_as_f64(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

fn round_trips<T: Serialize + DeserializeOwned>(schema: &str) {
    for (file, value) in fixtures(schema, "valid_") {
        let record: T = serde_json::from_value(value.clone())
            .unwrap_or_else(|e| panic!("{schema}/{file} does not deserialize into the model: {e}"));
        assert_eq!(
            numbers_as_f64(&to_json(&record)),
            numbers_as_f64(&value),
            "{schema}/{file} changes on a round trip through the model"
        );
    }
}

/// Every valid output fixture is a record the model can hold and writes back unchanged: the
/// fixtures are real records, not just schema-valid JSON.
#[test]
fn valid_output_fixtures_round_trip_through_the_model() {
    round_trips::<Conversion>("conversion");
    round_trips::<Discrepancy>("discrepancy");
    round_trips::<DeadLetter>("dead_letter");
    round_trips::<RevenueWindow>("revenue_window");
}

#[test]
fn input_schemas_take_objects_only() {
    for name in INPUT_SCHEMAS {
        assert!(
            !validator(name).is_valid(&json!([])),
            "{name} accepts an array"
        );
        assert!(
            !validator(name).is_valid(&json!("x")),
            "{name} accepts a string"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The model and the output schemas, pinned together

/// Follows a local `$ref` (`#/$defs/name`).
fn resolve<'a>(root: &'a Value, node: &'a Value) -> &'a Value {
    match node.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let target = root
                .pointer(r.strip_prefix('#').expect("local $ref"))
                .unwrap_or_else(|| panic!("unresolved $ref {r}"));
            resolve(root, target)
        }
        None => node,
    }
}

/// At every object of `instance`, the schema declares exactly the instance's keys.
fn assert_same_fields(root: &Value, node: &Value, instance: &Value, path: &str) {
    let node = resolve(root, node);
    match instance {
        Value::Object(map) => {
            let declared: BTreeSet<&str> = node["properties"]
                .as_object()
                .unwrap_or_else(|| panic!("{path}: the schema declares no properties"))
                .keys()
                .map(String::as_str)
                .collect();
            let written: BTreeSet<&str> = map.keys().map(String::as_str).collect();
            assert_eq!(
                declared, written,
                "{path}: schema properties (left) != fields the model writes (right)"
            );
            for (k, v) in map {
                assert_same_fields(root, &node["properties"][k], v, &format!("{path}/{k}"));
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                assert_same_fields(root, &node["items"], item, &format!("{path}/{i}"));
            }
        }
        _ => {}
    }
}

/// Pointers of every object inside `value` (the root is "").
fn object_pointers(value: &Value, path: String, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            out.push(path.clone());
            for (k, v) in map {
                object_pointers(v, format!("{path}/{k}"), out);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                object_pointers(v, format!("{path}/{i}"), out);
            }
        }
        _ => {}
    }
}

/// Pointers of every field inside `value`.
fn field_pointers(value: &Value, path: String, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                let here = format!("{path}/{k}");
                out.push(here.clone());
                field_pointers(v, here, out);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                field_pointers(v, format!("{path}/{i}"), out);
            }
        }
        _ => {}
    }
}

fn without(value: &Value, pointer: &str) -> Value {
    let mut copy = value.clone();
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    match copy.pointer_mut(parent).unwrap() {
        Value::Object(map) => {
            map.remove(key);
        }
        Value::Array(items) => {
            items.remove(key.parse::<usize>().unwrap());
        }
        _ => unreachable!(),
    }
    copy
}

/// Pins `schema` to the model: `full` (every optional field set) has exactly the fields the
/// schema declares, at every level; every record of `valid` passes, and fails with an unknown
/// field added at any level; `minimal` (every optional field unset) passes, and fails without
/// any one of its fields: the schema's `required` are the model's non-optional fields.
fn pin(schema: &str, full: &Value, valid: &[Value], minimal: &Value) {
    let root = schema_json(schema);
    assert_same_fields(&root, &root, full, schema);
    let v = validator(schema);
    for record in valid.iter().chain([minimal]) {
        let errs = errors(&v, record);
        assert!(
            errs.is_empty(),
            "{schema}: model record invalid:\n  {}\n{record}",
            errs.join("\n  ")
        );
        let mut objects = Vec::new();
        object_pointers(record, String::new(), &mut objects);
        for at in objects {
            let mut extra = record.clone();
            extra
                .pointer_mut(&at)
                .unwrap()
                .as_object_mut()
                .unwrap()
                .insert("not_in_model".into(), json!(1));
            assert!(
                !v.is_valid(&extra),
                "{schema}: an unknown field at {at}/ is accepted"
            );
        }
    }
    let mut fields = Vec::new();
    field_pointers(minimal, String::new(), &mut fields);
    for at in fields {
        assert!(
            !v.is_valid(&without(minimal, &at)),
            "{schema}: a record without {at} is accepted, but the model always writes it"
        );
    }
}

fn full_user() -> User {
    User {
        email: Some(hash("a@b.com")),
        phone: Some(hash("+14155550100")),
        external_id: Some(hash("customer-42")),
        ttclid: Some("E.C.P.v3abc".into()),
        ttp: Some("2Fq3ttpcookie".into()),
        ip: Some("203.0.113.7".into()),
        user_agent: Some("Mozilla/5.0".into()),
    }
}

fn full_properties() -> Properties {
    Properties {
        value: Some(Money(149_900_000)),
        currency: Some("USD".into()),
        order_id: Some("ord-1001".into()),
        content_type: Some("product".into()),
        contents: Some(vec![Content {
            content_id: Some("sku-1".into()),
            content_name: Some("Mug".into()),
            content_category: Some("Kitchen".into()),
            brand: Some("Acme".into()),
            quantity: Some(2),
            price: Some(Money(74_950_000)),
        }]),
        description: Some("two mugs".into()),
        query: Some("mug".into()),
    }
}

fn full_conversion() -> Conversion {
    Conversion {
        format_version: FORMAT_VERSION,
        key: "C4PIXEL/CompletePayment/ev-1".into(),
        event_source_id: "C4PIXEL".into(),
        event: "CompletePayment".into(),
        event_id: Some("ev-1".into()),
        event_time: 1_697_783_008,
        user: full_user(),
        properties: full_properties(),
        page: Page {
            url: Some("https://shop.example/thanks".into()),
            referrer: Some("https://shop.example/checkout".into()),
        },
        sources: SourcesSeen::Both,
        first_source: Source::Browser,
        value_source: ValueSource::Server,
    }
}

fn minimal_conversion() -> Conversion {
    Conversion {
        format_version: FORMAT_VERSION,
        key: "C4PIXEL/ViewContent/~browser:0:17:0".into(),
        event_source_id: "C4PIXEL".into(),
        event: "ViewContent".into(),
        event_id: None,
        event_time: 1_697_783_008,
        user: User::default(),
        properties: Properties::default(),
        page: Page::default(),
        sources: SourcesSeen::Browser,
        first_source: Source::Browser,
        value_source: ValueSource::None,
    }
}

#[test]
fn model_conversions_match_the_schema() {
    let full = to_json(&full_conversion());
    let minimal = to_json(&minimal_conversion());
    assert!(minimal.get("page").is_none() && minimal.get("event_id").is_none());
    let mut server_only = full_conversion();
    server_only.sources = SourcesSeen::Server;
    server_only.first_source = Source::Server;
    server_only.page = Page {
        url: Some("https://shop.example/".into()),
        referrer: None,
    };
    server_only.properties.value = Some(Money(0));
    pin(
        "conversion",
        &full,
        &[full.clone(), to_json(&server_only)],
        &minimal,
    );

    // Outputs only ever hold hashes.
    for raw in [
        "a@b.com",
        "+14155550100",
        &hash("x").to_uppercase(),
        &hash("x")[1..],
    ] {
        let mut c = full_conversion();
        c.user.email = Some(raw.to_string());
        assert_invalid("conversion", &to_json(&c));
        let mut c = full_conversion();
        c.user.phone = Some(raw.to_string());
        assert_invalid("conversion", &to_json(&c));
        let mut c = full_conversion();
        c.user.external_id = Some(raw.to_string());
        assert_invalid("conversion", &to_json(&c));
    }
}

/// One discrepancy of each kind with the fields it is about.
fn discrepancies() -> Vec<Discrepancy> {
    let t = 1_697_783_008_123;
    DiscrepancyKind::ALL
        .iter()
        .map(|&kind| {
            let mut d = Discrepancy::new(kind, format!("{}/C4PIXEL/x", kind.as_str()), t);
            if kind != DiscrepancyKind::OrderWithoutConversion {
                d.event_source_id = Some("C4PIXEL".into());
                d.event = Some("CompletePayment".into());
                d.event_id = Some("ev-1".into());
            }
            match kind {
                DiscrepancyKind::MissingEventId | DiscrepancyKind::ConsentAfterEmit => {
                    d.event_id = None;
                    d.source = Some(Source::Server);
                }
                DiscrepancyKind::MissingOrderId | DiscrepancyKind::ConsentViolation => {}
                DiscrepancyKind::DuplicateOrderConversion
                | DiscrepancyKind::ConversionWithoutOrder => d.order_id = Some("ord-1".into()),
                DiscrepancyKind::OrderWithoutConversion => {
                    d.order_id = Some("ord-1".into());
                    d.order_total = Some(Money(149_900_000));
                    d.order_currency = Some("USD".into());
                }
                DiscrepancyKind::InvalidCurrency => d.currency = Some("DOLLARS".into()),
                DiscrepancyKind::ValueParity => {
                    d.browser_value = Some(Money(149_900_000));
                    d.server_value = Some(Money(139_900_000));
                }
                DiscrepancyKind::CurrencyParity => {
                    d.browser_currency = Some("USD".into());
                    d.server_currency = Some("EUR".into());
                }
                DiscrepancyKind::MatchKeyParity => {
                    d.match_key = Some(MatchKey::Email);
                    d.present_on = Some(Source::Server);
                }
                DiscrepancyKind::ValueMismatch => {
                    d.order_id = Some("ord-1".into());
                    d.conversion_value = Some(Money(149_900_000));
                    d.conversion_currency = Some("USD".into());
                    d.order_total = Some(Money(159_900_000));
                    d.order_currency = Some("USD".into());
                }
                DiscrepancyKind::CurrencyMismatch => {
                    d.order_id = Some("ord-1".into());
                    d.conversion_value = Some(Money(149_900_000));
                    d.conversion_currency = Some("USD".into());
                    d.order_total = Some(Money(149_900_000));
                    d.order_currency = Some("EUR".into());
                }
            }
            d
        })
        .collect()
}

#[test]
fn model_discrepancies_match_the_schema() {
    let mut full = Discrepancy::new(DiscrepancyKind::ValueMismatch, "k".into(), 5_000);
    full.event_source_id = Some("C4PIXEL".into());
    full.event = Some("CompletePayment".into());
    full.event_id = Some("ev-1".into());
    full.order_id = Some("ord-1".into());
    full.source = Some(Source::Browser);
    full.match_key = Some(MatchKey::ExternalId);
    full.present_on = Some(Source::Browser);
    full.browser_value = Some(Money(1));
    full.server_value = Some(Money(2));
    full.browser_currency = Some("USD".into());
    full.server_currency = Some("USD".into());
    full.conversion_value = Some(Money(3));
    full.conversion_currency = Some("USD".into());
    full.order_total = Some(Money(4));
    full.order_currency = Some("USD".into());
    full.currency = Some("USD".into());
    assert_eq!(to_json(&full)["time"], json!(5));

    let mut valid: Vec<Value> = discrepancies().iter().map(to_json).collect();
    valid.push(to_json(&full));
    // The fewest fields a discrepancy can have: an order no conversion claimed.
    let mut minimal = Discrepancy::new(DiscrepancyKind::OrderWithoutConversion, "k".into(), -1);
    minimal.order_id = Some("ord-1".into());
    pin("discrepancy", &to_json(&full), &valid, &to_json(&minimal));

    // A kind without the fields it is about is not a finding anyone can act on.
    let mut d = discrepancies()[DiscrepancyKind::MatchKeyParity as usize].clone();
    d.present_on = None;
    assert_invalid("discrepancy", &to_json(&d));
    let mut d = discrepancies()[DiscrepancyKind::ValueMismatch as usize].clone();
    d.order_total = None;
    assert_invalid("discrepancy", &to_json(&d));
    let mut v = to_json(&discrepancies()[0]);
    v["kind"] = json!("unknown_kind");
    assert_invalid("discrepancy", &v);
}

fn dead_letter(input: Input, reason: DeadLetterReason) -> DeadLetter {
    DeadLetter {
        format_version: FORMAT_VERSION,
        input,
        position: Position {
            input,
            partition: 0,
            offset: 7,
            index: 0,
        },
        reason,
        detail: "event_time: not a number or RFC 3339 string".into(),
        original: Some(r#"{"event":"ViewContent","event_time":"soon"}"#.into()),
        original_base64: None,
        redacted: false,
    }
}

#[test]
fn model_dead_letters_match_the_schema() {
    let mut full = dead_letter(Input::Server, DeadLetterReason::InvalidTime);
    full.original_base64 = Some("/w==".into());
    let text = dead_letter(Input::Browser, DeadLetterReason::InvalidTime);
    let mut binary = dead_letter(Input::Orders, DeadLetterReason::InvalidJson);
    binary.original = None;
    binary.original_base64 = Some("/0Fi".into());
    binary.position.partition = 3;
    binary.position.offset = 1_234_567_890_123;
    let mut empty = dead_letter(Input::Server, DeadLetterReason::Empty);
    empty.original = Some(String::new());
    empty.position.index = 2;
    let mut redacted = dead_letter(Input::Server, DeadLetterReason::MissingField);
    redacted.original = None;
    redacted.redacted = true;
    pin(
        "dead_letter",
        &to_json(&full),
        &[to_json(&text), to_json(&binary), to_json(&empty)],
        &to_json(&redacted),
    );

    // Bytes are either text or base64, and none once redacted.
    assert_invalid("dead_letter", &to_json(&full));
    let mut leaky = text.clone();
    leaky.redacted = true;
    assert_invalid("dead_letter", &to_json(&leaky));
    let mut lost = text.clone();
    lost.original = None;
    assert_invalid("dead_letter", &to_json(&lost));
    let mut elsewhere = text.clone();
    elsewhere.position.input = Input::Orders;
    assert_invalid("dead_letter", &to_json(&elsewhere));
    let mut v = to_json(&text);
    v.as_object_mut().unwrap().remove("reason");
    assert_invalid("dead_letter", &v);
}

fn revenue_window(tracked: i64, backend: i64) -> RevenueWindow {
    RevenueWindow {
        format_version: FORMAT_VERSION,
        key: "C4PIXEL/USD/1697781600".into(),
        event_source_id: "C4PIXEL".into(),
        currency: "USD".into(),
        hour_start: 1_697_781_600,
        version: 1,
        orders: 2,
        purchases: 3,
        matched: 2,
        tracked_revenue: Money(tracked),
        backend_revenue: Money(backend),
        drift_ratio: (backend != 0).then(|| (tracked - backend) as f64 / backend as f64),
    }
}

#[test]
fn model_revenue_windows_match_the_schema() {
    let full = revenue_window(449_700_000, 299_800_000);
    let mut re_emitted = revenue_window(0, 149_900_000);
    re_emitted.version = 4;
    re_emitted.purchases = 0;
    re_emitted.matched = 0;
    let minimal = revenue_window(149_900_000, 0);
    assert!(minimal.drift_ratio.is_none());
    pin(
        "revenue_window",
        &to_json(&full),
        &[to_json(&full), to_json(&re_emitted)],
        &to_json(&minimal),
    );

    // drift_ratio is there exactly when backend revenue is not zero.
    let mut no_drift = full.clone();
    no_drift.drift_ratio = None;
    assert_invalid("revenue_window", &to_json(&no_drift));
    let mut drift_over_zero = minimal.clone();
    drift_over_zero.drift_ratio = Some(1.0);
    assert_invalid("revenue_window", &to_json(&drift_over_zero));
    // serde_json writes a non-finite f64 as null: the contract does not take it.
    let mut nan = full.clone();
    nan.drift_ratio = Some(f64::NAN);
    assert_invalid("revenue_window", &to_json(&nan));
    let mut off_hour = full.clone();
    off_hour.hour_start += 60;
    assert_invalid("revenue_window", &to_json(&off_hour));
}

#[test]
fn money_is_written_as_a_json_number_in_major_units() {
    assert_eq!(to_json(&Money(149_900_000)), json!(149.9));
    assert_eq!(to_json(&Money(0)), json!(0.0));
    assert_eq!(to_json(&Money(-1)), json!(-0.000001));
}

// ---------------------------------------------------------------------------------------------
// assert_jsonl_valid

#[test]
fn jsonl_helper_counts_lines_and_names_the_bad_one() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.jsonl");
    let lines: Vec<String> = discrepancies()
        .iter()
        .map(|d| serde_json::to_string(d).unwrap())
        .collect();
    std::fs::write(&good, lines.join("\n") + "\n").unwrap();
    assert_eq!(
        assert_jsonl_valid("discrepancy", &good),
        DiscrepancyKind::ALL.len()
    );

    let bad = dir.path().join("bad.jsonl");
    let mut broken = to_json(&discrepancies()[3]);
    broken.as_object_mut().unwrap().remove("key");
    let text = format!("{}\n{}\n\n", lines[0], broken);
    std::fs::write(&bad, text).unwrap();
    let panic = std::panic::catch_unwind(|| assert_jsonl_valid("discrepancy", &bad))
        .expect_err("an invalid line must panic");
    let message = panic.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(message.contains("2 of 3 lines invalid"), "{message}");
    assert!(
        message.contains("line 2: at /: \"key\" is a required property"),
        "{message}"
    );
    assert!(message.contains("line 3: not JSON"), "{message}");
}

#[test]
fn stats_from_counts_validate() {
    // The shape replay writes, built the way it will be: every kind and reason present.
    let discrepancies: BTreeMap<&str, u64> = DiscrepancyKind::ALL
        .iter()
        .map(|k| (k.as_str(), 0))
        .collect();
    let dead_letters: BTreeMap<&str, u64> =
        [DeadLetterReason::InvalidJson, DeadLetterReason::Empty]
            .iter()
            .map(|r| (r.as_str(), 1))
            .collect();
    let stats = json!({
        "conversions": 10, "merged": 4, "duplicates": 3,
        "duplicates_by_reason": {"same_source": 1, "after_merge_window": 1, "after_release": 0, "duplicate_order": 1},
        "consent_dropped": 1, "dead_letters": 2, "dead_letters_by_reason": dead_letters, "late": 0,
        "orders_applied": 5, "orders_redelivered": 1, "orders_tombstones": 1, "orders_historical": 0,
        "discrepancies": discrepancies,
        "input_records": {"browser": 12, "server": 8, "orders": 7, "total": 27},
        "sources": {"browser": 3, "server": 3, "both": 4},
        "revenue_windows": 2,
        "tracked_revenue": {"USD": 449.7}, "backend_revenue": {"USD": 299.8, "EUR": 0.0},
        "outcomes": {"browser": {"conversion": 6, "merged": 2}, "orders": {"order_applied": 5}},
        "pixels": {"C4PIXEL": {
            "events": {"browser": 12, "server": 8},
            "conversions": {"CompletePayment": {"browser": 3, "server": 3, "both": 4}},
            "duplicates": {"same_source": 1}, "consent_dropped": {"browser": 1, "server": 0},
            "discrepancies": {"value_parity": 1}, "match_keys": {"email": 7},
            "tracked_revenue": {"USD": 449.7}, "backend_revenue": {"USD": 299.8}
        }}
    });
    // And the real thing: the engine's own Stats, with a pixel tallied.
    let mut real = onecount::engine::stats::Stats::default();
    real.received("C4PIXEL", onecount::model::Source::Browser);
    real.duplicates(
        "C4PIXEL",
        onecount::model::Source::Server,
        onecount::engine::stats::DuplicateReason::SameSource,
        2,
    );
    assert_valid("stats", &serde_json::to_value(&real).unwrap());
    assert_valid("stats", &stats);
    let mut missing_kind = stats.clone();
    missing_kind["discrepancies"]
        .as_object_mut()
        .unwrap()
        .remove("value_mismatch");
    assert_invalid("stats", &missing_kind);
    let mut extra = stats.clone();
    extra["sources"]["neither"] = json!(0);
    assert_invalid("stats", &extra);
}
