//! Pagination as streams: every list operation's builder can yield its pages or its items
//! lazily, one request per page, holding one page in memory.

use std::future::Future;
use std::num::NonZeroU64;

use futures_util::stream::{self, Stream, TryStreamExt};

use crate::Page;
#[cfg(test)]
use crate::builder::LIST_BUILDERS;
use crate::error::{Error, Result};

/// The page size streams use when the builder sets none: the service's maximum.
pub const DEFAULT_STREAM_LIMIT: u64 = 50;

/// A configured list request (a generated builder such as [`crate::builder::OrderList`]) that can
/// be sent for any page. Implemented for every paginated operation; use it through
/// [`Paginate`].
pub trait ListRequest<'a>: Clone + Send + Sync + 'a {
    /// The item type of the list.
    type Item: Clone + PartialEq + Send + 'a;

    /// The same request for another page.
    fn with_page(self, page: NonZeroU64) -> Self;

    /// The same request with another page size.
    fn with_limit(self, limit: NonZeroU64) -> Self;

    /// Whether the caller already chose a page size.
    fn limit_is_set(&self) -> bool;

    /// Sends the request.
    fn fetch(self) -> impl Future<Output = Result<Page<Self::Item>>> + Send + 'a;
}

/// Streams over the pages and items of a list request.
///
/// ```no_run
/// use futures_util::TryStreamExt;
/// use keycrm_api::Paginate;
/// # async fn demo(client: keycrm_api::Client) -> keycrm_api::Result<()> {
/// let mut orders = std::pin::pin!(client
///     .order_list()
///     .filter_status_id("1,2")
///     .include("buyer")
///     .items());
/// while let Some(order) = orders.try_next().await? {
///     println!("{:?}", order.id);
/// }
/// # Ok(()) }
/// ```
pub trait Paginate<'a>: ListRequest<'a> {
    /// Every page, starting at page 1, until the service says there is no next page
    /// (`next_page_url` null, `current_page >= last_page`, or an empty page). Uses pages of
    /// [`DEFAULT_STREAM_LIMIT`] unless the builder set `limit`. Fails with
    /// [`Error::PageNotAdvancing`] instead of looping when the service repeats a page.
    fn pages(self) -> impl Stream<Item = Result<Page<Self::Item>>> + Send + 'a {
        let request = if self.limit_is_set() {
            self
        } else {
            self.with_limit(NonZeroU64::new(DEFAULT_STREAM_LIMIT).expect("non-zero"))
        };
        let start = Walk {
            request,
            next: Some(1),
            previous: None,
        };
        stream::try_unfold(start, |mut walk| async move {
            let Some(number) = walk.next else {
                return Ok(None);
            };
            let page = walk
                .request
                .clone()
                .with_page(NonZeroU64::new(number).expect("pages start at 1"))
                .fetch()
                .await?;
            if let Some(current) = page.current_page
                && u64::try_from(current).ok() != Some(number)
            {
                return Err(Error::PageNotAdvancing {
                    requested: number,
                    received: Some(current),
                });
            }
            let edges = page
                .data
                .first()
                .cloned()
                .zip(page.data.last().cloned())
                .map(Box::new);
            if edges.is_some() && edges == walk.previous {
                return Err(Error::PageNotAdvancing {
                    requested: number,
                    received: page.current_page,
                });
            }
            walk.previous = edges;
            walk.next = page.has_next().then_some(number + 1);
            Ok(Some((page, walk)))
        })
    }

    /// Every item of every page, in order (see [`Paginate::pages`]).
    fn items(self) -> impl Stream<Item = Result<Self::Item>> + Send + 'a {
        self.pages()
            .map_ok(|page| stream::iter(page.data.into_iter().map(Ok)))
            .try_flatten()
    }

    /// Collects every item into a vector. Mind the size of the list: each page is a request
    /// against the quota.
    fn collect_all(self) -> impl Future<Output = Result<Vec<Self::Item>>> + Send + 'a {
        self.items().try_collect()
    }
}

impl<'a, T: ListRequest<'a>> Paginate<'a> for T {}

struct Walk<R, T> {
    request: R,
    next: Option<u64>,
    /// First and last item of the previous page, to catch a page that repeats. Boxed: items
    /// such as orders are kilobytes, and the walk state moves through every poll.
    previous: Option<Box<(T, T)>>,
}

/// Implements [`ListRequest`] for generated list builders.
///
/// `cargo xtask codegen` calls this once, inside the generated `builder` module, with every
/// builder whose `send` answers a [`Page`]: there is no hand-kept list, and the impls read the
/// builder's private `limit` field directly.
macro_rules! impl_list_requests {
    ($($builder:ident => $item:ident),* $(,)?) => {
        $(
            impl<'a> $crate::ListRequest<'a> for $builder<'a> {
                type Item = $crate::types::$item;

                fn with_page(self, page: ::std::num::NonZeroU64) -> Self {
                    self.page(page)
                }

                fn with_limit(self, limit: ::std::num::NonZeroU64) -> Self {
                    self.limit(limit)
                }

                fn limit_is_set(&self) -> bool {
                    // A value that failed conversion counts as set: sending reports it.
                    !matches!(self.limit, Ok(None))
                }

                fn fetch(
                    self,
                ) -> impl ::std::future::Future<
                    Output = $crate::Result<$crate::Page<Self::Item>>,
                > + Send + 'a {
                    async move { Ok(self.send().await?.into_inner()) }
                }
            }
        )*

        /// Names of the builders that implement `ListRequest`, for the completeness test.
        #[cfg(test)]
        pub(crate) const LIST_BUILDERS: &[&str] = &[$(stringify!($builder)),*];
    };
}

pub(crate) use impl_list_requests;

#[cfg(test)]
mod tests {
    use super::*;

    /// Every generated operation that answers a `Page` has a `ListRequest` impl.
    #[test]
    fn every_paginated_builder_streams() {
        let generated = include_str!("generated.rs");
        let mut missing = Vec::new();
        for (i, _) in generated.match_indices("ResponseValue<crate::Page<crate::types::") {
            let before = &generated[..i];
            let start =
                before.rfind("impl<'a> ").expect("inside a builder impl") + "impl<'a> ".len();
            let name: String = before[start..]
                .chars()
                .take_while(|c| c.is_alphanumeric())
                .collect();
            if !LIST_BUILDERS.contains(&name.as_str()) {
                missing.push(name);
            }
        }
        assert!(missing.is_empty(), "not paginated: {missing:?}");
        assert_eq!(LIST_BUILDERS.len(), 21);
    }

    /// The page size is read from the builder itself, not from its `Debug` text: a filter
    /// value that looks like an unset limit does not hide the caller's limit.
    #[test]
    fn a_limit_is_seen_whatever_the_filters_say() {
        let client = crate::Client::builder().api_key("k").build().unwrap();
        let limited = client
            .order_list()
            .filter_buyer_email("limit: Ok(None)")
            .limit(NonZeroU64::new(20).unwrap());
        assert!(limited.limit_is_set());
        let source = include_str!("paginate.rs");
        let probe = ["format!(\"{self", ":?}\")"].concat();
        assert!(!source.contains(&probe), "no Debug probe");
    }

    #[test]
    fn a_limit_set_by_the_caller_is_seen() {
        let client = crate::Client::builder().api_key("k").build().unwrap();
        assert!(!client.order_list().limit_is_set());
        assert!(
            client
                .order_list()
                .limit(NonZeroU64::new(20).unwrap())
                .limit_is_set()
        );
        assert!(
            client
                .offer_stock_list()
                .limit(NonZeroU64::new(5).unwrap())
                .limit_is_set()
        );
    }
}
