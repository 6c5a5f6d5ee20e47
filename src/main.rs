//! The `milo-webhook` binary: parse the command line and dispatch.

use std::process::ExitCode;

use clap::Parser;
use milo_webhook::cmd::{
    Cli, Command, check, crds, exit_code, review, serve, webhook_config, webhook_config_warning,
};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => {
            serve::init_logging(&args.log_format);
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(runtime) => runtime,
                Err(error) => return fail(&format!("cannot start the runtime: {error}"), 1),
            };
            match runtime.block_on(serve::run(args)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => fail(&format!("{error:#}"), exit_code(&error)),
            }
        }
        Command::Review(args) => match review::run(&args) {
            Ok(json) => {
                println!("{json}");
                ExitCode::SUCCESS
            }
            Err(message) => fail(&message, 2),
        },
        Command::Check(args) => match check::run(&args) {
            Ok((output, rejected)) => {
                println!("{output}");
                if rejected {
                    ExitCode::from(1)
                } else {
                    ExitCode::SUCCESS
                }
            }
            Err(message) => fail(&message, 2),
        },
        Command::Crds(args) => match crds(&args) {
            Ok(yaml) => {
                print!("{}", yaml.unwrap_or_default());
                ExitCode::SUCCESS
            }
            Err(error) => fail(&format!("cannot render the CRDs: {error:#}"), 1),
        },
        Command::WebhookConfig(args) => match webhook_config(&args) {
            Ok(yaml) => {
                if let Some(warning) = webhook_config_warning(&args) {
                    eprintln!("milo-webhook: {warning}");
                }
                print!("{yaml}");
                ExitCode::SUCCESS
            }
            Err(error) => fail(&format!("{error:#}"), 2),
        },
    }
}

fn fail(message: &str, code: u8) -> ExitCode {
    eprintln!("milo-webhook: {message}");
    ExitCode::from(code)
}
