//! `docs/protocol.md` stays true to `agent-proto`: one section for each op
//! the code knows and no other, every error code and no other, the limits
//! with the values the code has, and every JSON example decoded by
//! `agent-proto` into the type it claims to be, with no field left over.

use std::collections::BTreeSet;

use agent_proto::key::KEY_LINE_LEN;
use agent_proto::{
    parse_request, AttachReply, BootTimeline, CgroupMemory, ContainerCreated, ContainerInfo, ContainerStats, Created,
    ErrorCode, ExitStatus, HelloReply, Op, Open, Outcome, Response, Started, Stats, AGENT_PORT, MAX_FRAME_LEN,
    MAX_OPEN_FRAME_LEN, MAX_SPANS, PROTOCOL_VERSION, READY_LINE,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

const DOC: &str = "docs/protocol.md";

fn doc() -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(DOC);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The lines under the heading `## title`, up to the next `## ` heading.
fn section<'a>(doc: &'a str, title: &str) -> Vec<&'a str> {
    let heading = format!("## {title}");
    let mut lines = doc.lines().skip_while(|line| *line != heading);
    assert!(lines.next().is_some(), "{DOC} has no section \"{heading}\"");
    lines.take_while(|line| !line.starts_with("## ")).collect()
}

/// The sections of `## Ops`: each `### `name`` heading's name and lines.
fn op_sections(doc: &str) -> Vec<(String, Vec<&str>)> {
    let mut sections: Vec<(String, Vec<&str>)> = Vec::new();
    for line in section(doc, "Ops") {
        if let Some(heading) = line.strip_prefix("### ") {
            let name = heading.trim().trim_matches('`');
            sections.push((name.to_owned(), Vec::new()));
        } else if let Some((_, lines)) = sections.last_mut() {
            lines.push(line);
        }
    }
    sections
}

/// The code names in the first column of a table's rows (`| `name` | ...`).
fn first_column_codes<'a>(lines: &[&'a str]) -> Vec<&'a str> {
    lines
        .iter()
        .filter_map(|line| line.strip_prefix("| `"))
        .filter_map(|rest| rest.split_once('`'))
        .map(|(name, _)| name)
        .collect()
}

/// The bodies of the ```json blocks among `lines`, with their first line's
/// number (1-based, within `lines`).
fn json_blocks(lines: &[&str]) -> Vec<(usize, String)> {
    let mut blocks = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (i, line) in lines.iter().enumerate() {
        match (&mut current, line.trim()) {
            (None, "```json") => current = Some((i + 2, String::new())),
            (Some(_), "```") => blocks.extend(current.take()),
            (Some((_, body)), _) => {
                body.push_str(line);
                body.push('\n');
            }
            (None, _) => {}
        }
    }
    assert!(current.is_none(), "{DOC}: a ```json block is not closed");
    blocks
}

fn set<'a>(names: impl IntoIterator<Item = &'a str>) -> BTreeSet<&'a str> {
    names.into_iter().collect()
}

/// The wire names of `Op`'s variants: `Op::NAMES`, which the crate's
/// unit tests hold to serde's own list of the variants.
fn ops_serde_knows() -> Vec<String> {
    Op::NAMES.iter().map(|name| (*name).to_owned()).collect()
}

/// The wire names of `ErrorCode`'s variants: `ErrorCode::ALL`, held to
/// serde's list the same way.
fn codes_serde_knows() -> Vec<String> {
    ErrorCode::ALL.iter().map(|code| code.name().to_owned()).collect()
}

#[test]
fn the_doc_has_a_section_for_every_op_and_no_other() {
    let doc = doc();
    let sections = op_sections(&doc);
    let in_doc = set(sections.iter().map(|(name, _)| name.as_str()));
    assert_eq!(in_doc.len(), sections.len(), "{DOC} has an op section twice");
    let serde_names = ops_serde_knows();
    let in_code = set(serde_names.iter().map(String::as_str));
    let undocumented: Vec<_> = in_code.difference(&in_doc).collect();
    let unknown: Vec<_> = in_doc.difference(&in_code).collect();
    assert!(
        undocumented.is_empty() && unknown.is_empty(),
        "{DOC} and agent-proto disagree on the ops: agent-proto has {undocumented:?} that the doc does not \
         describe (add a `### `name`` section under \"## Ops\"), and the doc describes {unknown:?} that \
         agent-proto's Op does not have"
    );
    assert_eq!(serde_names, Op::NAMES, "Op::NAMES is not the list of Op's variants");
}

