//! The `fulfillment-operator` command.

use std::{io::Write, path::PathBuf, process::ExitCode};

use clap::{Args, Parser, Subcommand, ValueEnum};
use fulfillment_operator::{
    engine::Replicas,
    plan,
    prometheus::{BasicCredentials, ClientIdentity, ExtraHeader, PrometheusConfig, PrometheusSource},
    simulate::{self, ReplayOptions, Trace},
};

/// Scales message brokers and their worker fleet together from a weighted load score read from
/// Prometheus. `simulate` replays a FulfillmentPlan over a recorded trace or Prometheus history
/// with the same decision engine the controller uses.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the FulfillmentPlan CustomResourceDefinition as YAML (what `crds/` ships).
    Crd,
    /// Replay a plan over a recorded trace (CSV) or over Prometheus history, and print what the
    /// operator would have done.
    Simulate(Box<SimulateArgs>),
    /// Run the controller: watch FulfillmentPlans and scale their brokers and workers.
    Run(Box<RunArgs>),
    /// List every metric the operator exports on /metrics (sample name, type, help), for
    /// writing dashboards and alerts.
    Metrics,
    /// Check a plan file against the CRD's rules without a cluster.
    Validate {
        /// The plan YAML, as you would `kubectl apply` it.
        plan: PathBuf,
    },
}

/// Every flag can also be set through the environment variable shown; the flag wins.
#[derive(Args)]
struct RunArgs {
    /// Namespaces to watch, comma-separated; empty watches all namespaces.
    #[arg(long, env = "FULFILLMENT_NAMESPACES", value_delimiter = ',', default_value = "")]
    namespaces: Vec<String>,
    /// Only reconcile plans matching this label selector (e.g. `shard=a`), to split a large fleet
    /// across several operator deployments.
    #[arg(long, env = "FULFILLMENT_SELECTOR")]
    selector: Option<String>,
    /// Address of the admin port: /metrics, /healthz, /readyz.
    #[arg(long, env = "FULFILLMENT_ADMIN_ADDR", default_value = "0.0.0.0:8080")]
    admin_addr: std::net::SocketAddr,
    /// This replica's name: the lease holder identity and the events' reporting instance.
    #[arg(long, env = "POD_NAME", default_value = "fulfillment-operator")]
    pod_name: String,
    /// Elect a leader through a coordination.k8s.io/v1 Lease so that several replicas can run
    /// and exactly one acts. Turn off only for a single replica.
    #[arg(long, env = "FULFILLMENT_LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    leader_election: bool,
    /// Name of the leader Lease.
    #[arg(long, env = "FULFILLMENT_LEASE_NAME", default_value = "fulfillment-operator")]
    lease_name: String,
    /// Namespace of the leader Lease (default: the pod's namespace, else the kubeconfig's).
    #[arg(long, env = "POD_NAMESPACE", default_value = "")]
    lease_namespace: String,
    /// How long a lease lasts without renewal; a standby takes over within this after the leader
    /// dies (Go duration).
    #[arg(long, env = "FULFILLMENT_LEASE_DURATION", default_value = "15s")]
    lease_duration: String,
    /// A leader that could not renew for this long stops acting (shorter than the lease).
    #[arg(long, env = "FULFILLMENT_RENEW_DEADLINE", default_value = "10s")]
    renew_deadline: String,
    /// How often to try to acquire or renew the lease.
    #[arg(long, env = "FULFILLMENT_RETRY_PERIOD", default_value = "2s")]
    retry_period: String,
    /// Plans reconciled at the same time.
    #[arg(long, env = "FULFILLMENT_CONCURRENCY", default_value_t = 16)]
    concurrency: u16,
    /// Log format (the level comes from RUST_LOG, default info).
    #[arg(long, env = "FULFILLMENT_LOG_FORMAT", value_enum, default_value_t = fulfillment_operator::telemetry::LogFormat::Text)]
    log_format: fulfillment_operator::telemetry::LogFormat,
}

