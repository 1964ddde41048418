//! The `session` command: what a notebook, a script or the Ray CLIs on this machine use to reach
//! the deployment's running cluster — the dashboard and job API (`RAY_ADDRESS`), the Ray client
//! (`ray.init("ray://…")`) and Serve — printed as text, as one JSON object (`--output json`) or
//! as `export` lines (`--print-env`, for `eval`).
//!
//! This module holds what no target owns: the `--port NAME=PORT` arguments, the choice of local
//! ports, the printed forms, and the background half of `--print-env`. Each target finds the
//! endpoints its own way ([`crate::context::Target::session`]): on a cluster, one reconnecting
//! `kubectl port-forward` per port, held until Ctrl-C; on target local, the running head's own
//! ports on 127.0.0.1 (nothing to hold: it prints and exits).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::BufRead;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};

use crate::context::Context;
use crate::run::proc::shell_quote;
use crate::run::signals;

/// Version of the JSON object `session --output json` prints.
pub const FORMAT_VERSION: u32 = 1;

/// The environment variable holding the Ray client address (`ray://127.0.0.1:<port>`).
pub const CLIENT_VAR: &str = "RAYDEPLOY_RAY_CLIENT";
/// The environment variable holding the PID of a session running in the background.
pub const PID_VAR: &str = "RAYDEPLOY_SESSION_PID";

/// How long `--print-env` waits for its background half's forwards to be up.
const BACKGROUND_READY_WAIT: Duration = Duration::from_secs(120);

/// One endpoint of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Port {
    /// The dashboard and the job API (Ray's job SDK and CLI).
    Dashboard,
    /// The Ray client server (`ray://`).
    Client,
    /// Serve's HTTP proxy.
    Serve,
}

impl Port {
    pub const ALL: [Port; 3] = [Port::Dashboard, Port::Client, Port::Serve];

    /// The name in `--port NAME=PORT` and in the JSON object's `ports`; also KubeRay's name of
    /// the head's port ([`crate::model::HEAD_PORTS`]).
    pub fn name(self) -> &'static str {
        match self {
            Port::Dashboard => "dashboard",
            Port::Client => "client",
            Port::Serve => "serve",
        }
    }

    /// Ray's own port for it: the local port tried first.
    pub fn ray_default(self) -> u16 {
        match self {
            Port::Dashboard => 8265,
            Port::Client => 10001,
            Port::Serve => 8000,
        }
    }
}

fn names() -> String {
    Port::ALL.iter().map(|p| p.name()).collect::<Vec<_>>().join(", ")
}

/// One `--port NAME=PORT` argument (clap's value parser: an error is a usage error).
pub fn parse_port_arg(s: &str) -> std::result::Result<(Port, u16), String> {
    let Some((name, port)) = s.split_once('=') else {
        return Err(format!("expected NAME=PORT (NAME one of {}), e.g. dashboard=18265", names()));
    };
    let Some(p) = Port::ALL.into_iter().find(|p| p.name() == name) else {
        return Err(format!("unknown port name `{name}`: expected one of {}", names()));
    };
    match port.parse::<u16>() {
        Ok(n) if n > 0 => Ok((p, n)),
        _ => Err(format!("`{port}` is not a port number (1 to 65535)")),
    }
}

/// The `--port` arguments together: each name at most once, each port for one name only.
pub fn check_ports(args: &[(Port, u16)]) -> std::result::Result<BTreeMap<Port, u16>, String> {
    let mut out = BTreeMap::new();
    for (p, n) in args {
        if out.insert(*p, *n).is_some() {
            return Err(format!("--port {}=… is given more than once", p.name()));
        }
        if let Some((other, _)) = out.iter().find(|(q, m)| *q != p && *m == n) {
            return Err(format!("--port {}={n} and --port {}={n} name the same local port", other.name(), p.name()));
        }
    }
    Ok(out)
}

/// How the endpoints are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    Text,
    Json,
    /// `export` lines for `eval`.
    Env,
}

