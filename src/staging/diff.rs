//! Field-level diff between an export's prepared data and the data a reviewer
//! approved, stored with the approval (`staged_exports.diff`) and served by
//! `GET …/diff`.
//!
//! Rules:
//! - objects are compared key by key, keys in sorted (byte) order, recursing into
//!   keys present on both sides; a key on one side only is one `added` or `removed`
//!   change;
//! - arrays are compared index by index, recursing into indexes present on both
//!   sides; extra elements at the end are one `added` or `removed` change each (an
//!   element inserted in the middle therefore shows as changes to every later
//!   index plus one addition — positions matter for line items);
//! - anything else (two scalars, or two values of different JSON types) that is
//!   not equal is one `changed` change at that path, carrying both whole values;
//! - numbers compare as serde_json numbers, that is by value *as written*: `1` and
//!   `1.0` differ (integer vs float), while `1.0` and `1.00` are the same float.
//!   Amounts that should compare as decimals must be normalised by the caller first;
//! - JSON `null` is a value, distinct from an absent key: `{"a": null}` → `{}` is a
//!   removal whose `before` is `null`.
//!
//! The result is deterministic: changes come depth-first in key and index order, so
//! the same two documents always give the same list.

use std::collections::BTreeSet;

use serde::Serialize;
use serde_json::{Map, Value};

/// One difference between the two documents.
///
/// Serialises as `{"path", "kind", "before", "after"}`, with an absent side as
/// `null`; `kind` tells an absent side (`added`/`removed`) from a JSON `null` value
/// (`changed`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Change {
    /// JSONPath of the value: `$` for the root, `$.vendor_name`,
    /// `$.line_items[0].amount`; keys that are not plain identifiers
    /// (`[A-Za-z_][A-Za-z0-9_]*`) in bracket form, `$['unit price']`, with `\` and
    /// `'` escaped by a backslash.
    pub path: String,
    /// `"changed"` (present on both sides, different), `"added"` (absent before) or
    /// `"removed"` (absent after).
    pub kind: &'static str,
    /// The value before; `None` exactly when `kind` is `"added"`.
    pub before: Option<Value>,
    /// The value after; `None` exactly when `kind` is `"removed"`.
    pub after: Option<Value>,
}

/// The changes that turn `before` into `after`; empty when they are equal.
pub fn diff(before: &Value, after: &Value) -> Vec<Change> {
    let mut changes = Vec::new();
    walk("$".to_owned(), before, after, &mut changes);
    changes
}

fn walk(path: String, before: &Value, after: &Value, out: &mut Vec<Change>) {
    match (before, after) {
        (Value::Object(b), Value::Object(a)) => walk_object(&path, b, a, out),
        (Value::Array(b), Value::Array(a)) => {
            for i in 0..b.len().max(a.len()) {
                let child = format!("{path}[{i}]");
                match (b.get(i), a.get(i)) {
                    (Some(b), Some(a)) => walk(child, b, a, out),
                    (b, a) => out.push(one_sided(child, b, a)),
                }
            }
        }
        _ if before == after => {}
        _ => out.push(Change {
            path,
            kind: "changed",
            before: Some(before.clone()),
            after: Some(after.clone()),
        }),
    }
}

fn walk_object(
    path: &str,
    before: &Map<String, Value>,
    after: &Map<String, Value>,
    out: &mut Vec<Change>,
) {
    // Sorted explicitly, so the order holds even if serde_json's map keeps
    // insertion order (its `preserve_order` feature).
    let keys: BTreeSet<&str> = before
        .keys()
        .chain(after.keys())
        .map(String::as_str)
        .collect();
    for key in keys {
        let child = child_path(path, key);
        match (before.get(key), after.get(key)) {
            (Some(b), Some(a)) => walk(child, b, a, out),
            (b, a) => out.push(one_sided(child, b, a)),
        }
    }
}

/// A value present on exactly one side.
fn one_sided(path: String, before: Option<&Value>, after: Option<&Value>) -> Change {
    Change {
        path,
        kind: if before.is_none() { "added" } else { "removed" },
        before: before.cloned(),
        after: after.cloned(),
    }
}