#[derive(Args)]
struct SimulateArgs {
    /// The plan YAML, as you would `kubectl apply` it.
    plan: PathBuf,
    /// A trace CSV: header `time,<dimension names…>[,brokers][,workers]`; time in seconds from
    /// the start or RFC 3339; cells a number, NaN, +Inf/-Inf, or empty (no data).
    #[arg(long, conflicts_with = "prometheus", required_unless_present = "prometheus")]
    trace: Option<PathBuf>,
    /// Backtest over Prometheus history at this URL, running the plan's own queries as range
    /// queries.
    #[arg(long, requires_all = ["from", "to"])]
    prometheus: Option<String>,
    /// Start of the history: RFC 3339, unix seconds, `now`, or `now-24h`.
    #[arg(long)]
    from: Option<String>,
    /// End of the history, same forms as --from.
    #[arg(long)]
    to: Option<String>,
    /// Resolution of the history's range queries (Go duration).
    #[arg(long, default_value = "15s")]
    step: String,
    /// Path of the Prometheus HTTP API under --prometheus, when it is not at the root
    /// (`/prometheus` for Mimir and Cortex).
    #[arg(long)]
    path_prefix: Option<String>,
    /// File holding a bearer token for --prometheus.
    #[arg(long, env = "FULFILLMENT_PROMETHEUS_TOKEN_FILE", conflicts_with_all = ["basic_auth_user", "client_cert"])]
    bearer_token_file: Option<PathBuf>,
    /// Basic auth username for --prometheus (the password comes from --basic-auth-password-file).
    #[arg(long, requires = "basic_auth_password_file", conflicts_with = "client_cert")]
    basic_auth_user: Option<String>,
    /// File holding the basic auth password.
    #[arg(long, env = "FULFILLMENT_PROMETHEUS_PASSWORD_FILE", requires = "basic_auth_user")]
    basic_auth_password_file: Option<PathBuf>,
    /// PEM client certificate for a --prometheus that requires mutual TLS (with --client-key).
    #[arg(long, requires = "client_key")]
    client_cert: Option<PathBuf>,
    /// PEM private key of --client-cert.
    #[arg(long, requires = "client_cert")]
    client_key: Option<PathBuf>,
    /// Extra request header `NAME=VALUE` (repeatable), such as `X-Scope-OrgID=tenant-1`;
    /// `NAME=@FILE` reads the value from a file and keeps it out of the process list.
    #[arg(long = "header", value_name = "NAME=VALUE")]
    headers: Vec<String>,
    /// PEM CA bundle for an https --prometheus.
    #[arg(long)]
    ca_file: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Output::Table)]
    output: Output,
    /// Also write an SVG plot here.
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Also replay a baseline and compare the summaries (repeat for more than one; the plot
    /// draws the first).
    #[arg(long, value_enum)]
    baseline: Vec<Baseline>,
    /// Replicas at the start, e.g. `brokers=3,workers=12` (default: each workload's minReplicas).
    #[arg(long)]
    initial: Option<String>,
    /// Replay utilization values exactly as recorded (no capacity feedback model).
    #[arg(long)]
    no_feedback: bool,
    /// Rehearse a failover: treat CLUSTER as drilled (the `fulfillment.dev/drill` annotation)
    /// from FROM to TO (durations from the trace start, e.g. `eu@30m-1h`; without `-TO`, until
    /// the end). Repeatable; adds to the trace's `drill:<cluster>` columns.
    #[arg(long, value_name = "CLUSTER@FROM[-TO]")]
    drill: Vec<String>,
    /// Drain CLUSTER for maintenance from FROM to TO (as if its `drain` field were set then),
    /// e.g. `us@2h-3h`. Repeatable; adds to the trace's `drain:<cluster>` columns.
    #[arg(long, value_name = "CLUSTER@FROM[-TO]")]
    drain: Vec<String>,
    /// How long raised survivors take to report their new workers ready (the route waits for
    /// them, up to the plan's survivorReadyTimeout), e.g. `45s`.
    #[arg(long, default_value = "0s")]
    survivor_ready_delay: String,
    /// Refuse replays of more evaluations than this (each keeps about 1 KB of memory; the
    /// default covers about 35 days at a 15s interval).
    #[arg(long, default_value_t = simulate::DEFAULT_MAX_EVALUATIONS)]
    max_evaluations: usize,
}

#[derive(Clone, Copy, ValueEnum)]
enum Output {
    /// A timeline of the steps where something happened, and a summary.
    Table,
    /// One JSON object per evaluation.
    Jsonl,
}

