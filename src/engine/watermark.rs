//! Event-time watermarks: how far each channel has got, and what the engine may release.
//!
//! Owns: the highest event time per channel (one partition of one input topic; a file is
//! partition 0 of its input), the allowed lateness, idle and finished channels, and the engine
//! watermark derived from them. Must not: read a clock. Wall-clock idleness is the runtime's
//! call (it declares a channel idle); this module only applies it.

use serde::{Deserialize, Serialize};

use crate::model::{Input, Position};

/// Where records come from, as far as the watermark is concerned: one partition of one input.
/// A lagging partition holds the watermark back even when its input's other partitions are
/// ahead, because its records are still to come.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Channel {
    pub input: Input,
    pub partition: i32,
}

impl Channel {
    pub fn new(input: Input, partition: i32) -> Channel {
        Channel { input, partition }
    }

    /// The channel a record at `position` came through.
    pub fn of(position: &Position) -> Channel {
        Channel::new(position.input, position.partition)
    }
}

/// One channel's state: what the changelog keeps so a restore rebuilds the watermark exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelMark {
    pub channel: Channel,
    /// Highest event time seen on the channel (ms); `None` for a channel the runtime registered
    /// (an assigned partition) that has had no record yet: it holds the watermark where it is
    /// until its first record or until it is declared idle.
    pub max_seen: Option<i64>,
    /// Declared idle by the runtime; cleared by the channel's next record.
    pub idle: bool,
    /// Its input has ended (end of file); never cleared.
    pub finished: bool,
}

impl ChannelMark {
    fn holds(&self) -> bool {
        !self.idle && !self.finished
    }
}

#[derive(Debug, Clone)]
pub struct Watermarks {
    lateness_ms: i64,
    /// Sorted by channel: a handful to a few hundred entries, searched by bisection.
    channels: Vec<ChannelMark>,
    /// Inputs that have ended: a channel of one that first appears afterwards is born finished.
    finished_inputs: [bool; 3],
    /// The engine watermark never moves back, even when a new channel starts behind the others.
    current: Option<i64>,
}

impl Watermarks {
    pub fn new(lateness_ms: i64) -> Watermarks {
        Watermarks {
            lateness_ms,
            channels: Vec::new(),
            finished_inputs: [false; 3],
            current: None,
        }
    }

    /// The engine watermark: the minimum over channels that are neither idle nor finished of
    /// (highest event time - allowed lateness); with every channel idle or finished, the
    /// furthest one's. Never moves back. `None` before any data.
    pub fn current(&self) -> Option<i64> {
        self.current
    }

    /// Notes a record's event time on its channel; a channel with data is no longer idle.
    pub fn observe(&mut self, channel: Channel, event_time: i64) {
        match self.channels.binary_search_by(|m| m.channel.cmp(&channel)) {
            Ok(i) => {
                let mark = &mut self.channels[i];
                mark.idle = false;
                mark.max_seen = Some(mark.max_seen.map_or(event_time, |m| m.max(event_time)));
            }
            Err(i) => self.channels.insert(
                i,
                ChannelMark {
                    channel,
                    max_seen: Some(event_time),
                    idle: false,
                    finished: self.finished_inputs[channel.input.index()],
                },
            ),
        }
        self.recompute();
    }

    /// A channel the runtime knows is coming (an assigned partition): until its first record or
    /// until it is declared idle, it holds the watermark where it is, so records of the other
    /// channels cannot overtake the ones it has yet to deliver. Registering a known channel
    /// changes nothing.
    pub fn register(&mut self, channel: Channel) {
        if let Err(i) = self.channels.binary_search_by(|m| m.channel.cmp(&channel)) {
            self.channels.insert(
                i,
                ChannelMark {
                    channel,
                    max_seen: None,
                    idle: false,
                    finished: self.finished_inputs[channel.input.index()],
                },
            );
            self.recompute();
        }
    }

    /// An idle channel stops holding the watermark back until it sees data again. Declaring a
    /// channel that was never registered and never had data idle changes nothing.
    pub fn set_idle(&mut self, channel: Channel) {
        if let Ok(i) = self.channels.binary_search_by(|m| m.channel.cmp(&channel)) {
            self.channels[i].idle = true;
            self.recompute();
        }
    }

    /// Declares every channel of `input` idle (each un-idled by its own next record).
    pub fn set_idle_input(&mut self, input: Input) {
        for mark in self
            .channels
            .iter_mut()
            .filter(|m| m.channel.input == input)
        {
            mark.idle = true;
        }
        self.recompute();
    }

