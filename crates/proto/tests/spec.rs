//! PROTOCOL.md's requirement ids are sound: every MUST and SHOULD has one, each is defined once,
//! and every id that a vector or transcript cites exists.

use std::collections::BTreeSet;
use std::path::Path;

use ferry_proto::requirements::{parse, Level};
use ferry_proto::transcript::Transcript;
use ferry_proto::vector::Vector;

fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

fn files(dir: &str, ext: &str) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(root().join(dir))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    v.sort();
    v
}

#[test]
fn every_normative_sentence_has_a_unique_id_and_every_citation_exists() {
    let text = std::fs::read_to_string(root().join("PROTOCOL.md")).unwrap();
    let (reqs, unlabelled) = parse(&text);
    assert!(unlabelled.is_empty(), "MUST/SHOULD without an id:\n{unlabelled:#?}");
    let mut seen = BTreeSet::new();
    let twice: Vec<_> = reqs.iter().filter(|r| !seen.insert(r.id.clone())).map(|r| &r.id).collect();
    assert!(twice.is_empty(), "defined twice: {twice:?}");
    let vague: Vec<_> = reqs
        .iter()
        .filter(|r| !r.sentence.contains("MUST") && !r.sentence.contains("SHOULD"))
        .map(|r| format!("{}: {}", r.id, r.sentence))
        .collect();
    assert!(vague.is_empty(), "ids on sentences with no MUST or SHOULD:\n{}", vague.join("\n"));
    let musts = reqs.iter().filter(|r| r.level == Level::Must).count();
    println!("{} requirements: {musts} MUST, {} SHOULD", reqs.len(), reqs.len() - musts);

    let mut cited = BTreeSet::new();
    for path in files("spec/vectors", "json") {
        let v = Vector::from_json(&std::fs::read_to_string(&path).unwrap()).unwrap();
        cited.extend(v.requirements.into_iter().map(|id| (id, path.clone())));
    }
    for path in files("spec/transcripts", "ft") {
        let t = Transcript::parse(&std::fs::read_to_string(&path).unwrap()).unwrap();
        cited.extend(t.all_requirements().into_iter().map(|id| (id, path.clone())));
    }
    let unknown: Vec<_> = cited.iter().filter(|(id, _)| !seen.contains(id)).collect();
    assert!(unknown.is_empty(), "cited ids missing from PROTOCOL.md: {unknown:?}");
}
