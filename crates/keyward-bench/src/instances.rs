//! Sections 8 to 10: several keywardd instances on one PostgreSQL database, as behind a load
//! balancer. Each instance is a child process: this binary run with `--instance`, which serves
//! with keywardd's own `start_on` and section 1's load limits lifted (every client here is
//! 127.0.0.1). Processes, not servers inside this one, so that each has its own PostgreSQL I/O
//! thread, pool and listener, and so that `/proc/PID/stat` can tell their CPU time apart.
//! Clients reach each instance at its own port, under one origin (the load balancer's name).
//!
//! Children end with this process however it ends: dropping an [`Instance`] ends it (also
//! when a section panics: its stdin is closed, then it is killed if it has not exited within
//! a second), and a child whose stdin (held by this process) reaches its end exits by itself,
//! which covers this process being killed.

use std::io::{BufRead, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use keyward_client::{Api, Authenticator, Ceremonies, ClientError, Site, VirtualKey};
use keyward_core::store::Location;
use keyward_proto::{
    ClientInfo, EventKind, SecurityEvent, SignInBeginRequest, SignInFinishRequest, SignedIn,
};
use keyward_server::Config;
use tokio::sync::mpsc;
use url::Url;

use crate::{Lat, Sizes, fmt, lift_load_limits, postgres_url, verdict};

/// The one origin every instance runs ceremonies for, as a load balancer's public name
/// (nothing listens there; each instance answers under its own port, without `check_host`).
const ORIGIN: &str = "http://localhost:8443";

/// How long a bounded wait (an instance starting, an event arriving) may take.
const PATIENCE: Duration = Duration::from_secs(20);

/// The child: keywardd on `db` with the deployment's log key and origin, on a free loopback
/// port, which it prints as "listening on ADDR".
pub(crate) fn serve_instance(db: &str, log_key: &Path, origin: &str) {
    // The parent holds the other end of stdin: at its end, the parent is gone.
    std::thread::spawn(|| {
        let mut stdin = std::io::stdin();
        let mut buf = [0u8; 64];
        loop {
            match stdin.read(&mut buf) {
                Ok(0) | Err(_) => std::process::exit(0),
                Ok(_) => {}
            }
        }
    });
    let filter = tracing_subscriber::EnvFilter::try_from_env("KEYWARD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let addr = listener.local_addr().unwrap();
        let mut config = Config::local(Location::parse(db).unwrap(), Url::parse(origin).unwrap());
        config.log_key = Some(log_key.to_path_buf());
        // Reached under its own port, not the origin's.
        config.check_host = false;
        lift_load_limits(&mut config);
        let server =
            keyward_server::start_on(listener, config, Arc::new(keyward_core::SystemClock))
                .await
                .unwrap();
        println!("listening on {addr}");
        server.wait().await.ok();
    });
}

// ---------------------------------------------------------------------------------------------
// Instances

/// keywardd instances on one fresh schema, with one log key and one origin.
struct Deployment {
    /// `--db`: the schema's URL.
    url: String,
    /// Names this deployment's connections (`application_name`) in `pg_stat_activity`.
    tag: String,
    dir: tempfile::TempDir,
    instances: Vec<Instance>,
}

impl Deployment {
    fn new(server: &str) -> Deployment {
        Deployment {
            url: keyward_core::store::testing::fresh_schema(server).unwrap(),
            tag: format!(
                "keyward-bench-{}",
                &uuid::Uuid::new_v4().simple().to_string()[..8]
            ),
            dir: tempfile::tempdir().unwrap(),
            instances: Vec::new(),
        }
    }

    /// Starts `n` instances and waits until each listens for the others' commits. The first
    /// makes the log key; the others start once it has (two first starts would each make one).
    async fn start(&mut self, n: usize) -> keyward_core::Store {
        let first = self.start_one(0).await;
        self.instances.push(first);
        let rest = futures::future::join_all((1..n).map(|i| self.start_one(i))).await;
        self.instances.extend(rest);
        // The schema is migrated by now: this connection only watches.
        let monitor = keyward_core::Store::connect(&Location::parse(&self.url).unwrap()).unwrap();
        for instance in &self.instances {
            instance.wait_for_listener(&monitor).await;
        }
        monitor
    }

