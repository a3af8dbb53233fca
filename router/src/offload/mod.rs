//! Sans-IO segmentation and coalescing for a TUN device opened with `IFF_VNET_HDR` and
//! `TUNSETOFFLOAD(TUN_F_CSUM | TSO4 | TSO6 | USO4 | USO6)`.
//!
//! * Reading from TUN, the kernel hands us TSO/USO super-packets (up to 64 KiB) prefixed with a
//!   [`VirtioNetHdr`]; [`segment()`] turns each into wire-sized IP packets with complete
//!   checksums, ready for encryption.
//! * Writing to TUN, [`GroTable`] coalesces decrypted packets of one TCP (or UDP) flow into one
//!   super-packet, so the kernel's stack handles one skb instead of dozens.
//!
//! The rules follow the kernel's GRO/GSO and wireguard-go's `tun/offload_linux.go`. Every input
//! comes from the kernel or from a peer, so nothing here trusts a length field: malformed input
//! yields an error or an unmodified pass-through, never a panic. Nothing allocates per packet and
//! nothing performs a syscall.

pub mod checksum;
pub mod gro;
mod packet;
pub mod segment;
pub mod vnet;

#[cfg(test)]
mod testutil;

pub use gro::{GroStats, GroTable};
pub use packet::OffloadError;
pub use segment::segment;
pub use vnet::{VirtioNetHdr, VNET_HDR_LEN};
