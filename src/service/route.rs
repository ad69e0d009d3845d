//! Which state partition owns what: the state is split by pixel.
//!
//! Owns: the partition of a pixel, and the owner of each thing one input record parses into.
//! Everything that must meet shares a pixel: an action's copies (the dedup key starts with it),
//! two purchases of one order (order keys are per pixel), a purchase and its order (the order's
//! pixel comes from `orders.shops` or `orders.default_pixel`), a revenue window. A state
//! partition is the whole engine for its pixels; it sees every other record only as an
//! `Observation` (its event time), applied in the same place, so its watermark moves exactly
//! as a single engine's would (see `Engine::observe_elsewhere`).
//!
//! Ingest and the state task call the same code with the same config: ingest to know where to
//! forward a record and whom to send its observation, the state task to know which of a
//! record's events are its own (an Events API body may hold events of several pixels).
//!
//! The partition of a pixel is XXH3-64 (seed 0) of its code modulo the partition count: part of
//! the internal log's format, it must not change between releases. (FNV-1a was tried first: its
//! low bits follow the parity of the bytes, and the three generated pixels all landed in one of
//! two or four partitions.)
//! Must not: do I/O or depend on anything but its config and the record.

use xxhash_rust::xxh3::xxh3_64;

use crate::config::OrdersConfig;
use crate::engine::Observation;
use crate::model::Record;
use crate::parse::Parsed;

/// Where ingest sends one input record when the state is split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordRoute {
    /// The partitions that own some of it (ascending, each once): they get the record.
    pub owners: Vec<i32>,
    /// What the record does to event time, in order: every other partition gets this instead.
    pub observations: Vec<Observation>,
}

#[derive(Debug, Clone)]
pub struct Router {
    partitions: u32,
    default_pixel: Option<String>,
}

impl Router {
    /// `partitions`: of the internal log (at least 1).
    pub fn new(partitions: u32, orders: &OrdersConfig) -> Router {
        Router {
            partitions: partitions.max(1),
            default_pixel: orders.default_pixel.clone(),
        }
    }

    pub fn partitions(&self) -> u32 {
        self.partitions
    }

    pub fn of_pixel(&self, pixel: &str) -> i32 {
        (xxh3_64(pixel.as_bytes()) % u64::from(self.partitions)) as i32
    }

    /// The owner of each of `parsed` (what one input record at `origin` became), in order, into
    /// `owners`. An event goes with its pixel, an order change with its shop's pixel or the
    /// default pixel. What has no pixel (a dead letter, a tombstone, an order with neither)
    /// goes with the record's first pixel, or by its offset when it has none: every partition
    /// must agree, any choice that does is correct.
    pub fn owners(&self, parsed: &[Parsed], origin: i64, owners: &mut Vec<i32>) {
        owners.clear();
        if self.partitions == 1 {
            owners.resize(parsed.len(), 0);
            return;
        }
        let home = parsed
            .iter()
            .find_map(|p| self.pixel(p))
            .map_or_else(|| self.of_offset(origin), |pixel| self.of_pixel(pixel));
        owners.extend(
            parsed
                .iter()
                .map(|p| self.pixel(p).map_or(home, |pixel| self.of_pixel(pixel))),
        );
    }

    /// Where ingest sends the record `parsed` came from (see [`RecordRoute`]).
    pub fn route(&self, parsed: &[Parsed], origin: i64) -> RecordRoute {
        let mut owners = Vec::with_capacity(parsed.len());
        self.owners(parsed, origin, &mut owners);
        owners.sort_unstable();
        owners.dedup();
        RecordRoute {
            owners,
            observations: parsed.iter().filter_map(Observation::of).collect(),
        }
    }

    fn pixel<'p>(&'p self, parsed: &'p Parsed) -> Option<&'p str> {
        match parsed {
            Parsed::Record(Record::Event(e)) => Some(e.pixel()),
            Parsed::Record(Record::Order(o)) => {
                o.pixel.as_deref().or(self.default_pixel.as_deref())
            }
            Parsed::Record(Record::Tombstone(_)) | Parsed::DeadLetter(_) => None,
        }
    }

