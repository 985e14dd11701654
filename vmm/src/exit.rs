//! How the VM stops: the reason reported by [`crate::Vm::run`] and the
//! shared signal that vCPUs, devices and [`crate::StopHandle`]s raise.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::vcpu::VcpuError;

/// Why [`crate::Vm::run`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitReason {
    /// The guest powered off (write to port 0xf4, or a KVM shutdown event).
    PowerOff,
    /// The guest rebooted (i8042 reset, triple fault, or a KVM reset event).
    Reboot,
    /// The host asked the VM to stop through a [`crate::StopHandle`].
    Stopped,
    /// The host paused the VM through [`crate::StopHandle::pause`]: every
    /// vCPU is out of KVM_RUN. [`crate::Vm::run_until_paused`] keeps the VM
    /// (to save or resume); [`crate::Vm::run`] drops it.
    Paused,
}

/// The first exit request wins; everything after it is ignored.
#[derive(Debug)]
pub struct ExitSignal {
    stopping: AtomicBool,
    outcome: Mutex<Option<Result<ExitReason, VcpuError>>>,
    evt: EventFd,
    /// Freezing the vCPUs in place (`husk pause`), see [`Freeze`].
    freeze: Mutex<Freeze>,
    /// Signalled when a vCPU parks, on a thaw and on any exit request.
    freeze_changed: Condvar,
    /// How many vCPU threads the current run started.
    running_vcpus: AtomicUsize,
}

/// The freeze state: whether the host asked the vCPUs to stay out of the
/// guest, and how many of them are parked.
#[derive(Debug, Default)]
struct Freeze {
    requested: bool,
    parked: usize,
}

impl ExitSignal {
    /// A signal with no exit requested yet.
    pub fn new() -> std::io::Result<Self> {
        Ok(Self {
            stopping: AtomicBool::new(false),
            outcome: Mutex::new(None),
            evt: EventFd::new(EFD_NONBLOCK)?,
            freeze: Mutex::new(Freeze::default()),
            freeze_changed: Condvar::new(),
            running_vcpus: AtomicUsize::new(0),
        })
    }

    /// Asks the VM to exit for `reason`.
    pub fn request(&self, reason: ExitReason) {
        self.set(Ok(reason));
    }

    /// Stops the VM because a vCPU failed.
    pub(crate) fn fail(&self, err: VcpuError) {
        self.set(Err(err));
    }

    fn set(&self, outcome: Result<ExitReason, VcpuError>) {
        {
            let mut slot = self.outcome.lock().unwrap_or_else(|e| e.into_inner());
            if slot.is_none() {
                *slot = Some(outcome);
            }
        }
        self.stopping.store(true, Ordering::SeqCst);
        self.wake();
    }

    /// Wakes the event loop (which kicks the vCPUs) and every thread
    /// waiting on the freeze state.
    fn wake(&self) {
        if let Err(e) = self.evt.write(1) {
            log::error!("cannot signal the VM exit event: {e}");
        }
        let _freeze = self.freeze.lock().unwrap_or_else(|e| e.into_inner());
        self.freeze_changed.notify_all();
    }

    /// Records how many vCPU threads the run started (for [`Self::freeze`]).
    pub(crate) fn set_running_vcpus(&self, n: usize) {
        self.running_vcpus.store(n, Ordering::SeqCst);
    }

