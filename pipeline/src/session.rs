//! The DataFusion session every stage and `prefsmith sql` runs in: our functions registered,
//! parallelism from the caller.

use datafusion::execution::FunctionRegistry;
use datafusion::prelude::{ParquetReadOptions, SessionConfig, SessionContext};

use crate::error::Result;
use crate::storage::Location;

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

/// Registers Parquet `files` as table `name` (a parallel scan; any file name is accepted).
pub async fn register_parquet(ctx: &SessionContext, name: &str, files: &[Location]) -> Result<()> {
    for file in files {
        file.register_with(ctx)?;
    }
    let paths: Vec<String> = files.iter().map(Location::table_url).collect();
    let options = ParquetReadOptions {
        file_extension: "",
        ..Default::default()
    };
    let df = ctx.read_parquet(paths, options).await?;
    ctx.register_table(name, df.into_view())?;
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
