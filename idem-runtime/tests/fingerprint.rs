//! The fingerprint is canonical: map order, HashMap iteration order and JSON whitespace never
//! change it; any change of a value does.

use std::collections::{BTreeMap, HashMap};

use axum::Json;
use axum::extract::{Form, Path, Query, State};
use http::Method;
use idem_runtime::fingerprint::{Fingerprint, FingerprintInput, Fingerprinter, RequestDigest};
use proptest::prelude::*;
use serde::Serialize;

fn digest<T: idem_runtime::FingerprintInput>(input: &T) -> Fingerprint {
    let mut fp = Fingerprinter::new(&Method::POST, Some("/r"), "/r", None);
    fp.input(input);
    fp.finish().unwrap()
}

fn json_digest(body: &str) -> Fingerprint {
    let value: serde_json::Value = serde_json::from_str(body).unwrap();
    digest(&Json(value))
}

#[test]
fn the_request_line_is_part_of_the_fingerprint() {
    let base = Fingerprinter::new(&Method::POST, Some("/a/{id}"), "/a/1", None)
        .finish()
        .unwrap();
    let variants = [
        Fingerprinter::new(&Method::PUT, Some("/a/{id}"), "/a/1", None),
        Fingerprinter::new(&Method::POST, Some("/b/{id}"), "/a/1", None),
        Fingerprinter::new(&Method::POST, None, "/a/1", None),
        Fingerprinter::new(&Method::POST, Some("/a/{id}"), "/a/2", None),
        Fingerprinter::new(&Method::POST, Some("/a/{id}"), "/a/1", Some("")),
        Fingerprinter::new(&Method::POST, Some("/a/{id}"), "/a/1", Some("x=1")),
    ];
    for variant in variants {
        assert_ne!(variant.finish().unwrap(), base);
    }
}

/// The parts of a request that its exact digest covers.
#[derive(Clone, Copy)]
struct Exact<'a> {
    method: &'a Method,
    route: Option<&'a str>,
    path: &'a str,
    query: Option<&'a str>,
    content_type: Option<&'a [u8]>,
    body: &'a [u8],
}

impl Exact<'_> {
    fn digest(self) -> RequestDigest {
        RequestDigest::new(
            self.method,
            self.route,
            self.path,
            self.query,
            self.content_type,
            self.body,
        )
    }
}

#[test]
fn every_part_of_the_exact_request_is_in_its_digest() {
    let base = Exact {
        method: &Method::POST,
        route: Some("/c/{id}"),
        path: "/c/1",
        query: Some("a=1"),
        content_type: Some(b"application/json"),
        body: b"{}",
    };
    let reference = base.digest();
    assert_eq!(reference, base.digest());
    let variants = [
        Exact {
            method: &Method::PUT,
            ..base
        },
        Exact {
            route: None,
            ..base
        },
        Exact {
            path: "/c/2",
            ..base
        },
        Exact {
            query: None,
            ..base
        },
        Exact {
            query: Some(""),
            ..base
        },
        Exact {
            content_type: None,
            ..base
        },
        Exact {
            content_type: Some(b"text/plain"),
            ..base
        },
        Exact {
            body: b"{ }",
            ..base
        },
    ];
    for (n, variant) in variants.iter().enumerate() {
        assert_ne!(variant.digest(), reference, "variant {n}");
    }
}

#[test]
fn inputs_that_read_only_the_request_bytes_say_so() {
    fn exact<T: FingerprintInput>() -> bool {
        T::FROM_REQUEST_BYTES
    }
    assert!(exact::<Json<serde_json::Value>>());
    assert!(exact::<Form<BTreeMap<String, String>>>());
    assert!(exact::<Query<BTreeMap<String, String>>>());
    assert!(exact::<Path<u32>>());
    assert!(exact::<String>());
    assert!(exact::<State<()>>());
    assert!(exact::<http::HeaderMap>());
    assert!(exact::<Option<Json<u8>>>());
    assert!(exact::<Result<Json<u8>, ()>>());

    /// A custom input, say a header's value, is not covered unless it says so.
    struct Customer;
    impl FingerprintInput for Customer {
        fn fingerprint(&self, _: &mut Fingerprinter) {}
    }
    assert!(!exact::<Customer>());
    assert!(!exact::<Option<Customer>>());
}

#[test]
fn arguments_are_delimited() {
    // "ab" + "c" and "a" + "bc" are different requests.
    let mut one = Fingerprinter::new(&Method::POST, None, "/", None);
    one.input(&String::from("ab"));
    one.input(&String::from("c"));
    let mut two = Fingerprinter::new(&Method::POST, None, "/", None);
    two.input(&String::from("a"));
    two.input(&String::from("bc"));
    assert_ne!(one.finish().unwrap(), two.finish().unwrap());
}

#[test]
fn non_inputs_contribute_nothing_but_their_position() {
    let mut with_state = Fingerprinter::new(&Method::POST, None, "/", None);
    with_state.input(&State(42u8));
    with_state.input(&Json(1));
    let mut other_state = Fingerprinter::new(&Method::POST, None, "/", None);
    other_state.input(&State(7u8));
    other_state.input(&Json(1));
    assert_eq!(with_state.finish().unwrap(), other_state.finish().unwrap());
}