    async fn start_one(&self, n: usize) -> Instance {
        let log = self.dir.path().join(format!("instance-{n}.log"));
        let app = format!("{}-{n}", self.tag);
        let db = format!("{}&application_name={app}", self.url);
        let mut instance = launch(n, &db, &self.dir.path().join("log-key"), log, None).await;
        instance.app = app;
        instance
    }
}

/// Starts keywardd instance `n` as a child process on `db` (a SQLite file or a PostgreSQL
/// URL) with `log_key`, for [`ORIGIN`], its stderr in `log`; returns once it listens. With
/// `cpus`, it runs under `taskset -c CPUS`, which execs it: the child's PID is keywardd's.
pub(crate) async fn launch(
    n: usize,
    db: &str,
    log_key: &Path,
    log: PathBuf,
    cpus: Option<&str>,
) -> Instance {
    let exe = std::env::current_exe().unwrap();
    let mut command = match cpus {
        Some(cpus) => {
            let mut taskset = Command::new("taskset");
            taskset.arg("-c").arg(cpus).arg(exe);
            taskset
        }
        None => Command::new(exe),
    };
    let stderr = std::fs::File::create(&log).unwrap();
    let mut child = command
        .arg("--instance")
        .arg(db)
        .arg(log_key)
        .arg(ORIGIN)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    // Owned from here: dropped (killed) whatever happens next.
    let mut instance = Instance {
        n,
        child,
        base: Url::parse(ORIGIN).unwrap(),
        log,
        app: String::new(),
    };
    let said = tokio::time::timeout(
        PATIENCE,
        tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            std::io::BufReader::new(stdout).read_line(&mut line).ok();
            line
        }),
    )
    .await;
    let addr = match said {
        Ok(Ok(line)) => line
            .trim()
            .strip_prefix("listening on ")
            .map(str::to_string),
        _ => None,
    };
    let Some(addr) = addr else {
        panic!(
            "instance {n} did not start:\n{}",
            std::fs::read_to_string(&instance.log).unwrap_or_default()
        );
    };
    instance.base = Url::parse(&format!("http://{addr}")).unwrap();
    instance
}

/// One keywardd child process; ended when dropped.
pub(crate) struct Instance {
    n: usize,
    child: Child,
    base: Url,
    /// Its stderr.
    log: PathBuf,
    /// Its connections' `application_name`.
    app: String,
}

