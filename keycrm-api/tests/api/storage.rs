//! File storage: list, files of an order (plain array), multipart upload and its size limit.

use keycrm_api::{Error, MAX_UPLOAD_BYTES};
use wiremock::matchers::{header_regex, query_param};

use crate::support::*;

#[tokio::test]
async fn storage_list_sorts_by_size() {
    let (server, client) = setup().await;
    api("GET", "/storage")
        .and(query_param("sort", "-size"))
        .and(query_param("limit", "2"))
        .respond_with(json(200, fixture("storage_page.json")))
        .expect(1)
        .mount(&server)
        .await;

    let page = client
        .storage_list()
        .sort("-size")
        .limit(2u64)
        .send()
        .await
        .expect("files")
        .into_inner();

    let request = only_request(&server).await;
    assert_eq!(request.url.query(), Some("limit=2&sort=-size"));
    assert_eq!((page.total, page.last_page), (Some(8), Some(4)));
    assert!(page.has_next());
    let invoice = &page.data[0];
    assert_eq!(invoice.id, Some(8812));
    assert_eq!(invoice.size, Some(2_483_712));
    assert_eq!(
        invoice.original_file_name.as_deref(),
        Some("Рахунок-фактура 10452.pdf")
    );
    assert_eq!(invoice.mime_type.as_deref(), Some("application/pdf"));
    assert_eq!(
        invoice.hash.as_deref(),
        Some("b1946ac92492d2347c6235b4d2611184")
    );
    assert_eq!(invoice.updated_at, invoice.created_at);
    assert!(page.data[0].size > page.data[1].size);
}

#[tokio::test]
async fn storage_attachment_list_reads_a_plain_array() {
    let (server, client) = setup().await;
    api("GET", "/storage/attachment/order/10452")
        .respond_with(json(200, fixture("order_attachments.json")))
        .expect(1)
        .mount(&server)
        .await;

    let files = client
        .storage_attachment_list()
        .entity_type("order")
        .entity_id(10452)
        .send()
        .await
        .expect("a plain array")
        .into_inner();

    let request = only_request(&server).await;
    assert_eq!(request.method.as_str(), "GET");
    assert_eq!(request.url.query(), None);
    let summary: Vec<(i64, &str, i64)> = files
        .iter()
        .map(|f| {
            (
                f.id.unwrap(),
                f.original_file_name.as_deref().unwrap(),
                f.size.unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (8812, "Рахунок-фактура 10452.pdf", 2_483_712),
            (8813, "ТТН 20450912345678.png", 184_320)
        ]
    );
    assert_eq!(files[1].created_at, Some(ts("2024-05-18 11:20:45")));
}

#[tokio::test]
async fn storage_upload_sends_the_file_as_multipart() {
    let (server, client) = setup().await;
    api("POST", "/storage/upload")
        .and(header_regex(
            "content-type",
            "^multipart/form-data; boundary=.+$",
        ))
        .respond_with(json(201, fixture("file_uploaded.json")))
        .expect(1)
        .mount(&server)
        .await;

    let content: &[u8] = b"%PDF-1.7\n\x00\x01\xfe\xff binary tail";
    let file = client
        .storage_upload("invoice-10452.pdf", content)
        .await
        .expect("uploaded");

    let request = only_request(&server).await;
    assert_eq!(request.method.as_str(), "POST");
    assert_eq!(request.url.path(), "/storage/upload");
    assert_eq!(request.url.query(), None);
    let content_type = request
        .headers
        .get("content-type")
        .unwrap()
        .to_str()
        .unwrap();
    let boundary = content_type
        .strip_prefix("multipart/form-data; boundary=")
        .expect("multipart/form-data with a boundary");
    let body = &request.body;
    let contains = |needle: &[u8]| body.windows(needle.len()).any(|w| w == needle);
    assert!(
        contains(format!("--{boundary}\r\n").as_bytes()),
        "opening boundary"
    );
    assert!(
        contains(format!("--{boundary}--").as_bytes()),
        "closing boundary"
    );
    assert!(
        contains(b"Content-Disposition: form-data; name=\"file\"; filename=\"invoice-10452.pdf\""),
        "the part is the `file` field with the file name: {}",
        String::from_utf8_lossy(body)
    );
    assert!(
        contains(b"Content-Type: application/pdf"),
        "the part's type"
    );
    assert!(contains(content), "the file's bytes, unchanged");

    assert_eq!(file.id, Some(8820));
    assert_eq!(
        file.original_file_name.as_deref(),
        Some("invoice-10452.pdf")
    );
    assert_eq!(file.size, Some(content.len() as i64));
    assert_eq!(file.disk.as_deref(), Some("s3"));
    assert_eq!(file.created_at, Some(ts("2024-05-20 14:00:00")));
}

#[tokio::test]
async fn storage_upload_reads_the_200_for_an_already_known_file() {
    let (server, client) = setup().await;
    api("POST", "/storage/upload")
        .respond_with(json(200, fixture("file_uploaded.json")))
        .expect(1)
        .mount(&server)
        .await;

    let file = client
        .storage_upload("invoice-10452.pdf", b"%PDF-1.7 same bytes".to_vec())
        .await
        .expect("200 is the existing record");
    assert_eq!(file.id, Some(8820));
    assert_eq!(requests(&server).await.len(), 1);
}

#[tokio::test]
async fn storage_upload_refuses_a_file_over_the_limit_without_sending() {
    let (server, client) = setup().await;

    let too_big = vec![0x42_u8; MAX_UPLOAD_BYTES + 1];
    let err = client
        .storage_upload("scan.pdf", too_big)
        .await
        .expect_err("over 10 MB");

    match &err {
        Error::PayloadTooLarge { message, meta } => {
            assert!(
                message.contains(&(MAX_UPLOAD_BYTES + 1).to_string()),
                "{message}"
            );
            assert!(message.contains(&MAX_UPLOAD_BYTES.to_string()), "{message}");
            assert_eq!(meta.attempts, 0, "nothing was sent");
        }
        other => panic!("expected PayloadTooLarge, got {other:?}"),
    }
    assert_eq!(err.status(), None, "no HTTP status: the client refused it");
    assert_eq!(err.attempts(), 0);
    assert!(!err.is_retryable());
    assert_eq!(MAX_UPLOAD_BYTES, 10 * 1024 * 1024);
    assert!(
        requests(&server).await.is_empty(),
        "no request may reach the server"
    );
}

#[tokio::test]
async fn storage_upload_sends_a_file_of_exactly_the_limit() {
    let (server, client) = setup().await;
    api("POST", "/storage/upload")
        .respond_with(json(201, fixture("file_uploaded.json")))
        .expect(1)
        .mount(&server)
        .await;

    let file = client
        .storage_upload("scan.bin", vec![0_u8; MAX_UPLOAD_BYTES])
        .await
        .expect("10 MB exactly is allowed");
    assert_eq!(file.id, Some(8820));
    let request = only_request(&server).await;
    assert!(
        request.body.len() > MAX_UPLOAD_BYTES,
        "file plus multipart framing"
    );
}
