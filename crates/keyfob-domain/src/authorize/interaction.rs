//! What an authorization request says about the pages the user sees (OpenID Connect Core 1.0
//! §3.1.2.1): `prompt`, `max_age` and `login_hint`, and the rules that decide from them, the
//! browser's login and the user's grant whether `GET /auth` shows the login page, the consent
//! page, or neither, and which error (§3.1.2.6) answers a request that may show none
//! (`prompt=none`).
//!
//! The request travels through the pages in the browser's hands, so none of this is proof of
//! anything to the application: what it can rely on is the time of the login that a session was
//! issued under, which Keyfob records (the login's creation) and which an ID token carries as
//! `auth_time`.

use std::time::Duration;

use super::AuthError;
use super::ResponseType;
use crate::email::Email;
use crate::time::Timestamp;

/// The largest `max_age` taken, in seconds (2³¹ − 1, about 68 years): what a signed 32-bit number
/// holds, so every client can send it. A larger value is refused rather than rounded.
pub const MAX_AGE_LIMIT: u64 = i32::MAX as u64;

/// The `prompt` values of a request (space-separated, any order, repeats allowed).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Prompt {
    /// `none`: show no page at all; answer with an error where one would be needed.
    pub none: bool,
    /// `login`: ask for the password again, even with a live login.
    pub login: bool,
    /// `consent`: show the consent page, even when a grant covers the request.
    pub consent: bool,
    /// `select_account`: let the user choose the account. A browser holds one login at a time, so
    /// the account is chosen by logging in: the login page is shown, as for `login`.
    pub select_account: bool,
}

impl Prompt {
    /// Reads `prompt`. Absent or empty is no prompt. `none` with anything else, and any value
    /// besides the four of OpenID Connect Core, are `invalid_request`: a value Keyfob does not
    /// know may ask for an interaction it would otherwise skip, so it is not ignored.
    pub fn parse(raw: Option<&str>) -> Result<Prompt, AuthError> {
        let mut prompt = Prompt::default();
        for value in raw.unwrap_or_default().split(' ').filter(|v| !v.is_empty()) {
            match value {
                "none" => prompt.none = true,
                "login" => prompt.login = true,
                "consent" => prompt.consent = true,
                "select_account" => prompt.select_account = true,
                other => {
                    let shown: String = other.chars().take(40).collect();
                    return Err(AuthError::new(
                        "invalid_request",
                        format!(
                            "prompt `{shown}` is not supported: use `none`, `login`, `consent` \
                             or `select_account`"
                        ),
                    ));
                }
            }
        }
        if prompt.none && (prompt.login || prompt.consent || prompt.select_account) {
            return Err(AuthError::new(
                "invalid_request",
                "prompt=none cannot be combined with another prompt value",
            ));
        }
        Ok(prompt)
    }

    /// The values as a `prompt` parameter, in a fixed order; `None` when there are none.
    pub fn to_param(self) -> Option<String> {
        let values: Vec<&str> = [
            (self.none, "none"),
            (self.login, "login"),
            (self.consent, "consent"),
            (self.select_account, "select_account"),
        ]
        .into_iter()
        .filter_map(|(set, name)| set.then_some(name))
        .collect();
        (!values.is_empty()).then(|| values.join(" "))
    }
}

/// Reads `max_age`: a whole number of seconds, 0 to [`MAX_AGE_LIMIT`], digits only. Absent or
/// empty is no limit.
pub fn parse_max_age(raw: Option<&str>) -> Result<Option<Duration>, AuthError> {
    let raw = match raw {
        None | Some("") => return Ok(None),
        Some(raw) => raw,
    };
    let secs = if raw.bytes().all(|b| b.is_ascii_digit()) && raw.len() <= 20 {
        raw.parse::<u64>().ok().filter(|s| *s <= MAX_AGE_LIMIT)
    } else {
        None
    };
    match secs {
        Some(secs) => Ok(Some(Duration::from_secs(secs))),
        None => Err(AuthError::new(
            "invalid_request",
            format!("max_age must be a whole number of seconds from 0 to {MAX_AGE_LIMIT}"),
        )),
    }
}

/// Reads `login_hint`. Keyfob's users log in by email, so a hint that is not an email address is
/// of no use and is dropped; one that is, is kept normalised (as emails are stored). It only ever
/// fills in the login form and compares with the logged-in user's email: it grants nothing.
pub fn parse_login_hint(raw: Option<&str>) -> Option<Email> {
    raw.and_then(|hint| Email::parse(hint).ok())
}

