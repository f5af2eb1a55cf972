//! The proxy-wasm ABI's byte formats, pure (natively tested): header maps and property paths.
//!
//! A header map is `u32 count`, then `count` pairs of `u32 name_len, u32 value_len`, then each name
//! and value in order, each followed by a NUL byte; all integers little-endian. A property path is
//! its segments joined by NUL.

/// Serializes `(name, value)` pairs as a proxy-wasm header map.
pub fn serialize_pairs<N: AsRef<[u8]>, V: AsRef<[u8]>>(pairs: &[(N, V)]) -> Vec<u8> {
    let size = 4 + pairs
        .iter()
        .map(|(n, v)| 10 + n.as_ref().len() + v.as_ref().len())
        .sum::<usize>();
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(&(pairs.len() as u32).to_le_bytes());
    for (n, v) in pairs {
        out.extend_from_slice(&(n.as_ref().len() as u32).to_le_bytes());
        out.extend_from_slice(&(v.as_ref().len() as u32).to_le_bytes());
    }
    for (n, v) in pairs {
        out.extend_from_slice(n.as_ref());
        out.push(0);
        out.extend_from_slice(v.as_ref());
        out.push(0);
    }
    out
}

fn u32_at(bytes: &[u8], at: usize) -> Option<usize> {
    let b = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
}

/// Parses a proxy-wasm header map into borrowed `(name, value)` pairs, in order. `None` when the
/// buffer is not a well-formed map (a length past the end, a missing NUL, bytes left over): the
/// caller treats that as a host failure, never as "no headers". An empty buffer is an empty map.
pub fn parse_pairs(bytes: &[u8]) -> Option<Vec<(&[u8], &[u8])>> {
    if bytes.is_empty() {
        return Some(Vec::new());
    }
    let count = u32_at(bytes, 0)?;
    let mut at = count.checked_mul(8)?.checked_add(4)?;
    if at > bytes.len() {
        return None;
    }
    let mut out = Vec::with_capacity(count);
    let mut take = |len: usize| -> Option<&[u8]> {
        let end = at.checked_add(len)?;
        let s = bytes.get(at..end)?;
        if *bytes.get(end)? != 0 {
            return None;
        }
        at = end + 1;
        Some(s)
    };
    for i in 0..count {
        let name_len = u32_at(bytes, 4 + i * 8)?;
        let value_len = u32_at(bytes, 8 + i * 8)?;
        let name = take(name_len)?;
        let value = take(value_len)?;
        out.push((name, value));
    }
    (at == bytes.len()).then_some(out)
}

/// A property path (`["xds", "route_name"]`) as the host expects it.
pub fn property_path(segments: &[&str]) -> Vec<u8> {
    segments.join("\0").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_round_trip_in_order_with_repeats_and_empty_values() {
        let pairs: Vec<(&[u8], &[u8])> = vec![
            (b":path", b"/a?b"),
            (b"cookie", b"a=1"),
            (b"cookie", b""),
            (b"x-bin", b"\xff\x00\x01"),
        ];
        let bytes = serialize_pairs(&pairs);
        assert_eq!(parse_pairs(&bytes), Some(pairs));
        assert_eq!(parse_pairs(&[]), Some(vec![]));
        assert_eq!(
            parse_pairs(&serialize_pairs::<&[u8], &[u8]>(&[])),
            Some(vec![])
        );
    }

    #[test]
    fn a_malformed_map_is_refused_not_misread() {
        let bytes = serialize_pairs(&[("a", "1"), ("b", "2")]);
        // Every truncation, and one byte too many.
        for cut in 1..bytes.len() {
            assert_eq!(parse_pairs(&bytes[..cut]), None, "cut at {cut}");
        }
        let mut long = bytes.clone();
        long.push(0);
        assert_eq!(parse_pairs(&long), None);
        // A missing NUL terminator.
        let mut bad = bytes.clone();
        let last = bad.len() - 1;
        bad[last] = b'x';
        assert_eq!(parse_pairs(&bad), None);
        // A count the buffer cannot hold.
        let mut huge = bytes;
        huge[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(parse_pairs(&huge), None);
    }

    #[test]
    fn property_paths_join_with_nul() {
        assert_eq!(property_path(&["xds", "route_name"]), b"xds\0route_name");
        assert_eq!(property_path(&["filter_state"]), b"filter_state");
    }
}
