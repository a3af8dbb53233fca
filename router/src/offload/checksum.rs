//! Internet checksum (RFC 1071). Runs over every byte we segment or coalesce, so the hot loop
//! adds 32 bytes per iteration as native-endian u64 words into a u128 (which cannot overflow for
//! any slice) and folds once at the end. One's-complement sums are byte-order independent up to
//! a final byte swap, and 2^64 ≡ 1 (mod 2^16 - 1), so wide native-endian words give the same
//! 16-bit result as the textbook big-endian loop.

/// Adds the big-endian 16-bit words of `data` to `initial`, unfolded. An odd trailing byte counts
/// as the high byte of a final word, so `data` must start at an even offset of the checksummed
/// range.
pub fn sum(data: &[u8], initial: u64) -> u64 {
    let mut acc: u128 = 0;
    let mut chunks = data.chunks_exact(32);
    for c in &mut chunks {
        acc += u128::from(ne64(&c[..8]))
            + u128::from(ne64(&c[8..16]))
            + u128::from(ne64(&c[16..24]))
            + u128::from(ne64(&c[24..]));
    }
    let mut words = chunks.remainder().chunks_exact(8);
    for c in &mut words {
        acc += u128::from(ne64(c));
    }
    // Zero padding at the end keeps the tail's bytes at their big-endian word positions.
    let mut tail = [0u8; 8];
    tail[..words.remainder().len()].copy_from_slice(words.remainder());
    acc += u128::from(u64::from_ne_bytes(tail));

    let native = fold(add_carry(acc as u64, (acc >> 64) as u64));
    let be = if cfg!(target_endian = "little") {
        native.swap_bytes()
    } else {
        native
    };
    add_carry(initial, u64::from(be))
}

/// Folds an unfolded sum to 16 bits (not complemented).
pub fn fold(s: u64) -> u16 {
    let s = (s & 0xffff_ffff) + (s >> 32);
    let s = (s & 0xffff) + (s >> 16);
    let s = (s & 0xffff) + (s >> 16);
    ((s & 0xffff) + (s >> 16)) as u16
}

/// The value to store in a checksum field: complement of the folded sum of `data` and `initial`.
pub fn checksum(data: &[u8], initial: u64) -> u16 {
    !fold(sum(data, initial))
}

/// Pseudo-header sum for TCP/UDP over IPv4; `len` is the transport length (header + payload).
pub fn pseudo_v4(src: [u8; 4], dst: [u8; 4], proto: u8, len: u32) -> u64 {
    // A u32 is two 16-bit words; their sum ≡ the u32 itself modulo 2^16 - 1.
    u64::from(u32::from_be_bytes(src))
        + u64::from(u32::from_be_bytes(dst))
        + u64::from(proto)
        + u64::from(len)
}

/// Pseudo-header sum for TCP/UDP over IPv6 (RFC 8200 §8.1).
pub fn pseudo_v6(src: [u8; 16], dst: [u8; 16], proto: u8, len: u32) -> u64 {
    let words = src.chunks_exact(4).chain(dst.chunks_exact(4));
    let addrs: u64 = words
        .map(|w| u64::from(u32::from_be_bytes([w[0], w[1], w[2], w[3]])))
        .sum();
    addrs + u64::from(proto) + u64::from(len)
}

/// Header checksum of an IPv4 header, treating its checksum field (bytes 10..12) as zero.
pub fn ipv4_header_checksum(hdr: &[u8]) -> u16 {
    let (head, rest) = hdr.split_at(hdr.len().min(10));
    checksum(head, sum(rest.get(2..).unwrap_or_default(), 0))
}

fn ne64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(b);
    u64::from_ne_bytes(a)
}

/// One's-complement addition: the end-around carry keeps the value congruent mod 2^16 - 1.
fn add_carry(a: u64, b: u64) -> u64 {
    let (s, c) = a.overflowing_add(b);
    s + u64::from(c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::offload::testutil::{naive_checksum, Rng};

    #[test]
    fn rfc1071_example() {
        // RFC 1071 §3: the words 0001 f203 f4f5 f6f7 sum to ddf2.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(sum(&data, 0)), 0xddf2);
        assert_eq!(checksum(&data, 0), !0xddf2);
    }

    #[test]
    fn ipv4_header_vector() {
        // Classic example header whose checksum is 0xb861.
        let mut h = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(ipv4_header_checksum(&h), 0xb861);
        assert_eq!(fold(sum(&h, 0)), 0xffff, "a correct header sums to -0");
        h[10] = 0x12; // the stored field must not influence the result
        assert_eq!(ipv4_header_checksum(&h), 0xb861);
        assert_eq!(
            ipv4_header_checksum(&h[..5]),
            naive_checksum(&h[..5], 0),
            "no panic when short"
        );
    }

    #[test]
    fn matches_naive_on_random_data() {
        let mut rng = Rng::new(7);
        let mut buf = vec![0u8; 2100];
        for len in (0..300).chain([1499, 1500, 2047, 2100]) {
            for _ in 0..4 {
                rng.fill(&mut buf[..len]);
                let initial = rng.next() >> rng.below(64);
                let init16 = u64::from(fold(initial));
                assert_eq!(
                    checksum(&buf[..len], initial),
                    naive_checksum(&buf[..len], init16),
                    "len {len}"
                );
            }
        }
        // Worst case for carries: all ones, maximum initial.
        let ones = vec![0xffu8; 65_535];
        assert_eq!(checksum(&ones, u64::MAX), naive_checksum(&ones, 0xffff));
    }

    #[test]
    fn sum_is_composable_at_even_offsets() {
        let mut rng = Rng::new(9);
        let mut buf = [0u8; 301];
        rng.fill(&mut buf);
        for split in (0..=300).step_by(2) {
            let (a, b) = buf.split_at(split);
            assert_eq!(fold(sum(b, sum(a, 0))), fold(sum(&buf, 0)));
        }
    }

    #[test]
    fn pseudo_headers_match_byte_layout() {
        let mut rng = Rng::new(3);
        for _ in 0..100 {
            let mut a = [0u8; 32];
            rng.fill(&mut a);
            let len = rng.next() as u32 & 0xffff;
            let proto = rng.next() as u8;
            let l = len.to_be_bytes();
            let v4 = [&a[..8], &[0, proto, l[2], l[3]]].concat();
            let v4s = pseudo_v4(
                a[..4].try_into().unwrap(),
                a[4..8].try_into().unwrap(),
                proto,
                len,
            );
            assert_eq!(fold(v4s), !naive_checksum(&v4, 0));
            let v6 = [&a[..], &l, &[0, 0, 0, proto]].concat();
            let v6s = pseudo_v6(
                a[..16].try_into().unwrap(),
                a[16..].try_into().unwrap(),
                proto,
                len,
            );
            assert_eq!(fold(v6s), !naive_checksum(&v6, 0));
        }
    }
}
