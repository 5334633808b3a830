//! The pages' own template filters. A template brings them into scope with `use
//! crate::web::filters;` in the module that derives it.

use std::fmt::Display;

/// A message with its `code` in backticks shown as code: the text HTML-escaped, each pair of
/// backticks made a `<code>` element. A lone backtick stays as it is. The answer is HTML, safe to
/// write with `|safe`: nothing in the message can add markup of its own.
pub fn code<T: Display>(text: T, _: &dyn askama::Values) -> askama::Result<String> {
    Ok(code_html(&text.to_string()))
}

/// See [`code`].
pub fn code_html(text: &str) -> String {
    let parts: Vec<&str> = text.split('`').collect();
    let mut out = String::with_capacity(text.len() + 16);
    for (i, part) in parts.iter().enumerate() {
        if i % 2 == 0 {
            escape_into(&mut out, part);
        } else if i + 1 < parts.len() {
            out.push_str("<code>");
            escape_into(&mut out, part);
            out.push_str("</code>");
        } else {
            out.push_str("&#96;");
            escape_into(&mut out, part);
        }
    }
    out
}

fn escape_into(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&#34;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
}

/// The attributes that tie a form field to its hint and to the form's error: `aria-describedby`
/// the hint `hint` (may be empty) and, when the error is about this field (`invalid` is its
/// name), the error `error_id` too, with `aria-invalid` and `autofocus` (so that the browser puts
/// the cursor in the field to correct, without script). `name`, `error_id` and `hint` are the
/// template's own constant text, never input; the answer is written with `|safe`.
pub fn field<T: Display>(
    invalid: T,
    _: &dyn askama::Values,
    name: &str,
    error_id: &str,
    hint: &str,
) -> askama::Result<String> {
    let is_invalid = invalid.to_string() == name;
    let described: Vec<&str> = [hint, if is_invalid { error_id } else { "" }]
        .into_iter()
        .filter(|id| !id.is_empty())
        .collect();
    let mut out = String::new();
    if !described.is_empty() {
        out.push_str(&format!(" aria-describedby=\"{}\"", described.join(" ")));
    }
    if is_invalid {
        out.push_str(" aria-invalid=\"true\" autofocus");
    }
    Ok(out)
}

/// The first of `fields` a message names in backticks (“`since` is not a date”), so that a page
/// can mark that field invalid and move the focus to it; empty when it names none of them.
pub fn field_named<'a>(message: &str, fields: &[&'a str]) -> &'a str {
    message
        .split('`')
        .skip(1)
        .step_by(2)
        .find_map(|name| fields.iter().find(|f| **f == name).copied())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backticks_become_code_and_nothing_else_is_markup() {
        assert_eq!(code_html("Set `name` first"), "Set <code>name</code> first");
        assert_eq!(
            code_html("`<script>alert(1)</script>` & \"q\""),
            "<code>&lt;script&gt;alert(1)&lt;/script&gt;</code> &amp; &#34;q&#34;"
        );
        assert_eq!(code_html("a `b` c `d"), "a <code>b</code> c &#96;d");
        assert_eq!(code_html("plain"), "plain");
        assert_eq!(code_html("``"), "<code></code>");
    }

    #[test]
    fn a_field_is_tied_to_its_hint_and_to_the_error_about_it() {
        let values = askama::NO_VALUES;
        assert_eq!(
            field("", values, "name", "form-error", "name-hint").unwrap(),
            " aria-describedby=\"name-hint\""
        );
        assert_eq!(
            field("name", values, "name", "form-error", "name-hint").unwrap(),
            " aria-describedby=\"name-hint form-error\" aria-invalid=\"true\" autofocus"
        );
        assert_eq!(field("other", values, "name", "e", "").unwrap(), "");
        assert_eq!(
            field("name", values, "name", "e", "").unwrap(),
            " aria-describedby=\"e\" aria-invalid=\"true\" autofocus"
        );
    }

    #[test]
    fn the_field_a_message_names() {
        let fields = ["since", "until"];
        assert_eq!(field_named("`until` is not a time", &fields), "until");
        assert_eq!(field_named("`page` must be 1 or more", &fields), "");
        assert_eq!(field_named("no field", &fields), "");
    }
}
