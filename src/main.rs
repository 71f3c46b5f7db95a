//! `boxless`: the command line (docs/cli.md).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "boxless",
    version,
    about = "Boxless: virtual voice messaging without mailboxes"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Router + every [[servers]] entry + HTTP API in one process.
    Serve {
        /// TOML configuration (default: the embedded one, all on 127.0.0.1).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// The router and the HTTP API alone (needs [control] backend = "nats").
    Router {
        /// TOML configuration.
        #[arg(long)]
        config: PathBuf,
    },
    /// One [[servers]] entry (needs [control] backend = "nats").
    Server {
        /// TOML configuration.
        #[arg(long)]
        config: PathBuf,
        /// The id of the [[servers]] entry to run.
        #[arg(long)]
        id: String,
    },
    /// A test phone: places a real SIP/RTP call (PCMU) and prints the outcome.
    Call {
        /// Router or server address.
        #[arg(long)]
        via: SocketAddr,
        /// Caller number.
        #[arg(long)]
        from: String,
        /// Dialled number.
        #[arg(long)]
        to: String,
        /// Audio to play (WAV of any rate and channel count).
        #[arg(long)]
        play: Option<PathBuf>,
        /// RFC 4733 digits to send; a `,` waits a second.
        #[arg(long, default_value = "")]
        dtmf: String,
        /// Seconds after answer to send the digits.
        #[arg(long, default_value_t = 0.0)]
        dtmf_at: f64,
        /// Seconds after answer to start playing.
        #[arg(long, default_value_t = 0.0)]
        play_at: f64,
        /// Write what the phone hears to this WAV file.
        #[arg(long)]
        record: Option<PathBuf>,
        /// Hang up this many seconds after answer.
        #[arg(long)]
        seconds: Option<f64>,
        /// Add a Diversion header: the call was forwarded from this number.
        #[arg(long)]
        diversion: Option<String>,
        /// Add a header line to the INVITE (`Name: value`); repeatable.
        #[arg(long = "header")]
        headers: Vec<String>,
    },
    /// A table of servers: id, state, active/capacity, free disk, last seen.
    Status {
        /// The HTTP API (http:// or https://).
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        http: String,
        /// A file holding the API token (else the BOXLESS_TOKEN environment variable).
        #[arg(long)]
        token_file: Option<PathBuf>,
        /// CA or certificate to trust for an https:// API.
        #[arg(long)]
        ca: Option<PathBuf>,
    },
    /// API tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Prints a fresh random token and the [[http.tokens]] lines (with its SHA-256) to
    /// paste into the config; the config never holds the token itself.
    New {
        /// Who will hold it (shown in logs).
        #[arg(long)]
        name: String,
        /// read (GET only) or admin (everything).
        #[arg(long, value_parser = ["read", "admin"])]
        scope: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("boxless: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    rt.block_on(run(cli))
}

async fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Serve { config } => daemon(config, Part::All).await,
        Command::Router { config } => daemon(Some(config), Part::Router).await,
        Command::Server { config, id } => daemon(Some(config), Part::Server(id)).await,
        Command::Call {
            via,
            from,
            to,
            play,
            dtmf,
            dtmf_at,
            play_at,
            record,
            seconds,
            diversion,
            headers,
        } => {
            let play = match play.as_deref().map(boxless_phone::read_wav).transpose() {
                Ok(p) => p.unwrap_or_default(),
                Err(e) => {
                    eprintln!("boxless call: --play {e}");
                    return ExitCode::from(2);
                }
            };
            let opts = boxless_phone::CallOptions {
                via,
                from,
                to,
                diversion,
                headers,
                play,
                play_at,
                dtmf,
                dtmf_at,
                seconds,
                answer_timeout: Duration::from_secs(32),
            };
            let out = match boxless_phone::place_call(&opts).await {
                Ok(o) => o,
                Err(e) => {
                    eprintln!("boxless call: {e}");
                    return ExitCode::from(1);
                }
            };
            for (code, reason) in &out.invite_finals {
                println!("INVITE -> {code} {reason}");
            }
            if out.invite_finals.is_empty() {
                println!("INVITE -> no answer");
            }
            if out.remote_hangup {
                println!("BYE <- far end hung up");
            }
            if let Some(code) = out.bye_response {
                let at = out.hangup_at_ms.unwrap_or(0);
                println!(
                    "BYE -> {code} (sent at {}.{:03} s since the epoch, answered in {:.2} ms)",
                    at / 1000,
                    at % 1000,
                    out.bye_wait.unwrap_or_default().as_secs_f64() * 1000.0
                );
            }
            if let Some(t) = out.first_audio {
                println!("first audio {} ms after the 200 OK", t.as_millis());
            }
            println!(
                "heard {:.1} s of audio ({} RTP packets)",
                out.heard.len() as f64 / 8000.0,
                out.rtp_packets
            );
            if let Some(path) = record {
                if let Err(e) = boxless_phone::write_wav(&path, &out.heard) {
                    eprintln!("boxless call: --record {e}");
                    return ExitCode::from(1);
                }
                println!("recorded to {}", path.display());
            }
            if out.completed() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Command::Token {
            command: TokenCommand::New { name, scope },
        } => match boxless_api::auth::new_token() {
            Ok((token, sha)) => {
                println!("token: {token}");
                println!("# Give the token to {name}; paste these lines into the config:");
                println!(
                    "[[http.tokens]]\nname = \"{name}\"\nsha256 = \"{sha}\"\nscope = \"{scope}\""
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("boxless token new: no randomness from the OS: {e}");
                ExitCode::from(1)
            }
        },
        Command::Status {
            http,
            token_file,
            ca,
        } => {
            let token = match token_file {
                Some(f) => match std::fs::read_to_string(&f) {
                    Ok(t) => Some(t.lines().next().unwrap_or("").trim().to_string()),
                    Err(e) => {
                        eprintln!("boxless status: --token-file {}: {e}", f.display());
                        return ExitCode::from(2);
                    }
                },
                None => std::env::var("BOXLESS_TOKEN").ok(),
            };
            let access = boxless::status::Access { token, ca };
            status(&http, &access).await
        }
    }
}

async fn status(http: &str, access: &boxless::status::Access) -> ExitCode {
    match boxless::status::status_table(http, access).await {
        Ok(t) => {
            print!("{t}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("boxless status: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// Which part of the system a process runs.
enum Part {
    All,
    Router,
    Server(String),
}

async fn daemon(config: Option<PathBuf>, part: Part) -> ExitCode {
    let cfg = match boxless::load_config(config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new("info,rusmppc=warn,async_nats=warn")
            }),
        )
        .init();
    let metrics = match boxless_api::prometheus::builder().and_then(|b| b.install_recorder()) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("boxless: cannot install the metrics recorder: {e}");
            return ExitCode::from(1);
        }
    };
    // Samples wait in the recorder until they are filed into their histograms: by a
    // scrape, or here, so that a process nobody scrapes does not hold every sample since
    // its start.
    let upkeep = metrics.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(5));
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            upkeep.run_upkeep();
        }
    });
    let file = config
        .as_ref()
        .map_or("<embedded default>".to_string(), |p| {
            p.display().to_string()
        });
    // Calls in progress may run to the longest recording plus the greeting.
    let drain_bound = Duration::from_secs(u64::from(cfg.config.messages.max_seconds) + 60);
    let started = match part {
        Part::All => boxless::app::serve(cfg, metrics).await,
        Part::Router => boxless::app::router(cfg, metrics).await,
        Part::Server(id) => boxless::app::server(cfg, &id, metrics).await,
    };
    let running = match started {
        Ok(r) => r,
        Err(e) => {
            eprintln!("boxless: config {file}: {e:#}");
            return ExitCode::from(1);
        }
    };
    tracing::info!(sip = %running.router, http = %running.http, "boxless running; SIGTERM drains");
    wait_for_signal().await;
    tracing::info!("draining: new calls refused, calls in progress finish");
    running.drain(drain_bound).await;
    ExitCode::SUCCESS
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
