//! The vault's rules: which fields of a record are sensitive, what shape their values must have,
//! how they are masked, which fields are refused outright (card security codes), how a document is
//! walked to find them, and what associated data binds an encrypted value to its place.
//!
//! A field is sensitive when its *name* (the last segment of its path) is in the account's list,
//! compared without regard to case, at any depth of the document and inside arrays:
//! `ssn`, `primaryApplicant.ssn` and `applicants[1].ssn` are all sensitive when `ssn` is listed.

use serde_json::{Map, Value};

/// The list a new account starts with.
pub const DEFAULT_SENSITIVE_FIELDS: &[&str] = &[
    "ssn",
    "coApplicantSSN",
    "taxId",
    "cardNumber",
    "bankAccountNumber",
    "driversLicenseNumber",
];

/// The most names an account's list may hold.
pub const MAX_SENSITIVE_FIELDS: usize = 64;
const MAX_FIELD_NAME_LEN: usize = 64;
/// The longest sensitive value accepted, in characters.
pub const MAX_VALUE_LEN: usize = 256;

/// Names of card security codes (after lower-casing and dropping `_` and `-`): never stored.
const CARD_SECURITY_CODES: &[&str] = &[
    "cvv",
    "cvc",
    "cvv2",
    "cvc2",
    "cvn",
    "cid",
    "csc",
    "securitycode",
    "cardsecuritycode",
    "cardverificationvalue",
    "cardverificationcode",
    "cardcvv",
    "cardcvc",
];

/// The prefix of the key that marks an encrypted value inside a stored document. Client documents
/// may not use keys that start with it.
pub const RESERVED_KEY_PREFIX: &str = "$kf";
/// The key of an encrypted value's envelope: `{"$kfenc": "<base64>"}`.
pub const ENVELOPE_KEY: &str = "$kfenc";

fn normalized(name: &str) -> String {
    name.chars()
        .filter(|c| *c != '_' && *c != '-')
        .flat_map(char::to_lowercase)
        .collect()
}

/// Whether a field name is a card security code, which Keyfob refuses to store.
pub fn is_card_security_code(name: &str) -> bool {
    CARD_SECURITY_CODES.contains(&normalized(name).as_str())
}

/// What shape a sensitive value has, from its field's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SensitiveKind {
    /// A US Social Security number: `ssn`, `coApplicantSSN`, …
    Ssn,
    /// A payment card number: `cardNumber`, …
    Card,
    /// Anything else on the list: kept as given.
    Other,
}

impl SensitiveKind {
    pub fn for_field(name: &str) -> SensitiveKind {
        let n = normalized(name);
        if n.ends_with("ssn") {
            SensitiveKind::Ssn
        } else if n.ends_with("cardnumber") || n == "pan" {
            SensitiveKind::Card
        } else {
            SensitiveKind::Other
        }
    }
}

/// Why a document or a field list was refused. Messages name the field path, never the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VaultError {
    #[error(
        "`{0}` is not a valid Social Security number: use nine digits (123-45-6789 or 123456789) with a real area, group and serial"
    )]
    Ssn(String),
    #[error(
        "`{0}` is not a valid card number: use 12 to 19 digits (spaces or dashes allowed) that pass the Luhn check"
    )]
    Card(String),
    #[error("`{0}` is a card security code; Keyfob never stores those")]
    SecurityCode(String),
    #[error("`{0}` is a sensitive field and must be a string (or null)")]
    NotText(String),
    #[error("`{0}` is a sensitive field and may be at most {MAX_VALUE_LEN} characters long")]
    TooLong(String),
    #[error("`{0}`: field names starting with `$kf` are reserved")]
    ReservedKey(String),
    #[error(
        "`{0}` is not a valid field name: use a letter or `_`, then up to 63 letters, digits, `_` or `-`"
    )]
    BadFieldName(String),
    #[error("the list may hold at most {MAX_SENSITIVE_FIELDS} field names")]
    TooManyFields,
    #[error("`{0}` is a card security code and cannot be listed as a field to keep")]
    SecurityCodeListed(String),
}