#[derive(Debug, Clone)]
pub struct Options {
    /// Local ports given with `--port`.
    pub ports: BTreeMap<Port, u16>,
    pub form: Form,
    /// This process is the background half of `--print-env`: it prints the JSON object on its
    /// stdout (read by the foreground half) once the forwards are up, then holds them.
    pub background: bool,
    /// The spec arguments (`SPEC`, `-e ENV`, `--target T`), to start the background half with.
    pub spec_args: Vec<OsString>,
}

/// Where a session's endpoints are on this machine.
#[derive(Debug, Clone)]
pub struct Endpoints {
    /// Local port of each endpoint (Serve's is absent on a local head started before raydeploy
    /// chose one).
    pub ports: BTreeMap<Port, u16>,
    /// What is forwarded to (`svc/NAME in namespace NS`), or `None` when nothing is.
    pub via: Option<String>,
    /// The process holding the forwards, when it runs in the background.
    pub pid: Option<u32>,
    /// More variables for the shell (target local: Serve's port for a driver started there).
    pub extra_env: Vec<(String, String)>,
}

impl Endpoints {
    fn url(&self, p: Port, scheme: &str) -> Option<String> {
        self.ports.get(&p).map(|n| format!("{scheme}://127.0.0.1:{n}"))
    }

    /// The variables `--print-env` exports (also in the JSON object's `env`).
    pub fn env(&self) -> Vec<(String, String)> {
        let mut v = vec![];
        if let Some(u) = self.url(Port::Dashboard, "http") {
            v.push(("RAY_ADDRESS".to_string(), u.clone()));
            v.push(("RAYDEPLOY_DASHBOARD_URL".to_string(), u));
        }
        if let Some(u) = self.url(Port::Client, "ray") {
            v.push((CLIENT_VAR.to_string(), u));
        }
        if let Some(u) = self.url(Port::Serve, "http") {
            v.push(("RAYDEPLOY_SERVE_URL".to_string(), u));
        }
        v.extend(self.extra_env.iter().cloned());
        if let Some(pid) = self.pid {
            v.push((PID_VAR.to_string(), pid.to_string()));
        }
        v
    }

    pub fn json(&self, c: &Context) -> Value {
        let env: serde_json::Map<String, Value> = self.env().into_iter().map(|(k, v)| (k, Value::from(v))).collect();
        json!({
            "event": "session",
            "format_version": FORMAT_VERSION,
            "deployment": c.d.name,
            "target": c.d.target.as_str(),
            "ray_address": self.url(Port::Dashboard, "http"),
            "ray_client": self.url(Port::Client, "ray"),
            "dashboard_url": self.url(Port::Dashboard, "http"),
            "serve_url": self.url(Port::Serve, "http"),
            "ports": self.ports.iter().map(|(p, n)| (p.name(), *n)).collect::<BTreeMap<_, _>>(),
            "forwarding": self.via,
            "pid": self.pid,
            "env": env,
        })
    }

    pub fn text(&self, c: &Context) -> String {
        let mut t = format!("Ray session for `{}` (target {})", c.d.name, c.d.target.as_str());
        match &self.via {
            Some(via) => t.push_str(&format!(": port-forwards to {via}\n")),
            None => t.push('\n'),
        }
        let missing = "unknown (the head predates it: `raydeploy destroy`, then `raydeploy deploy`)".to_string();
        let dash = self.url(Port::Dashboard, "http").unwrap_or_else(|| missing.clone());
        t.push_str(&format!("  dashboard  {dash}\n"));
        t.push_str(&format!("  jobs       RAY_ADDRESS={dash} ray job submit --working-dir . -- python main.py\n"));
        let client = self.url(Port::Client, "ray").unwrap_or_else(|| missing.clone());
        t.push_str(&format!("  client     ray.init(\"{client}\")\n"));
        t.push_str(&format!("  serve      {}\n", self.url(Port::Serve, "http").unwrap_or(missing)));
        t
    }

