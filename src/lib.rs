//! onecount: exactly one conversion per user action.
//!
//! A pure, deterministic core (`parse`, `engine`) wrapped by thin runtimes (`replay` over files).
//! See `docs/RULES.md` for the rules the engine applies.
pub mod config;
pub mod generate;
pub mod model;
pub mod parse;
