//! The `prefsmith` command line: parses arguments, sets up logging and the runtime, and hands
//! over to one function per subcommand (`commands/`). Exit codes: 0 ok, 1 a problem with the
//! data, 2 a usage or internal error.

mod allocator;
mod commands;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let allocator_tuned = allocator::keep_freed_memory();
    let cli = commands::Cli::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new("warn,prefsmith=info,prefsmith_pipeline=info,prefsmith_trainer=info,prefsmith_model=info")
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();
    tracing::debug!(
        allocator_tuned,
        "glibc allocator: large buffers from the heap, no trimming"
    );
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            for cause in error.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            let data_problem = error
                .downcast_ref::<prefsmith_pipeline::Error>()
                .is_some_and(prefsmith_pipeline::Error::is_data_problem)
                || error
                    .downcast_ref::<prefsmith_trainer::Error>()
                    .is_some_and(prefsmith_trainer::Error::is_data_problem)
                || error
                    .downcast_ref::<prefsmith_model::Error>()
                    .is_some_and(prefsmith_model::Error::is_data_problem);
            ExitCode::from(if data_problem { 1 } else { 2 })
        }
    }
}
