//! The `signal-gate` command: `serve`, `demo`, `emulate` and `check-config`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use signal_gate::configuration::Settings;
use signal_gate::startup::Application;
use signal_gate::{demo, emulators, telemetry};

#[derive(Parser)]
#[command(version, about = "Registration gate for self-hosted Signal servers")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gate, configured by SIGNAL_GATE_* variables.
    Serve,
    /// Print the effective configuration, secrets masked; exit non-zero on a bad value.
    CheckConfig,
    /// Run the gate against both emulators with mixed traffic and report per traffic class.
    Demo {
        /// Also write the figures as JSON to this file.
        #[arg(long)]
        report: Option<PathBuf>,
    },
    /// Run the signal-server and hCaptcha emulators on loopback, for trying the gate by hand.
    Emulate {
        #[arg(long, default_value_t = 8081)]
        signal_port: u16,
        #[arg(long, default_value_t = 8082)]
        hcaptcha_port: u16,
        /// The secret and site key the hCaptcha emulator accepts besides the test keys.
        #[arg(long, default_value = emulators::hcaptcha::TEST_SECRET)]
        secret: String,
        #[arg(long, default_value = emulators::hcaptcha::TEST_SITEKEY)]
        sitekey: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("signal-gate: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve => serve().await,
            Command::CheckConfig => check_config(),
            Command::Demo { report } => demo::run(report.as_deref()).await,
            Command::Emulate {
                signal_port,
                hcaptcha_port,
                secret,
                sitekey,
            } => emulate(signal_port, hcaptcha_port, &secret, &sitekey).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("signal-gate: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve() -> anyhow::Result<()> {
    let settings = Settings::load()?;
    telemetry::init();
    for name in Settings::unknown_variables(std::env::vars().map(|(k, _)| k)) {
        tracing::warn!(variable = %name, "unknown SIGNAL_GATE_ variable ignored; a typo?");
    }
    let application = Application::build(settings).await?;
    tracing::info!(
        port = application.port(),
        admin_port = application.admin_port(),
        "serving"
    );
    application.run_until_stopped().await?;
    tracing::info!("stopped");
    Ok(())
}

fn check_config() -> anyhow::Result<()> {
    let settings = Settings::load()?;
    for line in settings.describe() {
        println!("{line}");
    }
    for name in Settings::unknown_variables(std::env::vars().map(|(k, _)| k)) {
        eprintln!("warning: {name} matches no setting");
    }
    Ok(())
}

async fn emulate(
    signal_port: u16,
    hcaptcha_port: u16,
    secret: &str,
    sitekey: &str,
) -> anyhow::Result<()> {
    let signal_listener = std::net::TcpListener::bind(("127.0.0.1", signal_port))?;
    let hcaptcha_listener = std::net::TcpListener::bind(("127.0.0.1", hcaptcha_port))?;
    let signal = emulators::signal_server::SignalServerEmulator::start_on(signal_listener)?;
    let hcaptcha =
        emulators::hcaptcha::HcaptchaEmulator::start_on(hcaptcha_listener, secret, sitekey)?;
    println!("signal-server emulator: {}", signal.url());
    println!("hCaptcha siteverify emulator: {}", hcaptcha.verify_url());
    println!(
        "issue a token: POST http://127.0.0.1:{}/emulator/issue {{\"sitekey\": \"...\"}}",
        hcaptcha.port()
    );
    println!("read codes: GET {}/emulator/inbox/<number>", signal.url());
    tokio::signal::ctrl_c().await?;
    Ok(())
}
