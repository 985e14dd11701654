//! How the VM stops: the reason reported by [`crate::Vm::run`] and the
//! shared signal that vCPUs, devices and [`crate::StopHandle`]s raise.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

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
}

impl ExitSignal {
    /// A signal with no exit requested yet.
    pub fn new() -> std::io::Result<Self> {
        Ok(Self {
            stopping: AtomicBool::new(false),
            outcome: Mutex::new(None),
            evt: EventFd::new(EFD_NONBLOCK)?,
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
        if let Err(e) = self.evt.write(1) {
            log::error!("cannot signal the VM exit event: {e}");
        }
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
}
