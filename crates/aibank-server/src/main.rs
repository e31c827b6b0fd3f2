//! `aibank`: the agent banking gateway server.

use std::process::ExitCode;
use std::sync::Arc;

use aibank_auth::{keys, GeneratedKey, KeyKind};
use aibank_core::{Clock, SystemClock};
use aibank_server::config::Config;
use aibank_server::{audit, identities, startup, telemetry, Application};
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "aibank", version, about = "Agent banking gateway server")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the HTTP server (migrations run first).
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Manage platform master keys.
    #[command(subcommand)]
    MasterKeys(MasterKeysCommand),
    /// Print every setting with its default, values and meaning: the README's table.
    Settings,
}

#[derive(Debug, Subcommand)]
enum MasterKeysCommand {
    /// Create a new platform with a master key; the key is printed once, as the last line.
    Create {
        #[arg(long)]
        name: String,
        #[arg(long)]
        email: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if matches!(cli.command, Command::Settings) {
        print!("{}", aibank_server::config::settings_markdown());
        return ExitCode::SUCCESS;
    }
    let config = match Config::load() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("aibank: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    telemetry::init(config.log_format);
    let result = match cli.command {
        Command::Serve => serve(config),
        Command::Migrate => migrate(&config),
        Command::MasterKeys(MasterKeysCommand::Create { name, email }) => {
            create_master_key(&config, &name, email.as_deref())
        }
        Command::Settings => Ok(()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("aibank: {e}");
            ExitCode::FAILURE
        }
    }
}

fn serve(config: Config) -> Result<(), String> {
    actix_web::rt::System::new().block_on(async move {
        let app = Application::build(config, Arc::new(SystemClock))
            .await
            .map_err(|e| e.to_string())?;
        app.run().await.map_err(|e| e.to_string())
    })
}

fn migrate(config: &Config) -> Result<(), String> {
    startup::open_database(config)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

fn create_master_key(config: &Config, name: &str, email: Option<&str>) -> Result<(), String> {
    let name = aibank_server::validate::name("name", name).map_err(|e| e.message().to_owned())?;
    let email =
        aibank_server::validate::email_opt("email", email).map_err(|e| e.message().to_owned())?;
    let pool = startup::open_database(config).map_err(|e| e.to_string())?;
    let key = GeneratedKey::new(KeyKind::Master);
    let hash = keys::hash(&key.full).map_err(|e| e.to_string())?;
    let mut conn = pool.get().map_err(|e| e.to_string())?;
    let row = identities::create_master_key(
        &mut conn,
        &audit::Actor::OPERATOR,
        None,
        &name,
        email.as_deref(),
        &key,
        hash,
        SystemClock.now_ms(),
    )
    .map_err(|e| e.to_string())?;
    println!(
        "Created master key {} for new platform {} ({name}).",
        row.id, row.platform_id
    );
    println!("It is shown only now; store it safely. Use it as the X-Master-Key header:");
    println!("{}", key.full.expose());
    Ok(())
}