    fn of_offset(&self, origin: i64) -> i32 {
        origin.rem_euclid(i64::from(self.partitions)) as i32
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::model::Input;
    use crate::parse::testkit::{parse_with, parser};

    /// An Events API body of pixel PIXA holding an event of PIXB and one that names no event.
    const MIXED_BODY: &str = r#"{"event_source":"web","event_source_id":"PIXA","data":[
        {"event":"Purchase","event_id":"1","event_time":1700000000},
        {"event":"Purchase","event_id":"2","event_time":1700000002,"event_source_id":"PIXB"},
        {"event_id":"3","event_time":1700000000}]}"#;

    fn router(partitions: u32, default_pixel: Option<&str>) -> Router {
        let mut orders = Config::default().orders;
        orders.default_pixel = default_pixel.map(str::to_string);
        Router::new(partitions, &orders)
    }

    fn owners(r: &Router, input: Input, line: &str, origin: i64) -> Vec<i32> {
        let parsed = parse_with(&parser(), input, line.as_bytes());
        let mut owners = Vec::new();
        r.owners(&parsed, origin, &mut owners);
        owners
    }

    #[test]
    fn the_partition_of_a_pixel_never_changes() {
        // XXH3-64 reference value (the empty input, seed 0), and the generated pixels' places
        // in 2, 3 and 4 partitions, pinned: a release that moved them would find no state
        // there.
        assert_eq!(xxh3_64(b""), 0x2d06_8005_38d3_94c2);
        let pixels = crate::generate::shops().map(|(_, pixel)| pixel);
        let places: Vec<[i32; 3]> = pixels
            .map(|p| [2, 3, 4].map(|n| router(n, None).of_pixel(p)))
            .collect();
        assert_eq!(places, vec![[0, 2, 0], [0, 2, 2], [1, 0, 1]]);
    }

    #[test]
    fn the_events_of_a_body_go_with_their_own_pixels() {
        let r = router(16, None);
        let got = owners(&r, Input::Server, MIXED_BODY, 5);
        let (a, b) = (r.of_pixel("PIXA"), r.of_pixel("PIXB"));
        assert_ne!(a, b, "pick pixels that differ in partition");
        assert_eq!(got.len(), 3);
        assert_eq!(&got[..2], &[a, b]);
        // The third names no event: a dead letter, with the record's first pixel.
        assert_eq!(got[2], a);
    }

    #[test]
    fn what_has_no_pixel_goes_by_offset_and_orders_by_the_default_pixel() {
        let r = router(4, None);
        assert_eq!(owners(&r, Input::Browser, "not json", 6), vec![2]);
        let order = r#"{"order_id":"o1","total":"10.00","currency":"USD","status":"paid","created_at":"2023-10-20T06:23:28Z"}"#;
        assert_eq!(owners(&r, Input::Orders, order, 7), vec![3]);
        let r = router(4, Some("PIXA"));
        assert_eq!(
            owners(&r, Input::Orders, order, 7),
            vec![r.of_pixel("PIXA")]
        );
    }

    #[test]
    fn a_record_goes_to_its_owners_and_the_others_get_its_event_times() {
        let r = router(16, None);
        let parsed = parse_with(&parser(), Input::Server, MIXED_BODY.as_bytes());
        assert!(matches!(parsed[2], Parsed::DeadLetter(_)));
        let route = r.route(&parsed, 5);
        let mut owners = vec![r.of_pixel("PIXA"), r.of_pixel("PIXB")];
        owners.sort_unstable();
        assert_eq!(route.owners, owners);
        assert_eq!(
            route.observations,
            vec![
                Observation::Event(1_700_000_000_000),
                Observation::Event(1_700_000_002_000)
            ],
            "the dead letter moves no event time"
        );
    }

    #[test]
    fn one_partition_owns_everything() {
        let r = router(1, None);
        assert_eq!(owners(&r, Input::Browser, "not json", 6), vec![0]);
    }
}
