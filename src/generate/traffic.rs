//! Who and what the generated traffic is about: pixels and their shops, currencies, a product
//! catalog, users, and shopping sessions that walk the funnel in increasing event time.
//!
//! Owns: the realistic raw material (pixel codes, prices, match keys, user agents) and the
//! session clock that hands out actions (one funnel step each) in increasing event time with
//! bounded memory. Must not: decide scenarios or outcomes (`scenario`), or render records
//! (`wire`).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::rc::Rc;

use rand::Rng;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha8Rng;
use sha2::{Digest, Sha256};

use crate::model::Money;

/// How a pixel's backend talks to the Events API (its server copies' shape).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ServerShape {
    /// Events API 2.0 body batching 1-5 events in `data[]`.
    Api2Body,
    /// One 2.0 event carrying its own `event_source_id`.
    Api2Single,
    /// The older `/pixel/track/` body (TikTok's official SDK).
    LegacyTrack,
    /// The older `/pixel/batch/` body with events in `batch[]`.
    LegacyBatch,
}

impl ServerShape {
    /// The shape a copy takes when it is sent on its own (a retry, a late copy).
    pub(crate) fn single(self) -> ServerShape {
        match self {
            ServerShape::Api2Body | ServerShape::Api2Single => ServerShape::Api2Single,
            ServerShape::LegacyTrack | ServerShape::LegacyBatch => ServerShape::LegacyTrack,
        }
    }

    pub(crate) fn is_batch(self) -> bool {
        matches!(self, ServerShape::Api2Body | ServerShape::LegacyBatch)
    }
}

/// A pixel (one brand's shop) and how its integrations behave.
pub(crate) struct PixelSpec {
    pub code: &'static str,
    pub shop: &'static str,
    pub host: &'static str,
    /// Share of sessions, in parts.
    pub weight: u32,
    /// Session currencies (index into [`CURRENCIES`]) with weights.
    pub currencies: &'static [(usize, u32)],
    /// Server copy shapes with weights.
    pub server_shapes: &'static [(ServerShape, u32)],
}

pub(crate) const PIXELS: [PixelSpec; 3] = [
    PixelSpec {
        code: "C5RTQ8JMFA9B1PRH0G2K",
        shop: "us-store",
        host: "shop.example.com",
        weight: 50,
        currencies: &[(USD, 100)],
        server_shapes: &[(ServerShape::Api2Body, 80), (ServerShape::Api2Single, 20)],
    },
    PixelSpec {
        code: "CK7D2H3N9S1L0QWE4RTY",
        shop: "eu-store",
        host: "boutique.example.eu",
        weight: 30,
        currencies: &[(EUR, 80), (GBP, 20)],
        server_shapes: &[
            (ServerShape::LegacyTrack, 60),
            (ServerShape::LegacyBatch, 40),
        ],
    },
    PixelSpec {
        code: "D0J5UV3C77U1LKD2B9GT",
        shop: "jp-store",
        host: "store.example.jp",
        weight: 20,
        currencies: &[(JPY, 60), (GBP, 40)],
        server_shapes: &[(ServerShape::Api2Single, 60), (ServerShape::Api2Body, 40)],
    },
];

pub(crate) struct CurrencySpec {
    pub code: &'static str,
    /// Minor-unit digits (2 for USD, 0 for JPY).
    pub decimals: u32,
    /// Units of this currency per 1000 USD.
    pub per_1000_usd: i64,
}

pub(crate) const USD: usize = 0;
pub(crate) const EUR: usize = 1;
pub(crate) const GBP: usize = 2;
pub(crate) const JPY: usize = 3;

pub(crate) const CURRENCIES: [CurrencySpec; 4] = [
    CurrencySpec {
        code: "USD",
        decimals: 2,
        per_1000_usd: 1000,
    },
    CurrencySpec {
        code: "EUR",
        decimals: 2,
        per_1000_usd: 920,
    },
    CurrencySpec {
        code: "GBP",
        decimals: 2,
        per_1000_usd: 790,
    },
    CurrencySpec {
        code: "JPY",
        decimals: 0,
        per_1000_usd: 150_000,
    },
];

