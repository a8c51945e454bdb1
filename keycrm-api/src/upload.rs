//! `POST /storage/upload`, written by hand: the generator cannot express multipart bodies.

use progenitor_client::ClientInfo;

use crate::error::{Error, ErrorMeta, Result};
use crate::{Client, types};

/// The largest file KeyCRM accepts (10 MB, counted as 10 × 1024 × 1024 bytes).
pub const MAX_UPLOAD_BYTES: usize = 10 * 1024 * 1024;

impl Client {
    /// Uploads a file to KeyCRM's storage (`POST /storage/upload`, multipart field `file`).
    ///
    /// Attach the returned file to an order or card afterwards by its `id`. Files larger than
    /// [`MAX_UPLOAD_BYTES`] are refused with [`Error::PayloadTooLarge`] before anything is sent.
    /// The service answers 200 with the existing record when the same file was uploaded before.
    pub async fn storage_upload(
        &self,
        file_name: impl Into<String>,
        content: impl Into<Vec<u8>>,
    ) -> Result<types::File> {
        let content = content.into();
        let file_name = file_name.into();
        if content.len() > MAX_UPLOAD_BYTES {
            return Err(Error::PayloadTooLarge {
                message: format!(
                    "the file has {} bytes; KeyCRM accepts at most {MAX_UPLOAD_BYTES} bytes (10 MB)",
                    content.len()
                ),
                meta: ErrorMeta::new(None, 0),
            });
        }
        if file_name.trim().is_empty() {
            return Err(Error::InvalidRequest {
                message: "the file name must not be empty".into(),
            });
        }
        let mime = mime_for(&file_name);
        let part = reqwest::multipart::Part::bytes(content)
            .file_name(file_name)
            .mime_str(mime)
            .map_err(|e| Error::InvalidRequest {
                message: format!("bad content type: {}", e.without_url()),
            })?;
        let form = reqwest::multipart::Form::new().part("file", part);
        let url = format!("{}/storage/upload", self.baseurl());
        let request = self
            .client()
            .post(url)
            .multipart(form)
            .build()
            .map_err(|e| Error::from_reqwest(e, ErrorMeta::new(None, 0)))?;
        self.send_hand_built(request, "storage_upload").await
    }
}

/// A content type from the file name's extension; KeyCRM stores what it is told.
fn mime_for(file_name: &str) -> &'static str {
    let ext = file_name
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "jpg" | "jpeg" => "image/jpeg",
        "png" => "image/png",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "pdf" => "application/pdf",
        "txt" => "text/plain",
        "csv" => "text/csv",
        "json" => "application/json",
        "xml" => "application/xml",
        "zip" => "application/zip",
        "doc" => "application/msword",
        "docx" => "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "xls" => "application/vnd.ms-excel",
        "xlsx" => "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        _ => "application/octet-stream",
    }
}
