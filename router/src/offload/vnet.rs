//! `struct virtio_net_hdr` (include/uapi/linux/virtio_net.h), the 10-byte prefix of every frame
//! on a TUN device opened with `IFF_VNET_HDR`. Fields are little-endian: TUN uses virtio's
//! little-endian layout unless `TUNSETVNETBE` is set, which we never do.

use super::packet::OffloadError;

pub const VNET_HDR_LEN: usize = 10;

/// `csum_start`/`csum_offset` are valid: the checksum at that field must still be completed.
pub const FLAG_NEEDS_CSUM: u8 = 1;
/// The checksum was already verified.
pub const FLAG_DATA_VALID: u8 = 2;

pub const GSO_NONE: u8 = 0;
pub const GSO_TCPV4: u8 = 1;
/// UFO (IP fragmentation of large UDP datagrams); never negotiated, always refused.
pub const GSO_UDP: u8 = 3;
pub const GSO_TCPV6: u8 = 4;
pub const GSO_UDP_L4: u8 = 5;
/// Set together with a TCP type when the super-packet carries CWR.
pub const GSO_ECN: u8 = 0x80;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VirtioNetHdr {
    pub flags: u8,
    pub gso_type: u8,
    pub hdr_len: u16,
    pub gso_size: u16,
    pub csum_start: u16,
    pub csum_offset: u16,
}

impl VirtioNetHdr {
    /// No offload: a plain, fully checksummed packet.
    pub const NONE: Self = Self {
        flags: 0,
        gso_type: GSO_NONE,
        hdr_len: 0,
        gso_size: 0,
        csum_start: 0,
        csum_offset: 0,
    };

    /// Splits a frame read from TUN into its header and the IP packet behind it.
    pub fn decode(frame: &[u8]) -> Result<(Self, &[u8]), OffloadError> {
        let (h, packet) = frame
            .split_first_chunk::<VNET_HDR_LEN>()
            .ok_or(OffloadError::ShortFrame)?;
        let le = |i: usize| u16::from_le_bytes([h[i], h[i + 1]]);
        let hdr = Self {
            flags: h[0],
            gso_type: h[1],
            hdr_len: le(2),
            gso_size: le(4),
            csum_start: le(6),
            csum_offset: le(8),
        };
        Ok((hdr, packet))
    }

    pub fn to_bytes(&self) -> [u8; VNET_HDR_LEN] {
        let mut b = [0u8; VNET_HDR_LEN];
        b[0] = self.flags;
        b[1] = self.gso_type;
        let fields = [
            self.hdr_len,
            self.gso_size,
            self.csum_start,
            self.csum_offset,
        ];
        for (i, v) in fields.into_iter().enumerate() {
            b[2 + 2 * i..4 + 2 * i].copy_from_slice(&v.to_le_bytes());
        }
        b
    }

    /// Writes the header into `out[..VNET_HDR_LEN]`.
    ///
    /// # Panics
    /// If `out` is shorter than [`VNET_HDR_LEN`] (a caller bug, never caused by packet data).
    pub fn encode(&self, out: &mut [u8]) {
        out[..VNET_HDR_LEN].copy_from_slice(&self.to_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_little_endian() {
        let h = VirtioNetHdr {
            flags: FLAG_NEEDS_CSUM,
            gso_type: GSO_TCPV4 | GSO_ECN,
            hdr_len: 0x0102,
            gso_size: 1448,
            csum_start: 20,
            csum_offset: 16,
        };
        let mut frame = [0xeeu8; 13];
        h.encode(&mut frame);
        assert_eq!(frame[..10], [1, 0x81, 0x02, 0x01, 0xa8, 0x05, 20, 0, 16, 0]);
        let (d, rest) = VirtioNetHdr::decode(&frame).unwrap();
        assert_eq!((d, rest), (h, &[0xee; 3][..]));
        assert_eq!(VirtioNetHdr::NONE.to_bytes(), [0; 10]);
        assert_eq!(VirtioNetHdr::default(), VirtioNetHdr::NONE);
    }

    #[test]
    fn short_frames_are_refused() {
        for n in 0..VNET_HDR_LEN {
            assert_eq!(
                VirtioNetHdr::decode(&[0; 16][..n]),
                Err(OffloadError::ShortFrame)
            );
        }
        assert_eq!(VirtioNetHdr::decode(&[0; 10]).unwrap().1, &[] as &[u8]);
    }
}