/// Codes a misconfigured tag sends: none is an ISO 4217 code, whatever the case.
pub(crate) const INVALID_CURRENCIES: [&str; 3] = ["XYZ", "EURO", "US$"];

/// True for the ISO 4217 codes the generator uses (after trimming and upper-casing).
pub(crate) fn is_known_iso(code: &str) -> bool {
    let code = code.trim().to_ascii_uppercase();
    CURRENCIES.iter().any(|c| c.code == code)
}

/// One minor unit of the currency, in micro-units.
pub(crate) fn minor_unit(currency: usize) -> i64 {
    Money::MICROS_PER_UNIT / 10i64.pow(CURRENCIES[currency].decimals)
}

/// A USD price in cents, in `currency`, rounded to its minor unit (to 10 yen for JPY).
pub(crate) fn price_in(usd_cents: i64, currency: usize) -> Money {
    let spec = &CURRENCIES[currency];
    // usd_cents * rate / 1000 gives cents of the target currency at 2 decimals.
    let cents = (usd_cents * spec.per_1000_usd + 500) / 1000;
    let minor = if spec.decimals == 0 {
        ((cents + 500) / 1000) * 10
    } else {
        cents
    };
    Money(minor * minor_unit(currency))
}

/// `amount` converted from one currency to another, rounded to the target's minor unit.
pub(crate) fn convert(amount: Money, from: usize, to: usize) -> Money {
    let f = &CURRENCIES[from];
    let t = &CURRENCIES[to];
    let micros = (amount.0 as i128 * t.per_1000_usd as i128 / f.per_1000_usd as i128) as i64;
    let unit = minor_unit(to);
    Money(((micros + unit / 2) / unit) * unit)
}

pub(crate) struct Product {
    pub id: &'static str,
    pub name: &'static str,
    pub category: &'static str,
    pub brand: &'static str,
    pub usd_cents: i64,
}

const fn p(
    id: &'static str,
    name: &'static str,
    category: &'static str,
    brand: &'static str,
    usd_cents: i64,
) -> Product {
    Product {
        id,
        name,
        category,
        brand,
        usd_cents,
    }
}

pub(crate) const CATALOG: [Product; 24] = [
    p("SKU-1001", "Everyday Tee", "apparel", "Northwind", 1990),
    p(
        "SKU-1002",
        "Heavyweight Hoodie",
        "apparel",
        "Northwind",
        5490,
    ),
    p("SKU-1003", "Ärmel-Shirt Classic", "apparel", "Kontor", 2990),
    p("SKU-1004", "Trail Runner 2", "shoes", "Stride", 11900),
    p("SKU-1005", "Canvas Sneaker", "shoes", "Stride", 6450),
    p("SKU-1006", "Café Crème Mug ☕", "home", "Maison Lune", 1450),
    p(
        "SKU-1007",
        "抹茶 Matcha Starter Set",
        "food",
        "Kyoto Leaf",
        3800,
    ),
    p("SKU-1008", "Jalapeño Hot Sauce", "food", "Fuego", 899),
    p(
        "SKU-1009",
        "Linen Duvet Cover",
        "home",
        "Maison Lune",
        12900,
    ),
    p(
        "SKU-1010",
        "Wireless Earbuds Pro",
        "electronics",
        "Sonique",
        14999,
    ),
    p(
        "SKU-1011",
        "USB-C Charger 65W",
        "electronics",
        "Sonique",
        3999,
    ),
    p(
        "SKU-1012",
        "Phone Case \"Clear\"",
        "electronics",
        "Sonique",
        1999,
    ),
    p("SKU-1013", "Vitamin C Serum", "beauty", "Glow & Co", 2850),
    p(
        "SKU-1014",
        "Matte Lipstick — Rosé",
        "beauty",
        "Glow & Co",
        1800,
    ),
    p("SKU-1015", "Yoga Mat 6mm", "sports", "Asana", 4200),
    p("SKU-1016", "Insulated Bottle 1L", "sports", "Asana", 3150),
    p(
        "SKU-1017",
        "Kids' Rain Jacket",
        "apparel",
        "Northwind",
        4790,
    ),
    p("SKU-1018", "Ceramic Pour-Over", "home", "Maison Lune", 3300),
    p(
        "SKU-1019",
        "Smart Plug (2-pack)",
        "electronics",
        "Sonique",
        2499,
    ),
    p("SKU-1020", "Dog Chew Toy 🦴", "pets", "Pawsome", 1299),
    p(
        "SKU-1021",
        "Scented Candle Nº5",
        "home",
        "Maison Lune",
        2600,
    ),
    p("SKU-1022", "Running Socks 3-pack", "sports", "Stride", 1500),
    p("SKU-1023", "Leather Wallet", "accessories", "Kontor", 5900),
    p(
        "SKU-1024",
        "Sunglasses Aviator",
        "accessories",
        "Kontor",
        8900,
    ),
];

