//! `session` on target local: the running head's own ports on 127.0.0.1 — the dashboard and job
//! API, the Ray client server that `ray start --head` runs, and the port Serve's proxy takes
//! (set in the head's environment, see [`super::nodes::SERVE_PORT`]). Nothing is forwarded, so
//! nothing is held: it prints and exits, which also lets `eval "$(raydeploy session
//! --print-env)"` work as on a cluster.

use std::collections::BTreeMap;
use std::net::TcpStream;
use std::time::Duration;

use anyhow::{Result, bail};

use super::Local;
use super::nodes::SERVE_PORT;
use crate::session::{self, Endpoints, Options, Port};

pub fn session(l: &Local, o: &Options) -> Result<()> {
    if let Some((p, n)) = o.ports.iter().next() {
        bail!(
            "--port {}={n}: target local forwards nothing, the endpoints are the running head's own ports on 127.0.0.1",
            p.name()
        );
    }
    let (ls, _) = l.running()?;
    let head = ls.head().expect("a running head");
    let recorded = |name: &str| head.ports.get(name).copied();
    let ports: BTreeMap<Port, u16> = [
        (Port::Dashboard, recorded("dashboard-port")),
        (Port::Client, recorded("ray-client-server-port")),
        (Port::Serve, recorded(SERVE_PORT)),
    ]
    .into_iter()
    .filter_map(|(p, n)| Some((p, n?)))
    .collect();
    // Ray's client server is started by `ray start --head`; a connection that is refused means
    // it is gone (a connection that is accepted and closed does it no harm).
    if let Some(n) = ports.get(&Port::Client)
        && TcpStream::connect_timeout(&([127, 0, 0, 1], *n).into(), Duration::from_secs(5)).is_err()
    {
        bail!(
            "the Ray client server of deployment `{}` does not answer on 127.0.0.1:{n}: run `raydeploy deploy` to restore the head",
            l.s.d.name
        );
    }
    let extra_env = ports
        .get(&Port::Serve)
        .map(|n| vec![("RAY_SERVE_DEFAULT_HTTP_PORT".to_string(), n.to_string())])
        .unwrap_or_default();
    let e = Endpoints { ports, via: None, pid: None, extra_env };
    session::print(&session::rendered(l.s, o, &e, false));
    Ok(())
}
