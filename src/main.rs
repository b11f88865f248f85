//! The `ebb` binary: parse, install the TLS crypto provider, start logging, run one component.

#![warn(clippy::unwrap_used, clippy::expect_used)]

use clap::Parser;
use ebb::report::error_chain;
use ebb::{
    cli::{Cli, Command},
    shutdown, telemetry,
};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    telemetry::init(cli.log.log_format, &cli.log.log_level);
    // Offline tools: no TLS, no signals, just an exit code.
    match &cli.command {
        Command::Render(args) => return exit_code(ebb::tools::render::run_render(args)),
        Command::Check(args) => return exit_code(ebb::tools::render::run_check(args)),
        Command::Certs(args) => return certs(args),
        Command::Crd => {
            return match ebb::crd::crds_yaml() {
                Ok(yaml) => {
                    print!("{yaml}");
                    std::process::ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {}", error_chain(&e));
                    std::process::ExitCode::FAILURE
                }
            };
        }
        Command::MetricsServer(_)
        | Command::Operator(_)
        | Command::Run(_)
        | Command::Webhooks(_)
        | Command::Activator(_)
        | Command::Simulate(_)
        | Command::Explain(_) => {}
    }
    // Several dependencies can bring a rustls provider; ebb uses ring everywhere, chosen once here.
    if rustls::crypto::ring::default_provider()
        .install_default()
        .is_err()
    {
        tracing::error!("a rustls crypto provider was already installed");
        return std::process::ExitCode::FAILURE;
    }
    // Tools that may reach a server (Prometheus, the API server) but run no component.
    let command = match cli.command {
        Command::Simulate(args) => return exit_code(ebb::tools::simulate::run(*args).await),
        Command::Explain(args) => return exit_code(ebb::tools::explain::run(*args).await),
        other => other,
    };
    let (trigger, signal) = shutdown::channel();
    tokio::spawn(shutdown::on_os_signal(trigger));
    let result: Result<(), ebb::startup::StartupError> = match command {
        Command::MetricsServer(args) => ebb::external_metrics::run(*args, signal).await,
        Command::Operator(args) => ebb::operator::controller::run(*args, signal).await,
        Command::Run(args) => ebb::run::run(*args, signal).await,
        Command::Webhooks(args) => ebb::webhooks::run(args, signal).await,
        Command::Activator(args) => ebb::activator::run(*args, signal).await,
        Command::Render(_)
        | Command::Check(_)
        | Command::Certs(_)
        | Command::Crd
        | Command::Simulate(_)
        | Command::Explain(_) => Ok(()),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            telemetry::fatal(&error_chain(&e));
            std::process::ExitCode::FAILURE
        }
    }
}

/// Maps a tool's integer status to the process exit code.
fn exit_code(code: i32) -> std::process::ExitCode {
    std::process::ExitCode::from(u8::try_from(code).unwrap_or(1))
}

/// `ebb certs`: write the files and print what to paste into the registration objects.
fn certs(args: &ebb::cli::CertsArgs) -> std::process::ExitCode {
    match ebb::cluster_certs::write_bundle(&args.out, &args.namespace, &args.cluster_domain) {
        Ok(bundle) => {
            println!("wrote ca.crt, ca.key, tls.crt, tls.key to {}", args.out.display());
            println!(
                "kubectl -n {} create secret generic {} --from-file={}",
                args.namespace,
                ebb::cluster_certs::SECRET_NAME,
                args.out.display()
            );
            println!("caBundle (APIService spec.caBundle, webhooks[].clientConfig.caBundle):");
            println!("{}", ebb::cluster_certs::ca_bundle_base64(&bundle.ca_crt));
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {}", error_chain(&e));
            std::process::ExitCode::FAILURE
        }
    }
}
