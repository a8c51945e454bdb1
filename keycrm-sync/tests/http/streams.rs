//! Event streams: SSE ids and resume, the gap notice, shutdown, WebSocket, and subscriptions
//! that outlive the engine handle.

use super::*;

#[tokio::test]
async fn sse_events_have_increasing_ids_and_resume_from_last_event_id() {
    let rig = rig().await;
    let mut first = sse(&rig, None).await;
    for n in 1..=3 {
        rig.host.put_order(order(n));
    }
    rig.engine.run_once().await.unwrap();
    let mut ids = Vec::new();
    for _ in 0..3 {
        let frame = first.next_of("pushed").await;
        assert_eq!(frame.data["id"].as_u64(), frame.id);
        ids.push(frame.id.unwrap());
    }
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    // A client that saw the first event resumes after it: the rest is replayed, then live.
    let mut resumed = sse(&rig, Some(ids[0])).await;
    assert_eq!(resumed.next().await.unwrap().id, Some(ids[0] + 1));
    assert_eq!(resumed.next_of("pushed").await.id, Some(ids[1]));
    assert_eq!(resumed.next_of("pushed").await.id, Some(ids[2]));
    // `?last_event_id=` does the same for clients that cannot send headers.
    let response = rig
        .http
        .get(rig.url(&format!("/events?last_event_id={}", ids[1])))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    let mut by_query = SseReader::new(response);
    assert_eq!(by_query.next().await.unwrap().id, Some(ids[1] + 1));
    assert_eq!(by_query.next_of("pushed").await.id, Some(ids[2]));
}

#[tokio::test]
async fn a_resume_older_than_the_replay_buffer_gets_a_gap_notice() {
    let rig = rig_with(
        |mut o| {
            o.replay_buffer = 2;
            o
        },
        "",
    )
    .await;
    let mut watcher = sse(&rig, None).await;
    for n in 1..=4 {
        rig.host.put_order(order(n));
    }
    rig.engine.run_once().await.unwrap();
    let mut last = 0;
    for _ in 0..4 {
        last = watcher.next_of("pushed").await.id.unwrap();
    }
    let mut late = sse(&rig, Some(last - 3)).await;
    let gap = late.next().await.unwrap();
    assert_eq!(gap.data["type"], "gap");
    assert_eq!(gap.id, None);
    assert_eq!(late.next().await.unwrap().id, Some(last - 1));
    assert_eq!(late.next().await.unwrap().id, Some(last));
}

#[tokio::test]
async fn streams_end_on_shutdown_and_graceful_shutdown_does_not_hang() {
    let rig = rig().await;
    let mut events = sse(&rig, None).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!(
        "{}/ws?access_token={TOKEN}",
        rig.base.replace("http://", "ws://")
    ))
    .await
    .unwrap();
    // The engine's own subscription holds no borrow and ends too.
    let subscription = rig.engine.subscribe();
    drop(rig.engine.clone());
    rig.shutdown.cancel();
    assert!(events.next().await.is_none(), "the SSE stream ended");
    let mut closed = false;
    while let Some(message) = tokio::time::timeout(Duration::from_secs(20), ws.next())
        .await
        .expect("the socket closes in time")
    {
        if matches!(
            message,
            Ok(tokio_tungstenite::tungstenite::Message::Close(_)) | Err(_)
        ) {
            closed = true;
            break;
        }
    }
    assert!(closed, "the WebSocket was closed");
    let rest: Vec<_> =
        tokio::time::timeout(Duration::from_secs(20), subscription.collect::<Vec<_>>())
            .await
            .expect("subscribe() ends on shutdown");
    assert!(rest.is_empty());
    tokio::time::timeout(Duration::from_secs(20), rig.server)
        .await
        .expect("graceful shutdown finished with clients connected")
        .unwrap();
}

#[tokio::test]
async fn websocket_carries_the_same_numbered_events() {
    let rig = rig().await;
    let url = format!("{}/ws", rig.base.replace("http://", "ws://"));
    // Without a token the upgrade is refused.
    assert!(tokio_tungstenite::connect_async(url.clone()).await.is_err());
    let mut request =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(url)
            .unwrap();
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    rig.host.put_order(order(5));
    rig.engine.run_once().await.unwrap();
    let pushed = loop {
        let message = tokio::time::timeout(Duration::from_secs(20), ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let value: Value = serde_json::from_str(message.to_text().unwrap()).unwrap();
        if value["type"] == "pushed" {
            break value;
        }
    };
    assert_eq!(pushed["local_id"], "WMS-5");
    assert!(pushed["id"].as_u64().unwrap() >= 1);
    ws.send(tokio_tungstenite::tungstenite::Message::Close(None))
        .await
        .unwrap();
}

/// `subscribe()` holds no borrow of the engine: the stream outlives it (compile-time proof).
fn owned_events(
    engine: Engine,
) -> impl futures::Stream<Item = keycrm_sync::SyncEvent> + Send + 'static {
    engine.subscribe()
}

#[tokio::test]
async fn subscribe_outlives_the_engine_handle_and_ends_on_engine_shutdown() {
    let rig = rig().await;
    let events = owned_events(rig.engine.clone());
    let task = tokio::spawn(events.collect::<Vec<_>>());
    rig.host.put_order(order(9));
    rig.engine.run_once().await.unwrap();
    rig.engine.shutdown();
    let seen = tokio::time::timeout(Duration::from_secs(20), task)
        .await
        .expect("the stream ended on shutdown")
        .unwrap();
    assert!(seen.iter().any(
        |e| matches!(e, keycrm_sync::SyncEvent::Pushed { local_id, .. } if local_id == "WMS-9")
    ));
}
