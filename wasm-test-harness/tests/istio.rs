//! The Istio manifests in `examples/istio/` are checked the way the Kubernetes API server and the filter
//! would check them, without a cluster:
//!
//! - Every YAML document's `spec` is validated against the `openAPIV3Schema` of its CRD version (from
//!   `testdata/istio/crds.yaml`, Istio's own CRDs) with a JSON-schema validator. The schema is first
//!   turned into plain JSON schema the way Kubernetes reads it: `x-kubernetes-int-or-string` is an
//!   integer or a string, `nullable` admits null, and a field not declared in `properties` is an error
//!   unless `x-kubernetes-preserve-unknown-fields` keeps it (Kubernetes would prune it, and
//!   `kubectl apply` with strict field validation, the default, refuses it).
//! - The CEL rules (`x-kubernetes-validations`) that apply to the examples are emulated by hand, and a
//!   rule without an emulation fails the test rather than being skipped.
//! - A document whose kind has no CRD in the file must be listed in `NOT_SCHEMA_CHECKED`.
//! - The WasmPlugin's `pluginConfig` must be a valid jwt-guard config (after the protobuf `Struct`
//!   round trip Istio puts it through), and its JWKS cluster must be the one the ServiceEntry and
//!   DestinationRule create, with TLS origination.
//! - The TrafficExtensions (Istio 1.30's successor to WasmPlugin; `trafficextension-sidecar.yaml` and
//!   `trafficextension-waypoint.yaml`) are validated against their own CRD the same way, carry the
//!   WasmPlugin's module pin, settings and `pluginConfig` unchanged under `wasm`, and their JWKS
//!   ServiceEntry can be applied in their namespace as their comments say.
//! - Every extension's `match` is run through an emulation of Istio's traffic-selector matching, so that
//!   each one is attached to the listeners it is meant for (the gateway's, a sidecar's inbound, a
//!   waypoint's) and a mode that Istio would never attach (`SERVER` on a gateway) fails the test.
//! - The CRD files match the sha256 sums recorded in `testdata/istio/SOURCE.md`.
//! - The EnvoyFilter (`envoyfilter-edge.yaml`) must patch the same gateway's HTTP connection managers with
//!   the shipped edge settings (`headers_with_underscores_action: DROP_HEADER`,
//!   `strip_trailing_host_dot: true`), and its patch, merged into a real HCM, must pass
//!   `envoy --mode validate` (the CRD leaves `patch.value` free-form, so only Envoy can check it).

use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Documents whose kind has no CRD in `testdata/istio/crds.yaml`: (apiVersion group, kind, why).
const NOT_SCHEMA_CHECKED: &[(&str, &str, &str)] = &[(
    "networking.istio.io",
    "DestinationRule",
    "not schema-checked: DestinationRule (its CRD is not in testdata/istio/crds.yaml); \
     its TLS settings are checked by hand in jwks_cluster_is_the_service_entry_with_tls_origination",
)];

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("harness crate is inside the repository")
        .to_path_buf()
}

fn yaml_documents(text: &str) -> Vec<Value> {
    let mut out = Vec::new();
    for de in serde_yaml::Deserializer::from_str(text) {
        let doc = serde_yaml::Value::deserialize(de).expect("valid YAML");
        if doc.is_null() {
            continue; // an empty document (e.g. a trailing `---`)
        }
        out.push(serde_json::to_value(doc).expect("YAML that maps to JSON (string keys)"));
    }
    out
}

/// (file name, document index, document) for every document in `examples/istio/*.yaml`.
fn example_documents() -> Vec<(String, usize, Value)> {
    let dir = repo_root().join("examples/istio");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("examples/istio exists")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no YAML files in {}", dir.display());
    let mut out = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).expect("readable");
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        for (i, doc) in yaml_documents(&text).into_iter().enumerate() {
            out.push((name.clone(), i, doc));
        }
    }
    out
}

fn example_text(file: &str) -> String {
    std::fs::read_to_string(repo_root().join("examples/istio").join(file)).expect("readable")
}

struct CrdVersion {
    served: bool,
    namespaced: bool,
    schema: Value,
}

/// The CRD files in `testdata/istio` (see SOURCE.md there).
const CRD_FILES: &[&str] = &["crds.yaml", "envoyfilter-crd.yaml"];

/// (group, version, kind) -> the version's schema, from the files in [`CRD_FILES`].
fn crds() -> BTreeMap<(String, String, String), CrdVersion> {
    let mut out = BTreeMap::new();
    for file in CRD_FILES {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("testdata/istio")
            .join(file);
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        add_crds(&text, &mut out);
    }
    out
}

fn add_crds(text: &str, out: &mut BTreeMap<(String, String, String), CrdVersion>) {
    for crd in yaml_documents(text) {
        assert_eq!(crd["kind"], "CustomResourceDefinition");
        let spec = &crd["spec"];
        let group = spec["group"].as_str().expect("group").to_owned();
        let kind = spec["names"]["kind"].as_str().expect("kind").to_owned();
        for v in spec["versions"].as_array().expect("versions") {
            let version = v["name"].as_str().expect("version name").to_owned();
            out.insert(
                (group.clone(), version, kind.clone()),
                CrdVersion {
                    served: v["served"] == true,
                    namespaced: spec["scope"] == "Namespaced",
                    schema: v["schema"]["openAPIV3Schema"].clone(),
                },
            );
        }
    }
}

fn gvk(doc: &Value) -> (String, String, String) {
    let api = doc["apiVersion"].as_str().expect("apiVersion");
    let (group, version) = api.split_once('/').unwrap_or(("", api));
    let kind = doc["kind"].as_str().expect("kind");
    (group.to_owned(), version.to_owned(), kind.to_owned())
}

// ---------- CRD schema -> JSON schema ----------

/// Turns a Kubernetes structural schema into a draft-4 JSON schema with Kubernetes' meaning:
/// - `x-kubernetes-int-or-string: true`: an integer or a string;
/// - `nullable: true`: null is also accepted;
/// - an object's fields not in `properties` are errors (Kubernetes prunes them; strict field validation
///   refuses them), unless `x-kubernetes-preserve-unknown-fields: true` or `additionalProperties` says
///   otherwise. An object with neither `properties` nor `additionalProperties` nor
///   preserve-unknown-fields admits no fields at all, as in Kubernetes (none occurs in these CRDs).
/// - `x-kubernetes-validations` (CEL), descriptions, formats and the list-type hints are dropped here;
///   the CEL rules are emulated by `check_cel`.
fn to_json_schema(node: &Value) -> Value {
    match node {
        Value::Object(m) => {
            if m.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true)) {
                return json!({ "anyOf": [{ "type": "integer" }, { "type": "string" }] });
            }
            let mut out = Map::new();
            for (k, v) in m {
                match k.as_str() {
                    "description" | "format" | "nullable" => {}
                    k if k.starts_with("x-kubernetes-") => {}
                    "properties" => {
                        let props: Map<String, Value> = v
                            .as_object()
                            .expect("properties is an object")
                            .iter()
                            .map(|(name, s)| (name.clone(), to_json_schema(s)))
                            .collect();
                        out.insert(k.clone(), Value::Object(props));
                    }
                    "enum" | "required" => {
                        out.insert(k.clone(), v.clone());
                    }
                    _ => {
                        out.insert(k.clone(), to_json_schema(v));
                    }
                }
            }
            let preserve =
                m.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
            if m.get("type") == Some(&json!("object"))
                && !preserve
                && !m.contains_key("additionalProperties")
            {
                out.insert("additionalProperties".into(), Value::Bool(false));
            }
            if m.get("nullable") == Some(&Value::Bool(true)) {
                if let Some(Value::String(t)) = m.get("type") {
                    out.insert("type".into(), json!([t, "null"]));
                }
            }
            Value::Object(out)
        }
        Value::Array(a) => Value::Array(a.iter().map(to_json_schema).collect()),
        other => other.clone(),
    }
}

