//! Channel servers on loopback that authenticate or misbehave: basic auth, a
//! `/t/<token>/` path, redirects, errors with a telling body, an answer
//! dripped one byte a second, or none at all. Plain HTTP/1.1 on a
//! `TcpListener`, one request per connection, so every behaviour is exact.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::Method;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use url::Url;

use crate::TestServer;

/// What a [`LoopbackChannel`] does with a request.
#[derive(Debug, Clone)]
pub enum Behaviour {
    /// Serves `dir` under `/<prefix>/`, so the channel has siblings on its server.
    Mount { dir: PathBuf, prefix: String },
    /// Serves `dir` to requests with basic authentication `username:password`; 401 otherwise.
    Basic {
        dir: PathBuf,
        username: String,
        password: String,
    },
    /// Serves `dir` under `/t/<token>/` only; 403 otherwise.
    Token { dir: PathBuf, token: String },
    /// Answers every request with a 302 to `target` followed by the request's path.
    Redirect { target: String },
    /// Answers every request with a 500 whose status text and body are `telltale`.
    Error { telltale: String },
    /// Serves `dir`, its headers at once and its body one byte a second.
    Drip { dir: PathBuf },
    /// Reads the request and never answers.
    Hang,
}

/// A channel server on 127.0.0.1; stopped when dropped.
pub struct LoopbackChannel {
    /// The server's root URL, ending in `/`.
    pub url: Url,
    /// The request lines (and whether they carried an Authorization header) received so far.
    pub requests: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for LoopbackChannel {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl LoopbackChannel {
    pub async fn start(behaviour: Behaviour) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        let address = listener.local_addr().expect("a bound address");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = requests.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(answer(stream, behaviour.clone(), seen.clone()));
            }
        });
        Self {
            url: Url::parse(&format!("http://{address}/")).expect("a URL"),
            requests,
            task,
        }
    }

    pub fn requests(&self) -> Vec<String> {
        self.requests
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }
}

async fn answer(mut stream: TcpStream, behaviour: Behaviour, seen: Arc<Mutex<Vec<String>>>) {
    let mut head = Vec::new();
    let mut buffer = [0u8; 4096];
    while !head.windows(4).any(|window| window == b"\r\n\r\n") {
        match stream.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(read) => head.extend_from_slice(&buffer[..read]),
        }
        if head.len() > 64 * 1024 {
            return;
        }
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default().to_owned();
    let authorization = lines
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.eq_ignore_ascii_case("authorization"))
        .map(|(_, value)| value.trim().to_owned());
    seen.lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .push(format!("{request_line} auth={}", authorization.is_some()));
    let mut parts = request_line.split(' ');
    let method = parts.next().unwrap_or_default().to_owned();
    let path = parts.next().unwrap_or("/").to_owned();
    let head_only = method == "HEAD";
    match behaviour {
        Behaviour::Mount { dir, prefix } => match path.strip_prefix(&format!("/{prefix}")) {
            Some(rest) if rest.starts_with('/') => {
                serve_file(&mut stream, &dir, rest, head_only).await
            }
            _ => respond(&mut stream, "404 Not Found", &[], b"").await,
        },
        Behaviour::Basic {
            dir,
            username,
            password,
        } => {
            use base64::Engine;
            let expected = format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"))
            );
            if authorization.as_deref() == Some(expected.as_str()) {
                serve_file(&mut stream, &dir, &path, head_only).await;
            } else {
                respond(
                    &mut stream,
                    "401 Unauthorized",
                    &[("WWW-Authenticate", "Basic")],
                    b"no",
                )
                .await;
            }
        }
        Behaviour::Token { dir, token } => match path.strip_prefix(&format!("/t/{token}")) {
            Some(rest) if rest.starts_with('/') => {
                serve_file(&mut stream, &dir, rest, head_only).await
            }
            _ => respond(&mut stream, "403 Forbidden", &[], b"no token").await,
        },
        Behaviour::Redirect { target } => {
            let location = format!("{}{}", target.trim_end_matches('/'), path);
            respond(&mut stream, "302 Found", &[("Location", &location)], b"").await;
        }
        Behaviour::Error { telltale } => {
            let body =
                json!({ "error": telltale, "internal": { "host": "db-7.internal" } }).to_string();
            respond(
                &mut stream,
                &format!("500 {telltale}"),
                &[("Content-Type", "application/json")],
                body.as_bytes(),
            )
            .await;
        }
        Behaviour::Drip { dir } => {
            let Some(bytes) = file_bytes(&dir, &path) else {
                respond(&mut stream, "404 Not Found", &[], b"").await;
                return;
            };
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                bytes.len()
            );
            if stream.write_all(head.as_bytes()).await.is_err() {
                return;
            }
            for byte in bytes {
                if stream.write_all(&[byte]).await.is_err() || stream.flush().await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        Behaviour::Hang => {
            // Keep the connection open, silent, until the client gives up.
            let _ = stream.read(&mut buffer).await;
            std::future::pending::<()>().await;
        }
    }
}