    /// Freezes the vCPUs in place: each leaves KVM_RUN (the event loop
    /// kicks them) and waits on a condition variable until [`Self::thaw`]
    /// or an exit request; the threads and the device event loop stay as
    /// they are. Waits until every vCPU is parked (true) or `timeout`
    /// passes or the VM exits (false; the request stays until thawed).
    pub fn freeze(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut f = self.freeze.lock().unwrap_or_else(|e| e.into_inner());
        f.requested = true;
        drop(f);
        if let Err(e) = self.evt.write(1) {
            log::error!("cannot signal the VM exit event: {e}");
        }
        let mut f = self.freeze.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if f.parked >= self.running_vcpus.load(Ordering::SeqCst) {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if self.is_stopping() || left.is_zero() {
                return false;
            }
            f = self
                .freeze_changed
                .wait_timeout(f, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Lets frozen vCPUs run the guest again.
    pub fn thaw(&self) {
        let mut f = self.freeze.lock().unwrap_or_else(|e| e.into_inner());
        f.requested = false;
        self.freeze_changed.notify_all();
    }

    /// Whether a freeze waits for vCPUs still in the guest (the event loop
    /// then kicks them).
    pub(crate) fn needs_kick(&self) -> bool {
        let f = self.freeze.lock().unwrap_or_else(|e| e.into_inner());
        f.requested && f.parked < self.running_vcpus.load(Ordering::SeqCst)
    }

    /// Called by a vCPU thread before entering the guest: while a freeze
    /// is requested (and no exit), waits parked.
    pub(crate) fn park_while_frozen(&self) {
        let mut f = self.freeze.lock().unwrap_or_else(|e| e.into_inner());
        if !f.requested || self.is_stopping() {
            return;
        }
        f.parked += 1;
        self.freeze_changed.notify_all();
        while f.requested && !self.is_stopping() {
            f = self
                .freeze_changed
                .wait(f)
                .unwrap_or_else(|e| e.into_inner());
        }
        f.parked -= 1;
    }

    /// Forgets a handled pause so the VM can run again.
    pub(crate) fn reset(&self) {
        *self.outcome.lock().unwrap_or_else(|e| e.into_inner()) = None;
        self.stopping.store(false, Ordering::SeqCst);
        let _ = self.evt.read();
    }

    /// True once any exit was requested.
    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// The first exit requested, if any.
    pub(crate) fn take_outcome(&self) -> Option<Result<ExitReason, VcpuError>> {
        self.outcome
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }

    /// The eventfd written on every request (for the event loop).
    pub fn eventfd(&self) -> &EventFd {
        &self.evt
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_request_wins() {
        let s = ExitSignal::new().unwrap();
        assert!(!s.is_stopping());
        s.request(ExitReason::Reboot);
        s.request(ExitReason::PowerOff);
        assert!(s.is_stopping());
        assert_eq!(s.eventfd().read().unwrap(), 2);
        assert!(matches!(s.take_outcome(), Some(Ok(ExitReason::Reboot))));
    }

    #[test]
    fn frozen_vcpus_park_until_thawed_or_stopped() {
        let s = std::sync::Arc::new(ExitSignal::new().unwrap());
        s.set_running_vcpus(2);
        assert!(!s.needs_kick());
        let vcpu = |s: std::sync::Arc<ExitSignal>| {
            std::thread::spawn(move || {
                let mut entries = 0;
                while !s.is_stopping() {
                    s.park_while_frozen();
                    entries += 1;
                    std::thread::yield_now();
                }
                entries
            })
        };
        let threads = [vcpu(s.clone()), vcpu(s.clone())];
        assert!(s.freeze(Duration::from_secs(30)), "both vCPUs parked");
        assert!(!s.needs_kick());
        assert_eq!(s.freeze.lock().unwrap().parked, 2);
        s.thaw();
        // Frozen again, then stopped while frozen: the parked vCPUs leave.
        assert!(s.freeze(Duration::from_secs(30)));
        s.request(ExitReason::Stopped);
        for t in threads {
            assert!(t.join().unwrap() > 0);
        }
        assert!(
            !s.freeze(Duration::from_millis(1)),
            "a stopped VM does not freeze"
        );
    }

    #[test]
    fn a_freeze_without_parked_vcpus_times_out_and_asks_for_kicks() {
        let s = ExitSignal::new().unwrap();
        s.set_running_vcpus(1);
        assert!(!s.freeze(Duration::from_millis(20)));
        assert!(s.needs_kick());
        s.thaw();
        assert!(!s.needs_kick());
    }
}
