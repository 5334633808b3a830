//! How a resource listing is asked for: `limit`, `page`, `sort` and `where[field][equals]=value`,
//! read from the query string's pairs. Field names are checked here so storage can put them into a
//! JSON path without fear.

use crate::permission::is_valid_resource_name;

pub const DEFAULT_LIMIT: u32 = 10;
pub const MAX_LIMIT: u32 = 100;
pub const MAX_PAGE: u32 = 1_000_000;
const MAX_FIELD_DEPTH: usize = 8;
const MAX_FILTERS: usize = 16;
const MAX_SEGMENT_LEN: usize = 64;

/// A field of a record: one of the columns every record has, or a path into its document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Field {
    Id,
    CreatedAt,
    UpdatedAt,
    /// Dotted path into the JSON document, each segment `[A-Za-z_][A-Za-z0-9_-]*`.
    Doc(Vec<String>),
}

impl Field {
    pub fn parse(name: &str) -> Option<Field> {
        match name {
            "id" => return Some(Field::Id),
            "createdAt" => return Some(Field::CreatedAt),
            "updatedAt" => return Some(Field::UpdatedAt),
            _ => {}
        }
        let segments: Vec<String> = name.split('.').map(str::to_owned).collect();
        if segments.is_empty() || segments.len() > MAX_FIELD_DEPTH {
            return None;
        }
        let valid = segments.iter().all(|s| {
            s.len() <= MAX_SEGMENT_LEN
                && s.chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        });
        valid.then_some(Field::Doc(segments))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sort {
    pub field: Field,
    pub descending: bool,
}

/// A parsed listing request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListQuery {
    pub limit: u32,
    pub page: u32,
    pub sort: Option<Sort>,
    /// Equality filters, all of which must hold; values compared as text.
    pub filters: Vec<(Field, String)>,
}

impl ListQuery {
    pub fn offset(&self) -> u64 {
        u64::from(self.page - 1) * u64::from(self.limit)
    }
}

/// Why a listing request was refused; each names the parameter.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    #[error("`limit` must be a whole number from 1 to {MAX_LIMIT}")]
    Limit,
    #[error("`page` must be a whole number from 1 to {MAX_PAGE}")]
    Page,
    #[error("`sort` must be a field name, optionally preceded by `-` for descending: `{0}`")]
    Sort(String),
    #[error("`{0}` is not a supported filter: use where[field][equals]=value")]
    Filter(String),
    #[error("at most {MAX_FILTERS} `where` filters are allowed")]
    TooManyFilters,
    #[error("`{0}` is not a known query parameter")]
    Unknown(String),
    #[error("`{0}` is given more than once")]
    Repeated(&'static str),
}

impl ListQuery {
    /// Reads the query string's pairs.
    pub fn from_pairs(pairs: &[(String, String)]) -> Result<ListQuery, QueryError> {
        let mut limit = None;
        let mut page = None;
        let mut sort = None;
        let mut filters = Vec::new();
        for (key, value) in pairs {
            match key.as_str() {
                "limit" => {
                    let n = parse_limit(value, MAX_LIMIT).ok_or(QueryError::Limit)?;
                    set_once(&mut limit, n, "limit")?;
                }
                "page" => {
                    let n = parse_page(value).ok_or(QueryError::Page)?;
                    set_once(&mut page, n, "page")?;
                }
                "sort" => {
                    let (descending, name) = match value.strip_prefix('-') {
                        Some(rest) => (true, rest),
                        None => (false, value.as_str()),
                    };
                    let field =
                        Field::parse(name).ok_or_else(|| QueryError::Sort(truncate(value)))?;
                    set_once(&mut sort, Sort { field, descending }, "sort")?;
                }
                k if k.starts_with("where[") => {
                    let inner = k
                        .strip_prefix("where[")
                        .and_then(|r| r.strip_suffix("][equals]"))
                        .ok_or_else(|| QueryError::Filter(truncate(k)))?;
                    let field =
                        Field::parse(inner).ok_or_else(|| QueryError::Filter(truncate(k)))?;
                    if filters.len() == MAX_FILTERS {
                        return Err(QueryError::TooManyFilters);
                    }
                    filters.push((field, value.clone()));
                }
                "reveal" | "depth" => {}
                other => return Err(QueryError::Unknown(truncate(other))),
            }
        }
        Ok(ListQuery {
            limit: limit.unwrap_or(DEFAULT_LIMIT),
            page: page.unwrap_or(1),
            sort,
            filters,
        })
    }
}

/// A `page` parameter: a whole number from 1 to [`MAX_PAGE`], written in plain digits. An empty
/// value is not "the first page": a client that sends `page=` has lost its page number, and
/// answering page 1 would hide that.
pub fn parse_page(value: &str) -> Option<u32> {
    parse_count(value).filter(|n| (1..=MAX_PAGE).contains(n))
}

/// A `limit` parameter: a whole number from 1 to `max`, in plain digits; empty is refused as
/// [`parse_page`] explains.
pub fn parse_limit(value: &str, max: u32) -> Option<u32> {
    parse_count(value).filter(|n| (1..=max).contains(n))
}

/// Plain ASCII digits only: no sign, no spaces, nothing empty.
fn parse_count(value: &str) -> Option<u32> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse().ok()
}

