//! Host names a customer may point its PTR at: Unicode names become their IDNA A-labels
//! (UTS 46, as browsers and mail servers look them up), then the result must be a plain LDH
//! host name (RFC 1123): labels of 1 to 63 letters, digits and inner hyphens, at most 253
//! characters, at least two labels, a top-level label that is not all digits (else it would
//! read as an address). The provider's defaults come from a template filled with the octets.

use std::net::Ipv4Addr;

/// Why a name is refused (answered 400 `bad_name`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("the name is empty")]
    Empty,
    #[error("the name is not a valid internationalised domain name (IDNA)")]
    Idna,
    #[error("the name is {0} characters long, at most 253 are allowed")]
    TooLong(usize),
    #[error("the name has an empty label (two dots in a row, or a leading dot)")]
    EmptyLabel,
    #[error("the label {0:?} is longer than 63 characters")]
    LabelTooLong(String),
    #[error("the label {0:?} has a character other than letters, digits and hyphens")]
    BadCharacter(String),
    #[error("the label {0:?} starts or ends with a hyphen")]
    Hyphen(String),
    #[error("a host name needs at least two labels (e.g. mail.example.net)")]
    SingleLabel,
    #[error("the top-level label {0:?} is all digits")]
    NumericTld(String),
}

/// The name as it is published: lowercase A-labels, absolute (with the final dot).
pub fn host_name(input: &str) -> Result<String, NameError> {
    let trimmed = input.trim();
    let bare = trimmed.strip_suffix('.').unwrap_or(trimmed);
    if bare.is_empty() {
        return Err(NameError::Empty);
    }
    // Checked before IDNA too: the mapping must not be fed megabytes.
    if bare.len() > 1024 {
        return Err(NameError::TooLong(bare.len()));
    }
    let ascii = if bare.is_ascii() {
        bare.to_ascii_lowercase()
    } else {
        idna::domain_to_ascii_strict(bare).map_err(|_| NameError::Idna)?
    };
    if ascii.len() > 253 {
        return Err(NameError::TooLong(ascii.len()));
    }
    let labels: Vec<&str> = ascii.split('.').collect();
    for l in &labels {
        if l.is_empty() {
            return Err(NameError::EmptyLabel);
        }
        if l.len() > 63 {
            return Err(NameError::LabelTooLong(l.to_string()));
        }
        if !l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err(NameError::BadCharacter(l.to_string()));
        }
        if l.starts_with('-') || l.ends_with('-') {
            return Err(NameError::Hyphen(l.to_string()));
        }
    }
    if labels.len() < 2 {
        return Err(NameError::SingleLabel);
    }
    let tld = labels[labels.len() - 1];
    if tld.bytes().all(|b| b.is_ascii_digit()) {
        return Err(NameError::NumericTld(tld.to_string()));
    }
    Ok(format!("{ascii}."))
}

/// `template` with `{a}`, `{b}`, `{c}`, `{d}` replaced by the octets of `ip`, made absolute.
pub fn fill(template: &str, ip: Ipv4Addr) -> String {
    let [a, b, c, d] = ip.octets();
    let s = template
        .replace("{a}", &a.to_string())
        .replace("{b}", &b.to_string())
        .replace("{c}", &c.to_string())
        .replace("{d}", &d.to_string());
    if s.ends_with('.') {
        s
    } else {
        format!("{s}.")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_lowercase_absolute_a_labels() {
        assert_eq!(host_name("Mail.Example.NET").unwrap(), "mail.example.net.");
        assert_eq!(host_name("mail.example.net.").unwrap(), "mail.example.net.");
        assert_eq!(
            host_name("mail.bücher.example").unwrap(),
            "mail.xn--bcher-kva.example."
        );
        assert_eq!(host_name("a-b.c1.example").unwrap(), "a-b.c1.example.");
    }

    #[test]
    fn bad_names_are_refused_with_the_reason() {
        assert_eq!(host_name(""), Err(NameError::Empty));
        assert_eq!(host_name("."), Err(NameError::Empty));
        assert_eq!(host_name("localhost"), Err(NameError::SingleLabel));
        assert_eq!(host_name("a..example"), Err(NameError::EmptyLabel));
        assert!(matches!(host_name("-a.example"), Err(NameError::Hyphen(_))));
        assert!(matches!(
            host_name("a_b.example"),
            Err(NameError::BadCharacter(_))
        ));
        assert!(matches!(
            host_name("a b.example"),
            Err(NameError::BadCharacter(_))
        ));
        assert!(matches!(
            host_name("10.0.0.1"),
            Err(NameError::NumericTld(_))
        ));
        let long = format!("{}.example", "a".repeat(64));
        assert!(matches!(host_name(&long), Err(NameError::LabelTooLong(_))));
        let many = format!("{}example", "abcdefghi.".repeat(26));
        assert!(matches!(host_name(&many), Err(NameError::TooLong(_))));
        assert!(host_name("\u{0}.example").is_err());
    }

    #[test]
    fn templates_take_the_octets() {
        let ip: Ipv4Addr = "203.0.113.10".parse().unwrap();
        assert_eq!(
            fill("{a}-{b}-{c}-{d}.pool.example.net", ip),
            "203-0-113-10.pool.example.net."
        );
        assert_eq!(
            fill("{d}.8-29.113.0.203.in-addr.arpa.", ip),
            "10.8-29.113.0.203.in-addr.arpa."
        );
    }
}