impl Instance {
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits (boundedly) until its LISTEN connection is up, as PostgreSQL sees it.
    async fn wait_for_listener(&self, monitor: &keyward_core::Store) {
        let deadline = Instant::now() + PATIENCE;
        while Instant::now() < deadline {
            let listening = monitor
                .read(|tx| {
                    tx.raw_value::<i64>(
                        "SELECT COUNT(*) FROM pg_stat_activity \
                         WHERE application_name = ?1 AND query = 'LISTEN keyward_events'",
                        &[&self.app.as_str()],
                    )
                })
                .unwrap_or(0);
            if listening > 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "instance {} never listened for commits:\n{}",
            self.n,
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let from = (log.len().saturating_sub(4_000)..log.len())
                .find(|i| log.is_char_boundary(*i))
                .unwrap_or(log.len());
            let tail = &log[from..];
            eprintln!("--- instance {} said:\n{tail}", self.n);
        }
        // Its stdin ends (it exits by itself); a moment later it is killed if it has not.
        drop(self.child.stdin.take());
        for _ in 0..100 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn bench_client(name: &str) -> ClientInfo {
    ClientInfo {
        name: name.into(),
        platform: "Linux".into(),
    }
}

/// Ceremonies run against one instance for the deployment's origin, as a browser on the load
/// balancer's name would run them whichever instance answers.
pub(crate) fn ceremonies_at(instance: &Instance, name: &str) -> Ceremonies {
    let site = Site::of(&Url::parse(ORIGIN).unwrap(), "localhost").unwrap();
    Ceremonies::new(Api::new(instance.base.clone()), site, bench_client(name))
}

// ---------------------------------------------------------------------------------------------
// An event stream read raw, with the time each thing arrived

/// What a stream delivered, and when: an event, or (None) its end.
struct Heard {
    at: Instant,
    event: Option<SecurityEvent>,
}

/// Opens `/api/v1/events/stream` on `base` with `token`. Returns once keywardd has answered:
/// by then the stream is subscribed to live events (it answers after subscribing).
async fn open_stream(
    http: &reqwest::Client,
    base: &Url,
    token: &str,
) -> mpsc::UnboundedReceiver<Heard> {
    let mut res = http
        .get(base.join("/api/v1/events/stream").unwrap())
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert!(
        res.status().is_success(),
        "stream refused: {}",
        res.status()
    );
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut buf: Vec<u8> = Vec::new();
        while let Ok(Some(chunk)) = res.chunk().await {
            let at = Instant::now();
            buf.extend_from_slice(&chunk);
            while let Some(end) = buf.windows(2).position(|w| w == b"\n\n") {
                let frame: Vec<u8> = buf.drain(..end + 2).collect();
                if let Some(event) = parse_frame(&String::from_utf8_lossy(&frame)) {
                    let _ = tx.send(Heard {
                        at,
                        event: Some(event),
                    });
                }
            }
        }
        let _ = tx.send(Heard {
            at: Instant::now(),
            event: None,
        });
    });
    rx
}

/// A `security_event` frame's event (keep-alive comments and other frames: None).
fn parse_frame(frame: &str) -> Option<SecurityEvent> {
    if !frame
        .lines()
        .any(|l| l.trim_end() == "event: security_event")
    {
        return None;
    }
    let data: Vec<&str> = frame
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(|d| d.strip_prefix(' ').unwrap_or(d))
        .collect();
    serde_json::from_str(&data.join("\n")).ok()
}

/// When the first event `wanted` arrived (skipping others), or None if the stream ended or
/// nothing came within `PATIENCE`.
async fn arrival_of(
    stream: &mut mpsc::UnboundedReceiver<Heard>,
    wanted: impl Fn(&SecurityEvent) -> bool,
) -> Option<Instant> {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        match tokio::time::timeout_at(deadline, stream.recv()).await {
            Ok(Some(Heard { at, event: Some(e) })) if wanted(&e) => return Some(at),
            Ok(Some(Heard { event: Some(_), .. })) => continue,
            _ => return None,
        }
    }
}

/// When the stream ended (events before the end skipped), or None if it was still open after
/// `PATIENCE`.
async fn end_of(stream: &mut mpsc::UnboundedReceiver<Heard>) -> Option<Instant> {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        match tokio::time::timeout_at(deadline, stream.recv()).await {
            Ok(Some(Heard { at, event: None })) => return Some(at),
            Ok(Some(_)) => continue,
            Ok(None) => return Some(Instant::now()),
            Err(_) => return None,
        }
    }
}

/// `at` after `answered`, and whether it came first (then zero: the event left before the
/// response reached the client).
fn after(at: Instant, answered: Instant) -> (Duration, bool) {
    (at.saturating_duration_since(answered), at < answered)
}

// ---------------------------------------------------------------------------------------------
// 8 and 9. Cross-instance alert and revocation latency

/// Not timed: the first few trials warm connections, statement caches and pools.
const WARM_UP: usize = 3;

