//! The redb tables of a run database. Only this crate names them.

use redb::TableDefinition;

/// Run metadata: "format_version" (u32 little endian), "meta" (RunMeta), "state" (RunState).
pub const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// Output batches: (step, seq) to encoded (rows, last).
pub const BATCHES: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("batches");
/// One StepRecord per step.
pub const STEPS: TableDefinition<&str, &[u8]> = TableDefinition::new("steps");
/// Input cursors: name to position.
pub const CURSORS: TableDefinition<&str, u64> = TableDefinition::new("cursors");
/// The log: sequence number to encoded LogEntry.
pub const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
/// Request cache: content hash to response bytes.
pub const CACHE: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("cache");
/// Consumer offsets: consumer name to offset.
pub const OFFSETS: TableDefinition<&str, u64> = TableDefinition::new("offsets");
/// Consumers' own records: key to bytes.
pub const RECORDS: TableDefinition<&str, &[u8]> = TableDefinition::new("records");

/// Reclaimed batches: step to (batches deleted from its start, rows they held). A step's
/// batches before that are gone; its later ones are all there. Absent: nothing reclaimed
/// (format versions before 3 have no such table).
pub const RECLAIMED: TableDefinition<&str, (u64, u64)> = TableDefinition::new("reclaimed");

/// Key of the format version in [`META`].
pub const KEY_FORMAT: &str = "format_version";
/// Key of the RunMeta in [`META`].
pub const KEY_META: &str = "meta";
/// Key of the RunState in [`META`].
pub const KEY_STATE: &str = "state";
