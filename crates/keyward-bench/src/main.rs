//! Keyward's benchmarks. Every figure is printed with its method; `BENCHMARKS.md` keeps the
//! latest run. Real parts throughout: keywardd's own code serving HTTP on loopback, a real
//! SQLite file (WAL, synchronous=FULL), software keys standing in for the finger.
//!
//!     cargo run --release -p keyward-bench            # the full run (a few minutes)
//!     cargo run --release -p keyward-bench -- --quick # smaller sizes, to check it works
//!
//! With `KEYWARD_BENCH_POSTGRES` set to a PostgreSQL server's URL (`./dev bench` starts a
//! throwaway one), sections 1 and 2 run again on it, and sections 8 to 10 run keywardd
//! instances as child processes on one database there (`instances.rs`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod instances;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use keyward_client::{Api, Ceremonies, EventFeed, VirtualKey};
use keyward_core::secret::hash_secret;
use keyward_core::store::Location;
use keyward_core::store::Session;
use keyward_proto::{ClientInfo, EventKind, SessionScope};
use keyward_server::Limit;
use keyward_server::{Config, RunningServer};
use keyward_softkey::SoftKey;
use url::Url;
use uuid::Uuid;

struct Sizes {
    throughput_secs: u64,
    clients: usize,
    bare_assertions: usize,
    sessions: usize,
    /// Section 2's sessions on PostgreSQL: each is one round trip to store (about 0.5 ms here),
    /// so a million would take minutes; the check's cost is its round trips, not the depth of
    /// the index.
    pg_sessions: usize,
    checks: usize,
    revocations: usize,
    streams: usize,
    fanouts: usize,
    /// Trials of each cross-instance latency (sections 8 and 9).
    cross_trials: usize,
}

const FULL: Sizes = Sizes {
    throughput_secs: 10,
    clients: 64,
    bare_assertions: 20_000,
    sessions: 1_000_000,
    pg_sessions: 100_000,
    checks: 20_000,
    revocations: 200,
    streams: 1_000,
    fanouts: 20,
    cross_trials: 200,
};

const QUICK: Sizes = Sizes {
    throughput_secs: 2,
    clients: 16,
    bare_assertions: 2_000,
    sessions: 20_000,
    pg_sessions: 20_000,
    checks: 2_000,
    revocations: 20,
    streams: 100,
    fanouts: 5,
    cross_trials: 30,
};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // Sections 8 to 10's keywardd instances: one child process each, on a shared database.
    // (Its stdout says where it listens; its log goes to stderr.)
    if args.get(1).map(String::as_str) == Some("--instance") {
        instances::serve_instance(&args[2], Path::new(&args[3]), &args[4]);
        return;
    }
    // keywardd's own log (errors behind a 500, say), when KEYWARD_LOG asks for it.
    if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_env("KEYWARD_LOG") {
        tracing_subscriber::fmt().with_env_filter(filter).init();
    }
    // The durability test's child: a keywardd that the parent kills with SIGKILL.
    if args.get(1).map(String::as_str) == Some("--serve") {
        let db = PathBuf::from(&args[2]);
        let port: u16 = args[3].parse().expect("port");
        tokio::runtime::Runtime::new().unwrap().block_on(async {
            let (server, _) = serve(&db, port).await;
            server.wait().await.ok();
        });
        return;
    }
    // Benchmark 5's event source: N security events for the desktop app's account, made
    // through its embedded keywardd with its own virtual key (see tests/e2e/startup.bench.mjs).
    if args.get(1).map(String::as_str) == Some("--rename-events") {
        let data_dir = PathBuf::from(&args[2]);
        let n: usize = args[4].parse().expect("count");
        tokio::runtime::Runtime::new()
            .unwrap()
            .block_on(rename_events(&data_dir, &args[3], n));
        return;
    }
    let sizes = if args.iter().any(|a| a == "--quick") {
        &QUICK
    } else {
        &FULL
    };
    println!("Keyward benchmarks: {} cores, {}", cores(), now_utc());
    println!();
    // `--only bare` runs section 1's bare verification alone: to compare verifiers and to
    // profile `finish_passkey_authentication` (no HTTP, no database, no peers).
    if let Some(i) = args.iter().position(|a| a == "--only")
        && args.get(i + 1).map(String::as_str) == Some("bare")
    {
        println!(
            "== bare finish_passkey_authentication, {} assertions",
            sizes.bare_assertions
        );
        let (one, all) = bare_verification(sizes.bare_assertions, false);
        println!(
            "   {one:.0}/s on one core ({:.1} us each), {all:.0}/s on {} cores",
            1e6 / one,
            cores()
        );
        return;
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    // `--only 3` runs one section (for profiling).
    let only: Option<u32> = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse().ok());
    let wanted = |n: u32| only.is_none_or(|o| o == n);
    runtime.block_on(async {
        if wanted(1) {
            sign_in_throughput(sizes).await;
        }
        if wanted(2) {
            session_checks(sizes).await;
        }
        if wanted(3) {
            revocation(sizes).await;
        }
        if wanted(4) {
            fan_out(sizes).await;
        }
        if wanted(6) {
            durability().await;
        }
        if wanted(8) || wanted(9) {
            instances::cross_instance(sizes, wanted(8), wanted(9)).await;
        }
        if wanted(10) {
            instances::scaling(sizes).await;
        }
    });
}