pub(crate) async fn cross_instance(s: &Sizes, alerts: bool, revocations: bool) {
    let Some(server) = postgres_url() else {
        println!(
            "== 8, 9. Cross-instance alert and revocation latency: not run (they need \
             KEYWARD_BENCH_POSTGRES, which ./dev bench sets)"
        );
        println!();
        return;
    };
    let mut deployment = Deployment::new(&server);
    let _monitor = deployment.start(2).await;
    let (a, b) = (&deployment.instances[0], &deployment.instances[1]);
    let on_a = ceremonies_at(a, "bench on A");
    let mut key = VirtualKey::ephemeral();
    let me = on_a
        .create_account(&mut key, "ada", None, None)
        .await
        .unwrap();
    if alerts {
        cross_alerts(s, &on_a, &b.base, &mut key, &me).await;
    }
    if revocations {
        cross_revocations(s, &on_a, &b.base, &mut key, &me).await;
    }
}

async fn cross_alerts(s: &Sizes, on_a: &Ceremonies, b: &Url, key: &mut VirtualKey, me: &SignedIn) {
    println!(
        "== 8. Cross-instance alert latency: a sign-in finished on instance A, its event on a \
         stream held on instance B"
    );
    let http = reqwest::Client::new();
    let mut stream = open_stream(&http, b, &me.token).await;
    let mut from_response = Lat(Vec::new());
    let mut from_request = Lat(Vec::new());
    let (mut first, mut missing) = (0, 0);
    for trial in 0..WARM_UP + s.cross_trials {
        let begin = on_a
            .api
            .sign_in_begin(&SignInBeginRequest {
                username: Some("ada".into()),
            })
            .await
            .unwrap();
        let credential = key
            .authenticate(on_a.site().origin_url(), &begin.options)
            .unwrap();
        let sent = Instant::now();
        let signed = on_a
            .api
            .sign_in_finish(&SignInFinishRequest {
                ceremony_id: begin.ceremony_id,
                credential,
                client: on_a.client.clone(),
                device_secret: None,
                binding: None,
            })
            .await
            .unwrap();
        let answered = Instant::now();
        let session = signed.session.id;
        let arrived = arrival_of(&mut stream, |e| {
            e.kind == EventKind::SignIn && e.session_id == Some(session)
        })
        .await;
        if trial < WARM_UP {
            continue;
        }
        match arrived {
            Some(at) => {
                let (d, came_first) = after(at, answered);
                from_response.0.push(d);
                from_request.0.push(at - sent);
                first += came_first as usize;
            }
            None => missing += 1,
        }
    }
    println!(
        "   method: instances A and B (keywardd child processes, one PostgreSQL database; a \
         commit's pg_notify wakes the other instance's streams). The account's stream is held \
         open on B; {} times (after {WARM_UP} untimed): a sign-in begun and finished on A; time \
         from A's finish response to the sign-in's event arriving on B's stream",
        s.cross_trials
    );
    println!(
        "   A's finish response to B's stream: {}   ({first} arrived before the response \
         reached the client: counted as 0; {missing} not within {} s)",
        from_response.summary(),
        PATIENCE.as_secs()
    );
    println!(
        "   (from the finish request's start, the ceremony's commit included: {})",
        from_request.summary()
    );
    println!(
        "   goal p99 < 100 ms on loopback: {}",
        verdict(from_response.pct(0.99) < Duration::from_millis(100) && missing == 0)
    );
    println!();
}

