//! Reads shared within one run: phases that ask the same question at about the same time (a
//! preflight check and an early probe) make one read between them.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

/// One slot per key: the last answer and when it was read to its end.
type Slot<V> = Arc<Mutex<Option<(V, Instant)>>>;

/// Answers by key, read once for the callers that ask while the read is going on.
pub struct SharedReads<V> {
    slots: Mutex<BTreeMap<String, Slot<V>>>,
}

impl<V> Default for SharedReads<V> {
    fn default() -> Self {
        Self { slots: Mutex::new(BTreeMap::new()) }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl<V: Clone> SharedReads<V> {
    /// The answer for `key`. A caller that asks while another reads it waits for that read and
    /// takes its answer; a caller that asks later takes a kept answer only when `keep` says it
    /// still holds (e.g. a content-addressed tag found in a registry), and reads again otherwise.
    /// A failed read is not kept.
    pub fn get<E>(&self, key: &str, keep: impl Fn(&V) -> bool, read: impl FnOnce() -> Result<V, E>) -> Result<V, E> {
        self.get_asked(Instant::now(), key, keep, read)
    }

    /// [`SharedReads::get`] for a caller that asked at `asked`: a kept answer read to its end at
    /// or after that time is as fresh as a read of its own.
    fn get_asked<E>(
        &self,
        asked: Instant,
        key: &str,
        keep: impl Fn(&V) -> bool,
        read: impl FnOnce() -> Result<V, E>,
    ) -> Result<V, E> {
        let slot = lock(&self.slots).entry(key.to_string()).or_default().clone();
        let mut slot = lock(&slot);
        if let Some((v, done)) = &*slot
            && (keep(v) || *done >= asked)
        {
            return Ok(v.clone());
        }
        let v = read()?;
        *slot = Some((v.clone(), Instant::now()));
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callers_asking_during_a_read_share_it_and_later_ones_read_again_unless_kept() {
        let reads: SharedReads<Option<String>> = SharedReads::default();
        let keep = |v: &Option<String>| v.is_some();
        let mut n = 0;
        // A caller asks; another caller's read of the same key is going on and ends: the first
        // caller (blocked on the slot meanwhile) takes that answer, even one `keep` refuses.
        let asked = Instant::now();
        assert_eq!(reads.get::<()>("a", keep, || Ok(None)), Ok(None));
        let shared = reads.get_asked::<()>(asked, "a", keep, || {
            n += 1;
            Ok(Some("late".into()))
        });
        assert_eq!((shared, n), (Ok(None), 0), "one read for both");
        // Asked after it ended: an answer `keep` refuses is read again, one it accepts is kept.
        assert_eq!(reads.get::<()>("a", keep, || Ok(Some("d".into()))), Ok(Some("d".into())));
        assert_eq!(reads.get::<()>("a", keep, || Ok(Some("other".into()))), Ok(Some("d".into())));
        // Failures are not kept; keys are independent.
        assert_eq!(reads.get("b", keep, || Err("boom")), Err("boom"));
        assert_eq!(reads.get::<&str>("b", keep, || Ok(Some("e".into()))), Ok(Some("e".into())));
    }

    #[test]
    fn concurrent_callers_make_one_read() {
        let reads: SharedReads<Option<String>> = SharedReads::default();
        let n = std::sync::atomic::AtomicUsize::new(0);
        let (held_tx, held_rx) = std::sync::mpsc::channel::<()>();
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        std::thread::scope(|s| {
            let (reads, n) = (&reads, &n);
            let first = s.spawn(move || {
                reads.get::<()>(
                    "a",
                    |_| false,
                    || {
                        n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        held_tx.send(()).unwrap();
                        go_rx.recv().unwrap();
                        Ok(Some("d".into()))
                    },
                )
            });
            held_rx.recv().unwrap();
            // Asked now, while the first read holds the slot: answered by that read.
            let asked = Instant::now();
            let second = s.spawn(move || reads.get_asked::<()>(asked, "a", |_| false, || Ok(None)));
            go_tx.send(()).unwrap();
            assert_eq!(first.join().unwrap(), Ok(Some("d".into())));
            assert_eq!(second.join().unwrap(), Ok(Some("d".into())));
        });
        assert_eq!(n.load(std::sync::atomic::Ordering::SeqCst), 1);
    }
}