// ---------------------------------------------------------------------------------------------
// Helpers

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn now_utc() -> String {
    let out = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output();
    out.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// The PostgreSQL server `./dev bench` started for the run, if any.
fn postgres_url() -> Option<String> {
    std::env::var("KEYWARD_BENCH_POSTGRES")
        .ok()
        .filter(|url| !url.is_empty())
}

/// A loopback keywardd's configuration on any database; the log key rests beside `db`.
fn config_on(location: Location, db: &Path, port: u16) -> Config {
    let origin = Url::parse(&format!("http://localhost:{port}")).unwrap();
    let mut config = Config::local(location, origin);
    config.log_key = Some(db.with_extension("log-key"));
    lift_load_limits(&mut config);
    config
}

/// Every client here shares 127.0.0.1; production limits would (rightly) stop a load
/// generator after 120 ceremony starts a minute. Failures stay limited.
fn lift_load_limits(config: &mut Config) {
    // Each begin still records its hit and reads its address's recent hits, as in production;
    // the window is short so that "recent" stays a few rows. With a minute's window every begin
    // read all of the last minute's hits of 127.0.0.1 (tens of thousands at full load): 28% of
    // keywardd's CPU in section 1's profile, a cost no real address could reach, since the
    // production limit (120 a minute) refuses long before.
    config.limits.begins_per_address = Limit {
        max: u32::MAX,
        window_ms: 1,
    };
    // Likewise the pending ceremonies one network may hold (64 clients, one each, would sit
    // right at the production bound).
    config.policy.max_pending_per_network = u32::MAX;
}

async fn serve(db: &Path, port: u16) -> (RunningServer, Url) {
    serve_on(Location::Sqlite(db.to_path_buf()), db, port).await
}

async fn serve_on(location: Location, db: &Path, port: u16) -> (RunningServer, Url) {
    let listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = keyward_server::start_on(
        listener,
        config_on(location, db, port),
        Arc::new(keyward_core::SystemClock),
    )
    .await
    .unwrap();
    (
        server,
        Url::parse(&format!("http://localhost:{port}")).unwrap(),
    )
}

async fn ceremonies(base: &Url, name: &str) -> Ceremonies {
    Ceremonies::connect(
        base.clone(),
        ClientInfo {
            name: name.into(),
            platform: "Linux".into(),
        },
    )
    .await
    .unwrap()
}

/// keywardd on a fresh database, with one account ("ada") signed in with its software key.
struct Fixture {
    _dir: tempfile::TempDir,
    db: PathBuf,
    server: RunningServer,
    base: Url,
    c: Ceremonies,
    key: VirtualKey,
    me: keyward_proto::SignedIn,
}

async fn with_account(client: &str) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("keyward.db");
    let (server, base) = serve(&db, 0).await;
    let c = ceremonies(&base, client).await;
    let mut key = VirtualKey::ephemeral();
    let me = c.create_account(&mut key, "ada", None, None).await.unwrap();
    Fixture {
        _dir: dir,
        db,
        server,
        base,
        c,
        key,
        me,
    }
}

struct Lat(Vec<Duration>);

impl Lat {
    fn pct(&mut self, q: f64) -> Duration {
        self.0.sort();
        if self.0.is_empty() {
            return Duration::ZERO;
        }
        let i = ((self.0.len() - 1) as f64 * q).round() as usize;
        self.0[i]
    }
    fn summary(&mut self) -> String {
        format!(
            "p50 {}, p99 {}, max {} (n={})",
            fmt(self.pct(0.5)),
            fmt(self.pct(0.99)),
            fmt(self.pct(1.0)),
            self.0.len()
        )
    }
}

fn fmt(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us < 1000.0 {
        format!("{us:.0} us")
    } else {
        format!("{:.2} ms", us / 1000.0)
    }
}

fn verdict(ok: bool) -> &'static str {
    if ok { "goal met" } else { "GOAL MISSED" }
}

/// Sessions written into keywardd's database through the store's own API, in one transaction
/// (as many sign-ins would leave them), all for `account`'s device; returns their tokens and ids.
fn insert_sessions(
    store: &keyward_core::Store,
    account: Uuid,
    device: Uuid,
    n: usize,
) -> (Vec<String>, Vec<Uuid>) {
    let now = keyward_core::Clock::now(&keyward_core::SystemClock);
    let mut tokens = Vec::with_capacity(n);
    let mut ids = Vec::with_capacity(n);
    store
        .write(|tx| {
            // Run again from the start if PostgreSQL asks for another attempt.
            tokens.clear();
            ids.clear();
            for _ in 0..n {
                let token = keyward_core::secret::new_secret();
                let session = Session {
                    id: Uuid::new_v4(),
                    account_id: account,
                    device_id: device,
                    scope: SessionScope::Full,
                    created_at: now,
                    last_seen_at: now,
                    verified_at: now,
                    expires_at: now + 12 * 3_600_000,
                    opened_by: None,
                    address: "127.0.0.1".into(),
                    ended_at: None,
                    ended_reason: None,
                    active_from: now,
                    idle_ms: None,
                    agent_client_id: None,
                    binding: keyward_proto::SessionBinding::Unbound,
                    binding_jkt: None,
                };
                tx.insert_session(&session, &hash_secret(&token))?;
                tokens.push(token);
                ids.push(session.id);
            }
            Ok::<_, keyward_core::CoreError>(())
        })
        .unwrap();
    (tokens, ids)
}

