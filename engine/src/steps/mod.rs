//! The engine's built-in steps (generators, reshaping, filters, templates, dedup and
//! sampling), registered by name.

mod columns;
mod filter;
mod format_data;
mod format_text;
mod generators;
mod global;
pub(crate) mod json_integers;
mod minhash;

use crate::registry::Registry;

/// Registers every built-in step type.
pub fn register_builtins(registry: &mut Registry) {
    registry.register("inline", generators::inline);
    registry.register("load_jsonl", generators::load_jsonl);
    registry.register("load_csv", generators::load_csv);
    registry.register("keep_columns", columns::keep_columns);
    registry.register("expand_list", columns::expand_list);
    registry.register("combine_columns", columns::combine_columns);
    registry.register("format_text", format_text::format_text);
    registry.register("format_sft", format_data::format_sft);
    registry.register("format_dpo", format_data::format_dpo);
    registry.register("filter", filter::filter);
    registry.register("dedup", global::dedup);
    registry.register("sample", global::sample);
    registry.register("minhash_dedup", minhash::minhash_dedup);
}