    /// A finished input (end of file): none of its channels, present or future, holds the
    /// watermark back again.
    pub fn finish(&mut self, input: Input) {
        self.finished_inputs[input.index()] = true;
        for mark in self
            .channels
            .iter_mut()
            .filter(|m| m.channel.input == input)
        {
            mark.finished = true;
        }
        self.recompute();
    }

    /// Highest event time seen on any channel of `input`.
    pub fn highest_seen(&self, input: Input) -> Option<i64> {
        self.channels
            .iter()
            .filter(|m| m.channel.input == input)
            .filter_map(|m| m.max_seen)
            .max()
    }

    /// Highest event time seen on `channel`.
    pub fn channel_highest(&self, channel: Channel) -> Option<i64> {
        self.channels
            .binary_search_by_key(&channel, |m| m.channel)
            .ok()
            .and_then(|i| self.channels[i].max_seen)
    }

    /// True when some channel has data and every channel is idle or finished: nothing holds the
    /// watermark any more.
    pub fn all_idle_or_finished(&self) -> bool {
        self.channels.iter().any(|m| m.max_seen.is_some())
            && !self.channels.iter().any(ChannelMark::holds)
    }

    /// Every channel's state, sorted by channel, for a checkpoint.
    pub fn channels(&self) -> &[ChannelMark] {
        &self.channels
    }

    /// Inputs that have ended, for a checkpoint.
    pub fn finished_inputs(&self) -> Vec<Input> {
        Input::ALL
            .into_iter()
            .filter(|i| self.finished_inputs[i.index()])
            .collect()
    }

    /// Restores the channels, ended inputs and engine watermark from a checkpoint.
    pub fn restore(
        &mut self,
        channels: Vec<ChannelMark>,
        finished: &[Input],
        current: Option<i64>,
    ) {
        self.channels = channels;
        self.channels.sort_by_key(|m| m.channel);
        self.channels.dedup_by_key(|m| m.channel);
        self.finished_inputs = [false; 3];
        for input in finished {
            self.finished_inputs[input.index()] = true;
        }
        self.current = current;
        self.recompute();
    }