#[test]
fn the_doc_lists_every_error_code_and_no_other() {
    let doc = doc();
    let listed = first_column_codes(&section(&doc, "Error codes"));
    let in_doc = set(listed.iter().copied());
    assert_eq!(in_doc.len(), listed.len(), "{DOC} lists an error code twice");
    let serde_names = codes_serde_knows();
    let in_code = set(serde_names.iter().map(String::as_str));
    let undocumented: Vec<_> = in_code.difference(&in_doc).collect();
    let unknown: Vec<_> = in_doc.difference(&in_code).collect();
    assert!(
        undocumented.is_empty() && unknown.is_empty(),
        "{DOC} and agent-proto disagree on the error codes: agent-proto has {undocumented:?} that the \
         table under \"## Error codes\" does not list, and the table lists {unknown:?} that agent-proto's \
         ErrorCode does not have"
    );
    let all: Vec<&str> = ErrorCode::ALL.iter().map(|code| code.name()).collect();
    assert_eq!(
        serde_names, all,
        "ErrorCode::ALL is not the list of ErrorCode's variants"
    );
}

#[test]
fn every_error_an_op_or_an_attach_can_get_is_a_code() {
    let doc = doc();
    let codes = set(ErrorCode::ALL.iter().map(|code| code.name()));
    let mut named = Vec::new();
    for (op, lines) in op_sections(&doc) {
        for line in lines {
            if let Some((code, _)) = line.strip_prefix("- `").and_then(|rest| rest.split_once('`')) {
                named.push((op.clone(), code.to_owned()));
            }
        }
    }
    for code in first_column_codes(&section(&doc, "Opening a connection")) {
        named.push(("attach".to_owned(), code.to_owned()));
    }
    assert!(named.len() > 30, "the op sections list their errors: {named:?}");
    let bad: Vec<_> = named
        .iter()
        .filter(|(_, code)| !codes.contains(code.as_str()) || code == "unknown")
        .collect();
    assert!(
        bad.is_empty(),
        "{DOC} names errors that agent-proto does not send: {bad:?}"
    );
}

#[test]
fn the_limits_are_stated_with_the_values_of_the_code() {
    let doc = doc();
    let constants = [
        ("MAX_FRAME_LEN", MAX_FRAME_LEN as u64),
        ("MAX_SPANS", MAX_SPANS as u64),
        ("MAX_OPEN_FRAME_LEN", MAX_OPEN_FRAME_LEN as u64),
        ("AGENT_PORT", u64::from(AGENT_PORT)),
        ("PROTOCOL_VERSION", u64::from(PROTOCOL_VERSION)),
        ("KEY_LINE_LEN", KEY_LINE_LEN as u64),
    ];
    for (name, value) in constants {
        let stated: Vec<&str> = doc
            .split(&format!("`{name}` = "))
            .skip(1)
            .map(|rest| rest.split(|c: char| !c.is_ascii_digit()).next().unwrap_or(""))
            .collect();
        assert!(!stated.is_empty(), "{DOC} does not state `{name}` = {value}");
        for number in stated {
            assert_eq!(
                number,
                value.to_string(),
                "{DOC} says `{name}` = {number}; agent-proto has {value}"
            );
        }
    }
    let ready = String::from_utf8_lossy(READY_LINE).replace('\n', "\\n");
    assert!(
        doc.contains(&format!("`{ready}`")),
        "{DOC} does not show the readiness line `{ready}`"
    );
}

