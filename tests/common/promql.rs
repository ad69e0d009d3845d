//! PromQL as the tests read it: the rules of prometheus/rules.yml (plain YAML, no YAML crate)
//! and which metric names an expression reads. Shared by the ops artifacts test and the
//! Prometheus evaluation test.

use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Default)]
pub struct Rule {
    /// Recording rule name, or alert name.
    pub name: String,
    pub alert: bool,
    pub expr: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
}

pub fn indent(line: &str) -> usize {
    line.len() - line.trim_start().len()
}

fn unquote(v: &str) -> String {
    let v = v.trim();
    v.strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(v)
        .to_string()
}

/// The rules of a rule file: `- record:`/`- alert:` items with `expr` (inline or a `|` block),
/// and `labels`/`annotations` maps of `key: value` lines.
pub fn parse_rules(text: &str) -> Vec<Rule> {
    let lines: Vec<&str> = text.lines().collect();
    let mut rules: Vec<Rule> = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let t = line.trim_start();
        if let Some(name) = t
            .strip_prefix("- record:")
            .or_else(|| t.strip_prefix("- alert:"))
        {
            rules.push(Rule {
                name: name.trim().to_string(),
                alert: t.starts_with("- alert:"),
                ..Rule::default()
            });
            i += 1;
            continue;
        }
        let Some(rule) = rules.last_mut() else {
            i += 1;
            continue;
        };
        if let Some(expr) = t.strip_prefix("expr:") {
            let expr = expr.trim();
            if expr == "|" || expr == "|-" {
                let base = indent(line);
                let mut body = Vec::new();
                i += 1;
                while i < lines.len() && (lines[i].trim().is_empty() || indent(lines[i]) > base) {
                    body.push(lines[i].trim());
                    i += 1;
                }
                rule.expr = body.join("\n").trim().to_string();
                continue;
            }
            rule.expr = expr.to_string();
        } else if t == "labels:" || t == "annotations:" {
            let base = indent(line);
            let mut map = BTreeMap::new();
            i += 1;
            while i < lines.len() && !lines[i].trim().is_empty() && indent(lines[i]) > base {
                let (k, v) = lines[i]
                    .trim()
                    .split_once(':')
                    .unwrap_or_else(|| panic!("not a key: value line: {}", lines[i]));
                map.insert(k.trim().to_string(), unquote(v));
                i += 1;
            }
            if t == "labels:" {
                rule.labels = map;
            } else {
                rule.annotations = map;
            }
            continue;
        }
        i += 1;
    }
    for r in &rules {
        assert!(!r.expr.is_empty(), "rule {} has no expr", r.name);
    }
    rules
}

const PROMQL_KEYWORDS: [&str; 6] = ["and", "or", "unless", "offset", "bool", "atan2"];
/// Keywords followed by a parenthesised list of label names, not of expressions.
const LABEL_LIST_KEYWORDS: [&str; 6] = [
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// The metric names a PromQL expression selects (Grafana variables and label names excluded).
pub fn metric_names(expr: &str) -> BTreeSet<String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    let mut skip_label_list = false;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '"' | '\'' | '`' => {
                // string literal
                i += 1;
                while i < chars.len() && chars[i] != c {
                    if chars[i] == '\\' {
                        i += 1;
                    }
                    i += 1;
                }
                i += 1;
            }
            '{' | '[' => {
                // label matchers or a range/subquery duration: no metric names inside
                let close = if c == '{' { '}' } else { ']' };
                while i < chars.len() && chars[i] != close {
                    if chars[i] == '"' {
                        i += 1;
                        while i < chars.len() && chars[i] != '"' {
                            if chars[i] == '\\' {
                                i += 1;
                            }
                            i += 1;
                        }
                    }
                    i += 1;
                }
                i += 1;
            }
            '(' if skip_label_list => {
                while i < chars.len() && chars[i] != ')' {
                    i += 1;
                }
                i += 1;
                skip_label_list = false;
            }
            '$' => {
                // a Grafana variable such as $pixel or $__rate_interval
                i += 1;
                while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
            }
            c if c.is_ascii_digit()
                || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit)) =>
            {
                // a number or a duration: 0.7, 1e6, 10m, 1d
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                    i += 1;
                }
            }
            c if c.is_ascii_alphabetic() || c == '_' || c == ':' => {
                let start = i;
                while i < chars.len()
                    && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
                {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                let mut j = i;
                while j < chars.len() && chars[j].is_whitespace() {
                    j += 1;
                }
                // a function call, or an aggregation with its grouping first: sum by (le) (...)
                let next: String = chars[j..]
                    .iter()
                    .take_while(|c| c.is_ascii_alphanumeric() || **c == '_')
                    .collect();
                let called = chars.get(j) == Some(&'(') || next == "by" || next == "without";
                if LABEL_LIST_KEYWORDS.contains(&word.as_str()) {
                    skip_label_list = true;
                } else if !called && !PROMQL_KEYWORDS.contains(&word.as_str()) {
                    names.insert(word);
                }
            }
            _ => i += 1,
        }
    }
    names
}