/// Records `ids` as active now, as keywardd would at a check (it records activity every 30 s
/// per session), so that checks of them stay reads however long the run takes.
fn mark_active(store: &keyward_core::Store, ids: &[Uuid]) {
    let now = keyward_core::Clock::now(&keyward_core::SystemClock);
    store
        .write(|tx| {
            for id in ids {
                tx.touch_session(*id, now)?;
            }
            Ok::<_, keyward_core::CoreError>(())
        })
        .unwrap();
}

fn account_and_device(store: &keyward_core::Store, session: Uuid) -> (Uuid, Uuid) {
    let s = store.read(|tx| tx.session(session)).unwrap().unwrap();
    (s.account_id, s.device_id)
}

// ---------------------------------------------------------------------------------------------
// 1. Sign-in throughput, and the bare verification rate beside it

async fn sign_in_throughput(s: &Sizes) {
    println!("== 1. Full sign-in ceremonies over loopback HTTP");
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("keyward.db");
    let mut shared = sign_ins(db.to_str().unwrap(), &dir.path().join("shared"), s, None).await;
    // Once more on a fresh database, keywardd and the load generator each on a core of its own.
    let mut pinned = match two_cores() {
        Some(cores) => {
            let db = dir.path().join("keyward-pinned.db");
            Some(
                sign_ins(
                    db.to_str().unwrap(),
                    &dir.path().join("pinned"),
                    s,
                    Some(cores),
                )
                .await,
            )
        }
        None => None,
    };
    // The same run on PostgreSQL, when `./dev bench` started one (a fresh schema).
    let mut on_postgres = match postgres_url() {
        Some(url) => {
            let url = keyward_core::store::testing::fresh_schema(&url).unwrap();
            Some(sign_ins(&url, &dir.path().join("postgres"), s, None).await)
        }
        None => None,
    };
    println!(
        "   method: {} clients, each signing in again and again for {} s (begin, software key \
         signs, finish: challenge consumed, signature verified, counter, device, session and \
         event committed in one transaction, fsync'd) against keywardd as a child process \
         (SQLite, WAL, synchronous=FULL); CPU times from /proc/PID/stat (utime + stime) over \
         the run: keywardd's, this process's (the clients and their software keys) and the \
         rest of the machine's (/proc/stat)",
        s.clients, s.throughput_secs
    );
    println!("   keywardd and the clients sharing the {} cores:", cores());
    shared.print();
    match &mut pinned {
        Some(run) => {
            let (server, clients) = run.pinned.clone().unwrap_or_default();
            println!(
                "   keywardd on CPU {server} only, the clients on CPU {clients} only (taskset):"
            );
            run.print();
        }
        None => println!("   (the pinned run needs two cores and taskset; not run)"),
    }
    if let Some(run) = &mut on_postgres {
        println!("   on PostgreSQL 15 (same machine, loopback, SERIALIZABLE), sharing the cores:");
        run.print();
    }
    let cpu = shared.per_sign_in(shared.keywardd);
    println!(
        "   goal keywardd CPU per sign-in <= 220 us: {} ({:.0} us)",
        verdict(cpu <= Duration::from_micros(220)),
        cpu.as_secs_f64() * 1e6
    );
    if std::env::var_os("KEYWARD_BENCH_SKIP_BARE").is_some() {
        return;
    }

    let (bare_one, bare_all) = bare_verification(s.bare_assertions, true);
    let rate = shared.rate();
    println!(
        "   bare webauthn-rs finish_passkey_authentication: {bare_one:.0}/s on one core, \
         {bare_all:.0}/s on {} cores",
        cores()
    );
    println!(
        "   ratio full / bare: {:.0}% (keywardd's CPU alone: {:.0}%)   goal >= 9,000/s and \
         >= 65%: {}",
        rate / bare_all * 100.0,
        cores() as f64 / cpu.as_secs_f64().max(1e-9) / bare_all * 100.0,
        verdict(rate >= 9000.0 && rate / bare_all >= 0.65)
    );
    println!();
    println!("== 7. Beside the peers: the same 2,000 assertions, verification only, one core");
    println!("   webauthn-rs 0.6.2 (Keyward's verifier): {bare_one:.0}/s");
    for (name, result) in peers() {
        match result {
            Some((what, per_second)) => println!(
                "   {what}: {per_second:.0}/s   (Keyward's verifier is {:.1}x)",
                bare_one / per_second
            ),
            None => println!("   {name}: not run (install with ./dev bench)"),
        }
    }
    println!();
}

/// One run of section 1: its latencies and the CPU time each side spent.
struct SignIns {
    lat: Lat,
    elapsed: Duration,
    keywardd: Duration,
    /// This process: the clients, their HTTP and their software keys.
    clients: Duration,
    /// The whole machine's busy time (all cores), ours and other processes'.
    machine_busy: Duration,
    /// (keywardd's CPU, the clients' CPU) when pinned.
    pinned: Option<(String, String)>,
}