#[test]
fn extractors_of_the_same_value_share_its_encoding_but_not_its_position() {
    #[derive(Serialize)]
    struct Query2 {
        a: u32,
    }
    assert_eq!(
        digest(&Query(Query2 { a: 1 })),
        digest(&Form(Query2 { a: 1 }))
    );
    assert_ne!(digest(&Path(1u32)), digest(&Path(2u32)));
}

#[test]
fn integers_are_encoded_by_value() {
    assert_eq!(digest(&Json(1u8)), digest(&Json(1i64)));
    assert_ne!(digest(&Json(-1i64)), digest(&Json(u64::MAX)));
    assert_ne!(digest(&Json(1u8)), digest(&Json(1.0f64)));
}

#[test]
fn a_failing_serialize_makes_the_fingerprint_unusable() {
    struct Broken;
    impl Serialize for Broken {
        fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
            Err(serde::ser::Error::custom("cannot encode"))
        }
    }
    let mut fp = Fingerprinter::new(&Method::POST, None, "/", None);
    fp.input(&Json(Broken));
    assert_eq!(fp.finish().unwrap_err().to_string(), "cannot encode");
}

fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        "[a-z]{0,8}".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(3, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::Array),
            prop::collection::btree_map("[a-z]{1,4}", inner, 0..6)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Writes `value` as JSON with every object's members in reverse order and extra whitespace.
fn scrambled(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::Object(map) => {
            let members: Vec<String> = map
                .iter()
                .rev()
                .map(|(k, v)| {
                    format!(
                        " {} :\n\t{} ",
                        serde_json::to_string(k).unwrap(),
                        scrambled(v)
                    )
                })
                .collect();
            format!("{{ {} }}", members.join(","))
        }
        serde_json::Value::Array(items) => {
            format!(
                "[ {} ]",
                items.iter().map(scrambled).collect::<Vec<_>>().join(" , ")
            )
        }
        other => other.to_string(),
    }
}

/// Every leaf of `value`, as a path of object keys and array indices.
fn leaf_paths(value: &serde_json::Value, path: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, child) in map {
                path.push(key.clone());
                leaf_paths(child, path, out);
                path.pop();
            }
        }
        serde_json::Value::Array(items) => {
            for (index, child) in items.iter().enumerate() {
                path.push(index.to_string());
                leaf_paths(child, path, out);
                path.pop();
            }
        }
        _ => out.push(path.clone()),
    }
}

/// `value` with the leaf at `path` replaced by a different value.
fn change_leaf(value: &mut serde_json::Value, path: &[String], salt: i64) {
    let mut leaf = value;
    for step in path {
        leaf = match leaf {
            serde_json::Value::Object(map) => map.get_mut(step).unwrap(),
            serde_json::Value::Array(items) => &mut items[step.parse::<usize>().unwrap()],
            _ => unreachable!("paths lead through containers"),
        };
    }
    *leaf = match &*leaf {
        serde_json::Value::Null => serde_json::Value::from(false),
        serde_json::Value::Bool(b) => serde_json::Value::from(!b),
        serde_json::Value::Number(n) => {
            serde_json::Value::from(n.as_i64().unwrap().wrapping_add(salt.max(1)))
        }
        serde_json::Value::String(s) => serde_json::Value::from(format!("{s}x")),
        _ => unreachable!("a leaf"),
    };
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn member_order_and_whitespace_never_change_the_fingerprint(value in json_value()) {
        prop_assert_eq!(json_digest(&value.to_string()), json_digest(&scrambled(&value)));
    }

    #[test]
    fn hashmap_iteration_order_never_changes_the_fingerprint(
        entries in prop::collection::vec(("[a-z]{1,6}", any::<u32>()), 0..24)
    ) {
        let sorted: BTreeMap<String, u32> = entries.iter().cloned().collect();
        let forward: HashMap<String, u32> = sorted.clone().into_iter().collect();
        let mut backward = HashMap::with_capacity(100);
        for (k, v) in sorted.iter().rev() {
            backward.insert(k.clone(), *v);
        }
        prop_assert_eq!(digest(&Json(&forward)), digest(&Json(&backward)));
        prop_assert_eq!(digest(&Json(&forward)), digest(&Json(&sorted)));
    }

    #[test]
    fn any_change_of_a_value_changes_the_fingerprint(
        map in prop::collection::btree_map("[a-z]{1,4}", any::<i64>(), 1..8),
        pick in any::<prop::sample::Index>(),
        delta in 1i64..1000,
    ) {
        let mut changed = map.clone();
        let key = pick.get(&map.keys().cloned().collect::<Vec<_>>()).clone();
        let entry = changed.get_mut(&key).unwrap();
        *entry = entry.wrapping_add(delta);
        prop_assert_ne!(digest(&Json(&map)), digest(&Json(&changed)));
    }

    #[test]
    fn a_change_of_any_nested_leaf_changes_the_fingerprint(
        value in json_value(),
        pick in any::<prop::sample::Index>(),
        salt in 1i64..1000,
    ) {
        let mut paths = Vec::new();
        leaf_paths(&value, &mut Vec::new(), &mut paths);
        prop_assume!(!paths.is_empty());
        let mut changed = value.clone();
        change_leaf(&mut changed, &paths[pick.index(paths.len())], salt);
        prop_assert_ne!(json_digest(&value.to_string()), json_digest(&changed.to_string()));
    }
}