async fn cross_revocations(
    s: &Sizes,
    on_a: &Ceremonies,
    b: &Url,
    key: &mut VirtualKey,
    me: &SignedIn,
) {
    println!(
        "== 9. Cross-instance revocation: a session ended on instance A, its stream on \
         instance B told and closed, its next request on B refused"
    );
    let http = reqwest::Client::new();
    let owner = on_a.api.with_token(&me.token);
    let on_b = Api::new(b.clone());
    let mut told = Lat(Vec::new());
    let mut closed = Lat(Vec::new());
    let mut refusal = Lat(Vec::new());
    let (mut accepted, mut first, mut missing) = (0, 0, 0);
    for trial in 0..WARM_UP + s.cross_trials {
        let victim = on_a.sign_in(key, Some("ada"), None).await.unwrap();
        let mut stream = open_stream(&http, b, &victim.token).await;
        owner.end_session(victim.session.id).await.unwrap();
        let answered = Instant::now();
        // The victim's very next request, on B, the moment A's answer is back.
        let next = on_b.with_token(&victim.token).account().await;
        let refused_at = Instant::now();
        let refused = matches!(next, Err(ClientError::Api { status: 401, .. }));
        let id = victim.session.id;
        let ended = arrival_of(&mut stream, |e| {
            e.kind == EventKind::SessionEnded && e.detail.ended_session_id == Some(id)
        })
        .await;
        let end = match ended {
            Some(_) => end_of(&mut stream).await,
            None => None,
        };
        if trial < WARM_UP {
            continue;
        }
        accepted += !refused as usize;
        refusal.0.push(refused_at - answered);
        match (ended, end) {
            (Some(ended), Some(end)) => {
                let (d, came_first) = after(ended, answered);
                told.0.push(d);
                first += came_first as usize;
                closed.0.push(after(end, answered).0);
            }
            _ => missing += 1,
        }
    }
    println!(
        "   method: {} times (after {WARM_UP} untimed): a session S signed in on A, its stream \
         opened on B; the owner's session ends S on A (DELETE /api/v1/sessions/S); S's next \
         request goes to B the moment A's response is back; times from A's response",
        s.cross_trials
    );
    println!(
        "   (a) S's next request on B accepted: {accepted} of {}   (that request took: {})   \
         goal 0: {}",
        s.cross_trials,
        refusal.summary(),
        verdict(accepted == 0)
    );
    println!(
        "   (b) B's stream told (session_ended received): {}   ({first} before A's response \
         reached the client: counted as 0)",
        told.summary()
    );
    println!(
        "       B's stream closed by keywardd: {}   ({missing} not told and closed within {} s)",
        closed.summary(),
        PATIENCE.as_secs()
    );
    println!(
        "   goal p99 < 100 ms (told and closed): {}",
        verdict(closed.pct(0.99) < Duration::from_millis(100) && missing == 0)
    );
    println!();
}

// ---------------------------------------------------------------------------------------------
// 10. Scaling over 1, 2 and 3 instances

/// CPU time, from `/proc`.
pub(crate) mod cpu {
    use std::time::Duration;

    /// Clock ticks per second of `/proc`'s times (`getconf CLK_TCK`; 100 on Linux).
    pub fn ticks_per_second() -> f64 {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .filter(|t: &f64| *t > 0.0)
            .unwrap_or(100.0)
    }

    /// One process's `/proc/PID/stat`: its parent, its own CPU ticks (utime + stime) and its
    /// waited-for children's (cutime + cstime).
    pub struct Stat {
        pub ppid: u32,
        pub own: u64,
        pub children: u64,
    }

    pub fn stat(pid: u32) -> Option<Stat> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // After the command name, which may hold spaces and parentheses.
        let fields: Vec<&str> = text.get(text.rfind(')')? + 2..)?.split(' ').collect();
        let n = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
        Some(Stat {
            ppid: n(1)? as u32,
            own: n(11)? + n(12)?,
            children: n(13)? + n(14)?,
        })
    }

    pub fn of_process(pid: u32, tick: f64) -> Duration {
        Duration::from_secs_f64(stat(pid).map_or(0, |s| s.own) as f64 / tick)
    }

    /// PostgreSQL's CPU time: the postmaster, every process it runs (backends, WAL writer,
    /// checkpointer, autovacuum), and those that have exited (their times are the postmaster's
    /// children's).
    pub fn of_postgres(postmaster: u32, tick: f64) -> Duration {
        let mut ticks = stat(postmaster).map_or(0, |s| s.own + s.children);
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
                continue;
            };
            if let Some(s) = stat(pid).filter(|s| s.ppid == postmaster) {
                ticks += s.own + s.children;
            }
        }
        Duration::from_secs_f64(ticks as f64 / tick)
    }

    /// The whole machine's busy and total ticks, all cores (`/proc/stat`).
    pub fn machine() -> (u64, u64) {
        let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let Some(line) = text.lines().find(|l| l.starts_with("cpu ")) else {
            return (0, 0);
        };
        let v: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .filter_map(|f| f.parse().ok())
            .collect();
        // user nice system idle iowait irq softirq steal (guest is inside user).
        let total: u64 = v.iter().take(8).sum();
        let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
        (total - idle, total)
    }
}