const USER_AGENTS: [&str; 6] = [
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.6478.122 Mobile Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Safari/605.1.15",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 musical_ly_34.1.0 JsSdk/2.0 NetType/WIFI Channel/App Store ByteLocale/en Region/US",
    "Mozilla/5.0 (X11; Linux x86_64; rv:127.0) Gecko/20100101 Firefox/127.0",
];

const FIRST_NAMES: [&str; 10] = [
    "jane", "omar", "li", "sofia", "noah", "amara", "lukas", "yuki", "mateo", "chloe",
];
const LAST_NAMES: [&str; 8] = [
    "doe", "haddad", "wang", "rossi", "smith", "okafor", "müller", "tanaka",
];
const MAIL_HOSTS: [&str; 5] = [
    "example.com",
    "mail.example.org",
    "example.net",
    "inbox.example.eu",
    "example.jp",
];
const REFERRERS: [&str; 4] = [
    "https://www.tiktok.com/",
    "https://www.google.com/",
    "https://www.instagram.com/",
    "",
];

/// A user's match keys, normalised, with their SHA-256 forms precomputed.
pub(crate) struct UserProfile {
    pub logged_in: bool,
    /// Trimmed, lower-cased email.
    pub email: String,
    pub email_sha: String,
    /// E.164 phone (`+` and digits), and how the user typed it.
    pub phone_e164: String,
    pub phone_typed: String,
    pub phone_sha: String,
    pub has_phone: bool,
    pub external_id: String,
    pub external_id_sha: String,
    pub ttclid: Option<String>,
    pub ttp: Option<String>,
    pub ip: String,
    pub user_agent: &'static str,
}

/// A funnel step: the four funnel events onecount sees most.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    ViewContent,
    AddToCart,
    InitiateCheckout,
    CompletePayment,
}

impl Step {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Step::ViewContent => "ViewContent",
            Step::AddToCart => "AddToCart",
            Step::InitiateCheckout => "InitiateCheckout",
            Step::CompletePayment => "CompletePayment",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }

    pub(crate) fn is_purchase(self) -> bool {
        self == Step::CompletePayment
    }
}

/// One product line of a cart.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Line {
    pub product: usize,
    pub quantity: i64,
}

/// A shopping session: one user on one pixel walking the funnel.
pub(crate) struct Session {
    pub pixel: usize,
    pub currency: usize,
    pub user: Rc<UserProfile>,
    pub landing: String,
    pub referrer: &'static str,
    pub viewed: Vec<usize>,
    /// ViewContent steps planned so far (the first shows the landing product).
    pub views_done: usize,
    pub cart: Vec<Line>,
    steps: Vec<(i64, Step)>,
    next: usize,
}

