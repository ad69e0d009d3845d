//! Turns input bytes into typed records or dead letters.
//!
//! Owns: the accepted input shapes (browser Pixel events; Events API 2.0 bodies, single events
//! and the older pixel/track and pixel/batch shapes; order rows, plain or in a Debezium envelope),
//! time and amount parsing, and hashing of clear PII (via `pii`). Must not: apply any dedup or
//! reconciliation rule, keep state, or put an input value in an error message (it may be PII).

use crate::config::{EngineConfig, OrdersConfig};
use crate::model::{DeadLetter, Input, Record};

/// What one input record became: records (a server body may hold several events) and dead
/// letters (a body may hold bad events beside good ones).
#[derive(Debug, Clone, PartialEq)]
pub enum Parsed {
    Record(Record),
    DeadLetter(DeadLetter),
}

/// Parses input records for one configuration. Cheap to share; holds no state between records.
pub struct Parser {
    engine: EngineConfig,
    orders: OrdersConfig,
}

impl Parser {
    pub fn new(engine: &EngineConfig, orders: &OrdersConfig) -> Parser {
        Parser {
            engine: engine.clone(),
            orders: orders.clone(),
        }
    }

    /// Parses one record of `input` found at (`partition`, `offset`): a file line or a Kafka
    /// message value (`None` for a null value, i.e. a tombstone), appending what it became to
    /// `out`. Never panics, whatever the bytes.
    pub fn parse(
        &self,
        input: Input,
        partition: i32,
        offset: i64,
        bytes: Option<&[u8]>,
        out: &mut Vec<Parsed>,
    ) {
        let _ = (
            &self.engine,
            &self.orders,
            input,
            partition,
            offset,
            bytes,
            out,
        );
        todo!("parse")
    }
}
