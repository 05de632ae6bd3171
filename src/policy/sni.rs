//! The server name (SNI) of a TLS ClientHello, from the first bytes a guest sends.
//!
//! rustls' `Acceptor` does the parsing (no crypto provider is involved: it reads the
//! ClientHello only). The caller peeks at the flow's first bytes without consuming them
//! and asks again as more arrive, up to [`MAX_HELLO`] bytes; past that, or when the bytes
//! are not a TLS handshake, there is no SNI to check.

/// How many first bytes of a flow are looked at for a ClientHello.
pub const MAX_HELLO: usize = 16 * 1024;

/// What the first bytes of a flow say about its server name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Sni {
    /// A ClientHello has begun and is not complete yet.
    NeedMore,
    /// A complete ClientHello naming this server (lowercase, no trailing dot).
    Name(String),
    /// Not TLS, a ClientHello without SNI, or nothing complete within [`MAX_HELLO`].
    Absent,
}

/// Look at the first bytes a guest sent on a flow.
pub fn client_hello_sni(first: &[u8]) -> Sni {
    if first.is_empty() {
        return Sni::NeedMore;
    }
    // A TLS record of type handshake (22): anything else is not a ClientHello.
    if first[0] != 22 {
        return Sni::Absent;
    }
    let mut acceptor = rustls::server::Acceptor::default();
    let mut rd = &first[..first.len().min(MAX_HELLO)];
    while !rd.is_empty() {
        match acceptor.read_tls(&mut rd) {
            Ok(0) | Err(_) => return Sni::Absent,
            Ok(_) => {}
        }
    }
    match acceptor.accept() {
        Ok(Some(accepted)) => match accepted.client_hello().server_name() {
            Some(name) => Sni::Name(name.trim_end_matches('.').to_ascii_lowercase()),
            None => Sni::Absent,
        },
        Ok(None) if first.len() < MAX_HELLO => Sni::NeedMore,
        Ok(None) | Err(_) => Sni::Absent,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HELLO: &[u8] = include_bytes!("fixtures/client_hello_allowed_test.bin");

    #[test]
    fn a_client_hello_names_its_server() {
        assert_eq!(client_hello_sni(HELLO), Sni::Name("allowed.test".into()));
    }

    #[test]
    fn a_partial_hello_needs_more_at_every_split() {
        for cut in [1, 5, 6, 100, HELLO.len() - 1] {
            assert_eq!(client_hello_sni(&HELLO[..cut]), Sni::NeedMore, "{cut}");
        }
        // Bytes after the hello (the client's next record) change nothing.
        let mut more = HELLO.to_vec();
        more.extend_from_slice(&[23, 3, 3, 0, 1, 0]);
        assert_eq!(client_hello_sni(&more), Sni::Name("allowed.test".into()));
    }

    #[test]
    fn other_bytes_have_no_sni() {
        assert_eq!(client_hello_sni(b"GET / HTTP/1.1\r\n"), Sni::Absent);
        assert_eq!(client_hello_sni(&[22, 3, 1, 0, 4, 9, 9, 9, 9]), Sni::Absent);
        assert_eq!(client_hello_sni(&[]), Sni::NeedMore);
        // A handshake record that never completes within the window.
        let mut huge = vec![22, 3, 1, 0xff, 0xff];
        huge.resize(MAX_HELLO + 10, 0);
        assert_eq!(client_hello_sni(&huge), Sni::Absent);
    }
}
