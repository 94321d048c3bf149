//! `GET /api/v1/openapi.json`: the OpenAPI document generated from the
//! handlers, with every route the server answers documented.

use std::collections::BTreeSet;

use envstore_tests::{DemoChannel, TestServer};
use reqwest::StatusCode;
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_is_in_the_openapi_document_with_its_parameters_and_answers() {
    let channel = DemoChannel::start().await;
    let server = TestServer::start(vec![channel.allowed_as("demo")]).await;
    // Anyone may read it, as a client generator would.
    let response = server
        .client
        .get(server.url("/api/v1/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let document: Value = response.json().await.unwrap();
    assert!(
        document["openapi"].as_str().unwrap().starts_with("3."),
        "{}",
        document["openapi"]
    );
    assert_eq!(document["info"]["title"], "envstore");
    assert_eq!(
        document["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    assert!(document["components"]["schemas"]["Problem"].is_object());

    let served: BTreeSet<(String, String)> = envstore_api::routes()
        .into_iter()
        .map(|(method, path)| (method.as_str().to_lowercase(), path))
        .collect();
    let mut documented = BTreeSet::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            documented.insert((method.clone(), path.clone()));
            let at = format!("{method} {path}");
            assert!(
                operation["summary"]
                    .as_str()
                    .is_some_and(|summary| !summary.is_empty()),
                "{at} has a summary"
            );
            assert!(
                operation["tags"]
                    .as_array()
                    .is_some_and(|tags| !tags.is_empty()),
                "{at} has a tag"
            );
            let responses = operation["responses"].as_object().unwrap();
            assert!(
                responses.keys().any(|status| status.starts_with('2')),
                "{at} documents its success"
            );
            assert!(
                operation["security"].is_array(),
                "{at} says who may call it"
            );
            // Every `{parameter}` of the path is declared as a path parameter.
            let declared: BTreeSet<&str> = operation["parameters"]
                .as_array()
                .map(|parameters| {
                    parameters
                        .iter()
                        .filter(|p| p["in"] == "path")
                        .map(|p| p["name"].as_str().unwrap())
                        .collect()
                })
                .unwrap_or_default();
            let in_path: BTreeSet<&str> = path
                .split('/')
                .filter_map(|part| part.strip_prefix('{')?.strip_suffix('}'))
                .collect();
            assert_eq!(declared, in_path, "{at}");
        }
    }
    assert_eq!(
        served, documented,
        "the routes served and the routes documented are the same"
    );
    // A few routes by name, so an empty table cannot pass.
    for (method, path) in [
        ("put", "/api/v1/namespaces/{namespace}/environments/{name}"),
        ("get", "/api/v1/locks/{lock_hash}/{file}"),
        ("delete", "/api/v1/namespaces/{namespace}"),
        ("get", "/api/v1/openapi.json"),
        ("get", "/metrics"),
    ] {
        assert!(
            documented.contains(&(method.to_owned(), path.to_owned())),
            "{method} {path}"
        );
    }
    let submit = &document["paths"]["/api/v1/namespaces/{namespace}/environments/{name}"]["put"];
    assert!(
        submit["requestBody"]["content"]["application/yaml"].is_object(),
        "{submit:#}"
    );
    assert_eq!(
        submit["responses"]["422"]["content"]["application/problem+json"]["schema"]["$ref"],
        "#/components/schemas/Problem"
    );
    // Every request and response body has a real schema, so a typed client
    // can be generated from the document the server serves.
    let untyped = envstore_api::openapi::untyped_bodies(&document);
    assert!(
        untyped.is_empty(),
        "{} bodies have no real schema:\n{}",
        untyped.len(),
        untyped.join("\n")
    );
    for (path, method, status, schema) in [
        ("/api/v1/builds/{id}", "get", "200", "BuildView"),
        ("/api/v1/usage", "get", "200", "UsageTable"),
        ("/api/v1/namespaces", "get", "200", "NamespacesPage"),
    ] {
        assert_eq!(
            document["paths"][path][method]["responses"][status]["content"]["application/json"]["schema"]
                ["$ref"],
            format!("#/components/schemas/{schema}"),
            "{method} {path}"
        );
    }
    server.stop().await;
}
