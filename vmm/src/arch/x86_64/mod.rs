//! x86_64 guest setup: the physical memory layout, direct 64-bit Linux boot,
//! the MP table and per-vCPU state (CPUID, MSRs, registers, LAPIC).

pub mod boot;
pub mod cpuid;
pub mod layout;
pub mod mptable;
pub mod msr;
pub mod regs;
