//! Lowercase hex for the byte strings the journal stores (xattr values).

/// `[0x01, 0xab]` -> "01ab".
pub fn encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// "01ab" -> `[0x01, 0xab]`; None for odd lengths or non-hex digits.
pub fn decode(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || !text.is_ascii() {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
        .collect()
}

/// A test fixture's bytes, as `getfattr -e hex` printed them.
#[cfg(test)]
pub fn unhex(text: &str) -> Vec<u8> {
    decode(text).expect("valid hex fixture")
}

#[cfg(test)]
mod tests {
    #[test]
    fn round_trips_and_rejects() {
        assert_eq!(super::encode(&[0, 1, 0xab, 0xff]), "0001abff");
        assert_eq!(super::decode("0001abff"), Some(vec![0, 1, 0xab, 0xff]));
        assert_eq!(super::decode("abc"), None);
        assert_eq!(super::decode("zz"), None);
        assert_eq!(super::decode("é1"), None);
    }
}