fn set_once<T>(slot: &mut Option<T>, value: T, name: &'static str) -> Result<(), QueryError> {
    if slot.replace(value).is_some() {
        return Err(QueryError::Repeated(name));
    }
    Ok(())
}

fn truncate(s: &str) -> String {
    s.chars().take(80).collect()
}

/// Checks a resource name from a URL path, as permissions do.
pub fn valid_resource(name: &str) -> bool {
    is_valid_resource_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> Result<ListQuery, QueryError> {
        let owned: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        ListQuery::from_pairs(&owned)
    }

    #[test]
    fn defaults() {
        let query = q(&[]).unwrap();
        assert_eq!((query.limit, query.page, query.offset()), (10, 1, 0));
        assert!(query.sort.is_none() && query.filters.is_empty());
    }

    #[test]
    fn full_query() {
        let query = q(&[
            ("limit", "5"),
            ("page", "3"),
            ("sort", "-make.name"),
            ("where[status][equals]", "open"),
        ])
        .unwrap();
        assert_eq!(query.offset(), 10);
        assert_eq!(
            query.sort,
            Some(Sort {
                field: Field::Doc(vec!["make".into(), "name".into()]),
                descending: true
            })
        );
        assert_eq!(
            query.filters,
            vec![(Field::Doc(vec!["status".into()]), "open".into())]
        );
        assert_eq!(
            q(&[("sort", "createdAt")]).unwrap().sort.unwrap().field,
            Field::CreatedAt
        );
    }

    #[test]
    fn empty_page_and_limit_are_refused_by_name() {
        assert_eq!(q(&[("page", "")]), Err(QueryError::Page));
        assert_eq!(q(&[("limit", "")]), Err(QueryError::Limit));
        assert_eq!(q(&[("page", " ")]), Err(QueryError::Page));
        assert!(QueryError::Page.to_string().contains("`page`"));
        assert!(QueryError::Limit.to_string().contains("`limit`"));
        assert_eq!(parse_page("7"), Some(7));
        assert_eq!(parse_limit("100", MAX_LIMIT), Some(100));
        assert_eq!(parse_limit("101", MAX_LIMIT), None);
    }

    #[test]
    fn bad_parameters_are_named() {
        assert_eq!(q(&[("limit", "0")]), Err(QueryError::Limit));
        assert_eq!(q(&[("limit", "101")]), Err(QueryError::Limit));
        assert_eq!(q(&[("limit", "x")]), Err(QueryError::Limit));
        assert_eq!(q(&[("page", "0")]), Err(QueryError::Page));
        assert_eq!(q(&[("page", "-1")]), Err(QueryError::Page));
        assert_eq!(q(&[("page", "+2")]), Err(QueryError::Page));
        assert_eq!(q(&[("page", "1000001")]), Err(QueryError::Page));
        assert_eq!(
            q(&[("page", "99999999999999999999999")]),
            Err(QueryError::Page)
        );
        assert!(matches!(q(&[("sort", "a;drop")]), Err(QueryError::Sort(_))));
        assert!(matches!(q(&[("sort", "")]), Err(QueryError::Sort(_))));
        assert!(matches!(
            q(&[("where[a'b][equals]", "x")]),
            Err(QueryError::Filter(_))
        ));
        assert!(matches!(
            q(&[("where[a][like]", "x")]),
            Err(QueryError::Filter(_))
        ));
        assert!(matches!(q(&[("bogus", "1")]), Err(QueryError::Unknown(_))));
        assert_eq!(
            q(&[("limit", "1"), ("limit", "2")]),
            Err(QueryError::Repeated("limit"))
        );
        assert!(Field::parse(&["a"; 9].join(".")).is_none());
    }
}