#[derive(Clone, Copy, ValueEnum)]
enum Baseline {
    /// A HorizontalPodAutoscaler v2 on the same metrics: largest ratio, no sustain windows,
    /// default behavior.
    Hpa,
    /// KEDA with a `prometheus` trigger per dimension and its defaults: the HPA above, but an
    /// empty query result counts as 0 (`ignoreNullValues: true`), so missing data can scale down.
    Keda,
    /// The fewest replicas that keep every dimension inside its tolerance band, chosen knowing
    /// each reading in advance: the replica-minutes no policy reaches without time
    /// under-provisioned.
    Hindsight,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Crd => write_stdout(&plan::crd_yaml()),
        Command::Metrics => {
            let metrics = fulfillment_operator::telemetry::Metrics::default();
            let mut text = String::new();
            for m in metrics.exported() {
                for name in m.series_names() {
                    text.push_str(&format!("{name}\t{}\t{}\n", m.kind.as_str(), m.help));
                }
            }
            write_stdout(&text)
        }
        Command::Validate { plan } => plan::load(&plan).map_err(|e| e.to_string()).and_then(|p| {
            for warning in plan::warnings(&p) {
                eprintln!("warning: {warning}");
            }
            write_stdout(&format!(
                "{}: valid FulfillmentPlan {:?}\n",
                plan.display(),
                p.metadata.name.unwrap_or_default()
            ))
        }),
        Command::Simulate(args) => run_simulate(*args),
        Command::Run(args) => run_controller(*args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::from(2)
        }
    }
}

/// Write to stdout, as an error rather than a panic when stdout is full or closed.
fn write_stdout(text: &str) -> Result<(), String> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes()).and_then(|()| out.flush()).map_err(|e| format!("cannot write output: {e}"))
}

fn run_controller(args: RunArgs) -> Result<(), String> {
    use fulfillment_operator::duration::GoDuration;
    fulfillment_operator::telemetry::init_logging(args.log_format);
    let duration = |flag: &str, text: &str| -> Result<std::time::Duration, String> {
        text.parse::<GoDuration>().map(|d| d.as_std()).map_err(|e| format!("--{flag}: {e}"))
    };
    let lease_duration = duration("lease-duration", &args.lease_duration)?;
    let renew_deadline = duration("renew-deadline", &args.renew_deadline)?;
    let retry_period = duration("retry-period", &args.retry_period)?;
    if args.leader_election {
        fulfillment_operator::leader::check_timings(lease_duration, renew_deadline, retry_period)
            .map_err(|e| e.to_string())?;
    }
    let config = fulfillment_operator::controller::RunConfig {
        namespaces: args.namespaces.into_iter().map(|n| n.trim().to_string()).filter(|n| !n.is_empty()).collect(),
        selector: args.selector.filter(|s| !s.trim().is_empty()),
        admin_addr: args.admin_addr,
        identity: args.pod_name.clone(),
        election: args.leader_election.then_some(fulfillment_operator::leader::ElectionConfig {
            lease_name: args.lease_name,
            namespace: args.lease_namespace,
            identity: args.pod_name,
            lease_duration,
            renew_deadline,
            retry_period,
            api_server: String::new(),
        }),
        concurrency: args.concurrency.max(1),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    runtime.block_on(fulfillment_operator::controller::run(config))
}

fn parse_initial(text: &str) -> Result<(Option<u32>, Option<u32>), String> {
    let (mut brokers, mut workers) = (None, None);
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (key, value) =
            part.split_once('=').ok_or_else(|| format!("--initial {text:?}: write it like brokers=3,workers=12"))?;
        let n: u32 = value
            .trim()
            .parse()
            .map_err(|_| format!("--initial: {value:?} is not a replica count; write a whole number"))?;
        match key.trim() {
            "brokers" => brokers = Some(n),
            "workers" => workers = Some(n),
            other => return Err(format!("--initial: unknown workload {other:?}; use brokers= and workers=")),
        }
    }
    Ok((brokers, workers))
}

fn parse_when(text: &str, flag: &str, now: i64) -> Result<i64, String> {
    let text = text.trim();
    if text == "now" {
        return Ok(now);
    }
    if let Some(ago) = text.strip_prefix("now-") {
        let d: fulfillment_operator::duration::GoDuration = ago.parse().map_err(|e| format!("{flag}: {e}"))?;
        return Ok(now - d.as_secs_f64() as i64);
    }
    if let Ok(secs) = text.parse::<i64>() {
        return Ok(secs);
    }
    text.parse::<jiff::Timestamp>().map(|t| t.as_second()).map_err(|_| {
        format!("{flag} {text:?} is not a time; write RFC 3339 (2026-11-20T00:00:00Z), unix seconds, now, or now-24h")
    })
}