/// Checks an SSN and gives it in the `123-45-6789` form.
pub fn parse_ssn(path: &str, value: &str) -> Result<String, VaultError> {
    let bad = || VaultError::Ssn(path.to_owned());
    let value = value.trim();
    let digits: String = match value.len() {
        9 if value.bytes().all(|b| b.is_ascii_digit()) => value.to_owned(),
        11 => {
            let b = value.as_bytes();
            if b[3] != b'-' || b[6] != b'-' {
                return Err(bad());
            }
            let d: String = value.chars().filter(|c| *c != '-').collect();
            if d.len() != 9 || !d.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            d
        }
        _ => return Err(bad()),
    };
    let (area, group, serial) = (&digits[0..3], &digits[3..5], &digits[5..9]);
    if area == "000" || area == "666" || area.starts_with('9') || group == "00" || serial == "0000"
    {
        return Err(bad());
    }
    Ok(format!("{area}-{group}-{serial}"))
}

/// Checks a card number (12 to 19 digits, spaces or dashes allowed, Luhn) and gives its digits.
pub fn parse_card(path: &str, value: &str) -> Result<String, VaultError> {
    let bad = || VaultError::Card(path.to_owned());
    let mut digits = String::with_capacity(19);
    for c in value.trim().chars() {
        match c {
            '0'..='9' => digits.push(c),
            ' ' | '-' => {}
            _ => return Err(bad()),
        }
    }
    if !(12..=19).contains(&digits.len()) || !luhn(&digits) {
        return Err(bad());
    }
    Ok(digits)
}

/// The Luhn checksum of a string of ASCII digits.
pub fn luhn(digits: &str) -> bool {
    let sum: u32 = digits
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| {
            let d = u32::from(b - b'0');
            if i % 2 == 1 {
                let doubled = d * 2;
                if doubled > 9 { doubled - 9 } else { doubled }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// Checks a value of a field of `kind` and gives the form to keep.
pub fn normalize(kind: SensitiveKind, path: &str, value: &str) -> Result<String, VaultError> {
    if value.chars().count() > MAX_VALUE_LEN {
        return Err(VaultError::TooLong(path.to_owned()));
    }
    match kind {
        SensitiveKind::Ssn => parse_ssn(path, value),
        SensitiveKind::Card => parse_card(path, value),
        SensitiveKind::Other => Ok(value.to_owned()),
    }
}

/// The masked form of a value: `***-**-6789` for an SSN, `************4242` for a card (its length
/// kept), and for anything else all but the last four characters hidden (all of them when the
/// value is shorter than eight characters, so that a short value is not mostly shown).
pub fn mask(kind: SensitiveKind, value: &str) -> String {
    let chars: Vec<char> = value.chars().collect();
    let last4 =
        |chars: &[char]| -> String { chars[chars.len().saturating_sub(4)..].iter().collect() };
    match kind {
        SensitiveKind::Ssn => {
            let digits: Vec<char> = chars.iter().copied().filter(char::is_ascii_digit).collect();
            if digits.len() == 9 {
                format!("***-**-{}", last4(&digits))
            } else {
                "***-**-****".to_owned()
            }
        }
        SensitiveKind::Card => {
            let digits: Vec<char> = chars.iter().copied().filter(char::is_ascii_digit).collect();
            if digits.len() >= 12 {
                format!("{}{}", "*".repeat(digits.len() - 4), last4(&digits))
            } else {
                "*".repeat(digits.len().max(12))
            }
        }
        SensitiveKind::Other => {
            if chars.len() < 8 {
                "*".repeat(chars.len().max(4))
            } else {
                format!("{}{}", "*".repeat(chars.len() - 4), last4(&chars))
            }
        }
    }
}

/// The associated data that binds an encrypted value to its account, record and field path, so a
/// ciphertext copied to another record, field or account does not decrypt.
pub fn associated_data(account_id: &str, record_id: &str, path: &str) -> Vec<u8> {
    // Lengths first, so that no two different triples give the same bytes.
    let mut aad = Vec::with_capacity(32 + account_id.len() + record_id.len() + path.len());
    aad.extend_from_slice(b"keyfob-vault-v1");
    for part in [account_id, record_id, path] {
        aad.extend_from_slice(&(part.len() as u32).to_be_bytes());
        aad.extend_from_slice(part.as_bytes());
    }
    aad
}

/// An account's list of sensitive field names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SensitiveFields {
    names: Vec<String>,
    normalized: Vec<String>,
}

impl Default for SensitiveFields {
    fn default() -> Self {
        SensitiveFields::new(DEFAULT_SENSITIVE_FIELDS.iter().map(|s| (*s).to_owned()))
    }
}

impl SensitiveFields {
    fn new(names: impl IntoIterator<Item = String>) -> SensitiveFields {
        let mut names: Vec<String> = names.into_iter().collect();
        names.sort_by_key(|n| normalized(n));
        names.dedup_by_key(|n| normalized(n));
        let normalized = names.iter().map(|n| normalized(n)).collect();
        SensitiveFields { names, normalized }
    }

    /// Parses a list typed by an owner: names separated by commas, spaces or new lines.
    pub fn parse(text: &str) -> Result<SensitiveFields, VaultError> {
        let names: Vec<String> = text
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        Self::from_names(names)
    }

    /// Checks a list of names.
    pub fn from_names(names: Vec<String>) -> Result<SensitiveFields, VaultError> {
        for name in &names {
            let valid = name.len() <= MAX_FIELD_NAME_LEN
                && name
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            if !valid {
                return Err(VaultError::BadFieldName(name.chars().take(64).collect()));
            }
            if is_card_security_code(name) {
                return Err(VaultError::SecurityCodeListed(name.clone()));
            }
        }
        let fields = SensitiveFields::new(names);
        if fields.names.len() > MAX_SENSITIVE_FIELDS {
            return Err(VaultError::TooManyFields);
        }
        Ok(fields)
    }

    /// The names, as the owner wrote them, sorted.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    pub fn contains(&self, name: &str) -> bool {
        let n = normalized(name);
        self.normalized.contains(&n)
    }

    /// Whether a dotted path (as in a listing's `sort` or `where`) ends in a sensitive field.
    pub fn covers_path(&self, segments: &[String]) -> bool {
        segments
            .last()
            .is_some_and(|last| self.contains(last) || is_card_security_code(last))
    }
}

/// A sensitive value found in a document: where it is and what its field is called.
pub struct Found<'a> {
    /// `primaryApplicant.ssn`, `applicants[0].ssn`.
    pub path: String,
    /// The field's own name (`ssn`).
    pub name: &'a str,
}

fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

/// Walks a document a client sent: refuses card security codes and reserved keys anywhere, and
/// calls `seal` with each sensitive string value (validated and normalized) to get what to keep in
/// its place. Sensitive fields set to `null` stay `null`.
pub fn seal_document<E: From<VaultError>>(
    doc: &mut Map<String, Value>,
    fields: &SensitiveFields,
    seal: &mut dyn FnMut(&str, String) -> Result<Value, E>,
) -> Result<(), E> {
    seal_object(doc, "", fields, false, seal)
}

/// Like [`seal_document`], for a stored document merged with a client's patch: envelopes already
/// in it are kept as they are (the patch itself must have been checked with [`seal_document`]),
/// and sensitive values still in clear (kept before their field was listed) are sealed now.
pub fn reseal_document<E: From<VaultError>>(
    doc: &mut Map<String, Value>,
    fields: &SensitiveFields,
    seal: &mut dyn FnMut(&str, String) -> Result<Value, E>,
) -> Result<(), E> {
    seal_object(doc, "", fields, true, seal)
}

fn seal_object<E: From<VaultError>>(
    map: &mut Map<String, Value>,
    parent: &str,
    fields: &SensitiveFields,
    sealed_ok: bool,
    seal: &mut dyn FnMut(&str, String) -> Result<Value, E>,
) -> Result<(), E> {
    for (key, value) in map.iter_mut() {
        let path = join(parent, key);
        if sealed_ok && envelope(value).is_some() {
            continue;
        }
        if key.starts_with(RESERVED_KEY_PREFIX) {
            return Err(VaultError::ReservedKey(path).into());
        }
        if is_card_security_code(key) {
            return Err(VaultError::SecurityCode(path).into());
        }
        if fields.contains(key) {
            match value {
                Value::Null => {}
                Value::String(text) => {
                    let kind = SensitiveKind::for_field(key);
                    let kept = normalize(kind, &path, text)?;
                    *value = seal(&path, kept)?;
                }
                _ => return Err(VaultError::NotText(path).into()),
            }
            continue;
        }
        seal_value(value, &path, fields, sealed_ok, seal)?;
    }
    Ok(())
}

