//! CRM users (managers).

use wiremock::matchers::query_param;

use crate::support::*;

#[tokio::test]
async fn user_list_filters_by_status_and_login_time() {
    let (server, client) = setup().await;
    api("GET", "/users")
        .and(query_param("filter[status]", "active"))
        .and(query_param("filter[role_id]", "2"))
        .and(query_param(
            "filter[last_logged_between]",
            "2024-05-01 00:00:00, 2024-05-31 23:59:59",
        ))
        .respond_with(json(200, fixture("users_page.json")))
        .expect(1)
        .mount(&server)
        .await;

    let page = client
        .user_list()
        .filter_status("active")
        .filter_role_id("2")
        .filter_last_logged_between("2024-05-01 00:00:00, 2024-05-31 23:59:59")
        .send()
        .await
        .expect("users")
        .into_inner();

    let request = only_request(&server).await;
    assert_eq!(
        request.url.query(),
        Some(
            "filter%5Blast_logged_between%5D=2024-05-01+00%3A00%3A00%2C+2024-05-31+23%3A59%3A59\
             &filter%5Brole_id%5D=2&filter%5Bstatus%5D=active"
        )
    );
    assert_eq!(page.total, Some(2));
    let andriy = &page.data[0];
    assert_eq!(andriy.id, Some(14));
    assert_eq!(andriy.full_name.as_deref(), Some("Андрій Шевчук"));
    assert_eq!(andriy.username.as_deref(), Some("a.shevchuk"));
    assert_eq!(andriy.role_id, Some(2));
    assert_eq!(andriy.last_logged_at, Some(ts("2024-05-17 07:58:12")));
    let maria = &page.data[1];
    assert_eq!(maria.last_name, None);
    assert_eq!(maria.role_id, None);
    assert_eq!(maria.last_logged_at, None);
    assert_eq!(maria.created_at, Some(ts("2024-01-09T08:00:00Z")));
}