/// Whether an op's `ok` decodes into the op's answer type, as
/// [`decodes_whole`] checks it (or is `null`, for the ops that answer that).
fn check_answer(op: &str, ok: &Value) -> Result<(), String> {
    match op {
        "hello" => {
            let reply: HelloReply = decodes_whole(ok)?;
            if reply.version != PROTOCOL_VERSION {
                return Err(format!(
                    "the agent's version is {PROTOCOL_VERSION}, not {}",
                    reply.version
                ));
            }
            Ok(())
        }
        "create" | "exec_container" => decodes_whole::<Created>(ok).map(drop),
        "start" | "start_container" => decodes_whole::<Started>(ok).map(drop),
        "wait" => decodes_whole::<ExitStatus>(ok).map(drop),
        "stats" => decodes_whole::<Stats>(ok).map(drop),
        "timeline" => decodes_whole::<BootTimeline>(ok).map(drop),
        "create_container" => decodes_whole::<ContainerCreated>(ok).map(drop),
        "container_state" => decodes_whole::<ContainerInfo>(ok).map(drop),
        "list_containers" => decodes_whole::<Vec<ContainerInfo>>(ok).map(drop),
        "container_stats" => decodes_whole::<ContainerStats>(ok).map(drop),
        "resize_workloads" => decodes_whole::<CgroupMemory>(ok).map(drop),
        "signal" | "resize" | "configure_network" | "shutdown" | "kill_container" | "delete_container"
        | "pause_container" | "resume_container" | "update_container" => match ok {
            Value::Null => Ok(()),
            other => Err(format!("answers null, not {other}")),
        },
        other => Err(format!(
            "this test does not know what {other} answers: add it to check_answer in {}",
            file!()
        )),
    }
}

/// Decodes `value` as a `T` and checks that encoding it again keeps every
/// field the example wrote (but those at their default): a misspelt or
/// stale field, which serde would skip, fails here.
fn decodes_whole<T: DeserializeOwned + Serialize>(value: &Value) -> Result<T, String> {
    let decoded: T = serde_json::from_value(value.clone()).map_err(|e| e.to_string())?;
    let again = serde_json::to_value(&decoded).map_err(|e| e.to_string())?;
    let mut lost = Vec::new();
    lost_fields(value, &again, "", &mut lost);
    if lost.is_empty() {
        Ok(decoded)
    } else {
        Err(format!("fields the type does not have: {lost:?}"))
    }
}

/// The fields of `written` that `again` lacks, unless they are empty,
/// zero, false or null (which types leave out when they encode).
fn lost_fields(written: &Value, again: &Value, at: &str, lost: &mut Vec<String>) {
    match (written, again) {
        (Value::Object(fields), Value::Object(kept)) => {
            for (name, value) in fields {
                let path = format!("{at}.{name}");
                match kept.get(name) {
                    Some(back) => lost_fields(value, back, &path, lost),
                    None if is_default(value) => {}
                    None => lost.push(path),
                }
            }
        }
        (Value::Array(items), Value::Array(back)) => {
            for (i, (item, again)) in items.iter().zip(back).enumerate() {
                lost_fields(item, again, &format!("{at}[{i}]"), lost);
            }
        }
        _ => {}
    }
}

fn is_default(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
    }
}

/// What one example is, once decoded.
#[derive(Debug, PartialEq)]
enum Example {
    Request { op: String },
    Answer,
    Open,
    AttachReply,
}

/// Decodes one example as what its fields say it is.
fn decode_example(value: &Value, op_section: Option<&str>) -> Result<Example, String> {
    let Some(object) = value.as_object() else {
        return Err("not a JSON object".into());
    };
    let known_code = |error: &Value| -> Result<(), String> {
        let code: ErrorCode = serde_json::from_value(error["code"].clone()).map_err(|e| e.to_string())?;
        match code {
            ErrorCode::Unknown => Err(format!("{} is not an error code", error["code"])),
            _ => Ok(()),
        }
    };
    if object.contains_key("op") {
        let request = parse_request(value.to_string().as_bytes()).map_err(|(_, e)| e.to_string())?;
        decodes_whole::<agent_proto::Request>(value)?;
        let op = request.op.name();
        if let Some(section) = op_section {
            if op != section {
                return Err(format!("a request for {op} in the section of {section}"));
            }
        }
        if let Op::Hello { version, .. } = request.op {
            if version != PROTOCOL_VERSION {
                return Err(format!(
                    "hello names version {version}; the protocol is at {PROTOCOL_VERSION}"
                ));
            }
        }
        return Ok(Example::Request { op: op.to_owned() });
    }
    if object.contains_key("open") {
        decodes_whole::<Open>(value)?;
        return Ok(Example::Open);
    }
    if object.contains_key("id") {
        let response: Response = decodes_whole(value)?;
        match (&response.outcome, op_section) {
            (Outcome::Ok(ok), Some(op)) => check_answer(op, ok)?,
            (Outcome::Ok(_), None) => {}
            (Outcome::Err(_), _) => known_code(&value["err"])?,
        }
        return Ok(Example::Answer);
    }
    let reply: AttachReply = decodes_whole(value)?;
    if let Outcome::Err(_) = reply {
        known_code(&value["err"])?;
    }
    Ok(Example::AttachReply)
}

