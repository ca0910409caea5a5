//! The `vmshim` command line against a namespaced agent.

use vminitd_tests::{vmshim_with_input as vmshim, NamespacedAgent};

#[tokio::test]
async fn exec_prints_and_exits_with_the_status() {
    let agent = NamespacedAgent::start().await;
    let url = agent.endpoint.to_string();
    let out = vmshim(&["exec", "--connect", &url, "--", "sh", "-c", "echo hi; exit 42"], b"");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hi\n");
    assert_eq!(out.status.code(), Some(42));

    let out = vmshim(
        &[
            "exec",
            "--connect",
            &url,
            "-e",
            "A=b c",
            "-w",
            "/tmp",
            "--",
            "sh",
            "-c",
            "echo $A; pwd; cat",
        ],
        b"piped\n",
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "b c\n/tmp\npiped\n");
    assert_eq!(out.status.code(), Some(0));

    let out = vmshim(&["exec", "--connect", &url, "--", "sh", "-c", "kill -9 $$"], b"");
    assert_eq!(out.status.code(), Some(137));

    let out = vmshim(&["exec", "--connect", &url, "--", "no-such-program"], b"");
    assert_eq!(out.status.code(), Some(127));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no-such-program"));

    let out = vmshim(&["ping", "--connect", &url], b"");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("vminitd") && text.contains("listening"),
        "{text}"
    );
}

#[test]
fn bad_urls_and_unreachable_agents_are_clear_errors() {
    let out = vmshim(&["ping", "--connect", "tcp:1.2.3.4"], b"");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown scheme"));
    let out = vmshim(&["ping", "--connect", "unix:/nonexistent/agent.sock"], b"");
    assert_eq!(out.status.code(), Some(125));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/agent.sock"));
}
