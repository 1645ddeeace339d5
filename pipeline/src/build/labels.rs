//! The image's labels in one build step.
//!
//! The engine's classic builder turns each label of a build request into a step of its own: a
//! container is created and committed for every label (about 1 s each on the test engine,
//! more on an image of many files). A release puts six to eight labels on its image, which
//! made several seconds of every build.
//!
//! So the context is built without labels, and the labels are put on the result by a second,
//! tiny build whose whole Dockerfile is `FROM <id>` and one `LABEL` instruction holding them all
//! (see [`dockerfile`]). That is one step, and the image is what the builder itself makes of a
//! `LABEL` line: the same config, history and layers, with the labels.
//!
//! The labels go with the build request as before, one step each, when folding them could
//! change the image:
//! - the Dockerfile has an `ONBUILD` instruction (a `FROM` of the image would run its
//!   triggers) or a `MAINTAINER` one (a child image does not keep its parent's author), see
//!   [`dockerfile_allows`];
//! - a key or a value cannot be written into a `LABEL` line exactly, see [`instruction`].

use std::collections::BTreeMap;

/// The one `LABEL` instruction that sets `labels`, keys in order; `None` when one of them
/// cannot be written so that the builder reads it back exactly: a key with a character other
/// than ASCII letters, digits, `.`, `-`, `_` and `/`, or a control character in a value.
///
/// Keys and values are double-quoted. Inside double quotes the builder takes `\` before `"`,
/// `$` and `\` as an escape, keeps every other character as it is, and expands `$NAME`; so
/// those three are escaped and nothing else is.
pub(super) fn instruction(labels: &BTreeMap<String, String>) -> Option<String> {
    if labels.is_empty() {
        return None;
    }
    let mut line = String::from("LABEL");
    for (key, value) in labels {
        let key_ok = !key.is_empty()
            && key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '/'));
        if !key_ok || value.chars().any(char::is_control) {
            return None;
        }
        line.push_str(" \"");
        line.push_str(key);
        line.push_str("\"=\"");
        for c in value.chars() {
            if matches!(c, '"' | '$' | '\\') {
                line.push('\\');
            }
            line.push(c);
        }
        line.push('"');
    }
    Some(line)
}

/// Whether the labels may be put on an image built from `dockerfile` (its text) by a build
/// `FROM` it: `false` when any line starts (after blanks) with the instruction `ONBUILD` or
/// `MAINTAINER`, in any case. A continuation line that happens to start with one of those
/// words also gives `false`, which only costs the folding.
pub(super) fn dockerfile_allows(dockerfile: &str) -> bool {
    !dockerfile.lines().any(|line| {
        let word = line.split_whitespace().next().unwrap_or("");
        word.eq_ignore_ascii_case("onbuild") || word.eq_ignore_ascii_case("maintainer")
    })
}

/// The whole Dockerfile of the labelling build: `FROM image` (an id) and `instruction`.
pub(super) fn dockerfile(image: &str, instruction: &str) -> String {
    format!("FROM {image}\n{instruction}\n")
}

/// A build context holding only `Dockerfile` with `text`.
pub(super) fn context_tar(text: &str) -> std::io::Result<Vec<u8>> {
    let mut tar = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(text.len() as u64);
    header.set_mode(0o644);
    header.set_mtime(0);
    tar.append_data(&mut header, "Dockerfile", text.as_bytes())?;
    tar.into_inner()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn labels_are_one_instruction_in_key_order_with_quotes_dollars_and_backslashes_escaped() {
        let line = instruction(&labels(&[
            ("shipit.service", "web"),
            ("a/b-c_d.e", r#"say "hi" to $HOME \ and ${X} "#),
            ("org.opencontainers.image.created", "2026-12-06T12:00:00Z"),
            ("t", "trailing\\"),
            ("u", "héllo wörld = ok"),
        ]))
        .unwrap();
        assert_eq!(
            line,
            r#"LABEL "a/b-c_d.e"="say \"hi\" to \$HOME \\ and \${X} " "org.opencontainers.image.created"="2026-12-06T12:00:00Z" "shipit.service"="web" "t"="trailing\\" "u"="héllo wörld = ok""#
        );
    }

    #[test]
    fn labels_that_cannot_be_written_exactly_are_not_folded() {
        assert_eq!(instruction(&labels(&[])), None);
        for key in ["", "a b", "a=b", "a\"b", "a$b", "a\\b", "é"] {
            assert_eq!(
                instruction(&labels(&[("ok", "1"), (key, "v")])),
                None,
                "{key:?}"
            );
        }
        for value in ["a\nb", "a\rb", "tab\there", "nul\0"] {
            assert_eq!(instruction(&labels(&[("k", value)])), None, "{value:?}");
        }
        assert!(instruction(&labels(&[("k", "")])).is_some());
    }

    #[test]
    fn onbuild_and_maintainer_keep_the_labels_on_the_build() {
        assert!(dockerfile_allows("FROM scratch\nCOPY . /\nCMD [\"/x\"]\n"));
        assert!(dockerfile_allows(
            "# onbuild in a comment\nFROM scratch\nENV X=onbuild\n"
        ));
        for text in [
            "FROM scratch\nONBUILD COPY . /app\n",
            "FROM scratch\n  onbuild RUN make\n",
            "FROM scratch\nMAINTAINER someone\n",
            "FROM scratch\n\tMaintainer someone\n",
        ] {
            assert!(!dockerfile_allows(text), "{text:?}");
        }
    }

    #[test]
    fn the_labelling_context_is_one_dockerfile() {
        let text = dockerfile("sha256:abc", "LABEL \"k\"=\"v\"");
        assert_eq!(text, "FROM sha256:abc\nLABEL \"k\"=\"v\"\n");
        let tar = context_tar(&text).unwrap();
        let mut archive = tar::Archive::new(tar.as_slice());
        let entries: Vec<(String, String)> = archive
            .entries()
            .unwrap()
            .map(|entry| {
                let mut entry = entry.unwrap();
                let path = entry.path().unwrap().to_string_lossy().into_owned();
                let mut body = String::new();
                std::io::Read::read_to_string(&mut entry, &mut body).unwrap();
                (path, body)
            })
            .collect();
        assert_eq!(entries, [("Dockerfile".to_string(), text)]);
    }
}