impl SignIns {
    fn rate(&self) -> f64 {
        self.lat.0.len() as f64 / self.elapsed.as_secs_f64()
    }
    fn per_sign_in(&self, d: Duration) -> Duration {
        d.div_f64(self.lat.0.len().max(1) as f64)
    }
    /// Cores `d` kept busy on average over the run.
    fn cores(&self, d: Duration) -> f64 {
        d.as_secs_f64() / self.elapsed.as_secs_f64()
    }
    fn print(&mut self) {
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        let keywardd = self.per_sign_in(self.keywardd);
        let others = self
            .machine_busy
            .saturating_sub(self.keywardd + self.clients);
        println!(
            "     sign-ins/s: {:.0}   latency {}",
            self.rate(),
            self.lat.summary()
        );
        println!(
            "     CPU per sign-in: keywardd {:.0} us ({:.2} cores), clients {:.0} us ({:.2} \
             cores); other processes used {:.2} cores meanwhile",
            us(keywardd),
            self.cores(self.keywardd),
            us(self.per_sign_in(self.clients)),
            self.cores(self.clients),
            self.cores(others)
        );
        println!(
            "     at that CPU cost keywardd alone would serve {:.0}/s on {} cores",
            cores() as f64 / keywardd.as_secs_f64().max(1e-9),
            cores()
        );
    }
}

/// CPU times at one moment: keywardd's, this process's and the machine's (busy, total ticks).
struct Usage {
    at: Instant,
    keywardd: Duration,
    clients: Duration,
    machine: (u64, u64),
}

impl Usage {
    fn now(keywardd: u32, tick: f64) -> Usage {
        Usage {
            at: Instant::now(),
            keywardd: instances::cpu::of_process(keywardd, tick),
            clients: instances::cpu::of_process(std::process::id(), tick),
            machine: instances::cpu::machine(),
        }
    }
}

/// The CPUs this process may run on (`Cpus_allowed_list` of /proc/self/status, as "0-1,4").
fn allowed_cpus() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))?;
    Some(line.trim().to_string())
}

/// Section 1's pinned run: (keywardd's CPU, the load generator's), the first two this process
/// may use; `None` with fewer, or without `taskset` (util-linux).
fn two_cores() -> Option<(String, String)> {
    let taskset = std::process::Command::new("taskset")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success());
    if !taskset {
        return None;
    }
    let mut cpus = Vec::new();
    for part in allowed_cpus()?.split(',') {
        let (from, to) = part.split_once('-').unwrap_or((part, part));
        let (from, to): (u32, u32) = (from.trim().parse().ok()?, to.trim().parse().ok()?);
        cpus.extend(from..=to);
        if cpus.len() >= 2 {
            break;
        }
    }
    match cpus[..] {
        [server, clients, ..] => Some((server.to_string(), clients.to_string())),
        _ => None,
    }
}

/// Pins every thread of this process to `cpus` (`taskset -a -p -c`); threads started later
/// inherit it from the thread that starts them.
fn pin_self(cpus: &str) {
    let done = std::process::Command::new("taskset")
        .args(["-a", "-p", "-c", cpus, &std::process::id().to_string()])
        .stdout(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(done, "taskset could not pin this process to CPU {cpus}");
}

/// Section 1's load on one database, against keywardd as a child process (so that its CPU time
/// is its own, from /proc/PID/stat): clients signing in again and again for the run's time.
/// With `cores`, keywardd runs on the first only and this process (the clients and their
/// software keys) on the second, for the timed part.
async fn sign_ins(db: &str, dir: &Path, s: &Sizes, cores: Option<(String, String)>) -> SignIns {
    std::fs::create_dir_all(dir).unwrap();
    let keywardd = instances::launch(
        0,
        db,
        &dir.join("log-key"),
        dir.join("keywardd.log"),
        cores.as_ref().map(|(server, _)| server.as_str()),
    )
    .await;
    let c = Arc::new(instances::ceremonies_at(&keywardd, "bench client"));
    let mut users = Vec::new();
    for i in 0..s.clients {
        let mut key = VirtualKey::ephemeral();
        let name = format!("user{i}");
        let me = c.create_account(&mut key, &name, None, None).await.unwrap();
        users.push((key, name, me.device_secret));
    }
    let unpinned = allowed_cpus();
    if let Some((_, clients)) = &cores {
        pin_self(clients);
    }
    let tick = instances::cpu::ticks_per_second();
    let before = Usage::now(keywardd.pid(), tick);
    let deadline = Instant::now() + Duration::from_secs(s.throughput_secs);
    let mut tasks = Vec::new();
    for (mut key, name, mut secret) in users {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            while Instant::now() < deadline {
                let t = Instant::now();
                let signed = c
                    .sign_in(&mut key, Some(&name), Some(secret.clone()))
                    .await
                    .unwrap();
                lat.push(t.elapsed());
                secret = signed.device_secret;
            }
            lat
        }));
    }
    let mut lat = Lat(Vec::new());
    for t in tasks {
        lat.0.extend(t.await.unwrap());
    }
    let after = Usage::now(keywardd.pid(), tick);
    if let (Some(_), Some(all)) = (&cores, unpinned) {
        pin_self(&all);
    }
    let (busy, total) = (
        after.machine.0 - before.machine.0,
        after.machine.1 - before.machine.1,
    );
    let elapsed = after.at - before.at;
    SignIns {
        lat,
        elapsed,
        keywardd: after.keywardd.saturating_sub(before.keywardd),
        clients: after.clients.saturating_sub(before.clients),
        machine_busy: elapsed.mul_f64(busy as f64 / total.max(1) as f64 * crate::cores() as f64),
        pinned: cores,
    }
}

