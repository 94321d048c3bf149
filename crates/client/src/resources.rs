//! The API's resources as the CLI manages them: namespaces and their
//! members, policy, visibility and quota; tokens; environments and their
//! builds; who the caller is. One method per route, answering the wire
//! types of `envstore-api-types`.

use anyhow::Context;
use envstore_api_types::{
    BuildCancelled, BuildsPage, CurrentBuild, CurrentBuildSet, EnvironmentDeleted,
    EnvironmentSummary, EnvironmentsPage, MemberRole, MemberSet, Members, NamespaceCreated,
    NamespaceDeleted, NamespaceSummary, NamespaceView, NamespacesPage, NewNamespace, NewToken,
    Policy, PolicyView, Quota, QuotaView, Role, TokenCreated, Tokens, Visibility, VisibilitySet,
    WhoAmI,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::client::{Client, expect_success, problem, split_environment};
use crate::sse::EventParser;

/// A path segment as the URL needs it: everything but unreserved
/// characters percent-encoded (subjects hold `:` and `@`, names could hold
/// anything a person types).
pub(crate) fn segment(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

/// `api/v1/namespaces/{namespace}/environments/{name}` of `NAMESPACE/NAME`.
fn environment_path(environment: &str) -> anyhow::Result<String> {
    let (namespace, name) = split_environment(environment)?;
    Ok(format!(
        "api/v1/namespaces/{}/environments/{}",
        segment(namespace),
        segment(name)
    ))
}

/// A policy from a file, YAML or JSON, as `PUT …/policy` takes it.
pub fn read_policy_file(path: &std::path::Path) -> anyhow::Result<Policy> {
    let text = fs_err::read_to_string(path)?;
    serde_yaml::from_str(&text)
        .with_context(|| format!("'{}' is not a policy (YAML or JSON)", path.display()))
}

/// How a followed log ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogEnd {
    /// The build is over.
    Ended,
    /// The server closed the stream before the end, saying why (its
    /// longest life, a revoked token, a shutdown).
    Closed(String),
    /// The connection broke off.
    Broken,
}

/// What a followed log sends, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogEvent {
    Line(String),
    /// The lines so far are replaced by the complete log, which follows.
    Reset,
}