impl Session {
    /// Value of the cart in the session currency.
    pub(crate) fn cart_value(&self) -> Money {
        Money(
            self.cart
                .iter()
                .map(|l| price_in(CATALOG[l.product].usd_cents, self.currency).0 * l.quantity)
                .sum(),
        )
    }
}

/// How far a session gets: 1-3 product views, then cart, checkout, purchase, each reached by a
/// fraction of the sessions that reached the step before.
#[derive(Debug, Clone, Copy)]
struct Funnel {
    views: u32,
    cart: bool,
    checkout: bool,
    purchase: bool,
}

impl Funnel {
    fn draw(rng: &mut ChaCha8Rng) -> Funnel {
        let views = 1 + u32::from(rng.gen_bool(0.35)) + u32::from(rng.gen_bool(0.15));
        let cart = rng.gen_bool(0.42);
        let checkout = cart && rng.gen_bool(0.65);
        let purchase = checkout && rng.gen_bool(0.72);
        Funnel {
            views,
            cart,
            checkout,
            purchase,
        }
    }

    fn len(self) -> u64 {
        u64::from(self.views)
            + u64::from(self.cart)
            + u64::from(self.checkout)
            + u64::from(self.purchase)
    }

    fn steps(self) -> Vec<Step> {
        let mut steps = vec![Step::ViewContent; self.views as usize];
        if self.cart {
            steps.push(Step::AddToCart);
        }
        if self.checkout {
            steps.push(Step::InitiateCheckout);
        }
        if self.purchase {
            steps.push(Step::CompletePayment);
        }
        steps
    }
}

/// Hands out actions (session, step, event time) in increasing event time. Sessions start
/// stratified over the span, so traffic is evenly dense; at most the sessions in flight (a few
/// minutes' worth) are held.
pub(crate) struct SessionClock {
    funnel_rng: ChaCha8Rng,
    sessions_total: u64,
    actions_left: u64,
    next_index: u64,
    next_start: i64,
    start_ms: i64,
    span_ms: i64,
    /// (next step time, slot): sessions in flight.
    heap: BinaryHeap<Reverse<(i64, usize)>>,
    slots: Vec<Option<Session>>,
    free: Vec<usize>,
    users: u64,
}

impl SessionClock {
    /// Plans `actions` funnel steps over `span_ms` from `start_ms`. The session count comes
    /// from a first pass over the funnel draws, so the second pass can spread them evenly.
    pub(crate) fn new(seed: u64, actions: u64, start_ms: i64, span_ms: i64) -> SessionClock {
        let funnel_seed = seed ^ 0x6f6e_6563_6f75_6e74;
        let mut counter = ChaCha8Rng::seed_from_u64(funnel_seed);
        let mut sessions_total = 0u64;
        let mut planned = 0u64;
        while planned < actions {
            planned += Funnel::draw(&mut counter).len();
            sessions_total += 1;
        }
        SessionClock {
            funnel_rng: ChaCha8Rng::seed_from_u64(funnel_seed),
            sessions_total,
            actions_left: actions,
            next_index: 0,
            next_start: start_ms,
            start_ms,
            span_ms: span_ms.max(1),
            heap: BinaryHeap::new(),
            slots: Vec::new(),
            free: Vec::new(),
            users: 0,
        }
    }

    /// The next action: its session slot, step and event time (Unix ms), or `None` when all
    /// actions are out. Draws session details from `rng`.
    pub(crate) fn next_action(&mut self, rng: &mut ChaCha8Rng) -> Option<(usize, Step, i64)> {
        loop {
            let session_due = self.next_index < self.sessions_total;
            let in_flight = self.heap.peek().map(|Reverse((t, _))| *t);
            match in_flight {
                Some(t) if !session_due || t <= self.next_start => {
                    let Reverse((time, slot)) = self.heap.pop().expect("peeked");
                    let session = self.slots[slot].as_mut().expect("live slot");
                    let step = session.steps[session.next].1;
                    session.next += 1;
                    if session.next < session.steps.len() {
                        self.heap
                            .push(Reverse((session.steps[session.next].0, slot)));
                    }
                    return Some((slot, step, time));
                }
                _ if session_due => self.open_session(rng),
                _ => return None,
            }
        }
    }

