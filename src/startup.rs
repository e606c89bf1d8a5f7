//! Wiring: builds the gate from [`Settings`], binds both listeners and holds the route tables.
//! Tests and the demo run exactly this, on port 0.

use std::future::ready;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_http::error::DispatchError;
use actix_http::{HttpService, KeepAlive};
use actix_server::Server;
use actix_service::{fn_service, map_config, ServiceFactoryExt};
use actix_web::dev::{AppConfig, ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::web::{self, Data};
use actix_web::{App, HttpServer};
use anyhow::Context;
use tokio::net::TcpStream;

use crate::abuse::Blocklist;
use crate::clock::{Clock, SystemClock};
use crate::configuration::Settings;
use crate::connection::ClientConnection;
use crate::decision::log_budget;
use crate::gate::{Gate, GateParts};
use crate::limits::{LimitRule, MemoryLimitStore, Rate};
use crate::metrics::Metrics;
use crate::routes;
use crate::routes::admin::AdminToken;
use crate::storage::{GateStore, Retention};
use crate::storage::{GuessBudget, SendSchedule, SqliteStore};
use crate::websocket;

/// How long in-flight requests get to finish after SIGTERM.
const SHUTDOWN_GRACE_SECS: u64 = 10;
/// How long a request's head may take to arrive (actix-web's default).
const CLIENT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a closing connection may take to shut down (actix-web's default).
const CLIENT_DISCONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// A built gate, bound and ready to run.
pub struct Application {
    port: u16,
    admin_port: u16,
    server: Server,
    admin: Server,
}

impl Application {
    /// # Errors
    /// When the database cannot be opened or a listener cannot be bound.
    pub async fn build(settings: Settings) -> anyhow::Result<Application> {
        Self::build_with_clock(settings, Arc::new(SystemClock)).await
    }

    /// As [`Application::build`], with the clock every decision reads.
    ///
    /// # Errors
    /// As [`Application::build`].
    pub async fn build_with_clock(
        settings: Settings,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<Application> {
        let store = open_store(&settings).await?;
        let rates = limit_rates(&settings);
        let capacity = settings.limits.cache_capacity;
        let limit_store = Arc::new(MemoryLimitStore::new(&rates, capacity, Arc::clone(&clock)));
        let blocklist = Arc::new(Blocklist::default());
        reload_blocks(&store, &blocklist, clock.now_ms()).await?;
        log_budget::set_lines_per_second(settings.log.refusal_lines_per_second);
        start_maintenance(&store, &blocklist, &clock, &settings);
        let parts = GateParts {
            clock,
            limits: limit_store,
            store: Arc::new(store.clone()),
            blocklist,
            metrics: Arc::new(Metrics::new()),
        };
        let gate = Data::new(Gate::new(&settings, parts)?);

        let listener = bind(settings.listen, "SIGNAL_GATE_LISTEN")?;
        let admin_listener = bind(settings.admin.listen, "SIGNAL_GATE_ADMIN__LISTEN")?;
        let port = listener.local_addr()?.port();
        let admin_port = admin_listener.local_addr()?.port();
        let server = client_server(listener, gate.clone(), settings.workers)?;
        let token = Data::new(AdminToken(settings.admin.token.clone()));
        let admin = admin_server(admin_listener, gate, token)?;
        Ok(Application {
            port,
            admin_port,
            server,
            admin,
        })
    }

    /// The client API's port, the real one when the settings asked for port 0.
    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn admin_port(&self) -> u16 {
        self.admin_port
    }

    /// Serves until SIGTERM or SIGINT, then drains in-flight requests.
    ///
    /// # Errors
    /// When a server fails.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let admin_handle = self.admin.handle();
        let admin = tokio::spawn(self.admin);
        let result = self.server.await;
        admin_handle.stop(true).await;
        let _ = admin.await;
        result
    }
}

/// Opens the database the settings name, with the persisted rules they configure.
///
/// # Errors
/// When the database cannot be opened or migrated.
pub async fn open_store(settings: &Settings) -> anyhow::Result<SqliteStore> {
    let limits = &settings.limits;
    SqliteStore::open(
        &settings.database.url,
        settings.database.busy_timeout,
        SendSchedule::new(&limits.send_delays, limits.register_per_number),
        GuessBudget::new(
            limits.wrong_codes_per_number,
            limits.wrong_codes_per_session,
        ),
    )
    .await
}

fn bind(address: std::net::SocketAddr, variable: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(address).with_context(|| format!("could not listen on {variable}={address}"))
}

/// The jobs that run beside the server: reloading blocks, checkpointing and pruning the
/// database, and writing the count of refusal lines the decision log left out in the last
/// second.
fn start_maintenance(
    store: &SqliteStore,
    blocklist: &Arc<Blocklist>,
    clock: &Arc<dyn Clock>,
    settings: &Settings,
) {
    tokio::spawn(keep_blocks_fresh(
        store.clone(),
        Arc::clone(blocklist),
        Arc::clone(clock),
    ));
    tokio::spawn(store.clone().checkpoint_on_schedule(CHECKPOINT_INTERVAL));
    let retention = retention_of(settings);
    tokio::spawn(prune_on_schedule(
        store.clone(),
        retention,
        Arc::clone(clock),
    ));
    if settings.log.refusal_lines_per_second > 0 {
        tokio::spawn(report_unlogged_decisions());
    }
}

async fn report_unlogged_decisions() {
    let mut ticks = tokio::time::interval(Duration::from_secs(1));
    loop {
        ticks.tick().await;
        log_budget::report_finished_second();
    }
}

/// How often the write-ahead log is copied into the database file, off the request path.
const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(1);

/// Blocks written by `signal-gate admin` or another gate take effect within this time.
const BLOCK_RELOAD_INTERVAL: Duration = Duration::from_secs(5);

async fn reload_blocks(store: &SqliteStore, blocks: &Blocklist, now: u64) -> anyhow::Result<()> {
    let active = store
        .active_blocks(now)
        .await
        .context("could not read the blocks")?;
    blocks.replace_all(active.into_iter().map(|b| (b.kind, b.key, b.until)));
    Ok(())
}

/// Reloads the blocks from the database for as long as the process runs.
async fn keep_blocks_fresh(store: SqliteStore, blocks: Arc<Blocklist>, clock: Arc<dyn Clock>) {
    let mut ticks = tokio::time::interval(BLOCK_RELOAD_INTERVAL);
    loop {
        ticks.tick().await;
        if let Err(error) = reload_blocks(&store, &blocks, clock.now_ms()).await {
            tracing::warn!(error = %format!("{error:#}"), "keeping the previous blocks");
        }
    }
}

/// What pruning keeps, from the settings; `now` is filled in at each pass.
fn retention_of(settings: &Settings) -> (Duration, Retention) {
    let l = &settings.limits;
    let longest = [
        l.register_per_number.period(),
        l.wrong_codes_per_number.period(),
    ]
    .into_iter()
    .max()
    .unwrap_or_default();
    let retention = Retention {
        now: 0,
        longest_window_ms: longest.as_millis() as u64,
        sends_max_age_ms: settings.retention.sends_max_age.as_millis() as u64,
        sends_max_rows: settings.retention.sends_max_rows,
    };
    (settings.retention.interval, retention)
}

/// Prunes expired rows for as long as the process runs, so the database does not grow
/// without end under a flood.
async fn prune_on_schedule(
    store: SqliteStore,
    (interval, retention): (Duration, Retention),
    clock: Arc<dyn Clock>,
) {
    let mut ticks = tokio::time::interval(interval);
    loop {
        ticks.tick().await;
        let pass = Retention {
            now: clock.now_ms(),
            ..retention
        };
        match store.prune(pass).await {
            Ok(pruned) => tracing::info!(?pruned, "pruned expired rows"),
            Err(error) => tracing::warn!(error = %error, "pruning failed; will try again"),
        }
    }
}

fn limit_rates(settings: &Settings) -> Vec<(LimitRule, Rate)> {
    let l = &settings.limits;
    vec![
        (LimitRule::RegisterPerAddress, l.register_per_ip),
        (LimitRule::RegisterPerBlock, l.register_per_block),
        (LimitRule::RegisterPerPrefix, l.register_per_prefix),
        (LimitRule::RegisterPerCountry, l.register_per_country),
        (LimitRule::VerifyPerAddress, l.verify_per_ip),
        (LimitRule::VerifyPerNumber, l.verify_per_number),
    ]
}

/// The client API's server. It is assembled from actix-web's parts rather than by
/// `HttpServer`, with the same settings, so that each connection can be wrapped in
/// [`ClientConnection`].
fn client_server(
    listener: TcpListener,
    gate: Data<Gate>,
    workers: usize,
) -> anyhow::Result<Server> {
    let local = listener.local_addr()?;
    let server = Server::build()
        .workers(workers)
        .shutdown_timeout(SHUTDOWN_GRACE_SECS)
        .listen("signal-gate", listener, move || {
            let app = client_app(gate.clone());
            let http = HttpService::build()
                .keep_alive(KeepAlive::default())
                .client_request_timeout(CLIENT_REQUEST_TIMEOUT)
                .client_disconnect_timeout(CLIENT_DISCONNECT_TIMEOUT)
                .local_addr(local)
                .h1(map_config(app, |()| AppConfig::default()));
            fn_service(|stream: TcpStream| {
                let peer = stream.peer_addr().ok();
                ready(Ok::<_, DispatchError>((
                    ClientConnection::new(stream, CLIENT_REQUEST_TIMEOUT),
                    peer,
                )))
            })
            .and_then(http)
        })?
        .run();
    Ok(server)
}

/// The client API's routes.
fn client_app(
    gate: Data<Gate>,
) -> App<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    App::new()
        .app_data(gate)
        .route("/v1/register", web::post().to(routes::register))
        .route("/v1/verify", web::post().to(routes::verify))
        .route(
            "/v1/websocket/{tail:.*}",
            web::get().to(websocket::websocket),
        )
        .route("/v1/websocket", web::get().to(websocket::websocket))
        .default_service(web::to(routes::unrouted))
}

fn admin_server(
    listener: TcpListener,
    gate: Data<Gate>,
    token: Data<AdminToken>,
) -> anyhow::Result<Server> {
    let server = HttpServer::new(move || {
        App::new()
            .app_data(gate.clone())
            .app_data(token.clone())
            .configure(routes::admin::configure)
            .default_service(web::to(routes::unknown_endpoint))
    })
    .workers(1)
    .disable_signals()
    .shutdown_timeout(SHUTDOWN_GRACE_SECS)
    .listen(listener)?
    .run();
    Ok(server)
}
