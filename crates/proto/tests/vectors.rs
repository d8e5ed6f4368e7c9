//! Replays every vector in spec/vectors/ through the decoders (one generic test, as h2 does).
//!
//! For each vector: the items and end it names; the same result under every single split point
//! and one byte per read (`[ENC-5]`); and, for valid vectors, every prefix decodes without error
//! (incomplete input is "need more", never invalid). The decoding is also snapshotted with insta,
//! so any change in how the spec's bytes decode shows up in review.

use std::path::Path;

use ferry_proto::vector::{Direction, End, Start, Vector};

fn load(path: &Path) -> Vector {
    let text = std::fs::read_to_string(path).unwrap();
    Vector::from_json(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn every_vector_decodes_as_it_says() {
    insta::glob!("../../../spec/vectors", "*.json", |path| {
        let v = load(path);
        let name = path.file_name().unwrap().to_string_lossy();
        let (items, end) = v.decode(&[]);
        assert_eq!(items, v.items, "{name}: items");
        assert_eq!(end, v.end, "{name}: end");

        let bytewise: Vec<usize> = (1..v.bytes.len()).collect();
        assert_eq!(v.decode(&bytewise), (items.clone(), end.clone()), "{name}: one byte per read");
        for split in 1..v.bytes.len() {
            assert_eq!(v.decode(&[split]), (items.clone(), end.clone()), "{name}: split at {split}");
        }
        if v.is_valid() {
            for cut in 0..v.bytes.len() {
                let prefix = Vector { bytes: v.bytes[..cut].to_vec(), ..v.clone() };
                let (_, end) = prefix.decode(&[]);
                assert!(matches!(end, End::Clean | End::Truncated), "{name}: prefix {cut} gave {end:?}");
            }
        }
        insta::assert_json_snapshot!(serde_json::json!({
            "description": v.description,
            "items": items,
            "end": end.to_json(),
        }));
    });
}

#[test]
fn there_are_enough_vectors() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../spec/vectors");
    let vectors: Vec<Vector> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .map(|p| load(&p))
        .collect();
    assert!(vectors.len() >= 80, "only {} vectors", vectors.len());
    // Every fatal code a decoder can report appears in some vector.
    for code in ["MALFORMED", "TOO_LARGE", "BAD_NAME"] {
        assert!(vectors.iter().any(|v| v.end == End::Error(code.into())), "no vector ends in {code}");
    }
}

/// The trailing form is opt-in (PROTOCOL.md § 6.5, § 16.4): a server that announces `TRAILER`
/// reads every other vector's bytes exactly as one that does not, and one that does not announce it
/// refuses the trailing PUT modes and FETCH as the unknown values they are for it (`[PUT-7]`,
/// `[REQ-2]`, `[TRL-1]`): whatever came before them decodes the same, then `MALFORMED`.
#[test]
fn the_trailer_capability_changes_only_the_trailing_form() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../spec/vectors");
    let mut refused = 0;
    for path in std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()) {
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let v = load(&path);
        if v.direction != Direction::ClientToServer || v.start == Start::Legacy {
            continue;
        }
        let other = Vector { trailer: !v.trailer, ..v.clone() };
        let (items, end) = other.decode(&[]);
        if !v.trailer {
            assert_eq!(
                (items, end),
                (v.items.clone(), v.end.clone()),
                "{name}: decoded by a server announcing TRAILER"
            );
            continue;
        }
        let trailing = v
            .items
            .iter()
            .any(|i| i["type"] == "fetch" || i["type"] == "trailer" || (i["type"] == "put" && i["md5"].is_null()));
        assert!(v.items.starts_with(&items), "{name}: without TRAILER, {items:?} is not a prefix of the items");
        if trailing {
            assert_eq!(end, End::Error("MALFORMED".into()), "{name}: without TRAILER");
            assert!(items.len() < v.items.len(), "{name}: without TRAILER, every item still decodes");
            refused += 1;
        } else {
            assert!(
                end == End::Error("MALFORMED".into()) || (items == v.items && end == v.end),
                "{name}: without TRAILER, {end:?} after {items:?}"
            );
        }
    }
    assert!(refused >= 10, "only {refused} vectors use the trailing form");
}
