//! Legacy PC ports: a minimal i8042 keyboard controller (0x60/0x64) that
//! reports the CPU reset command as a reboot, and the poweroff port 0xf4
//! written by husk's guest kernel on power off.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::bus::BusDevice;
use crate::exit::{ExitReason, ExitSignal};
use crate::snapshot::I8042State;

/// First port of the i8042 range (data port); the command/status port is +4.
pub const I8042_BASE: u64 = 0x60;
/// Length of the i8042 range (0x60..=0x64).
pub const I8042_SIZE: u64 = 5;
/// The poweroff port (QEMU's isa-debug-exit convention).
pub const POWEROFF_PORT: u64 = 0xf4;

const DATA: u64 = 0;
const COMMAND: u64 = 4;
const STATUS_OUTPUT_FULL: u8 = 0x01;
const CMD_READ_CTR: u8 = 0x20;
const CMD_WRITE_CTR: u8 = 0x60;
const CMD_SELF_TEST: u8 = 0xaa;
const CMD_KBD_TEST: u8 = 0xab;
const CMD_AUX_TEST: u8 = 0xa9;
const CMD_RESET_CPU: u8 = 0xfe;

/// Just enough of an i8042 for Linux to probe it quickly and to reboot
/// through it (`reboot=k`).
pub struct I8042 {
    exit: Arc<ExitSignal>,
    ctr: u8,
    output: VecDeque<u8>,
    pending_ctr_write: bool,
}

impl I8042 {
    /// A controller that reports resets to `exit`.
    pub fn new(exit: Arc<ExitSignal>) -> Self {
        Self {
            exit,
            ctr: 0,
            output: VecDeque::new(),
            pending_ctr_write: false,
        }
    }

    /// The controller's state, for a snapshot.
    pub fn state(&self) -> I8042State {
        I8042State {
            ctr: self.ctr,
            output: self.output.iter().copied().collect(),
            pending_ctr_write: self.pending_ctr_write,
        }
    }

    /// A controller in a saved `state` (at most 16 pending bytes are kept).
    pub fn from_state(exit: Arc<ExitSignal>, state: &I8042State) -> Self {
        Self {
            exit,
            ctr: state.ctr,
            output: state.output.iter().copied().take(16).collect(),
            pending_ctr_write: state.pending_ctr_write,
        }
    }

    fn command(&mut self, cmd: u8) {
        self.pending_ctr_write = false;
        match cmd {
            CMD_RESET_CPU => {
                log::info!("guest requested a reset through the i8042");
                self.exit.request(ExitReason::Reboot);
            }
            CMD_READ_CTR => self.push(self.ctr),
            CMD_WRITE_CTR => self.pending_ctr_write = true,
            CMD_SELF_TEST => self.push(0x55),
            CMD_KBD_TEST | CMD_AUX_TEST => self.push(0x00),
            _ => {}
        }
    }

    fn push(&mut self, b: u8) {
        if self.output.len() < 16 {
            self.output.push_back(b);
        }
    }
}

impl BusDevice for I8042 {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let value = match (offset, data.len()) {
            (DATA, 1) => self.output.pop_front().unwrap_or(0),
            (COMMAND, 1) if !self.output.is_empty() => STATUS_OUTPUT_FULL,
            _ => 0,
        };
        data.fill(value);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let [b] = data else { return };
        match offset {
            COMMAND => self.command(*b),
            DATA if self.pending_ctr_write => {
                self.ctr = *b;
                self.pending_ctr_write = false;
            }
            _ => {}
        }
    }
}

/// Port 0xf4: any write means the guest powered off.
pub struct PowerOffPort {
    exit: Arc<ExitSignal>,
}

impl PowerOffPort {
    /// A port that reports power off to `exit`.
    pub fn new(exit: Arc<ExitSignal>) -> Self {
        Self { exit }
    }
}

impl BusDevice for PowerOffPort {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0xff);
    }

    fn write(&mut self, _offset: u64, data: &[u8]) {
        log::info!("guest powered off (port 0xf4 <- {data:x?})");
        self.exit.request(ExitReason::PowerOff);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signal() -> Arc<ExitSignal> {
        Arc::new(ExitSignal::new().unwrap())
    }

    #[test]
    fn i8042_reset_is_reboot() {
        let s = signal();
        let mut k = I8042::new(s.clone());
        let mut st = [0xffu8];
        k.read(COMMAND, &mut st);
        assert_eq!(st[0], 0, "idle status");
        k.write(COMMAND, &[CMD_RESET_CPU]);
        assert!(s.is_stopping());
        assert!(matches!(s.take_outcome(), Some(Ok(ExitReason::Reboot))));
    }

    #[test]
    fn i8042_ctr_roundtrip_and_self_test() {
        let s = signal();
        let mut k = I8042::new(s.clone());
        k.write(COMMAND, &[CMD_WRITE_CTR]);
        k.write(DATA, &[0x47]);
        k.write(COMMAND, &[CMD_READ_CTR]);
        let mut b = [0u8];
        k.read(COMMAND, &mut b);
        assert_eq!(b[0], STATUS_OUTPUT_FULL);
        k.read(DATA, &mut b);
        assert_eq!(b[0], 0x47);
        k.write(COMMAND, &[CMD_SELF_TEST]);
        k.read(DATA, &mut b);
        assert_eq!(b[0], 0x55);
        k.read(COMMAND, &mut b);
        assert_eq!(b[0], 0);
        // Odd accesses are harmless.
        k.write(2, &[1, 2]);
        let mut w = [9u8; 2];
        k.read(DATA, &mut w);
        assert_eq!(w, [0, 0]);
        assert!(!s.is_stopping());
    }

    #[test]
    fn i8042_state_round_trip() {
        let mut k = I8042::new(signal());
        k.write(COMMAND, &[CMD_WRITE_CTR]);
        k.write(DATA, &[0x61]);
        k.write(COMMAND, &[CMD_READ_CTR]);
        k.write(COMMAND, &[CMD_SELF_TEST]);
        let mut copy = I8042::from_state(signal(), &k.state());
        let mut b = [0u8];
        copy.read(DATA, &mut b);
        assert_eq!(b[0], 0x61);
        copy.read(DATA, &mut b);
        assert_eq!(b[0], 0x55);
    }

    #[test]
    fn poweroff_port() {
        let s = signal();
        let mut p = PowerOffPort::new(s.clone());
        p.write(0, &[0]);
        assert!(matches!(s.take_outcome(), Some(Ok(ExitReason::PowerOff))));
    }
}
