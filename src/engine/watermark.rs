//! Event-time watermarks: how far each input has got, and what the engine may release.
//!
//! Owns: the per-input highest event time, the allowed lateness, idle and finished inputs, and
//! the engine watermark derived from them. Must not: read a clock. Wall-clock idleness is the
//! runtime's call (it declares an input idle); this module only applies it.

use crate::model::Input;

#[derive(Debug, Clone)]
pub struct Watermarks {
    lateness_ms: i64,
    max_seen: [Option<i64>; 3],
    idle: [bool; 3],
    finished: [bool; 3],
    /// The engine watermark never moves back, even when a new input starts behind the others.
    current: Option<i64>,
}

impl Watermarks {
    pub fn new(lateness_ms: i64) -> Watermarks {
        Watermarks {
            lateness_ms,
            max_seen: [None; 3],
            idle: [false; 3],
            finished: [false; 3],
            current: None,
        }
    }

    /// The engine watermark: the minimum over inputs that have data and are neither idle nor
    /// finished of (highest event time - allowed lateness). `None` before any data.
    pub fn current(&self) -> Option<i64> {
        self.current
    }

    /// Notes a record's event time on its input; an input with data is no longer idle.
    pub fn observe(&mut self, input: Input, event_time: i64) {
        let i = input.index();
        self.idle[i] = false;
        self.max_seen[i] = Some(self.max_seen[i].map_or(event_time, |m| m.max(event_time)));
        self.recompute();
    }

    /// An idle input stops holding the watermark back until it sees data again.
    pub fn set_idle(&mut self, input: Input) {
        self.idle[input.index()] = true;
        self.recompute();
    }

    /// A finished input (end of file) never holds the watermark back again.
    pub fn finish(&mut self, input: Input) {
        self.finished[input.index()] = true;
        self.recompute();
    }

    pub fn highest_seen(&self, input: Input) -> Option<i64> {
        self.max_seen[input.index()]
    }

    /// Restores the per-input positions from a checkpoint.
    pub fn restore(&mut self, max_seen: [Option<i64>; 3], current: Option<i64>) {
        self.max_seen = max_seen;
        self.current = current;
        self.recompute();
    }

    pub fn max_seen(&self) -> [Option<i64>; 3] {
        self.max_seen
    }

    fn recompute(&mut self) {
        let holding = Input::ALL.iter().filter_map(|input| {
            let i = input.index();
            if self.idle[i] || self.finished[i] {
                None
            } else {
                self.max_seen[i]
            }
        });
        // With every input idle or finished, the furthest input sets the pace.
        let candidate = holding
            .min()
            .or_else(|| self.max_seen.iter().flatten().copied().max())
            .map(|t| t - self.lateness_ms);
        self.current = match (self.current, candidate) {
            (Some(c), Some(n)) => Some(c.max(n)),
            (c, n) => c.or(n),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slowest_input_holds_the_watermark() {
        let mut w = Watermarks::new(10);
        w.observe(Input::Browser, 1000);
        assert_eq!(w.current(), Some(990));
        w.observe(Input::Server, 500);
        assert_eq!(w.current(), Some(990), "never moves back");
        w.observe(Input::Browser, 2000);
        assert_eq!(w.current(), Some(990), "server at 500 holds it");
        w.observe(Input::Server, 1500);
        assert_eq!(w.current(), Some(1490));
    }

    #[test]
    fn idle_and_finished_inputs_stop_holding_it_back() {
        let mut w = Watermarks::new(0);
        w.observe(Input::Orders, 10);
        w.observe(Input::Browser, 100);
        assert_eq!(w.current(), Some(10));
        w.set_idle(Input::Orders);
        assert_eq!(w.current(), Some(100));
        w.observe(Input::Orders, 20);
        assert_eq!(w.current(), Some(100), "monotonic");
        w.observe(Input::Browser, 300);
        assert_eq!(w.current(), Some(100), "orders active again at 20");
        w.finish(Input::Orders);
        assert_eq!(w.current(), Some(300));
    }
}