    /// Frees a session's slot once its last step has been planned.
    pub(crate) fn finish_if_done(&mut self, slot: usize) {
        let done = self.slots[slot]
            .as_ref()
            .is_some_and(|s| s.next >= s.steps.len());
        if done {
            self.slots[slot] = None;
            self.free.push(slot);
        }
    }

    pub(crate) fn session(&mut self, slot: usize) -> &mut Session {
        self.slots[slot].as_mut().expect("live slot")
    }

    fn open_session(&mut self, rng: &mut ChaCha8Rng) {
        let start = self.next_start;
        self.next_index += 1;
        if self.next_index < self.sessions_total {
            let u: f64 = rng.gen();
            let at =
                (self.next_index as f64 + u) * self.span_ms as f64 / self.sessions_total as f64;
            self.next_start = (self.start_ms + at as i64).max(start);
        }
        let mut steps = Funnel::draw(&mut self.funnel_rng).steps();
        steps.truncate(self.actions_left.min(steps.len() as u64) as usize);
        self.actions_left -= steps.len() as u64;
        if steps.is_empty() {
            return;
        }
        let mut t = start;
        let mut timed = Vec::with_capacity(steps.len());
        for (i, step) in steps.into_iter().enumerate() {
            if i > 0 {
                t += match step {
                    Step::CompletePayment => rng.gen_range(30_000..300_000),
                    _ => rng.gen_range(15_000..180_000),
                };
            }
            timed.push((t, step));
        }
        let session = self.new_session(rng, timed);
        let first = session.steps[0].0;
        let slot = match self.free.pop() {
            Some(slot) => {
                self.slots[slot] = Some(session);
                slot
            }
            None => {
                self.slots.push(Some(session));
                self.slots.len() - 1
            }
        };
        self.heap.push(Reverse((first, slot)));
    }

    fn new_session(&mut self, rng: &mut ChaCha8Rng, steps: Vec<(i64, Step)>) -> Session {
        let pixel = pick(rng, &PIXELS.map(|p| p.weight));
        let spec = &PIXELS[pixel];
        let currency = spec.currencies[pick(rng, &weights(spec.currencies))].0;
        self.users += 1;
        let user = Rc::new(new_user(rng, self.users));
        let first_product = rng.gen_range(0..CATALOG.len());
        let landing = format!(
            "https://{}/products/{}{}",
            spec.host,
            CATALOG[first_product].id.to_ascii_lowercase(),
            match &user.ttclid {
                Some(clid) => format!("?ttclid={clid}"),
                None => String::new(),
            }
        );
        Session {
            pixel,
            currency,
            user,
            landing,
            referrer: REFERRERS[rng.gen_range(0..REFERRERS.len())],
            viewed: vec![first_product],
            views_done: 0,
            cart: Vec::new(),
            steps,
            next: 0,
        }
    }
}

fn weights<T>(items: &[(T, u32)]) -> Vec<u32> {
    items.iter().map(|(_, w)| *w).collect()
}

/// Index drawn with the given weights.
pub(crate) fn pick(rng: &mut ChaCha8Rng, weights: &[u32]) -> usize {
    let total: u32 = weights.iter().sum();
    let mut x = rng.gen_range(0..total);
    for (i, w) in weights.iter().enumerate() {
        if x < *w {
            return i;
        }
        x -= w;
    }
    weights.len() - 1
}

pub(crate) fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

pub(crate) fn random_token(rng: &mut ChaCha8Rng, len: usize) -> String {
    (0..len)
        .map(|_| ALNUM[rng.gen_range(0..ALNUM.len())] as char)
        .collect()
}

