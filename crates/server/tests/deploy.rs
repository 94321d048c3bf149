//! The deployment files in `deploy/` against the real program: every
//! `envstore` command line in them parses with the CLI's own definition,
//! every variable they set is one the CLI reads (with a value it accepts),
//! probes and scrape annotations point at routes that are served, and the
//! Kubernetes manifests hold together (volumes, claims, ConfigMap and
//! Secret keys, the Service's selector).
#![allow(clippy::unwrap_used)] // helpers outside #[test] unwrap too

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use clap::{CommandFactory, Parser};
use envstore_server::args::{Cli, Command};
use envstore_server::config::FileConfig;
use serde::Deserialize as _;
use serde_yaml::Value;

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy")
}

fn read(path: &Path) -> String {
    fs_err::read_to_string(path).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

/// One YAML document of a manifest file.
struct Manifest {
    file: String,
    document: Value,
}

impl Manifest {
    fn kind(&self) -> &str {
        self.document["kind"].as_str().unwrap_or_default()
    }

    fn name(&self) -> &str {
        self.document["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
    }
}

fn manifests() -> Vec<Manifest> {
    let folder = deploy_dir().join("kubernetes");
    let mut files: Vec<PathBuf> = fs_err::read_dir(&folder)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| {
            path.extension()
                .is_some_and(|extension| extension == "yaml")
        })
        .collect();
    files.sort();
    let mut manifests = Vec::new();
    for path in files {
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        for document in serde_yaml::Deserializer::from_str(&read(&path)) {
            let document =
                Value::deserialize(document).unwrap_or_else(|error| panic!("{file}: {error}"));
            if !document.is_null() {
                manifests.push(Manifest {
                    file: file.clone(),
                    document,
                });
            }
        }
    }
    manifests
}

fn only<'a>(manifests: &'a [Manifest], kind: &str) -> &'a Manifest {
    let mut found = manifests.iter().filter(|manifest| manifest.kind() == kind);
    let first = found.next().unwrap_or_else(|| panic!("no {kind}"));
    assert!(found.next().is_none(), "one {kind}");
    first
}

fn deployments(manifests: &[Manifest]) -> Vec<&Manifest> {
    manifests
        .iter()
        .filter(|manifest| manifest.kind() == "Deployment")
        .collect()
}

