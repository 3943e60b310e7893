//! The test API server answers like the real kube-apiserver did in the recordings of
//! `tests/fixtures/k8s-wire` (KMM 2.4 CRDs installed): the same requests, the same answers.

use crate::support;

use http_body_util::BodyExt;
use serde_json::{Value, json};
use support::apiserver::{ApiServer, Kmm};

const WIRE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/k8s-wire");
const PVO: &str = "/apis/kmm.sigs.x-k8s.io/v1beta2/preflightvalidationsocp";

fn recorded_json(name: &str) -> Value {
    let text = std::fs::read_to_string(format!("{WIRE}/{name}")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// A recorded `.http` answer: status code, headers, JSON body.
fn recorded_http(name: &str) -> (u16, Vec<(String, String)>, Value) {
    let text = std::fs::read_to_string(format!("{WIRE}/{name}"))
        .unwrap()
        .replace("\r\n", "\n");
    let (head, body) = text.split_once("\n\n").unwrap();
    let mut lines = head.lines();
    let code = lines
        .next()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    (code, headers, serde_json::from_str(body).unwrap())
}

struct Answer {
    code: u16,
    headers: http::HeaderMap,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

async fn client(api: &ApiServer) -> kube::Client {
    let config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::from_yaml(&api.kubeconfig()).unwrap(),
        &Default::default(),
    )
    .await
    .unwrap();
    kube::Client::try_from(config).unwrap()
}

async fn send(
    client: &kube::Client,
    method: &str,
    uri: &str,
    content_type: &str,
    body: Option<Value>,
) -> Answer {
    let body = body
        .map(|b| serde_json::to_vec(&b).unwrap())
        .unwrap_or_default();
    let request = http::Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", content_type)
        .body(kube::client::Body::from(body))
        .unwrap();
    let response = client.send(request).await.unwrap();
    let code = response.status().as_u16();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    Answer {
        code,
        headers,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

fn pvo(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "kmm.sigs.x-k8s.io/v1beta2", "kind": "PreflightValidationOCP", "metadata": {"name": name}, "spec": spec})
}

fn the_spec() -> Value {
    json!({
        "dtkImage": "quay.io/openshift-release-dev/ocp-v4.0-art-dev@sha256:fe0322730440f1cbe6fffaaa8cac131b56574bec8abe3ec5b462e17557fecb32",
        "kernelVersion": "5.14.0-570.19.1.el9_6.x86_64",
        "pushBuiltImage": false
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn discovery_answers_like_the_recordings() {
    let api = ApiServer::start(Kmm::Ocp24).await;
    let client = client(&api).await;
    let json_type = "application/json";
    assert_eq!(
        send(&client, "GET", "/api", json_type, None).await.json(),
        recorded_json("get-api.json")
    );
    assert_eq!(
        send(&client, "GET", "/apis/kmm.sigs.x-k8s.io", json_type, None)
            .await
            .json(),
        recorded_json("get-apis-kmm.json")
    );
    // The groups of the trimmed recording that this server has (no apps), listed the same way.
    let groups = send(&client, "GET", "/apis", json_type, None).await.json();
    for g in recorded_json("get-apis.trimmed.json")["groups"]
        .as_array()
        .unwrap()
    {
        if g["name"] == "apps" {
            continue;
        }
        let ours = groups["groups"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["name"] == g["name"]);
        assert_eq!(ours, Some(g), "group {}", g["name"]);
    }
    // Every resource we serve is listed as the real server lists it (we serve no MIC/MBSC).
    for version in ["v1beta1", "v1beta2"] {
        let ours = send(
            &client,
            "GET",
            &format!("/apis/kmm.sigs.x-k8s.io/{version}"),
            json_type,
            None,
        )
        .await
        .json();
        assert_eq!(ours["kind"], "APIResourceList");
        let recorded = recorded_json(&format!("get-apis-kmm-{version}.json"));
        for mine in ours["resources"].as_array().unwrap() {
            let Some(theirs) = recorded["resources"]
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["name"] == mine["name"])
            else {
                // The recorded cluster had no day-1 CRD: its names come from the CRD itself.
                assert_eq!(mine["kind"], "BootModuleConfig", "{mine}");
                assert_eq!(mine["namespaced"], true);
                if mine["name"] == "bootmoduleconfigs/status" {
                    assert_eq!(mine["verbs"], json!(["get", "patch", "update"]));
                } else {
                    assert_eq!(mine["name"], "bootmoduleconfigs", "{mine}");
                    assert_eq!(mine["singularName"], "bootmoduleconfig");
                    assert_eq!(mine["shortNames"], json!(["bmc"]));
                }
                continue;
            };
            for key in ["singularName", "namespaced", "kind", "verbs"] {
                assert_eq!(mine[key], theirs[key], "{version} {} {key}", mine["name"]);
            }
            if theirs.get("shortNames").is_some() {
                assert_eq!(mine["shortNames"], theirs["shortNames"]);
            }
        }
    }
    // The CRD through apiextensions: the same served versions, schema and names.
    let crd = send(&client, "GET", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/preflightvalidationsocp.kmm.sigs.x-k8s.io", json_type, None).await.json();
    let recorded = recorded_json("get-crd-preflightvalidationsocp.json");
    assert_eq!(crd["spec"]["names"], recorded["spec"]["names"]);
    assert_eq!(crd["spec"]["versions"], recorded["spec"]["versions"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn writes_and_errors_answer_like_the_recordings() {
    let api = ApiServer::start(Kmm::Ocp24).await;
    let client = client(&api).await;
    let json_type = "application/json";

    let created = send(
        &client,
        "POST",
        PVO,
        json_type,
        Some(pvo("preflight-4-19-0", the_spec())),
    )
    .await;
    let (code, _, recorded) = recorded_http("post-pvo-201.http");
    assert_eq!(created.code, code);
    let created = created.json();
    for key in ["apiVersion", "kind", "spec"] {
        assert_eq!(created[key], recorded[key], "{key}");
    }
    assert_eq!(
        created["metadata"]["generation"],
        recorded["metadata"]["generation"]
    );
    for key in ["uid", "resourceVersion", "creationTimestamp"] {
        assert!(created["metadata"][key].is_string(), "{key}");
    }

    let again = send(
        &client,
        "POST",
        PVO,
        json_type,
        Some(pvo("preflight-4-19-0", the_spec())),
    )
    .await;
    let (code, _, recorded) = recorded_http("post-pvo-409-already-exists.http");
    assert_eq!((again.code, again.json()), (code, recorded));

    let invalid = send(
        &client,
        "POST",
        PVO,
        json_type,
        Some(pvo(
            "bad",
            json!({"pushBuiltImage": "string", "extra": "x"}),
        )),
    )
    .await;
    let (code, headers, recorded) = recorded_http("post-pvo-422-invalid.http");
    assert_eq!((invalid.code, invalid.json()), (code, recorded));
    let warning = headers.iter().find(|(k, _)| k == "warning").unwrap();
    assert_eq!(invalid.headers["warning"].to_str().unwrap(), warning.1);

    let strict = send(
        &client,
        "POST",
        &format!("{PVO}?fieldValidation=Strict"),
        json_type,
        Some(pvo(
            "strict",
            json!({"kernelVersion": "5.14.0-1.el9.x86_64", "bogus": 1}),
        )),
    )
    .await;
    let (code, _, recorded) = recorded_http("post-pvo-400-strict-unknown-field.http");
    assert_eq!((strict.code, strict.json()), (code, recorded));

    let missing = send(
        &client,
        "GET",
        &format!("{PVO}/does-not-exist"),
        json_type,
        None,
    )
    .await;
    let (code, _, recorded) = recorded_http("get-pvo-404.http");
    assert_eq!((missing.code, missing.json()), (code, recorded));

    // The status subresource: what the recording patched, and a bad enum.
    let status = recorded_json("patch-pvo-status-response.json")["status"].clone();
    let patched = send(
        &client,
        "PATCH",
        &format!("{PVO}/preflight-4-19-0/status"),
        "application/merge-patch+json",
        Some(json!({"status": status})),
    )
    .await;
    assert_eq!(patched.code, 200);
    assert_eq!(patched.json()["status"], status);
    let mut bad = status.clone();
    bad["modules"][0]["verificationStage"] = json!("Build");
    bad["modules"][0]["verificationStatus"] = json!("True");
    let rejected = send(
        &client,
        "PATCH",
        &format!("{PVO}/preflight-4-19-0/status"),
        "application/merge-patch+json",
        Some(json!({"status": bad})),
    )
    .await;
    let (code, _, recorded) = recorded_http("patch-pvo-status-422-bad-enum.http");
    assert_eq!((rejected.code, rejected.json()), (code, recorded));

    let deleted = send(
        &client,
        "DELETE",
        &format!("{PVO}/preflight-4-19-0"),
        json_type,
        None,
    )
    .await;
    let (code, _, mut recorded) = recorded_http("delete-pvo-200.http");
    let mut answer = deleted.json();
    assert!(answer["details"]["uid"].is_string());
    answer["details"]["uid"] = json!("");
    recorded["details"]["uid"] = json!("");
    assert_eq!((deleted.code, answer), (code, recorded));
}

#[tokio::test(flavor = "multi_thread")]
async fn watches_answer_like_the_recordings() {
    let api = ApiServer::start(Kmm::Ocp24).await;
    api.set_bookmark_interval(std::time::Duration::from_millis(100));
    let client = client(&api).await;
    send(
        &client,
        "POST",
        PVO,
        "application/json",
        Some(pvo("preflight-4-19-0", the_spec())),
    )
    .await;
    let rv: u64 = api.store.resource_version();
    let status = recorded_json("patch-pvo-status-response.json")["status"].clone();
    send(
        &client,
        "PATCH",
        &format!("{PVO}/preflight-4-19-0/status"),
        "application/merge-patch+json",
        Some(json!({"status": status})),
    )
    .await;

    // From rv: the status change, then bookmarks, as in watch-pvo-stream.jsonl.
    let request = http::Request::builder()
        .uri(format!(
            "{PVO}?watch=true&allowWatchBookmarks=true&resourceVersion={rv}&timeoutSeconds=1"
        ))
        .body(kube::client::Body::empty())
        .unwrap();
    let body = client
        .send(request)
        .await
        .unwrap()
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes();
    let lines: Vec<Value> = String::from_utf8_lossy(&body)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let recorded: Vec<Value> = std::fs::read_to_string(format!("{WIRE}/watch-pvo-stream.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[0]["type"], recorded[0]["type"]);
    assert_eq!(
        lines[0]["object"]["status"],
        recorded[0]["object"]["status"]
    );
    let bookmark = lines
        .iter()
        .find(|l| l["type"] == "BOOKMARK")
        .expect("a bookmark");
    let recorded_bookmark = recorded.iter().find(|l| l["type"] == "BOOKMARK").unwrap();
    assert_eq!(
        bookmark["object"]["kind"],
        recorded_bookmark["object"]["kind"]
    );
    assert_eq!(
        bookmark["object"]["apiVersion"],
        recorded_bookmark["object"]["apiVersion"]
    );
    assert!(bookmark["object"]["metadata"]["resourceVersion"].is_string());

    // From a forgotten resourceVersion: one ERROR line, 410 Expired.
    api.touch();
    api.compact();
    let request = http::Request::builder()
        .uri(format!("{PVO}?watch=true&resourceVersion=1"))
        .body(kube::client::Body::empty())
        .unwrap();
    let body = client
        .send(request)
        .await
        .unwrap()
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes();
    let line: Value = serde_json::from_slice(body.trim_ascii()).unwrap();
    let recorded: Value = recorded_json("watch-pvo-410-too-old.jsonl");
    assert_eq!(line["type"], recorded["type"]);
    let mut object = line["object"].clone();
    assert!(
        object["message"]
            .as_str()
            .unwrap()
            .starts_with("too old resource version: 1 (")
    );
    object["message"] = recorded["object"]["message"].clone();
    assert_eq!(object, recorded["object"]);
}