    /// `export NAME=VALUE` lines.
    pub fn exports(&self) -> String {
        self.env().iter().map(|(k, v)| format!("export {k}={}\n", shell_quote(v))).collect()
    }
}

/// The endpoints in the form asked for (the JSON object on one line), scrubbed of secrets.
/// `held`: the session keeps running (forwards), so the text ends with how to stop it.
pub fn rendered(c: &Context, o: &Options, e: &Endpoints, held: bool) -> String {
    let text = match o.form {
        _ if o.background => serde_json::to_string(&e.json(c)).expect("JSON") + "\n",
        Form::Json => serde_json::to_string(&e.json(c)).expect("JSON") + "\n",
        Form::Env => e.exports(),
        Form::Text if held => e.text(c) + "Ctrl-C to stop.\n",
        Form::Text => e.text(c),
    };
    c.redactor.scrub(&text)
}

/// Writes `text` to stdout at once.
pub fn print(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}

/// Local ports for `want`: each one given with `--port` (which must be free), else Ray's own
/// port when free, else any free port; all different, on 127.0.0.1.
pub fn local_ports(given: &BTreeMap<Port, u16>, want: &[Port]) -> Result<BTreeMap<Port, u16>> {
    use std::net::TcpListener;
    let mut held = vec![];
    let mut out = BTreeMap::new();
    for p in want {
        if let Some(n) = given.get(p) {
            let l = TcpListener::bind(("127.0.0.1", *n))
                .with_context(|| format!("--port {}={n}: 127.0.0.1:{n} cannot be used", p.name()))?;
            held.push(l);
            out.insert(*p, *n);
        }
    }
    for p in want.iter().filter(|p| !given.contains_key(p)) {
        // Ray's own port first; the listeners stay open until every port is chosen, so no two
        // endpoints get the same one.
        let l = match TcpListener::bind(("127.0.0.1", p.ray_default())) {
            Ok(l) => l,
            Err(_) => TcpListener::bind(("127.0.0.1", 0)).context("choosing a free port on 127.0.0.1")?,
        };
        out.insert(*p, l.local_addr()?.port());
        held.push(l);
    }
    Ok(out)
}