fn spec_schema(crd: &CrdVersion) -> Value {
    let spec = &crd.schema["properties"]["spec"];
    assert!(spec.is_object(), "CRD has no spec schema");
    to_json_schema(spec)
}

/// Schema errors of `spec` ("path: message"), empty when valid.
fn schema_errors(schema: &Value, spec: &Value) -> Vec<String> {
    let validator = jsonschema::options()
        .with_draft(jsonschema::Draft::Draft4)
        .build(schema)
        .expect("the converted CRD schema is a valid JSON schema");
    validator
        .iter_errors(spec)
        .map(|e| format!("spec{}: {e}", e.instance_path()))
        .collect()
}

// ---------- CEL rules (x-kubernetes-validations), emulated ----------

fn has(v: &Value, key: &str) -> bool {
    v.get(key).is_some()
}

/// The CEL rules of these CRDs that the examples reach, by message, as Rust predicates on `self`.
fn cel_emulation(message: &str) -> Option<fn(&Value) -> bool> {
    let f: fn(&Value) -> bool = match message {
        // WasmPlugin and TrafficExtension. WasmPlugin's rule also counts its hidden singular
        // `targetRef`; TrafficExtension's has no `targetRef` (and its schema refuses the field).
        "only one of targetRefs or selector can be set" => |s| {
            ["selector", "targetRef", "targetRefs"]
                .iter()
                .filter(|k| has(s, k))
                .count()
                <= 1
        },
        "url must have schema one of [http, https, file, oci]" => |s| {
            let url = s.as_str().unwrap_or_default();
            match url.split_once("://") {
                Some((scheme, _)) => ["http", "https", "oci", "file"].contains(&scheme),
                None => true, // no scheme: Istio treats it as an OCI reference
            }
        },
        "wildcard not allowed in label value match" | "wildcard is not supported in selector" => {
            |s| !s.as_str().unwrap_or_default().contains('*')
        }
        "wildcard not allowed in label key match" => |s| {
            s.as_object()
                .is_some_and(|m| m.keys().all(|k| !k.contains('*')))
        },
        "key must not be empty" => |s| {
            s.as_object()
                .is_some_and(|m| m.keys().all(|k| !k.is_empty()))
        },
        // TrafficExtension: `has(self.wasm) != has(self.lua)`.
        "exactly one of wasm or lua must be set" => |s| has(s, "wasm") != has(s, "lua"),
        // EnvoyFilter
        "only one of targetRefs or workloadSelector can be set" => {
            |s| !(has(s, "workloadSelector") && has(s, "targetRefs"))
        }
        "only support waypointMatch when context is WAYPOINT" => |s| {
            if s["context"] == "WAYPOINT" {
                has(s, "waypoint")
            } else {
                !has(s, "waypoint")
            }
        },
        "cross namespace referencing is not currently supported" => {
            |s| s.as_str().is_some_and(str::is_empty)
        }
        // ServiceEntry
        "hostname cannot be wildcard" => |s| s != "*",
        "port must be between 1-65535" => |s| s.as_u64().is_some_and(|p| (1..=65_535).contains(&p)),
        "port number cannot be duplicated" => |s| {
            let numbers: Vec<&Value> = s
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| &p["number"])
                .collect();
            numbers
                .iter()
                .all(|n| numbers.iter().filter(|m| m == &n).count() == 1)
        },
        "only one of WorkloadSelector or Endpoints can be set" => {
            |s| !(has(s, "workloadSelector") && has(s, "endpoints"))
        }
        "CIDR addresses are allowed only for NONE/STATIC resolution types" => |s| {
            let cidr = s["addresses"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|a| a.as_str().unwrap_or_default().contains('/'));
            let resolution = s["resolution"].as_str().unwrap_or("NONE");
            !cidr || ["STATIC", "NONE"].contains(&resolution)
        },
        "NONE mode cannot set endpoints" => {
            |s| s["resolution"].as_str().unwrap_or("NONE") != "NONE" || !has(s, "endpoints")
        }
        "DNS_ROUND_ROBIN mode cannot have multiple endpoints" => |s| {
            s["resolution"] != "DNS_ROUND_ROBIN"
                || s["endpoints"].as_array().map_or(0, Vec::len) <= 1
        },
        _ => return None,
    };
    Some(f)
}

/// Walks `value` along `schema` (the original CRD schema) and evaluates every CEL rule on a node the
/// document has. A rule without an emulation is an error too: nothing is skipped silently.
fn check_cel(schema: &Value, value: &Value, path: &str, errors: &mut Vec<String>) {
    for rule in schema["x-kubernetes-validations"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let message = rule["message"].as_str().unwrap_or_default();
        match cel_emulation(message) {
            Some(holds) if holds(value) => {}
            Some(_) => errors.push(format!("{path}: {message}")),
            None => errors.push(format!(
                "{path}: CEL rule {:?} ({message}) has no emulation in tests/istio.rs",
                rule["rule"]
            )),
        }
    }
    match value {
        Value::Object(m) => {
            for (k, v) in m {
                let sub = schema["properties"]
                    .get(k)
                    .or_else(|| schema.get("additionalProperties"));
                if let Some(sub) = sub {
                    check_cel(sub, v, &format!("{path}.{k}"), errors);
                }
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                check_cel(&schema["items"], v, &format!("{path}[{i}]"), errors);
            }
        }
        _ => {}
    }
}

/// Everything the API server would refuse in this `spec` (schema and CEL), empty when accepted.
fn validate_spec(crd: &CrdVersion, spec: &Value) -> Vec<String> {
    let mut errors = schema_errors(&spec_schema(crd), spec);
    check_cel(&crd.schema["properties"]["spec"], spec, "spec", &mut errors);
    errors
}

// ---------- YAML 1.1 booleans ----------

/// Kubernetes reads manifests as YAML 1.1, where unquoted y/n/yes/no/on/off (any case) are booleans,
/// while serde_yaml (YAML 1.2) reads them as strings. An unquoted `mode: off` in pluginConfig would
/// reach the filter as `false`. Returns the offending lines.
fn yaml11_boolean_lines(text: &str) -> Vec<String> {
    const WORDS: &[&str] = &["y", "n", "yes", "no", "on", "off"];
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let code = line.split(" #").next().unwrap_or_default();
        if code.trim_start().starts_with('#') {
            continue;
        }
        let value = match code.trim_start().strip_prefix("- ") {
            Some(item) if !item.contains(": ") => item,
            Some(item) => item.rsplit_once(": ").map_or("", |(_, v)| v),
            None => code.rsplit_once(": ").map_or("", |(_, v)| v),
        };
        let value = value.trim();
        if WORDS.iter().any(|w| w.eq_ignore_ascii_case(value)) {
            out.push(format!("line {}: {}", i + 1, line.trim()));
        }
    }
    out
}

// ---------- pluginConfig as Istio hands it over ----------