#[test]
fn every_json_example_decodes_into_the_type_it_shows() {
    let doc = doc();
    let mut failures = Vec::new();
    let mut decoded = 0;
    // The examples outside the op sections: Open frames, attach replies,
    // the shapes of requests and answers.
    let lines: Vec<&str> = doc.lines().collect();
    let ops_start = lines.iter().position(|l| *l == "## Ops").expect("## Ops");
    let ops_end = lines[ops_start + 1..]
        .iter()
        .position(|l| l.starts_with("## "))
        .map_or(lines.len(), |i| ops_start + 1 + i);
    let outside: Vec<&str> = lines[..ops_start].iter().chain(&lines[ops_end..]).copied().collect();
    for (line, body) in json_blocks(&outside) {
        let value: Result<Value, _> = serde_json::from_str(&body);
        match value.map_err(|e| e.to_string()).and_then(|v| decode_example(&v, None)) {
            Ok(_) => decoded += 1,
            Err(e) => failures.push(format!("example near line {line} outside the op sections: {e}\n{body}")),
        }
    }
    // Each op section: requests for that op, answers of that op's type.
    for (op, section_lines) in op_sections(&doc) {
        let mut requests = 0;
        let mut answers = 0;
        for (_, body) in json_blocks(&section_lines) {
            let value: Result<Value, _> = serde_json::from_str(&body);
            match value
                .map_err(|e| e.to_string())
                .and_then(|v| decode_example(&v, Some(&op)))
            {
                Ok(Example::Request { .. }) => requests += 1,
                Ok(Example::Answer) => answers += 1,
                Ok(other) => failures.push(format!("### `{op}`: an example of {other:?} in an op section\n{body}")),
                Err(e) => failures.push(format!("### `{op}`: {e}\n{body}")),
            }
        }
        if requests == 0 || answers == 0 {
            failures.push(format!(
                "### `{op}` has {requests} example requests and {answers} example answers: it needs one of each"
            ));
        }
        decoded += requests + answers;
    }
    assert!(failures.is_empty(), "{DOC}:\n\n{}", failures.join("\n\n"));
    assert!(decoded > 45, "{DOC} shows its JSON: only {decoded} examples found");
}

#[test]
fn the_checks_catch_what_they_are_for() {
    // A misspelt field is caught even where serde would skip it.
    let e = decode_example(
        &serde_json::json!({"id": 1, "op": "kill_container", "container": "web", "signal": 9, "al": true}),
        Some("kill_container"),
    )
    .unwrap_err();
    assert!(e.contains(".al"), "{e}");
    // An answer of the wrong shape for its op.
    let e = decode_example(&serde_json::json!({"id": 1, "ok": {"pid": 3}}), Some("create")).unwrap_err();
    assert!(e.contains("process"), "{e}");
    // A request in another op's section, and a code that does not exist.
    assert!(decode_example(&serde_json::json!({"id": 1, "op": "stats"}), Some("shutdown")).is_err());
    let e = decode_example(&serde_json::json!({"err": {"code": "nope", "message": "m"}}), None).unwrap_err();
    assert!(e.contains("nope"), "{e}");
    // Sections and tables as the doc writes them.
    let text = "## Ops\n\nintro\n\n### `hello`\n\n- `busy`: x\n\n### `stats`\n\n## Error codes\n\n| code | meaning |\n|---|---|\n| `busy` | b |\n";
    let names: Vec<String> = op_sections(text).into_iter().map(|(name, _)| name).collect();
    assert_eq!(names, ["hello", "stats"]);
    assert_eq!(first_column_codes(&section(text, "Error codes")), ["busy"]);
}