fn containers(deployment: &Manifest) -> &Vec<Value> {
    deployment.document["spec"]["template"]["spec"]["containers"]
        .as_sequence()
        .unwrap_or_else(|| panic!("{} has containers", deployment.name()))
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

/// Variables read outside clap: the log filter, and S3's settings, which the
/// object store reads itself.
fn read_elsewhere(variable: &str) -> bool {
    variable == "ENVSTORE_LOG" || variable.starts_with("AWS_")
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

fn config_map(manifests: &[Manifest]) -> BTreeMap<String, String> {
    serde_yaml::from_value(only(manifests, "ConfigMap").document["data"].clone()).unwrap()
}

fn secret_keys(manifests: &[Manifest]) -> BTreeSet<String> {
    let data: BTreeMap<String, String> =
        serde_yaml::from_value(only(manifests, "Secret").document["stringData"].clone()).unwrap();
    data.into_keys().collect()
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

#[test]
fn every_manifest_is_a_kind_kubernetes_knows_and_kustomize_lists_them() {
    let manifests = manifests();
    let known: BTreeSet<(&str, &str)> = [
        ("v1", "ConfigMap"),
        ("v1", "Secret"),
        ("v1", "PersistentVolumeClaim"),
        ("v1", "Service"),
        ("apps/v1", "Deployment"),
        ("batch/v1", "CronJob"),
        ("kustomize.config.k8s.io/v1beta1", "Kustomization"),
    ]
    .into();
    let mut names = BTreeSet::new();
    for manifest in &manifests {
        let api_version = manifest.document["apiVersion"].as_str().unwrap_or_default();
        assert!(
            known.contains(&(api_version, manifest.kind())),
            "{}: {api_version} {}",
            manifest.file,
            manifest.kind()
        );
        if manifest.kind() != "Kustomization" {
            assert!(
                !manifest.name().is_empty(),
                "{}: a {} without a name",
                manifest.file,
                manifest.kind()
            );
            assert!(
                names.insert((manifest.kind(), manifest.name())),
                "{} {} twice",
                manifest.kind(),
                manifest.name()
            );
        }
    }
    for kind in ["ConfigMap", "Secret", "PersistentVolumeClaim", "Service"] {
        only(&manifests, kind);
    }
    assert_eq!(deployments(&manifests).len(), 2, "the API and the workers");

    // kustomization.yaml applies every manifest but the Secret's example,
    // which holds placeholders.
    let kustomization = only(&manifests, "Kustomization");
    let listed: BTreeSet<String> = strings(&kustomization.document["resources"])
        .into_iter()
        .collect();
    let files: BTreeSet<String> = manifests
        .iter()
        .map(|manifest| manifest.file.clone())
        .filter(|file| file != "kustomization.yaml" && file != "secret.example.yaml")
        .collect();
    assert_eq!(listed, files);
}

#[test]
fn every_container_runs_an_envstore_command_line_the_cli_accepts() {
    let manifests = manifests();
    let config = config_map(&manifests);
    let secrets = secret_keys(&manifests);
    let mut subcommands = BTreeSet::new();
    for deployment in deployments(&manifests) {
        for container in containers(deployment) {
            let argv = command_line(container);
            assert_eq!(
                argv.first().map(String::as_str),
                Some("envstore"),
                "{}",
                deployment.name()
            );
            let cli = parse(&argv);
            subcommands.insert(argv[1].clone());
            if let Command::Serve(serve) = &cli.command {
                assert_eq!(
                    serve.node.workers,
                    Some(0),
                    "API pods build nothing: the workers do"
                );
            }
            for variable in container["env"].as_sequence().unwrap() {
                let name = variable["name"].as_str().unwrap();
                let source = &variable["valueFrom"];
                let value = if let Some(reference) = source.get("configMapKeyRef") {
                    assert_eq!(
                        reference["name"].as_str(),
                        Some(only(&manifests, "ConfigMap").name())
                    );
                    let key = reference["key"].as_str().unwrap();
                    Some(
                        config
                            .get(key)
                            .unwrap_or_else(|| panic!("{name}: the ConfigMap has no key {key}"))
                            .as_str(),
                    )
                } else if let Some(reference) = source.get("secretKeyRef") {
                    assert_eq!(
                        reference["name"].as_str(),
                        Some(only(&manifests, "Secret").name())
                    );
                    let key = reference["key"].as_str().unwrap();
                    assert!(secrets.contains(key), "{name}: the Secret has no key {key}");
                    None
                } else {
                    variable["value"].as_str()
                };
                check_variable(&argv, name, value);
            }
        }
    }
    assert_eq!(
        subcommands,
        BTreeSet::from(["serve".to_owned(), "worker".to_owned()])
    );
}

/// The port a probe or an annotation names, as a number: named ports are
/// looked up among the container's ports.
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

/// Whether the node a workers-only pod runs answers GET `path` with 200.
async fn worker_node_serves(path: &str) -> bool {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        axum::serve(listener, envstore_api::prometheus::worker_router()).await
    });
    let status = reqwest::get(format!("http://{address}{path}"))
        .await
        .unwrap()
        .status();
    server.abort();
    status == reqwest::StatusCode::OK
}

#[tokio::test]
async fn probes_and_scrape_annotations_point_at_served_routes() {
    let manifests = manifests();
    let api_routes: BTreeSet<String> = envstore_api::routes()
        .into_iter()
        .filter(|(method, _)| method == reqwest::Method::GET)
        .map(|(_, path)| path.to_owned())
        .collect();
    for deployment in deployments(&manifests) {
        let template = &deployment.document["spec"]["template"];
        let annotations = &template["metadata"]["annotations"];
        let [container] = containers(deployment).as_slice() else {
            panic!("{}: one container", deployment.name());
        };
        let cli = parse(&command_line(container));
        // What this container listens on, and whether a path is served there.
        let listens_on = match &cli.command {
            Command::Serve(serve) => serve.bind.expect("API pods bind all interfaces").port(),
            Command::Worker(worker) => worker
                .metrics_bind
                .expect("worker pods serve metrics")
                .port(),
            _ => panic!("{}: neither serve nor worker", deployment.name()),
        };
        let serves = async |path: &str| match &cli.command {
            Command::Serve(_) => api_routes.contains(path),
            _ => worker_node_serves(path).await,
        };

        assert_eq!(
            annotations["prometheus.io/scrape"].as_str(),
            Some("true"),
            "{}",
            deployment.name()
        );
        let scrape_port: u64 = annotations["prometheus.io/port"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(
            scrape_port,
            u64::from(listens_on),
            "{}: scrape port",
            deployment.name()
        );
        let scrape_path = annotations["prometheus.io/path"].as_str().unwrap();
        assert!(
            serves(scrape_path).await,
            "{}: {scrape_path} is not served",
            deployment.name()
        );

        let mut probes = 0;
        for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
            let Some(get) = container.get(probe).map(|probe| &probe["httpGet"]) else {
                continue;
            };
            probes += 1;
            let path = get["path"].as_str().unwrap();
            assert!(
                serves(path).await,
                "{}: the {probe} asks for {path}, which is not served",
                deployment.name()
            );
            assert_eq!(
                port_number(container, &get["port"]),
                u64::from(listens_on),
                "{}: {probe} port",
                deployment.name()
            );
        }
        assert!(
            container.get("livenessProbe").is_some(),
            "{}: a liveness probe",
            deployment.name()
        );
        if matches!(cli.command, Command::Serve(_)) {
            assert_eq!(
                container["livenessProbe"]["httpGet"]["path"].as_str(),
                Some("/health")
            );
            assert_eq!(
                container["readinessProbe"]["httpGet"]["path"].as_str(),
                Some("/ready")
            );
        }
        assert!(probes > 0);
        let requests = &container["resources"]["requests"];
        assert!(
            requests.get("cpu").is_some() && requests.get("memory").is_some(),
            "{}: resource requests",
            deployment.name()
        );
    }
}

#[test]
fn volumes_claims_and_the_config_file_hold_together() {
    let manifests = manifests();
    let config = config_map(&manifests);
    let claim = only(&manifests, "PersistentVolumeClaim");
    assert_eq!(
        strings(&claim.document["spec"]["accessModes"]),
        ["ReadWriteMany"],
        "API and workers share prefixes"
    );
    let data_dir = config["data-dir"].as_str();
    assert!(data_dir.starts_with('/'));
    check_file_config(&config["envstore.toml"], "the ConfigMap's envstore.toml");

    for deployment in deployments(&manifests) {
        let pod = &deployment.document["spec"]["template"]["spec"];
        let volumes: BTreeMap<String, &Value> = pod["volumes"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|volume| (volume["name"].as_str().unwrap().to_owned(), volume))
            .collect();
        for volume in volumes.values() {
            if let Some(claim_name) = volume["persistentVolumeClaim"]["claimName"].as_str() {
                assert_eq!(claim_name, claim.name(), "{}", deployment.name());
            }
            if let Some(items) = volume["configMap"]["items"].as_sequence() {
                assert_eq!(
                    volume["configMap"]["name"].as_str(),
                    Some(only(&manifests, "ConfigMap").name())
                );
                for item in items {
                    let key = item["key"].as_str().unwrap();
                    assert!(
                        config.contains_key(key),
                        "{}: the ConfigMap has no key {key}",
                        deployment.name()
                    );
                }
            }
        }
        for container in containers(deployment) {
            let mut mounted_claim = false;
            for mount in container["volumeMounts"].as_sequence().unwrap() {
                let name = mount["name"].as_str().unwrap();
                let volume = volumes.get(name).unwrap_or_else(|| {
                    panic!("{}: mounts an undeclared volume {name}", deployment.name())
                });
                if volume.get("persistentVolumeClaim").is_some() {
                    mounted_claim = true;
                    assert_eq!(
                        mount["mountPath"].as_str(),
                        Some(data_dir),
                        "{}: prefixes embed their path",
                        deployment.name()
                    );
                }
            }
            assert!(
                mounted_claim,
                "{}: mounts the shared volume",
                deployment.name()
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
                .unwrap_or_else(|| panic!("{}: nothing is mounted at {folder}", deployment.name()));
            let volume = volumes[mount["name"].as_str().unwrap()];
            let paths: Vec<&str> = volume["configMap"]["items"]
                .as_sequence()
                .unwrap()
                .iter()
                .filter_map(|item| item["path"].as_str())
                .collect();
            assert!(
                paths.contains(&file),
                "{}: {config_path} is not in the mounted ConfigMap",
                deployment.name()
            );
        }
    }
}

#[test]
fn the_service_sends_traffic_to_the_api_pods() {
    let manifests = manifests();
    let service = only(&manifests, "Service");
    let selector = &service.document["spec"]["selector"];
    let matching: Vec<&Manifest> = deployments(&manifests)
        .into_iter()
        .filter(|deployment| {
            let labels = &deployment.document["spec"]["template"]["metadata"]["labels"];
            selector
                .as_mapping()
                .unwrap()
                .iter()
                .all(|(key, value)| labels.get(key) == Some(value))
        })
        .collect();
    let [api] = matching.as_slice() else {
        panic!("the Service selects {} Deployments", matching.len());
    };
    let [container] = containers(api).as_slice() else {
        panic!("one container")
    };
    assert!(matches!(
        parse(&command_line(container)).command,
        Command::Serve(_)
    ));
    assert_eq!(
        &api.document["spec"]["selector"]["matchLabels"], selector,
        "the Deployment's own selector"
    );
    for port in service.document["spec"]["ports"].as_sequence().unwrap() {
        port_number(container, &port["targetPort"]);
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
}

/// A pod spec's mounts of `claim`, as (volume name, mount path).
fn claim_mounts(pod: &Value, claim: &str) -> Vec<String> {
    let volumes: BTreeSet<String> = pod["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter(|volume| volume["persistentVolumeClaim"]["claimName"].as_str() == Some(claim))
        .map(|volume| volume["name"].as_str().unwrap().to_owned())
        .collect();
    pod["containers"]
        .as_sequence()
        .unwrap()
        .iter()
        .flat_map(|container| {
            container["volumeMounts"]
                .as_sequence()
                .cloned()
                .unwrap_or_default()
        })
        .filter(|mount| volumes.contains(mount["name"].as_str().unwrap()))
        .map(|mount| mount["mountPath"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn garbage_collection_runs_on_a_schedule_over_the_prefixes_the_nodes_use() {
    // Kubernetes: a CronJob running `envstore gc` on the shared volume,
    // mounted where the workers build prefixes (prefixes embed their path).
    let manifests = manifests();
    let cron = only(&manifests, "CronJob");
    assert_eq!(
        cron.document["spec"]["concurrencyPolicy"], "Forbid",
        "one collection at a time"
    );
    let pod = &cron.document["spec"]["jobTemplate"]["spec"]["template"]["spec"];
    let [container] = pod["containers"].as_sequence().unwrap().as_slice() else {
        panic!("one container")
    };
    let argv = command_line(container);
    let Command::Gc(gc) = &parse(&argv).command else {
        panic!("the CronJob runs `envstore gc`: {argv:?}")
    };
    assert!(
        !gc.dry_run && gc.keep_builds >= 1,
        "it collects, and keeps at least the newest build"
    );
    let config = config_map(&manifests);
    let secrets = secret_keys(&manifests);
    let mut data_dir = None;
    for variable in container["env"].as_sequence().unwrap() {
        let name = variable["name"].as_str().unwrap();
        let from = &variable["valueFrom"];
        let value = if let Some(key) = from["configMapKeyRef"]["key"].as_str() {
            Some(
                config
                    .get(key)
                    .unwrap_or_else(|| panic!("ConfigMap key {key}"))
                    .as_str(),
            )
        } else {
            let key = from["secretKeyRef"]["key"].as_str().unwrap();
            assert!(secrets.contains(key), "Secret key {key}");
            None
        };
        check_variable(&argv, name, value);
        if name == "ENVSTORE_DATA_DIR" {
            data_dir = value.map(str::to_owned);
        }
    }
    let data_dir = data_dir.expect("the CronJob names the data folder");
    assert_eq!(
        claim_mounts(pod, "envstore-data"),
        std::slice::from_ref(&data_dir),
        "the shared volume at the data folder"
    );
    let worker = deployments(&manifests)
        .into_iter()
        .find(|d| d.name() == "envstore-worker")
        .expect("the workers");
    assert_eq!(
        claim_mounts(
            &worker.document["spec"]["template"]["spec"],
            "envstore-data"
        ),
        [data_dir],
        "the same path as the workers, whose prefixes it collects"
    );

    // systemd: a oneshot service on the single node's data folder, and the
    // timer that starts it.
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
