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
//! The partition of a pixel is FNV-1a (64-bit) of its code modulo the partition count: part of
//! the internal log's format, it must not change between releases.
//! Must not: do I/O or depend on anything but its config and the record.

use crate::config::OrdersConfig;
use crate::model::Record;
use crate::parse::Parsed;

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
        (fnv1a(pixel.as_bytes()) % u64::from(self.partitions)) as i32
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

    fn pixel<'p>(&'p self, parsed: &'p Parsed) -> Option<&'p str> {
        match parsed {
            Parsed::Record(Record::Event(e)) => Some(&e.pixel),
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

/// FNV-1a, 64-bit: small, stable across releases and platforms, and spreads short codes well.
fn fnv1a(bytes: &[u8]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes
        .iter()
        .fold(OFFSET, |h, &b| (h ^ u64::from(b)).wrapping_mul(PRIME))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::model::Input;
    use crate::parse::testkit::{parse_with, parser};

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
    fn fnv1a_is_the_published_function() {
        // Reference values of FNV-1a 64 (a pixel's partition must never change).
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn the_events_of_a_body_go_with_their_own_pixels() {
        let r = router(16, None);
        let body = r#"{"event_source":"web","event_source_id":"PIXA","data":[
            {"event":"Purchase","event_id":"1","event_time":1700000000},
            {"event":"Purchase","event_id":"2","event_time":1700000000,"event_source_id":"PIXB"},
            {"event":"Purchase","event_time":1700000000}]}"#;
        let got = owners(&r, Input::Server, body, 5);
        let (a, b) = (r.of_pixel("PIXA"), r.of_pixel("PIXB"));
        assert_ne!(a, b, "pick pixels that differ in partition");
        assert_eq!(got.len(), 3);
        assert_eq!(&got[..2], &[a, b]);
        // The third has no event_id: a dead letter, with the record's first pixel.
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
    fn one_partition_owns_everything() {
        let r = router(1, None);
        assert_eq!(owners(&r, Input::Browser, "not json", 6), vec![0]);
    }
}