/// The PostgreSQL server's postmaster, if it runs on this machine: the parent of a backend
/// serving `monitor`.
fn postmaster_of(monitor: &keyward_core::Store) -> Option<u32> {
    let backend = monitor
        .read(|tx| tx.raw_value::<i64>("SELECT pg_backend_pid()::bigint", &[]))
        .ok()?;
    let parent = cpu::stat(u32::try_from(backend).ok()?)?.ppid;
    let name = std::fs::read_to_string(format!("/proc/{parent}/comm")).ok()?;
    name.trim().starts_with("postgres").then_some(parent)
}

/// CPU times at one moment.
struct Snapshot {
    at: Instant,
    instances: Vec<Duration>,
    postgres: Option<Duration>,
    clients: Duration,
    machine: (u64, u64),
}

impl Snapshot {
    fn take(instances: &[Instance], postmaster: Option<u32>, tick: f64) -> Snapshot {
        Snapshot {
            at: Instant::now(),
            instances: instances
                .iter()
                .map(|i| cpu::of_process(i.pid(), tick))
                .collect(),
            postgres: postmaster.map(|p| cpu::of_postgres(p, tick)),
            clients: cpu::of_process(std::process::id(), tick),
            machine: cpu::machine(),
        }
    }
}

/// One run of section 10's load (or several with the same number of instances, merged).
struct ScaleRun {
    instances: usize,
    lat: Lat,
    failed: usize,
    /// Sign-ins each instance served.
    served: Vec<usize>,
    /// CPU each instance spent over the run.
    cpu: Vec<Duration>,
    postgres: Option<Duration>,
    clients: Duration,
    elapsed: Duration,
    /// The whole machine's busy time over the run (all cores), ours and other processes'.
    machine_busy: Duration,
}

impl ScaleRun {
    fn signed(&self) -> usize {
        self.lat.0.len()
    }
    fn rate(&self) -> f64 {
        self.signed() as f64 / self.elapsed.as_secs_f64()
    }
    fn per_sign_in(&self, d: Duration) -> Duration {
        d.div_f64(self.signed().max(1) as f64)
    }
    /// Cores `d` kept busy on average over the run.
    fn cores(&self, d: Duration) -> f64 {
        d.as_secs_f64() / self.elapsed.as_secs_f64()
    }
    fn instances_cpu(&self) -> Duration {
        self.cpu.iter().sum()
    }
    /// What other processes on the machine used meanwhile, in cores.
    fn others(&self) -> f64 {
        let ours = self.instances_cpu() + self.postgres.unwrap_or_default() + self.clients;
        self.cores(self.machine_busy.saturating_sub(ours))
    }
    fn merged(mut self, other: ScaleRun) -> ScaleRun {
        self.lat.0.extend(other.lat.0);
        self.failed += other.failed;
        for (a, b) in self.served.iter_mut().zip(other.served) {
            *a += b;
        }
        for (a, b) in self.cpu.iter_mut().zip(other.cpu) {
            *a += b;
        }
        self.postgres = self.postgres.zip(other.postgres).map(|(a, b)| a + b);
        self.clients += other.clients;
        self.elapsed += other.elapsed;
        self.machine_busy += other.machine_busy;
        self
    }
}