/// `--print-env` on a cluster: starts this command again in the background (a session of
/// processes of its own, so the terminal's Ctrl-C does not reach it, its messages appended to
/// `logs/session-background.log`) holding the forwards on `ports`, waits until they are up, and
/// prints the `export` lines with its PID (`kill $RAYDEPLOY_SESSION_PID` ends it).
pub fn background(c: &Context, o: &Options, ports: &BTreeMap<Port, u16>) -> Result<()> {
    use std::os::unix::process::CommandExt;
    use std::process::{Command, Stdio};
    signals::install();
    let log_path = c.dir.join("logs").join("session-background.log");
    std::fs::create_dir_all(log_path.parent().expect("a folder"))?;
    let log = std::fs::OpenOptions::new().create(true).append(true).open(&log_path)?;
    let mut cmd = Command::new(std::env::current_exe().context("finding raydeploy's own executable")?);
    cmd.arg("session").args(&o.spec_args).arg("--background");
    for (p, n) in ports {
        cmd.arg("--port").arg(format!("{}={n}", p.name()));
    }
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(log);
    // SAFETY: setsid(2) is async-signal-safe; it runs in the child between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().context("starting the background session")?;
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = std::io::BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let stop = |child: &mut std::process::Child| {
        // SAFETY: kill(2) on the child this function started and has not reaped.
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
        }
        let _ = child.wait();
    };
    let deadline = Instant::now() + BACKGROUND_READY_WAIT;
    let line = loop {
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(line) => break line,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break String::new(),
        }
        if signals::interrupted() {
            stop(&mut child);
            bail!("interrupted before the background session was up");
        }
        if Instant::now() > deadline {
            stop(&mut child);
            bail!(
                "the port-forwards were not up after {}s; see {}",
                BACKGROUND_READY_WAIT.as_secs(),
                log_path.display()
            );
        }
    };
    let ready: Option<Value> = serde_json::from_str(line.trim()).ok();
    let Some(ready) = ready else {
        let _ = child.wait();
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(5).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        bail!("the background session ended before its port-forwards were up:\n{}", c.redactor.scrub(&tail.join("\n")));
    };
    let ports: BTreeMap<Port, u16> = Port::ALL
        .into_iter()
        .filter_map(|p| Some((p, u16::try_from(ready["ports"][p.name()].as_u64()?).ok()?)))
        .collect();
    let e = Endpoints {
        ports,
        via: ready["forwarding"].as_str().map(str::to_string),
        pid: Some(child.id()),
        extra_env: vec![],
    };
    print(&rendered(c, &Options { background: false, ..o.clone() }, &e, true));
    eprintln!(
        "raydeploy session: port-forwards to {} in the background (pid {}, log {}); end them with: kill ${PID_VAR}",
        e.via.as_deref().unwrap_or("the cluster"),
        child.id(),
        log_path.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_arguments_name_an_endpoint_and_a_port() {
        assert_eq!(parse_port_arg("dashboard=18265"), Ok((Port::Dashboard, 18265)));
        assert_eq!(parse_port_arg("client=1"), Ok((Port::Client, 1)));
        assert_eq!(parse_port_arg("serve=65535"), Ok((Port::Serve, 65535)));
        let e = parse_port_arg("dashbord=1").unwrap_err();
        assert!(e.contains("unknown port name `dashbord`") && e.contains("dashboard, client, serve"), "{e}");
        for bad in ["serve=0", "serve=65536", "serve=", "serve=-1", "serve=80x"] {
            assert!(parse_port_arg(bad).unwrap_err().contains("is not a port number"), "{bad}");
        }
        assert!(parse_port_arg("18265").unwrap_err().contains("expected NAME=PORT"));
    }

    #[test]
    fn port_arguments_are_checked_together() {
        let ok = check_ports(&[(Port::Dashboard, 1), (Port::Serve, 2)]).unwrap();
        assert_eq!(ok, BTreeMap::from([(Port::Dashboard, 1), (Port::Serve, 2)]));
        assert!(check_ports(&[(Port::Client, 1), (Port::Client, 2)]).unwrap_err().contains("more than once"));
        let e = check_ports(&[(Port::Client, 7), (Port::Serve, 7)]).unwrap_err();
        assert!(e.contains("the same local port"), "{e}");
    }

    #[test]
    fn local_ports_are_distinct_and_keep_the_given_ones() {
        let given = BTreeMap::from([(Port::Client, {
            let l = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
            l.local_addr().unwrap().port()
        })]);
        let got = local_ports(&given, &Port::ALL).unwrap();
        assert_eq!(got[&Port::Client], given[&Port::Client]);
        let mut all: Vec<u16> = got.values().copied().collect();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 3, "{got:?}");
        // A given port in use is refused, naming it.
        let busy = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let n = busy.local_addr().unwrap().port();
        let e = local_ports(&BTreeMap::from([(Port::Serve, n)]), &Port::ALL).unwrap_err();
        assert!(format!("{e:#}").contains(&format!("--port serve={n}")), "{e:#}");
    }

    #[test]
    fn exports_quote_and_name_every_endpoint() {
        let e = Endpoints {
            ports: BTreeMap::from([(Port::Dashboard, 8265), (Port::Client, 10001), (Port::Serve, 8000)]),
            via: Some("svc/x-head-svc in namespace ns".into()),
            pid: Some(42),
            extra_env: vec![],
        };
        assert_eq!(
            e.exports(),
            "export RAY_ADDRESS=http://127.0.0.1:8265\nexport RAYDEPLOY_DASHBOARD_URL=http://127.0.0.1:8265\n\
             export RAYDEPLOY_RAY_CLIENT=ray://127.0.0.1:10001\nexport RAYDEPLOY_SERVE_URL=http://127.0.0.1:8000\n\
             export RAYDEPLOY_SESSION_PID=42\n"
        );
    }
}