/// `parent.key` for identifier keys, else `parent['key']`.
fn child_path(parent: &str, key: &str) -> String {
    let mut chars = key.chars();
    let identifier = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if identifier {
        format!("{parent}.{key}")
    } else {
        let escaped = key.replace('\\', "\\\\").replace('\'', "\\'");
        format!("{parent}['{escaped}']")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn changed(path: &str, before: Value, after: Value) -> Change {
        Change {
            path: path.into(),
            kind: "changed",
            before: Some(before),
            after: Some(after),
        }
    }

    fn added(path: &str, after: Value) -> Change {
        Change {
            path: path.into(),
            kind: "added",
            before: None,
            after: Some(after),
        }
    }

    fn removed(path: &str, before: Value) -> Change {
        Change {
            path: path.into(),
            kind: "removed",
            before: Some(before),
            after: None,
        }
    }

    fn invoice() -> Value {
        json!({
            "invoice_number": "INV-1",
            "vendor_name": "Acme",
            "line_items": [
                {"description": "Widget", "amount": "10.00"},
                {"description": "Gadget", "amount": "5.00"}
            ],
            "total": "15.00"
        })
    }

    #[test]
    fn equal_documents_have_no_changes() {
        assert_eq!(diff(&invoice(), &invoice()), []);
        assert_eq!(diff(&json!({}), &json!({})), []);
        assert_eq!(diff(&json!(null), &json!(null)), []);
    }

    #[test]
    fn a_nested_change_is_reported_at_its_full_path() {
        let mut after = invoice();
        after["line_items"][1]["amount"] = json!("6.00");
        after["vendor_name"] = json!("Acme Ltd");
        assert_eq!(
            diff(&invoice(), &after),
            [
                changed("$.line_items[1].amount", json!("5.00"), json!("6.00")),
                changed("$.vendor_name", json!("Acme"), json!("Acme Ltd")),
            ]
        );
    }

    #[test]
    fn added_and_removed_fields_have_no_value_on_the_absent_side() {
        let mut after = invoice();
        after.as_object_mut().unwrap().remove("total");
        after["currency"] = json!("EUR");
        after["line_items"][0]["tax"] = json!({"rate": "0.2"});
        assert_eq!(
            diff(&invoice(), &after),
            [
                added("$.currency", json!("EUR")),
                added("$.line_items[0].tax", json!({"rate": "0.2"})),
                removed("$.total", json!("15.00")),
            ]
        );
    }

    #[test]
    fn arrays_compare_index_by_index_with_extra_elements_added_or_removed() {
        let before = json!({"items": [1, 2]});
        assert_eq!(
            diff(&before, &json!({"items": [1, 2, 3, 4]})),
            [added("$.items[2]", json!(3)), added("$.items[3]", json!(4))]
        );
        assert_eq!(
            diff(&before, &json!({"items": []})),
            [
                removed("$.items[0]", json!(1)),
                removed("$.items[1]", json!(2))
            ]
        );
        // An insertion at the front shifts every later index.
        assert_eq!(
            diff(&before, &json!({"items": [0, 1, 2]})),
            [
                changed("$.items[0]", json!(1), json!(0)),
                changed("$.items[1]", json!(2), json!(1)),
                added("$.items[2]", json!(2)),
            ]
        );
    }

    #[test]
    fn a_type_change_is_one_change_carrying_both_whole_values() {
        assert_eq!(
            diff(&json!({"a": {"x": 1}}), &json!({"a": [1]})),
            [changed("$.a", json!({"x": 1}), json!([1]))]
        );
        assert_eq!(
            diff(&json!({"amount": "10"}), &json!({"amount": 10})),
            [changed("$.amount", json!("10"), json!(10))]
        );
        assert_eq!(
            diff(&json!({"a": null}), &json!({"a": false})),
            [changed("$.a", json!(null), json!(false))]
        );
    }

    #[test]
    fn root_scalars_and_root_type_changes_are_reported_at_the_root() {
        assert_eq!(
            diff(&json!(1), &json!(2)),
            [changed("$", json!(1), json!(2))]
        );
        assert_eq!(
            diff(&json!("a"), &json!({"a": 1})),
            [changed("$", json!("a"), json!({"a": 1}))]
        );
        assert_eq!(diff(&json!([1]), &json!([1])), []);
        assert_eq!(
            diff(&json!([]), &json!([true])),
            [added("$[0]", json!(true))]
        );
    }

    #[test]
    fn numbers_compare_as_written_so_integer_and_float_differ() {
        assert_eq!(
            diff(&json!({"n": 1}), &json!({"n": 1.0})),
            [changed("$.n", json!(1), json!(1.0))]
        );
        let (a, b): (Value, Value) = (
            serde_json::from_str("{\"n\": 1.0}").unwrap(),
            serde_json::from_str("{\"n\": 1.00}").unwrap(),
        );
        assert_eq!(diff(&a, &b), []);
    }

    #[test]
    fn null_and_absent_are_different() {
        assert_eq!(
            diff(&json!({"a": null}), &json!({})),
            [removed("$.a", json!(null))]
        );
        assert_eq!(
            diff(&json!({}), &json!({"a": null})),
            [added("$.a", json!(null))]
        );
    }

    #[test]
    fn changes_come_in_sorted_key_order_depth_first() {
        let before = json!({"b": 1, "a": {"z": 1, "y": 1}, "c": [1, 1]});
        let after = json!({"c": [2, 2], "a": {"y": 2, "z": 2}, "b": 2});
        let paths: Vec<_> = diff(&before, &after).into_iter().map(|c| c.path).collect();
        assert_eq!(paths, ["$.a.y", "$.a.z", "$.b", "$.c[0]", "$.c[1]"]);
    }

    #[test]
    fn keys_that_are_not_identifiers_use_bracket_paths() {
        let before = json!({"unit price": 1, "it's": 1, "a\\b": 1, "": 1, "2x": 1, "_ok9": 1});
        let after = json!({"unit price": 2, "it's": 2, "a\\b": 2, "": 2, "2x": 2, "_ok9": 2});
        let paths: Vec<_> = diff(&before, &after).into_iter().map(|c| c.path).collect();
        assert_eq!(
            paths,
            [
                "$['']",
                "$['2x']",
                "$._ok9",
                "$['a\\\\b']",
                "$['it\\'s']",
                "$['unit price']"
            ]
        );
    }

    #[test]
    fn changes_serialize_with_absent_sides_as_null() {
        let changes = diff(&json!({"a": 1, "b": null}), &json!({"a": 2, "c": 3}));
        assert_eq!(
            serde_json::to_value(&changes).unwrap(),
            json!([
                {"path": "$.a", "kind": "changed", "before": 1, "after": 2},
                {"path": "$.b", "kind": "removed", "before": null, "after": null},
                {"path": "$.c", "kind": "added", "before": null, "after": 3},
            ])
        );
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use crate::staging::data::strategies::{export_data, json, nested_text};
    use proptest::prelude::*;

    /// The value at a change's path, walking `$`, `.key`, `['key']` and `[i]`.
    fn at<'a>(root: &'a Value, path: &str) -> Option<&'a Value> {
        let mut v = root;
        let mut rest = path.strip_prefix('$')?;
        while !rest.is_empty() {
            if let Some(r) = rest.strip_prefix("['") {
                // A bracketed key: up to the first unescaped `']`.
                let mut key = String::new();
                let mut chars = r.char_indices();
                let end = loop {
                    match chars.next()? {
                        (_, '\\') => key.push(chars.next()?.1),
                        (i, '\'') => break i,
                        (_, c) => key.push(c),
                    }
                };
                v = v.get(key.as_str())?;
                rest = r[end..].strip_prefix("']")?;
            } else if let Some(r) = rest.strip_prefix('[') {
                let end = r.find(']')?;
                v = v.get(r[..end].parse::<usize>().ok()?)?;
                rest = &r[end + 1..];
            } else {
                let r = rest.strip_prefix('.')?;
                let end = r.find(['.', '[']).unwrap_or(r.len());
                v = v.get(&r[..end])?;
                rest = &r[end..];
            }
        }
        Some(v)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

        /// Any two documents: no panic, no change exactly when they are equal,
        /// and every change's path leads to its `before` in the first document and
        /// to its `after` in the second.
        #[test]
        fn diff_of_any_documents_points_at_what_changed(
            before in prop_oneof![export_data(), json()],
            after in prop_oneof![export_data(), json()],
        ) {
            prop_assert!(diff(&before, &before).is_empty());
            let changes = diff(&before, &after);
            prop_assert_eq!(changes.is_empty(), before == after);
            for c in &changes {
                prop_assert_eq!(at(&before, &c.path), c.before.as_ref(), "{}", c.path);
                prop_assert_eq!(at(&after, &c.path), c.after.as_ref(), "{}", c.path);
                prop_assert_eq!(c.kind == "added", c.before.is_none());
                prop_assert_eq!(c.kind == "removed", c.after.is_none());
            }
            // Deterministic.
            prop_assert_eq!(diff(&before, &after), changes);
        }
    }

    #[test]
    fn deeply_nested_documents_diff_without_overflowing() {
        // As deep as serde_json parses (its recursion limit is 128).
        for objects in [false, true] {
            let before: Value = serde_json::from_str(&nested_text(127, objects, "1")).unwrap();
            let after: Value = serde_json::from_str(&nested_text(127, objects, "2")).unwrap();
            let changes = diff(&before, &after);
            assert_eq!(changes.len(), 1);
            assert_eq!(at(&before, &changes[0].path), Some(&Value::from(1)));
        }
    }
}