impl Client {
    async fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let response = self
            .request(reqwest::Method::GET, path)?
            .send()
            .await
            .context("the server did not answer")?;
        expect_success(response).await
    }

    async fn send_json<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: &impl Serialize,
    ) -> anyhow::Result<T> {
        let response = self
            .request(method, path)?
            .json(body)
            .send()
            .await
            .context("the server did not answer")?;
        expect_success(response).await
    }

    /// Sends a request whose success has no body (204).
    async fn send_empty(&self, method: reqwest::Method, path: &str) -> anyhow::Result<()> {
        let response = self
            .request(method, path)?
            .send()
            .await
            .context("the server did not answer")?;
        if response.status().is_success() {
            return Ok(());
        }
        Err(problem(response).await)
    }

    /// Who the server takes the caller for.
    pub async fn whoami(&self) -> anyhow::Result<WhoAmI> {
        self.get("api/v1/whoami").await
    }

    /// Every namespace the caller may see, across pages.
    pub async fn namespaces(&self) -> anyhow::Result<Vec<NamespaceSummary>> {
        let mut namespaces = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let path = match &after {
                Some(after) => format!("api/v1/namespaces?after={}", segment(after)),
                None => "api/v1/namespaces".to_owned(),
            };
            let page: NamespacesPage = self.get(&path).await?;
            namespaces.extend(page.namespaces);
            match page.next_after {
                Some(next) if after.as_deref() != Some(next.as_str()) => after = Some(next),
                _ => return Ok(namespaces),
            }
        }
    }

    pub async fn create_namespace(
        &self,
        name: &str,
        public_read: bool,
    ) -> anyhow::Result<NamespaceCreated> {
        let body = NewNamespace {
            name: name.to_owned(),
            public_read,
        };
        self.send_json(reqwest::Method::POST, "api/v1/namespaces", &body)
            .await
    }

    /// A namespace, its visibility and its environments' names.
    pub async fn namespace(&self, name: &str) -> anyhow::Result<NamespaceView> {
        self.get(&format!("api/v1/namespaces/{}", segment(name)))
            .await
    }

    pub async fn delete_namespace(&self, name: &str) -> anyhow::Result<NamespaceDeleted> {
        let response = self
            .request(
                reqwest::Method::DELETE,
                &format!("api/v1/namespaces/{}", segment(name)),
            )?
            .send()
            .await
            .context("the server did not answer")?;
        expect_success(response).await
    }

    pub async fn members(&self, namespace: &str) -> anyhow::Result<Members> {
        self.get(&format!("api/v1/namespaces/{}/members", segment(namespace)))
            .await
    }

    pub async fn set_member(
        &self,
        namespace: &str,
        subject: &str,
        role: Role,
    ) -> anyhow::Result<MemberSet> {
        self.send_json(
            reqwest::Method::PUT,
            &format!(
                "api/v1/namespaces/{}/members/{}",
                segment(namespace),
                segment(subject)
            ),
            &MemberRole { role },
        )
        .await
    }

    pub async fn remove_member(&self, namespace: &str, subject: &str) -> anyhow::Result<()> {
        self.send_empty(
            reqwest::Method::DELETE,
            &format!(
                "api/v1/namespaces/{}/members/{}",
                segment(namespace),
                segment(subject)
            ),
        )
        .await
    }

    pub async fn policy(&self, namespace: &str) -> anyhow::Result<PolicyView> {
        self.get(&format!("api/v1/namespaces/{}/policy", segment(namespace)))
            .await
    }

    pub async fn set_policy(&self, namespace: &str, policy: &Policy) -> anyhow::Result<PolicyView> {
        self.send_json(
            reqwest::Method::PUT,
            &format!("api/v1/namespaces/{}/policy", segment(namespace)),
            policy,
        )
        .await
    }

    pub async fn set_visibility(
        &self,
        namespace: &str,
        public_read: bool,
    ) -> anyhow::Result<VisibilitySet> {
        self.send_json(
            reqwest::Method::PUT,
            &format!("api/v1/namespaces/{}/visibility", segment(namespace)),
            &Visibility { public_read },
        )
        .await
    }

    pub async fn quota(&self, namespace: &str) -> anyhow::Result<QuotaView> {
        self.get(&format!("api/v1/namespaces/{}/quota", segment(namespace)))
            .await
    }

    pub async fn set_quota(&self, namespace: &str, quota: &Quota) -> anyhow::Result<QuotaView> {
        self.send_json(
            reqwest::Method::PUT,
            &format!("api/v1/namespaces/{}/quota", segment(namespace)),
            quota,
        )
        .await
    }

    /// Mints a token; its value is in the answer only.
    pub async fn create_token(&self, token: &NewToken) -> anyhow::Result<TokenCreated> {
        self.send_json(reqwest::Method::POST, "api/v1/tokens", token)
            .await
    }

    /// The caller's tokens, never their values; with `all` (server
    /// admins), every subject's.
    pub async fn tokens(&self, all: bool) -> anyhow::Result<Tokens> {
        self.get(if all {
            "api/v1/tokens?all=true"
        } else {
            "api/v1/tokens"
        })
        .await
    }

    pub async fn revoke_token(&self, id: &str) -> anyhow::Result<()> {
        self.send_empty(
            reqwest::Method::DELETE,
            &format!("api/v1/tokens/{}", segment(id)),
        )
        .await
    }

    /// Every environment of `namespace`, across pages.
    pub async fn environments(&self, namespace: &str) -> anyhow::Result<Vec<EnvironmentSummary>> {
        let mut environments = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let mut path = format!("api/v1/namespaces/{}/environments", segment(namespace));
            if let Some(after) = &after {
                path.push_str(&format!("?after={}", segment(after)));
            }
            let page: EnvironmentsPage = self.get(&path).await?;
            environments.extend(page.environments);
            match page.next_after {
                Some(next) if after.as_deref() != Some(next.as_str()) => after = Some(next),
                _ => return Ok(environments),
            }
        }
    }

    /// Every build of `NAMESPACE/NAME`, newest first, with who submitted
    /// it (all pages in one, `next_after` null).
    pub async fn environment_builds(&self, environment: &str) -> anyhow::Result<BuildsPage> {
        let base = format!("{}/builds", environment_path(environment)?);
        let mut page: BuildsPage = self.get(&base).await?;
        while let Some(after) = page.next_after.take() {
            let next: BuildsPage = self
                .get(&format!("{base}?after={}", segment(&after)))
                .await?;
            let stuck = next.next_after.as_deref() == Some(after.as_str());
            page.builds.extend(next.builds);
            page.next_after = next.next_after.filter(|_| !stuck);
        }
        Ok(page)
    }

    /// Makes a succeeded build current (`PUT …/current`); a build whose
    /// prefix was collected answers with the rebuild that restores it.
    pub async fn set_current(
        &self,
        environment: &str,
        build_id: &str,
    ) -> anyhow::Result<CurrentBuildSet> {
        self.send_json(
            reqwest::Method::PUT,
            &format!("{}/current", environment_path(environment)?),
            &CurrentBuild {
                build_id: build_id.to_owned(),
            },
        )
        .await
    }

    pub async fn delete_environment(
        &self,
        environment: &str,
    ) -> anyhow::Result<EnvironmentDeleted> {
        let response = self
            .request(reqwest::Method::DELETE, &environment_path(environment)?)?
            .send()
            .await
            .context("the server did not answer")?;
        expect_success(response).await
    }

    /// The spec text a build was submitted with, as received, and its
    /// content type.
    pub async fn build_spec(&self, build_id: &str) -> anyhow::Result<(String, String)> {
        let response = self
            .request(
                reqwest::Method::GET,
                &format!("api/v1/builds/{}/spec", segment(build_id)),
            )?
            .send()
            .await
            .context("the server did not answer")?;
        if !response.status().is_success() {
            return Err(problem(response).await);
        }
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        Ok((content_type, response.text().await?))
    }

    /// A build's log as text: the published one, or what it has so far.
    pub async fn build_log(&self, build_id: &str) -> anyhow::Result<String> {
        let response = self
            .request(
                reqwest::Method::GET,
                &format!("api/v1/builds/{}/log", segment(build_id)),
            )?
            .send()
            .await
            .context("the server did not answer")?;
        if !response.status().is_success() {
            return Err(problem(response).await);
        }
        Ok(response.text().await?)
    }

    /// Follows a build's log (its event stream) until the build ends,
    /// handing each line to `on_event` as it comes.
    pub async fn follow_log(
        &self,
        build_id: &str,
        mut on_event: impl FnMut(LogEvent),
    ) -> anyhow::Result<LogEnd> {
        let mut response = self
            .request(
                reqwest::Method::GET,
                &format!("api/v1/builds/{}/log", segment(build_id)),
            )?
            .header(reqwest::header::ACCEPT, "text/event-stream")
            .send()
            .await
            .context("the server did not answer")?;
        if !response.status().is_success() {
            return Err(problem(response).await);
        }
        let mut events = EventParser::default();
        while let Ok(Some(chunk)) = response.chunk().await {
            for event in events.feed(&chunk) {
                match event.name.as_str() {
                    "line" => on_event(LogEvent::Line(event.data)),
                    "reset" => on_event(LogEvent::Reset),
                    "end" => return Ok(LogEnd::Ended),
                    "closed" => {
                        let reason = serde_json::from_str::<serde_json::Value>(&event.data)
                            .ok()
                            .and_then(|closed| closed["reason"].as_str().map(str::to_owned))
                            .unwrap_or(event.data);
                        return Ok(LogEnd::Closed(reason));
                    }
                    _ => {}
                }
            }
        }
        Ok(LogEnd::Broken)
    }

    /// Cancels a queued build, or asks a running one to stop.
    pub async fn cancel_build(&self, build_id: &str) -> anyhow::Result<BuildCancelled> {
        let response = self
            .request(
                reqwest::Method::POST,
                &format!("api/v1/builds/{}/cancel", segment(build_id)),
            )?
            .send()
            .await
            .context("the server did not answer")?;
        expect_success(response).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_percent_encoded() {
        assert_eq!(segment("team-ml"), "team-ml");
        assert_eq!(
            segment("user:alice@example.org"),
            "user%3Aalice%40example.org"
        );
        assert_eq!(segment("a/b c"), "a%2Fb%20c");
        assert_eq!(segment("é"), "%C3%A9");
    }
}
