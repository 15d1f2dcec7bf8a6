//! The whole stack as plain processes: the real `attestation-agent`, `confidential-data-hub`
//! and `api-server-rest` binaries in front of the test KBS, every REST route and the error
//! codes a real stack can produce, and recovery when the AA and the CDH restart under the
//! REST server.

#![allow(clippy::unwrap_used)]

use std::path::Path;

use stack_tests::kbs::{write_resource, TestKbs, TestKbsConfig};
use stack_tests::stack::{free_port, Binaries, Launch, Running, Workspace};

/// How long the REST server waits for a backend that is down before it answers 503.
const BACKEND_WAIT_MS: &str = "300";

/// The three services' launches, against one KBS.
struct Stack {
    workspace: Workspace,
    aa: Launch,
    cdh: Launch,
    asr: Launch,
    port: u16,
}

impl Stack {
    /// The workspace's own builds, which `cargo test --workspace` puts next to the test KBS.
    fn new(kbs_url: &str) -> Self {
        let binaries = Path::new(env!("CARGO_BIN_EXE_test-kbs")).parent().unwrap();
        let mut workspace = Workspace::new(Binaries::in_dir(binaries).unwrap()).unwrap();
        let aa_socket = workspace.path("aa.sock");
        let aa = workspace
            .aa_on(aa_socket, Some(kbs_url))
            .with_args(&["--tee", "sample"]);
        let cdh_socket = workspace.path("cdh.sock");
        let cdh = workspace
            .cdh_on(cdh_socket, &aa.address, Some(kbs_url))
            .unwrap();
        let port = free_port().unwrap();
        let asr = workspace
            .asr_on(port, &aa.address, &cdh.address)
            .with_args(&["--backend-wait-ms", BACKEND_WAIT_MS]);
        Self {
            workspace,
            aa,
            cdh,
            asr,
            port,
        }
    }

    async fn start_aa(&mut self) -> Running {
        let mut aa = self.workspace.spawn(&self.aa, None, None).unwrap();
        aa.wait_accepting().await.unwrap();
        aa
    }

    async fn start_cdh(&mut self) -> Running {
        let mut cdh = self.workspace.spawn(&self.cdh, None, None).unwrap();
        cdh.wait_accepting().await.unwrap();
        cdh
    }

    async fn start_asr(&mut self) -> Running {
        let mut asr = self.workspace.spawn(&self.asr, None, None).unwrap();
        asr.wait_serving().await.unwrap();
        asr
    }

    fn url(&self, route: &str) -> String {
        format!("http://127.0.0.1:{}{route}", self.port)
    }
}

async fn test_kbs(dir: &Path) -> TestKbs {
    let resources = dir.join("kbs-resources");
    for (path, content) in [
        ("default/key/1", b"\x00stack resource\xff".as_slice()),
        ("default/key/denied", b"never released"),
    ] {
        write_resource(&resources, path, content).unwrap();
    }
    let mut config = TestKbsConfig::new(&resources);
    config.deny = vec!["default/key/denied".into()];
    TestKbs::start(config).await.unwrap()
}

/// Status and body of one request.
async fn call(client: &reqwest::Client, request: reqwest::RequestBuilder) -> (u16, Vec<u8>) {
    let response = client
        .execute(request.build().unwrap())
        .await
        .unwrap_or_else(|e| panic!("no answer: {e}"));
    let status = response.status().as_u16();
    (status, response.bytes().await.unwrap().to_vec())
}

async fn get(client: &reqwest::Client, url: &str) -> (u16, Vec<u8>) {
    call(client, client.get(url)).await
}

fn text(body: &[u8]) -> String {
    String::from_utf8_lossy(body).into_owned()
}

