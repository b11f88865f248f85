//! The scripted API server behind kube's mocked client (tower-test) that the controller tests
//! share: each request is read once (method, path, query, JSON body) and handed, with the test's
//! state locked, to the test's own `answer`, which knows the real API shapes it scripts.

use std::sync::{Arc, Mutex};

use http::{Method, Request, Response, StatusCode};
use kube::client::Body;
use serde_json::Value;

/// The test side of the mocked client.
pub type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;
/// A request not answered yet (an open watch).
pub type Pending = tower_test::mock::SendResponse<Response<Body>>;
/// A test's answer to one request: `None` leaves it open (a watch with nothing to say yet).
pub type Answer<S> = fn(&mut S, &Method, &str, &str, &Value) -> Option<(StatusCode, Value)>;
/// Keeps a request `answer` left open: the state and the request's path.
pub type Hold<S> = fn(&mut S, &str, Pending);

/// Sends `body` (JSON) with `code`.
pub fn reply(send: Pending, code: StatusCode, body: Vec<u8>) {
    let response = Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Body::from(body))
        .expect("response");
    send.send_response(response);
}

/// Serves `handle` on a task until the client is dropped: `answer` answers each request with the
/// state locked, and what it leaves open goes to `hold`.
pub fn serve<S: Send + 'static>(mut handle: Handle, state: Arc<Mutex<S>>, answer: Answer<S>, hold: Hold<S>) {
    tokio::spawn(async move {
        while let Some((req, send)) = handle.next_request().await {
            let method = req.method().clone();
            let path = req.uri().path().to_string();
            let query = req.uri().query().unwrap_or_default().to_string();
            let bytes = req.into_body().collect_bytes().await.unwrap_or_default();
            let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
            match answer(&mut s, &method, &path, &query, &body) {
                Some((code, value)) => reply(send, code, serde_json::to_vec(&value).unwrap_or_default()),
                None => hold(&mut s, &path, send),
            }
        }
    });
}