/// Section 1's load, its clients spread round-robin over `n` fresh instances (each client stays
/// with one, as behind a load balancer with keep-alive).
async fn scale_run(server: &str, n: usize, s: &Sizes, tick: f64) -> ScaleRun {
    let mut deployment = Deployment::new(server);
    let monitor = deployment.start(n).await;
    let postmaster = postmaster_of(&monitor);
    let at: Vec<Arc<Ceremonies>> = deployment
        .instances
        .iter()
        .map(|i| Arc::new(ceremonies_at(i, "bench client")))
        .collect();
    let mut users = Vec::new();
    for i in 0..s.clients {
        let c = at[i % n].clone();
        let mut key = VirtualKey::ephemeral();
        let name = format!("user{i}");
        let me = c.create_account(&mut key, &name, None, None).await.unwrap();
        users.push((i % n, c, key, name, me.device_secret));
    }
    let before = Snapshot::take(&deployment.instances, postmaster, tick);
    let deadline = Instant::now() + Duration::from_secs(s.throughput_secs);
    let mut tasks = Vec::new();
    for (instance, c, mut key, name, mut secret) in users {
        tasks.push(tokio::spawn(async move {
            let (mut lat, mut failed) = (Vec::new(), 0);
            while Instant::now() < deadline {
                let t = Instant::now();
                match c.sign_in(&mut key, Some(&name), Some(secret.clone())).await {
                    Ok(signed) => {
                        lat.push(t.elapsed());
                        secret = signed.device_secret;
                    }
                    // Refused (503 `unavailable` when the database is too busy) or unanswered:
                    // counted; the device secret is unchanged, as nothing was committed.
                    Err(_) => failed += 1,
                }
            }
            (instance, lat, failed)
        }));
    }
    let mut lat = Lat(Vec::new());
    let mut served = vec![0; n];
    let mut failed = 0;
    for t in tasks {
        let (instance, l, f) = t.await.unwrap();
        served[instance] += l.len();
        lat.0.extend(l);
        failed += f;
    }
    let after = Snapshot::take(&deployment.instances, postmaster, tick);
    let (busy, total) = (
        after.machine.0 - before.machine.0,
        after.machine.1 - before.machine.1,
    );
    let elapsed = after.at - before.at;
    ScaleRun {
        instances: n,
        lat,
        failed,
        served,
        cpu: after
            .instances
            .iter()
            .zip(&before.instances)
            .map(|(a, b)| a.saturating_sub(*b))
            .collect(),
        postgres: after
            .postgres
            .zip(before.postgres)
            .map(|(a, b)| a.saturating_sub(b)),
        clients: after.clients.saturating_sub(before.clients),
        elapsed,
        machine_busy: elapsed.mul_f64(busy as f64 / total.max(1) as f64 * crate::cores() as f64),
    }
}

/// The order of section 10's runs: each count twice, the second time in reverse order, so a
/// load on the machine that rises or falls steadily weighs on each count alike.
const SCALE_ORDER: [usize; 6] = [1, 2, 3, 3, 2, 1];

pub(crate) async fn scaling(s: &Sizes) {
    println!(
        "== 10. Scaling: the same sign-in load on 1, 2 and 3 instances on one PostgreSQL database"
    );
    let Some(server) = postgres_url() else {
        println!("   not run: it needs KEYWARD_BENCH_POSTGRES, which ./dev bench sets");
        println!();
        return;
    };
    let tick = cpu::ticks_per_second();
    let mut runs: Vec<Option<ScaleRun>> = (0..3).map(|_| None).collect();
    for n in SCALE_ORDER {
        let run = scale_run(&server, n, s, tick).await;
        runs[n - 1] = Some(match runs[n - 1].take() {
            Some(earlier) => earlier.merged(run),
            None => run,
        });
    }
    let mut runs: Vec<ScaleRun> = runs.into_iter().flatten().collect();
    println!(
        "   method: {} clients spread round-robin over the instances (keywardd child processes, a \
         fresh schema each run), each signing in again and again for {} s as in section 1; each \
         count run twice, in the order {SCALE_ORDER:?}, and the two merged. CPU from \
         /proc/PID/stat (utime + stime) over each run: each instance's, PostgreSQL's (the \
         postmaster, its processes and those that exited) and this process's (the clients and \
         their software keys); \"others\" is what the rest of the machine used meanwhile \
         (/proc/stat); all on this machine's {} cores",
        s.clients,
        s.throughput_secs,
        crate::cores()
    );
    for run in &mut runs {
        let latency = run.lat.summary();
        let run = &*run;
        let per = |d: Duration| fmt(run.per_sign_in(d));
        let each: Vec<String> = run
            .cpu
            .iter()
            .zip(&run.served)
            .enumerate()
            .map(|(i, (cpu, served))| {
                format!(
                    "#{} {} ({served} served)",
                    i + 1,
                    fmt(cpu.div_f64((*served).max(1) as f64))
                )
            })
            .collect();
        let postgres = run
            .postgres
            .map_or(String::from("not measured (not on this machine)"), |d| {
                format!("{} ({:.2} cores)", per(d), run.cores(d))
            });
        println!(
            "   {} instance{}: sign-ins/s: {:.0}   latency {}   {} failed",
            run.instances,
            if run.instances == 1 { "" } else { "s" },
            run.rate(),
            latency,
            run.failed
        );
        println!(
            "      CPU per sign-in: instances {} ({:.2} cores; each, per sign-in it served: {}), \
             PostgreSQL {postgres}, clients {} ({:.2} cores); others {:.2} cores",
            per(run.instances_cpu()),
            run.cores(run.instances_cpu()),
            each.join(", "),
            per(run.clients),
            run.cores(run.clients),
            run.others()
        );
    }
    arithmetic(&runs);
    println!();
}