/// The parts of a request that decide which pages the user sees.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Interaction {
    pub prompt: Prompt,
    /// The oldest login the application accepts.
    pub max_age: Option<Duration>,
    /// The email the application expects the user to log in with.
    pub login_hint: Option<Email>,
}

/// What is known of the browser's login.
#[derive(Debug, Clone, Copy)]
pub struct LoginFacts<'a> {
    /// When the user last typed their password (logged in or signed up) in this browser.
    pub authenticated_at: Timestamp,
    /// The logged-in user's email.
    pub email: &'a str,
}

/// Why the login page must be shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginNeed {
    /// The browser has no live login.
    NotLoggedIn,
    /// The request asks for a login (`prompt=login` or `select_account`).
    Asked,
    /// The login is older than `max_age`.
    TooOld,
    /// `login_hint` names another user than the one logged in.
    OtherUser,
}

impl LoginNeed {
    /// The answer to a request that may show no page (`prompt=none`).
    pub fn error(self) -> AuthError {
        let description = match self {
            LoginNeed::NotLoggedIn => "the user is not logged in",
            LoginNeed::Asked => "a login was asked for, but prompt=none shows no page",
            LoginNeed::TooOld => "the user's login is older than max_age",
            LoginNeed::OtherUser => "the user logged in is not the one login_hint names",
        };
        AuthError::new("login_required", description)
    }
}

/// Why the consent page must be shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsentNeed {
    /// No live grant covers everything asked for.
    NotGranted,
    /// The request asks for the page (`prompt=consent`).
    Asked,
    /// Tokens in the URL fragment (`response_type=token`) are never handed out without the user
    /// confirming, grant or not.
    Fragment,
}

impl ConsentNeed {
    /// The answer to a request that may show no page (`prompt=none`): `consent_required` when the
    /// user has not granted (all of) it, `interaction_required` when they have but the page is
    /// still needed.
    pub fn error(self) -> AuthError {
        match self {
            ConsentNeed::NotGranted => AuthError::new(
                "consent_required",
                "the user has not granted the application everything it asks for",
            ),
            ConsentNeed::Asked => AuthError::new(
                "consent_required",
                "consent was asked for, but prompt=none shows no page",
            ),
            ConsentNeed::Fragment => AuthError::new(
                "interaction_required",
                "tokens in the URL fragment (response_type=token) are handed out only after the \
                 user confirms, so prompt=none cannot be answered",
            ),
        }
    }
}

impl Interaction {
    /// Reads `prompt`, `max_age` and `login_hint`, in that order.
    pub fn parse(
        prompt: Option<&str>,
        max_age: Option<&str>,
        login_hint: Option<&str>,
    ) -> Result<Interaction, AuthError> {
        Ok(Interaction {
            prompt: Prompt::parse(prompt)?,
            max_age: parse_max_age(max_age)?,
            login_hint: parse_login_hint(login_hint),
        })
    }

    /// Whether the login page must be shown, given the browser's login (if any) at `now`.
    ///
    /// A hint only matters when someone is logged in: it names the user the application expects,
    /// so a login of anyone else is not used silently; the login page is shown, filled in with
    /// the hint, and whoever logs in there is the user (the application learns who from the
    /// session, and may check).
    pub fn login_need(&self, login: Option<LoginFacts<'_>>, now: Timestamp) -> Option<LoginNeed> {
        let Some(login) = login else {
            return Some(LoginNeed::NotLoggedIn);
        };
        if self.prompt.login || self.prompt.select_account {
            return Some(LoginNeed::Asked);
        }
        if let Some(max_age) = self.max_age {
            // Whole seconds, as `auth_time` is, so the application's own check agrees.
            let age = now
                .unix_secs()
                .saturating_sub(login.authenticated_at.unix_secs());
            if u64::try_from(age).unwrap_or(0) > max_age.as_secs() {
                return Some(LoginNeed::TooOld);
            }
        }
        if let Some(hint) = &self.login_hint
            && !Email::parse(login.email).is_ok_and(|email| email == *hint)
        {
            return Some(LoginNeed::OtherUser);
        }
        None
    }

    /// Whether the consent page must be shown, for a logged-in user whose live grant does or does
    /// not (`covered`) hold everything the request asks for.
    pub fn consent_need(&self, response_type: ResponseType, covered: bool) -> Option<ConsentNeed> {
        if response_type == ResponseType::Token {
            return Some(if covered {
                ConsentNeed::Fragment
            } else {
                ConsentNeed::NotGranted
            });
        }
        if !covered {
            return Some(ConsentNeed::NotGranted);
        }
        self.prompt.consent.then_some(ConsentNeed::Asked)
    }