/// The calling thread's CPU time so far, in ns (Linux: the first field of its schedstat).
fn thread_cpu_ns() -> Option<u64> {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// `finish_passkey_authentication` over pre-made assertions, on one thread and on all cores;
/// `peer_fixture` also writes the first 2,000 for the peers (section 7).
fn bare_verification(n: usize, peer_fixture: bool) -> (f64, f64) {
    use webauthn_rs::prelude::*;
    let origin = Url::parse("http://localhost:8080").unwrap();
    let rp = WebauthnBuilder::new("localhost", &origin)
        .unwrap()
        .build()
        .unwrap();
    let mut key = SoftKey::new(keyward_core::aaguid::KEYWARD_VIRTUAL_KEY);
    let (ccr, reg) = rp
        .start_passkey_registration(Uuid::new_v4(), "bench", "bench", None)
        .unwrap();
    let credential = key.register(&origin, &ccr).unwrap();
    let passkey = rp.finish_passkey_registration(&credential, &reg).unwrap();
    let mut signing = Duration::ZERO;
    let assertions: Vec<_> = (0..n)
        .map(|_| {
            let (rcr, state) = rp
                .start_passkey_authentication(std::slice::from_ref(&passkey))
                .unwrap();
            let t = Instant::now();
            let a = key.authenticate(&origin, &rcr).unwrap();
            signing += t.elapsed();
            (a, state)
        })
        .collect();
    println!(
        "   (software key: {:.0} assertions/s on one core, the client's share of each sign-in)",
        n as f64 / signing.as_secs_f64()
    );
    let verify = |items: &[(PublicKeyCredential, PasskeyAuthentication)]| {
        for (a, state) in items {
            rp.finish_passkey_authentication(a, state).unwrap();
        }
    };
    if peer_fixture {
        write_peer_fixture(&origin, &credential, &assertions[..n.min(2000)]);
    }
    let half = &assertions[..n / 2];
    let cpu = thread_cpu_ns();
    let t = Instant::now();
    verify(half);
    let one = half.len() as f64 / t.elapsed().as_secs_f64();
    // On a shared machine the wall clock also counts other processes' turns; the thread's own
    // CPU time does not.
    if let (Some(before), Some(after)) = (cpu, thread_cpu_ns()) {
        println!(
            "   (one thread: {:.1} us of its own CPU time per finish_passkey_authentication)",
            after.saturating_sub(before) as f64 / 1e3 / half.len() as f64
        );
    }
    let threads = cores();
    let t = Instant::now();
    std::thread::scope(|scope| {
        for chunk in assertions.chunks(n.div_ceil(threads)) {
            scope.spawn(|| verify(chunk));
        }
    });
    let all = n as f64 / t.elapsed().as_secs_f64();
    (one, all)
}

// ---------------------------------------------------------------------------------------------
// 2. Session checks with a million sessions stored

async fn session_checks(s: &Sizes) {
    println!("== 2. Session check latency");
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("keyward.db");
    let mut on_sqlite = checks_on(Location::Sqlite(db.clone()), &db, s.sessions, s).await;
    // The same checks on PostgreSQL, when `./dev bench` started one (a fresh schema).
    let mut on_postgres = match postgres_url() {
        Some(url) => {
            let url = keyward_core::store::testing::fresh_schema(&url).unwrap();
            let pg_db = dir.path().join("postgres");
            Some(checks_on(Location::parse(&url).unwrap(), &pg_db, s.pg_sessions, s).await)
        }
        None => None,
    };
    println!(
        "   {} sessions stored in {:.1} s",
        s.sessions,
        on_sqlite.stored_in.as_secs_f64()
    );
    println!(
        "   method: {} checks of distinct sessions picked across all {}, each active in the \
         last 30 s (so the check is a read; activity is recorded every 30 s per session)",
        on_sqlite.sampled, s.sessions
    );
    println!(
        "   check in keywardd (token hash lookup, account, liveness): {}",
        on_sqlite.direct.summary()
    );
    println!(
        "   whole HTTP request GET /api/v1/account over loopback: {}",
        on_sqlite.http.summary()
    );
    println!(
        "   goal p99 < 200 us for the check: {}",
        verdict(on_sqlite.direct.pct(0.99) < Duration::from_micros(200))
    );
    println!(
        "   bound session (DPoP proof verified, its jti recorded: a write): check in keywardd {}",
        on_sqlite.bound_direct.summary()
    );
    println!(
        "   bound session, whole HTTP request with its proof signed by the client: {}",
        on_sqlite.bound_http.summary()
    );
    if let Some(pg) = &mut on_postgres {
        println!(
            "   on PostgreSQL 15 (same machine, loopback; {} checks across {} sessions, stored in \
             {:.1} s):",
            pg.sampled,
            s.pg_sessions,
            pg.stored_in.as_secs_f64()
        );
        println!(
            "     check in keywardd (a REPEATABLE READ read-only transaction): {}",
            pg.direct.summary()
        );
        println!(
            "     whole HTTP request GET /api/v1/account over loopback: {}",
            pg.http.summary()
        );
        println!(
            "     goal p99 < 200 us for the check: {}",
            verdict(pg.direct.pct(0.99) < Duration::from_micros(200))
        );
        println!(
            "     bound session: check in keywardd {}; whole HTTP request {}",
            pg.bound_direct.summary(),
            pg.bound_http.summary()
        );
    }
    println!();
}

/// Section 2's measurements on one database.
struct Checks {
    stored_in: Duration,
    sampled: usize,
    direct: Lat,
    http: Lat,
    /// The same for one session bound to a device key: proof verified, jti recorded.
    bound_direct: Lat,
    bound_http: Lat,
}

/// Section 2 on one database: the sessions stored, then the checks over HTTP and in keywardd.
async fn checks_on(location: Location, db: &Path, sessions: usize, s: &Sizes) -> Checks {
    let (server, base) = serve_on(location.clone(), db, 0).await;
    let c = ceremonies(&base, "bench").await;
    let mut key = VirtualKey::ephemeral();
    let me = c.create_account(&mut key, "ada", None, None).await.unwrap();
    let store = keyward_core::Store::connect(&location).unwrap();
    let (account, device) = account_and_device(&store, me.session.id);
    let t = Instant::now();
    let (tokens, ids) = insert_sessions(&store, account, device, sessions);
    let stored_in = t.elapsed();
    // The sessions were last active when they were stored (at `t`).
    let mut active_since = t;
    let step = (tokens.len() / s.checks).max(1);
    let sample: Vec<&String> = tokens.iter().step_by(step).take(s.checks).collect();
    let sample_ids: Vec<Uuid> = ids.iter().step_by(step).take(s.checks).copied().collect();
    // Checks must find their sessions active in the last 30 s, or they would take the write
    // path (recording activity): on a slow engine a pass can outlast that, so the sample is
    // marked active again, outside the timings, before 20 s have passed.
    let mut keep_active = || {
        if active_since.elapsed() > Duration::from_secs(20) {
            active_since = Instant::now();
            mark_active(&store, &sample_ids);
        }
    };

    // Over HTTP: GET /api/v1/account, one request at a time.
    let api = Api::new(base.clone());
    let mut http = Lat(Vec::new());
    for chunk in sample.chunks(500) {
        keep_active();
        for token in chunk {
            let authed = api.with_token(token.as_str());
            let t = Instant::now();
            authed.account().await.unwrap();
            http.0.push(t.elapsed());
        }
    }
    // The check alone, in keywardd's own code (no HTTP).
    let state = server.state.clone();
    let mut direct = Lat(Vec::new());
    for chunk in sample.chunks(500) {
        keep_active();
        for token in chunk {
            let t = Instant::now();
            state.relying_party().authenticate(token, None).unwrap();
            direct.0.push(t.elapsed());
        }
    }
    // A session bound to a device key (DPoP): each check verifies a fresh proof (signed
    // beforehand, outside the timing) and records its jti once, so it always writes.
    let proof_key = keyward_core::proof_key::ProofKey::generate();
    let bound = c
        .binding_sessions_to(proof_key.clone())
        .sign_in(&mut key, Some("ada"), None)
        .await
        .unwrap();
    let url = format!("{}/api/v1/account", base.as_str().trim_end_matches('/'));
    let rp = state.relying_party();
    let mut bound_direct = Lat(Vec::new());
    for _ in 0..sample.len().min(2_000) {
        let proof = keyward_server::RequestProof {
            proof: proof_key.dpop_proof(
                "GET",
                &url,
                keyward_core::Clock::now(&keyward_core::SystemClock) / 1000,
                Some(&bound.token),
                Some(&rp.dpop_nonce()),
            ),
            method: "GET".into(),
            urls: vec![url.clone()],
        };
        let t = Instant::now();
        rp.authenticate(&bound.token, Some(&proof)).unwrap();
        bound_direct.0.push(t.elapsed());
    }
    let bound_api = api.with_bound_token(&bound.token, proof_key);
    let mut bound_http = Lat(Vec::new());
    for _ in 0..sample.len().min(2_000) {
        let t = Instant::now();
        bound_api.account().await.unwrap();
        bound_http.0.push(t.elapsed());
    }
    server.shutdown(Duration::from_secs(1)).await;
    Checks {
        stored_in,
        sampled: sample.len(),
        direct,
        http,
        bound_direct,
        bound_http,
    }
}

// ---------------------------------------------------------------------------------------------
// 3. Revocation

async fn revocation(s: &Sizes) {
    println!("== 3. Revocation: \"end session\" to refusal, and to the revoked stream told");
    let Fixture {
        _dir,
        server,
        c,
        mut key,
        me,
        ..
    } = with_account("owner").await;
    let owner = c.api.with_token(&me.token);
    let mut accepted_after_commit = 0;
    let mut refusal = Lat(Vec::new());
    let mut told = Lat(Vec::new());
    for _ in 0..s.revocations {
        let victim = c.sign_in(&mut key, Some("ada"), None).await.unwrap();
        let victim_api = c.api.with_token(&victim.token);
        let (mut events, _task) = EventFeed::spawn(victim_api.clone(), victim.session.id, None);
        // The stream subscribes, then we make sure it is live: an event must reach it.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let t0 = Instant::now();
        owner.end_session(victim.session.id).await.unwrap();
        let refused = victim_api.account().await.is_err();
        refusal.0.push(t0.elapsed());
        if !refused {
            accepted_after_commit += 1;
        }
        loop {
            match tokio::time::timeout(Duration::from_secs(5), events.recv()).await {
                Ok(Some(e)) if e.kind == EventKind::SessionEnded => {
                    told.0.push(t0.elapsed());
                    break;
                }
                Ok(Some(_)) => continue,
                _ => break,
            }
        }
    }
    server.shutdown(Duration::from_secs(1)).await;
    println!(
        "   method: {} times: sign in a victim session with a live event stream; the owner \
         ends it; the victim's next request starts the moment the owner's request returns",
        s.revocations
    );
    println!(
        "   (a) requests accepted after the commit: {accepted_after_commit}   (end + refused \
         request: {})   goal 0: {}",
        refusal.summary(),
        verdict(accepted_after_commit == 0)
    );
    let p99 = told.pct(0.99);
    println!(
        "   (b) revoked stream told (session_ended received): {}   goal p99 < 50 ms: {}",
        told.summary(),
        verdict(p99 < Duration::from_millis(50) && told.0.len() == s.revocations)
    );
    println!();
}

// ---------------------------------------------------------------------------------------------
// 4. Alert fan-out

async fn fan_out(s: &Sizes) {
    println!("== 4. Alert fan-out to {} connected streams", s.streams);
    let Fixture {
        _dir,
        db,
        server,
        base,
        c,
        mut key,
        me,
    } = with_account("owner").await;
    let store = keyward_core::Store::open(&db).unwrap();
    let (account, device) = account_and_device(&store, me.session.id);
    let (tokens, ids) = insert_sessions(&store, account, device, s.streams);
    drop(store);
    let api = Api::new(base.clone());
    let mut feeds = Vec::new();
    for (token, id) in tokens.iter().zip(&ids) {
        feeds.push(EventFeed::spawn(api.with_token(token.as_str()), *id, None));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut slowest = Lat(Vec::new());
    let mut every = Lat(Vec::new());
    for _ in 0..s.fanouts {
        let t0 = Instant::now();
        let signed = c.sign_in(&mut key, Some("ada"), None).await.unwrap();
        let mut worst = Duration::ZERO;
        for (events, _) in feeds.iter_mut() {
            loop {
                let e = tokio::time::timeout(Duration::from_secs(10), events.recv())
                    .await
                    .expect("stream delivered in time")
                    .expect("stream open");
                if e.kind == EventKind::SignIn && e.session_id == Some(signed.session.id) {
                    let d = t0.elapsed();
                    every.0.push(d);
                    worst = worst.max(d);
                    break;
                }
            }
        }
        slowest.0.push(worst);
    }
    server.shutdown(Duration::from_secs(1)).await;
    println!(
        "   method: {} SSE streams of one account open; {} sign-ins; time from the sign-in \
         request starting to its event arriving at each stream (includes the ceremony itself)",
        s.streams, s.fanouts
    );
    println!("   last stream reached: {}", slowest.summary());
    println!("   every delivery: {}", every.summary());
    println!(
        "   goal p99 < 250 ms to all streams: {}",
        verdict(slowest.pct(0.99) < Duration::from_millis(250))
    );
    println!();
}

// ---------------------------------------------------------------------------------------------
// 6. Durability under kill -9

async fn durability() {
    println!("== 6. Durability: kill -9 keywardd in the middle of a sign-in load");
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("keyward.db");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let exe = std::env::current_exe().unwrap();
    let spawn = || {
        std::process::Command::new(&exe)
            .args(["--serve", db.to_str().unwrap(), &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    let base = Url::parse(&format!("http://localhost:{port}")).unwrap();
    let wait_up = || async {
        for _ in 0..200 {
            if Api::new(base.clone()).health().await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("keywardd did not start");
    };
    let mut child = spawn();
    wait_up().await;
    let c = Arc::new(ceremonies(&base, "load").await);
    let mut users = Vec::new();
    for i in 0..16 {
        let mut key = VirtualKey::ephemeral();
        let name = format!("user{i}");
        c.create_account(&mut key, &name, None, None).await.unwrap();
        users.push((key, name));
    }
    let acknowledged = Arc::new(std::sync::Mutex::new(Vec::<Uuid>::new()));
    let mut load = Vec::new();
    for (mut key, name) in users {
        let (c, acknowledged) = (c.clone(), acknowledged.clone());
        load.push(tokio::spawn(async move {
            while let Ok(signed) = c.sign_in(&mut key, Some(&name), None).await {
                acknowledged.lock().unwrap().push(signed.session.id);
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let in_flight_at_kill = acknowledged.lock().unwrap().len();
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    for t in load {
        t.await.ok();
    }
    let acknowledged = acknowledged.lock().unwrap().clone();

    // Restart: WAL recovery happens on open. Then check what clients were told was done.
    let mut child = spawn();
    wait_up().await;
    let store = keyward_core::Store::open(&db).unwrap();
    let conn = rusqlite::Connection::open(&db).unwrap();
    let integrity: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    let mut lost_sessions = 0;
    let mut lost_events = 0;
    for id in &acknowledged {
        let sessions: i64 = conn
            .query_row(
                "SELECT count(*) FROM sessions WHERE id = ?1",
                [id.as_bytes()],
                |r| r.get(0),
            )
            .unwrap();
        let events: i64 = conn
            .query_row(
                "SELECT count(*) FROM events WHERE session_id = ?1 AND kind = 'sign_in'",
                [id.as_bytes()],
                |r| r.get(0),
            )
            .unwrap();
        lost_sessions += (sessions == 0) as usize;
        lost_events += (events == 0) as usize;
    }
    let chain = store.verify_chain().unwrap();
    let after = ceremonies(&base, "after").await;
    let mut key = VirtualKey::ephemeral();
    let works = after
        .create_account(&mut key, "after-restart", None, None)
        .await
        .is_ok();
    child.kill().ok();
    child.wait().ok();
    println!(
        "   method: 16 clients signing in against a keywardd child process; SIGKILL after \
         1.5 s; restart; check every sign-in a client was told succeeded"
    );
    println!(
        "   sign-ins acknowledged before the kill: {} ({} counted at the kill)",
        acknowledged.len(),
        in_flight_at_kill
    );
    println!(
        "   lost sessions: {lost_sessions}, lost sign-in events: {lost_events}, integrity_check: \
         {integrity}, hash chain: {} events, {}",
        chain.events,
        match chain.first_broken {
            None => "intact".to_string(),
            Some(seq) => format!("BROKEN at {seq}"),
        }
    );
    println!(
        "   restarted keywardd serves: {works}   goal nothing lost, chain intact: {}",
        verdict(
            lost_sessions == 0
                && lost_events == 0
                && integrity == "ok"
                && chain.first_broken.is_none()
                && works
        )
    );
    println!();
}

// ---------------------------------------------------------------------------------------------
// 7. Beside the peers: the same assertions verified by SimpleWebAuthn (Node) and py_webauthn

fn peer_fixture_path() -> PathBuf {
    std::env::temp_dir().join("keyward-peer-assertions.json")
}

/// The credential's COSE public key, from the attestation object's authenticator data.
fn cose_public_key(credential: &webauthn_rs::prelude::RegisterPublicKeyCredential) -> Vec<u8> {
    use serde_cbor_2::Value;
    let object: Value =
        serde_cbor_2::from_slice(credential.response.attestation_object.as_ref()).unwrap();
    let Value::Map(map) = object else {
        panic!("attestation object is a map")
    };
    let Some(Value::Bytes(auth_data)) = map.get(&Value::Text("authData".into())) else {
        panic!("authData")
    };
    // rpIdHash 32, flags 1, counter 4, AAGUID 16, credential ID length 2, ID, then the key.
    let id_len = u16::from_be_bytes([auth_data[53], auth_data[54]]) as usize;
    auth_data[55 + id_len..].to_vec()
}

fn write_peer_fixture(
    origin: &Url,
    credential: &webauthn_rs::prelude::RegisterPublicKeyCredential,
    assertions: &[(
        webauthn_rs::prelude::PublicKeyCredential,
        webauthn_rs::prelude::PasskeyAuthentication,
    )],
) {
    use keyward_core::secret::b64;
    let items: Vec<serde_json::Value> = assertions
        .iter()
        .map(|(a, _)| {
            let client_data: serde_json::Value =
                serde_json::from_slice(a.response.client_data_json.as_ref()).unwrap();
            let mut response = serde_json::to_value(a).unwrap();
            response["clientExtensionResults"] = serde_json::json!({});
            serde_json::json!({ "challenge": client_data["challenge"], "response": response })
        })
        .collect();
    let fixture = serde_json::json!({
        "origin": origin.as_str().trim_end_matches('/'),
        "rp_id": "localhost",
        "credential_id": b64(credential.raw_id.as_ref()),
        "public_key_cose": b64(&cose_public_key(credential)),
        "assertions": items,
    });
    std::fs::write(peer_fixture_path(), fixture.to_string()).unwrap();
}

/// Runs each peer on the fixture; `None` where its runtime or package is not installed
/// (`./dev bench` installs both).
fn peers() -> Vec<(String, Option<(String, f64)>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/peers");
    let fixture = peer_fixture_path();
    let venv_python =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/peers-venv/bin/python");
    let python = if venv_python.exists() {
        venv_python
    } else {
        PathBuf::from("python3")
    };
    let runs = [
        (
            "SimpleWebAuthn (Node)",
            PathBuf::from("node"),
            root.join("simplewebauthn.mjs"),
        ),
        ("py_webauthn", python, root.join("py_webauthn_bench.py")),
    ];
    runs.into_iter()
        .map(|(name, program, script)| {
            let out = std::process::Command::new(program)
                .arg(&script)
                .arg(&fixture)
                .current_dir(&root)
                .output();
            let parsed = out.ok().filter(|o| o.status.success()).and_then(|o| {
                let v: serde_json::Value = serde_json::from_slice(&o.stdout).ok()?;
                Some((
                    format!(
                        "{} {}, {} verified",
                        v["library"].as_str()?,
                        v["version"].as_str()?,
                        v["verified"]
                    ),
                    v["per_second"].as_f64()?,
                ))
            });
            (name.to_string(), parsed)
        })
        .collect()
}

async fn rename_events(data_dir: &Path, username: &str, n: usize) {
    let port = std::fs::read_to_string(data_dir.join("embedded-port")).unwrap();
    let base = Url::parse(&format!("http://localhost:{}", port.trim())).unwrap();
    let c = ceremonies(&base, "event source").await;
    let mut key = VirtualKey::open(&data_dir.join("virtual-keys.json")).unwrap();
    let me = c.sign_in(&mut key, Some(username), None).await.unwrap();
    let session = c.api.with_token(&me.token);
    let id = session.authenticators().await.unwrap()[0].id;
    for i in 0..n {
        session
            .rename_authenticator(id, &format!("Key {i}"))
            .await
            .unwrap();
    }
}
