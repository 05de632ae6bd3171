//! Base64 with the standard alphabet and padding (RFC 4648 §4), for `Authorization: Basic`
//! credentials (RFC 7617). Decoding is strict: padding required, no whitespace, no bits
//! left over in the last character; anything else is `None` (the header is then treated as
//! an opaque value).

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Encodes `data`.
#[must_use]
pub fn encode(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        let sextet = |shift: u32| ALPHABET[((n >> shift) & 63) as usize];
        out.push(sextet(18));
        out.push(sextet(12));
        out.push(if chunk.len() > 1 { sextet(6) } else { b'=' });
        out.push(if chunk.len() > 2 { sextet(0) } else { b'=' });
    }
    out
}

fn value(c: u8) -> Option<u32> {
    let v = match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => return None,
    };
    Some(u32::from(v))
}

/// Decodes `text`; `None` unless it is canonical padded base64.
#[must_use]
pub fn decode(text: &[u8]) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(4) {
        return None;
    }
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let quads = text.len() / 4;
    for (i, q) in text.chunks(4).enumerate() {
        let pad = q.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 || (pad > 0 && i + 1 != quads) {
            return None;
        }
        let mut n = 0u32;
        for &c in &q[..4 - pad] {
            n = n << 6 | value(c)?;
        }
        n <<= 6 * pad as u32;
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        // Canonical: the bits under the padding are zero.
        if bytes[3 - pad..].iter().any(|&b| b != 0) {
            return None;
        }
        out.extend_from_slice(&bytes[..3 - pad]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rfc4648_vectors() {
        for (plain, enc) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(encode(plain.as_bytes()), enc.as_bytes(), "{plain:?}");
            assert_eq!(decode(enc.as_bytes()).unwrap(), plain.as_bytes(), "{enc:?}");
        }
        // RFC 7617 §2's example.
        assert_eq!(
            decode(b"QWxhZGRpbjpvcGVuIHNlc2FtZQ==").unwrap(),
            b"Aladdin:open sesame"
        );
        assert_eq!(encode(&[0xfb, 0xff]), b"+/8=");
    }

    #[test]
    fn rejects_non_canonical() {
        for bad in [
            &b"Zg="[..],
            b"Zg",
            b"Z===",
            b"Zh==",
            b"Zg==Zg==",
            b"Zm 9v",
            b"Zm9v\n",
            b"Zm-v",
        ] {
            assert_eq!(decode(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    proptest! {
        #[test]
        fn round_trip(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            prop_assert_eq!(decode(&encode(&data)), Some(data));
        }

        #[test]
        fn decode_never_panics(text in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Some(d) = decode(&text) {
                prop_assert_eq!(encode(&d), text);
            }
        }
    }
}