fn new_user(rng: &mut ChaCha8Rng, n: u64) -> UserProfile {
    let first = FIRST_NAMES[rng.gen_range(0..FIRST_NAMES.len())];
    let last = LAST_NAMES[rng.gen_range(0..LAST_NAMES.len())];
    let host = MAIL_HOSTS[rng.gen_range(0..MAIL_HOSTS.len())];
    let email = format!("{first}.{last}{n}@{host}");
    let (e164, typed) = match rng.gen_range(0..3) {
        0 => {
            let n = rng.gen_range(2_000_000..9_999_999u64);
            (
                format!("+1415{n}"),
                format!("+1 (415) {}-{:04}", n / 10_000, n % 10_000),
            )
        }
        1 => {
            let n = rng.gen_range(100_000_000..999_999_999u64);
            (
                format!("+447{n}"),
                format!("+44 7{} {:06}", n / 1_000_000, n % 1_000_000),
            )
        }
        _ => {
            let n = rng.gen_range(10_000_000..99_999_999u64);
            (
                format!("+8190{n}"),
                format!("+81-90-{:04}-{:04}", n / 10_000, n % 10_000),
            )
        }
    };
    let external_id = format!("cust_{}", 700_000 + n);
    let ip = if rng.gen_bool(0.8) {
        let net = ["203.0.113", "198.51.100", "192.0.2"][rng.gen_range(0..3)];
        format!("{net}.{}", rng.gen_range(1..255))
    } else {
        format!(
            "2001:db8:{:x}::{:x}",
            rng.gen_range(1..0xffff),
            rng.gen_range(1..0xffff)
        )
    };
    UserProfile {
        logged_in: rng.gen_bool(0.35),
        email_sha: sha256_hex(&email),
        email,
        phone_sha: sha256_hex(&e164),
        phone_e164: e164,
        phone_typed: typed,
        has_phone: rng.gen_bool(0.5),
        external_id_sha: sha256_hex(&external_id),
        external_id,
        ttclid: rng
            .gen_bool(0.55)
            .then(|| format!("E.C.P.{}", random_token(rng, 40))),
        ttp: rng.gen_bool(0.92).then(|| random_token(rng, 27)),
        ip,
        user_agent: USER_AGENTS[rng.gen_range(0..USER_AGENTS.len())],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prices_convert_to_whole_minor_units() {
        assert_eq!(price_in(1990, USD), Money(19_900_000));
        assert_eq!(price_in(1990, EUR), Money(18_310_000));
        // 19.90 USD = 2985 JPY, rounded to 10 yen.
        assert_eq!(price_in(1990, JPY), Money(2_990_000_000));
        let back = convert(Money(18_310_000), EUR, USD);
        assert_eq!(back.0 % 10_000, 0);
    }

    #[test]
    fn clock_hands_out_exactly_the_actions_in_time_order() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let mut clock = SessionClock::new(7, 5_000, 0, 96 * 3_600_000);
        let mut last = i64::MIN;
        let mut n = 0;
        while let Some((slot, _, t)) = clock.next_action(&mut rng) {
            assert!(t >= last);
            last = t;
            n += 1;
            clock.finish_if_done(slot);
        }
        assert_eq!(n, 5_000);
        assert!(clock.slots.len() < 200, "{} slots", clock.slots.len());
    }

    #[test]
    fn typed_phones_normalise_to_their_e164_form() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for n in 0..200 {
            let u = new_user(&mut rng, n);
            let digits: String = u.phone_typed.chars().filter(char::is_ascii_digit).collect();
            assert_eq!(format!("+{digits}"), u.phone_e164, "{}", u.phone_typed);
            assert_eq!(u.email_sha, sha256_hex(&u.email));
        }
    }

    #[test]
    fn known_and_invalid_currencies_are_told_apart() {
        assert!(is_known_iso("usd"));
        assert!(INVALID_CURRENCIES.iter().all(|c| !is_known_iso(c)));
    }
}
