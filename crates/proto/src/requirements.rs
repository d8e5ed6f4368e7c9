//! The requirement ids of PROTOCOL.md (`[GET-3]`): where each is defined, whether it is a MUST or a
//! SHOULD, and its sentence — what conformance reports quote next to a failure.

/// How binding a requirement is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Must,
    Should,
}

/// One requirement of PROTOCOL.md.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    pub id: String,
    pub level: Level,
    /// The section it stands in, such as `7.3`.
    pub section: String,
    /// Its sentence, as written (Markdown and all).
    pub sentence: String,
}

/// A paragraph or list item with a MUST or SHOULD and no id: a spec bug.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unlabelled {
    pub section: String,
    pub text: String,
}

/// Reads the requirements out of PROTOCOL.md's text. Also returns the normative paragraphs that
/// carry no id, which the spec check refuses.
pub fn parse(protocol: &str) -> (Vec<Requirement>, Vec<Unlabelled>) {
    let mut reqs = Vec::new();
    let mut unlabelled = Vec::new();
    let mut section = String::new();
    let mut in_code = false;
    for block in blocks(protocol) {
        if block.starts_with("```") {
            in_code = !in_code;
            continue;
        }
        if in_code {
            continue;
        }
        if let Some(h) = block.strip_prefix("## ") {
            section = h.split('.').next().unwrap_or("").trim().to_owned();
            continue;
        }
        if let Some((num, _)) = block.split_once(". ") {
            if num.chars().all(|c| c.is_ascii_digit() || c == '.') && num.contains('.') {
                section = num.to_owned();
            }
        }
        // § 1 defines the conventions (the key words, the ids); it is not itself normative. A
        // withdrawn requirement keeps its id in the text (§ 1.2) but binds no one.
        if section == "1" || section.starts_with("1.") || block.starts_with("*Withdrawn") {
            continue;
        }
        let ids = ids_in(&block);
        for (id, at) in &ids {
            let sentence = sentence_around(&block, *at);
            let level = if sentence.contains("MUST") { Level::Must } else { Level::Should };
            reqs.push(Requirement { id: id.clone(), level, section: section.clone(), sentence });
        }
        let normative = ["MUST", "SHOULD", "REQUIRED", "SHALL"].iter().any(|w| block.contains(w));
        if normative && ids.is_empty() && !block.starts_with('|') {
            unlabelled.push(Unlabelled { section: section.clone(), text: block.clone() });
        }
    }
    (reqs, unlabelled)
}

/// Paragraphs and list items, each as one line of text (tables kept as one block).
fn blocks(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut cur = String::new();
    let flush = |cur: &mut String, out: &mut Vec<String>| {
        if !cur.trim().is_empty() {
            out.push(cur.trim().to_owned());
        }
        cur.clear();
    };
    for line in text.lines() {
        let t = line.trim();
        let starts_item = t.starts_with("- ")
            || t.starts_with("## ")
            || t.starts_with("```")
            || t.split_once(". ").is_some_and(|(n, _)| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()));
        if t.is_empty() || starts_item {
            flush(&mut cur, &mut out);
        }
        if t.starts_with("```") {
            out.push(t.to_owned());
            continue;
        }
        if !cur.is_empty() {
            cur.push(' ');
        }
        cur.push_str(t);
        if t.starts_with("## ") {
            flush(&mut cur, &mut out);
        }
    }
    flush(&mut cur, &mut out);
    out
}

/// The ids written as `` `[ID-N]` `` in a block, with their byte offsets.
fn ids_in(block: &str) -> Vec<(String, usize)> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(i) = block[from..].find("`[") {
        let start = from + i + 2;
        if let Some(len) = block[start..].find("]`") {
            let id = &block[start..start + len];
            let ok = id.split_once('-').is_some_and(|(a, n)| {
                !a.is_empty()
                    && a.chars().all(|c| c.is_ascii_uppercase())
                    && !n.is_empty()
                    && n.chars().all(|c| c.is_ascii_digit())
            });
            if ok {
                out.push((id.to_owned(), start));
            }
        }
        from = start;
    }
    out
}

/// The sentence that ends at or after `at`: from the previous sentence's end to the id.
fn sentence_around(block: &str, at: usize) -> String {
    let before = &block[..at];
    let start = [". "]
        .iter()
        .filter_map(|sep| before.rfind(sep).map(|i| i + sep.len()))
        .filter(|&i| {
            // A sentence that holds an earlier id ends there.
            !block[i..at].is_empty()
        })
        .max()
        .unwrap_or(0);
    // A sentence never reaches back past an earlier id of the same block.
    let start = before.rfind("]`").map_or(start, |i| start.max(i + 2));
    let end = block[at..].find("]`").map_or(block.len(), |i| at + i + 2);
    block[start..end].trim_start_matches(['.', ' ', '-']).trim().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_ids_levels_and_sentences() {
        let text = "## 7. Commands\n\n7.3. **GET**. A server MUST do x `[GET-1]`. It SHOULD do y\nacross lines `[GET-2]`.\n\n- a SHOULD with no id\n";
        let (reqs, unlabelled) = parse(text);
        assert_eq!(reqs.len(), 2);
        assert_eq!((reqs[0].id.as_str(), reqs[0].level, reqs[0].section.as_str()), ("GET-1", Level::Must, "7.3"));
        assert_eq!(reqs[1].sentence, "It SHOULD do y across lines `[GET-2]`");
        assert_eq!(unlabelled.len(), 1);
    }
}
