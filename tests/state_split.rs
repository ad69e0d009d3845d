//! The state split by pixel is exact: several engines, each processing the records of its own
//! pixels and observing only the event times of the others (as the service's state partitions
//! do, `service::route`), give the outputs and the accounting of one engine; and after every
//! record, each one's watermark is the single engine's.

use std::path::Path;

use serde_json::Value;

use onecount::config::Config;
use onecount::engine::watermark::Channel;
use onecount::engine::{Engine, Observation, Outputs};
use onecount::generate::{generate_to_dir, orders_toml, GenerateOptions, Truth};
use onecount::model::Input;
use onecount::parse::{Parsed, Parser};
use onecount::report::differences;
use onecount::service::route::Router;

/// Generated traffic in which every order names its shop, and a config that maps the shops.
fn traffic(actions: u64, seed: u64, dir: &Path) -> (Truth, Config, [Vec<Vec<u8>>; 3]) {
    let truth = generate_to_dir(
        &GenerateOptions {
            actions,
            seed,
            every_order_names_its_shop: true,
            ..GenerateOptions::default()
        },
        dir,
    )
    .unwrap();
    let config = Config::parse(&orders_toml()).unwrap();
    let read = |name: &str| -> Vec<Vec<u8>> {
        let text = std::fs::read(dir.join(name)).unwrap();
        // Every line is a record, an empty one too (a dead letter); the file ends with '\n'.
        let mut lines: Vec<Vec<u8>> = text.split(|&b| b == b'\n').map(<[u8]>::to_vec).collect();
        assert_eq!(lines.pop(), Some(Vec::new()));
        lines
    };
    (
        truth,
        config,
        [
            read("browser.jsonl"),
            read("server.jsonl"),
            read("orders.jsonl"),
        ],
    )
}

/// Every output as a JSON line, sorted: the split writes them from several engines, in an
/// order of its own.
#[derive(Default)]
struct Written(Vec<String>);

impl Written {
    fn take(&mut self, out: &mut Outputs) {
        let lines = out
            .conversions
            .iter()
            .map(|c| serde_json::to_string(c).unwrap())
            .chain(
                out.discrepancies
                    .iter()
                    .map(|d| serde_json::to_string(d).unwrap()),
            )
            .chain(
                out.dead_letters
                    .iter()
                    .map(|d| serde_json::to_string(d).unwrap()),
            )
            .chain(
                out.revenue_windows
                    .iter()
                    .map(|w| serde_json::to_string(w).unwrap()),
            );
        self.0.extend(lines);
        out.clear();
    }

    fn sorted(mut self) -> Vec<String> {
        self.0.sort();
        self.0
    }
}

struct Run {
    single: Engine,
    split: Vec<Engine>,
    router: Router,
    single_out: Outputs,
    split_out: Outputs,
    written_single: Written,
    written_split: Written,
    records: u64,
}

impl Run {
    fn new(config: &Config, partitions: u32) -> Run {
        Run {
            single: Engine::new(&config.engine, &config.orders),
            split: (0..partitions)
                .map(|_| Engine::new(&config.engine, &config.orders))
                .collect(),
            router: Router::new(partitions, &config.orders),
            single_out: Outputs::default(),
            split_out: Outputs::default(),
            written_single: Written::default(),
            written_split: Written::default(),
            records: 0,
        }
    }

    /// One input record, everywhere: to the single engine whole; to each split engine, the
    /// items it owns and the observations of the others, in the record's order.
    fn record(&mut self, input: Input, origin: i64, parsed: Vec<Parsed>) {
        let mut owners = Vec::new();
        self.router.owners(&parsed, origin, &mut owners);
        for (p, owner) in parsed.into_iter().zip(owners) {
            let observation = Observation::of(&p);
            for (q, engine) in self.split.iter_mut().enumerate() {
                if q as i32 == owner {
                    engine.process(p.clone(), &mut self.split_out);
                } else if let Some(o) = observation {
                    engine.observe_elsewhere(Channel::new(input, 0), o, &mut self.split_out);
                }
            }
            self.single.process(p, &mut self.single_out);
        }
        self.records += 1;
        for (q, engine) in self.split.iter().enumerate() {
            assert_eq!(
                engine.watermark(),
                self.single.watermark(),
                "partition {q}'s watermark after record {} ({input:?} offset {origin})",
                self.records
            );
        }
        self.written_single.take(&mut self.single_out);
        self.written_split.take(&mut self.split_out);
    }

    fn finish_input(&mut self, input: Input) {
        self.single.finish_input(input, &mut self.single_out);
        for engine in &mut self.split {
            engine.finish_input(input, &mut self.split_out);
        }
    }

    fn flush(&mut self) {
        self.single.flush(&mut self.single_out);
        for engine in &mut self.split {
            engine.flush(&mut self.split_out);
        }
        self.written_single.take(&mut self.single_out);
        self.written_split.take(&mut self.split_out);
    }
}

