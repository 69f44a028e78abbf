//! `berthctl`: see `berth::cli`.

use clap::Parser;

#[tokio::main]
async fn main() {
    let cli = berth::cli::Cli::parse();
    match berth::cli::run(cli).await {
        Ok(code) => std::process::exit(code),
        Err(error) => {
            eprintln!("berthctl: {error:#}");
            std::process::exit(125);
        }
    }
}
