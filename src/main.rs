//! The `ebb` binary: parse, install the TLS crypto provider, start logging, run one component.

use clap::Parser;
use ebb::{
    cli::{Cli, Command},
    shutdown, telemetry,
};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    telemetry::init(&cli.log);
    // Several dependencies can bring a rustls provider; ebb uses ring everywhere, chosen once here.
    if rustls::crypto::ring::default_provider()
        .install_default()
        .is_err()
    {
        tracing::error!("a rustls crypto provider was already installed");
        return std::process::ExitCode::FAILURE;
    }
    let (trigger, signal) = shutdown::channel();
    tokio::spawn(shutdown::on_os_signal(trigger));
    let result = match cli.command {
        Command::MetricsServer(args) => ebb::external_metrics::run(*args, signal).await,
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            let mut msg = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                msg.push_str(": ");
                msg.push_str(&s.to_string());
                source = s.source();
            }
            tracing::error!(error = %msg, "ebb stopped");
            eprintln!("error: {msg}");
            std::process::ExitCode::FAILURE
        }
    }
}
