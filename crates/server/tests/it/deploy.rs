//! The deployment files in `deploy/` against the real program. The
//! Kubernetes overlays are read as `kubectl apply -k` sends them (rendered
//! by `kubectl kustomize`): every `envstore` command line in them parses
//! with the CLI's own definition, every variable they set is one the CLI
//! reads (with a value it accepts), probes, scrape annotations and
//! ServiceMonitors point at routes that are served, the Ingress, the
//! PodDisruptionBudgets, volumes, claims, ConfigMap and Secret keys hold
//! together, and every pod runs locked down. The JupyterHub values, the
//! systemd units and the Containerfile are checked the same way.
//!
//! Without kubectl (or kustomize) the Kubernetes tests say so and pass,
//! except under `CI`, where they fail.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use clap::{CommandFactory, Parser};
use envstore_server::args::{Cli, Command, KernelsCommand};
use envstore_server::config::FileConfig;
use serde::Deserialize as _;
use serde_yaml::Value;

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn deploy_dir() -> PathBuf {
    repository().join("deploy")
}

fn read(path: &Path) -> String {
    fs_err::read_to_string(path).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

/// One YAML document of a manifest.
struct Manifest {
    origin: String,
    document: Value,
}

impl Manifest {
    fn kind(&self) -> &str {
        self.document["kind"].as_str().unwrap_or_default()
    }

    fn api_version(&self) -> &str {
        self.document["apiVersion"].as_str().unwrap_or_default()
    }

    fn name(&self) -> &str {
        self.document["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
    }

    /// The pod template of a Deployment or a CronJob.
    fn pod_template(&self) -> Option<&Value> {
        match self.kind() {
            "Deployment" => Some(&self.document["spec"]["template"]),
            "CronJob" => Some(&self.document["spec"]["jobTemplate"]["spec"]["template"]),
            _ => None,
        }
    }

    fn pod(&self) -> &Value {
        &self
            .pod_template()
            .unwrap_or_else(|| panic!("{self}: no pod template"))["spec"]
    }

    fn containers(&self) -> &Vec<Value> {
        self.pod()["containers"]
            .as_sequence()
            .unwrap_or_else(|| panic!("{self}: containers"))
    }
}

impl std::fmt::Display for Manifest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {} {}", self.origin, self.kind(), self.name())
    }
}

fn documents(origin: &str, text: &str) -> Vec<Manifest> {
    let mut manifests = Vec::new();
    for document in serde_yaml::Deserializer::from_str(text) {
        let document =
            Value::deserialize(document).unwrap_or_else(|error| panic!("{origin}: {error}"));
        if !document.is_null() {
            manifests.push(Manifest {
                origin: origin.to_owned(),
                document,
            });
        }
    }
    manifests
}

/// A kustomize overlay, rendered, with the Secret its example describes.
struct Overlay {
    name: &'static str,
    manifests: Vec<Manifest>,
    /// The keys of `secret.example.yaml`: what the Secret must hold.
    secret: Manifest,
}

impl Overlay {
    fn of_kind(&self, kind: &str) -> Vec<&Manifest> {
        self.manifests
            .iter()
            .filter(|manifest| manifest.kind() == kind)
            .collect()
    }

    fn only(&self, kind: &str) -> &Manifest {
        let [one] = self
            .of_kind(kind)
            .try_into()
            .unwrap_or_else(|found: Vec<_>| {
                panic!("{}: {} {kind}, not one", self.name, found.len())
            });
        one
    }

    fn named(&self, kind: &str, name: &str) -> &Manifest {
        self.of_kind(kind)
            .into_iter()
            .find(|manifest| manifest.name() == name)
            .unwrap_or_else(|| panic!("{}: no {kind} {name}", self.name))
    }

    fn workloads(&self) -> Vec<&Manifest> {
        self.manifests
            .iter()
            .filter(|manifest| manifest.pod_template().is_some())
            .collect()
    }

    fn config(&self) -> BTreeMap<String, String> {
        serde_yaml::from_value(self.only("ConfigMap").document["data"].clone()).unwrap()
    }

    fn data_dir(&self) -> String {
        let data_dir = self.config()["data-dir"].clone();
        assert!(data_dir.starts_with('/'), "{data_dir}");
        data_dir
    }

    fn secret_keys(&self) -> BTreeSet<String> {
        let data: BTreeMap<String, String> =
            serde_yaml::from_value(self.secret.document["stringData"].clone()).unwrap();
        data.into_keys().collect()
    }

    /// The one Deployment whose container runs `envstore <subcommand>`.
    fn running(&self, subcommand: &str) -> Option<&Manifest> {
        let mut found = self.of_kind("Deployment").into_iter().filter(|deployment| {
            deployment.containers().iter().any(|container| {
                command_line(container).get(1).map(String::as_str) == Some(subcommand)
            })
        });
        let first = found.next();
        assert!(
            found.next().is_none(),
            "{}: one Deployment runs {subcommand}",
            self.name
        );
        first
    }
}

const OVERLAYS: [&str; 2] = ["embedded", "distributed"];