/// Istio carries `pluginConfig` as a protobuf `Struct` and gives the filter its JSON: every number is a
/// double, printed without a fraction when it has none. Emulates that round trip.
fn through_protobuf_struct(v: &Value) -> Value {
    match v {
        Value::Number(n) => {
            let f = n.as_f64().expect("a number");
            if f.fract() == 0.0 && f.abs() < 9_007_199_254_740_992.0 {
                Value::from(f as i64)
            } else {
                Value::from(f)
            }
        }
        Value::Array(a) => Value::Array(a.iter().map(through_protobuf_struct).collect()),
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| (k.clone(), through_protobuf_struct(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

fn parse_plugin_config(
    plugin_config: &Value,
) -> Result<jwt_guard::config::Config, jwt_guard::config::ConfigError> {
    let json = through_protobuf_struct(plugin_config);
    jwt_guard::config::Config::parse(&serde_json::to_vec(&json).expect("serializable"))
}

fn find_doc(kind: &str) -> Value {
    let docs: Vec<Value> = example_documents()
        .into_iter()
        .map(|(_, _, d)| d)
        .filter(|d| d["kind"] == kind)
        .collect();
    assert_eq!(
        docs.len(),
        1,
        "expected exactly one {kind} in examples/istio"
    );
    docs.into_iter().next().unwrap()
}

/// The one document of an example file that holds a single resource.
fn only_doc_in(file: &str) -> Value {
    let docs = yaml_documents(&example_text(file));
    assert_eq!(docs.len(), 1, "{file}: expected exactly one YAML document");
    docs.into_iter().next().unwrap()
}

/// The TrafficExtension examples (Istio 1.30 and later).
const SIDECAR_EXTENSION: &str = "trafficextension-sidecar.yaml";
const WAYPOINT_EXTENSION: &str = "trafficextension-waypoint.yaml";
const TRAFFIC_EXTENSION_FILES: &[&str] = &[SIDECAR_EXTENSION, WAYPOINT_EXTENSION];

fn traffic_extension(file: &str) -> Value {
    let doc = only_doc_in(file);
    assert_eq!(doc["kind"], "TrafficExtension", "{file}");
    assert_eq!(doc["apiVersion"], "extensions.istio.io/v1alpha1", "{file}");
    doc
}

fn wasm_plugin_crd() -> CrdVersion {
    crds()
        .remove(&(
            "extensions.istio.io".into(),
            "v1alpha1".into(),
            "WasmPlugin".into(),
        ))
        .expect("WasmPlugin CRD")
}

fn traffic_extension_crd() -> CrdVersion {
    crds()
        .remove(&(
            "extensions.istio.io".into(),
            "v1alpha1".into(),
            "TrafficExtension".into(),
        ))
        .expect("TrafficExtension CRD")
}

fn envoy_filter_crd() -> CrdVersion {
    crds()
        .remove(&(
            "networking.istio.io".into(),
            "v1alpha3".into(),
            "EnvoyFilter".into(),
        ))
        .expect("EnvoyFilter CRD")
}

fn service_entry_crd() -> CrdVersion {
    crds()
        .remove(&(
            "networking.istio.io".into(),
            "v1".into(),
            "ServiceEntry".into(),
        ))
        .expect("ServiceEntry CRD")
}

// ---------- the tests ----------

#[test]
fn every_example_document_is_accepted_by_its_crd_or_listed_as_unchecked() {
    let crds = crds();
    let docs = example_documents();
    let mut checked = Vec::new();
    let mut unchecked = Vec::new();
    let mut failures = Vec::new();
    for (file, index, doc) in &docs {
        let at = format!("{file} document {index}");
        let key = gvk(doc);
        let name = doc["metadata"]["name"].as_str().unwrap_or_default();
        assert!(!name.is_empty(), "{at}: metadata.name is required");
        match crds.get(&key) {
            Some(crd) => {
                assert!(crd.served, "{at}: {}/{} is not served", key.0, key.1);
                if crd.namespaced {
                    assert!(
                        doc["metadata"]["namespace"].is_string(),
                        "{at}: {} is namespaced: set metadata.namespace",
                        key.2
                    );
                }
                let top: Vec<&String> = doc.as_object().unwrap().keys().collect();
                for k in &top {
                    assert!(
                        ["apiVersion", "kind", "metadata", "spec"].contains(&k.as_str()),
                        "{at}: unexpected top-level field {k}"
                    );
                }
                let errors = validate_spec(crd, &doc["spec"]);
                if !errors.is_empty() {
                    failures.push(format!("{at} ({}): {errors:#?}", key.2));
                }
                checked.push(format!("{file}: {}/{} {} {name}", key.0, key.1, key.2));
            }
            None => {
                let listed = NOT_SCHEMA_CHECKED
                    .iter()
                    .find(|(g, k, _)| *g == key.0 && *k == key.2);
                match listed {
                    Some((_, _, why)) => unchecked.push(format!("{file}: {name}: {why}")),
                    None => failures.push(format!(
                        "{at}: no CRD for {}/{} {} in testdata/istio/crds.yaml and not listed in \
                         NOT_SCHEMA_CHECKED",
                        key.0, key.1, key.2
                    )),
                }
            }
        }
    }
    println!("schema-checked:\n  {}", checked.join("\n  "));
    println!("{}", unchecked.join("\n"));
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // The examples the deliverable promises, and no stale NOT_SCHEMA_CHECKED entry.
    for kind in [
        "WasmPlugin",
        "TrafficExtension",
        "ServiceEntry",
        "EnvoyFilter",
    ] {
        assert!(
            checked.iter().any(|c| c.contains(&format!(" {kind} "))),
            "no {kind} was schema-checked"
        );
    }
    for (_, kind, _) in NOT_SCHEMA_CHECKED {
        assert!(
            docs.iter().any(|(_, _, d)| d["kind"] == *kind),
            "NOT_SCHEMA_CHECKED lists {kind}, which no example has"
        );
    }
    for file in TRAFFIC_EXTENSION_FILES {
        assert!(
            checked
                .iter()
                .any(|c| c.starts_with(&format!("{file}: ")) && c.contains(" TrafficExtension ")),
            "{file} was not schema-checked as a TrafficExtension"
        );
    }
}

#[test]
fn examples_have_no_yaml11_booleans() {
    let files: Vec<String> = {
        let mut names: Vec<String> = example_documents()
            .into_iter()
            .map(|(file, _, _)| file)
            .collect();
        names.dedup();
        names
    };
    for expected in [
        "wasmplugin.yaml",
        "serviceentry.yaml",
        "envoyfilter-edge.yaml",
        SIDECAR_EXTENSION,
        WAYPOINT_EXTENSION,
    ] {
        assert!(
            files.iter().any(|f| f == expected),
            "{expected} is missing from examples/istio: {files:?}"
        );
    }
    for file in &files {
        let lines = yaml11_boolean_lines(&example_text(file));
        assert!(
            lines.is_empty(),
            "{file}: Kubernetes (YAML 1.1) reads these as booleans, quote them: {lines:#?}"
        );
    }
}

#[test]
fn plugin_config_is_a_valid_jwt_guard_config() {
    let plugin = find_doc("WasmPlugin");
    let plugin_config = &plugin["spec"]["pluginConfig"];
    assert!(plugin_config.is_object(), "pluginConfig must be an object");
    let config = parse_plugin_config(plugin_config).unwrap_or_else(|e| panic!("{e}"));
    use jwt_guard::config::Mode;
    let modes: Vec<(String, Mode)> = config
        .rules
        .iter()
        .map(|r| (r.name.clone(), r.mode))
        .collect();
    assert!(
        modes.iter().any(|(_, m)| *m == Mode::Shadow),
        "want a shadow rule: {modes:?}"
    );
    assert!(
        modes.iter().any(|(_, m)| *m == Mode::Enforce),
        "want an enforce rule: {modes:?}"
    );
    let public = config
        .rules
        .iter()
        .find(|r| r.name == "health")
        .expect("a health rule");
    assert!(public.requires.is_none(), "/healthz must be public");
    // A module that cannot load or take this config must stop traffic, and the filter runs before
    // Istio's own authn/authz filters.
    assert_eq!(plugin["spec"]["failStrategy"], "FAIL_CLOSE");
    assert_eq!(plugin["spec"]["phase"], "AUTHN");
}

#[test]
fn jwks_cluster_is_the_service_entry_with_tls_origination() {
    let plugin = find_doc("WasmPlugin");
    let se = find_doc("ServiceEntry");
    let dr = find_doc("DestinationRule");
    let config = parse_plugin_config(&plugin["spec"]["pluginConfig"]).expect("valid config");
    let se_hosts: Vec<&str> = se["spec"]["hosts"]
        .as_array()
        .expect("hosts")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let mut remote = 0;
    for provider in &config.providers {
        let jwt_guard::config::JwksSource::Remote(r) = &provider.jwks else {
            continue;
        };
        remote += 1;
        let parts: Vec<&str> = r.cluster.split('|').collect();
        assert_eq!(
            parts.len(),
            4,
            "{}: cluster {:?} is not an Istio outbound|<port>|<subset>|<host> name",
            provider.name,
            r.cluster
        );
        let (direction, port, subset, host) = (parts[0], parts[1], parts[2], parts[3]);
        assert_eq!(direction, "outbound");
        assert_eq!(port, "443", "{}: the IdP's TLS port", provider.name);
        assert_eq!(subset, "", "{}: no subset expected", provider.name);
        assert!(
            se_hosts.contains(&host),
            "{}: cluster host {host} is not a ServiceEntry host {se_hosts:?}",
            provider.name
        );
        assert_eq!(
            r.authority, host,
            "{}: the JWKS URI's host should be the cluster's host (it becomes :authority and SNI)",
            provider.name
        );
        assert!(r.https, "{}: the JWKS URI should be https", provider.name);
        let se_port = se["spec"]["ports"]
            .as_array()
            .expect("ports")
            .iter()
            .find(|p| p["number"] == 443)
            .unwrap_or_else(|| panic!("ServiceEntry has no port 443"));
        assert!(se_port["protocol"].is_string());
        // TLS origination: the filter's fetch is plain HTTP handed to the cluster.
        assert_eq!(dr["spec"]["host"], host);
        let level = dr["spec"]["trafficPolicy"]["portLevelSettings"]
            .as_array()
            .expect("portLevelSettings")
            .iter()
            .find(|s| s["port"]["number"] == 443)
            .expect("DestinationRule settings for port 443");
        assert_eq!(level["tls"]["mode"], "SIMPLE");
        assert_eq!(level["tls"]["sni"], host);
    }
    assert!(
        remote > 0,
        "the example should fetch its JWKS through Istio"
    );
    // Visible to the gateway: same namespace as the WasmPlugin (exportTo "." keeps it there).
    let ns = &plugin["metadata"]["namespace"];
    assert_eq!(&se["metadata"]["namespace"], ns);
    assert_eq!(&dr["metadata"]["namespace"], ns);
    assert_eq!(se["spec"]["location"], "MESH_EXTERNAL");
    assert_eq!(se["spec"]["resolution"], "DNS");
}

// ---------- TrafficExtension (Istio 1.30+): the WasmPlugin's module and config under `wasm` ----------

/// The WasmPlugin fields that TrafficExtension moved under `wasm`, with the same names and meaning
/// (`wasm.proto` and `traffic_extension.proto` of istio/api). `selector`, `targetRefs`, `phase`,
/// `priority` and `match` stay at the top level.
const WASM_FIELDS: &[&str] = &[
    "url",
    "sha256",
    "imagePullPolicy",
    "imagePullSecret",
    "verificationKey",
    "pluginConfig",
    "pluginName",
    "failStrategy",
    "vmConfig",
    "type",
];

#[test]
fn traffic_extensions_carry_the_wasm_plugins_module_pin_and_config() {
    let plugin = find_doc("WasmPlugin");
    let wp = &plugin["spec"];
    for file in TRAFFIC_EXTENSION_FILES {
        let te = traffic_extension(file);
        let spec = &te["spec"];
        assert!(spec["wasm"].is_object(), "{file}: spec.wasm is required");
        assert!(
            spec.get("lua").is_none(),
            "{file}: a Wasm extension, not Lua"
        );
        for field in WASM_FIELDS {
            assert_eq!(
                spec["wasm"].get(*field),
                wp.get(*field),
                "{file}: wasm.{field} differs from the WasmPlugin's {field}"
            );
        }
        // The module pin: the same image (and digest, when the WasmPlugin has one), a fixed tag, and a
        // sha256 of the form Istio accepts.
        let url = spec["wasm"]["url"].as_str().expect("wasm.url");
        assert!(url.starts_with("oci://"), "{file}: {url}");
        let tag = url.rsplit_once(':').map(|(_, t)| t).unwrap_or_default();
        assert!(
            !tag.is_empty() && tag != "latest" && !tag.contains('/'),
            "{file}: pin a version tag (or a digest), not {url:?}"
        );
        if let Some(sha) = spec["wasm"]["sha256"].as_str() {
            assert!(
                sha.len() == 64
                    && sha
                        .bytes()
                        .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()),
                "{file}: sha256 {sha:?}"
            );
        }
        assert_eq!(spec["phase"], wp["phase"], "{file}: phase");
        assert_eq!(spec["phase"], "AUTHN", "{file}");
        assert_eq!(spec["wasm"]["failStrategy"], "FAIL_CLOSE", "{file}");
        assert_eq!(spec["wasm"]["type"], "HTTP", "{file}");
        // pluginConfig: equal to the WasmPlugin's (so the checks above on that config cover it), and a
        // valid jwt-guard config in its own right after the protobuf Struct round trip.
        let config = parse_plugin_config(&spec["wasm"]["pluginConfig"])
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        assert!(config
            .rules
            .iter()
            .any(|r| r.name == "health" && r.requires.is_none()));
    }
    let (a, b) = (
        traffic_extension(SIDECAR_EXTENSION),
        traffic_extension(WAYPOINT_EXTENSION),
    );
    assert!(
        a["metadata"]["name"] != b["metadata"]["name"]
            || a["metadata"]["namespace"] != b["metadata"]["namespace"],
        "the two TrafficExtensions would overwrite each other"
    );
}

#[test]
fn traffic_extension_idp_service_entry_is_applied_in_its_namespace() {
    // serviceentry.yaml lives in istio-system with exportTo "." (for the gateway). The TrafficExtensions'
    // comments say how to apply it in their own namespace; do that here and check the result is the
    // ServiceEntry and DestinationRule of the JWKS cluster, in that namespace, still accepted by the CRD.
    let se_text = example_text("serviceentry.yaml");
    for file in TRAFFIC_EXTENSION_FILES {
        let te = traffic_extension(file);
        let ns = te["metadata"]["namespace"].as_str().expect("namespace");
        assert_ne!(
            ns, "istio-system",
            "{file}: the example is for an application namespace"
        );
        let sed = format!("s/namespace: istio-system/namespace: {ns}/");
        let text = example_text(file);
        assert!(
            text.contains(&format!(
                "sed '{sed}' examples/istio/serviceentry.yaml | kubectl apply -f -"
            )),
            "{file}: the comment should say how to apply serviceentry.yaml in {ns}"
        );
        let moved = se_text.replace("namespace: istio-system", &format!("namespace: {ns}"));
        let docs = yaml_documents(&moved);
        assert_eq!(docs.len(), 2);
        for d in &docs {
            assert_eq!(d["metadata"]["namespace"], ns, "{file}: {}", d["kind"]);
            assert_eq!(d["spec"]["exportTo"], json!(["."]));
        }
        let se = docs
            .iter()
            .find(|d| d["kind"] == "ServiceEntry")
            .expect("ServiceEntry");
        let errors = validate_spec(&service_entry_crd(), &se["spec"]);
        assert!(errors.is_empty(), "{errors:#?}");
        let config =
            parse_plugin_config(&te["spec"]["wasm"]["pluginConfig"]).expect("valid config");
        for provider in &config.providers {
            if let jwt_guard::config::JwksSource::Remote(r) = &provider.jwks {
                let host = r.cluster.rsplit('|').next().unwrap_or_default();
                assert!(
                    se["spec"]["hosts"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|h| h == host),
                    "{file}: cluster {} is not the ServiceEntry's host",
                    r.cluster
                );
                let dr = docs
                    .iter()
                    .find(|d| d["kind"] == "DestinationRule")
                    .unwrap();
                assert_eq!(dr["spec"]["host"], host);
            }
        }
    }
}

// ---------- where Istio attaches an extension (its `match`), emulated ----------

/// Istio's listener classes (`pilot/pkg/networking`). A waypoint builds its HTTP filters with the
/// sidecar-inbound class and looks extensions up without a port (port 0).
#[derive(Clone, Copy, Debug)]
enum ListenerClass {
    Gateway,
    SidecarInbound,
    SidecarOutbound,
}

/// Istio's `workloadModeForListenerClass`: a gateway's listeners are CLIENT traffic.
fn workload_mode(class: ListenerClass) -> &'static str {
    match class {
        ListenerClass::Gateway | ListenerClass::SidecarOutbound => "CLIENT",
        ListenerClass::SidecarInbound => "SERVER",
    }
}

/// Istio's traffic-selector matching (`matchTrafficSelectors`, `matchMode`, `matchPorts`): whether an
/// extension with this `match` list is put on a listener of `class` for destination `port` (0 when the
/// lookup carries no port). No list, or an empty one, matches everything; otherwise any one selector
/// must match both its mode (absent, UNDEFINED and CLIENT_AND_SERVER match every class) and, if it lists
/// ports, the port.
fn istio_attaches(matches: &Value, class: ListenerClass, port: u64) -> bool {
    let selectors = matches.as_array().map(Vec::as_slice).unwrap_or_default();
    if selectors.is_empty() {
        return true;
    }
    selectors.iter().any(|sel| {
        let mode_ok = match sel["mode"].as_str() {
            None | Some("UNDEFINED" | "CLIENT_AND_SERVER") => true,
            Some(mode) => mode == workload_mode(class),
        };
        let ports = sel["ports"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default();
        let port_ok = ports.is_empty()
            || ports
                .iter()
                .any(|p| p["number"].as_u64().is_some_and(|n| n != 0 && n == port));
        mode_ok && port_ok
    })
}

/// What keeps a waypoint from applying this spec: waypoints ignore `selector` policies and need
/// `targetRefs` to a Service (`group: ""` or `core`) or to the waypoint Gateway, in the same namespace.
fn waypoint_attachment_problems(spec: &Value) -> Vec<String> {
    let mut out = Vec::new();
    if has(spec, "selector") {
        out.push("a waypoint ignores `selector`".to_owned());
    }
    let refs = spec["targetRefs"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    if refs.is_empty() {
        out.push("a waypoint needs `targetRefs`".to_owned());
    }
    for r in refs {
        let group = r["group"].as_str().unwrap_or_default();
        let kind = r["kind"].as_str().unwrap_or_default();
        let ok = matches!(
            (group, kind),
            ("" | "core", "Service") | ("gateway.networking.k8s.io", "Gateway")
        );
        if !ok {
            out.push(format!(
                "targetRef {group}/{kind} does not attach to a waypoint"
            ));
        }
    }
    if !istio_attaches(&spec["match"], ListenerClass::SidecarInbound, 0) {
        out.push("`match` never matches a waypoint's filter chain".to_owned());
    }
    out
}

#[test]
fn extensions_attach_to_the_traffic_they_are_meant_for() {
    // The ingress gateway's WasmPlugin: on the gateway's listeners, for each port it lists.
    let wp = find_doc("WasmPlugin")["spec"].clone();
    assert_eq!(
        wp["selector"]["matchLabels"],
        json!({ "istio": "ingressgateway" })
    );
    let ports: Vec<u64> = wp["match"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|m| m["ports"].as_array().cloned().unwrap_or_default())
        .filter_map(|p| p["number"].as_u64())
        .collect();
    assert!(
        !ports.is_empty(),
        "the WasmPlugin should name the gateway's ports"
    );
    for port in ports {
        assert!(
            istio_attaches(&wp["match"], ListenerClass::Gateway, port),
            "wasmplugin.yaml: Istio would not attach the plugin to the gateway's port {port}"
        );
    }
    // The sidecar: chosen by label; on the application's inbound port, and not on its outgoing calls.
    let sidecar = traffic_extension(SIDECAR_EXTENSION)["spec"].clone();
    assert!(
        sidecar["selector"]["matchLabels"].is_object(),
        "sidecars are selected by label"
    );
    assert!(!has(&sidecar, "targetRefs"));
    assert!(
        sidecar["selector"]["matchLabels"].get("istio").is_none(),
        "the sidecar example must not select the ingress gateway"
    );
    let inbound: Vec<u64> = sidecar["match"][0]["ports"]
        .as_array()
        .expect("the application's port")
        .iter()
        .filter_map(|p| p["number"].as_u64())
        .collect();
    for port in &inbound {
        assert!(istio_attaches(
            &sidecar["match"],
            ListenerClass::SidecarInbound,
            *port
        ));
        assert!(!istio_attaches(
            &sidecar["match"],
            ListenerClass::SidecarOutbound,
            *port
        ));
    }
    assert!(!istio_attaches(
        &sidecar["match"],
        ListenerClass::Gateway,
        inbound[0]
    ));
    // The waypoint: targetRefs only, and a match that a waypoint's (portless) lookup satisfies.
    let waypoint = traffic_extension(WAYPOINT_EXTENSION)["spec"].clone();
    let problems = waypoint_attachment_problems(&waypoint);
    assert!(problems.is_empty(), "{WAYPOINT_EXTENSION}: {problems:#?}");
}

#[test]
fn crd_files_match_the_sha256_in_source_md() {
    use sha2::{Digest, Sha256};
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/istio");
    let source = std::fs::read_to_string(dir.join("SOURCE.md")).expect("SOURCE.md");
    for file in CRD_FILES {
        let marker = format!("sha256 of `{file}`:");
        let at = source
            .find(&marker)
            .unwrap_or_else(|| panic!("SOURCE.md records no sha256 of {file}"));
        let recorded = source[at + marker.len()..]
            .split('`')
            .nth(1)
            .expect("a `hash` after the marker");
        let bytes = std::fs::read(dir.join(file)).expect("readable");
        let actual: String = Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            recorded, actual,
            "{file} is not the copy SOURCE.md describes"
        );
    }
}

// ---------- negative tests: the checks above do catch real mistakes ----------

fn mutated_plugin(edit: impl FnOnce(&mut Value)) -> Vec<String> {
    let mut plugin = find_doc("WasmPlugin");
    edit(&mut plugin["spec"]);
    validate_spec(&wasm_plugin_crd(), &plugin["spec"])
}

fn mutated_service_entry(edit: impl FnOnce(&mut Value)) -> Vec<String> {
    let mut se = find_doc("ServiceEntry");
    edit(&mut se["spec"]);
    validate_spec(&service_entry_crd(), &se["spec"])
}

fn assert_refused(errors: &[String], needle: &str) {
    assert!(
        errors.iter().any(|e| e.contains(needle)),
        "expected an error mentioning {needle:?}, got {errors:#?}"
    );
}

#[test]
fn schema_refuses_bad_enum_values() {
    assert_refused(
        &mutated_plugin(|s| s["phase"] = json!("AUTHZN")),
        "spec/phase",
    );
    assert_refused(
        &mutated_plugin(|s| s["failStrategy"] = json!("FAIL_OPEN_X")),
        "spec/failStrategy",
    );
    assert_refused(
        &mutated_plugin(|s| s["match"][0]["mode"] = json!("INBOUND")),
        "spec/match/0/mode",
    );
    assert_refused(
        &mutated_service_entry(|s| s["resolution"] = json!("DNS_RR")),
        "spec/resolution",
    );
}

#[test]
fn misspelled_fields_are_refused_although_the_crds_do_not_forbid_them() {
    // The CRDs never say `additionalProperties: false`: Kubernetes prunes (and kubectl's strict field
    // validation refuses) unknown fields. Plain JSON-schema validation of the raw CRD schema would let
    // a typo through; the structural-pruning emulation catches it.
    let typo = |s: &mut Value| {
        let v = s.as_object_mut().unwrap().remove("failStrategy").unwrap();
        s["failStrategey"] = v;
    };
    let mut plugin = find_doc("WasmPlugin");
    typo(&mut plugin["spec"]);
    let raw_crd_schema = wasm_plugin_crd().schema["properties"]["spec"].clone();
    let mut raw_only = raw_crd_schema.clone();
    strip_k8s_extensions(&mut raw_only);
    assert!(
        schema_errors(&raw_only, &plugin["spec"]).is_empty(),
        "the raw CRD schema alone already refuses unknown fields: the emulation is not needed"
    );
    assert_refused(&mutated_plugin(typo), "failStrategey");
    assert_refused(
        &mutated_plugin(|s| s["selector"]["matchLabel"] = json!({ "istio": "ingressgateway" })),
        "matchLabel",
    );
    assert_refused(
        &mutated_plugin(|s| s["match"][0]["port"] = json!([{ "number": 8080 }])),
        "port",
    );
    assert_refused(
        &mutated_service_entry(|s| s["ports"][0]["protocl"] = json!("HTTPS")),
        "protocl",
    );
    // pluginConfig is x-kubernetes-preserve-unknown-fields: anything goes for the CRD...
    let errors =
        mutated_plugin(|s| s["pluginConfig"]["providers"]["corp"]["audiance"] = json!(["x"]));
    assert!(errors.is_empty(), "{errors:#?}");
}

/// Only the `x-kubernetes-*` keys removed (and nullable/int-or-string made JSON schema), without the
/// pruning emulation: what a naive validator would check.
fn strip_k8s_extensions(v: &mut Value) {
    match v {
        Value::Object(m) => {
            if m.remove("x-kubernetes-int-or-string").is_some() {
                m.remove("type");
            }
            m.retain(|k, _| !k.starts_with("x-kubernetes-") && k != "nullable" && k != "format");
            for (_, x) in m.iter_mut() {
                strip_k8s_extensions(x);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(strip_k8s_extensions),
        _ => {}
    }
}

#[test]
fn plugin_config_mistakes_are_caught_by_jwt_guard_not_by_the_crd() {
    let plugin = find_doc("WasmPlugin");
    // ...so the filter's own strict parser is the check that catches a typo in it.
    let mut config = plugin["spec"]["pluginConfig"].clone();
    config["providers"]["corp"]["audiance"] = json!(["api://portal"]);
    let e = parse_plugin_config(&config).unwrap_err();
    assert!(e.to_string().contains("audiance"), "{e}");
    // An unquoted `mode: off` arrives as a boolean (YAML 1.1): refused, and with FAIL_CLOSE the
    // gateway would reject traffic. The lint below finds it in the manifest first.
    let mut config = plugin["spec"]["pluginConfig"].clone();
    config["rules"][0]["mode"] = json!(false);
    let e = parse_plugin_config(&config).unwrap_err();
    assert!(e.to_string().contains("rules[0].mode"), "{e}");
    let text = example_text("wasmplugin.yaml").replacen("mode: shadow", "mode: off", 1);
    assert_eq!(
        yaml11_boolean_lines(&text).len(),
        1,
        "the lint must flag `mode: off`"
    );
    let quoted = example_text("wasmplugin.yaml").replacen("mode: shadow", "mode: \"off\"", 1);
    assert!(yaml11_boolean_lines(&quoted).is_empty());
    // A cluster that is not Istio's outbound|443||host form fails the cross-check's first assertion.
    let mut config = plugin["spec"]["pluginConfig"].clone();
    config["providers"]["corp"]["remote_jwks"]["http_uri"]["cluster"] = json!("idp");
    let parsed = parse_plugin_config(&config).expect("still a valid jwt-guard config");
    let jwt_guard::config::JwksSource::Remote(r) = &parsed.providers[0].jwks else {
        panic!("remote expected")
    };
    assert_ne!(r.cluster.split('|').count(), 4);
}

#[test]
fn cel_rules_are_emulated_and_enforced() {
    // ServiceEntry's port number schema allows up to 4294967295; only a CEL rule says 1-65535.
    let errors = mutated_service_entry(|s| s["ports"][0]["number"] = json!(70000));
    assert_refused(&errors, "port must be between 1-65535");
    assert_refused(
        &mutated_service_entry(|s| s["hosts"] = json!(["*"])),
        "hostname cannot be wildcard",
    );
    assert_refused(
        &mutated_plugin(|s| s["url"] = json!("ftp://registry.example.com/jwt-guard.wasm")),
        "url must have schema",
    );
    assert_refused(
        &mutated_plugin(|s| s["targetRefs"] = json!([{ "kind": "Gateway", "name": "gw" }])),
        "only one of targetRefs or selector",
    );
    // Schema constraints beyond enums.
    assert_refused(
        &mutated_plugin(|s| s["sha256"] = json!("not-a-digest")),
        "spec/sha256",
    );
    assert_refused(
        &mutated_plugin(|s| s["match"][0]["ports"][0]["number"] = json!(0)),
        "spec/match/0/ports/0/number",
    );
    assert_refused(
        &mutated_service_entry(|s| {
            s.as_object_mut().unwrap().remove("hosts");
        }),
        "hosts",
    );
    // A CEL rule with no emulation is reported, not skipped.
    let crd = CrdVersion {
        served: true,
        namespaced: true,
        schema: json!({ "properties": { "spec": {
            "type": "object",
            "x-kubernetes-validations": [{ "rule": "self.x == 1", "message": "x must be 1" }]
        }}}),
    };
    assert_refused(&validate_spec(&crd, &json!({})), "has no emulation");
}

fn mutated_traffic_extension(file: &str, edit: impl FnOnce(&mut Value)) -> Vec<String> {
    let mut te = traffic_extension(file);
    edit(&mut te["spec"]);
    validate_spec(&traffic_extension_crd(), &te["spec"])
}

#[test]
fn traffic_extension_crd_refuses_mistakes() {
    for file in TRAFFIC_EXTENSION_FILES {
        // Required fields.
        assert_refused(
            &mutated_traffic_extension(file, |s| {
                s["wasm"].as_object_mut().unwrap().remove("url");
            }),
            "\"url\" is a required property",
        );
        // Neither wasm nor lua (the schema's oneOf admits it; only the CEL rule refuses it)...
        let errors = mutated_traffic_extension(file, |s| {
            s.as_object_mut().unwrap().remove("wasm");
        });
        assert_refused(&errors, "exactly one of wasm or lua must be set");
        // ...and both.
        let errors = mutated_traffic_extension(file, |s| {
            s["lua"] = json!({ "inlineCode": "function envoy_on_request(h) end" });
        });
        assert_refused(&errors, "exactly one of wasm or lua must be set");
        assert_refused(
            &errors,
            "more than one of the schemas listed in the 'oneOf'",
        );
        // A WasmPlugin carried over without moving its fields under `wasm`.
        let errors = mutated_traffic_extension(file, |s| {
            let wasm = s.as_object_mut().unwrap().remove("wasm").unwrap();
            for (k, v) in wasm.as_object().unwrap() {
                s[k.as_str()] = v.clone();
            }
        });
        assert_refused(&errors, "exactly one of wasm or lua must be set");
        assert_refused(&errors, "'url'");
        assert_refused(&errors, "'pluginConfig'");
        // WasmPlugin-only spellings.
        assert_refused(
            &mutated_traffic_extension(file, |s| s["phase"] = json!("UNSPECIFIED_PHASE")),
            "spec/phase",
        );
        assert_refused(
            &mutated_traffic_extension(file, |s| {
                s["targetRef"] = json!({ "kind": "Service", "name": "portal" });
            }),
            "'targetRef'",
        );
        // Typos and bad values inside `wasm`.
        assert_refused(
            &mutated_traffic_extension(file, |s| {
                let v = s["wasm"]
                    .as_object_mut()
                    .unwrap()
                    .remove("failStrategy")
                    .unwrap();
                s["wasm"]["failStrategey"] = v;
            }),
            "failStrategey",
        );
        assert_refused(
            &mutated_traffic_extension(file, |s| s["wasm"]["failStrategy"] = json!("FAIL_CLOSED")),
            "spec/wasm/failStrategy",
        );
        assert_refused(
            &mutated_traffic_extension(file, |s| s["wasm"]["sha256"] = json!("sha256:0123")),
            "spec/wasm/sha256",
        );
        assert_refused(
            &mutated_traffic_extension(file, |s| {
                s["wasm"]["url"] = json!("ftp://registry.example.com/jwt-guard.wasm");
            }),
            "url must have schema",
        );
        // pluginConfig is free-form for the CRD; jwt-guard's parser is what catches a typo in it.
        let errors = mutated_traffic_extension(file, |s| {
            s["wasm"]["pluginConfig"]["providers"]["corp"]["audiance"] = json!(["x"]);
        });
        assert!(errors.is_empty(), "{errors:#?}");
        let mut config = traffic_extension(file)["spec"]["wasm"]["pluginConfig"].clone();
        config["providers"]["corp"]["audiance"] = json!(["api://portal"]);
        let e = parse_plugin_config(&config).unwrap_err();
        assert!(e.to_string().contains("audiance"), "{e}");
    }
    // selector and targetRefs together; a cross-namespace targetRef.
    assert_refused(
        &mutated_traffic_extension(SIDECAR_EXTENSION, |s| {
            s["targetRefs"] = json!([{ "kind": "Service", "group": "", "name": "portal" }]);
        }),
        "only one of targetRefs or selector",
    );
    assert_refused(
        &mutated_traffic_extension(WAYPOINT_EXTENSION, |s| {
            s["selector"] = json!({ "matchLabels": { "app": "portal" } });
        }),
        "only one of targetRefs or selector",
    );
    assert_refused(
        &mutated_traffic_extension(WAYPOINT_EXTENSION, |s| {
            s["targetRefs"][0]["namespace"] = json!("other");
        }),
        "cross namespace referencing is not currently supported",
    );
    assert_refused(
        &mutated_traffic_extension(WAYPOINT_EXTENSION, |s| {
            s["targetRefs"][0]["kind"] = json!("");
        }),
        "spec/targetRefs/0/kind",
    );
}

#[test]
fn attachment_mistakes_are_caught() {
    // The mistake wasmplugin.yaml used to have: SERVER on a gateway is never attached there.
    let wp = find_doc("WasmPlugin")["spec"].clone();
    let mut server = wp["match"].clone();
    server[0]["mode"] = json!("SERVER");
    assert!(!istio_attaches(&server, ListenerClass::Gateway, 8080));
    assert!(istio_attaches(&wp["match"], ListenerClass::Gateway, 8080));
    assert!(!istio_attaches(&wp["match"], ListenerClass::Gateway, 9090));
    // A sidecar extension on CLIENT would filter the application's outgoing calls, not its inbound ones.
    let sidecar = traffic_extension(SIDECAR_EXTENSION)["spec"].clone();
    let mut client = sidecar["match"].clone();
    client[0]["mode"] = json!("CLIENT");
    assert!(!istio_attaches(
        &client,
        ListenerClass::SidecarInbound,
        8080
    ));
    // No match list, or an empty selector: everything.
    assert!(istio_attaches(&Value::Null, ListenerClass::Gateway, 1));
    assert!(istio_attaches(
        &json!([{}]),
        ListenerClass::SidecarOutbound,
        1
    ));
    // Waypoints: ports in the match, a selector, or a target kind a waypoint cannot take.
    let waypoint = traffic_extension(WAYPOINT_EXTENSION)["spec"].clone();
    let mut with_ports = waypoint.clone();
    with_ports["match"][0]["ports"] = json!([{ "number": 8080 }]);
    assert_refused(&waypoint_attachment_problems(&with_ports), "never matches");
    let mut by_label = waypoint.clone();
    by_label.as_object_mut().unwrap().remove("targetRefs");
    by_label["selector"] = json!({ "matchLabels": { "app": "portal" } });
    let problems = waypoint_attachment_problems(&by_label);
    assert_refused(&problems, "ignores `selector`");
    assert_refused(&problems, "needs `targetRefs`");
    let mut deployment = waypoint.clone();
    deployment["targetRefs"][0] =
        json!({ "group": "apps", "kind": "Deployment", "name": "portal" });
    assert_refused(
        &waypoint_attachment_problems(&deployment),
        "apps/Deployment",
    );
    let mut gateway = waypoint;
    gateway["targetRefs"][0] =
        json!({ "group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "waypoint" });
    assert!(waypoint_attachment_problems(&gateway).is_empty());
}

#[test]
fn k8s_extensions_are_read_as_kubernetes_does() {
    let schema = to_json_schema(&json!({
        "type": "object",
        "properties": {
            "n": { "anyOf": [{ "type": "integer" }, { "type": "string" }], "x-kubernetes-int-or-string": true },
            "p": { "type": "integer", "nullable": true },
            "free": { "type": "object", "x-kubernetes-preserve-unknown-fields": true },
            "labels": { "type": "object", "additionalProperties": { "type": "string" } }
        }
    }));
    let ok = json!({ "n": "50%", "p": null, "free": { "any": { "thing": [1] } }, "labels": { "a": "b" } });
    assert!(schema_errors(&schema, &ok).is_empty());
    assert!(schema_errors(&schema, &json!({ "n": 3 })).is_empty());
    assert!(!schema_errors(&schema, &json!({ "n": true })).is_empty());
    assert!(!schema_errors(&schema, &json!({ "labels": { "a": 1 } })).is_empty());
    assert!(!schema_errors(&schema, &json!({ "free": "text" })).is_empty());
    assert!(!schema_errors(&schema, &json!({ "unknown": 1 })).is_empty());
}

// ---------- the edge settings (EnvoyFilter) ----------

const HCM: &str = "envoy.filters.network.http_connection_manager";
const HCM_TYPE: &str =
    "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";

/// The EnvoyFilter's patches of the HTTP connection manager.
fn hcm_patches(envoy_filter: &Value) -> Vec<Value> {
    envoy_filter["spec"]["configPatches"]
        .as_array()
        .expect("configPatches")
        .iter()
        .filter(|p| {
            p["applyTo"] == "NETWORK_FILTER"
                && p["match"]["listener"]["filterChain"]["filter"]["name"] == HCM
        })
        .cloned()
        .collect()
}

#[test]
fn edge_settings_envoyfilter_patches_the_gateway_that_runs_jwt_guard() {
    let plugin = find_doc("WasmPlugin");
    let ef = find_doc("EnvoyFilter");
    // The same pods as the WasmPlugin, in the same namespace (an EnvoyFilter with a workloadSelector
    // applies to pods in its own namespace only).
    assert_eq!(ef["metadata"]["namespace"], plugin["metadata"]["namespace"]);
    assert_eq!(
        ef["spec"]["workloadSelector"]["labels"], plugin["spec"]["selector"]["matchLabels"],
        "the EnvoyFilter must select the WasmPlugin's gateway"
    );
    let patches = hcm_patches(&ef);
    assert_eq!(patches.len(), 1, "one patch of the HCM: {patches:#?}");
    let p = &patches[0];
    assert_eq!(p["match"]["context"], "GATEWAY");
    assert_eq!(p["patch"]["operation"], "MERGE");
    let hcm = &p["patch"]["value"]["typed_config"];
    assert_eq!(hcm["@type"], HCM_TYPE);
    assert_eq!(
        hcm["common_http_protocol_options"]["headers_with_underscores_action"],
        "DROP_HEADER"
    );
    assert_eq!(hcm["strip_trailing_host_dot"], true);
}

/// Protobuf MERGE as Istio applies it: messages merge field by field, repeated fields append, scalars
/// replace.
fn proto_merge(into: &mut Value, patch: &Value) {
    match (into, patch) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                match a.get_mut(k) {
                    Some(existing) => proto_merge(existing, v),
                    None => {
                        a.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (Value::Array(a), Value::Array(b)) => a.extend(b.iter().cloned()),
        (slot, v) => *slot = v.clone(),
    }
}

/// The harness's no-wasm bootstrap with `patch` merged into its HCM, validated by the real Envoy.
fn validate_with_hcm_patch(patch: &Value) -> Result<(), String> {
    use wasm_test_harness::envoy::{self, EnvoyOptions};
    let opts = EnvoyOptions {
        template: Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/noop-envoy.yaml"),
        // The no-wasm template echoes this into a header value: keep it on one line.
        plugin_config: "{}".to_owned(),
        ..EnvoyOptions::default()
    };
    let rendered = opts.render_config(0, 0)?;
    let mut bootstrap: Value = serde_json::to_value(
        serde_yaml::from_str::<serde_yaml::Value>(&rendered).map_err(|e| e.to_string())?,
    )
    .map_err(|e| e.to_string())?;
    let mut merged = 0;
    for listener in bootstrap["static_resources"]["listeners"]
        .as_array_mut()
        .expect("listeners")
    {
        for chain in listener["filter_chains"].as_array_mut().expect("chains") {
            for filter in chain["filters"].as_array_mut().expect("filters") {
                if filter["name"] == HCM {
                    proto_merge(filter, patch);
                    merged += 1;
                }
            }
        }
    }
    assert_eq!(merged, 1, "the bootstrap has one HCM");
    let dir = std::env::temp_dir().join(format!("jwt-guard-istio-ef-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let path = dir.join(format!("bootstrap-{n}.json"));
    std::fs::write(&path, bootstrap.to_string()).map_err(|e| e.to_string())?;
    let result = envoy::validate(&path);
    let _ = std::fs::remove_file(&path);
    result
}

#[test]
fn edge_settings_patch_is_accepted_by_envoy_and_typos_in_it_are_not() {
    // patch.value is free-form for the CRD (preserve-unknown-fields): only Envoy can check it.
    let ef = find_doc("EnvoyFilter");
    let patch = hcm_patches(&ef)[0]["patch"]["value"].clone();
    validate_with_hcm_patch(&patch).unwrap_or_else(|e| panic!("the EnvoyFilter's patch: {e}"));
    let mut bad_enum = patch.clone();
    bad_enum["typed_config"]["common_http_protocol_options"]["headers_with_underscores_action"] =
        json!("DROP_HEADERS");
    let e =
        validate_with_hcm_patch(&bad_enum).expect_err("an unknown enum value must not validate");
    assert!(e.contains("DROP_HEADERS"), "{e}");
    let mut bad_field = patch.clone();
    let v = bad_field["typed_config"]
        .as_object_mut()
        .unwrap()
        .remove("strip_trailing_host_dot")
        .unwrap();
    bad_field["typed_config"]["strip_trailing_host_dots"] = v;
    let e = validate_with_hcm_patch(&bad_field).expect_err("a misspelled field must not validate");
    assert!(e.contains("strip_trailing_host_dots"), "{e}");
}

#[test]
fn envoyfilter_schema_refuses_bad_values() {
    let refuse = |edit: &dyn Fn(&mut Value), needle: &str| {
        let mut ef = find_doc("EnvoyFilter");
        edit(&mut ef["spec"]);
        assert_refused(&validate_spec(&envoy_filter_crd(), &ef["spec"]), needle);
    };
    refuse(
        &|s| s["configPatches"][0]["applyTo"] = json!("NETWORK_FILTERS"),
        "spec/configPatches/0/applyTo",
    );
    refuse(
        &|s| s["configPatches"][0]["patch"]["operation"] = json!("MERGED"),
        "spec/configPatches/0/patch/operation",
    );
    refuse(
        &|s| s["configPatches"][0]["match"]["context"] = json!("INGRESS"),
        "spec/configPatches/0/match/context",
    );
    refuse(
        &|s| s["configPatches"][0]["match"]["listner"] = json!({}),
        "listner",
    );
    refuse(
        &|s| s["targetRefs"] = json!([{ "kind": "Gateway", "name": "gw" }]),
        "only one of targetRefs or workloadSelector",
    );
    refuse(
        &|s| s["configPatches"][0]["match"]["waypoint"] = json!({}),
        "only support waypointMatch when context is WAYPOINT",
    );
}
