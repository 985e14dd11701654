//! The COM1 8250 UART (port 0x3f8, IRQ 4) on vm-superio, output only.

use std::io::Write;
use std::path::Path;

use vm_superio::serial::NoEvents;
use vm_superio::{Serial, Trigger};
use vmm_sys_util::eventfd::EventFd;

use crate::bus::BusDevice;
use crate::logging::{CappedFile, CONSOLE_MAX_BYTES};
use crate::snapshot::SerialState;

/// I/O port base of COM1.
pub const SERIAL_PORT_BASE: u64 = 0x3f8;
/// Number of UART registers.
pub const SERIAL_PORT_SIZE: u64 = 8;

/// Raises the UART interrupt by writing an irqfd.
#[derive(Debug)]
pub struct EventFdTrigger(EventFd);

impl EventFdTrigger {
    /// Wraps `evt` (registered as the irqfd of the serial GSI).
    pub fn new(evt: EventFd) -> Self {
        Self(evt)
    }

    /// The eventfd, for registration with KVM.
    pub fn eventfd(&self) -> &EventFd {
        &self.0
    }
}

impl Trigger for EventFdTrigger {
    type E = std::io::Error;
    fn trigger(&self) -> std::io::Result<()> {
        self.0.write(1)
    }
}

/// Where the guest console goes.
pub type ConsoleWriter = Box<dyn Write + Send>;

/// Opens a console destination: stdout, a file (created or truncated,
/// capped: see [`CappedFile`]) or nothing.
pub fn console_writer(file: Option<&Path>, stdout: bool) -> std::io::Result<ConsoleWriter> {
    Ok(match (file, stdout) {
        (Some(path), _) => Box::new(CappedFile::create(path, CONSOLE_MAX_BYTES)?),
        (None, true) => Box::new(std::io::stdout()),
        (None, false) => Box::new(std::io::sink()),
    })
}

/// The serial port as a port-I/O bus device.
pub struct SerialDevice {
    serial: Serial<EventFdTrigger, NoEvents, ConsoleWriter>,
}

impl SerialDevice {
    /// A UART raising `trigger` and writing what the guest sends to `out`.
    pub fn new(trigger: EventFdTrigger, out: ConsoleWriter) -> Self {
        Self {
            serial: Serial::new(trigger, out),
        }
    }

    /// A UART in a saved `state`; `None` if the state is invalid (an input
    /// buffer larger than the FIFO).
    pub fn from_state(
        state: &SerialState,
        trigger: EventFdTrigger,
        out: ConsoleWriter,
    ) -> Option<Self> {
        let state = vm_superio::serial::SerialState::from(state);
        let serial = Serial::from_state(&state, trigger, NoEvents, out).ok()?;
        Some(Self { serial })
    }

    /// The UART's registers and input buffer, for a snapshot.
    pub fn state(&self) -> SerialState {
        self.serial.state().into()
    }

    /// The interrupt trigger (its eventfd is the irqfd to register).
    pub fn trigger(&self) -> &EventFdTrigger {
        self.serial.interrupt_evt()
    }
}

impl BusDevice for SerialDevice {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        match (data.len(), u8::try_from(offset)) {
            (1, Ok(off)) if offset < SERIAL_PORT_SIZE => data[0] = self.serial.read(off),
            _ => data.fill(0xff),
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let (1, Ok(off)) = (data.len(), u8::try_from(offset)) else {
            return;
        };
        if let Err(e) = self.serial.write(off, data[0]) {
            log::debug!("serial: {e:?}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);
    impl Write for Shared {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn output_and_interrupt() {
        let out = Shared::default();
        let evt = EventFd::new(vmm_sys_util::eventfd::EFD_NONBLOCK).unwrap();
        let mut dev = SerialDevice::new(EventFdTrigger::new(evt), Box::new(out.clone()));
        dev.write(1, &[0x02]); // IER: THR empty interrupt
        for b in b"hi" {
            dev.write(0, &[*b]);
        }
        assert_eq!(&*out.0.lock().unwrap(), b"hi");
        assert!(
            dev.trigger().eventfd().read().unwrap() >= 1,
            "THR-empty interrupt raised"
        );
        let mut lsr = [0u8];
        dev.read(5, &mut lsr);
        assert!(lsr[0] & 0x20 != 0, "THR empty");
        // Odd sizes and offsets never panic.
        let mut wide = [0u8; 4];
        dev.read(0, &mut wide);
        assert_eq!(wide, [0xff; 4]);
        dev.write(300, &[1]);
        dev.write(0, &[]);
    }

    #[test]
    fn state_round_trip() {
        let evt =
            || EventFdTrigger::new(EventFd::new(vmm_sys_util::eventfd::EFD_NONBLOCK).unwrap());
        let mut dev = SerialDevice::new(evt(), Box::new(std::io::sink()));
        dev.write(3, &[0x03]); // LCR: 8N1
        dev.write(7, &[0x5a]); // scratch
        let state = dev.state();
        let mut copy = SerialDevice::from_state(&state, evt(), Box::new(std::io::sink())).unwrap();
        let mut b = [0u8];
        copy.read(7, &mut b);
        assert_eq!(b[0], 0x5a);
        copy.read(3, &mut b);
        assert_eq!(b[0], 0x03);
        let bad = SerialState {
            in_buffer: vec![0; 1000],
            ..state
        };
        assert!(SerialDevice::from_state(&bad, evt(), Box::new(std::io::sink())).is_none());
    }
}