/// The credentials, headers and CA of `simulate --prometheus`, read from their files.
fn connection_files(args: &SimulateArgs) -> Result<PrometheusConfig, String> {
    let read = |p: &PathBuf| std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display()));
    let read_text = |p: &PathBuf| std::fs::read_to_string(p).map_err(|e| format!("cannot read {}: {e}", p.display()));
    let mut headers = Vec::new();
    for header in &args.headers {
        let Some((name, value)) = header.split_once('=') else {
            return Err(format!(
                "--header {header:?} must be NAME=VALUE or NAME=@FILE, such as X-Scope-OrgID=tenant-1"
            ));
        };
        let (value, sensitive) = match value.strip_prefix('@') {
            Some(path) => (read_text(&PathBuf::from(path))?, true),
            None => (value.to_string(), false),
        };
        headers.push(ExtraHeader { name: name.trim().to_string(), value, sensitive });
    }
    let basic_auth = match (&args.basic_auth_user, &args.basic_auth_password_file) {
        (Some(username), Some(p)) => Some(BasicCredentials { username: username.clone(), password: read_text(p)? }),
        _ => None,
    };
    let client_identity = match (&args.client_cert, &args.client_key) {
        (Some(cert), Some(key)) => Some(ClientIdentity { cert_pem: read(cert)?, key_pem: read(key)? }),
        _ => None,
    };
    Ok(PrometheusConfig {
        bearer_token: args.bearer_token_file.as_ref().map(read_text).transpose()?,
        basic_auth,
        client_identity,
        headers,
        ca_pem: args.ca_file.as_ref().map(read).transpose()?,
        ..Default::default()
    })
}

/// A replay holds a row's values across a hole in the trace; say so when a hole spans more than
/// ten evaluations (and more than a minute).
fn warn_about_gaps(trace: &Trace, interval_secs: f64) {
    let longer_than = (10.0 * interval_secs).max(60.0);
    let gaps = trace.gaps(longer_than);
    let Some(longest) = gaps.first() else { return };
    let place = if longest.after_line > 0 {
        format!("between line {} and line {}", longest.after_line, longest.before_line)
    } else {
        "in the history".to_string()
    };
    let others = match gaps.len() {
        1 => String::new(),
        n => format!(" ({} more gaps longer than {})", n - 1, simulate::readable_secs(longer_than)),
    };
    eprintln!(
        "warning: the trace has a gap of {} {place}{others}; the replay holds the values before a gap across it",
        simulate::readable_secs(longest.secs)
    );
}

/// `CLUSTER@FROM[-TO]` of `--drill`/`--drain`, against the plan's clusters: (cluster index,
/// from, to) in seconds from the trace start.
fn parse_window(text: &str, flag: &str, clusters: &[String]) -> Result<(usize, f64, Option<f64>), String> {
    use fulfillment_operator::duration::GoDuration;
    let (name, when) =
        text.split_once('@').ok_or_else(|| format!("--{flag} {text:?}: write CLUSTER@FROM[-TO], e.g. eu@30m-1h"))?;
    let cluster = clusters.iter().position(|c| c == name).ok_or_else(|| {
        if clusters.is_empty() {
            format!("--{flag} {text:?}: the plan has no clusters (spec.clusters)")
        } else {
            format!("--{flag} {text:?}: {name:?} is not a cluster of the plan ({})", clusters.join(", "))
        }
    })?;
    let secs = |d: &str| {
        d.parse::<GoDuration>().map(|d| d.as_secs_f64()).map_err(|e| format!("--{flag} {text:?}: {d:?}: {e}"))
    };
    let (from, to) = match when.split_once('-') {
        Some((from, to)) => (secs(from)?, Some(secs(to)?)),
        None => (secs(when)?, None),
    };
    if to.is_some_and(|to| to <= from) {
        return Err(format!("--{flag} {text:?}: the end must come after the start"));
    }
    Ok((cluster, from, to))
}