    fn recompute(&mut self) {
        let mut holding = self.channels.iter().filter(|m| m.holds()).peekable();
        // A registered channel without data holds the watermark where it is.
        let candidate = if holding.peek().is_some() {
            holding
                .map(|m| m.max_seen)
                .try_fold(i64::MAX, |min, t| t.map(|t| min.min(t)))
        } else {
            // With every channel idle or finished, the furthest channel sets the pace.
            self.channels.iter().filter_map(|m| m.max_seen).max()
        }
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

    fn ch(input: Input, partition: i32) -> Channel {
        Channel::new(input, partition)
    }

    #[test]
    fn a_registered_channel_holds_the_watermark_until_its_first_record_or_idle() {
        let mut w = Watermarks::new(0);
        w.register(ch(Input::Server, 3));
        w.observe(ch(Input::Browser, 0), 1000);
        assert_eq!(w.current(), None, "server 3 has delivered nothing yet");
        assert!(!w.all_idle_or_finished());
        w.observe(ch(Input::Server, 3), 400);
        assert_eq!(w.current(), Some(400));
        w.register(ch(Input::Orders, 1));
        w.observe(ch(Input::Server, 3), 900);
        assert_eq!(w.current(), Some(400), "orders 1 holds it where it was");
        w.set_idle(ch(Input::Orders, 1));
        assert_eq!(w.current(), Some(900));
        w.register(ch(Input::Server, 3));
        assert_eq!(
            w.current(),
            Some(900),
            "registering a known channel changes nothing"
        );
    }

    #[test]
    fn slowest_input_holds_the_watermark() {
        let mut w = Watermarks::new(10);
        w.observe(ch(Input::Browser, 0), 1000);
        assert_eq!(w.current(), Some(990));
        w.observe(ch(Input::Server, 0), 500);
        assert_eq!(w.current(), Some(990), "never moves back");
        w.observe(ch(Input::Browser, 0), 2000);
        assert_eq!(w.current(), Some(990), "server at 500 holds it");
        w.observe(ch(Input::Server, 0), 1500);
        assert_eq!(w.current(), Some(1490));
    }

    #[test]
    fn idle_and_finished_inputs_stop_holding_it_back() {
        let mut w = Watermarks::new(0);
        w.observe(ch(Input::Orders, 0), 10);
        w.observe(ch(Input::Browser, 0), 100);
        assert_eq!(w.current(), Some(10));
        w.set_idle_input(Input::Orders);
        assert_eq!(w.current(), Some(100));
        w.observe(ch(Input::Orders, 0), 20);
        assert_eq!(w.current(), Some(100), "monotonic");
        w.observe(ch(Input::Browser, 0), 300);
        assert_eq!(w.current(), Some(100), "orders active again at 20");
        w.finish(Input::Orders);
        assert_eq!(w.current(), Some(300));
    }

    #[test]
    fn lagging_partition_holds_the_watermark_of_its_input() {
        let mut w = Watermarks::new(10);
        w.observe(ch(Input::Browser, 0), 100);
        w.observe(ch(Input::Browser, 1), 1000);
        assert_eq!(w.current(), Some(90), "partition 0 at 100 holds browser");
        w.observe(ch(Input::Browser, 1), 5000);
        assert_eq!(w.current(), Some(90));
        assert_eq!(
            w.highest_seen(Input::Browser),
            Some(5000),
            "max over partitions"
        );
        w.observe(ch(Input::Browser, 0), 3000);
        assert_eq!(w.current(), Some(2990));
    }

    #[test]
    fn idle_channel_stops_holding_until_its_next_record() {
        let mut w = Watermarks::new(0);
        w.observe(ch(Input::Server, 0), 100);
        w.observe(ch(Input::Server, 1), 1000);
        w.observe(ch(Input::Browser, 0), 2000);
        assert_eq!(w.current(), Some(100));
        w.set_idle(ch(Input::Server, 0));
        assert_eq!(
            w.current(),
            Some(1000),
            "the other server partition holds now"
        );
        w.set_idle(ch(Input::Server, 7));
        assert_eq!(
            w.current(),
            Some(1000),
            "a channel without data changes nothing"
        );
        w.observe(ch(Input::Server, 0), 1500);
        w.observe(ch(Input::Server, 1), 3000);
        assert_eq!(
            w.current(),
            Some(1500),
            "partition 0 holds again after its record"
        );
    }

    #[test]
    fn all_idle_detection_needs_every_channel_with_data() {
        let mut w = Watermarks::new(0);
        assert!(!w.all_idle_or_finished(), "no data: nothing is idle");
        w.set_idle(ch(Input::Browser, 0));
        assert!(!w.all_idle_or_finished(), "idling a channel without data");
        w.observe(ch(Input::Browser, 0), 10);
        w.observe(ch(Input::Browser, 1), 20);
        w.observe(ch(Input::Orders, 0), 30);
        w.set_idle(ch(Input::Browser, 0));
        w.finish(Input::Orders);
        assert!(!w.all_idle_or_finished(), "browser partition 1 still holds");
        w.set_idle(ch(Input::Browser, 1));
        assert!(w.all_idle_or_finished());
        assert_eq!(w.current(), Some(30), "the furthest channel sets the pace");
        w.observe(ch(Input::Browser, 1), 25);
        assert!(!w.all_idle_or_finished(), "data un-idles its channel");
    }

    #[test]
    fn finishing_an_input_finishes_all_its_channels_and_later_ones() {
        let mut w = Watermarks::new(0);
        w.observe(ch(Input::Browser, 0), 10);
        w.observe(ch(Input::Browser, 1), 20);
        w.observe(ch(Input::Server, 0), 500);
        assert_eq!(w.current(), Some(10));
        w.finish(Input::Browser);
        assert_eq!(w.current(), Some(500));
        assert!(w
            .channels()
            .iter()
            .all(|m| m.finished == (m.channel.input == Input::Browser)));
        w.observe(ch(Input::Browser, 2), 100);
        w.observe(ch(Input::Server, 0), 900);
        assert_eq!(
            w.current(),
            Some(900),
            "a browser channel after the end holds nothing"
        );
    }

    #[test]
    fn restore_rebuilds_channels_and_flags() {
        let mut w = Watermarks::new(5);
        w.observe(ch(Input::Browser, 0), 100);
        w.observe(ch(Input::Browser, 3), 700);
        w.observe(ch(Input::Server, 1), 400);
        w.set_idle(ch(Input::Browser, 0));
        w.finish(Input::Orders);
        let mut r = Watermarks::new(5);
        r.restore(w.channels().to_vec(), &w.finished_inputs(), w.current());
        assert_eq!(r.channels(), w.channels());
        assert_eq!(r.current(), w.current());
        for wm in [&mut w, &mut r] {
            wm.observe(ch(Input::Orders, 2), 50);
            wm.observe(ch(Input::Server, 1), 800);
        }
        assert_eq!(
            r.current(),
            Some(695),
            "browser 0 stays idle, orders stays finished"
        );
        assert_eq!(r.current(), w.current());
    }
}
