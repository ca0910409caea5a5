//! The guest's serial console, captured to a file.

use std::path::Path;

/// The last `lines` lines of the console log, for error messages.
pub fn tail(path: &Path, lines: usize) -> String {
    let text = match std::fs::read(path) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(_) => return String::from("(no console output)"),
    };
    let all: Vec<&str> = text
        .lines()
        .map(|l| l.trim_end_matches('\r'))
        .filter(|l| !l.is_empty())
        .collect();
    if all.is_empty() {
        return String::from("(no console output)");
    }
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    #[test]
    fn tail_keeps_the_last_lines() {
        let dir = std::env::temp_dir().join(format!("console-tail-{}", std::process::id()));
        std::fs::write(&dir, "a\r\nb\n\nc\nd\n").unwrap();
        assert_eq!(super::tail(&dir, 2), "c\nd");
        assert_eq!(super::tail(&dir, 10), "a\nb\nc\nd");
        std::fs::remove_file(&dir).unwrap();
        assert_eq!(super::tail(&dir, 2), "(no console output)");
    }
}