fn run_simulate(args: SimulateArgs) -> Result<(), String> {
    let plan = plan::load(&args.plan).map_err(|e| e.to_string())?;
    for warning in plan::warnings(&plan) {
        eprintln!("warning: {warning}");
    }
    let compiled = plan::CompiledPlan::new(&plan);
    let policy = &compiled.policy;
    let (brokers, workers) = match &args.initial {
        Some(text) => parse_initial(text)?,
        None => (None, None),
    };
    let initial =
        Replicas { brokers: brokers.unwrap_or(policy.brokers.min), workers: workers.unwrap_or(policy.workers.min) };
    let trace = if let Some(path) = &args.trace {
        let file = std::fs::File::open(path).map_err(|e| format!("cannot read trace {}: {e}", path.display()))?;
        Trace::from_csv(std::io::BufReader::new(file), policy).map_err(|e| format!("{}: {e}", path.display()))?
    } else {
        let url = args.prometheus.clone().unwrap_or_default();
        let now = jiff::Timestamp::now().as_second();
        let from = parse_when(args.from.as_deref().unwrap_or_default(), "--from", now)?;
        let to = parse_when(args.to.as_deref().unwrap_or_default(), "--to", now)?;
        let step: fulfillment_operator::duration::GoDuration = args.step.parse().map_err(|e| format!("--step: {e}"))?;
        if step.as_secs_f64() < 1.0 {
            return Err("--step must be at least 1s".into());
        }
        let config = PrometheusConfig {
            address: url,
            path_prefix: args.path_prefix.clone().unwrap_or_default(),
            timeout: plan.spec.prometheus.timeout.as_std().max(std::time::Duration::from_secs(30)),
            ..connection_files(&args)?
        };
        let source = PrometheusSource::new(&config).map_err(|e| e.to_string())?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the async runtime: {e}"))?;
        runtime
            .block_on(Trace::from_prometheus(&source, &compiled, from, to, step.as_secs_f64(), args.max_evaluations))
            .map_err(|e| e.to_string())?
    };
    let mut trace = trace;
    let clusters: Vec<String> = policy.traffic.iter().flat_map(|t| t.clusters.iter().map(|c| c.name.clone())).collect();
    for (flag, drain, list) in [("drill", false, &args.drill), ("drain", true, &args.drain)] {
        for text in list {
            let (cluster, from, to) = parse_window(text, flag, &clusters)?;
            if from >= trace.duration() {
                return Err(format!(
                    "--{flag} {text:?}: starts at or after the end of the trace ({}); start it earlier",
                    simulate::readable_secs(trace.duration())
                ));
            }
            trace.switch(drain, cluster, from, to);
        }
    }
    let survivor_ready_delay: fulfillment_operator::duration::GoDuration =
        args.survivor_ready_delay.parse().map_err(|e| format!("--survivor-ready-delay: {e}"))?;
    let dns_ttl_secs = plan
        .spec
        .traffic
        .as_ref()
        .and_then(|t| t.router.dns_endpoint.as_ref())
        .map(|d| d.ttl.map_or(simulate::DEFAULT_DNS_TTL_SECS, |t| t.as_secs_f64()));
    let options = ReplayOptions {
        initial,
        feedback: !args.no_feedback,
        max_evaluations: args.max_evaluations,
        survivor_ready_delay_secs: survivor_ready_delay.as_secs_f64(),
        dns_ttl_secs,
    };
    let replay = simulate::replay("plan", policy, policy, &trace, options).map_err(|e| e.to_string())?;
    let mut baselines = Vec::new();
    for b in &args.baseline {
        let replay = match b {
            Baseline::Hpa => simulate::replay("hpa", &policy.hpa_baseline(), policy, &trace, options),
            Baseline::Keda => {
                simulate::replay("keda", &policy.hpa_baseline(), policy, &trace.missing_as_zero(), options)
            }
            Baseline::Hindsight => simulate::hindsight::replay(policy, &trace, options),
        };
        let replay = replay.map_err(|e| e.to_string())?;
        if !baselines.iter().any(|r: &simulate::Replay| r.label == replay.label) {
            baselines.push(replay);
        }
    }
    warn_about_gaps(&trace, policy.interval_secs);

    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let io = |e: std::io::Error| format!("cannot write output: {e}");
    let mut summaries = vec![(&replay, replay.summary())];
    for b in &baselines {
        summaries.push((b, b.summary()));
    }
    match args.output {
        Output::Jsonl => {
            for step in &replay.steps {
                writeln!(out, "{}", simulate::jsonl_line(step)).map_err(io)?;
            }
            writeln!(out, "{}", simulate::summary_jsonl(&summaries)).map_err(io)?;
        }
        Output::Table => {
            let name = plan.metadata.name.clone().unwrap_or_default();
            writeln!(
                out,
                "Plan {name}: {} evaluations every {}s over {} of trace ({} dimensions with data: {}).\n",
                replay.steps.len(),
                replay.interval,
                simulate::output_clock(trace.duration()),
                trace.columns.len(),
                trace.columns.join(", ")
            )
            .map_err(io)?;
            simulate::print_table(&mut out, &replay).map_err(io)?;
            writeln!(out).map_err(io)?;
            simulate::summary_table(&mut out, &summaries).map_err(io)?;
        }
    }
    if let Some(path) = &args.plot {
        let title = format!("FulfillmentPlan {} — simulated", plan.metadata.name.clone().unwrap_or_default());
        simulate::write_svg(path, &title, &replay, baselines.first()).map_err(|e| e.to_string())?;
        if matches!(args.output, Output::Table) {
            writeln!(out, "Plot written to {}", path.display()).map_err(io)?;
        }
    }
    Ok(())
}