    /// The login step of `GET /auth`: `Ok(None)` to go on, `Ok(Some(need))` to show the login
    /// page, or, when the request allows no page (`prompt=none`), the error to send back
    /// (`login_required`).
    pub fn login_step(
        &self,
        login: Option<LoginFacts<'_>>,
        now: Timestamp,
    ) -> Result<Option<LoginNeed>, AuthError> {
        match self.login_need(login, now) {
            Some(need) if self.prompt.none => Err(need.error()),
            need => Ok(need),
        }
    }

    /// The consent step, once logged in: `Ok(None)` to answer the application at once,
    /// `Ok(Some(need))` to show the consent page, or, with `prompt=none`, the error to send back
    /// (`consent_required` or `interaction_required`).
    pub fn consent_step(
        &self,
        response_type: ResponseType,
        covered: bool,
    ) -> Result<Option<ConsentNeed>, AuthError> {
        match self.consent_need(response_type, covered) {
            Some(need) if self.prompt.none => Err(need.error()),
            need => Ok(need),
        }
    }
}

/// The `prompt` a request carries on after the user has logged in (or signed up) for it: `login`
/// and `select_account` are done with, so they are taken out (else the login page would come back
/// for ever); `None` when nothing is left. Other values, known or not, stay as they are.
pub fn prompt_after_login(prompt: Option<&str>) -> Option<String> {
    let rest: Vec<&str> = prompt?
        .split(' ')
        .filter(|v| !v.is_empty() && *v != "login" && *v != "select_account")
        .collect();
    (!rest.is_empty()).then(|| rest.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMAIL: &str = "ada@example.com";

    fn prompt(raw: &str) -> Prompt {
        Prompt::parse(Some(raw)).unwrap()
    }

    fn refused_prompt(raw: &str) -> String {
        let error = Prompt::parse(Some(raw)).expect_err(raw);
        assert_eq!(error.code, "invalid_request", "{raw}");
        error.description
    }

    fn interaction(prompt: Option<&str>, max_age: Option<&str>, hint: Option<&str>) -> Interaction {
        Interaction::parse(prompt, max_age, hint).unwrap()
    }

    /// A login made `age` seconds before `now`.
    fn login_of(now: Timestamp, age: u64) -> LoginFacts<'static> {
        LoginFacts {
            authenticated_at: now - Duration::from_secs(age),
            email: EMAIL,
        }
    }

    #[test]
    fn prompt_takes_the_four_values_in_any_combination_but_none_alone() {
        assert_eq!(Prompt::parse(None).unwrap(), Prompt::default());
        assert_eq!(prompt(""), Prompt::default());
        assert_eq!(prompt("  "), Prompt::default());
        assert!(prompt("none").none);
        let all = prompt("consent login  select_account login");
        assert!(all.login && all.consent && all.select_account && !all.none);
        assert_eq!(prompt("none none"), prompt("none"));
        assert_eq!(
            all.to_param().as_deref(),
            Some("login consent select_account")
        );
        assert_eq!(prompt("none").to_param().as_deref(), Some("none"));
        assert_eq!(Prompt::default().to_param(), None);

        let combined = "prompt=none cannot be combined with another prompt value";
        for raw in ["none login", "consent none", "none select_account"] {
            assert_eq!(refused_prompt(raw), combined);
        }
        assert_eq!(
            refused_prompt("login create"),
            "prompt `create` is not supported: use `none`, `login`, `consent` or `select_account`"
        );
        // Values are case-sensitive and separated by spaces only.
        for raw in ["Login", "login,consent", "login\tconsent"] {
            assert!(refused_prompt(raw).starts_with("prompt `"), "{raw}");
        }
        // What is echoed back is cut to 40 characters.
        let long = "x".repeat(100);
        assert!(refused_prompt(&long).contains(&format!("`{}`", "x".repeat(40))));
    }

    #[test]
    fn max_age_is_a_whole_number_of_seconds_within_bounds() {
        assert_eq!(parse_max_age(None).unwrap(), None);
        assert_eq!(parse_max_age(Some("")).unwrap(), None);
        assert_eq!(parse_max_age(Some("0")).unwrap(), Some(Duration::ZERO));
        assert_eq!(
            parse_max_age(Some("3600")).unwrap(),
            Some(Duration::from_secs(3600))
        );
        assert_eq!(
            parse_max_age(Some("007")).unwrap(),
            Some(Duration::from_secs(7))
        );
        assert_eq!(
            parse_max_age(Some("2147483647")).unwrap(),
            Some(Duration::from_secs(MAX_AGE_LIMIT))
        );
        for bad in [
            "abc",
            "-1",
            "+5",
            " 5",
            "5 ",
            "1.5",
            "1e3",
            "0x10",
            "2147483648",
            "18446744073709551616",
            "99999999999999999999999999999999",
        ] {
            let error = parse_max_age(Some(bad)).expect_err(bad);
            assert_eq!(error.code, "invalid_request");
            assert_eq!(
                error.description,
                "max_age must be a whole number of seconds from 0 to 2147483647"
            );
        }
    }

    #[test]
    fn a_login_hint_is_kept_only_when_it_is_an_email() {
        assert_eq!(
            parse_login_hint(Some(" Ada@Example.com "))
                .unwrap()
                .as_str(),
            EMAIL
        );
        for useless in ["", "ada", "+1 555 0100", "<script>@x"] {
            assert_eq!(parse_login_hint(Some(useless)), None, "{useless}");
        }
        assert_eq!(parse_login_hint(None), None);
        // Never an error: the rest of the request is read as usual.
        assert!(Interaction::parse(None, None, Some("not an email")).is_ok());
    }

    #[test]
    fn parse_checks_prompt_before_max_age() {
        let error = Interaction::parse(Some("bogus"), Some("abc"), None).unwrap_err();
        assert!(error.description.starts_with("prompt"));
        let error = Interaction::parse(Some("login"), Some("abc"), None).unwrap_err();
        assert!(error.description.starts_with("max_age"));
    }

    #[test]
    fn the_login_page_is_shown_without_a_login_or_when_the_request_asks_for_one() {
        let now = Timestamp::from_unix_secs(1_000_000);
        let plain = Interaction::default();
        assert_eq!(plain.login_need(None, now), Some(LoginNeed::NotLoggedIn));
        assert_eq!(plain.login_need(Some(login_of(now, 86_400)), now), None);
        for raw in ["login", "select_account", "consent login"] {
            let asked = interaction(Some(raw), None, None);
            assert_eq!(
                asked.login_need(Some(login_of(now, 0)), now),
                Some(LoginNeed::Asked),
                "{raw}"
            );
        }
        assert_eq!(
            interaction(Some("consent"), None, None).login_need(Some(login_of(now, 0)), now),
            None
        );
    }

    #[test]
    fn max_age_counts_whole_seconds_like_auth_time() {
        let now = Timestamp::from_unix_ms(1_000_000_900);
        let within = interaction(None, Some("60"), None);
        assert_eq!(within.login_need(Some(login_of(now, 60)), now), None);
        assert_eq!(
            within.login_need(Some(login_of(now, 61)), now),
            Some(LoginNeed::TooOld)
        );
        // max_age=0 takes a login made within the same second only.
        let zero = interaction(None, Some("0"), None);
        let same_second = LoginFacts {
            authenticated_at: Timestamp::from_unix_ms(1_000_000_100),
            email: EMAIL,
        };
        assert_eq!(zero.login_need(Some(same_second), now), None);
        let second_before = LoginFacts {
            authenticated_at: Timestamp::from_unix_ms(999_999_950),
            email: EMAIL,
        };
        assert_eq!(
            zero.login_need(Some(second_before), now),
            Some(LoginNeed::TooOld)
        );
        // A login from the future (clocks of two nodes) is not too old.
        assert_eq!(
            zero.login_need(
                Some(LoginFacts {
                    authenticated_at: now + Duration::from_secs(5),
                    email: EMAIL
                }),
                now
            ),
            None
        );
        // The largest max_age does not overflow.
        let huge = interaction(None, Some("2147483647"), None);
        assert_eq!(huge.login_need(Some(login_of(now, 999_999)), now), None);
    }

    #[test]
    fn a_hint_naming_someone_else_asks_for_a_login() {
        let now = Timestamp::from_unix_secs(1_000_000);
        let same = interaction(None, None, Some("ADA@example.com"));
        assert_eq!(same.login_need(Some(login_of(now, 5)), now), None);
        let other = interaction(None, None, Some("bob@example.com"));
        assert_eq!(
            other.login_need(Some(login_of(now, 5)), now),
            Some(LoginNeed::OtherUser)
        );
        assert_eq!(other.login_need(None, now), Some(LoginNeed::NotLoggedIn));
        // A hint that is no email is dropped, so it names no one.
        let dropped = interaction(None, None, Some("bob"));
        assert_eq!(dropped.login_need(Some(login_of(now, 5)), now), None);
    }

    #[test]
    fn the_consent_page_is_skipped_only_for_a_covered_code_request() {
        let plain = Interaction::default();
        assert_eq!(plain.consent_need(ResponseType::Code, true), None);
        assert_eq!(
            plain.consent_need(ResponseType::Code, false),
            Some(ConsentNeed::NotGranted)
        );
        assert_eq!(
            plain.consent_need(ResponseType::Token, true),
            Some(ConsentNeed::Fragment)
        );
        assert_eq!(
            plain.consent_need(ResponseType::Token, false),
            Some(ConsentNeed::NotGranted)
        );
        let asked = interaction(Some("consent"), None, None);
        assert_eq!(
            asked.consent_need(ResponseType::Code, true),
            Some(ConsentNeed::Asked)
        );
        assert_eq!(
            asked.consent_need(ResponseType::Code, false),
            Some(ConsentNeed::NotGranted)
        );
    }

    #[test]
    fn prompt_none_turns_every_page_into_an_error() {
        let now = Timestamp::from_unix_secs(1_000_000);
        let none = interaction(Some("none"), None, None);
        fn code<T: std::fmt::Debug>(step: Result<T, AuthError>) -> &'static str {
            step.unwrap_err().code
        }

        assert_eq!(code(none.login_step(None, now)), "login_required");
        let error = none.login_step(None, now).unwrap_err();
        assert_eq!(error.description, "the user is not logged in");
        let old = interaction(Some("none"), Some("10"), None);
        let error = old.login_step(Some(login_of(now, 11)), now).unwrap_err();
        assert_eq!(error.code, "login_required");
        assert_eq!(error.description, "the user's login is older than max_age");
        assert_eq!(old.login_step(Some(login_of(now, 10)), now), Ok(None));
        let other = interaction(Some("none"), None, Some("bob@example.com"));
        assert_eq!(
            code(other.login_step(Some(login_of(now, 1)), now)),
            "login_required"
        );
        assert_eq!(none.login_step(Some(login_of(now, 1)), now), Ok(None));

        assert_eq!(
            code(none.consent_step(ResponseType::Code, false)),
            "consent_required"
        );
        assert_eq!(
            code(none.consent_step(ResponseType::Token, false)),
            "consent_required"
        );
        assert_eq!(
            code(none.consent_step(ResponseType::Token, true)),
            "interaction_required"
        );
        assert_eq!(none.consent_step(ResponseType::Code, true), Ok(None));
    }

    #[test]
    fn without_prompt_none_the_pages_are_shown() {
        let now = Timestamp::from_unix_secs(1_000_000);
        let plain = Interaction::default();
        assert_eq!(
            plain.login_step(None, now),
            Ok(Some(LoginNeed::NotLoggedIn))
        );
        assert_eq!(plain.login_step(Some(login_of(now, 1)), now), Ok(None));
        let login = interaction(Some("login"), None, None);
        assert_eq!(
            login.login_step(Some(login_of(now, 1)), now),
            Ok(Some(LoginNeed::Asked))
        );
        assert_eq!(
            plain.consent_step(ResponseType::Code, false),
            Ok(Some(ConsentNeed::NotGranted))
        );
        assert_eq!(
            plain.consent_step(ResponseType::Token, true),
            Ok(Some(ConsentNeed::Fragment))
        );
        assert_eq!(plain.consent_step(ResponseType::Code, true), Ok(None));
        let consent = interaction(Some("consent"), None, None);
        assert_eq!(
            consent.consent_step(ResponseType::Code, true),
            Ok(Some(ConsentNeed::Asked))
        );
    }

    #[test]
    fn after_a_login_the_request_no_longer_asks_for_one() {
        assert_eq!(prompt_after_login(None), None);
        assert_eq!(prompt_after_login(Some("login")), None);
        assert_eq!(prompt_after_login(Some("login select_account")), None);
        assert_eq!(
            prompt_after_login(Some("login consent")).as_deref(),
            Some("consent")
        );
        assert_eq!(
            prompt_after_login(Some(" consent  login ")).as_deref(),
            Some("consent")
        );
        // Anything else is left for the request check to judge.
        assert_eq!(
            prompt_after_login(Some("none bogus")).as_deref(),
            Some("none bogus")
        );
    }
}