/// Renders an overlay with `kubectl kustomize` (or `kustomize build`),
/// taking kubectl from PATH or where `scripts/validate-manifests.sh`
/// installs it; None when there is none.
fn render(folder: &Path) -> Option<String> {
    let folder = folder.to_str().unwrap();
    let installed = repository().join("target/kubectl/kubectl");
    let installed = installed.to_str().unwrap();
    for program in [
        ["kubectl", "kustomize"],
        [installed, "kustomize"],
        ["kustomize", "build"],
    ] {
        match std::process::Command::new(program[0])
            .args([program[1], folder])
            .output()
        {
            Ok(output) => {
                assert!(
                    output.status.success(),
                    "{} {folder} failed:\n{}",
                    program.join(" "),
                    String::from_utf8_lossy(&output.stderr)
                );
                return Some(String::from_utf8(output.stdout).unwrap());
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => panic!("{}: {error}", program[0]),
        }
    }
    None
}

/// Both overlays, rendered once per test process; None, said by each test
/// that asks, when they cannot be rendered here, which CI does not allow.
fn overlays() -> Option<&'static [Overlay]> {
    static OVERLAYS_RENDERED: OnceLock<Option<Vec<Overlay>>> = OnceLock::new();
    let rendered = OVERLAYS_RENDERED
        .get_or_init(|| {
            let mut rendered = Vec::new();
            for name in OVERLAYS {
                let folder = deploy_dir().join("kubernetes/overlays").join(name);
                let Some(text) = render(&folder) else {
                    assert!(
                        std::env::var_os("CI").is_none(),
                        "CI needs kubectl (or kustomize) to render deploy/kubernetes/overlays: scripts/validate-manifests.sh installs it"
                    );
                    return None;
                };
                let secret_path = folder.join("secret.example.yaml");
                let [secret]: [Manifest; 1] = documents(
                    &format!("overlays/{name}/secret.example.yaml"),
                    &read(&secret_path),
                )
                .try_into()
                .unwrap_or_else(|_| panic!("{}: one Secret", secret_path.display()));
                rendered.push(Overlay {
                    name,
                    manifests: documents(&format!("overlays/{name}"), &text),
                    secret,
                });
            }
            Some(rendered)
        })
        .as_deref();
    if rendered.is_none() {
        eprintln!(
            "skipped: no kubectl (nor kustomize), so the Kubernetes overlays are not checked: install kubectl 1.32 or newer, or run scripts/validate-manifests.sh, which installs it under target/"
        );
    }
    rendered
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_sequence()
        .map(|items| {
            items
                .iter()
                .map(|item| item.as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The command line a container runs: its command, then its args.
fn command_line(container: &Value) -> Vec<String> {
    let mut argv = strings(&container["command"]);
    argv.extend(strings(&container["args"]));
    argv
}

fn parse(argv: &[String]) -> Cli {
    Cli::try_parse_from(argv).unwrap_or_else(|error| panic!("{argv:?} does not parse:\n{error}"))
}

/// Every variable the CLI reads for `subcommand`, with the flag it stands for.
fn cli_variables(subcommand: &str) -> BTreeMap<String, String> {
    let root = Cli::command();
    let sub = root
        .find_subcommand(subcommand)
        .unwrap_or_else(|| panic!("no subcommand {subcommand}"))
        .clone();
    root.get_arguments()
        .chain(sub.get_arguments())
        .filter_map(|argument| {
            let variable = argument.get_env()?.to_str()?.to_owned();
            Some((variable, argument.get_long()?.to_owned()))
        })
        .collect()
}

/// Variables read outside clap: the log filter, S3's settings, which the
/// object store reads itself, and the identity provider's client secret,
/// which `[oidc]` reads.
fn read_elsewhere(variable: &str) -> bool {
    variable == "ENVSTORE_LOG"
        || variable.starts_with("AWS_")
        || variable == envstore_api::oidc::CLIENT_SECRET_ENV
}

/// Checks that `variable` is one the CLI reads for `argv`'s subcommand and,
/// when its value is known, that the CLI accepts it.
fn check_variable(argv: &[String], variable: &str, value: Option<&str>) {
    let subcommand = &argv[1];
    let known = cli_variables(subcommand);
    match known.get(variable) {
        Some(long) => {
            if let Some(value) = value {
                let mut with_value = argv.to_vec();
                with_value.extend([format!("--{long}"), value.to_owned()]);
                Cli::try_parse_from(&with_value).unwrap_or_else(|error| {
                    panic!("{variable}={value} is refused by `{subcommand}`:\n{error}")
                });
            }
        }
        None => assert!(
            read_elsewhere(variable),
            "`envstore {subcommand}` reads no variable {variable}"
        ),
    }
}

/// Where a container's variable comes from.
enum Source {
    Config(String),
    Secret(String),
    Literal(String),
}

/// A container's variables, by name, each with its source, checked against
/// the overlay's ConfigMap and Secret: the names match and the keys exist.
fn variables(
    overlay: &Overlay,
    workload: &Manifest,
    container: &Value,
) -> BTreeMap<String, Source> {
    let config = overlay.config();
    let secrets = overlay.secret_keys();
    let mut found = BTreeMap::new();
    for variable in container["env"].as_sequence().cloned().unwrap_or_default() {
        let name = variable["name"].as_str().unwrap().to_owned();
        let from = &variable["valueFrom"];
        let source = if let Some(reference) = from.get("configMapKeyRef") {
            assert_eq!(
                reference["name"].as_str(),
                Some(overlay.only("ConfigMap").name()),
                "{workload}: {name}"
            );
            let key = reference["key"].as_str().unwrap();
            Source::Config(
                config
                    .get(key)
                    .unwrap_or_else(|| panic!("{workload}: {name}: the ConfigMap has no key {key}"))
                    .clone(),
            )
        } else if let Some(reference) = from.get("secretKeyRef") {
            assert_eq!(
                reference["name"].as_str(),
                Some(overlay.secret.name()),
                "{workload}: {name}"
            );
            let key = reference["key"].as_str().unwrap();
            assert!(
                secrets.contains(key),
                "{workload}: {name}: the Secret has no key {key}"
            );
            Source::Secret(key.to_owned())
        } else {
            Source::Literal(
                variable["value"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{workload}: {name} has no value"))
                    .to_owned(),
            )
        };
        assert!(
            found.insert(name.clone(), source).is_none(),
            "{workload}: {name} twice"
        );
    }
    found
}

fn check_file_config(text: &str, origin: &str) -> FileConfig {
    let config: FileConfig =
        toml::from_str(text).unwrap_or_else(|error| panic!("{origin}: {error}"));
    config
        .policy
        .validate()
        .unwrap_or_else(|error| panic!("{origin}: {error}"));
    assert!(
        !config.channels.is_empty(),
        "{origin} allows channels: without any, every build is refused"
    );
    config
}

/// Whether `selector` (a label map) selects something labelled `labels`.
fn selects(selector: &Value, labels: &Value) -> bool {
    let selector = selector
        .as_mapping()
        .unwrap_or_else(|| panic!("a selector: {selector:?}"));
    !selector.is_empty()
        && selector
            .iter()
            .all(|(key, value)| labels.get(key) == Some(value))
}

fn pod_labels(workload: &Manifest) -> &Value {
    &workload.pod_template().unwrap()["metadata"]["labels"]
}

#[test]
fn the_overlays_render_kinds_a_cluster_with_the_prometheus_operator_knows() {
    let Some(overlays) = overlays() else { return };
    let known: BTreeSet<(&str, &str)> = [
        ("v1", "ConfigMap"),
        ("v1", "PersistentVolumeClaim"),
        ("v1", "Service"),
        ("apps/v1", "Deployment"),
        ("batch/v1", "CronJob"),
        ("policy/v1", "PodDisruptionBudget"),
        ("networking.k8s.io/v1", "Ingress"),
        ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ]
    .into();
    for overlay in overlays {
        let mut names = BTreeSet::new();
        for manifest in &overlay.manifests {
            assert!(
                known.contains(&(manifest.api_version(), manifest.kind())),
                "{manifest}: {}",
                manifest.api_version()
            );
            assert!(!manifest.name().is_empty(), "{manifest}: a name");
            assert!(
                names.insert((manifest.kind(), manifest.name())),
                "{manifest} twice"
            );
            assert_eq!(
                manifest.document["metadata"]["labels"]["app.kubernetes.io/part-of"].as_str(),
                Some("envstore"),
                "{manifest}: labelled as part of envstore"
            );
        }
        for kind in ["ConfigMap", "PersistentVolumeClaim", "Ingress", "CronJob"] {
            overlay.only(kind);
        }
        assert!(
            !overlay.of_kind("ServiceMonitor").is_empty(),
            "{}",
            overlay.name
        );

        // Credentials are never applied from the repository: the Secret is
        // an example with placeholders, created by the operator.
        assert_eq!(overlay.secret.kind(), "Secret");
        let example: BTreeMap<String, String> =
            serde_yaml::from_value(overlay.secret.document["stringData"].clone()).unwrap();
        for (key, value) in &example {
            assert!(
                value.contains("CHANGE-ME"),
                "{}: {key} holds a placeholder, not a value",
                overlay.secret
            );
        }
    }
}

#[test]
fn the_overlays_are_the_shapes_they_say() {
    let Some(overlays) = overlays() else { return };
    for overlay in overlays {
        let api = overlay.running("serve").expect("an API Deployment");
        let Command::Serve(serve) = parse(&command_line(&api.containers()[0])).command else {
            unreachable!()
        };
        let replicas = api.document["spec"]["replicas"].as_u64().unwrap();
        let claim = overlay.only("PersistentVolumeClaim");
        let access = strings(&claim.document["spec"]["accessModes"]);
        let mut sets = BTreeSet::new();
        for workload in overlay.workloads() {
            for container in workload.containers() {
                sets.extend(variables(overlay, workload, container).into_keys());
            }
        }
        match overlay.name {
            "embedded" => {
                assert_eq!(replicas, 1, "one pod: SQLite and a local folder");
                assert_eq!(
                    api.document["spec"]["strategy"]["type"], "Recreate",
                    "the old pod lets go of the volume before the new one starts"
                );
                assert!(
                    serve.node.workers.is_some_and(|workers| workers > 0),
                    "builds run in the API process"
                );
                assert!(overlay.running("worker").is_none());
                assert_eq!(access, ["ReadWriteOnce"]);
                // SQLite in the data folder and the artifact folder beside it:
                // the CLI's defaults, so nothing names another.
                for variable in ["ENVSTORE_DATABASE", "ENVSTORE_STORE"] {
                    assert!(!sets.contains(variable), "embedded sets {variable}");
                }
                let argv = command_line(&api.containers()[0]);
                assert!(
                    !argv
                        .iter()
                        .any(|arg| arg == "--database" || arg == "--store"),
                    "{argv:?}"
                );
            }
            "distributed" => {
                assert!(replicas >= 2, "API pods are replicated");
                assert_eq!(serve.node.workers, Some(0), "API pods build nothing");
                let worker = overlay.running("worker").expect("a worker Deployment");
                let Command::Worker(workers) =
                    parse(&command_line(&worker.containers()[0])).command
                else {
                    unreachable!()
                };
                assert!(workers.node.workers.is_some_and(|workers| workers > 0));
                assert_eq!(access, ["ReadWriteMany"], "every pod shares prefixes");
                assert!(
                    overlay.config()["store-url"].starts_with("s3://"),
                    "artifacts in S3"
                );
                // Every pod reaches PostgreSQL and S3 with the Secret's keys.
                for workload in overlay.workloads() {
                    for container in workload.containers() {
                        let variables = variables(overlay, workload, container);
                        for (variable, key) in [
                            ("ENVSTORE_DATABASE", "database-url"),
                            ("AWS_ACCESS_KEY_ID", "aws-access-key-id"),
                            ("AWS_SECRET_ACCESS_KEY", "aws-secret-access-key"),
                        ] {
                            assert!(
                                matches!(variables.get(variable), Some(Source::Secret(found)) if found == key),
                                "{workload}: {variable} from the Secret's {key}"
                            );
                        }
                        assert!(
                            matches!(variables.get("ENVSTORE_STORE"), Some(Source::Config(url)) if url.starts_with("s3://")),
                            "{workload}: the S3 store"
                        );
                    }
                }
                let example: BTreeMap<String, String> =
                    serde_yaml::from_value(overlay.secret.document["stringData"].clone()).unwrap();
                assert!(example["database-url"].starts_with("postgres://"));
            }
            other => panic!("an overlay this test does not know: {other}"),
        }
    }
}

#[test]
fn every_container_runs_an_envstore_command_line_the_cli_accepts() {
    let Some(overlays) = overlays() else { return };
    for overlay in overlays {
        let mut subcommands = BTreeSet::new();
        for workload in overlay.workloads() {
            for container in workload.containers() {
                let argv = command_line(container);
                assert_eq!(
                    argv.first().map(String::as_str),
                    Some("envstore"),
                    "{workload}"
                );
                parse(&argv);
                subcommands.insert(argv[1].clone());
                for (name, source) in variables(overlay, workload, container) {
                    let value = match &source {
                        Source::Config(value) | Source::Literal(value) => Some(value.as_str()),
                        Source::Secret(_) => None,
                    };
                    check_variable(&argv, &name, value);
                }
            }
        }
        let expected: &[&str] = match overlay.name {
            "embedded" => &["gc", "serve"],
            _ => &["gc", "serve", "worker"],
        };
        assert_eq!(
            subcommands,
            expected.iter().map(|name| (*name).to_owned()).collect(),
            "{}",
            overlay.name
        );
    }
}

/// The port a probe, a Service or an annotation names, as a number: named
/// ports are looked up among the container's ports.
fn port_number(container: &Value, port: &Value) -> u64 {
    if let Some(number) = port.as_u64() {
        return number;
    }
    let name = port.as_str().unwrap();
    container["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|declared| declared["name"].as_str() == Some(name))
        .and_then(|declared| declared["containerPort"].as_u64())
        .unwrap_or_else(|| panic!("no container port named {name}"))
}

/// The GET paths the node a workers-only pod runs answers with 200: it is
/// given a database, a store and a data folder that work, so `/ready` is
/// served as the real one is.
async fn worker_node_serves(path: &str) -> bool {
    let dir = tempfile::tempdir().unwrap();
    let db = envstore_db::Database::connect(&format!(
        "sqlite://{}",
        dir.path().join("envstore.db").display()
    ))
    .await
    .unwrap();
    let store_dir = dir.path().join("artifacts");
    fs_err::create_dir_all(&store_dir).unwrap();
    let store =
        envstore_store::ArtifactStore::open(&url::Url::from_directory_path(&store_dir).unwrap())
            .unwrap();
    let readiness = envstore_api::readiness::Readiness {
        db,
        store,
        data_dir: dir.path().to_owned(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        axum::serve(
            listener,
            envstore_api::prometheus::worker_router_with_readiness(readiness),
        )
        .await
    });
    let status = reqwest::get(format!("http://{address}{path}"))
        .await
        .unwrap()
        .status();
    server.abort();
    status == reqwest::StatusCode::OK
}

/// What a container listens on, and whether it serves GET `path` there.
struct Listener {
    port: u16,
    api: bool,
}

impl Listener {
    fn of(workload: &Manifest, container: &Value) -> Self {
        match parse(&command_line(container)).command {
            Command::Serve(serve) => Self {
                port: serve.bind.expect("API pods bind all interfaces").port(),
                api: true,
            },
            Command::Worker(worker) => Self {
                port: worker
                    .metrics_bind
                    .expect("worker pods serve metrics")
                    .port(),
                api: false,
            },
            _ => panic!("{workload}: neither serve nor worker"),
        }
    }

    async fn serves(&self, path: &str) -> bool {
        if self.api {
            envstore_api::routes()
                .into_iter()
                .any(|(method, route)| method == reqwest::Method::GET && route == path)
        } else {
            worker_node_serves(path).await
        }
    }
}

#[tokio::test]
async fn probes_and_scrape_annotations_point_at_served_routes() {
    let Some(overlays) = overlays() else { return };
    for overlay in overlays {
        for deployment in overlay.of_kind("Deployment") {
            let [container] = deployment.containers().as_slice() else {
                panic!("{deployment}: one container");
            };
            let listener = Listener::of(deployment, container);
            let annotations = &deployment.pod_template().unwrap()["metadata"]["annotations"];
            assert_eq!(
                annotations["prometheus.io/scrape"].as_str(),
                Some("true"),
                "{deployment}"
            );
            let scrape_port: u64 = annotations["prometheus.io/port"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap();
            assert_eq!(
                scrape_port,
                u64::from(listener.port),
                "{deployment}: scrape port"
            );
            let scrape_path = annotations["prometheus.io/path"].as_str().unwrap();
            assert!(
                listener.serves(scrape_path).await,
                "{deployment}: {scrape_path} is not served"
            );

            for probe in ["startupProbe", "livenessProbe", "readinessProbe"] {
                let get = &container
                    .get(probe)
                    .unwrap_or_else(|| panic!("{deployment}: a {probe}"))["httpGet"];
                let path = get["path"].as_str().unwrap();
                assert!(
                    listener.serves(path).await,
                    "{deployment}: the {probe} asks for {path}, which is not served"
                );
                assert_eq!(
                    port_number(container, &get["port"]),
                    u64::from(listener.port),
                    "{deployment}: {probe} port"
                );
            }
            // Restart on a dead process only; leave rotation when the
            // database or the store does not answer. The startup probe
            // waits for the port, which opens after migrations.
            for (probe, path) in [
                ("startupProbe", "/health"),
                ("livenessProbe", "/health"),
                ("readinessProbe", "/ready"),
            ] {
                assert_eq!(
                    container[probe]["httpGet"]["path"].as_str(),
                    Some(path),
                    "{deployment}: {probe}"
                );
            }
            let startup = &container["startupProbe"];
            let patience = startup["periodSeconds"].as_u64().unwrap_or(10)
                * startup["failureThreshold"].as_u64().unwrap_or(3);
            assert!(
                patience >= 300,
                "{deployment}: migrations get {patience} s before liveness takes over"
            );
            let resources = &container["resources"];
            assert!(
                resources["requests"].get("cpu").is_some()
                    && resources["requests"].get("memory").is_some()
                    && resources["limits"].get("memory").is_some(),
                "{deployment}: resource requests and a memory limit"
            );
        }
    }
}

/// The Service ports a ServiceMonitor endpoint or an Ingress backend names
/// lead to a container that serves `path`.
async fn check_service_port(overlay: &Overlay, service: &Manifest, port_name: &str, path: &str) {
    let port = service.document["spec"]["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|port| port["name"].as_str() == Some(port_name))
        .unwrap_or_else(|| panic!("{service} has no port named {port_name}"));
    let selected: Vec<&Manifest> = overlay
        .of_kind("Deployment")
        .into_iter()
        .filter(|deployment| {
            selects(
                &service.document["spec"]["selector"],
                pod_labels(deployment),
            )
        })
        .collect();
    let [deployment] = selected.as_slice() else {
        panic!("{service} selects {} Deployments", selected.len());
    };
    let container = &deployment.containers()[0];
    let listener = Listener::of(deployment, container);
    assert_eq!(
        port_number(container, &port["targetPort"]),
        u64::from(listener.port),
        "{service}: port {port_name} reaches {deployment}'s listener"
    );
    assert!(
        listener.serves(path).await,
        "{service}: {path} is not served behind port {port_name}"
    );
}

#[tokio::test]
async fn service_monitors_scrape_every_metrics_endpoint() {
    let Some(overlays) = overlays() else { return };
    for overlay in overlays {
        // The pod selectors of the Services that are scraped.
        let mut scraped = Vec::new();
        for monitor in overlay.of_kind("ServiceMonitor") {
            let selector = &monitor.document["spec"]["selector"]["matchLabels"];
            let services: Vec<&Manifest> = overlay
                .of_kind("Service")
                .into_iter()
                .filter(|service| selects(selector, &service.document["metadata"]["labels"]))
                .collect();
            assert!(!services.is_empty(), "{monitor} selects no Service");
            let endpoints = monitor.document["spec"]["endpoints"].as_sequence().unwrap();
            assert!(!endpoints.is_empty(), "{monitor}: endpoints");
            for service in services {
                for endpoint in endpoints {
                    let path = endpoint["path"].as_str().unwrap_or("/metrics");
                    check_service_port(overlay, service, endpoint["port"].as_str().unwrap(), path)
                        .await;
                    scraped.push(service.document["spec"]["selector"].clone());
                }
            }
        }
        // Every Deployment that serves metrics is behind a monitored Service.
        for deployment in overlay.of_kind("Deployment") {
            assert!(
                scraped
                    .iter()
                    .any(|selector| selects(selector, pod_labels(deployment))),
                "{deployment}: no ServiceMonitor scrapes it"
            );
        }
    }
}

#[tokio::test]
async fn the_ingress_terminates_tls_and_sends_traffic_to_the_api() {
    let Some(overlays) = overlays() else { return };
    for overlay in overlays {
        let ingress = overlay.only("Ingress");
        let spec = &ingress.document["spec"];
        let tls = spec["tls"].as_sequence().expect("a tls section");
        assert!(!tls.is_empty(), "{ingress}: tls");
        let mut tls_hosts = BTreeSet::new();
        for entry in tls {
            assert!(
                entry["secretName"]
                    .as_str()
                    .is_some_and(|name| !name.is_empty()),
                "{ingress}: each tls entry names its certificate's Secret"
            );
            tls_hosts.extend(strings(&entry["hosts"]));
        }
        let rules = spec["rules"].as_sequence().unwrap();
        assert!(!rules.is_empty());
        for rule in rules {
            let host = rule["host"].as_str().expect("rules name their host");
            assert!(
                tls_hosts.contains(host),
                "{ingress}: {host} is served without TLS"
            );
            for path in rule["http"]["paths"].as_sequence().unwrap() {
                let backend = &path["backend"]["service"];
                let service = overlay.named("Service", backend["name"].as_str().unwrap());
                let port_name = backend["port"]["name"]
                    .as_str()
                    .expect("backends name the Service port");
                // The web UI's sign-in page and the API behind one host.
                check_service_port(overlay, service, port_name, "/health").await;
                let api = overlay.running("serve").unwrap();
                assert!(selects(
                    &service.document["spec"]["selector"],
                    pod_labels(api)
                ));
            }
        }
    }
}

#[test]
fn disruption_budgets_cover_every_deployment_and_never_block_a_drain() {
    let Some(overlays) = overlays() else { return };
    for overlay in overlays {
        let budgets = overlay.of_kind("PodDisruptionBudget");
        for deployment in overlay.of_kind("Deployment") {
            let covering: Vec<&&Manifest> = budgets
                .iter()
                .filter(|budget| {
                    selects(
                        &budget.document["spec"]["selector"]["matchLabels"],
                        pod_labels(deployment),
                    )
                })
                .collect();
            let [budget] = covering.as_slice() else {
                panic!("{deployment}: {} budgets", covering.len());
            };
            assert_eq!(
                &budget.document["spec"]["selector"]["matchLabels"],
                &deployment.document["spec"]["selector"]["matchLabels"],
                "{budget}: the Deployment's own selector"
            );
            let replicas = deployment.document["spec"]["replicas"].as_u64().unwrap();
            let spec = &budget.document["spec"];
            let evictable = match (
                spec["minAvailable"].as_u64(),
                spec["maxUnavailable"].as_u64(),
            ) {
                (Some(min), None) => replicas.saturating_sub(min),
                (None, Some(max)) => max.min(replicas),
                other => panic!(
                    "{budget}: one of minAvailable and maxUnavailable, as a number: {other:?}"
                ),
            };
            assert!(
                evictable >= 1,
                "{budget}: a node drain could never evict {deployment}"
            );
        }
    }
}

#[test]
fn every_pod_runs_locked_down() {
    let Some(overlays) = overlays() else { return };
    let image_user = containerfile_user();
    for overlay in overlays {
        for workload in overlay.workloads() {
            let pod = workload.pod();
            let security = &pod["securityContext"];
            assert_eq!(security["runAsNonRoot"].as_bool(), Some(true), "{workload}");
            assert_eq!(
                security["runAsUser"].as_u64(),
                Some(image_user),
                "{workload}: the image's user"
            );
            assert_eq!(
                security["seccompProfile"]["type"].as_str(),
                Some("RuntimeDefault"),
                "{workload}"
            );
            assert_eq!(
                pod["automountServiceAccountToken"].as_bool(),
                Some(false),
                "{workload}: envstore never calls the Kubernetes API"
            );
            // Service links would set ENVSTORE_PORT, ENVSTORE_SERVICE_HOST, …
            // for the `envstore` Service: the CLI's own variable namespace.
            assert_eq!(
                pod["enableServiceLinks"].as_bool(),
                Some(false),
                "{workload}: service links"
            );
            let empty_dirs: BTreeSet<&str> = pod["volumes"]
                .as_sequence()
                .unwrap()
                .iter()
                .filter(|volume| volume.get("emptyDir").is_some())
                .map(|volume| volume["name"].as_str().unwrap())
                .collect();
            for container in workload.containers() {
                let security = &container["securityContext"];
                assert_eq!(
                    security["allowPrivilegeEscalation"].as_bool(),
                    Some(false),
                    "{workload}"
                );
                assert_eq!(
                    security["readOnlyRootFilesystem"].as_bool(),
                    Some(true),
                    "{workload}"
                );
                assert_eq!(
                    strings(&security["capabilities"]["drop"]),
                    ["ALL"],
                    "{workload}"
                );
                // The root filesystem is read-only: temporary files need a
                // writable folder.
                assert!(
                    container["volumeMounts"]
                        .as_sequence()
                        .unwrap()
                        .iter()
                        .any(|mount| mount["mountPath"] == "/tmp"
                            && empty_dirs.contains(mount["name"].as_str().unwrap())),
                    "{workload}: an emptyDir at /tmp"
                );
            }
        }
    }
}

#[test]
fn volumes_claims_and_the_config_file_hold_together() {
    let Some(overlays) = overlays() else { return };
    for overlay in overlays {
        let config = overlay.config();
        let claim = overlay.only("PersistentVolumeClaim");
        let data_dir = overlay.data_dir();
        let file = check_file_config(&config["envstore.toml"], "the ConfigMap's envstore.toml");
        // Users sign in through the organisation's identity provider.
        let oidc = file.oidc.expect("[oidc]: the identity provider");
        assert!(
            oidc.issuer.starts_with("https://") && oidc.jwks_url.scheme() == "https",
            "{oidc:?}"
        );

        for workload in overlay.workloads() {
            let pod = workload.pod();
            let volumes: BTreeMap<String, &Value> = pod["volumes"]
                .as_sequence()
                .unwrap()
                .iter()
                .map(|volume| (volume["name"].as_str().unwrap().to_owned(), volume))
                .collect();
            for volume in volumes.values() {
                if let Some(claim_name) = volume["persistentVolumeClaim"]["claimName"].as_str() {
                    assert_eq!(claim_name, claim.name(), "{workload}");
                }
                if let Some(items) = volume["configMap"]["items"].as_sequence() {
                    assert_eq!(
                        volume["configMap"]["name"].as_str(),
                        Some(overlay.only("ConfigMap").name())
                    );
                    for item in items {
                        let key = item["key"].as_str().unwrap();
                        assert!(
                            config.contains_key(key),
                            "{workload}: the ConfigMap has no key {key}"
                        );
                    }
                }
            }
            for container in workload.containers() {
                let mut mounted_claim = false;
                for mount in container["volumeMounts"].as_sequence().unwrap() {
                    let name = mount["name"].as_str().unwrap();
                    let volume = volumes.get(name).unwrap_or_else(|| {
                        panic!("{workload}: mounts an undeclared volume {name}")
                    });
                    if volume.get("persistentVolumeClaim").is_some() {
                        mounted_claim = true;
                        assert_eq!(
                            mount["mountPath"].as_str(),
                            Some(data_dir.as_str()),
                            "{workload}: prefixes embed their path"
                        );
                    }
                }
                assert!(mounted_claim, "{workload}: mounts the data volume");
                let variables = variables(overlay, workload, container);
                assert!(
                    matches!(variables.get("ENVSTORE_DATA_DIR"), Some(Source::Config(dir)) if *dir == data_dir),
                    "{workload}: the data folder is where the volume is"
                );
                // The --config file the command line names is what the
                // ConfigMap volume puts there.
                let argv = command_line(container);
                let config_path = argv
                    .iter()
                    .skip_while(|arg| *arg != "--config")
                    .nth(1)
                    .expect("--config");
                let (folder, file) = config_path.rsplit_once('/').unwrap();
                let mount = container["volumeMounts"]
                    .as_sequence()
                    .unwrap()
                    .iter()
                    .find(|mount| mount["mountPath"].as_str() == Some(folder))
                    .unwrap_or_else(|| panic!("{workload}: nothing is mounted at {folder}"));
                let volume = volumes[mount["name"].as_str().unwrap()];
                let paths: Vec<&str> = volume["configMap"]["items"]
                    .as_sequence()
                    .unwrap()
                    .iter()
                    .filter_map(|item| item["path"].as_str())
                    .collect();
                assert!(
                    paths.contains(&file),
                    "{workload}: {config_path} is not in the mounted ConfigMap"
                );
            }
        }
    }
}

#[test]
fn garbage_collection_runs_on_a_schedule_over_the_prefixes_the_pods_use() {
    let Some(overlays) = overlays() else { return };
    for overlay in overlays {
        let cron = overlay.only("CronJob");
        assert_eq!(
            cron.document["spec"]["concurrencyPolicy"], "Forbid",
            "one collection at a time"
        );
        let [container] = cron.containers().as_slice() else {
            panic!("{cron}: one container")
        };
        let Command::Gc(gc) = &parse(&command_line(container)).command else {
            panic!("{cron} runs `envstore gc`")
        };
        assert!(
            !gc.dry_run && gc.keep_builds >= 1,
            "it collects, and keeps at least the newest build"
        );
        // The same data folder, database and store as the pods that build.
        let builder = overlay
            .running("worker")
            .or_else(|| overlay.running("serve"))
            .unwrap();
        let names = |workload: &Manifest, container: &Value| -> BTreeSet<String> {
            variables(overlay, workload, container)
                .into_keys()
                .filter(|name| {
                    ["ENVSTORE_DATA_DIR", "ENVSTORE_DATABASE", "ENVSTORE_STORE"]
                        .contains(&name.as_str())
                        || name.starts_with("AWS_")
                })
                .collect()
        };
        assert_eq!(
            names(cron, container),
            names(builder, &builder.containers()[0]),
            "{cron}: the builders' data folder, database and store"
        );
        if overlay.name == "embedded" {
            // A ReadWriteOnce volume is mounted on one node at a time: the
            // CronJob's pod must run where the API pod runs.
            let term = &cron.pod()["affinity"]["podAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
                [0];
            assert_eq!(term["topologyKey"], "kubernetes.io/hostname", "{cron}");
            let api = overlay.running("serve").unwrap();
            assert!(
                selects(&term["labelSelector"]["matchLabels"], pod_labels(api)),
                "{cron}: beside the API pod"
            );
        }
    }
}

#[test]
fn jupyterhub_user_pods_mount_the_environments_read_only_and_sync_kernels_without_credentials() {
    let Some(overlays) = overlays() else { return };
    let overlay = overlays
        .iter()
        .find(|overlay| overlay.name == "distributed")
        .unwrap();
    let values: Value = serde_yaml::from_str(&read(
        &deploy_dir().join("kubernetes/jupyterhub/values.yaml"),
    ))
    .unwrap();
    let singleuser = &values["singleuser"];
    let claim = overlay.only("PersistentVolumeClaim");
    assert_eq!(
        strings(&claim.document["spec"]["accessModes"]),
        ["ReadWriteMany"],
        "user pods on any node mount it"
    );
    let data_dir = overlay.data_dir();
    let volumes = singleuser["storage"]["extraVolumes"].as_sequence().unwrap();
    let data_volume = volumes
        .iter()
        .find(|volume| volume["persistentVolumeClaim"]["claimName"].as_str() == Some(claim.name()))
        .expect("a volume of envstore's claim");
    assert_eq!(
        data_volume["persistentVolumeClaim"]["readOnly"].as_bool(),
        Some(true)
    );
    let data_volume = data_volume["name"].as_str().unwrap();
    let empty_dirs: BTreeSet<&str> = volumes
        .iter()
        .filter(|volume| volume.get("emptyDir").is_some())
        .filter_map(|volume| volume["name"].as_str())
        .collect();

    // envs/ and prefixes/ only, read-only, where envstore's pods have them:
    // environment links are absolute paths into prefixes/.
    let check_mounts = |mounts: &Value, origin: &str| {
        let mut sub_paths = BTreeSet::new();
        for mount in mounts.as_sequence().unwrap() {
            if mount["name"].as_str() != Some(data_volume) {
                continue;
            }
            let sub_path = mount["subPath"]
                .as_str()
                .unwrap_or_else(|| panic!("{origin}: the data volume is mounted by subPath"));
            assert_eq!(
                mount["readOnly"].as_bool(),
                Some(true),
                "{origin}: {sub_path}"
            );
            assert_eq!(
                mount["mountPath"].as_str(),
                Some(format!("{data_dir}/{sub_path}").as_str()),
                "{origin}: {sub_path} where envstore has it"
            );
            sub_paths.insert(sub_path.to_owned());
        }
        assert_eq!(
            sub_paths,
            BTreeSet::from(["envs".to_owned(), "prefixes".to_owned()]),
            "{origin}"
        );
    };
    let notebook_mounts = &singleuser["storage"]["extraVolumeMounts"];
    check_mounts(notebook_mounts, "the notebook's mounts");

    // The init container: `sh -c 'envstore kernels sync … || …'`, so a
    // prefix not there yet does not keep the user's server from starting.
    let [init] = singleuser["initContainers"]
        .as_sequence()
        .unwrap()
        .as_slice()
    else {
        panic!("one init container")
    };
    check_mounts(&init["volumeMounts"], "the init container's mounts");
    let argv = command_line(init);
    let [shell, dash_c, script] = argv.as_slice() else {
        panic!("sh -c SCRIPT: {argv:?}")
    };
    assert_eq!((shell.as_str(), dash_c.as_str()), ("sh", "-c"));
    let (sync, _fallback) = script.split_once(" || ").expect("sync || fallback");
    assert!(
        !sync.contains(['"', '\'', '$', '\\', ';', '&', '|']),
        "{sync}"
    );
    let sync: Vec<String> = sync.split_whitespace().map(str::to_owned).collect();
    assert!(
        !sync
            .iter()
            .any(|arg| arg == "--database" || arg == "--store"),
        "no database URL and no store keys: {sync:?}"
    );
    assert!(
        init.get("env").is_none(),
        "the init container is given no credentials"
    );
    let Command::Kernels(KernelsCommand::Sync(sync)) = parse(&sync).command else {
        panic!("the init container runs `envstore kernels sync`: {sync:?}")
    };

    // It asks envstore's Service, and writes kernelspecs where Jupyter
    // looks: a folder shared with the notebook, on JUPYTER_PATH.
    let server = url::Url::parse(&sync.server.server).unwrap();
    let service = overlay.only("Ingress").document["spec"]["rules"][0]["http"]["paths"][0]
        ["backend"]["service"]["name"]
        .as_str()
        .unwrap();
    assert!(
        server
            .host_str()
            .is_some_and(|host| host.starts_with(&format!("{service}."))),
        "{server}: envstore's Service"
    );
    let service_port = overlay.named("Service", service).document["spec"]["ports"][0]["port"]
        .as_u64()
        .unwrap();
    assert_eq!(
        u64::from(server.port_or_known_default().unwrap()),
        service_port
    );
    let kernels_dir = sync.dir.to_str().unwrap();
    let shared = |mounts: &Value| {
        mounts.as_sequence().unwrap().iter().any(|mount| {
            mount["mountPath"].as_str() == Some(kernels_dir)
                && empty_dirs.contains(mount["name"].as_str().unwrap())
        })
    };
    assert!(
        shared(&init["volumeMounts"]) && shared(notebook_mounts),
        "{kernels_dir}"
    );
    assert_eq!(
        singleuser["extraEnv"]["JUPYTER_PATH"].as_str(),
        Some(kernels_dir),
        "Jupyter finds the kernels in $JUPYTER_PATH/kernels"
    );
}

/// The user the Containerfile's image runs as.
fn containerfile_user() -> u64 {
    let text = read(&repository().join("Containerfile"));
    let users: Vec<&str> = text
        .lines()
        .filter_map(|line| line.strip_prefix("USER "))
        .collect();
    let [user] = users.as_slice() else {
        panic!("one USER: {users:?}")
    };
    user.split(':').next().unwrap().trim().parse().unwrap()
}

#[test]
fn the_containerfile_builds_the_release_binary_and_runs_it_unprivileged() {
    let root = repository();
    let text = read(&root.join("Containerfile"));
    let instructions: Vec<&str> = text
        .lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .collect();
    let stages: Vec<&str> = instructions
        .iter()
        .filter_map(|line| line.strip_prefix("FROM "))
        .collect();
    // The builder uses the toolchain the workspace declares.
    let manifest: toml::Value = toml::from_str(&read(&root.join("Cargo.toml"))).unwrap();
    let rust_version = manifest["workspace"]["package"]["rust-version"]
        .as_str()
        .unwrap();
    assert_eq!(
        stages,
        [
            format!("docker.io/library/rust:{rust_version}-bookworm AS builder").as_str(),
            "docker.io/library/debian:bookworm-slim"
        ]
    );
    assert!(
        text.contains("cargo build --release --locked -p envstore-server --bin envstore"),
        "a locked release build of the server binary"
    );
    assert_ne!(containerfile_user(), 0);
    let exec_form = |keyword: &str| -> Vec<String> {
        let line = instructions
            .iter()
            .find_map(|line| line.strip_prefix(keyword))
            .unwrap_or_else(|| panic!("{keyword}"));
        serde_json::from_str(line).unwrap_or_else(|error| panic!("{keyword}{line}: {error}"))
    };
    let mut argv = exec_form("ENTRYPOINT ");
    assert_eq!(argv, ["envstore"]);
    argv.extend(exec_form("CMD "));
    let Command::Serve(serve) = parse(&argv).command else {
        panic!("the image serves by default: {argv:?}")
    };
    let port = serve.bind.expect("it binds all interfaces").port();
    assert!(instructions.contains(&format!("EXPOSE {port}").as_str()));
    // The build context leaves out build output and history, for both tools.
    let ignored = read(&root.join(".containerignore"));
    assert_eq!(ignored, read(&root.join(".dockerignore")));
    for entry in ["target", ".git"] {
        assert!(ignored.lines().any(|line| line == entry), "{entry}");
    }
}

#[test]
fn the_systemd_unit_runs_a_command_line_the_cli_accepts() {
    let folder = deploy_dir().join("systemd");
    let unit = read(&folder.join("envstore.service"));
    let setting = |key: &str| -> Vec<String> {
        unit.lines()
            .filter_map(|line| line.strip_prefix(key)?.strip_prefix('='))
            .map(str::to_owned)
            .collect()
    };
    let [exec_start] = setting("ExecStart").try_into().expect("one ExecStart");
    // Plain words only, so splitting on spaces is what systemd does.
    assert!(
        !exec_start.contains(['"', '\'', '$', '\\', '%']),
        "{exec_start}"
    );
    let mut argv: Vec<String> = exec_start.split_whitespace().map(str::to_owned).collect();
    assert!(
        argv[0].starts_with('/') && argv[0].ends_with("/envstore"),
        "systemd wants an absolute path"
    );
    argv[0] = "envstore".to_owned();
    let cli = parse(&argv);
    let Command::Serve(serve) = &cli.command else {
        panic!("the unit runs `envstore serve`")
    };
    assert_eq!(
        serve.node.data_dir.as_deref(),
        Some(Path::new("/var/lib/envstore"))
    );
    assert_eq!(
        setting("StateDirectory"),
        ["envstore"],
        "systemd makes /var/lib/envstore for the service user"
    );

    // The EnvironmentFile's example: variables the CLI reads, values it accepts.
    let [environment_file] = setting("EnvironmentFile")
        .try_into()
        .expect("one EnvironmentFile");
    assert_eq!(environment_file, "/etc/envstore/envstore.env");
    let mut variables = 0;
    for line in read(&folder.join("envstore.env")).lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, value) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("not NAME=value: {line}"));
        check_variable(&argv, name, Some(value));
        variables += 1;
    }
    assert!(variables > 0);

    let config_path = serve.node.config.as_deref().expect("--config");
    assert_eq!(config_path, Path::new("/etc/envstore/envstore.toml"));
    check_file_config(
        &read(&folder.join("envstore.toml")),
        "deploy/systemd/envstore.toml",
    );
}

#[test]
fn a_command_line_the_cli_refuses_fails_these_checks() {
    // The checks above are only as good as the parser's refusals.
    let refused = ["envstore", "serve", "--workers", "none"].map(str::to_owned);
    assert!(Cli::try_parse_from(refused).is_err());
    let argv = ["envstore", "worker"].map(str::to_owned);
    let unknown =
        std::panic::catch_unwind(|| check_variable(&argv, "ENVSTORE_ADMIN_TOKEN", Some("x")));
    assert!(unknown.is_err(), "workers take no admin token");
    let bad_value =
        std::panic::catch_unwind(|| check_variable(&argv, "ENVSTORE_LOG_FORMAT", Some("xml")));
    assert!(bad_value.is_err());
    check_variable(&argv, "ENVSTORE_LOG_FORMAT", Some("json"));
    // A selector selects only what carries all its labels.
    let labels: Value = serde_yaml::from_str("{a: x, b: y}").unwrap();
    assert!(selects(&serde_yaml::from_str("{a: x}").unwrap(), &labels));
    assert!(!selects(
        &serde_yaml::from_str("{a: x, c: z}").unwrap(),
        &labels
    ));
    assert!(!selects(&serde_yaml::from_str("{}").unwrap(), &labels));
}

#[tokio::test]
async fn a_route_that_is_not_served_fails_these_checks() {
    let api = Listener {
        port: 8080,
        api: true,
    };
    assert!(api.serves("/ready").await);
    assert!(!api.serves("/readyz").await);
    let worker = Listener {
        port: 9090,
        api: false,
    };
    assert!(worker.serves("/ready").await && worker.serves("/metrics").await);
    assert!(!worker.serves("/api/v1/namespaces").await);
}

#[test]
fn the_systemd_gc_timer_collects_the_serving_unit_s_data_folder() {
    let folder = deploy_dir().join("systemd");
    let unit = read(&folder.join("envstore-gc.service"));
    let exec_start = unit
        .lines()
        .find_map(|line| line.strip_prefix("ExecStart="))
        .expect("ExecStart");
    let mut argv: Vec<String> = exec_start.split_whitespace().map(str::to_owned).collect();
    assert!(argv[0].starts_with('/') && argv[0].ends_with("/envstore"));
    argv[0] = "envstore".to_owned();
    let Command::Gc(gc) = &parse(&argv).command else {
        panic!("the unit runs `envstore gc`")
    };
    assert_eq!(
        gc.node.data_dir.as_deref(),
        Some(Path::new("/var/lib/envstore")),
        "the serving unit's data folder"
    );
    assert!(
        unit.contains("Type=oneshot") && unit.contains("User=envstore"),
        "{unit}"
    );
    let timer = read(&folder.join("envstore-gc.timer"));
    assert!(
        timer.contains("Unit=envstore-gc.service") && timer.contains("OnCalendar="),
        "{timer}"
    );
}