fn seal_value<E: From<VaultError>>(
    value: &mut Value,
    path: &str,
    fields: &SensitiveFields,
    sealed_ok: bool,
    seal: &mut dyn FnMut(&str, String) -> Result<Value, E>,
) -> Result<(), E> {
    if sealed_ok && envelope(value).is_some() {
        return Ok(());
    }
    match value {
        Value::Object(map) => seal_object(map, path, fields, sealed_ok, seal),
        Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                seal_value(item, &format!("{path}[{i}]"), fields, sealed_ok, seal)?;
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Whether a value is an encrypted envelope, and its payload.
pub fn envelope(value: &Value) -> Option<&str> {
    match value {
        Value::Object(map) if map.len() == 1 => map.get(ENVELOPE_KEY)?.as_str(),
        _ => None,
    }
}

/// Makes an envelope for an encrypted payload.
pub fn make_envelope(payload: String) -> Value {
    let mut map = Map::with_capacity(1);
    map.insert(ENVELOPE_KEY.to_owned(), Value::String(payload));
    Value::Object(map)
}

/// Walks a stored document and replaces every envelope with what `open` gives for it (a masked
/// or a revealed value). `open` gets the path, the field's name and the payload.
pub fn open_document<E>(
    doc: &mut Value,
    open: &mut dyn FnMut(Found<'_>, &str) -> Result<Value, E>,
) -> Result<(), E> {
    open_value(doc, "", "", open)
}

fn open_value<E>(
    value: &mut Value,
    path: &str,
    name: &str,
    open: &mut dyn FnMut(Found<'_>, &str) -> Result<Value, E>,
) -> Result<(), E> {
    if let Some(payload) = envelope(value) {
        let payload = payload.to_owned();
        *value = open(
            Found {
                path: path.to_owned(),
                name,
            },
            &payload,
        )?;
        return Ok(());
    }
    match value {
        Value::Object(map) => {
            for (key, item) in map.iter_mut() {
                open_value(item, &join(path, key), key, open)?;
            }
            Ok(())
        }
        Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                open_value(item, &format!("{path}[{i}]"), name, open)?;
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// What `?reveal=` asks for: field paths (`primaryApplicant.ssn`, `applicants[0].ssn`) or field
/// names (`ssn`, every field of that name).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RevealRequest {
    items: Vec<String>,
}

/// The most fields one request may reveal.
pub const MAX_REVEAL: usize = 32;

impl RevealRequest {
    /// Reads the `reveal` values of a query: comma-separated, possibly repeated.
    pub fn parse<'a>(values: impl IntoIterator<Item = &'a str>) -> Result<RevealRequest, String> {
        let mut items = Vec::new();
        for value in values {
            for item in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                let valid = item.len() <= 256
                    && item.chars().all(|c| {
                        c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '[' | ']')
                    });
                if !valid {
                    return Err(format!(
                        "`reveal` must list field paths such as `ssn` or `primaryApplicant.ssn`: `{}`",
                        item.chars().take(64).collect::<String>()
                    ));
                }
                if !items.iter().any(|i| i == item) {
                    items.push(item.to_owned());
                }
            }
        }
        if items.len() > MAX_REVEAL {
            return Err(format!("`reveal` may list at most {MAX_REVEAL} fields"));
        }
        Ok(RevealRequest { items })
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn items(&self) -> &[String] {
        &self.items
    }

    /// Whether a sensitive value at `path`, in a field called `name`, is asked for.
    pub fn wants(&self, path: &str, name: &str) -> bool {
        self.items.iter().any(|i| i == path || i == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ssns_are_checked_and_normalized() {
        assert_eq!(parse_ssn("ssn", "123-45-6789").unwrap(), "123-45-6789");
        assert_eq!(parse_ssn("ssn", "123456789").unwrap(), "123-45-6789");
        for bad in [
            "000-12-3456",
            "666-12-3456",
            "900-12-3456",
            "999-12-3456",
            "123-00-4567",
            "123-45-0000",
            "12345678",
            "1234567890",
            "123-456-789",
            "12-345-6789",
            "abc-de-fghi",
            "",
            "123 45 6789",
            "１２３-45-6789",
        ] {
            assert_eq!(
                parse_ssn("a.ssn", bad),
                Err(VaultError::Ssn("a.ssn".into())),
                "{bad}"
            );
        }
    }

    #[test]
    fn card_numbers_need_luhn_and_length() {
        assert_eq!(
            parse_card("c", "4242 4242 4242 4242").unwrap(),
            "4242424242424242"
        );
        assert_eq!(
            parse_card("c", "4242-4242-4242-4242").unwrap(),
            "4242424242424242"
        );
        assert_eq!(
            parse_card("c", "378282246310005").unwrap(),
            "378282246310005"
        );
        for bad in [
            "4242424242424241",
            "4242",
            "42424242424242424242",
            "4242x4242424242424242",
            "",
        ] {
            assert!(parse_card("c", bad).is_err(), "{bad}");
        }
        assert!(luhn("79927398713"));
        assert!(!luhn("79927398710"));
    }

    #[test]
    fn errors_name_the_path_never_the_value() {
        let err = parse_ssn("primaryApplicant.ssn", "666-12-3456")
            .unwrap_err()
            .to_string();
        assert!(err.contains("primaryApplicant.ssn"));
        assert!(!err.contains("666"));
        let err = parse_card("cardNumber", "4242424242424241")
            .unwrap_err()
            .to_string();
        assert!(!err.contains("4242"));
    }

    #[test]
    fn masking_keeps_the_last_four_and_the_length() {
        assert_eq!(mask(SensitiveKind::Ssn, "123-45-6789"), "***-**-6789");
        assert_eq!(
            mask(SensitiveKind::Card, "4242424242424242"),
            "************4242"
        );
        assert_eq!(
            mask(SensitiveKind::Card, "378282246310005"),
            "***********0005"
        );
        assert_eq!(mask(SensitiveKind::Other, "DL-123456789"), "********6789");
        assert_eq!(mask(SensitiveKind::Other, "12345"), "*****");
        assert_eq!(mask(SensitiveKind::Other, ""), "****");
        assert_eq!(mask(SensitiveKind::Ssn, "garbage"), "***-**-****");
    }

    #[test]
    fn kinds_come_from_field_names() {
        assert_eq!(SensitiveKind::for_field("ssn"), SensitiveKind::Ssn);
        assert_eq!(
            SensitiveKind::for_field("coApplicantSSN"),
            SensitiveKind::Ssn
        );
        assert_eq!(SensitiveKind::for_field("cardNumber"), SensitiveKind::Card);
        assert_eq!(SensitiveKind::for_field("card_number"), SensitiveKind::Card);
        assert_eq!(SensitiveKind::for_field("taxId"), SensitiveKind::Other);
    }

    #[test]
    fn security_codes_are_recognised_in_any_spelling() {
        for name in [
            "cvv",
            "CVV",
            "cvc",
            "cvv2",
            "cvc2",
            "securityCode",
            "card_security_code",
            "csc",
            "cardCvv",
        ] {
            assert!(is_card_security_code(name), "{name}");
        }
        for name in ["cardNumber", "ssn", "code", "security"] {
            assert!(!is_card_security_code(name), "{name}");
        }
    }

    #[test]
    fn field_lists_are_checked() {
        let fields = SensitiveFields::parse("ssn, taxId\nmotherMaidenName ssn").unwrap();
        assert_eq!(fields.names(), ["motherMaidenName", "ssn", "taxId"]);
        assert!(fields.contains("SSN"));
        assert!(fields.contains("tax_id"));
        assert!(!fields.contains("name"));
        assert!(matches!(
            SensitiveFields::parse("a b;c"),
            Err(VaultError::BadFieldName(_))
        ));
        assert!(matches!(
            SensitiveFields::parse("cvv"),
            Err(VaultError::SecurityCodeListed(_))
        ));
        let many: Vec<String> = (0..65).map(|i| format!("f{i}")).collect();
        assert_eq!(
            SensitiveFields::from_names(many),
            Err(VaultError::TooManyFields)
        );
        assert!(SensitiveFields::default().contains("bankAccountNumber"));
    }

    fn seal_all(doc: Value) -> Result<(Value, Vec<String>), VaultError> {
        let Value::Object(mut map) = doc else {
            panic!()
        };
        let mut paths = Vec::new();
        seal_document::<VaultError>(&mut map, &SensitiveFields::default(), &mut |path, value| {
            paths.push(path.to_owned());
            Ok(make_envelope(format!("sealed:{value}")))
        })?;
        paths.sort();
        Ok((Value::Object(map), paths))
    }

    #[test]
    fn sensitive_fields_are_found_at_any_depth_and_in_arrays() {
        let (doc, paths) = seal_all(json!({
            "name": "Ann",
            "ssn": "123456789",
            "primaryApplicant": {"ssn": "123-45-6789", "age": 40},
            "applicants": [{"ssn": "219-09-9999"}, {"name": "x"}],
            "payment": {"cards": [{"cardNumber": "4242 4242 4242 4242"}]},
            "taxId": null
        }))
        .unwrap();
        assert_eq!(
            paths,
            [
                "applicants[0].ssn",
                "payment.cards[0].cardNumber",
                "primaryApplicant.ssn",
                "ssn"
            ]
        );
        assert_eq!(doc["ssn"], json!({"$kfenc": "sealed:123-45-6789"}));
        assert_eq!(
            doc["payment"]["cards"][0]["cardNumber"],
            json!({"$kfenc": "sealed:4242424242424242"})
        );
        assert_eq!(doc["primaryApplicant"]["age"], 40);
        assert_eq!(doc["taxId"], Value::Null);
    }

    #[test]
    fn bad_documents_are_refused_by_path() {
        assert_eq!(
            seal_all(json!({"a": {"cvv": "123"}})).unwrap_err(),
            VaultError::SecurityCode("a.cvv".into())
        );
        assert_eq!(
            seal_all(json!({"cards": [{"securityCode": 1}]})).unwrap_err(),
            VaultError::SecurityCode("cards[0].securityCode".into())
        );
        assert_eq!(
            seal_all(json!({"x": {"ssn": 123456789}})).unwrap_err(),
            VaultError::NotText("x.ssn".into())
        );
        assert_eq!(
            seal_all(json!({"x": [{"$kfenc": "forged"}]})).unwrap_err(),
            VaultError::ReservedKey("x[0].$kfenc".into())
        );
        assert_eq!(
            seal_all(json!({"p": {"ssn": "666-00-0000"}})).unwrap_err(),
            VaultError::Ssn("p.ssn".into())
        );
        assert!(matches!(
            seal_all(json!({"taxId": "x".repeat(300)})).unwrap_err(),
            VaultError::TooLong(_)
        ));
    }

    #[test]
    fn resealing_keeps_envelopes_and_seals_values_still_in_clear() {
        let Value::Object(mut map) = json!({
            "ssn": {"$kfenc": "old"},
            "taxId": "12-3456789",
            "nested": [{"cardNumber": {"$kfenc": "old2"}}]
        }) else {
            panic!()
        };
        let mut paths = Vec::new();
        reseal_document::<VaultError>(&mut map, &SensitiveFields::default(), &mut |path, v| {
            paths.push(path.to_owned());
            Ok(make_envelope(format!("new:{v}")))
        })
        .unwrap();
        assert_eq!(paths, ["taxId"]);
        assert_eq!(map["ssn"], json!({"$kfenc": "old"}));
        assert_eq!(map["taxId"], json!({"$kfenc": "new:12-3456789"}));
    }

    #[test]
    fn opening_visits_every_envelope_with_its_path_and_name() {
        let mut doc = json!({
            "ssn": {"$kfenc": "a"},
            "applicants": [{"cardNumber": {"$kfenc": "b"}}],
            "other": {"$kfenc": "c", "extra": 1}
        });
        let mut seen = Vec::new();
        open_document::<()>(&mut doc, &mut |found, payload| {
            seen.push((
                found.path.clone(),
                found.name.to_owned(),
                payload.to_owned(),
            ));
            Ok(json!("masked"))
        })
        .unwrap();
        seen.sort();
        assert_eq!(
            seen,
            [
                (
                    "applicants[0].cardNumber".to_owned(),
                    "cardNumber".to_owned(),
                    "b".to_owned()
                ),
                ("ssn".to_owned(), "ssn".to_owned(), "a".to_owned()),
            ]
        );
        assert_eq!(doc["ssn"], "masked");
        assert_eq!(doc["other"]["extra"], 1);
    }

    #[test]
    fn associated_data_differs_for_every_place() {
        let a = associated_data("acct", "rec", "ssn");
        assert_ne!(a, associated_data("acct", "rec2", "ssn"));
        assert_ne!(a, associated_data("acct", "rec", "primaryApplicant.ssn"));
        assert_ne!(a, associated_data("acct2", "rec", "ssn"));
        // Lengths are part of it: moving a boundary changes the bytes.
        assert_ne!(
            associated_data("ab", "c", "d"),
            associated_data("a", "bc", "d")
        );
    }

    #[test]
    fn reveal_requests_are_parsed_and_matched() {
        let r = RevealRequest::parse(["ssn,primaryApplicant.ssn", "cardNumber", "ssn"]).unwrap();
        assert_eq!(r.items(), ["ssn", "primaryApplicant.ssn", "cardNumber"]);
        assert!(r.wants("applicants[0].ssn", "ssn"));
        assert!(r.wants("primaryApplicant.ssn", "ssn"));
        assert!(!r.wants("taxId", "taxId"));
        assert!(RevealRequest::parse(["ssn;drop"]).is_err());
        assert!(RevealRequest::parse([""]).unwrap().is_empty());
        let many = (0..40)
            .map(|i| format!("f{i}"))
            .collect::<Vec<_>>()
            .join(",");
        assert!(RevealRequest::parse([many.as_str()]).is_err());
    }
}
