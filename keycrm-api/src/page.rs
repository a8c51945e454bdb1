//! The Laravel length-aware page that every KeyCRM list endpoint returns.

use serde::{Deserialize, Serialize};

/// One page of a KeyCRM list.
///
/// Every list operation of the generated client returns `Page<Item>`. All envelope fields are
/// optional because the service omits some of them on some endpoints; [`Page::has_next`]
/// combines them the way the service means them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Page<T> {
    /// This page's number (1-based).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_page: Option<i64>,
    /// The items on this page.
    #[serde(default = "Vec::new")]
    pub data: Vec<T>,
    /// URL of the first page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_page_url: Option<String>,
    /// 1-based position of this page's first item in the whole list; `None` for an empty page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<i64>,
    /// Number of the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_page: Option<i64>,
    /// URL of the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_page_url: Option<String>,
    /// URL of the next page; `None` on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_page_url: Option<String>,
    /// The list's URL without a query string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Page size used by the service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_page: Option<i64>,
    /// URL of the previous page; `None` on the first page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prev_page_url: Option<String>,
    /// 1-based position of this page's last item in the whole list; `None` for an empty page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<i64>,
    /// Number of items matching the query, over all pages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<i64>,
}

impl<T> Default for Page<T> {
    fn default() -> Self {
        Self {
            current_page: None,
            data: Vec::new(),
            first_page_url: None,
            from: None,
            last_page: None,
            last_page_url: None,
            next_page_url: None,
            path: None,
            per_page: None,
            prev_page_url: None,
            to: None,
            total: None,
        }
    }
}

impl<T> Page<T> {
    /// Whether another page follows: the page is not empty, `next_page_url` is set and
    /// `current_page` has not reached `last_page`.
    pub fn has_next(&self) -> bool {
        if self.data.is_empty() || self.next_page_url.is_none() {
            return false;
        }
        match (self.current_page, self.last_page) {
            (Some(current), Some(last)) => current < last,
            _ => true,
        }
    }

    /// The number of the page after this one, when [`Page::has_next`] says there is one.
    pub fn next_page(&self) -> Option<i64> {
        self.has_next().then(|| self.current_page.unwrap_or(1) + 1)
    }

    /// The items of this page.
    pub fn items(&self) -> &[T] {
        &self.data
    }

    /// Consumes the page, keeping its items.
    pub fn into_items(self) -> Vec<T> {
        self.data
    }
}

impl<T> IntoIterator for Page<T> {
    type Item = T;
    type IntoIter = std::vec::IntoIter<T>;

    fn into_iter(self) -> Self::IntoIter {
        self.data.into_iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(current: i64, last: i64, next: Option<&str>, items: usize) -> Page<u8> {
        Page {
            current_page: Some(current),
            last_page: Some(last),
            next_page_url: next.map(str::to_string),
            data: vec![0; items],
            ..Page::default()
        }
    }

    #[test]
    fn has_next_follows_every_end_signal() {
        assert!(page(1, 3, Some("u"), 2).has_next());
        assert_eq!(page(1, 3, Some("u"), 2).next_page(), Some(2));
        assert!(
            !page(3, 3, Some("u"), 2).has_next(),
            "current_page >= last_page"
        );
        assert!(!page(1, 3, None, 2).has_next(), "next_page_url null");
        assert!(!page(1, 3, Some("u"), 0).has_next(), "empty page");
    }

    #[test]
    fn missing_envelope_fields_parse() {
        let p: Page<u8> = serde_json::from_str(r#"{"data":[1,2]}"#).unwrap();
        assert_eq!(p.data, vec![1, 2]);
        assert!(!p.has_next());
    }
}
