//! Email addresses as Keyfob keeps them: trimmed, lower-cased, plausibly shaped.

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`email` is not a valid email address")]
pub struct EmailError;

/// A normalised email address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    pub fn parse(input: &str) -> Result<Email, EmailError> {
        let email = input.trim().to_lowercase();
        let (local, domain) = email.split_once('@').ok_or(EmailError)?;
        let ok = !local.is_empty()
            && local.len() <= 64
            && email.len() <= 254
            && domain.contains('.')
            && !domain.starts_with('.')
            && !domain.ends_with('.')
            && !domain.contains('@')
            && email.chars().all(|c| c.is_ascii_graphic());
        if ok {
            Ok(Email(email))
        } else {
            Err(EmailError)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_and_rejects() {
        assert_eq!(
            Email::parse("  Ada@Example.COM ").unwrap().as_str(),
            "ada@example.com"
        );
        for bad in [
            "",
            "ada",
            "@example.com",
            "ada@",
            "ada@example",
            "a b@example.com",
            "a@b@c.com",
            "ada@.com",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad}");
        }
    }
}
