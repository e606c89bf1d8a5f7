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
    /// Operator actions on the database directly, for when the admin API is out of reach.
    Admin {
        #[command(subcommand)]
        action: AdminAction,
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

#[derive(Subcommand)]
enum AdminAction {
    /// Show a number's send schedule, wrong codes and blocks.
    Number { number: String },
    /// Clear a number's cooldown, lockout, wrong codes and number block.
    Clear { number: String },
    /// List the blocks in force.
    Blocks,
    /// Block an address, address_block, number, number_range, prefix or country.
    Block {
        kind: String,
        key: String,
        /// How long, such as 12h or 7d.
        #[arg(long = "for", default_value = "12h")]
        duration: String,
        #[arg(long, default_value = "operator")]
        reason: String,
    },
    /// Remove a block.
    Unblock { kind: String, key: String },
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
            Command::Admin { action } => admin(action).await,
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

async fn admin(action: AdminAction) -> anyhow::Result<()> {
    use secrecy::ExposeSecret;
    use signal_gate::clock::{Clock, SystemClock};
    use signal_gate::configuration::parse_duration;

    let settings = Settings::load()?;
    let store = signal_gate::startup::open_store(&settings).await?;
    let number_key = signal_gate::domain::NumberKey::new(settings.number_key.expose_secret());
    let tool = signal_gate::admin::Admin {
        store: &store,
        number_key: &number_key,
        blocklist: None,
        now_ms: SystemClock.now_ms(),
        who: format!("cli:{}", std::env::var("USER").unwrap_or_default()),
    };
    let answer = match action {
        AdminAction::Number { number } => serde_json::to_value(tool.number_report(&number).await?)?,
        AdminAction::Clear { number } => {
            serde_json::json!({"cleared": tool.clear_number(&number).await?})
        }
        AdminAction::Blocks => serde_json::json!({"blocks": tool.list_blocks().await?}),
        AdminAction::Block {
            kind,
            key,
            duration,
            reason,
        } => {
            let duration = parse_duration(&duration).map_err(anyhow::Error::msg)?;
            serde_json::to_value(tool.add_block(&kind, &key, duration, &reason).await?)?
        }
        AdminAction::Unblock { kind, key } => {
            serde_json::json!({"removed": tool.remove_block(&kind, &key).await?})
        }
    };
    println!("{}", serde_json::to_string_pretty(&answer)?);
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
