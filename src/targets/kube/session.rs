//! `session` on a cluster: a reconnecting port-forward per endpoint ([`super::forward`]) to the
//! head service's dashboard, Ray client and Serve ports, printed once all are up and held until
//! Ctrl-C. With `--print-env`, the forwards are held by a background process instead
//! ([`crate::session::background`]).

use anyhow::{Result, bail};

use super::forward::{self, Forward};
use super::{Kube, live};
use crate::model::head_port;
use crate::session::{self, Endpoints, Form, Options, Port};

pub fn session(k: &Kube, o: &Options) -> Result<()> {
    let c = &k.s.d.cluster;
    let r = live::side_runner(k, "session", true)?;
    if live::get(k, &r, &["service", &c.head_service], Some(&c.namespace))?.is_none() {
        bail!("no service {}/{}: deploy the cluster first (raydeploy deploy)", c.namespace, c.head_service);
    }
    let ports = session::local_ports(&o.ports, &Port::ALL)?;
    if o.form == Form::Env && !o.background {
        return session::background(k.s, o, &ports);
    }
    let forwards: Vec<Forward> = ports
        .iter()
        .map(|(p, local)| Forward { name: p.name(), local: *local, remote: head_port(&c.head, p.name()) })
        .collect();
    let e = Endpoints {
        ports,
        via: Some(format!("svc/{} in namespace {}", c.head_service, c.namespace)),
        pid: None,
        extra_env: vec![],
    };
    // Printed once every forward is up, so what it names answers.
    let text = session::rendered(k.s, o, &e, true);
    forward::hold(k, "session", &forwards, move || session::print(&text))
}
