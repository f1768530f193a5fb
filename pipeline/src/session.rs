//! The DataFusion session every stage and `prefsmith sql` runs in: our functions registered,
//! parallelism from the caller.

use datafusion::execution::FunctionRegistry;
use datafusion::prelude::{SessionConfig, SessionContext};

use crate::error::Result;

/// A session with every prefsmith function registered. `threads` = 0 means one per core.
pub fn new_context(threads: usize) -> Result<SessionContext> {
    let mut config = SessionConfig::new().with_information_schema(true);
    if threads > 0 {
        config = config.with_target_partitions(threads);
    }
    let mut ctx = SessionContext::new_with_config(config);
    register_functions(&mut ctx)?;
    Ok(ctx)
}

/// Registers prefsmith's functions on a registry (a `SessionContext`, say).
pub fn register_functions(registry: &mut dyn FunctionRegistry) -> Result<()> {
    prefsmith_udfs::register_all(registry)?;
    Ok(())
}

/// Quotes an identifier for SQL (`"name"`, inner quotes doubled).
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Quotes a string literal for SQL.
pub fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}