/// The bytes of `path` below `dir`, for plain paths only.
fn file_bytes(dir: &Path, path: &str) -> Option<Vec<u8>> {
    let relative = path.trim_start_matches('/');
    if relative
        .split('/')
        .any(|segment| segment == ".." || segment.contains('%'))
    {
        return None;
    }
    fs_err::read(dir.join(relative))
        .ok()
        .filter(|_| !relative.is_empty())
}

async fn serve_file(stream: &mut TcpStream, dir: &Path, path: &str, head_only: bool) {
    match file_bytes(dir, path) {
        Some(bytes) if head_only => {
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                bytes.len()
            );
            let _ = stream.write_all(head.as_bytes()).await;
        }
        Some(bytes) => respond(stream, "200 OK", &[], &bytes).await,
        None => respond(stream, "404 Not Found", &[], b"").await,
    }
}

async fn respond(stream: &mut TcpStream, status: &str, headers: &[(&str, &str)], body: &[u8]) {
    let mut head = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let _ = stream.write_all(head.as_bytes()).await;
    let _ = stream.write_all(body).await;
    let _ = stream.shutdown().await;
}

/// Signs in to the web UI with `token` and returns the session cookie.
pub async fn ui_session(server: &TestServer, token: &str) -> String {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("a client");
    let response = client
        .post(server.url("/ui/sign-in"))
        .header("origin", &server.base)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(
            url::form_urlencoded::Serializer::new(String::new())
                .append_pair("token", token)
                .finish(),
        )
        .send()
        .await
        .expect("the sign-in is answered");
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .map(|value| value.split(';').next().unwrap_or_default().to_owned())
        .next()
        .expect("a session cookie")
}

/// A page of the web UI, with the session cookie.
pub async fn ui_page(server: &TestServer, cookie: &str, path: &str) -> String {
    let response = server
        .client
        .get(server.url(path))
        .header("cookie", cookie)
        .send()
        .await
        .expect("the page is answered");
    assert!(
        response.status().is_success(),
        "{path}: {}",
        response.status()
    );
    response.text().await.expect("a page")
}

/// A token of `subject`, made a developer of `namespace` (and nothing else).
pub async fn developer_token(server: &TestServer, namespace: &str, subject: &str) -> String {
    let response = server
        .admin_json(
            Method::PUT,
            &format!("/api/v1/namespaces/{namespace}/members/{subject}"),
            Some(json!({ "role": "developer" })),
        )
        .await;
    assert!(
        response.status().is_success(),
        "{}",
        response.text().await.unwrap_or_default()
    );
    let response = server
        .admin_json(
            Method::POST,
            "/api/v1/tokens",
            Some(json!({ "name": "channels", "subject": subject })),
        )
        .await;
    let created: serde_json::Value = response.json().await.expect("a token");
    created["token"].as_str().expect("a token").to_owned()
}

/// Sends `body` as `caller` (`PUT` of an environment.yml, or a lockfile, or `POST …/solve`).
pub async fn send_as(
    server: &TestServer,
    token: &str,
    method: Method,
    path: &str,
    body: &str,
) -> reqwest::Response {
    server
        .client
        .request(method, server.url(path))
        .bearer_auth(token)
        .header("content-type", "application/yaml")
        .body(body.to_owned())
        .send()
        .await
        .expect("the request is answered")
}

/// The entries of the server's prefix folder, to show a failed build
/// changed nothing outside its own prefix.
pub fn prefixes(server: &TestServer) -> Vec<String> {
    match fs_err::read_dir(server.data_dir.join("prefixes")) {
        Ok(entries) => {
            let mut names: Vec<String> = entries
                .filter_map(Result::ok)
                .map(|entry| entry.file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            names
        }
        Err(_) => Vec::new(),
    }
}
