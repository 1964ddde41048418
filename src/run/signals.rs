//! Ctrl-C and SIGTERM: the first one sets a flag that the scheduler and every running command
//! watch (commands forward SIGINT to their child, wait, then terminate it); the state records
//! the interrupted phase. A second signal while still shutting down exits at once.

use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

static FLAG: OnceLock<Arc<AtomicBool>> = OnceLock::new();

fn flag() -> &'static Arc<AtomicBool> {
    FLAG.get_or_init(|| Arc::new(AtomicBool::new(false)))
}

/// Installs the handlers (idempotent).
pub fn install() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
            // A second signal after the flag is set terminates with the conventional code.
            let _ = signal_hook::flag::register_conditional_shutdown(sig, 130, flag().clone());
            let _ = signal_hook::flag::register(sig, flag().clone());
        }
    });
}

/// True once SIGINT or SIGTERM has arrived.
pub fn interrupted() -> bool {
    flag().load(Ordering::SeqCst)
}

/// Sets the flag as a signal would (tests, and `--timeout` of a whole run).
pub fn raise() {
    flag().store(true, Ordering::SeqCst);
}