/// What N machines would give, from the CPU per sign-in measured, beside the ceiling the
/// database's one writer sets.
fn arithmetic(runs: &[ScaleRun]) {
    let (Some(one), Some(last)) = (runs.first(), runs.last()) else {
        return;
    };
    let best = runs.iter().map(ScaleRun::rate).fold(0.0, f64::max);
    let serial = 1.0 / best.max(f64::MIN_POSITIVE);
    let growth = last.rate() / one.rate().max(f64::MIN_POSITIVE);
    let cores = crate::cores() as f64;
    let per_instance = runs
        .iter()
        .map(|r| r.per_sign_in(r.instances_cpu()).as_secs_f64())
        .sum::<f64>()
        / runs.len() as f64;
    let machine = cores / per_instance.max(f64::MIN_POSITIVE);
    println!(
        "   arithmetic: an instance spends {} of CPU per sign-in (mean of the three), so a \
         {cores:.0}-core machine per instance would give about {machine:.0}/s of instance \
         capacity: N = 1, 2, 3 machines {:.0}/s, {:.0}/s, {:.0}/s, were nothing shared",
        fmt(Duration::from_secs_f64(per_instance)),
        machine,
        2.0 * machine,
        3.0 * machine
    );
    if let Some(pg) = last.postgres {
        let pg_cpu = last.per_sign_in(pg).as_secs_f64();
        println!(
            "   PostgreSQL spends {} of CPU per sign-in: {cores:.0} cores of its own would allow \
             about {:.0}/s",
            fmt(Duration::from_secs_f64(pg_cpu)),
            cores / pg_cpu.max(f64::MIN_POSITIVE)
        );
    }
    println!(
        "   but today every write transaction (a sign-in makes two: begin and finish) holds the \
         one writer lock (store/pg.rs WRITER_LOCK) from before BEGIN to after COMMIT, across all \
         instances: writes are serialised, so the ceiling is the database's writer, about one \
         sign-in per serialised sign-in's time, not the instance count"
    );
    println!(
        "   measured: {} sign-ins/s on 1, 2, 3 instances ({growth:.2}x from 1 to 3){}; at the \
         best, {} of serialised time per sign-in, so about {best:.0}/s with any number of \
         instances or machines while the lock stands",
        runs.iter()
            .map(|r| format!("{:.0}", r.rate()))
            .collect::<Vec<_>>()
            .join(", "),
        if growth < 1.25 {
            ": flat, as the lock predicts"
        } else {
            ": it grew, so at 1 instance the writer was not yet the limit (or the machine's \
             other load changed between runs)"
        },
        fmt(Duration::from_secs_f64(serial)),
    );
}