/// Feeds the records in `replay`'s order (the input whose highest event time is lowest goes
/// next) to one engine and to `partitions` split ones.
fn run_split(config: &Config, inputs: &[Vec<Vec<u8>>; 3], partitions: u32) -> Run {
    let parser = Parser::new(&config.engine, &config.orders);
    let mut run = Run::new(config, partitions);
    let mut next_line = [0usize; 3];
    let mut finished = [false; 3];
    let mut parsed = Vec::new();
    loop {
        let next = Input::ALL
            .iter()
            .copied()
            .filter(|i| !finished[i.index()])
            .min_by_key(|i| (run.single.highest_seen(*i).unwrap_or(i64::MIN), i.index()));
        let Some(input) = next else { break };
        let i = input.index();
        match inputs[i].get(next_line[i]) {
            None => {
                finished[i] = true;
                run.finish_input(input);
            }
            Some(line) => {
                let origin = next_line[i] as i64;
                parser.parse(input, 0, origin, Some(line), &mut parsed);
                run.record(input, origin, std::mem::take(&mut parsed));
                next_line[i] += 1;
            }
        }
    }
    run.flush();
    run
}

/// The split's accounting, added up: numbers add, maps merge.
fn add(total: &mut Value, part: &Value) {
    match (total, part) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                match t.get_mut(k) {
                    Some(tv) => add(tv, v),
                    None => {
                        t.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (Value::Number(t), Value::Number(p)) => {
            *t = match (t.as_u64(), p.as_u64()) {
                (Some(a), Some(b)) => (a + b).into(),
                _ => {
                    serde_json::Number::from_f64(t.as_f64().unwrap() + p.as_f64().unwrap()).unwrap()
                }
            }
        }
        (t, p) => panic!("cannot add {p} to {t}"),
    }
}

/// Where the split's accounting differs from one engine's, but for the last bits of revenue
/// sums added up in another order (money is exact in the engine; its accounting serializes it
/// as a float).
fn accounting_differences(path: &str, split: &Value, single: &Value, found: &mut Vec<String>) {
    match (split, single) {
        (Value::Object(a), Value::Object(b)) => {
            let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for k in keys {
                let zero = Value::from(0u64);
                let x = a.get(k).unwrap_or(&zero);
                let y = b.get(k).unwrap_or(&zero);
                accounting_differences(&format!("{path}.{k}"), x, y, found);
            }
        }
        (Value::Number(x), Value::Number(y)) if x.is_u64() && y.is_u64() => {
            if x != y {
                found.push(format!("{path}: split {x}, one engine {y}"));
            }
        }
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            if (x - y).abs() > 1e-6 * y.abs().max(1.0) {
                found.push(format!("{path}: split {x}, one engine {y}"));
            }
        }
        (x, y) => {
            if x != y {
                found.push(format!("{path}: split {x}, one engine {y}"));
            }
        }
    }
}

fn check(actions: u64, seed: u64, partitions: u32, owning: usize) {
    let dir = tempfile::tempdir().unwrap();
    let (truth, config, inputs) = traffic(actions, seed, dir.path());
    let run = run_split(&config, &inputs, partitions);

    let mut split_stats = Value::Object(Default::default());
    let mut with_pixels = 0;
    for engine in &run.split {
        with_pixels += usize::from(!engine.stats().pixels.is_empty());
        add(
            &mut split_stats,
            &serde_json::to_value(engine.stats()).unwrap(),
        );
    }
    assert_eq!(with_pixels, owning, "partitions that own a pixel's records");
    let single_stats = serde_json::to_value(run.single.stats()).unwrap();
    let mut found = Vec::new();
    accounting_differences("stats", &split_stats, &single_stats, &mut found);
    assert_eq!(found, Vec::<String>::new());
    assert_eq!(
        differences(&truth, run.single.stats()),
        Vec::<String>::new(),
        "one engine, with the shops mapped, counts the generator's truth"
    );

    let (single, split) = (run.written_single.sorted(), run.written_split.sorted());
    assert!(single.len() as u64 > actions / 2, "a real run");
    if single != split {
        let missing: Vec<_> = single
            .iter()
            .filter(|l| !split.contains(l))
            .take(3)
            .collect();
        let extra: Vec<_> = split
            .iter()
            .filter(|l| !single.contains(l))
            .take(3)
            .collect();
        panic!(
            "{} outputs from one engine, {} from the split\nonly from one engine: {missing:#?}\n\
             only from the split: {extra:#?}",
            single.len(),
            split.len()
        );
    }
}

#[test]
fn three_partitions_give_one_engines_outputs() {
    // Two of the three generated pixels share a partition here; one partition owns none.
    check(20_000, 11, 3, 2);
}

#[test]
fn four_partitions_give_one_engines_outputs_on_other_traffic() {
    // Each pixel has a partition of its own.
    check(10_000, 12, 4, 3);
}
