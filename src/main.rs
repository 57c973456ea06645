//! The `airlock` binary: parse the command line and dispatch. Everything else is in the library.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = airlock::cli::Cli::parse();
    // Before the runtime's threads exist, so every arena they use is under the cap.
    airlock::memory::limit_arenas();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(airlock::cli::run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