#[tokio::test]
async fn every_route_through_the_real_stack_and_recovery_after_backend_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let kbs = test_kbs(dir.path()).await;
    let mut stack = Stack::new(&kbs.url());
    let aa = stack.start_aa().await;
    let cdh = stack.start_cdh().await;
    let _asr = stack.start_asr().await;
    let client = reqwest::Client::new();

    let (status, body) = get(&client, &stack.url("/info")).await;
    assert_eq!(status, 200, "{}", text(&body));
    assert!(text(&body).contains("sample"), "{}", text(&body));

    let resource = stack.url("/cdh/resource/default/key/1");
    let (status, body) = get(&client, &resource).await;
    assert_eq!(
        (status, body.as_slice()),
        (200, b"\x00stack resource\xff".as_slice())
    );

    let (status, body) = get(&client, &stack.url("/cdh/resource/default/key/denied")).await;
    assert_eq!(status, 403, "{}", text(&body));
    assert!(!text(&body).contains("never released"), "{}", text(&body));

    for bad in [
        "/cdh/resource/default//1",
        "/cdh/resource/default%2Fkey/1/x",
    ] {
        let (status, body) = get(&client, &stack.url(bad)).await;
        assert_eq!(status, 400, "{bad}: {}", text(&body));
    }
    let (status, _) = get(&client, &stack.url("/no/such/route")).await;
    assert_eq!(status, 404);

    let (status, body) = get(&client, &stack.url("/aa/token?token_type=kbs")).await;
    assert_eq!(status, 200, "{}", text(&body));
    let token: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert!(token["token"]
        .as_str()
        .is_some_and(|t| t.split('.').count() == 3));
    assert!(token["tee_keypair"]
        .as_str()
        .unwrap()
        .contains("PRIVATE KEY"));
    let (status, body) = get(&client, &stack.url("/aa/token?token_type=bogus")).await;
    assert_eq!(status, 400, "{}", text(&body));

    let (status, body) = get(&client, &stack.url("/aa/evidence?runtime_data=hello")).await;
    assert_eq!(status, 200, "{}", text(&body));
    let evidence: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert!(evidence["report_data"].is_string(), "{evidence}");
    for bad in [
        "/aa/evidence",
        "/aa/evidence?runtime_data=!!!&encoding=base64",
    ] {
        let (status, body) = get(&client, &stack.url(bad)).await;
        assert_eq!(status, 400, "{bad}: {}", text(&body));
    }
    let (status, body) = get(
        &client,
        &stack.url("/aa/additional-evidence?runtime_data=hello"),
    )
    .await;
    assert_eq!(status, 200, "{}", text(&body));

    let aael = stack.url("/aa/aael");
    let entry = serde_json::json!({"domain": "test", "operation": "boot", "content": "ok"});
    let json = client
        .post(&aael)
        .header("content-type", "application/json")
        .body(entry.to_string());
    let (status, body) = call(&client, json).await;
    assert_eq!(status, 200, "{}", text(&body));
    let (status, _) = call(&client, client.post(&aael).body("{not json")).await;
    assert_eq!(status, 400);
    let (status, _) = call(
        &client,
        client.post(stack.url("/aa/evidence?runtime_data=a")),
    )
    .await;
    assert_eq!(status, 405);

    // The AA goes away: attestation answers 503, resources the CDH holds a session for stay.
    drop(aa);
    let (status, body) = get(&client, &stack.url("/aa/evidence?runtime_data=hello")).await;
    assert_eq!(status, 503, "{}", text(&body));
    let _aa = stack.start_aa().await;
    let (status, body) = get(&client, &stack.url("/aa/evidence?runtime_data=again")).await;
    assert_eq!(status, 200, "after the AA restarted: {}", text(&body));

    drop(cdh);
    let (status, body) = get(&client, &resource).await;
    assert_eq!(status, 503, "{}", text(&body));
    let _cdh = stack.start_cdh().await;
    let (status, body) = get(&client, &resource).await;
    assert_eq!(status, 200, "after the CDH restarted: {}", text(&body));

    kbs.shutdown().await.unwrap();
}
